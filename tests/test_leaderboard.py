"""`golf leaderboard` on hand-written run records, and the statistics behind its p-values.

The records are written here field by field (result.json, run.json, events.jsonl and a real artifact.golf
whose sha256 and size match the claims), so every expected number on the boards is known in advance.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from golfbench.harness.artifact import pack
from golfbench.harness.records import RESULT_FIELDS
from golfbench.harness.stats import mean_std, t_sf, welch_one_sided
from golfbench.harness.tracks import load_track

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
CODE_BYTES = 1000


def golf(*args):
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


# ----------------------------------------------------------------------------------------------------------
# Student t and Welch: known values


@pytest.mark.parametrize(
    "t, df, p",
    [
        (2.228, 10, 0.025),
        (1.812, 10, 0.05),
        (2.764, 10, 0.01),
        (1.372, 10, 0.10),
        (12.706, 1, 0.025),
        (2.015, 5, 0.05),
        (1.960, 1e7, 0.025),
    ],
)
def test_t_sf_matches_the_student_t_table(t, df, p):
    # one-sided upper-tail probabilities from the standard t table (critical values rounded to 3 decimals)
    assert t_sf(t, df) == pytest.approx(p, abs=2e-4)


def test_t_sf_closed_forms_and_symmetry():
    assert t_sf(1.0, 1) == pytest.approx(0.25, abs=1e-12)  # Cauchy: 1/2 - atan(1)/pi
    for t in (0.3, 1.5, 4.0):  # df = 2: P(T > t) = 1/2 - t / (2 sqrt(t^2 + 2))
        assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), abs=1e-12)
    assert t_sf(0.0, 7) == pytest.approx(0.5, abs=1e-12)
    assert t_sf(-2.228, 10) == pytest.approx(1 - t_sf(2.228, 10), abs=1e-12)


def test_welch_uses_the_welch_satterthwaite_df():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    # by hand: s_a^2 = 5/3, s_b^2 = 4; v_a = 5/12, v_b = 4/3; t = 1.5 / sqrt(7/4);
    # df = (v_a + v_b)^2 / (v_a^2 / 3 + v_b^2 / 2) = 3.0625 / 0.9467593 = 3.23472
    t_hand = 1.5 / math.sqrt(7 / 4)
    df_hand = (21 / 12) ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert df_hand == pytest.approx(3.23472, abs=1e-5)
    p = welch_one_sided(a, b)
    assert p == pytest.approx(t_sf(t_hand, df_hand), rel=1e-9)
    # the pooled df (5) would give another answer: the test can tell the two apart
    assert abs(t_sf(t_hand, 5) - p) > 5e-3


def test_welch_equal_variances_reduce_to_df_2n_minus_2():
    x = np.arange(6.0)  # s^2 = 3.5 in each group, n = 6 -> df = 10
    delta = 2.228 * math.sqrt(2 * 3.5 / 6)  # makes t = 2.228 exactly
    assert welch_one_sided(list(x), list(x + delta)) == pytest.approx(0.025, abs=2e-4)
    # direction: "better" must have the lower mean for a small p
    assert welch_one_sided(list(x + delta), list(x)) == pytest.approx(0.975, abs=2e-4)
    assert welch_one_sided([1.0], [2.0, 3.0]) is None  # one seed: no test
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, statistics.stdev([1, 2, 3, 4])), rel=1e-12)
    assert mean_std([2.0]) == (2.0, 0.0)


def test_welch_agrees_with_scipy_on_unequal_samples():
    scipy_stats = pytest.importorskip("scipy.stats")  # an independent implementation, where installed
    rng = np.random.default_rng(3)
    for _ in range(20):
        a = rng.normal(2.0, rng.uniform(0.005, 0.05), size=rng.integers(2, 7))
        b = rng.normal(2.02, rng.uniform(0.005, 0.05), size=rng.integers(2, 7))
        want = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue
        assert welch_one_sided(list(a), list(b)) == pytest.approx(want, rel=1e-7, abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# hand-written run records


def write_run(
    runs: Path,
    run_id: str,
    *,
    bpb: float,
    seed: int,
    track: str = "fixed-data",
    scale: str = "dev",
    model: str = "llama",
    preset: str = "tiny",
    backend: str = "torch",
    hw: str = "cpu",
    cfg: str = "cfg-l1",
    unofficial: bool = False,
    budget: float | None = None,
    status: str = "ok",
) -> Path:
    """One complete run directory whose files agree with each other, as `golf run` would leave it."""
    t = load_track(track)
    rules = t.scale(scale)
    limit = float(budget if budget is not None else rules["budget"])
    seq, steps = 256, 4
    if t.budget_kind == "tokens":
        tokens = (int(limit) // seq) * seq
        per_step = tokens // steps
    else:
        per_step = 4096
        tokens = per_step * steps
    d = runs / track / scale / run_id
    d.mkdir(parents=True)
    (d / "code").mkdir()
    (d / "code" / "model.py").write_bytes(b"#" * CODE_BYTES)  # the code snapshot verify recounts
    rng = np.random.default_rng(
        int.from_bytes(hashlib.sha256(f"{run_id}|{seed}|{scale}|{hw}".encode()).digest()[:4], "little")
    )
    blob = pack(
        {"w": rng.standard_normal((4, 8)).astype(np.float32)},
        lambda name: False,
        {"model": model, "preset": preset, "run_id": run_id},
    )
    (d / "artifact.golf").write_bytes(blob)
    events = [{"event": "flops_check", "analytic_step_flops": 1e6 * per_step, "compiler_step_flops": None}]
    for step in range(1, steps + 1):
        events.append(
            {
                "step": step,
                "tokens": per_step * step,
                "flops": 1e6 * per_step * step,
                "time": 0.5 * step,
                "loss": 7.0 - step,
                "lr_scale": 1.0,
            }
        )
    (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    result = {k: None for k in RESULT_FIELDS}
    result.update(
        status=status,
        reason=None if status == "ok" else "training used too much",
        run_id=run_id,
        track=track,
        scale=scale,
        backend=backend,
        model=model,
        preset=preset,
        seed=seed,
        unofficial=unofficial,
        val_bpb=bpb,
        val_loss=bpb * 0.7,
        val_nll_sum=1000.0 * bpb,
        val_tokens=1000,
        val_bytes=1443,
        pre_quant_val_bpb=bpb - 0.001,
        artifact_bytes=len(blob) + CODE_BYTES,
        code_bytes=CODE_BYTES,
        model_bytes=len(blob),
        artifact_sha256=hashlib.sha256(blob).hexdigest(),
        artifact_cap_bytes=16_000_000,
        train_tokens=tokens,
        train_flops=1e6 * tokens,
        train_seconds=0.5 * steps,
        steps=steps,
        eval_seconds=1.0,
        eval_stride=min(int(rules["eval_stride"]), seq),
        eval_context=seq,
        budget_kind=t.budget_kind,
        budget_limit=limit,
        hardware_class=hw,
        config_sha256=cfg,
        eval_precision=rules.get("eval_precision", "fp32"),
    )
    manifest = {
        "run_id": run_id,
        "track": track,
        "track_sha256": t.sha256,
        "scale": scale,
        "backend": backend,
        "model": model,
        "preset": preset,
        "seed": seed,
        "config": {"seq_len": seq},
        "unofficial": unofficial,
        "budget": {"kind": t.budget_kind, "limit": limit, "track_default": rules["budget"]},
        "eval": {"stride": result["eval_stride"], "context": seq},
        "batch": {"seqs": 4, "seq_len": seq, "tokens": 1024},
        "dataset": {
            "name": "x",
            "id": rules["dataset"],
            "dir": "/nonexistent",
            "manifest_sha256": "0" * 64,
            "content_sha256": "c" * 64,
            "full_sha256": rules.get("dataset_sha256", "f" * 64),
        },
        "code_sha256": {"model.py": hashlib.sha256(b"#" * CODE_BYTES).hexdigest()},
        "hardware": {"class": hw},
    }
    (d / "result.json").write_text(json.dumps(result, indent=2))
    (d / "run.json").write_text(json.dumps(manifest, indent=2))
    return d


BEST = [2.1000, 2.1300, 2.1150]  # megalodon/tiny@torch, config m1
MIDDLE = [2.1200, 2.1450, 2.1280]  # llama/tiny@torch, config l1
LAST = [2.1500, 2.1800]  # llama/tiny@torch, config l2 (another config: another entry)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for s, bpb in enumerate(BEST):
        write_run(root, f"megalodon-tiny-torch-s{s}", model="megalodon", cfg="cfg-m1", seed=s, bpb=bpb)
    for s, bpb in enumerate(MIDDLE):
        write_run(root, f"llama-tiny-torch-s{s}", seed=s, bpb=bpb)
    for s, bpb in enumerate(LAST):
        write_run(root, f"llama-wide-s{s}", cfg="cfg-l2", seed=s, bpb=bpb)
    # never on the default board: an overridden budget, an over-budget run, a tampered artifact claim
    write_run(root, "llama-tiny-torch-s0-b131072", seed=0, bpb=1.5111, unofficial=True, budget=131072)
    write_run(root, "llama-tiny-torch-s3", seed=3, bpb=1.0222, status="over_budget")
    bad = write_run(root, "llama-tiny-torch-s4", seed=4, bpb=0.9333)
    res = json.loads((bad / "result.json").read_text())
    res["artifact_sha256"] = "f" * 64
    (bad / "result.json").write_text(json.dumps(res))
    # malformed records: cut off mid-write, and a JSON object missing most fields
    (root / "fixed-data" / "dev" / "partial").mkdir(parents=True)
    (root / "fixed-data" / "dev" / "partial" / "result.json").write_text('{"status": "ok", "val_bpb": 0.8')
    (root / "fixed-data" / "dev" / "stub").mkdir(parents=True)
    (root / "fixed-data" / "dev" / "stub" / "result.json").write_text('{"status": "ok", "track": "fixed-data"}')
    # other boards: another scale, another hardware class, another track (all better scores than the cpu board)
    write_run(root, "llama-tiny-torch-s0", scale="official", seed=0, bpb=1.9444)
    (root / "gpu").mkdir()
    write_run(root / "gpu", "llama-tiny-torch-s0", hw="1xH100", seed=0, bpb=1.8555)
    write_run(root, "llama-tiny-torch-s0", track="flop-budget", seed=0, bpb=2.5666)
    return root


def _p_text(p):
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _board_rows(md: str, heading: str) -> list[list[str]]:
    lines = md.splitlines()
    i = lines.index(heading)
    assert lines[i + 2].startswith("cohort: ")  # every board names its cohort under the heading
    rows = []
    for line in lines[i + 6 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_markdown_ranks_groups_and_separates_boards(runs):
    res = golf("leaderboard", "--runs", runs, "--format", "md")
    assert res.returncode == 0, res.stderr
    md = res.stdout
    headings = [line for line in md.splitlines() if line.startswith("## ")]
    assert sorted(headings) == sorted(
        [
            "## fixed-data · dev · cpu",
            "## fixed-data · dev · 1xH100",
            "## fixed-data · official · cpu",
            "## flop-budget · dev · cpu",
        ]
    )
    rows = _board_rows(md, "## fixed-data · dev · cpu")
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [(r[1], r[2]) for r in rows] == [
        ("megalodon/tiny", "torch"),
        ("llama/tiny", "torch"),
        ("llama/tiny", "torch"),
    ]
    for row, bpbs in zip(rows, (BEST, MIDDLE, LAST)):
        assert row[3] == f"{statistics.mean(bpbs):.4f}"
        assert row[4] == f"{statistics.stdev(bpbs):.4f}"
        assert row[5] == str(len(bpbs))
    assert rows[0][7] == "–"
    assert rows[1][7] == _p_text(welch_one_sided(BEST, MIDDLE))
    assert rows[2][7] == _p_text(welch_one_sided(MIDDLE, LAST))
    assert 0.001 < welch_one_sided(BEST, MIDDLE) < 0.5  # a p-value the table really prints, not "<0.001"
    # scores from other scales, hardware classes, tracks, unofficial, over-budget or tampered runs stay off this board
    board = "\n".join("|".join(r) for r in rows)
    for other in ("1.9444", "1.8555", "2.5666", "1.5111", "1.0222", "0.9333"):
        assert other not in board
    assert _board_rows(md, "## fixed-data · official · cpu")[0][3] == "1.9444"
    assert _board_rows(md, "## fixed-data · dev · 1xH100")[0][3] == "1.8555"
    assert "0.9333" not in md and "1.5111" not in md and "1.0222" not in md


def test_bad_records_are_skipped_with_one_warning_each(runs):
    res = golf("leaderboard", "--runs", runs)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3, res.stderr
    assert any("partial" in w and "not valid JSON" in w for w in warnings)
    assert any("stub" in w and "malformed result" in w for w in warnings)
    assert any("llama-tiny-torch-s4" in w and "artifact-hash" in w for w in warnings)
    assert "## fixed-data · dev · cpu" in res.stdout  # the rest still prints


def test_json_has_the_numbers(runs):
    res = golf("leaderboard", "--runs", runs, "--format", "json", "--track", "fixed-data")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    boards = {(b["track"], b["scale"], b["hardware"]): b for b in doc["boards"]}
    assert set(boards) == {
        ("fixed-data", "dev", "cpu"),
        ("fixed-data", "dev", "1xH100"),
        ("fixed-data", "official", "cpu"),
    }
    entries = boards[("fixed-data", "dev", "cpu")]["entries"]
    assert [(e["rank"], e["model"], e["config_sha256"]) for e in entries] == [
        (1, "megalodon", "cfg-m1"),
        (2, "llama", "cfg-l1"),
        (3, "llama", "cfg-l2"),
    ]
    for e, bpbs in zip(entries, (BEST, MIDDLE, LAST)):
        assert e["mean_val_bpb"] == pytest.approx(statistics.mean(bpbs), rel=1e-12)
        assert e["std_val_bpb"] == pytest.approx(statistics.stdev(bpbs), rel=1e-9)
        assert e["seeds"] == list(range(len(bpbs))) and e["n_seeds"] == len(bpbs)
        assert e["record_eligible"] == (len(bpbs) >= 3)
        assert e["unofficial"] is False
        sizes = [json.loads(Path(d, "result.json").read_text())["artifact_bytes"] for d in e["run_dirs"]]
        assert e["artifact_bytes"] == max(sizes)
    assert entries[0]["p_vs_above"] is None
    assert entries[1]["p_vs_above"] == pytest.approx(welch_one_sided(BEST, MIDDLE), rel=1e-12)
    assert entries[2]["p_vs_above"] == pytest.approx(welch_one_sided(MIDDLE, LAST), rel=1e-12)
    assert len(doc["warnings"]) == 3


def test_unofficial_runs_only_on_request_and_never_merged_as_seeds(runs):
    res = golf("leaderboard", "--runs", runs, "--format", "json", "--include-unofficial")
    assert res.returncode == 0, res.stderr
    boards = json.loads(res.stdout)["boards"]
    board = next(b for b in boards if (b["track"], b["scale"], b["hardware"]) == ("fixed-data", "dev", "cpu"))
    entries = board["entries"]
    assert entries[0]["unofficial"] is True and entries[0]["mean_val_bpb"] == pytest.approx(1.5111)
    assert entries[0]["budget_limit"] == 131072 and entries[0]["n_seeds"] == 1
    official_l1 = next(e for e in entries if e["config_sha256"] == "cfg-l1" and not e["unofficial"])
    assert official_l1["n_seeds"] == 3  # the unofficial seed-0 run did not join the official entry
    assert all(abs(e["mean_val_bpb"] - 1.0222) > 1e-6 for e in entries)  # over_budget stays out even now
    md = golf("leaderboard", "--runs", runs, "--include-unofficial").stdout
    assert "llama/tiny (unofficial, budget 131072)" in md


def test_track_filter_and_out_file(runs, tmp_path):
    out = tmp_path / "board.md"
    res = golf("leaderboard", "--runs", runs, "--track", "flop-budget", "--out", out)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == ["## flop-budget · dev · cpu"]
    assert "2.5666" in text


class _Checker(HTMLParser):
    VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_html_is_a_self_contained_well_formed_page(runs, tmp_path):
    out = tmp_path / "board.html"
    res = golf("leaderboard", "--runs", runs, "--format", "html", "--out", out)
    assert res.returncode == 0, res.stderr
    page = out.read_text(encoding="utf-8")
    assert page.lower().startswith("<!doctype html>")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    names = [t for t, _ in checker.tags]
    assert "script" not in names and "iframe" not in names
    assert not [a for _, attrs in checker.tags for k, a in attrs.items() if k in ("src", "href")]
    assert "http://" not in page and "https://" not in page and "@import" not in page
    text = "".join(checker.text)
    for heading in ("fixed-data · dev · cpu", "fixed-data · dev · 1xH100", "fixed-data · official · cpu"):
        assert heading in text
    assert f"{statistics.mean(BEST):.4f}" in text and f"{statistics.stdev(MIDDLE):.4f}" in text
    assert names.count("table") == 4
    assert "0.9333" not in text  # tampered run stays off; its warning is shown escaped
    assert "artifact-hash" in text


def test_leaderboard_errors_are_one_line(tmp_path):
    res = golf("leaderboard", "--runs", tmp_path / "nope")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr
    res = golf("leaderboard", "--runs", tmp_path, "--format", "pdf")
    assert res.returncode != 0 and "--format" in res.stderr and "Traceback" not in res.stderr
    empty = golf("leaderboard", "--runs", tmp_path)
    assert empty.returncode == 0 and "no eligible runs" in empty.stdout


def test_runs_on_other_data_or_precision_are_never_pooled(tmp_path):
    """Same model, preset, config and seed numbers, but scored on other val content or at another precision:
    separate cohorts, so separate boards; no entry averages them."""
    root = tmp_path / "runs"
    variants = {"a": ("a" * 64, "fp32"), "b": ("b" * 64, "fp32"), "c": ("a" * 64, "bf16")}
    for tag, (content, precision) in variants.items():
        for s, bpb in enumerate([2.0, 2.1]):
            # unofficial (overridden budget): the track's own rules would refuse bf16 or foreign data at dev scale
            d = write_run(
                root / tag,
                f"llama-tiny-torch-s{s}",
                seed=s,
                bpb=bpb + (0.5 if tag == "b" else 0.0),
                unofficial=True,
                budget=131072,
            )
            res = json.loads((d / "result.json").read_text())
            res.update(dataset_content_sha256=content, track_version=1, eval_precision=precision)
            (d / "result.json").write_text(json.dumps(res))
    res = golf("leaderboard", "--runs", root, "--format", "json", "--include-unofficial")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    boards = doc["boards"]
    assert len(boards) == 3
    seen = {(b["cohort"]["dataset_content_sha256"], b["cohort"]["eval_precision"]) for b in boards}
    assert seen == set(variants.values())
    for b in boards:
        (entry,) = b["entries"]
        assert entry["n_seeds"] == 2
        want = 2.55 if b["cohort"]["dataset_content_sha256"] == "b" * 64 else 2.05
        assert entry["mean_val_bpb"] == pytest.approx(want)
    md = golf("leaderboard", "--runs", root, "--include-unofficial").stdout
    assert md.count("cohort: fixed-data v1 · dev · data aaaaaaaa") == 2 and "data bbbbbbbb" in md
