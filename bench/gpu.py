"""GPU benchmark, one process, synthetic random tokens (issue 7 goals on one H100):

- llama/baseline@torch at 524,288 tokens per step: step time and MFU (analytic FLOPs / 989.4 TFLOP/s);
  goal MFU >= 35% and step time <= parameter-golf's train_gpt.py at the same batch (pass --pg-step-ms);
- tokens/s of megalodon/golf16@jax, megalodon/golf16@torch, llama/baseline@jax (goal: Megalodon-JAX >= 0.8 x
  Llama-torch at similar parameter count);
- evaluator throughput at stride 64, context 1024, extrapolated to FineWeb val (62,021,632 tokens; goal <= 120 s).

Usage: python bench/gpu.py --out bench/results/gpu-<device>.json [--pg-step-ms 43.5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.backend import get_backend  # noqa: E402
from harness.evaluate import window_plan  # noqa: E402
from harness.init import init_weights  # noqa: E402
from harness.models import get_spec  # noqa: E402
from harness.records import atomic_write_json, hardware, versions  # noqa: E402

H100_BF16_PEAK = 989.4e12
FINEWEB_VAL_TOKENS = 62_021_632


def _batches(vocab: int, rows: int, seq: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=(rows, seq + 1), dtype=np.int32) for _ in range(n)]


def train_speed(backend_name: str, model: str, preset: str, step_tokens: int, steps: int, warmup: int) -> dict:
    spec = get_spec(model)
    cfg = spec.config(preset)
    seq = cfg["seq_len"]
    rows = step_tokens // seq
    backend = get_backend(backend_name)
    state = backend.init(model, cfg, 0)
    batches = _batches(cfg["vocab_size"], rows, seq, steps + warmup)
    for b in batches[:warmup]:
        state, _ = backend.train_step(state, b, 1.0)
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        state, m = backend.train_step(state, b, 1.0)  # returns a float loss: the device is synchronised
    step = (time.perf_counter() - t0) / steps
    flops = spec.flops_per_token(cfg)["total"] * rows * seq
    return {"params": spec.param_count(cfg), "step_tokens": rows * seq, "step_ms": step * 1000,
            "tokens_per_s": rows * seq / step, "mfu": flops / step / H100_BF16_PEAK, "loss": m["loss"]}  # fmt: skip


def eval_speed(backend_name: str, n_windows: int, batch: int, preset: str = "baseline") -> dict:
    spec = get_spec("llama")
    cfg = spec.config(preset)
    backend = get_backend(backend_name)
    try:
        scorer = backend.scorer("llama", cfg, init_weights(spec, cfg, 0), precision="bf16")
    except TypeError:
        scorer = backend.scorer("llama", cfg, init_weights(spec, cfg, 0))
    ctx = cfg["seq_len"]
    windows = _batches(cfg["vocab_size"], batch, ctx, 1)[0]
    scorer(windows)
    t0 = time.perf_counter()
    done = 0
    while done < n_windows:
        scorer(windows)
        done += batch
    seconds = time.perf_counter() - t0
    starts, _, _ = window_plan(FINEWEB_VAL_TOKENS, ctx, 64)
    per_window = seconds / done
    return {"windows_per_s": done / seconds, "fineweb_val_windows": int(len(starts)),
            "fineweb_val_seconds_estimate": per_window * len(starts)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pg-step-ms", type=float, default=None, help="parameter-golf train_gpt.py step time, same GPU and batch")
    ap.add_argument("--eval-windows", type=int, default=4096)
    ap.add_argument("--smoke", action="store_true", help="tiny presets and batches: check the script end to end on a CPU")
    args = ap.parse_args()
    devices = get_backend("torch").devices()
    out = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(), "machine": hardware(devices)}
    jobs = [("torch", "llama", "baseline", 524_288), ("jax", "llama", "baseline", 131_072),
            ("torch", "megalodon", "golf16", 131_072), ("jax", "megalodon", "golf16", 131_072)]  # fmt: skip
    if args.smoke:
        jobs = [(b, m, "tiny", 1024) for b, m, _, _ in jobs]
        out["smoke"] = True
    for backend, model, preset, tokens in jobs:
        key = f"{model}/{preset}@{backend}"
        print(f"[gpu bench] {key}", flush=True)
        try:
            out[key] = train_speed(backend, model, preset, tokens, args.steps, args.warmup)
        except Exception as exc:  # noqa: BLE001 - record what failed and keep measuring the rest
            out[key] = {"error": f"{exc.__class__.__name__}: {exc}"}
    print("[gpu bench] evaluator", flush=True)
    try:
        out["eval_llama_baseline_torch"] = eval_speed("torch", args.eval_windows, 64, "tiny" if args.smoke else "baseline")
    except Exception as exc:  # noqa: BLE001
        out["eval_llama_baseline_torch"] = {"error": str(exc)}
    base, mj = out.get("llama/baseline@torch", {}), out.get("megalodon/golf16@jax", {})
    out["goals"] = {
        "mfu_llama_baseline_torch>=0.35": base.get("mfu", 0) >= 0.35,
        "megalodon_jax>=0.8*llama_torch_tokens_per_s": mj.get("tokens_per_s", 0) >= 0.8 * base.get("tokens_per_s", float("inf")),
        "fineweb_val_eval<=120s": out["eval_llama_baseline_torch"].get("fineweb_val_seconds_estimate", 1e9) <= 120,
    }  # fmt: skip
    if args.pg_step_ms:
        out["parameter_golf_step_ms"] = args.pg_step_ms
        out["goals"]["step_ms<=parameter_golf"] = base.get("step_ms", 1e9) <= args.pg_step_ms
    atomic_write_json(Path(args.out), out)
    print(out["goals"])


if __name__ == "__main__":
    main()
