"""The benchmark scripts run end to end (numbers are recorded by `make bench`, never asserted as timings here).

bench/gpu.py: one child process per measurement, the JSON rewritten after each, a total --budget-s after which the
running measurement is killed (timed_out) and the rest skipped; SIGTERM does the same."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golf_helpers import ENV, descendants

from golfbench.harness.models import get_spec

ROOT = Path(__file__).resolve().parent.parent
SMOKE_PLAN = {
    "train:llama/tiny@torch",
    "train:llama/tiny@jax",
    "train:megalodon/tiny@torch",
    "train:megalodon/tiny@jax",
    "train:deltanet/tiny@jax",  # examples/golf-deltanet ships a JAX implementation only
    "eval:llama/tiny@torch",
    "eval:llama/tiny@jax",
}


def _gpu_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "bench/gpu.py", *map(str, args)], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_peak_table_and_plan():
    gpu = _gpu_module()
    assert gpu.peak_flops("NVIDIA H100 80GB HBM3") == (989.4e12, "table: H100-SXM")
    assert gpu.peak_flops("NVIDIA H200")[0] == 989.4e12
    assert gpu.peak_flops("NVIDIA A100-SXM4-80GB")[0] == 312e12
    assert gpu.peak_flops("cpu")[0] is None
    assert gpu.peak_flops("cpu", 2.5) == (2.5e12, "--peak-tflops")
    smoke = [j["name"] for j in gpu.plan(smoke=True)]
    assert set(smoke) == SMOKE_PLAN and len(smoke) == len(SMOKE_PLAN)
    # most important first: a short lease keeps the headline numbers
    assert smoke[:3] == ["train:llama/tiny@torch", "train:megalodon/tiny@jax", "eval:llama/tiny@torch"]
    assert smoke[-1] == "eval:llama/tiny@jax"
    full = {j["name"]: j for j in gpu.plan(smoke=False)}
    assert full["train:llama/baseline@torch"]["tokens"] == 524_288
    assert full["train:deltanet/golf16@jax"]["tokens"] == 131_072 and "train:deltanet/golf16@torch" not in full
    assert {"train:megalodon/golf16@torch", "train:megalodon/golf16@jax", "eval:llama/baseline@jax"} <= set(full)


def test_goals_need_their_measurements():
    gpu = _gpu_module()
    res = {
        "train:llama/baseline@torch": {"mfu": 0.4, "tokens_per_s": 1000.0, "step_ms": 40.0},
        "train:megalodon/golf16@jax": {"tokens_per_s": 790.0},
    }
    got = gpu.goals(res, 43.5)
    assert got["mfu_llama_baseline_torch>=0.35"] is True
    assert got["megalodon_jax>=0.8*llama_torch_tokens_per_s"] is False  # 790 < 800
    assert got["fineweb_val_eval_8_gpus<=90s"] is None  # not measured: not a pass, not a fail
    assert got["step_ms<=parameter_golf"] is True
    assert gpu.goals({}, None)["mfu_llama_baseline_torch>=0.35"] is None


@pytest.mark.slow
def test_gpu_bench_smoke_runs_on_cpu_and_records_every_job(tmp_path):
    out = tmp_path / "gpu.json"
    res = _bench("--smoke", "--steps", "1", "--warmup", "1", "--peak-tflops", "1", "--out", out)
    assert res.returncode == 0, res.stderr
    rec = json.loads(out.read_text())
    meas = rec["measurements"]
    assert set(meas) == SMOKE_PLAN and rec["skipped"] == [] and rec["timed_out"] == []
    for key, m in meas.items():
        assert m["status"] == "ok", (key, m)
        assert m["compile_s"] > 0 and m["peak_rss_bytes"] > 10_000_000 and m["peak_device_bytes"] is None
        if key.startswith("train:"):
            model = key.split(":")[1].split("/")[0]
            spec = get_spec(model)
            cfg = spec.config("tiny")
            assert m["step_tokens"] == 1024 // cfg["seq_len"] * cfg["seq_len"]
            assert m["flops_per_step"] == spec.flops_per_token(cfg)["total"] * m["step_tokens"]
            assert m["tokens_per_s"] == pytest.approx(m["step_tokens"] / (m["step_ms"] / 1000))
            assert m["mfu"] == pytest.approx(m["flops_per_step"] / (m["step_ms"] / 1000) / 1e12)
            assert m["peak_source"] == "--peak-tflops"
    from golfbench.harness.tracks import load_track

    official = load_track("wallclock-10min").scales["official"]
    for backend in ("torch", "jax"):
        ev = meas[f"eval:llama/tiny@{backend}"]
        assert (
            ev["fineweb_val_windows"] == 969_085
        )  # smoke context 256: (62,021,631 - 256) / 64 + 1 starts + a right-aligned tail
        assert ev["precision"] == official.get("eval_precision", "fp32") and ev["stride"] == 64
        assert ev["windows"] == (4096 - 1 - 256) // 64 + 1 + 1  # the smoke preset's context is 256
        assert ev["fineweb_val_seconds_projected"] == pytest.approx(ev["fineweb_val_seconds_1_device"] / 8)
    assert rec["machine"]["kind"] == "cpu" and rec["versions"]["torch"]


def test_gpu_bench_budget_kills_the_running_measurement_and_skips_the_rest(tmp_path):
    out = tmp_path / "gpu.json"
    t0 = time.monotonic()
    only = ("--only", "train:deltanet/tiny@jax", "--only", "eval:llama/tiny@jax")
    res = _bench("--smoke", *only, "--budget-s", "3", "--out", out)
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    rec = json.loads(out.read_text())
    meas = rec["measurements"]
    # a JAX import and compile alone outlast the 3 s: killed, recorded; the next one never starts
    assert rec["timed_out"] == ["train:deltanet/tiny@jax"] and rec["skipped"] == ["eval:llama/tiny@jax"]
    assert meas["train:deltanet/tiny@jax"]["reason"] == "out of --budget-s"
    assert 3 <= meas["train:deltanet/tiny@jax"]["wall_s"] < 5
    assert took < 3 + 20, took  # the parent's imports plus a kill, never the 20+ s the children would need


def test_gpu_bench_sigterm_stops_cleanly_with_what_it_has(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.Popen(
        [sys.executable, "bench/gpu.py", "--smoke", "--only", "train:megalodon/tiny@jax", "--only",
         "train:llama/tiny@torch", "--out", str(out)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()  # "[gpu bench] train:llama/tiny@torch ...": the first child has started
    assert line.startswith("[gpu bench] train:llama/tiny@torch"), line
    kids = descendants(proc.pid)
    assert kids and json.loads(out.read_text())["measurements"]["train:llama/tiny@torch"]["status"] == "pending"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    rec = json.loads(out.read_text())
    assert rec["stopped_by"] == "SIGTERM"
    assert rec["timed_out"] == ["train:llama/tiny@torch"] and rec["skipped"] == ["train:megalodon/tiny@jax"]
    assert rec["measurements"]["train:megalodon/tiny@jax"]["reason"] == "SIGTERM"
    time.sleep(0.5)
    assert not [k for k in kids if Path(f"/proc/{k}").exists()]  # the child was killed, not orphaned
