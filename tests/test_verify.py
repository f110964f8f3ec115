"""Run records and `golf verify`: a fresh run passes; every kind of tampering fails with one line per check.

One real run (torch llama/tiny made smaller with --set, fixed-data, 8 steps, on a prefix of the Shakespeare
dataset so every re-scoring is quick) is made once; each tampering test works on its own copy of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from golf_helpers import small_dataset

from golfbench.harness.records import read_events

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
MICRO = [
    "--set",
    "num_layers=2",
    "--set",
    "model_dim=64",
    "--set",
    "num_heads=2",
    "--set",
    "num_kv_heads=1",
    "--set",
    "train_batch_tokens=1024",
]
BUDGET = 8192


def golf(*args):
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def data(shakespeare_dir, tmp_path_factory) -> Path:
    return small_dataset(shakespeare_dir, tmp_path_factory.mktemp("data") / "shakespeare_sp1024", train_tokens=16_384)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs")
    res = golf(
        "run",
        "--track",
        "fixed-data",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--seed",
        "0",
        "--data",
        data,
        "--budget",
        BUDGET,
        "--eval-stride",
        "256",
        *MICRO,
        "--out",
        out,
        "--run-id",
        "v0",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    return out / "fixed-data" / "dev" / "v0", json.loads(res.stdout)


@pytest.fixture
def copy(run, tmp_path):
    """A private copy of the finished run directory, for a test to tamper with."""
    return Path(shutil.copytree(run[0], tmp_path / "fixed-data" / "dev" / "v0"))


def edit_json(path: Path, **changes) -> dict:
    obj = json.loads(path.read_text())
    obj.update(changes)
    path.write_text(json.dumps(obj, indent=2))
    return obj


def failures(res) -> list[str]:
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert all(line.startswith("FAIL ") for line in lines), lines
    return [line[5:].split(":", 1)[0] for line in lines]


# ----------------------------------------------------------------------------------------------------------
# the records a run leaves


def test_run_json_records_provenance(run, data):
    d, result = run
    m = json.loads((d / "run.json").read_text())
    for pkg in ("python", "numpy", "torch", "jax", "flax", "optax"):
        assert pkg in m["versions"]
    assert m["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert m["versions"]["torch"] and m["versions"]["numpy"]
    assert len(m["git"]["sha"]) == 40 and isinstance(m["git"]["dirty"], bool)
    assert m["hardware"]["class"] == "cpu" and m["hardware"]["cpu_count"] >= 1
    assert m["seed"] == 0 and m["backend"] == "torch" and m["model"] == "llama" and m["preset"] == "tiny"
    from golfbench.harness.models import get_spec

    full = get_spec("llama").config(
        "tiny", {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
    )
    assert m["config"] == full  # every key, not just the overridden ones
    assert m["dataset"]["manifest_sha256"] == hashlib.sha256((data / "manifest.json").read_bytes()).hexdigest()
    assert m["track_sha256"] == hashlib.sha256((ROOT / "tracks" / "fixed-data.toml").read_bytes()).hexdigest()
    assert m["budget"] == {"kind": "tokens", "limit": BUDGET, "track_default": 262144} and m["unofficial"] is True
    assert result["config_sha256"] and result["hardware_class"] == "cpu"


def test_events_hold_one_line_per_logged_step_and_no_temp_files_remain(run):
    d, result = run
    lines = (d / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]  # every line is one complete JSON object
    steps = [e for e in events if "loss" in e]
    assert [e["step"] for e in steps] == [1, 8]  # step 1, every 10th, and the last
    assert [e["tokens"] for e in steps] == [1024, BUDGET]
    for e in steps:
        assert set(e) == {"step", "time", "step_seconds", "tokens", "flops", "loss", "lr_scale"}
    assert steps[-1]["time"] == result["train_seconds"] and steps[-1]["flops"] == result["train_flops"]
    check = [e for e in events if e.get("event") == "flops_check"]
    assert len(check) == 1 and check[0]["compiler_step_flops"] > 0
    assert sorted(p.name for p in d.iterdir()) == [
        "artifact.golf",
        "code",
        "events.jsonl",
        "loss.png",
        "result.json",
        "run.json",
        "tokenizer.model.zst",  # fixed-data counts the tokenizer: the bytes it counted
    ]


# ----------------------------------------------------------------------------------------------------------
# golf verify


def test_verify_passes_on_a_fresh_run(run):
    d, result = run
    res = golf("verify", d)
    assert res.returncode == 0, res.stderr
    assert "verified" in res.stdout and f"{result['val_bpb']:.6f}" in res.stdout
    stamp = json.loads((d / "verify.json").read_text())
    assert stamp["ok"] is True and stamp["artifact_sha256"] == result["artifact_sha256"]
    assert stamp["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-9)
    (d / "verify.json").unlink()  # leave the shared run as it was


def test_verify_fails_on_an_edited_val_bpb(copy, run):
    edit_json(copy / "result.json", val_bpb=run[1]["val_bpb"] - 0.001)
    assert failures(golf("verify", copy)) == ["val_bpb"]


def _other_seed_artifact(d: Path, run_id: str) -> bytes:
    """A genuine artifact of the same model and config, trained from another seed's initial weights."""
    from golfbench.harness.artifact import pack
    from golfbench.harness.init import init_weights
    from golfbench.harness.models import get_spec

    m = json.loads((d / "run.json").read_text())
    spec = get_spec("llama")
    weights = init_weights(spec, m["config"], 1)
    return pack(
        weights,
        spec.is_control,
        {"model": "llama", "preset": "tiny", "config": m["config"], "backend": "torch", "run_id": run_id},
    )


def test_verify_fails_on_an_artifact_swapped_in(copy):
    (copy / "artifact.golf").write_bytes(_other_seed_artifact(copy, "v1"))
    failed = failures(golf("verify", copy))
    assert "artifact-hash" in failed and "val_bpb" not in failed  # caught before any re-scoring


def test_verify_fails_on_a_swapped_artifact_with_matching_hash_claims(copy):
    # a careful forger also rewrites the hash and sizes; the artifact still names the run that made it
    blob = _other_seed_artifact(copy, "llama-tiny-torch-s1")
    (copy / "artifact.golf").write_bytes(blob)
    claimed = json.loads((copy / "result.json").read_text())
    code = claimed["code_bytes"] + claimed["tokenizer_bytes"]  # fixed-data counts the tokenizer too
    edit_json(
        copy / "result.json",
        artifact_sha256=hashlib.sha256(blob).hexdigest(),
        model_bytes=len(blob),
        artifact_bytes=len(blob) + code,
    )
    assert failures(golf("verify", copy)) == ["artifact-origin"]


def test_verify_fails_on_other_weights_under_this_runs_name(copy):
    # ... and where even the artifact's metadata is forged, the re-scored val_bpb gives it away
    blob = _other_seed_artifact(copy, "v0")
    (copy / "artifact.golf").write_bytes(blob)
    claimed = json.loads((copy / "result.json").read_text())
    code = claimed["code_bytes"] + claimed["tokenizer_bytes"]  # fixed-data counts the tokenizer too
    edit_json(
        copy / "result.json",
        artifact_sha256=hashlib.sha256(blob).hexdigest(),
        model_bytes=len(blob),
        artifact_bytes=len(blob) + code,
    )
    assert failures(golf("verify", copy)) == ["val_bpb"]


def test_verify_fails_on_events_claiming_more_tokens_than_the_budget(copy):
    lines = (copy / "events.jsonl").read_text().splitlines()
    at = max(i for i, line in enumerate(lines) if '"loss"' in line)  # the last train step (val/eval events follow)
    last = json.loads(lines[at])
    last.update(tokens=BUDGET + 1024, step=9)
    lines[at] = json.dumps(last)
    (copy / "events.jsonl").write_text("\n".join(lines) + "\n")
    res = golf("verify", copy)
    failed = failures(res)
    assert "budget" in failed and "val_bpb" not in failed
    assert f"the log shows {BUDGET + 1024:g} tokens, over the limit {BUDGET:g}" in res.stderr


def test_verify_fails_when_the_track_or_dataset_differs(copy):
    m = json.loads((copy / "run.json").read_text())
    m["track_sha256"] = "0" * 64
    m["dataset"]["manifest_sha256"] = "1" * 64
    (copy / "run.json").write_text(json.dumps(m))
    assert sorted(failures(golf("verify", copy))) == ["dataset-hash", "track-hash"]  # no re-score on other data


def test_verify_catches_record_claims_a_leaderboard_would_trust(copy):
    """The leaderboard's cheap path (no data, no re-scoring) must still refuse inconsistent records."""
    from golfbench.harness.verify import verify_run

    assert verify_run(copy, rescore=False, check_data=False).ok
    edit_json(copy / "result.json", unofficial=False)  # an overridden budget passed off as official
    v = verify_run(copy, rescore=False, check_data=False)
    assert [f.split(":")[0] for f in v.failures] == ["claims"] and "unofficial" in v.failures[0]
    m = edit_json(copy / "run.json", unofficial=False)  # now both claim official: the budget is not the track's
    v = verify_run(copy, rescore=False, check_data=False)
    assert [f.split(":")[0] for f in v.failures] == ["rules"]
    assert (
        "budget 8192 is not the track's 262144" in v.failures[0]
        and "eval stride 256 is not the track's 64" in v.failures[0]
    )
    assert m["unofficial"] is False
    edit_json(copy / "run.json", unofficial=True)
    steps = json.loads((copy / "result.json").read_text())["steps"]
    edit_json(copy / "result.json", unofficial=True, steps="eight")  # a mistyped field fails the schema, one line
    v = verify_run(copy, rescore=False, check_data=False)
    assert v.failures == ["result-schema: field 'steps' is not a number"]
    edit_json(copy / "result.json", steps=steps, seed=3)  # a seed the run never used
    v = verify_run(copy, rescore=False, check_data=False)
    assert v.failures and v.failures[0].startswith("claims") and "seed" in v.failures[0]


def test_verify_accepts_a_record_older_than_eval_precision(copy):
    """result.json files written before the field existed were scored in fp32: verify re-scores them so."""
    obj = json.loads((copy / "result.json").read_text())
    assert obj.pop("eval_precision") == "fp32"
    (copy / "result.json").write_text(json.dumps(obj))
    res = golf("verify", copy)
    assert res.returncode == 0, res.stderr
    assert json.loads((copy / "verify.json").read_text())["val_bpb"] == pytest.approx(obj["val_bpb"], rel=1e-9)


def test_an_official_run_must_score_at_the_tracks_precision():
    from golfbench.harness.tracks import load_track
    from golfbench.harness.verify import Verdict, _rules_check

    rules = load_track("fixed-data").scale("official")
    manifest = {"budget": {"limit": rules["budget"]}, "dataset": {"id": rules["dataset"]}, "eval": {"context": 1024}}

    def problems(**result):
        v = Verdict(Path("."))
        _rules_check(v, {"eval_stride": 64, **result}, manifest, rules)
        return v.failures

    assert rules["eval_precision"] == "bf16" and problems(eval_precision="bf16") == []
    assert problems(eval_precision="fp32") == [
        "rules: the run claims to be official but its eval precision fp32 is not the track's bf16"
    ]
    assert problems() == [
        "rules: the run claims to be official but its eval precision fp32 is not the track's bf16"
    ]  # absent: fp32


def test_verify_errors_are_one_line(tmp_path, copy):
    res = golf("verify", tmp_path / "missing")
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    (copy / "result.json").write_text('{"status": "ok", "val_bpb": 1.2')  # a partial write
    assert failures(golf("verify", copy)) == ["files"]
    (copy / "result.json").unlink()
    assert failures(golf("verify", copy)) == ["files"]


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    from golfbench.harness import records

    path = tmp_path / "result.json"
    records.atomic_write_json(path, {"val_bpb": 1.25})

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(records.os, "fsync", disk_full)  # the new bytes are half on their way to disk
        with pytest.raises(OSError):
            records.atomic_write_json(path, {"val_bpb": 1.5})
    assert json.loads(path.read_text()) == {"val_bpb": 1.25}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind
    records.atomic_write_json(path, {"val_bpb": 1.5})
    assert json.loads(path.read_text()) == {"val_bpb": 1.5}
    records.atomic_write_json(path, {"val_bpb": float("nan")})  # JSON has no NaN: written as null, never unparseable
    assert json.loads(path.read_text()) == {"val_bpb": None}


def test_a_torn_last_event_line_is_ignored_by_readers(copy):
    # a line cut short by a kill is ignored by readers rather than breaking them
    with open(copy / "events.jsonl", "a") as f:
        f.write('{"step": 9, "tok')
    assert [e["step"] for e in read_events(copy / "events.jsonl") if "loss" in e] == [1, 8]


def test_verify_recounts_the_tokenizer_the_track_counts(copy):
    # fixed-data counts the tokenizer: a result claiming a smaller one (and a total to match) is caught
    claimed = json.loads((copy / "result.json").read_text())
    edit_json(
        copy / "result.json",
        tokenizer_bytes=claimed["tokenizer_bytes"] - 1000,
        artifact_bytes=claimed["artifact_bytes"] - 1000,
    )
    assert failures(golf("verify", copy)) == ["tokenizer-size"]
