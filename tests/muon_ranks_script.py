"""One short torch run per model on 1 or N processes, for tests/test_muon_ranks.py (run under torchrun for N > 1).

``python tests/muon_ranks_script.py OUT [LOAD_TAG]``: for llama/tiny and megalodon/tiny (seed 0, four fixed batches of
4 x 257 tokens) it trains 4 steps, writes a checkpoint after step 2, then loads that checkpoint into a fresh state and
trains steps 3 and 4 again. Rank r writes OUT/rank{r}-w{W}.json: per model the losses of the uninterrupted run and
of the resumed one, sha256 of the final weights of both, which momentum buffers each Muon optimizer holds on this rank
(indices in its state_dict order) and, on rank 0, the sha256 of every Muon momentum in the checkpoint file. With
LOAD_TAG (a world size of an earlier run in OUT), each rank also loads that run's checkpoint and reports the Muon
momenta it kept, each with whether it equals the file's bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from golfbench.backends.torch.backend import BACKEND
from golfbench.backends.torch.muon import Muon
from golfbench.harness.models import get_spec

MODELS = ("llama", "megalodon")
STEPS, CUT = 4, 2


def sha(arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def weights_sha(state) -> str:
    weights = BACKEND.export(state)
    return sha(weights[k] for k in sorted(weights))


def held(state) -> list[list[int]]:
    """Per Muon optimizer: the state_dict indices whose momentum this rank holds."""
    return [sorted(opt.state_dict()["state"]) for opt in state.optimizers if isinstance(opt, Muon)]


def file_momenta(path: Path) -> list[dict[int, torch.Tensor]]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    muons = [i for i, opt in enumerate(BACKEND_OPTS[payload["spec"]]) if opt]
    return [{k: v["momentum_buffer"] for k, v in payload["optimizers"][i]["state"].items()} for i in muons]


BACKEND_OPTS: dict[str, list[bool]] = {}  # model -> which of its optimizers are Muon


def main(out: Path, load_tag: str | None) -> None:
    torch.set_num_threads(1)
    report: dict = {}
    rank = world = None
    for model in MODELS:
        config = get_spec(model).config("tiny")
        rng = np.random.default_rng(7)
        batches = [rng.integers(0, config["vocab_size"], (4, config["seq_len"] + 1), dtype=np.int32) for _ in range(4)]
        state = BACKEND.init(model, config, seed=0)
        rank, world = state.rank, state.world
        BACKEND_OPTS[model] = [isinstance(opt, Muon) for opt in state.optimizers]
        ckpt = out / f"{model}-w{world}.pt"
        losses = []
        for step in range(STEPS):
            state, m = BACKEND.train_step(state, batches[step], 1.0)
            losses.append(float(m["loss"]))
            if step + 1 == CUT:
                BACKEND.save_checkpoint(state, ckpt)
                held_at_cut = held(state)
        entry = {"losses": losses, "weights": weights_sha(state), "held": held_at_cut}
        resumed = BACKEND.load_checkpoint(ckpt, model, config)
        entry["resumed_held"] = held(resumed)
        entry["resumed_losses"] = []
        for step in range(CUT, STEPS):
            resumed, m = BACKEND.train_step(resumed, batches[step], 1.0)
            entry["resumed_losses"].append(float(m["loss"]))
        entry["resumed_weights"] = weights_sha(resumed)
        if rank == 0:
            momenta = file_momenta(ckpt)
            entry["file_momenta"] = [sorted(m) for m in momenta]
            entry["file_momenta_sha"] = [sha(m[k].numpy() for k in sorted(m)) for m in momenta]
        if load_tag is not None:
            other = BACKEND.load_checkpoint(out / f"{model}-w{load_tag}.pt", model, config)
            saved = file_momenta(out / f"{model}-w{load_tag}.pt")
            muons = [opt for opt in other.optimizers if isinstance(opt, Muon)]
            entry["loaded"] = [
                {
                    str(k): bool(torch.equal(v["momentum_buffer"], ref[k]))
                    for k, v in sorted(opt.state_dict()["state"].items())
                }
                for opt, ref in zip(muons, saved, strict=True)
            ]
        report[model] = entry
    (out / f"rank{rank}-w{world}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
