"""Each training step as lean as parameter-golf's: one host sync, the loss inside the compiled graph, the next batch
prepared while a step runs, token ids checked once per shard, one shape for every step — and the same numbers.

Host syncs are counted with a stand-in (tests/sync_counter.py) that records every device-to-host read and every
torch.distributed collective made by golfbench code; steps per sync come from two runs that differ only in their
number of steps, so fixed per-run work (warm-up, export, scoring) cancels out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from golfbench.harness.errors import GolfError
from golfbench.harness.records import read_events

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_counter import counting  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# llama/tiny shrunk so a step costs ~0.1 s on one CPU thread; 4 sequences of 256 tokens a step
MICRO = {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
SETS = [a for k, v in MICRO.items() for a in ("--set", f"{k}={v}")]

# What the code before this change (58b99bc: three host syncs per step) recorded for
#   golf run --track fixed-data --scale dev --backend {torch,jax} --model llama --seed 0 --budget 12288
#   --eval-stride 256 --val-points 0 --nproc-per-node {1,2} + MICRO
# on the embedded Shakespeare sp1024 data: (val_bpb, [(step, loss)] as logged). The new loop must give the same bits.
PINNED = {
    ("torch", 1): (3.5193800166109845, [(1, 6.931628227233887), (10, 5.894890308380127), (12, 5.679447174072266)]),
    ("torch", 2): (3.519380208637668, [(1, 6.931628227233887), (10, 5.894890308380127), (12, 5.679447650909424)]),
    ("jax", 1): (3.5193804025546305, [(1, 6.93162727355957), (10, 5.894890308380127), (12, 5.679447174072266)]),
}


def _no_score(run, state, result, code, coll):
    result.update(val_bpb=0.0, val_nll_sum=0.0, val_bytes=1, artifact_bytes=code, model_bytes=0)


@pytest.fixture
def run_steps(shakespeare_dir, tmp_path, monkeypatch):
    """Run the real loop in this process for ``steps`` fixed-data steps (evaluation stubbed out)."""
    import torch

    from golfbench.harness import runner

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    monkeypatch.setattr(runner, "_score", _no_score)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def go(steps: int, run_id: str, backend: str = "torch", rows: float = 4) -> tuple[dict, Path]:
        spec = runner.RunSpec(
            track="fixed-data",
            scale="dev",
            backend=backend,
            model="llama",
            preset="tiny",
            seed=0,
            data=str(shakespeare_dir),
            budget=int(steps * rows * 256),
            out=str(tmp_path / "runs"),
            run_id=run_id,
            eval_stride=256,
            overrides=MICRO,
            val_points=0,
            log_every=1,
        )
        return runner.execute(spec), tmp_path / "runs" / "fixed-data" / "dev" / run_id

    yield go
    torch.set_num_threads(threads)


def test_one_host_sync_per_step_in_one_process(run_steps):
    with counting() as short:
        run_steps(2, "short")
    with counting() as long:
        result, _ = run_steps(7, "long")
    assert result["steps"] == 7
    per_step = {k: (long[k] - short[k]) / 5 for k in set(long) | set(short)}
    assert per_step["read"] == 1.0, per_step  # the loss, read once, in Collective.step_sync
    assert per_step.get("collective", 0.0) == 0.0, per_step


def test_the_next_batch_is_prepared_while_a_step_runs(run_steps, monkeypatch):
    """Order of calls on the host: train_step(k) is queued, then batch k+1 is prepared, then the step's one sync."""
    from golfbench.harness.backend import get_backend
    from golfbench.harness.distributed import SingleProcess

    backend, calls = get_backend("torch"), []
    for name in ("prepare_batch", "train_step"):
        real = getattr(backend, name)
        monkeypatch.setattr(backend, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    real_sync = SingleProcess.step_sync
    monkeypatch.setattr(SingleProcess, "step_sync", lambda self, *a: calls.append("sync") or real_sync(self, *a))
    run_steps(3, "order")
    p, t = "prepare_batch", "train_step"
    assert calls[-9:] == [p, t, p, "sync", t, p, "sync", t, "sync"], calls  # step 3 is the last: nothing ahead


def test_token_ids_are_checked_once_per_shard_not_per_step(run_steps, monkeypatch, shakespeare_dir):
    from golfbench.backends.torch import step as torch_step
    from golfbench.harness.data.stream import BatchStream
    from golfbench.harness.models import check_tokens

    seen = []
    monkeypatch.setattr(torch_step, "check_tokens", lambda b, v: seen.append(b.shape) or check_tokens(b, v))
    run_steps(2, "a")
    few = len(seen)
    run_steps(6, "b")
    assert len(seen) - few == few  # warm-up's synthetic batches only: no training step checks its batch again
    # the stream checks each shard once, when it loads it, and names it
    paths = sorted(Path(shakespeare_dir).glob("*_train_*.bin"))
    stream = BatchStream(paths, 2, 16, vocab_size=100)
    with pytest.raises(GolfError, match=r"_train_000000\.bin holds token id \d+, outside the model's vocabulary"):
        stream.next()
    assert BatchStream(paths, 2, 16, vocab_size=1024).next().max() < 1024


def test_loss_is_inside_the_one_compiled_graph():
    """torch._dynamo sees llama's forward + softcap + cross-entropy as ONE graph, no break (what torch.compile fuses
    on GPUs), and megalodon's loss is in its graph too."""
    import torch
    import torch._dynamo

    from golfbench.backends.torch.step import IGNORE_INDEX, SummedNLL
    from golfbench.harness.backend import get_backend
    from golfbench.harness.models import get_spec

    backend = get_backend("torch")
    for model in ("llama", "megalodon"):
        config = get_spec(model).config("tiny", {"num_layers": 2} if model == "llama" else {})
        state = backend.init(model, config, 0)
        wrapper = state.train_model
        assert isinstance(wrapper, SummedNLL) and wrapper.model is state.model
        tokens = torch.randint(0, config["vocab_size"], (2, 33))
        targets = tokens[:, 1:].clone()
        targets[1] = IGNORE_INDEX
        torch._dynamo.reset()
        explained = torch._dynamo.explain(wrapper)(tokens[:, :-1], targets)
        ops = {str(n.target) for g in explained.graphs for n in g.graph.nodes}
        assert any("cross_entropy" in op for op in ops), sorted(ops)[:20]
        if model == "llama":
            assert explained.graph_count == 1 and explained.graph_break_count == 0, explained.break_reasons
        # the summed NLL over real targets equals an independent log-softmax gather
        with torch.no_grad():
            logits = state.model(tokens[:1, :-1]).double()
            expected = -(logits.log_softmax(-1).gather(-1, tokens[:1, 1:, None])).sum()
            assert float(wrapper(tokens[:, :-1], targets)) == pytest.approx(float(expected), rel=1e-5)


def test_a_short_batch_keeps_the_compiled_shape(shakespeare):
    """Where the step is compiled, the short last fixed-data batch is padded to the full batch (zero-weight rows):
    same shapes as every other step, the same loss and update as the unpadded batch (within fp32 round-off)."""

    from golfbench.harness.backend import get_backend
    from golfbench.harness.data.stream import BatchStream
    from golfbench.harness.models import get_spec

    config = get_spec("llama").config("tiny", MICRO)
    full = BatchStream(shakespeare.train_paths, 4, 256).next()
    short = full[:1]
    torch_be = get_backend("torch")
    a, b = torch_be.init("llama", config, 0), torch_be.init("llama", config, 0)
    b.compiled = True  # what CUDA (or a forced compile) sets
    for s in (a, b):
        torch_be.prepare_batch(s, full)
    prepared = torch_be.prepare_batch(b, short)
    assert tuple(prepared.tokens.shape) == (4, 257) and prepared.keep.tolist() == [True, False, False, False]
    assert tuple(torch_be.prepare_batch(a, short).tokens.shape) == (1, 257)  # eager: nothing to pad
    _, la = torch_be.train_step(a, short, 1.0)
    _, lb = torch_be.train_step(b, prepared, 1.0)
    assert float(lb["loss"]) == pytest.approx(float(la["loss"]), rel=1e-6)
    wa, wb = torch_be.export(a), torch_be.export(b)
    assert max(float(np.max(np.abs(wa[k] - wb[k]))) for k in wa) < 1e-4  # Muon normalizes: round-off shows

    jax_be = get_backend("jax")
    s = jax_be.init("llama", config, 0)
    jax_be.prepare_batch(s, full)
    padded = jax_be.prepare_batch(s, short)
    assert padded.tokens.shape[-2:] == (4, 257) and float(np.asarray(padded.weight).sum()) == 1.0
    ref = jax_be.init("llama", config, 0)
    _, lj = jax_be.train_step(s, padded, 1.0)
    _, lr = jax_be.train_step(ref, short, 1.0)  # a fresh state's first batch sets its full size: no padding
    assert float(lj["loss"]) == pytest.approx(float(lr["loss"]), rel=1e-6)


def _launch(tmp_path: Path, data: Path, nproc: int, budget: int, run_id: str, backend: str = "torch", count=None):
    env = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    if count is not None:
        count.mkdir()
        env.update(GOLF_SYNC_COUNT_DIR=str(count), PYTHONPATH=str(ROOT / "tests" / "sync_site"))
    args = ["run", "--track", "fixed-data", "--scale", "dev", "--backend", backend, "--model", "llama", "--seed", "0"]
    args += ["--data", str(data), "--out", str(tmp_path / "runs"), "--budget", str(budget), "--eval-stride", "256"]
    args += ["--val-points", "0", "--nproc-per-node", str(nproc), "--run-id", run_id, "--json", *SETS]
    res = subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads(res.stdout.strip().splitlines()[-1])
    d = tmp_path / "runs" / "fixed-data" / "dev" / run_id
    losses = [(e["step"], e["loss"]) for e in read_events(d / "events.jsonl") if "loss" in e and "event" not in e]
    return result, losses


def _rank_counts(folder: Path) -> dict[str, dict]:
    out = {}
    for f in folder.glob("rank-*.json"):
        body = json.loads(f.read_text())
        if body.get("rank") is not None:
            out[body["rank"]] = body
    return out


@pytest.mark.slow
def test_two_processes_one_host_sync_per_step_and_the_same_bits(tmp_path, shakespeare_dir):
    """2 ranks (torchrun, gloo): every rank reads the device once per step and makes one collective per step besides
    Muon's update exchange; the losses and the score are bit-identical to the code before the change."""
    _launch(tmp_path, shakespeare_dir, 2, 4096, "short", count=tmp_path / "c4")
    result, losses = _launch(tmp_path, shakespeare_dir, 2, 12288, "long", count=tmp_path / "c12")
    short, long = _rank_counts(tmp_path / "c4"), _rank_counts(tmp_path / "c12")
    assert set(short) == set(long) == {"0", "1"}
    for rank in ("0", "1"):
        reads = (long[rank]["read"] - short[rank]["read"]) / 8
        harness = (long[rank]["collective:backend.py"] - short[rank]["collective:backend.py"]) / 8
        assert reads == 1.0 and harness == 1.0, (rank, short[rank], long[rank])
    expected = PINNED[("torch", 2)]
    assert (result["val_bpb"], losses) == (expected[0], [tuple(x) for x in expected[1]])


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_one_process_gives_the_same_bits_as_before(tmp_path, shakespeare_dir, backend):
    result, losses = _launch(tmp_path, shakespeare_dir, 1, 12288, "one", backend=backend)
    expected = PINNED[(backend, 1)]
    assert (result["val_bpb"], losses) == (expected[0], [tuple(x) for x in expected[1]])
