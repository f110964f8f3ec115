"""CPU benchmark: throughput of every landed model@backend, evaluator overhead, loader speed, artifact codec.

Usage: python bench/cpu.py --data data/shakespeare_sp1024 --out bench/results/cpu.json

Every figure is measured in this one process, side by side, after warm-up; results carry the machine, the
versions and the date. Goals (issue 7): framework_ratio_llama in [0.67, 1.5], eval_overhead_ratio <= 1.10,
loader_tokens_per_s >= 1e8, zstd_vs_zlib9_ratio <= 0.97.
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np

from golfbench.harness import artifact as art
from golfbench.harness.backend import get_backend
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.stream import BatchStream
from golfbench.harness.evaluate import evaluate, window_plan
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec
from golfbench.harness.records import atomic_write_json, hardware, versions

GOALS = {
    "framework_ratio_llama": [0.67, 1.5],
    "eval_overhead_ratio": [None, 1.10],
    "loader_tokens_per_s": [1e8, None],
    "zstd_vs_zlib9_ratio": [None, 0.97],
}


def train_throughput(backend_name: str, model: str, dataset: Dataset, steps: int, warmup: int) -> dict:
    spec = get_spec(model)
    cfg = spec.config("tiny")
    backend = get_backend(backend_name)
    seqs = cfg["train_batch_tokens"] // cfg["seq_len"]
    stream = BatchStream(dataset.train_paths, seqs, cfg["seq_len"])
    state = backend.init(model, cfg, 0)
    for _ in range(warmup):
        state, _ = backend.train_step(state, stream.next(), 1.0)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = backend.train_step(state, stream.next(), 1.0)
    seconds = time.perf_counter() - t0
    return {
        "tokens_per_s": steps * seqs * cfg["seq_len"] / seconds,
        "step_seconds": seconds / steps,
        "batch": [seqs, cfg["seq_len"]],
        "final_loss": m["loss"],
    }


def eval_overhead(dataset: Dataset, n_tokens: int) -> dict:
    """Full evaluator vs the bare scorer on exactly the same windows (same batching)."""
    spec = get_spec("llama")
    cfg = spec.config("tiny")
    scorer = get_backend("torch").scorer("llama", cfg, init_weights(spec, cfg, 0))
    tokens = dataset.val_tokens()[:n_tokens]
    acc = dataset.accounting()
    ctx, stride, batch = cfg["seq_len"], 64, 32
    scorer(np.zeros((batch, ctx + 1), np.int32))  # warm-up
    t0 = time.perf_counter()
    res = evaluate(scorer, tokens, acc, context=ctx, stride=stride, batch_windows=batch)
    full = time.perf_counter() - t0
    starts, width, _ = window_plan(len(tokens), ctx, stride)
    windows = np.stack([tokens[s : s + width] for s in starts]).astype(np.int32)
    t0 = time.perf_counter()
    for i in range(0, len(windows), batch):
        scorer(windows[i : i + batch])
    bare = time.perf_counter() - t0
    return {
        "eval_overhead_ratio": full / bare,
        "evaluator_seconds": full,
        "scorer_seconds": bare,
        "windows": int(len(windows)),
        "val_tokens": int(len(tokens)),
        "val_bpb_untrained": res.val_bpb,
    }


def loader_speed(dataset: Dataset) -> float:
    stream = BatchStream(dataset.train_paths, 64, 1024)
    stream.next()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        n += stream.next().size
    return n / (time.perf_counter() - t0)


def artifact_codec() -> dict:
    spec = get_spec("llama")
    cfg = spec.config("baseline")
    # A trained model's weights are not small kaiming draws: use unit-scale rows so every int8 level is used,
    # which is what the compressor sees after training (and the harder case for it).
    rng = np.random.default_rng(0)
    weights = {
        k: (rng.standard_normal(v.shape) * (0.05 if v.ndim == 2 else 1.0)).astype(np.float32)
        for k, v in init_weights(spec, cfg, 0).items()
    }
    t0 = time.perf_counter()
    blob = art.pack(weights, spec.is_control, {"model": "llama", "preset": "baseline"})
    seconds = time.perf_counter() - t0
    stored, table = art.quantize(weights, spec.is_control)
    raw = art._safetensors_bytes(stored, {"tensors": "{}"})
    zlib9 = len(zlib.compress(raw, 9))
    untrained = art.pack(init_weights(spec, cfg, 0), spec.is_control, {})
    return {
        "artifact_seconds": seconds,
        "artifact_bytes": len(blob),
        "container_bytes": len(raw),
        "zlib9_bytes": zlib9,
        "zstd_vs_zlib9_ratio": len(blob) / zlib9,
        "untrained_artifact_bytes": len(untrained),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/shakespeare_sp1024")
    ap.add_argument("--out", default="bench/results/cpu.json")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--eval-tokens", type=int, default=40_000)
    args = ap.parse_args()
    dataset = Dataset.open(Path(args.data))
    out: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "machine": hardware({"kind": "cpu", "count": 1}),
        "goals": GOALS,
        "train_tokens_per_s": {},
        "train": {},
    }
    for backend in ("torch", "jax"):
        try:
            models = get_backend(backend).models()
        except Exception as exc:  # noqa: BLE001 - a missing backend is reported, not fatal
            out.setdefault("skipped", {})[backend] = str(exc)
            continue
        for model in models:
            key = f"{model}/tiny@{backend}"
            print(f"[bench] training {key}", flush=True)
            r = train_throughput(backend, model, dataset, args.steps, args.warmup)
            out["train"][key] = r
            out["train_tokens_per_s"][key] = r["tokens_per_s"]
    tps = out["train_tokens_per_s"]
    if "llama/tiny@torch" in tps and "llama/tiny@jax" in tps:
        out["framework_ratio_llama"] = tps["llama/tiny@torch"] / tps["llama/tiny@jax"]
    if "megalodon/tiny@torch" in tps and "megalodon/tiny@jax" in tps:
        out["framework_ratio_megalodon"] = tps["megalodon/tiny@torch"] / tps["megalodon/tiny@jax"]
    print("[bench] evaluator overhead", flush=True)
    ev = eval_overhead(dataset, args.eval_tokens)
    out["eval_overhead_ratio"] = ev.pop("eval_overhead_ratio")
    out["eval"] = ev
    print("[bench] loader", flush=True)
    out["loader_tokens_per_s"] = loader_speed(dataset)
    print("[bench] artifact codec", flush=True)
    out.update(artifact_codec())
    out["meets_goals"] = {
        k: (lo is None or out.get(k, float("nan")) >= lo) and (hi is None or out.get(k, float("nan")) <= hi)
        for k, (lo, hi) in GOALS.items()
        if k in out
    }
    atomic_write_json(Path(args.out), out)
    for k in (
        "train_tokens_per_s",
        "framework_ratio_llama",
        "framework_ratio_megalodon",
        "eval_overhead_ratio",
        "loader_tokens_per_s",
        "artifact_seconds",
        "artifact_bytes",
        "zstd_vs_zlib9_ratio",
        "meets_goals",
    ):
        print(f"{k}: {out.get(k)}")


if __name__ == "__main__":
    main()
