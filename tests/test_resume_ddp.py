"""Resume under torchrun: a 2-process fixed-data run killed after a checkpoint (every process SIGKILLed, as a
lost machine) continues with `golf run --resume DIR --nproc-per-node 2` in DDP and ends where the
uninterrupted 2-process run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golf_helpers import ENV, ROOT, descendants, golf, small_dataset
from test_distributed import LOSS_RTOL

from golfbench.harness.records import read_events

# llama/tiny shrunk with --set: 1024-token steps (4 rows of 256, 2 per process); 60 steps, a checkpoint every 5
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
STEPS = 60
BUDGET = STEPS * 1024
EVERY = 5


def run_args(data: Path, out: Path, run_id: str) -> list[str]:
    return [
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
        "1",
        "--data",
        str(data),
        "--budget",
        str(BUDGET),
        "--eval-stride",
        "256",
        *MICRO,
        "--out",
        str(out),
        "--run-id",
        run_id,
        "--nproc-per-node",
        "2",
        "--checkpoint-every",
        str(EVERY),
        "--log-every",
        "1",
        "--json",
    ]


def _losses(d: Path) -> list[tuple[int, int, float, float]]:
    return [(e["step"], e["tokens"], e["loss"], e["lr_scale"]) for e in read_events(d / "events.jsonl") if "loss" in e]


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher, torchrun and every training process at once (torchrun puts each in its own session)."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the processes through /proc")
def test_a_killed_ddp_run_resumes_under_torchrun(shakespeare_dir, tmp_path):
    out = tmp_path / "runs"
    data = small_dataset(shakespeare_dir, tmp_path / "data" / "shakespeare_sp1024", train_tokens=BUDGET + 4096)
    t0 = time.monotonic()
    full = golf(*run_args(data, out, "full"), timeout=900)
    wall_full = time.monotonic() - t0
    assert full.returncode == 0, full.stderr
    full = json.loads(full.stdout)
    assert (
        full["status"] == "ok" and full["world_size"] == 2 and full["steps"] == STEPS and full["train_tokens"] == BUDGET
    )

    d = out / "fixed-data" / "dev" / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "golfbench.harness.cli", *run_args(data, out, "cut")],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600
        while not (d / "checkpoint" / "harness.json").exists():
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint after 600 s"
            time.sleep(0.02)
    finally:
        _kill_all(proc)
    assert not (d / "result.json").exists() and not (d / "artifact.golf").exists()
    ckpt = json.loads((d / "checkpoint" / "harness.json").read_text())
    assert ckpt["steps"] % EVERY == 0 and 0 < ckpt["steps"] < STEPS, ckpt
    assert ckpt["tokens"] == ckpt["steps"] * 1024 == ckpt["stream_tokens"]

    t0 = time.monotonic()
    res = golf("run", "--resume", d, "--nproc-per-node", "2", "--json", timeout=900)
    wall_resume = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    print(f"wall: uninterrupted {wall_full:.1f} s, resume from step {ckpt['steps']} {wall_resume:.1f} s")
    resumed = json.loads(res.stdout)
    assert resumed["status"] == "ok" and resumed["world_size"] == 2 and resumed["replicas_identical"] is True
    for key in ("train_tokens", "train_flops", "steps"):
        assert resumed[key] == full[key], key
    assert resumed["val_bpb"] == pytest.approx(full["val_bpb"], rel=1e-4)
    a, b = _losses(d), _losses(out / "fixed-data" / "dev" / "full")
    assert [x[:2] for x in a] == [x[:2] for x in b] == [(s, s * 1024) for s in range(1, STEPS + 1)]
    for x, y in zip(a, b):
        assert x[2] == pytest.approx(y[2], rel=LOSS_RTOL), (x, y)
        assert x[3] == y[3]  # the learning-rate schedule continues where it stopped
    manifest = json.loads((d / "run.json").read_text())
    assert manifest["world_size"] == 2
    assert not (d / "checkpoint").exists()
