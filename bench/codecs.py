"""Codec × compressor benchmark: one trained llama/tiny packed with every artifact codec and compressor.

Usage: python bench/codecs.py --data data/shakespeare_sp1024 --out bench/results/codecs.json

Each variant (llama/tiny as it is, and llama/tiny with ``mlp_mult=6``, whose MLP matrices pass the 65,536-element
threshold, so int6 and GPTQ have more than the embedding to work on) trains once on the dev fixed-data budget (the
track's first 262,144 training tokens, its schedule: ``fixed_data_plan`` batches and the warm-down ``lr_scale``), in
torch on the CPU. GPTQ's Hessians come from the runner's fixed-data calibration set: the first
``runner.CALIBRATION_SEQS`` training sequences again (inside the budget). Then every codec × compressor pair packs
the trained weights (``pack`` seconds timed), and the round trip is loaded back from the bytes and scored on the full
val split at the track's dev stride. A codec's weights do not depend on the compressor: the round trips of one codec
are checked bit-identical and scored once. Writes bytes, model_bytes (compressed weights), code bytes, val_bpb and
pack/unpack seconds per pair, plus the pre-quantization val_bpb, with the machine and versions.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np

from golfbench.harness import artifact as art
from golfbench.harness.backend import get_backend
from golfbench.harness.code import code_bytes
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.stream import BatchStream
from golfbench.harness.distributed import fixed_data_plan
from golfbench.harness.models import get_spec
from golfbench.harness.records import atomic_write_json, hardware, versions
from golfbench.harness.runner import CALIBRATION_SEQS
from golfbench.harness.scoring import load_artifact_model, score_weights
from golfbench.harness.tracks import load_track, lr_scale

VARIANTS = {"llama/tiny": {}, "llama/tiny mlp_mult=6": {"mlp_mult": 6}}


def train(backend, model: str, config: dict, dataset: Dataset, budget: int, seed: int) -> tuple[object, float]:
    """The fixed-data loop of harness/runner.py without its records: (trained state, seconds)."""
    seq = int(config["seq_len"])
    rows = max(1, int(config["train_batch_tokens"]) // seq)
    plan = fixed_data_plan(budget, seq, rows)
    stream = BatchStream(dataset.train_paths, rows, seq, wrap=False)
    state = backend.init(model, config, seed)
    warmdown, done, total = float(config.get("warmdown_frac", 0.2)), 0, sum(plan)
    t0 = time.perf_counter()
    for r in plan:
        state, _ = backend.train_step(state, stream.next(r), lr_scale(done / total, warmdown))
        done += r
    return state, time.perf_counter() - t0


def bench_variant(name: str, overrides: dict, dataset: Dataset, budget: int, stride: int, seed: int) -> dict:
    """Train llama/tiny with ``overrides`` on ``budget`` tokens, collect its Hessians on the calibration set, then pack,
    load back and score (at ``stride`` tokens) every codec × compressor: the variant's record (bytes, val_bpb,
    seconds, per-pair tensor codecs). Exits when two compressors' round trips of one codec differ."""
    model, preset = "llama", "tiny"
    spec = get_spec(model)
    config = spec.config(preset, overrides)
    backend = get_backend("torch")
    print(f"[codecs] {name}: training {budget:,} tokens", flush=True)
    state, train_seconds = train(backend, model, config, dataset, budget, seed)
    weights = backend.export(state)
    seq = int(config["seq_len"])
    calib_rows = min(CALIBRATION_SEQS, budget // seq)
    t0 = time.perf_counter()
    calib = BatchStream(dataset.train_paths, calib_rows, seq, start_tokens=0, wrap=False).next(calib_rows)
    hessians = backend.input_hessians(state, [calib])
    calibration_seconds = time.perf_counter() - t0
    meta = {"model": model, "preset": preset, "config": spec.model_part(config), "backend": "torch"}
    code = code_bytes(backend.code_files(model))
    pre = score_weights("torch", model, config, weights, dataset, stride, label="eval (pre-quant)")
    pairs = []
    for codec in art.CODECS:
        first = None
        for compressor in art.COMPRESSORS:
            t0 = time.perf_counter()
            blob = art.pack(weights, spec.is_control, meta, codec, compressor, hessians)
            pack_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            loaded = load_artifact_model(blob)
            unpack_seconds = time.perf_counter() - t0
            if first is None:
                first = loaded.weights
                res = score_weights("torch", model, loaded.config, loaded.weights, dataset, stride, label=codec)
                bpb = res.val_bpb
            elif any(not np.array_equal(first[k], loaded.weights[k]) for k in first):
                raise SystemExit(f"{codec}/{compressor}: the round trip differs from the first compressor's")
            table = art.entries(blob)
            row = {
                "codec": codec,
                "compressor": compressor,
                "model_bytes": len(blob),
                "bytes": len(blob) + code,
                "val_bpb": bpb,
                "pack_seconds": pack_seconds,
                "unpack_seconds": unpack_seconds,
                "tensor_codecs": dict(sorted(Counter(e.codec for e in table).items())),  # codec -> tensors
            }
            pairs.append(row)
            print(
                f"[codecs] {name} {codec:>13} {compressor:>8}: {len(blob):>10,} B  val_bpb {bpb:.4f}"
                f"  pack {pack_seconds:.2f} s",
                flush=True,
            )
    return {
        "variant": name,
        "overrides": overrides,
        "params": spec.param_count(config),
        "train_tokens": budget,
        "train_seconds": train_seconds,
        "calibration_seconds": calibration_seconds,
        "calibration_tokens": calib_rows * seq,
        "hessians": len(hessians),
        "code_bytes": code,
        "pre_quant_val_bpb": pre.val_bpb,
        "eval_stride": stride,
        "pairs": pairs,
    }


def main() -> None:
    """Parse the arguments, bench every variant, write the JSON and print a table per variant."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/shakespeare_sp1024")
    ap.add_argument("--out", default="bench/results/codecs.json")
    ap.add_argument("--budget", type=int, default=None, help="training tokens (default: fixed-data's dev budget)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    dataset = Dataset.open(Path(args.data))
    dev = load_track("fixed-data").scale("dev")
    budget = int(args.budget or dev["budget"])
    stride = int(dev["eval_stride"])
    results = [bench_variant(v, VARIANTS[v], dataset, budget, stride, args.seed) for v in args.variants]
    out = {
        "what": "one trained model per variant packed with every codec × compressor; val_bpb of the round trip",
        "dataset": dataset.name,
        "backend": "torch",
        "variants": results,
        "hardware": hardware(get_backend("torch").devices()),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_json(Path(args.out), out)
    for r in results:
        print(f"\n{r['variant']} (pre-quant val_bpb {r['pre_quant_val_bpb']:.4f}, code {r['code_bytes']:,} B)")
        print(f"{'codec':>13} {'compressor':>10} {'model bytes':>12} {'val_bpb':>8} {'pack s':>7}")
        for p in r["pairs"]:
            print(
                f"{p['codec']:>13} {p['compressor']:>10} {p['model_bytes']:>12,} {p['val_bpb']:>8.4f}"
                f" {p['pack_seconds']:>7.2f}"
            )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
