"""Fixed-data runs are resumable: a run killed with SIGKILL after a checkpoint continues with
`golf run --resume RUN_DIR` and ends exactly where an uninterrupted run ends (same losses, same val_bpb).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from golf_helpers import small_dataset

from golfbench.harness.artifact import unpack
from golfbench.harness.records import read_events

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
# llama/tiny shrunk with --set: 1024-token steps of ~0.1 s; 120 steps, checkpoints at steps 50 and 100
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
BUDGET = 120 * 1024


def golf(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_args(data: Path, out: Path, run_id: str) -> list[str]:
    return [
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
        "--json",
    ]


def _trajectory(d: Path) -> list[tuple]:
    return [
        (e["step"], e["tokens"], e["flops"], e["loss"], e["lr_scale"])
        for e in read_events(d / "events.jsonl")
        if "loss" in e
    ]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_uninterrupted_result(shakespeare_dir, tmp_path):
    out = tmp_path / "runs"
    data = small_dataset(shakespeare_dir, tmp_path / "data" / "shakespeare_sp1024", train_tokens=BUDGET + 4096)
    full = golf(*run_args(data, out, "full"))
    assert full.returncode == 0, full.stderr
    full = json.loads(full.stdout)
    assert full["steps"] == 120 and full["train_tokens"] == BUDGET

    d = out / "fixed-data" / "dev" / "cut"
    with open(tmp_path / "cut.err", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "golfbench.harness.cli", *run_args(data, out, "cut")],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 300
            while not (d / "checkpoint" / "harness.json").exists():
                assert proc.poll() is None, (
                    f"the run ended before its first checkpoint: {(tmp_path / 'cut.err').read_text()}"
                )
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (d / "result.json").exists() and not (d / "artifact.golf").exists()
    ckpt = json.loads((d / "checkpoint" / "harness.json").read_text())
    assert ckpt["steps"] in (50, 100) and ckpt["tokens"] == ckpt["steps"] * 1024 == ckpt["stream_tokens"]

    again = golf(*run_args(data, out, "cut"))  # starting it afresh by accident is refused
    assert again.returncode == 2 and "was interrupted" in again.stderr and f"golf run --resume {d}" in again.stderr

    res = golf("run", "--resume", d, "--json")
    assert res.returncode == 0, res.stderr
    resumed = json.loads(res.stdout)
    assert resumed["status"] == "ok"
    for key in ("val_bpb", "pre_quant_val_bpb", "val_nll_sum", "train_tokens", "train_flops", "steps"):
        assert resumed[key] == full[key], key
    # the same weights (the artifacts differ only in the run id they carry)
    a, _ = unpack((d / "artifact.golf").read_bytes())
    b, _ = unpack((out / "fixed-data" / "dev" / "full" / "artifact.golf").read_bytes())
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert _trajectory(d) == _trajectory(out / "fixed-data" / "dev" / "full")  # same losses at every logged step
    assert not (d / "checkpoint").exists()  # a finished run keeps no checkpoint
    ok = golf("verify", d)
    assert ok.returncode == 0, ok.stderr  # the spliced event log still verifies


def test_resume_refuses_what_it_cannot_continue(shakespeare_dir, tmp_path):
    res = golf("run", "--resume", tmp_path / "nothing-here")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "does not exist" in res.stderr
    # a run directory with a manifest but no checkpoint (e.g. a track that does not checkpoint)
    d = tmp_path / "runs" / "fixed-data" / "dev" / "x"
    d.mkdir(parents=True)
    manifest = {
        "spec": {
            "track": "fixed-data",
            "scale": "dev",
            "backend": "torch",
            "model": "llama",
            "preset": "tiny",
            "seed": 0,
            "data": str(shakespeare_dir),
            "budget": 8192.0,
            "out": "elsewhere",
            "run_id": "x",
            "eval_stride": 256,
            "overrides": {},
            "log_every": 10,
            "checkpoint_every": 0,
        }
    }
    (d / "run.json").write_text(json.dumps(manifest))
    res = golf("run", "--resume", d)
    assert res.returncode == 2 and "has no checkpoint" in res.stderr and "Traceback" not in res.stderr


# ----------------------------------------------------------------------------------------------------------
# resume refuses, before any step runs, a run whose dataset, config or code changed since it started


@pytest.fixture
def interrupted(shakespeare_dir, tmp_path, monkeypatch):
    """A fixed-data run interrupted after its step-2 checkpoint (in process, KeyboardInterrupt at step 3)."""
    from golfbench.harness import runner
    from golfbench.harness.backend import get_backend

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    data = small_dataset(shakespeare_dir, tmp_path / "data" / "shakespeare_sp1024", train_tokens=16_000)
    backend = get_backend("torch")
    real_step, calls = backend.train_step, []

    def step(state, batch, scale):
        calls.append(1)
        if len(calls) == 2 + 2 + 1:  # two warm-up steps, two real steps, then the kill
            raise KeyboardInterrupt
        return real_step(state, batch, scale)

    overrides = {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
    spec = runner.RunSpec(
        track="fixed-data",
        scale="dev",
        backend="torch",
        model="llama",
        preset="tiny",
        seed=0,
        data=str(data),
        budget=8 * 1024,
        out=str(tmp_path / "runs"),
        run_id="cut",
        eval_stride=256,
        overrides=overrides,
        checkpoint_every=1,
    )
    monkeypatch.setattr(backend, "train_step", step)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(spec)
    monkeypatch.setattr(backend, "train_step", real_step)
    d = tmp_path / "runs" / "fixed-data" / "dev" / "cut"
    assert json.loads((d / "checkpoint" / "harness.json").read_text())["steps"] == 2
    return d, data


def _untouched(d: Path):
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    yield
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before  # no step ran, nothing written


def test_resume_refuses_a_dataset_replaced_in_place(interrupted, shakespeare_dir, tmp_path):
    d, data = interrupted
    import shutil

    shutil.rmtree(data)
    small_dataset(shakespeare_dir, data, train_tokens=20_000)  # same name and id, other content
    guard = _untouched(d)
    next(guard)
    res = golf("run", "--resume", d)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().count("\n") == 0 and "not the one it started on" in res.stderr, res.stderr
    next(guard, None)


def test_resume_refuses_a_changed_config_or_code(interrupted, tmp_path, monkeypatch):
    from golfbench.harness import models, runner
    from golfbench.harness.backend import get_backend
    from golfbench.harness.errors import GolfError

    d, _ = interrupted
    guard = _untouched(d)
    next(guard)
    # the preset's definition changed between start and resume (e.g. a pulled commit)
    monkeypatch.setitem(models.LLAMA_PRESETS, "tiny", models.LLAMA_PRESETS["tiny"].replace(warmdown_frac=0.5))
    with pytest.raises(GolfError, match="model config differs"):
        runner.resume(d)
    monkeypatch.undo()
    # one backend source file edited by one byte
    backend = get_backend("torch")
    files = backend.code_files("llama")
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in files:
        (edited / f.name).write_bytes(f.read_bytes() + (b"#" if f.name == "muon.py" else b""))
    monkeypatch.setattr(backend, "code_files", lambda name: [edited / f.name for f in files])
    with pytest.raises(GolfError, match=r"backend code changed since it started \(muon.py\)"):
        runner.resume(d)
    monkeypatch.undo()
    next(guard, None)
    res = runner.resume(d)  # and with nothing changed it continues to the end
    assert res["status"] == "ok" and res["train_tokens"] == 8 * 1024
