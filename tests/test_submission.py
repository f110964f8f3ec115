"""parameter-golf export: schema-validated submission.json, per-seed logs and artifacts, round trip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from golfbench.harness import submission

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1"}


def golf(*args, check=True):
    res = subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"golf {args} failed:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def two_seeds(shakespeare_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        golf(
            "run",
            "--track",
            "fixed-data",
            "--backend",
            "torch",
            "--model",
            "llama",
            "--preset",
            "tiny",
            "--seed",
            seed,
            "--data",
            shakespeare_dir,
            "--budget",
            "16384",
            "--eval-stride",
            "256",
            "--out",
            out,
        )
        dirs.append(out / "fixed-data" / "dev" / f"llama-tiny-torch-s{seed}-b16384")
    return dirs


def test_export_validate_and_rescore_round_trip(two_seeds, shakespeare_dir, tmp_path):
    rec = tmp_path / "records" / "2026-11-23_TinyLlama"
    golf(
        "export",
        *two_seeds,
        "--format",
        "parameter-golf",
        "--out",
        rec,
        "--author",
        "Ada",
        "--github-id",
        "ada-l",
        "--name",
        "Tiny llama",
        "--blurb",
        "Two seeds of llama/tiny.",
    )
    sub = json.loads((rec / "submission.json").read_text())
    assert submission.schema_errors(sub) == []
    assert sub["track"] == "fixed-data" and sub["seeds"] == [0, 1] and set(sub["seed_results"]) == {"0", "1"}
    results = [json.loads((d / "result.json").read_text()) for d in two_seeds]
    assert sub["val_bpb"] == pytest.approx(sum(r["val_bpb"] for r in results) / 2, rel=1e-12)
    assert sub["val_bpb_std"] > 0
    assert sub["bytes_code"] == sum(len(p.read_bytes()) for p in (rec / "src").glob("*.py")) > 0
    for seed in (0, 1):
        assert (rec / f"train_seed{seed}.log").read_text().count("step:") >= 1
        assert (rec / f"artifact_seed{seed}.golf").is_file()
    assert "golf run --track fixed-data" in (rec / "README.md").read_text()
    # fixed-data counts the tokenizer: it ships, and every seed's total holds model + code + tokenizer bytes
    raw = (shakespeare_dir / "tokenizer.model").read_bytes()
    tokenizer = (rec / "tokenizer.model.zst").read_bytes()  # shipped and counted zstd-22 compressed
    assert zstandard.ZstdDecompressor().decompress(tokenizer) == raw and sub["bytes_tokenizer"] == len(tokenizer)
    for seed, r in zip((0, 1), results):
        assert sub["seed_results"][str(seed)]["artifact_bytes"] == r["artifact_bytes"]
        assert r["artifact_bytes"] == r["model_bytes"] + sub["bytes_code"] + len(tokenizer)
    # the runs were unofficial (--budget, --eval-stride): the command that reproduces them says so
    assert sub["command"].endswith("--seed <SEED> --budget 16384 --eval-stride 256"), sub["command"]
    assert golf("validate-submission", rec).returncode == 0
    rescored = json.loads(
        golf("eval", rec / "artifact_seed1.golf", "--data", shakespeare_dir, "--stride", "256", "--json").stdout
    )
    assert rescored["val_bpb"] == pytest.approx(results[1]["val_bpb"], rel=1e-9)


def test_validate_catches_tampering(two_seeds, tmp_path):
    rec = tmp_path / "rec"
    golf("export", two_seeds[0], "--out", rec)
    sub = json.loads((rec / "submission.json").read_text())
    sub["track"] = "10min_16mb"  # one of parameter-golf's many spellings
    (rec / "submission.json").write_text(json.dumps(sub))
    res = golf("validate-submission", rec, check=False)
    assert res.returncode == 1 and "not one of" in res.stderr
    sub["track"] = "fixed-data"
    (rec / "submission.json").write_text(json.dumps(sub))
    (rec / "src" / "extra.py").write_text("# unpaid helper code\n")
    res = golf("validate-submission", rec, check=False)
    assert res.returncode == 1 and "bytes_code" in res.stderr
    (rec / "src" / "extra.py").unlink()
    (rec / "tokenizer.model.zst").write_bytes(b"smaller")  # a tokenizer other than the one counted
    res = golf("validate-submission", rec, check=False)
    assert (
        res.returncode == 1
        and f"bytes_tokenizer says {sub['bytes_tokenizer']:,} but tokenizer.model.zst holds 7" in (res.stderr)
    )


def test_export_refuses_mixed_configurations_and_existing_folders(two_seeds, tmp_path):
    res = golf("export", two_seeds[0], two_seeds[0], "--out", tmp_path / "x", check=False)
    assert res.returncode == 2 and "share a seed" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "y").mkdir()
    res = golf("export", two_seeds[0], "--out", tmp_path / "y", check=False)
    assert res.returncode == 2 and "already exists" in res.stderr


def test_schema_rejects_missing_fields_and_wrong_types():
    errs = submission.schema_errors({"author": "a", "val_bpb": "1.2"})
    assert any("missing required field 'track'" in e for e in errs)
    assert any("val_bpb: expected number" in e for e in errs)
