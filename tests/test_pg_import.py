"""`golf import parameter-golf PATH` on a clone written in the shapes the real records use (tests/pg_records.py),
and how `golf leaderboard` shows the imported history: own cohorts, self-reported, never verified, "—" for gaps."""

from __future__ import annotations

import html
import json
import re
import statistics
from pathlib import Path

import pytest
from golf_helpers import golf, golf_ok, one_line_error
from pg_records import HOSTILE, RECORDS, write_clone
from scipy import stats

from golfbench.harness import schema
from golfbench.harness.pg_import import normalize_track, tokenizer_variant

PG = "imported/parameter-golf"


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pg")
    clone = write_clone(root / "parameter-golf")
    runs = root / "runs"
    golf_ok("import", "parameter-golf", clone, "--out", runs)
    docs = {str(p.parent.relative_to(runs / PG)): json.loads(p.read_text()) for p in (runs / PG).rglob("imported.json")}
    return runs, docs


def test_every_record_is_imported_schema_valid_and_self_reported(imported):
    _, docs = imported
    assert set(docs) == set(RECORDS)
    for rel, doc in docs.items():
        assert schema.errors("imported", doc) == [], rel
        assert doc["self_reported"] is True and doc["verified"] is False and doc["source"] == "parameter-golf"
        assert doc["record"] == f"records/{rel}"


def test_values_are_read_from_each_shape_with_their_sources(imported):
    _, docs = imported
    base = docs["track_10min_16mb/2026-03-17_NaiveBaseline"]
    assert (base["val_bpb"], base["val_loss"], base["bytes_total"]) == (1.2243657, 2.07269931, 15863489)
    assert base["track"] == "10min_16mb" and base["track_raw"] is None
    assert base["sources"]["track"] == "records folder name"
    assert (base["tokenizer"], base["sources"]["tokenizer"]) == ("sp1024", "train.log vocab_size")
    assert base["seeds"] is None and base["missing"] == ["seeds"]
    assert base["curves"]["train.log"] == [[100, 6.9], [200, 4.2], [300, 3.1]]

    # no val_bpb in the JSON: the mean of the three seed logs' final exact lines; val_loss as the JSON states it
    int5 = docs["track_10min_16mb/2026-03-20_10L_Int5MLP"]
    want = {"1337": 1.1429, "42": 1.1427, "2024": 1.1426}
    assert int5["seed_val_bpb"] == want
    assert int5["val_bpb"] == pytest.approx((1.1429 + 1.1427 + 1.1426) / 3, abs=1e-12)
    assert int5["sources"]["val_bpb"].startswith("mean of per-seed val_bpb (train logs")
    assert int5["val_bpb_std"] == pytest.approx(statistics.stdev(want.values()), rel=1e-12)
    assert int5["val_loss"] == 1.14276 and int5["sources"]["val_loss"] == "submission.json val_loss"
    assert sorted(int5["seeds"]) == ["1337", "2024", "42"] and int5["sources"]["seeds"] == "train log file names"

    # seeds as a dict of per-seed results
    qk5 = docs["track_10min_16mb/2026-04-06_QK5_LegalTTT"]
    assert qk5["val_bpb"] == 1.08279384 and qk5["tokenizer"] == "sp8192"
    assert qk5["sources"]["tokenizer"] == "submission.json tokenizer"
    assert qk5["bytes_total"] == 15992546 and qk5["sources"]["bytes_total"].startswith("max of per-seed bytes")
    assert qk5["val_loss"] == pytest.approx((2.79517119 + 2.79788378 + 2.79785185) / 3, abs=1e-12)
    assert qk5["seeds"] == ["0", "42", "1234"] and qk5["missing"] == []

    par = docs["track_10min_16mb/2026-04-08_SP8192_ParallelResid"]
    assert (par["tokenizer"], par["sources"]["tokenizer"]) == ("sp8192", "record folder name")
    assert par["val_loss"] is None and par["bytes_total"] is None  # never invented
    assert par["missing"] == ["val_loss", "bytes_total"] and par["val_bpb_std"] == 0.0005

    sw = docs["track_10min_16mb/2026-03-19_SlidingWindow_10L"]
    assert (sw["val_bpb"], sw["val_loss"], sw["bytes_total"]) == (1.17475315, 1.98352149, 15374243)
    assert sw["sources"]["val_bpb"] == "submission.json mean_val_bpb" and sw["tokenizer"] == "sp1024"
    assert sw["name"] == HOSTILE  # stored as written; escaped where shown


def test_track_spellings_and_gaps(imported):
    _, docs = imported
    nr = {rel.split("/")[1]: d for rel, d in docs.items() if rel.startswith("track_non_record")}
    assert {d["track"] for d in nr.values()} == {"non_record_16mb"}
    assert nr["2026-03-18_Quasi10B_SP1024_4h"]["track_raw"] == "non-record-unlimited-compute-16mb"
    assert nr["2026-03-18_Quasi10B_SP1024_4h"]["train_seconds"] == 14400
    swiglu = nr["2026-03-19_SwiGLU_1x5090"]
    assert swiglu["val_loss"] is None and swiglu["tokenizer"] == "unknown"
    assert swiglu["missing"] == ["tokenizer", "val_loss", "seeds"]
    none = nr["2026-04-01_NoScore"]
    assert none["val_bpb"] is None and none["track_raw"] is None
    assert none["missing"] == ["tokenizer", "val_bpb", "bytes_total", "seeds", "author", "date"]


@pytest.mark.parametrize(
    "raw, folder, want",
    [
        ("10min_16mb", None, "10min_16mb"),
        ("track_10min_16mb", None, "10min_16mb"),
        ("non-record-16mb", None, "non_record_16mb"),
        ("non_record_16mb", None, "non_record_16mb"),
        ("non-record-unlimited-compute-16mb", None, "non_record_16mb"),
        (None, "track_non_record_16mb", "non_record_16mb"),
        (None, "track_10min_16mb", "10min_16mb"),
        (None, "my_records", "unknown"),
        ("Some-Other", None, "some_other"),
    ],
)
def test_normalize_track(raw, folder, want):
    assert normalize_track(raw, folder)[0] == want


@pytest.mark.parametrize(
    "sub, name, want",
    [
        ({"tokenizer": "SentencePiece BPE 8192"}, "x", "sp8192"),
        ({"vocab_size": 4096}, "x", "sp4096"),
        ({}, "2026-04-05_SP8192_GPTQ-Embeddings", "sp8192"),
        ({}, "2026-03-18_Quasi10Bfrom50B_SP1024_9x512", "sp1024"),
        ({}, "train_byte260_best", "byte260"),
        ({"name": "sp4096 depth recurrence"}, "2026-04-04_Depth", "sp4096"),
        ({}, "2026-04-10_VarLenAttn", "unknown"),  # sp1024 is never assumed
        ({}, "2026-03-19_SPARSE_Gates", "unknown"),
    ],
)
def test_tokenizer_variant_comes_from_the_record_or_is_unknown(sub, name, want):
    assert tokenizer_variant(sub, name, {})[0] == want


def test_leaderboard_shows_imports_in_their_own_cohorts(imported):
    runs, docs = imported
    doc = json.loads(golf_ok("leaderboard", "--runs", runs, "--format", "json").stdout)
    boards = {(b["track"], b["tokenizer"]): b for b in doc["boards"]}
    assert set(boards) == {
        ("parameter-golf 10min_16mb", "sp1024"),
        ("parameter-golf 10min_16mb", "sp8192"),
        ("parameter-golf non-record 16mb", "sp1024"),
        ("parameter-golf non-record 16mb", "unknown"),
    }
    assert all(b["imported"] for b in boards.values())
    rows = boards[("parameter-golf 10min_16mb", "sp1024")]["entries"]
    assert [r["name"] for r in rows] == ["10L Int5-MLP", HOSTILE, "Naive Baseline"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert all(r["rescored"] is False and r["self_reported"] for r in rows)
    # Welch from the per-seed values both records list (scipy here, independently of the harness)
    a = list(docs["track_10min_16mb/2026-03-20_10L_Int5MLP"]["seed_val_bpb"].values())
    b = [1.17558517, 1.17423973, 1.17443456]
    assert rows[1]["p_vs_above"] == pytest.approx(
        stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue, rel=1e-9
    )
    assert rows[2]["p_vs_above"] is None  # the baseline lists no per-seed values
    unknown = boards[("parameter-golf non-record 16mb", "unknown")]["entries"]
    assert [(r["name"], r["rank"]) for r in unknown] == [
        ("LLaDA MDLM Diffusion", 1),
        ("SwiGLU", 2),
        ("Only a loss", None),
    ]

    md = golf_ok("leaderboard", "--runs", runs).stdout
    assert "## parameter-golf 10min_16mb · sp8192 (imported, self-reported)" in md
    line = next(x for x in md.splitlines() if "SP8192 + Parallel Residuals" in x)
    assert line.startswith("| 1 |") and "| 1.0822 | 0.0005 | 3 | — |" in line and "imported, self-reported" in line
    line = next(x for x in md.splitlines() if "Only a loss" in x)
    assert line.startswith("| — | Only a loss | — | — | — | — | — | — |")
    only = json.loads(golf_ok("leaderboard", "--runs", runs, "--format", "json", "--track", "10min_16mb").stdout)
    assert {b["track"] for b in only["boards"]} == {"parameter-golf 10min_16mb"}


def test_reimport_replaces_the_last_import(imported, tmp_path):
    clone = write_clone(tmp_path / "pg")
    runs = tmp_path / "runs"
    golf_ok("import", "parameter-golf", clone, "--out", runs)
    first = {p: p.read_bytes() for p in (runs / PG).rglob("*") if p.is_file()}
    golf_ok("import", "parameter-golf", clone / "records", "--out", runs)  # the records folder works too
    assert {p: p.read_bytes() for p in (runs / PG).rglob("*") if p.is_file()} == first
    gone = clone / "records" / "track_non_record_16mb" / "2026-04-01_NoScore"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    res = golf_ok("import", "parameter-golf", clone, "--out", runs)
    assert "imported 8 records" in res.stdout
    assert len(list((runs / PG).rglob("imported.json"))) == 8
    assert [p.name for p in (runs / "imported").iterdir()] == ["parameter-golf"]  # no temp folders left


def test_bad_paths_are_one_line_errors_and_write_nothing(tmp_path):
    runs = tmp_path / "runs"
    one_line_error(golf("import", "parameter-golf", tmp_path / "nope", "--out", runs), "not a folder")
    (tmp_path / "empty").mkdir()
    one_line_error(
        golf("import", "parameter-golf", tmp_path / "empty", "--out", runs), "no records/*/*/submission.json"
    )
    clone = write_clone(tmp_path / "pg")
    (clone / "records" / "track_10min_16mb" / "2026-03-17_NaiveBaseline" / "submission.json").write_text(
        '{"val_bpb": 1.2'
    )
    one_line_error(golf("import", "parameter-golf", clone, "--out", runs), "cannot read", "submission.json")
    assert not runs.exists()  # everything is read and checked before anything is written


def test_a_wallclock_official_board_is_shown_against_the_record_history(tmp_path):
    from test_leaderboard import write_run

    runs = tmp_path / "runs"
    for s, bpb in enumerate([1.1500, 1.1600]):  # mean 1.155: between SlidingWindow (1.1748) and Int5 (1.1427)
        write_run(runs, f"llama-s{s}", track="wallclock-10min", scale="official", hw="8xH100", seed=s, bpb=bpb)
    golf_ok("import", "parameter-golf", write_clone(tmp_path / "pg"), "--out", runs)
    doc = json.loads(golf_ok("leaderboard", "--runs", runs, "--format", "json").stdout)
    (ours,) = [b for b in doc["boards"] if not b.get("imported")]
    assert ours["history"]["board"] == "parameter-golf 10min_16mb · sp1024"
    (row,) = ours["history"]["standing"]
    assert (row["place"], row["of"], row["above"], row["below"]) == (2, 4, "10L Int5-MLP", HOSTILE)
    md = golf_ok("leaderboard", "--runs", runs).stdout
    assert "- llama/tiny@torch: 1.1550 would place 2 of 4" in md
    # the golfbench board itself holds only the golfbench entry: nothing imported is pooled into it
    assert [e["model"] for e in ours["entries"]] == ["llama"]
    golf_ok("leaderboard", "--runs", runs, "--format", "html", "--out", tmp_path / "site")
    (page,) = (tmp_path / "site").glob("board-wallclock-10min*.html")
    row = re.search(r"<tr class=standing>(.*?)</tr>", page.read_text()).group(1)
    assert re.sub(r"<[^>]+>", "|", row).strip("|").split("||") == [
        "llama/tiny@torch", "1.1550", "2 of 4", "10L Int5-MLP", html.escape(HOSTILE)
    ]  # fmt: skip
