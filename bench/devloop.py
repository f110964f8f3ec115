"""CPU dev-loop benchmark: scorer seconds torch vs JAX, eval vs training seconds of a dev run.

Usage: python bench/devloop.py --data data/shakespeare_sp1024 --out bench/results/devloop.json

Measures, on this machine and this code: (1) the seconds to score freshly initialized tiny weights of each model
with each backend's scorer through ``score_weights`` (probes + sliding-window evaluator at stride 64) on the first
``--val-tokens`` tokens of the val split, min of ``--repeat`` runs, wall and process-CPU seconds; (2) one `golf run`
of each model on the dev fixed-data track (torch backend): its training seconds against its evaluation seconds
(every scoring pass in events.jsonl: the artifact pass, plus pre-quant on tracks before version 3). The "before" block (measured on the original code) and the
"note" / "decisions" blocks are carried over from an existing --out file; --as-before stores this run's numbers
as the "before" block instead. Timings on a shared machine are noisy: compare CPU seconds and ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from golfbench.harness.data.dataset import Dataset
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec
from golfbench.harness.records import atomic_write_json, hardware, versions

GOALS = {"scorer_ratio_megalodon": [None, 1.5], "eval_over_train": [None, 1.0]}


class _Prefix:
    """A Dataset view whose val split is the first ``n`` val tokens (same tokenizer and byte accounting)."""

    def __init__(self, dataset: Dataset, n: int):
        self._d, self._n = dataset, n

    def __getattr__(self, name):
        return getattr(self._d, name)

    def val_tokens(self):
        return self._d.val_tokens()[: self._n]


def _timed(fn, repeat: int) -> tuple[float, float, object]:
    """(min wall seconds, min process-CPU seconds, last result) over ``repeat`` calls."""
    wall, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return min(wall), min(cpu), out


def scorer_seconds(dataset: Dataset, val_tokens: int, repeat: int) -> dict:
    """Seconds of score_weights (scorer build + probes + evaluator) per model and backend, and their ratios."""
    from golfbench.harness.scoring import score_weights

    view = _Prefix(dataset, val_tokens)
    out: dict = {}
    for model in ("megalodon", "llama"):
        spec = get_spec(model)
        cfg = spec.config("tiny")
        weights = init_weights(spec, cfg, 0)
        for backend in ("jax", "torch"):
            print(f"[devloop] scoring {model}/tiny@{backend}", flush=True)
            run = functools.partial(score_weights, backend, model, cfg, weights, view, 64)
            run()  # warm-up: imports, JIT compilation of the window shape
            wall, cpu, res = _timed(run, repeat)
            out[f"{model}@{backend}"] = {"wall_s": wall, "cpu_s": cpu, "val_bpb": res.val_bpb}
        t, j = out[f"{model}@torch"], out[f"{model}@jax"]
        out[f"ratio_{model}"] = {"wall": t["wall_s"] / j["wall_s"], "cpu": t["cpu_s"] / j["cpu_s"]}
    return out


def dev_run(model: str, data: Path, workdir: Path) -> dict:
    """One `golf run` of ``model``/tiny@torch on the dev fixed-data track: training vs evaluation seconds."""
    golf = Path(sys.executable).with_name("golf")
    cmd = [str(golf), "run", "--track", "fixed-data", "--scale", "dev", "--backend", "torch", "--model", model]
    cmd += ["--preset", "tiny", "--data", str(data), "--out", str(workdir), "--run-id", model, "--force"]
    print(f"[devloop] {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    total = time.perf_counter() - t0
    run_dir = next(workdir.rglob(f"{model}/result.json")).parent
    result = json.loads((run_dir / "result.json").read_text())
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    evals = {e["label"]: e["seconds"] for e in events if e.get("event") == "eval"}
    eval_s = sum(evals.values())
    return {
        "train_s": result["train_seconds"],
        "eval_s": eval_s,
        "eval_passes": evals,
        "eval_over_train": eval_s / result["train_seconds"],
        "total_s": total,
        "val_bpb": result["val_bpb"],
        "pre_quant_val_bpb": result["pre_quant_val_bpb"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/shakespeare_sp1024")
    ap.add_argument("--out", default="bench/results/devloop.json")
    ap.add_argument("--val-tokens", type=int, default=32_768)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-runs", action="store_true", help="skip the two dev runs")
    ap.add_argument("--as-before", action="store_true", help="store this run's numbers as the 'before' block")
    args = ap.parse_args()
    dataset = Dataset.open(Path(args.data))
    now: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "val_tokens": args.val_tokens,
        "scorer": scorer_seconds(dataset, args.val_tokens, args.repeat),
    }
    if not args.no_runs:
        with tempfile.TemporaryDirectory() as tmp:
            now["dev_runs"] = {m: dev_run(m, Path(args.data).resolve(), Path(tmp)) for m in ("llama", "megalodon")}
    path = Path(args.out)
    old = json.loads(path.read_text()) if path.exists() else {}
    out = {
        "machine": hardware({"kind": "cpu", "count": 1}),
        "versions": versions(),
        "goals": GOALS,
        "before": now if args.as_before else old.get("before"),
        "after": old.get("after") if args.as_before else now,
    }
    for key in ("note", "decisions"):
        if key in old:
            out[key] = old[key]
    atomic_write_json(path, out)
    table(out)


def table(out: dict) -> None:
    """Print before/after side by side."""
    rows = []
    for label, get in (
        ("megalodon scorer torch s (cpu)", lambda r: r["scorer"]["megalodon@torch"]["cpu_s"]),
        ("megalodon scorer jax s (cpu)", lambda r: r["scorer"]["megalodon@jax"]["cpu_s"]),
        ("megalodon torch/jax (cpu)", lambda r: r["scorer"]["ratio_megalodon"]["cpu"]),
        ("megalodon torch/jax (wall)", lambda r: r["scorer"]["ratio_megalodon"]["wall"]),
        ("llama scorer torch s (cpu)", lambda r: r["scorer"]["llama@torch"]["cpu_s"]),
        ("llama scorer jax s (cpu)", lambda r: r["scorer"]["llama@jax"]["cpu_s"]),
        ("llama torch/jax (cpu)", lambda r: r["scorer"]["ratio_llama"]["cpu"]),
        ("llama dev run train s", lambda r: r["dev_runs"]["llama"]["train_s"]),
        ("llama dev run eval s", lambda r: r["dev_runs"]["llama"]["eval_s"]),
        ("megalodon dev run train s", lambda r: r["dev_runs"]["megalodon"]["train_s"]),
        ("megalodon dev run eval s", lambda r: r["dev_runs"]["megalodon"]["eval_s"]),
    ):
        cells = []
        for key in ("before", "after"):
            try:
                cells.append(f"{get(out[key]):10.2f}")
            except (KeyError, TypeError):
                cells.append(f"{'-':>10}")
        rows.append(f"{label:34s} {cells[0]} {cells[1]}")
    print(f"{'':34s} {'before':>10} {'after':>10}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
