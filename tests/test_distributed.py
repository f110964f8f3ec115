"""torch DDP under torchrun: 2 processes reach the same losses as 1 for the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One thread per process: two gloo ranks on two shared cores must not oversubscribe.
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
# The two runs sum gradients in a different order (all-reduce of two half-batch means vs one full mean), so
# losses agree to fp32 rounding that compounds slowly over steps, not bit for bit.
LOSS_RTOL = 2e-4


def _run(out: Path, data: Path, nproc: int) -> tuple[dict, list[dict]]:
    args = [
        sys.executable,
        "-m",
        "golfbench.harness.cli",
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
        "3",
        "--data",
        str(data),
        "--budget",
        "40960",
        "--eval-stride",
        "256",
        "--out",
        str(out),
        "--nproc-per-node",
        str(nproc),
        "--json",
    ]
    res = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = out / "fixed-data" / "dev" / "llama-tiny-torch-s3-b40960"
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "result.json").read_text()), [e for e in events if "loss" in e]


@pytest.mark.slow
def test_two_processes_match_one(shakespeare_dir, tmp_path):
    one, ev1 = _run(tmp_path / "one", shakespeare_dir, 1)
    two, ev2 = _run(tmp_path / "two", shakespeare_dir, 2)
    assert [e["step"] for e in ev1] == [e["step"] for e in ev2] and len(ev1) >= 2
    for a, b in zip(ev1, ev2):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL), (a, b)
        assert a["tokens"] == b["tokens"]
    assert two["train_tokens"] == one["train_tokens"] == 40960
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], rel=1e-3)
    manifest = json.loads(
        (tmp_path / "two" / "fixed-data" / "dev" / "llama-tiny-torch-s3-b40960" / "run.json").read_text()
    )
    assert manifest["hardware"]["world_size"] == 2
