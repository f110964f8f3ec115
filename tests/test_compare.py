"""`golf compare` end to end: two models, two seeds each, one tiny fixed-data budget, a table, compare.json and
compare.png; a second invocation reuses the finished runs instead of training again."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golf_helpers import small_dataset

from golfbench.harness.models import get_spec
from golfbench.harness.stats import welch_one_sided

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
BUDGET = 8192  # two steps of 4096 tokens for both tiny presets
TARGETS = ("llama/tiny@torch", "megalodon/tiny@torch")


def golf(*args, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def compare_args(data: Path, out: Path) -> list:
    return [
        "compare",
        *TARGETS,
        "--track",
        "fixed-data",
        "--scale",
        "dev",
        "--seeds",
        "2",
        "--data",
        data,
        "--budget",
        BUDGET,
        "--eval-stride",
        "256",
        "--out",
        out,
    ]


@pytest.fixture(scope="module")
def data(shakespeare_dir, tmp_path_factory) -> Path:
    return small_dataset(shakespeare_dir, tmp_path_factory.mktemp("data") / "shakespeare_sp1024", train_tokens=16_384)


@pytest.fixture(scope="module")
def compared(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    t0 = time.monotonic()
    res = golf(*compare_args(data, out))
    assert res.returncode == 0, res.stderr
    return out, res, time.monotonic() - t0


def _results(out: Path) -> dict[str, list[dict]]:
    found = {}
    for label in TARGETS:
        model = label.split("/")[0]
        dirs = [out / "fixed-data" / "dev" / f"{model}-tiny-torch-s{s}-b{BUDGET}" for s in (0, 1)]
        found[label] = [json.loads((d / "result.json").read_text()) for d in dirs]
    return found


@pytest.mark.slow
def test_compare_runs_every_target_and_seed_on_the_same_data(compared):
    out, res, _ = compared
    results = _results(out)
    for label, runs in results.items():
        assert [r["seed"] for r in runs] == [0, 1] and all(r["status"] == "ok" for r in runs), label
        assert all(r["train_tokens"] == BUDGET and r["eval_stride"] == 256 for r in runs)
    manifests = [
        json.loads((out / "fixed-data" / "dev" / f"{m}-tiny-torch-s{s}-b{BUDGET}" / "run.json").read_text())
        for m in ("llama", "megalodon")
        for s in (0, 1)
    ]
    assert len({json.dumps(m["batch"], sort_keys=True) for m in manifests}) == 1  # the same batches for everyone
    assert len({m["dataset"]["manifest_sha256"] for m in manifests}) == 1
    assert res.stderr.count("[compare] ") == 4 and res.stderr.count(": running") == 4


@pytest.mark.slow
def test_compare_json_and_table_carry_the_numbers(compared):
    out, res, _ = compared
    report = json.loads((out / "fixed-data" / "dev" / "compare.json").read_text())
    assert report["targets"] == list(TARGETS) and report["seeds"] == 2 and report["eval_stride"] == 256
    results = _results(out)
    rows = {r["label"]: r for r in report["rows"]}
    assert set(rows) == set(TARGETS)
    for label, runs in results.items():
        row, bpb = rows[label], [r["val_bpb"] for r in runs]
        assert row["n_ok"] == 2 and row["val_bpb"] == bpb
        assert row["mean_val_bpb"] == pytest.approx(statistics.mean(bpb), rel=1e-12)
        assert row["std_val_bpb"] == pytest.approx(statistics.stdev(bpb), rel=1e-9)
        assert row["train_seconds"] == pytest.approx(statistics.mean(r["train_seconds"] for r in runs))
        assert row["tokens_per_second"] == pytest.approx(statistics.mean(r["tokens_per_second"] for r in runs))
        spec = get_spec(row["model"])
        assert row["train_flops"] == pytest.approx(
            spec.flops_per_token(spec.config("tiny"))["total"] * BUDGET, rel=1e-12
        )
        assert row["artifact_bytes"] == max(r["artifact_bytes"] for r in runs)
    best, other = sorted(TARGETS, key=lambda t: rows[t]["mean_val_bpb"])
    assert report["best"] == best and rows[best]["p_best_better"] is None
    p = welch_one_sided(rows[best]["val_bpb"], rows[other]["val_bpb"])
    assert rows[other]["p_best_better"] == pytest.approx(p, rel=1e-12) and 0.0 <= p <= 1.0
    assert report["framework_effect"] == []  # one framework only: no torch-vs-jax ratio to report
    (effect,) = report["model_effect"]
    assert effect["backend"] == "torch" and (effect["better"], effect["worse"]) == (best, other)
    assert effect["bpb_difference"] == pytest.approx(
        rows[other]["mean_val_bpb"] - rows[best]["mean_val_bpb"], rel=1e-12
    )
    assert effect["p"] == pytest.approx(p, rel=1e-12)
    png = (out / "fixed-data" / "dev" / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # the printed table: both targets, mean ± std to 4 decimals, the best marked, the model effect stated
    table = res.stdout
    for label in TARGETS:
        line = next(line for line in table.splitlines() if label in line)
        assert f"{rows[label]['mean_val_bpb']:.4f} ± {rows[label]['std_val_bpb']:.4f}" in line
        assert f"{rows[label]['artifact_bytes']:,}" in line
    assert "best" in next(line for line in table.splitlines() if best in line)
    assert f"model effect, torch: {best} beats {other} by {effect['bpb_difference']:.4f} BPB" in table


@pytest.mark.slow
def test_a_second_compare_reuses_the_finished_runs(compared, data):
    out, _, first_seconds = compared
    results = sorted((out / "fixed-data" / "dev").glob("*/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in results}
    before = json.loads((out / "fixed-data" / "dev" / "compare.json").read_text())
    t0 = time.monotonic()
    res = golf(*compare_args(data, out))
    seconds = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(": reusing") == 4 and ": running" not in res.stderr
    assert {p: p.stat().st_mtime_ns for p in results} == stamps  # nothing was retrained or rewritten
    assert seconds < min(30.0, first_seconds / 3), (seconds, first_seconds)
    after = json.loads((out / "fixed-data" / "dev" / "compare.json").read_text())
    assert after["rows"] == before["rows"] and after["model_effect"] == before["model_effect"]


@pytest.mark.slow
def test_compare_refuses_to_reuse_a_run_made_under_other_rules(compared, data):
    out, _, _ = compared
    res = golf(
        "compare",
        "llama/tiny@torch",
        "--track",
        "fixed-data",
        "--seeds",
        "1",
        "--data",
        data,
        "--budget",
        BUDGET,
        "--out",
        out,
    )  # same run ids, but the track's stride of 64 this time
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "eval stride 256 instead of 64" in res.stderr and "another --out" in res.stderr


def test_compare_rejects_bad_targets(tmp_path):
    for args, message in (
        (["llama"], "must look like model[/preset]@backend"),
        (["llama@torch", "llama/tiny@torch"], "listed twice"),
        (["llama/huge@torch"], "unknown preset 'huge'"),
        (["llama@torch", "--seeds", "0"], "--seeds must be at least 1"),
    ):
        res = golf("compare", *args, "--out", tmp_path)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)
        assert not any(tmp_path.iterdir())


def test_compare_refuses_to_reuse_a_run_scored_on_other_data(compared, shakespeare_dir, tmp_path):
    """Same run ids, same rules, but --data now holds other val tokens: reusing would mix two cohorts."""
    out, _, _ = compared
    other = small_dataset(shakespeare_dir, tmp_path / "shakespeare_sp1024", train_tokens=16_384, val_tokens=3_000)
    res = golf(*compare_args(other, out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "dataset content" in res.stderr and "other train/val data or tokenizer" in res.stderr, res.stderr
