"""The benchmark scripts run end to end (numbers are recorded by `make bench`, never asserted as timings here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_bench_smoke_runs_on_cpu_and_records_every_job(tmp_path):
    out = tmp_path / "gpu.json"
    res = subprocess.run(
        [
            sys.executable,
            "bench/gpu.py",
            "--smoke",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--eval-tokens",
            "4096",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    rec = json.loads(out.read_text())
    for key in ("llama/tiny@torch", "llama/tiny@jax", "megalodon/tiny@torch", "megalodon/tiny@jax"):
        assert "error" not in rec[key], rec[key]
        assert rec[key]["tokens_per_s"] > 0 and 0 < rec[key]["mfu"] < 1
    from golfbench.harness.tracks import load_track

    official = load_track("wallclock-10min").scales["official"]
    for backend in ("torch", "jax"):
        ev = rec[f"eval_llama_baseline_{backend}"]
        assert "error" not in ev, ev
        assert (
            ev["fineweb_val_windows"] == 969_085
        )  # smoke context 256: (62,021,631 - 256) / 64 + 1 starts + a right-aligned tail
        assert ev["precision"] == official.get("eval_precision", "fp32") and ev["stride"] == 64
        assert ev["windows"] == (4096 - 1 - 256) // 64 + 1 + 1  # the smoke preset's context is 256
        assert ev["fineweb_val_seconds_projected"] == pytest.approx(ev["fineweb_val_seconds_1_device"] / 8)
    assert rec["machine"]["kind"] == "cpu" and rec["versions"]["torch"]
