"""End to end through the real CLI: shards -> torch llama -> artifact -> BPB -> result.json."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from golfbench.harness.artifact import CAP_BYTES

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1"}


def golf(*args, check=True, cwd=ROOT):
    res = subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and res.returncode != 0:
        raise AssertionError(f"golf {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def unigram_bpb(dataset_dir: Path) -> float:
    """BPB of the best context-free model fitted on train, scored on val: any real LM must beat it."""
    from golfbench.harness.data.dataset import Dataset
    from golfbench.harness.evaluate import count_val_bytes

    ds = Dataset.open(dataset_dir)
    train = np.concatenate([np.asarray(np.memmap(p, dtype="<u2", mode="r", offset=1024)) for p in ds.train_paths])
    counts = np.bincount(train, minlength=ds.vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    val = ds.val_tokens()
    return float(-logp[val[1:]].sum() / (math.log(2) * count_val_bytes(val, ds.accounting())))


@pytest.fixture(scope="module")
def torch_run(shakespeare_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = golf(
        "run",
        "--track",
        "fixed-data",
        "--scale",
        "dev",
        "--backend",
        "torch",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--seed",
        "0",
        "--data",
        shakespeare_dir,
        "--budget",
        "65536",
        "--eval-stride",
        "256",
        "--prequant",
        "--out",
        out,
        "--json",
    )
    return out, json.loads(res.stdout)


def test_result_json_is_complete_and_consistent(torch_run, shakespeare_dir):
    out, result = torch_run
    run_dir = out / "fixed-data" / "dev" / "llama-tiny-torch-s0-b65536"
    on_disk = json.loads((run_dir / "result.json").read_text())
    assert on_disk == result
    for key in (
        "status",
        "track",
        "scale",
        "backend",
        "model",
        "preset",
        "seed",
        "val_bpb",
        "val_loss",
        "val_nll_sum",
        "val_tokens",
        "val_bytes",
        "pre_quant_val_bpb",
        "artifact_bytes",
        "code_bytes",
        "model_bytes",
        "train_tokens",
        "train_flops",
        "train_seconds",
        "steps",
        "eval_seconds",
        "eval_stride",
        "unofficial",
    ):
        assert key in result, key
    assert result["status"] == "ok" and result["unofficial"] is True
    assert result["train_tokens"] == 65536 and result["steps"] == 16
    assert math.isfinite(result["val_bpb"])
    assert result["val_bpb"] == pytest.approx(result["val_nll_sum"] / (math.log(2) * result["val_bytes"]), rel=1e-12)
    assert result["val_bpb"] < unigram_bpb(shakespeare_dir)
    # fixed-data counts the tokenizer (count_tokenizer_bytes): code + model + the dataset's tokenizer.model
    assert result["count_tokenizer_bytes"] is True
    raw = (shakespeare_dir / "tokenizer.model").read_bytes()  # counted compressed, as the model is: zstd-22
    assert result["tokenizer_bytes"] == len(zstandard.ZstdCompressor(level=22).compress(raw)) < len(raw) // 2
    total = result["code_bytes"] + result["model_bytes"] + result["tokenizer_bytes"]
    assert result["artifact_bytes"] == total <= CAP_BYTES
    assert result["model_bytes"] == (run_dir / "artifact.golf").stat().st_size
    assert abs(result["val_bpb"] - result["pre_quant_val_bpb"]) < 0.1
    verify = json.loads(golf("data", "verify", shakespeare_dir, "--json").stdout)
    assert result["val_bytes"] == verify["val_bytes"] and result["val_tokens"] == verify["val_tokens"] - 1


def test_run_directory_holds_the_records(torch_run):
    out, result = torch_run
    run_dir = out / "fixed-data" / "dev" / "llama-tiny-torch-s0-b65536"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["seed"] == 0 and manifest["config"]["num_layers"] == 4
    assert manifest["model_package"]["name"] == "golfbench"
    assert manifest["dataset"]["manifest_sha256"] and manifest["track_sha256"]
    assert manifest["versions"]["torch"] and manifest["hardware"]["class"] == "cpu"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if "loss" in e]
    assert steps[-1]["step"] == 16 and steps[-1]["tokens"] == 65536
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run_dir / "checkpoint").exists()


def test_eval_cli_rescores_the_artifact_to_the_same_bpb(torch_run, shakespeare_dir):
    out, result = torch_run
    art = out / "fixed-data" / "dev" / "llama-tiny-torch-s0-b65536" / "artifact.golf"
    rep = json.loads(golf("eval", art, "--data", shakespeare_dir, "--stride", "256", "--json").stdout)
    assert rep["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-9)


def test_artifact_inspect_and_unpack(torch_run, tmp_path):
    out, _ = torch_run
    art = out / "fixed-data" / "dev" / "llama-tiny-torch-s0-b65536" / "artifact.golf"
    res = golf("artifact", "inspect", art)
    assert "tok_emb.weight" in res.stdout and "under the cap" in res.stdout
    golf("artifact", "unpack", art, "--out", tmp_path / "w.safetensors")
    from safetensors.numpy import load_file

    weights = load_file(tmp_path / "w.safetensors")
    assert weights["tok_emb.weight"].shape == (1024, 128) and weights["tok_emb.weight"].dtype == np.float32


def test_tracks_lists_three_tracks_with_both_scales():
    tracks = json.loads(golf("tracks", "--json").stdout)
    assert {t["name"] for t in tracks} == {"wallclock-10min", "fixed-data", "flop-budget"}
    assert all({"official", "dev"} <= set(t["scales"]) for t in tracks)
