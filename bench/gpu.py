"""GPU benchmark that survives a short lease: synthetic random tokens, one process per measurement.

Measures (issue 7 goals on one H100/H200, issue 19 points 6-8):

- llama/baseline@torch at 524,288 tokens per step: step time and MFU (analytic training FLOPs of the spec / the
  bf16 dense peak of the detected part, PEAK_BF16 below, keyed by harness.hardware.part_name; which one is
  recorded; an unknown part gets no MFU unless --peak-tflops); goal MFU >= 35% and step time
  <= parameter-golf's train_gpt.py at the same batch (pass --pg-step-ms);
- tokens/s of every model (built-in and installed plugins, e.g. deltanet from examples/golf-deltanet) at its golf
  preset in every framework it is implemented in (goal: Megalodon-JAX >= 0.8 x Llama-torch);
- per measurement: the compile (warm-up) seconds and the peak memory (torch.cuda.max_memory_allocated, JAX
  memory_stats()["peak_bytes_in_use"]; None on a CPU, where the process's peak RSS is recorded instead);
- the official scoring path (the track's eval precision, the harness evaluator at stride 64, context 1024) in both
  frameworks, projected to FineWeb val (62,021,632 tokens) sharded over 8 GPUs (goal <= 90 s; the limit is 600 s).

Each measurement runs in its own child process (``--one NAME``: torch and JAX never share a process, and JAX
children do not preallocate the card), the JSON at ``--out`` is rewritten atomically before the first and after
every measurement, and the whole run stops cleanly after ``--budget-s`` seconds (default 480): the measurement
still running is killed and recorded as ``timed_out``, the ones not started as ``skipped``. SIGTERM/SIGINT do the
same. Everything measured is what `golf run` / `golf eval` execute (backend.warmup + train_step, the harness
evaluator with the backend's scorer).

Every flag is checked before anything is written (bench/gpu_args.py): a bad one is one line `error: ...`, exit 2.

Usage: python bench/gpu.py --out bench/results/gpu-<device>.json [--pg-step-ms 43.5] [--budget-s 480]
       python bench/gpu.py --smoke --out /tmp/gpu.json        (tiny presets on the CPU: checks the script)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from golfbench.harness.hardware import part_name
from golfbench.harness.records import atomic_write_json, versions

# bf16 dense peak FLOP/s (no sparsity) per part, keyed by harness.hardware.part_name (the one device-name table)
PEAK_BF16 = {
    "H100-SXM": 989.4e12,
    "H100-PCIe": 756e12,
    "H100-NVL": 835e12,
    "H200-SXM": 989.4e12,
    "H200-NVL": 835e12,
    "A100-SXM-80GB": 312e12,
    "A100-SXM-40GB": 312e12,
    "A100-PCIe-80GB": 312e12,
    "A100-PCIe-40GB": 312e12,
}
FINEWEB_VAL_TOKENS = 62_021_632
HEADLINE = "train:llama/baseline@torch"


def peak_flops(device_name: str, override_tflops: float | None = None) -> tuple[float | None, str]:
    """(bf16 peak FLOP/s, where it came from) for ``device_name`` as the framework reports it: ``override_tflops``
    x 1e12 when given (ValueError unless a finite number > 0), else PEAK_BF16[part_name(device_name)] ("table:
    H100-PCIe"), else (None, "unknown part ...") and no MFU is computed."""
    if override_tflops is not None:
        if not (math.isfinite(override_tflops) and override_tflops > 0):
            raise ValueError(f"--peak-tflops must be a finite number > 0, got {override_tflops}")
        return override_tflops * 1e12, "--peak-tflops"
    part = part_name(device_name)
    if part in PEAK_BF16:
        return PEAK_BF16[part], f"table: {part}"
    return None, f"unknown part {part!r} (device {device_name!r}): no MFU; pass --peak-tflops"


def _batches(vocab: int, rows: int, seq: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=(rows, seq + 1), dtype=np.int32) for _ in range(n)]


def _device_and_memory(backend_name: str) -> tuple[str, int | None]:
    """(first device's name, its peak bytes in use so far or None where the framework does not say)."""
    if backend_name == "torch":
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0), int(torch.cuda.max_memory_allocated())
        return "cpu", None
    import jax

    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    peak = (stats or {}).get("peak_bytes_in_use")
    return (dev.device_kind if dev.platform != "cpu" else "cpu"), (int(peak) if peak is not None else None)


def _memory(backend_name: str) -> dict:
    device, peak = _device_and_memory(backend_name)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"device": device, "peak_device_bytes": peak, "peak_rss_bytes": rss}


def train_speed(
    backend_name: str, model: str, preset: str, step_tokens: int, steps: int, warmup: int, peak_tflops=None
) -> dict:
    """The training path of `golf run`: backend.init, backend.warmup (compile on a synthetic batch, then reset;
    timed as ``compile_s``), ``warmup - 1`` more untimed steps, then ``steps`` timed backend.train_step calls on
    fresh batches, synchronised once at the end by reading the last loss (``float``: a device scalar or a float).
    ``step_tokens`` is rounded down to whole sequences. MFU = the spec's analytic training FLOPs per step / step
    time / the device's bf16 peak (None when the device is not in PEAK_BF16 and no override is given)."""
    from golfbench.harness.backend import get_backend
    from golfbench.harness.models import get_spec

    spec = get_spec(model)
    cfg = spec.config(preset)
    seq = cfg["seq_len"]
    rows = max(1, step_tokens // seq)
    backend = get_backend(backend_name)
    state = backend.init(model, cfg, 0)
    batches = _batches(cfg["vocab_size"], rows, seq, steps + warmup)
    t0 = time.perf_counter()
    state = backend.warmup(state, batches[0])
    compile_s = time.perf_counter() - t0
    m = {}
    for b in batches[1:warmup]:
        state, m = backend.train_step(state, b, 1.0)
    if m:
        float(m["loss"])
    t0 = time.perf_counter()
    for b in batches[warmup:]:
        state, m = backend.train_step(state, b, 1.0)
    loss = float(m["loss"])  # waits for the device
    step = (time.perf_counter() - t0) / steps
    flops = spec.flops_per_token(cfg)["total"] * rows * seq
    mem = _memory(backend_name)
    peak, peak_source = peak_flops(mem["device"], peak_tflops)
    return {
        "params": spec.param_count(cfg),
        "step_tokens": rows * seq,
        "steps_timed": steps,
        "compile_s": compile_s,
        "step_ms": step * 1000,
        "tokens_per_s": rows * seq / step,
        "flops_per_step": flops,
        "part": part_name(mem["device"]),
        "peak_bf16_flops": peak,
        "peak_source": peak_source,
        "mfu": flops / step / peak if peak else None,
        "loss": loss,
        **mem,
    }


def eval_speed(backend_name: str, val_tokens: int, preset: str = "baseline", gpus: int = 8) -> dict:
    """The official scoring path on this device: the track's eval precision, the harness evaluator (sliding
    windows at stride 64, float64 sums, its batching) over ``val_tokens`` synthetic val tokens, exactly what
    `golf run`/`golf eval` execute per process. Projects the FineWeb val set (62,021,632 tokens) on ``gpus``
    devices: the evaluator splits the windows evenly over processes and all-reduces two float64 numbers, so
    the projection is the one-device time per window x windows / gpus. ``compile_s``: the untimed first pass
    over 4 contexts of tokens (compile / autotune)."""
    from golfbench.harness.backend import get_backend
    from golfbench.harness.data.tokenizer import ByteAccounting
    from golfbench.harness.evaluate import evaluate, window_plan
    from golfbench.harness.init import init_weights
    from golfbench.harness.models import get_spec
    from golfbench.harness.tracks import load_track

    spec = get_spec("llama")
    cfg = spec.config(preset)
    track = load_track("wallclock-10min").scales["official"]
    precision = str(track.get("eval_precision", "fp32"))
    stride = int(track["eval_stride"])
    scorer = get_backend(backend_name).scorer("llama", cfg, init_weights(spec, cfg, 0), precision=precision)
    tokens = _batches(cfg["vocab_size"], 1, val_tokens, 1)[0][0]
    ones = ByteAccounting(
        np.ones(cfg["vocab_size"], np.int64), np.zeros(cfg["vocab_size"], bool), np.zeros(cfg["vocab_size"], bool)
    )
    ctx = cfg["seq_len"]
    t0 = time.perf_counter()
    evaluate(scorer, tokens[: 4 * ctx], ones, context=ctx, stride=stride)  # compile / autotune, untimed
    compile_s = time.perf_counter() - t0
    res = evaluate(scorer, tokens, ones, context=ctx, stride=stride)
    windows = len(window_plan(val_tokens, ctx, stride)[0])
    fineweb_windows = len(window_plan(FINEWEB_VAL_TOKENS, ctx, stride)[0])
    per_window = res.eval_seconds / windows
    return {
        "precision": precision,
        "stride": stride,
        "context": ctx,
        "compile_s": compile_s,
        "val_tokens_measured": val_tokens,
        "windows": windows,
        "seconds": res.eval_seconds,
        "windows_per_s": windows / res.eval_seconds,
        "fineweb_val_windows": fineweb_windows,
        "projected_gpus": gpus,
        "fineweb_val_seconds_1_device": per_window * fineweb_windows,
        "fineweb_val_seconds_projected": per_window * fineweb_windows / gpus,
        **_memory(backend_name),
    }


def plan(smoke: bool) -> list[dict]:
    """The measurements, most important first (a short lease keeps the head of the list): llama/baseline@torch at
    524,288 tokens/step, megalodon@jax, the torch evaluator, then every other model x framework (built-ins and
    installed plugins, each in the frameworks it implements) at 131,072 tokens/step, then the JAX evaluator.
    Presets: each model's official golf preset (harness.runner.default_preset), ``tiny`` with ``smoke``
    (1,024 tokens per step)."""
    from golfbench.harness.backend import backend_names
    from golfbench.harness.models import SPECS
    from golfbench.harness.plugins import get_plugin
    from golfbench.harness.runner import default_preset

    jobs = []
    for model in SPECS:
        plugin = get_plugin(model)
        preset = "tiny" if smoke else default_preset(model, "official")
        for fw in sorted(plugin.implementations) if plugin else backend_names():
            tokens = 1024 if smoke else (524_288 if (model, fw) == ("llama", "torch") else 131_072)
            name = f"train:{model}/{preset}@{fw}"
            jobs.append(
                {"name": name, "kind": "train", "backend": fw, "model": model, "preset": preset, "tokens": tokens}
            )
    for fw in backend_names():
        preset = "tiny" if smoke else "baseline"
        jobs.append({"name": f"eval:llama/{preset}@{fw}", "kind": "eval", "backend": fw, "preset": preset})
    first = [HEADLINE, "train:megalodon/golf16@jax", "eval:llama/baseline@torch"]
    if smoke:
        first = [f.replace("baseline", "tiny").replace("golf16", "tiny") for f in first]
    rank = {n: i for i, n in enumerate(first)}
    last = {j["name"] for j in jobs if j["name"].startswith("eval:") and j["name"] not in rank}
    return sorted(jobs, key=lambda j: (rank.get(j["name"], len(first)), j["name"] in last))


def run_one(job: dict, args) -> dict:
    """Measure ``job`` (one entry of `plan`) in this process."""
    if job["kind"] == "train":
        return train_speed(
            job["backend"], job["model"], job["preset"], job["tokens"], args.steps, args.warmup, args.peak_tflops
        )
    return eval_speed(job["backend"], args.eval_tokens, job["preset"])


def _child_cmd(name: str, args, result: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, "--result", str(result), "--out", args.out]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup), "--eval-tokens", str(args.eval_tokens)]
    if args.peak_tflops is not None:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    return cmd + (["--smoke"] if args.smoke else [])


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def measure_all(args, jobs: list[dict], out: dict) -> dict:
    """Run ``jobs`` one child process each within ``args.budget_s`` seconds, writing ``out`` to ``args.out``
    (atomically) before the first and after every measurement. Each entry of ``out["measurements"]`` gets a
    ``status``: ok | error (with ``error``: the child's last stderr line) | timed_out | skipped | pending."""
    path = Path(args.out)
    results = out.setdefault("measurements", {})
    for j in jobs:
        results[j["name"]] = {"status": "pending"}
    atomic_write_json(path, out)
    deadline = time.monotonic() + args.budget_s
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false")}
    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signal.Signals(signum).name

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with tempfile.TemporaryDirectory(prefix="golf-gpu-bench-") as tmp:
            for i, job in enumerate(jobs):
                left = deadline - time.monotonic()
                if left <= 1 or stop["signal"]:
                    results[job["name"]] = {"status": "skipped", "reason": stop["signal"] or "out of --budget-s"}
                    continue
                result = Path(tmp) / f"{i}.json"
                t0 = time.monotonic()
                # its own session: a timeout kills the child and everything it started
                proc = subprocess.Popen(_child_cmd(job["name"], args, result), env=env, start_new_session=True)
                print(f"[gpu bench] {job['name']} (pid {proc.pid}, {left:.0f} s of the budget left)", flush=True)
                rec = None
                while rec is None:
                    try:
                        proc.wait(timeout=min(1.0, max(0.01, deadline - time.monotonic())))
                    except subprocess.TimeoutExpired:
                        if time.monotonic() >= deadline or stop["signal"]:
                            _kill(proc)
                            rec = {"status": "timed_out", "reason": stop["signal"] or "out of --budget-s"}
                        continue
                    if result.exists():
                        rec = {"status": "ok", **json.loads(result.read_text())}
                    else:
                        rec = {"status": "error", "error": f"child exited {proc.returncode} without a result"}
                if rec["status"] == "ok" and "error" in rec:
                    rec["status"] = "error"
                rec["wall_s"] = time.monotonic() - t0
                results[job["name"]] = rec
                if rec["status"] == "ok" and "machine" not in out:
                    out["machine"] = rec.get("machine")
                atomic_write_json(path, out)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    out["goals"] = goals(results, args.pg_step_ms)
    out["stopped_by"] = stop["signal"]
    out["skipped"] = [n for n, r in results.items() if r["status"] == "skipped"]
    out["timed_out"] = [n for n, r in results.items() if r["status"] == "timed_out"]
    atomic_write_json(path, out)
    return out


def goals(results: dict, pg_step_ms: float | None) -> dict:
    """The issue's goals as booleans, None where the measurement needed is missing."""
    base = results.get(HEADLINE, {})
    mj = results.get("train:megalodon/golf16@jax", {})
    ev = results.get("eval:llama/baseline@torch", {})
    out = {
        "mfu_llama_baseline_torch>=0.35": base["mfu"] >= 0.35 if base.get("mfu") is not None else None,
        "megalodon_jax>=0.8*llama_torch_tokens_per_s": mj["tokens_per_s"] >= 0.8 * base["tokens_per_s"]
        if "tokens_per_s" in mj and "tokens_per_s" in base
        else None,
        "fineweb_val_eval_8_gpus<=90s": ev["fineweb_val_seconds_projected"] <= 90
        if "fineweb_val_seconds_projected" in ev
        else None,
    }
    if pg_step_ms:
        out["step_ms<=parameter_golf"] = base["step_ms"] <= pg_step_ms if "step_ms" in base else None
    return out


def child(args) -> None:
    """``--one NAME``: measure one job of `plan` and write its JSON to ``--result`` (errors included)."""
    job = next((j for j in plan(args.smoke) if j["name"] == args.one), None)
    if job is None:
        raise SystemExit(
            f"error: unknown measurement {args.one!r}: choose from {[j['name'] for j in plan(args.smoke)]}"
        )
    try:
        rec = run_one(job, args)
        from golfbench.harness.backend import get_backend
        from golfbench.harness.records import hardware

        rec["machine"] = hardware(get_backend(job["backend"]).devices())
    except Exception as exc:  # noqa: BLE001 - record what failed; the parent measures the rest
        rec = {"error": f"{exc.__class__.__name__}: {exc}"}
    atomic_write_json(Path(args.result), rec)


def main() -> None:
    from gpu_args import parser  # bench/ is sys.path[0] when this file runs as a script

    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny presets and batches: the script end to end on a CPU")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child: one measurement
    ap.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke and args.eval_tokens == 1 << 20:
        args.eval_tokens = 4096
    jobs = plan(args.smoke)
    from golfbench.harness.models import get_spec

    context = max(get_spec("llama").config(j["preset"])["seq_len"] for j in jobs if j["kind"] == "eval")
    if args.eval_tokens <= context:
        ap.error(f"argument --eval-tokens: {args.eval_tokens} tokens do not fill one {context}-token eval window:"
                 f" give at least {context + 1}")  # fmt: skip
    if args.one:
        return child(args)
    if args.only:
        unknown = sorted(set(args.only) - {j["name"] for j in jobs})
        if unknown:
            ap.error(f"unknown --only {unknown}: choose from {[j['name'] for j in jobs]}")
        jobs = [j for j in jobs if j["name"] in args.only]
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
        "budget_s": args.budget_s,
        "smoke": args.smoke,
        "peak_bf16_table": dict(PEAK_BF16),
        "peak_bf16_rule": "keyed by golfbench.harness.hardware.part_name; an unknown part records peak_bf16_flops"
        " and mfu None unless --peak-tflops is given",
    }
    out = measure_all(args, jobs, out)
    print(json.dumps(out["goals"]))
    missed = [f"{n} ({r['status']})" for n, r in out["measurements"].items() if r["status"] != "ok"]
    if missed:
        print(f"[gpu bench] not measured: {', '.join(missed)} (see {args.out})", file=sys.stderr)
    # a budget or signal stop is the documented way out; a measurement that broke is a failure
    sys.exit(1 if any(r["status"] == "error" for r in out["measurements"].values()) else 0)


if __name__ == "__main__":
    main()
