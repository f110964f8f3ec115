"""`golf compare A B ...`: the same track, data, batches, evaluator and budget for every model@backend.

Each run is its own `golf run` subprocess (one framework per process; no shared thread pools or GPU
allocators), reused when its result already exists. The summary separates the two effects the harness
exists to tell apart: the framework ratio (tokens/s of one model in two frameworks) and the model
difference (BPB of two models in one framework).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from golfbench.harness.cohort import COHORT_FIELDS, cohort_key, dataset_full_sha256
from golfbench.harness.errors import GolfError
from golfbench.harness.models import check_name, get_spec
from golfbench.harness.plots import plot_compare, split_events
from golfbench.harness.records import STATUSES, atomic_write_json, default_run_id, read_events, read_json, run_dir
from golfbench.harness.runner import default_preset
from golfbench.harness.stats import mean_std, welch_one_sided


@dataclass(frozen=True)
class Target:
    """One side of a comparison: a model spec name, one of its presets and a backend name (model/preset@backend)."""

    model: str
    preset: str
    backend: str

    @property
    def label(self) -> str:
        """``model/preset@backend``, as it appears in logs, the report and compare.json."""
        return f"{self.model}/{self.preset}@{self.backend}"


def parse_target(text: str, scale: str) -> Target:
    """Parse ``model[/preset]@backend``; a missing preset defaults to ``default_preset(model, scale)``.

    Raises GolfError for text without ``@``, an unknown model or preset, or an invalid backend name.
    """
    if "@" not in text:
        raise GolfError(f"'{text}' must look like model[/preset]@backend, e.g. megalodon@jax or llama/tiny@torch")
    left, backend = text.rsplit("@", 1)
    model, _, preset = left.partition("/")
    preset = preset or default_preset(model, scale)
    spec = get_spec(model)
    spec.config(preset)  # validates the preset name
    check_name("backend", backend)
    return Target(model, preset, backend)


def _run_args(
    t: Target,
    seed: int,
    track: str,
    scale: str,
    data: Path | None,
    budget: str | None,
    out: Path,
    eval_stride: int | None = None,
) -> list[str]:
    args = [
        "run",
        "--track",
        track,
        "--scale",
        scale,
        "--backend",
        t.backend,
        "--model",
        t.model,
        "--preset",
        t.preset,
        "--seed",
        str(seed),
        "--out",
        str(out),
        "--json",
    ]
    if data:
        args += ["--data", str(data)]
    if budget:
        args += ["--budget", str(budget)]
    if eval_stride:
        args += ["--eval-stride", str(eval_stride)]
    return args


def _existing(d: Path) -> dict | None:
    try:
        result = read_json(d / "result.json")
    except GolfError:
        return None
    return result if result.get("status") in STATUSES else None


def _mismatch(found: dict, budget: float, eval_stride: int, content: str | None = None) -> str | None:
    """Why a finished run in the way was made under other rules than this comparison asks for (None: reusable)."""
    if content and found.get("dataset_sha256") != content:
        got = str(found.get("dataset_sha256") or "unknown")[:12]
        return f"dataset content {got} instead of {content[:12]} (other train/val data or tokenizer)"
    if found.get("budget_limit") is not None and float(found["budget_limit"]) != budget:
        return f"budget {float(found['budget_limit']):g} instead of {budget:g}"
    if found.get("eval_stride") is not None and int(found["eval_stride"]) != eval_stride:
        return f"eval stride {found['eval_stride']} instead of {eval_stride}"
    return None


def run_all(
    targets: list[Target],
    seeds: int,
    track: str,
    scale: str,
    data: Path | None,
    budget: str | None,
    out: Path,
    log=print,
    eval_stride: int | None = None,
) -> dict[Target, list[dict]]:
    """Run (or reuse) ``seeds`` seeds (0..seeds-1) of every target, each as its own `golf run` subprocess, and
    return {target: [result.json dicts, each with ``_dir``, its run folder]}.

    A finished run in the way is reused only when it was made under the same dataset content, budget and eval
    stride; an interrupted one with a checkpoint is resumed; a folder without either is overwritten (--force).
    ``budget`` is seconds, tokens or FLOPs by track; ``eval_stride`` is in tokens. Raises GolfError for a bad
    budget or stride, a finished run made under other rules, a run that leaves no result, and runs that fall
    into different cohorts (harness/cohort.py).
    """
    from golfbench.harness.tracks import load_track, parse_budget

    budget_value = parse_budget(budget)
    if eval_stride is not None and eval_stride < 1:
        raise GolfError(f"--eval-stride must be a positive number of tokens, got {eval_stride}")
    rules = load_track(track).scale(scale)
    want_budget = budget_value if budget_value is not None else float(rules["budget"])
    content = _content(data or Path("data") / str(rules["dataset"]))
    results: dict[Target, list[dict]] = {}
    for t in targets:
        for seed in range(seeds):
            rid = default_run_id(t.model, t.preset, t.backend, seed, budget_value is not None, budget_value)
            d = run_dir(out, track, scale, rid)
            found = _existing(d)
            if found is not None:
                # A run id does not encode every override: never reuse a run scored under other rules.
                want_stride = min(eval_stride or int(rules["eval_stride"]), int(found.get("eval_context") or 1 << 30))
                why = _mismatch(found, want_budget, want_stride, content)
                if why:
                    raise GolfError(
                        f"{d} holds a finished run of {t.label} seed {seed} made with {why};"
                        " compare into another --out or remove that run"
                    )
            if found is None:
                args = _run_args(t, seed, track, scale, data, budget, out, eval_stride)
                if (d / "checkpoint").exists():
                    args = ["run", "--resume", str(d), "--json"]
                elif d.exists():
                    args.append("--force")
                log(f"[compare] {t.label} seed {seed}: running")
                proc = subprocess.run(
                    [sys.executable, "-m", "golfbench.harness.cli", *args],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ},
                )
                found = _existing(d)
                if found is None:
                    raise GolfError(f"run {t.label} seed {seed} produced no result (exit {proc.returncode}); see {d}")
            else:
                log(f"[compare] {t.label} seed {seed}: reusing {d}")
            results.setdefault(t, []).append({**found, "_dir": str(d)})
    _one_cohort(results)
    return results


def _content(data: Path) -> str | None:
    """The content identity of the dataset the comparison will run on (None when there is none yet: the runs
    themselves will say what is missing)."""
    from golfbench.harness.data.dataset import Dataset

    if not (Path(data) / "manifest.json").exists():
        return None
    dataset = Dataset.open(Path(data))
    dataset.check_contents()  # reused runs are only as good as the files behind the manifest: hash them
    return dataset_full_sha256(dataset.manifest)


def _one_cohort(results: dict[Target, list[dict]]) -> None:
    """Refuse to pool or compare runs from different cohorts (other val data, tokenizer, eval policy,
    precision or hardware: harness/cohort.py); failed runs carry no score and are left out of the check."""
    cohorts: dict[tuple, str] = {}
    for t, runs in results.items():
        for r in runs:
            if r.get("status") in ("ok", "over_budget"):
                cohorts.setdefault(cohort_key(r), f"{t.label} seed {r.get('seed')} ({r['_dir']})")
    if len(cohorts) > 1:
        (k1, a), (k2, b) = list(cohorts.items())[:2]
        differ = [f for f, x, y in zip(COHORT_FIELDS, k1, k2) if x != y]
        raise GolfError(
            f"cannot compare runs from different cohorts: {a} and {b} differ in {', '.join(differ)};"
            " rerun them on the same dataset and rules (a fresh --out)"
        )


def summarize(results: dict[Target, list[dict]]) -> dict:
    """The comparison's numbers from ``run_all``'s results: a dict with

    - ``rows``: per target, its seeds and statuses, the val BPB of its ``ok`` seeds with mean and sample std,
      means over those seeds of train_seconds, tokens_per_second, train_flops and train_tokens, the largest
      artifact (bytes), the parameter count and ``p_best_better`` (one-sided Welch p-value that the best row's
      BPB is lower; None for the best row and with fewer than 2 seeds a side);
    - ``best``: the label with the lowest mean BPB;
    - ``framework_effect``: per model/preset run in both torch and jax, the torch/jax tokens-per-second ratio
      and the jax − torch BPB difference;
    - ``model_effect``: per backend, neighbouring targets in BPB order with their BPB difference and p-value.
    """
    rows = []
    for t, runs in results.items():
        ok = [r for r in runs if r["status"] == "ok" and r.get("val_bpb") is not None]
        bpb = [float(r["val_bpb"]) for r in ok]
        mean, std = mean_std(bpb) if bpb else (math.nan, math.nan)

        def avg(key, ok=ok):  # the mean over runs that recorded the value (None never counts as 0)
            vals = [float(r[key]) for r in ok if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else math.nan

        rows.append(
            {
                "label": t.label,
                "model": t.model,
                "preset": t.preset,
                "backend": t.backend,
                "seeds": [r["seed"] for r in runs],
                "n_ok": len(ok),
                "statuses": [r["status"] for r in runs],
                "val_bpb": bpb,
                "mean_val_bpb": mean,
                "std_val_bpb": std,
                "train_seconds": avg("train_seconds"),
                "tokens_per_second": avg("tokens_per_second"),
                "train_flops": avg("train_flops"),
                "train_tokens": avg("train_tokens"),
                "artifact_bytes": max((int(r["artifact_bytes"]) for r in ok), default=None),
                "param_count": ok[0].get("param_count") if ok else None,
                "run_dirs": [r["_dir"] for r in runs],
            }
        )
    scored = [r for r in rows if r["n_ok"]]
    best = min(scored, key=lambda r: r["mean_val_bpb"]) if scored else None
    for r in rows:
        r["p_best_better"] = (
            None if (best is None or r is best or not r["n_ok"]) else welch_one_sided(best["val_bpb"], r["val_bpb"])
        )
    framework = []
    models = {(r["model"], r["preset"]) for r in scored}
    for m, p in sorted(models):
        cells = {r["backend"]: r for r in scored if (r["model"], r["preset"]) == (m, p)}
        if "torch" in cells and "jax" in cells:
            framework.append(
                {
                    "model": f"{m}/{p}",
                    "torch_over_jax_tokens_per_s": cells["torch"]["tokens_per_second"]
                    / cells["jax"]["tokens_per_second"]
                    if cells["jax"]["tokens_per_second"]
                    else math.nan,
                    "bpb_jax_minus_torch": cells["jax"]["mean_val_bpb"] - cells["torch"]["mean_val_bpb"],
                }
            )
    model_effect = []
    for backend in sorted({r["backend"] for r in scored}):
        cells = sorted((r for r in scored if r["backend"] == backend), key=lambda r: r["mean_val_bpb"])
        for a, b in zip(cells, cells[1:]):
            model_effect.append(
                {
                    "backend": backend,
                    "better": a["label"],
                    "worse": b["label"],
                    "bpb_difference": b["mean_val_bpb"] - a["mean_val_bpb"],
                    "p": welch_one_sided(a["val_bpb"], b["val_bpb"]),
                }
            )
    return {
        "rows": rows,
        "best": best["label"] if best else None,
        "framework_effect": framework,
        "model_effect": model_effect,
    }


def write_report(summary: dict, results: dict[Target, list[dict]], report_dir: Path, meta: dict) -> None:
    """Write compare.json (``meta`` + ``summary``) and compare.png into ``report_dir`` (created if missing).

    The plot shows, per target, the first ok seed's train loss converted to bits per byte with the val split's
    tokens per byte (loss / ln 2 × val_tokens / val_bytes) against tokens, seconds and FLOPs, with the mean
    val BPB as a star and every ok seed's val curve (val BPB on the fixed val subset) as dots. ``meta`` must carry ``track`` and ``scale`` (the plot title).
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_dir / "compare.json", {**meta, **summary})
    curves, finals, vals = {}, {}, {}
    for t, runs in results.items():
        ok = [r for r in runs if r["status"] == "ok" and r.get("val_bytes")]
        if not ok:
            continue
        # Train loss in BPB units via the val split's tokens per byte, so curves share an axis with val BPB.
        tpb = ok[0]["val_tokens"] / ok[0]["val_bytes"]
        train, _ = split_events(read_events(Path(ok[0]["_dir"]) / "events.jsonl"))
        curves[t.label] = [{**e, "bpb": e["loss"] / math.log(2) * tpb} for e in train]
        vals[t.label] = [split_events(read_events(Path(r["_dir"]) / "events.jsonl"))[1] for r in ok]
        finals[t.label] = sum(float(r["val_bpb"]) for r in ok) / len(ok)
    plot_compare(
        curves, finals, report_dir / "compare.png", title=f"{meta['track']} ({meta['scale']})", val_curves=vals
    )
