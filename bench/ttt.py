"""Score-first test-time adaptation: what it buys a trained model on the dev val split, and what it costs.

Usage: python bench/ttt.py --artifact runs/wallclock-10min/dev/RUN/artifact.golf --data data/shakespeare_sp1024 \
    --out bench/results/ttt.json [--backend torch] [--recipe sgd] [--min-gain 0.005]

Scores the artifact twice with the same backend, precision and stride: plainly (`score_weights`) and with the
recipe (`score_weights_adaptive`, harness/adapt.py), and records both BPBs, the gain, the seconds and the
adaptation's tokens and analytic FLOPs. Exits 1 when the gain is below ``--min-gain`` bits per byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from golfbench.harness.adapt import get_recipe
from golfbench.harness.artifact import read_artifact
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.records import atomic_write_json, hardware, versions
from golfbench.harness.scoring import load_artifact_model, score_weights, score_weights_adaptive


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifact", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--recipe", default="sgd")
    ap.add_argument("--stride", type=int, default=64)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--min-gain", type=float, default=0.005, help="bits per byte the recipe must save")
    ap.add_argument("--note", default="", help="how the artifact was trained (recorded as is)")
    args = ap.parse_args()
    recipe = get_recipe(args.recipe)
    if recipe is None:
        raise SystemExit("error: --recipe none measures nothing; choose a recipe")
    loaded = load_artifact_model(read_artifact(args.artifact))
    ds = Dataset.open(args.data)
    common = (args.backend, loaded.model, loaded.config, loaded.weights, ds, args.stride)
    plain = score_weights(*common, precision=args.precision)
    adapted, stats = score_weights_adaptive(*common, recipe, precision=args.precision)
    gain = plain.val_bpb - adapted.val_bpb
    report = {
        "artifact": str(args.artifact),
        "note": args.note,
        "model": loaded.model,
        "preset": loaded.preset,
        "backend": args.backend,
        "dataset": ds.id,
        "precision": args.precision,
        "stride": args.stride,
        "recipe": recipe.to_dict(),
        "val_bpb_plain": plain.val_bpb,
        "val_bpb_adapted": adapted.val_bpb,
        "gain_bpb": gain,
        "eval_seconds_plain": plain.eval_seconds,
        "eval_seconds_adapted": adapted.eval_seconds,
        "adapt_seconds": stats.adapt_seconds,
        "adapt_tokens": stats.adapt_tokens,
        "adapt_flops": stats.adapt_flops,
        "adapt_chunks": stats.adapt_chunks,
        "min_gain_bpb": args.min_gain,
        "hardware": hardware({"kind": "cpu", "count": 1, "names": []}),
        "versions": versions(),
    }
    atomic_write_json(args.out, report)
    print(
        f"{loaded.model}/{loaded.preset}@{args.backend}: val_bpb {plain.val_bpb:.4f} -> {adapted.val_bpb:.4f}"
        f" (gain {gain:.4f} bpb) with '{recipe.name}', eval {plain.eval_seconds:.1f} s -> {adapted.eval_seconds:.1f} s"
    )
    return 0 if gain > args.min_gain else 1


if __name__ == "__main__":
    sys.exit(main())
