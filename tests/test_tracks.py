"""The three tracks for real: their rules, the budget clocks, the LR schedule, and the runner honouring them.

Runner tests train a real torch llama (the tiny preset made smaller with overrides) on the session's
Shakespeare shards in this process. Where a test is about the training loop alone, the evaluation is
replaced by a no-op (`_score`): it runs after the loop and cannot change what the loop charged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from golfbench.harness.errors import GolfError
from golfbench.harness.records import read_events
from golfbench.harness.tracks import Budget, list_tracks, load_track, lr_scale, parse_budget

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
# llama/tiny shrunk so a step costs ~0.1 s on one CPU thread; 4 sequences of 256 tokens a step
MICRO = {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
SEQ, BATCH = 256, 1024


def _no_score(run, state, result, code, coll):
    """Evaluation stubbed out: the loop is what these tests check. Placeholder numbers keep the record valid."""
    result.update(val_bpb=0.0, val_nll_sum=0.0, val_bytes=1, artifact_bytes=code, model_bytes=0)


def golf(*args):
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


# ----------------------------------------------------------------------------------------------------------
# the schedule and the budget arithmetic


def test_lr_scale_is_constant_then_a_linear_warmdown_to_zero():
    wd = 0.2
    assert [lr_scale(p, wd) for p in (0.0, 0.3, 0.79)] == [1.0, 1.0, 1.0]
    assert lr_scale(0.8, wd) == pytest.approx(1.0)  # continuous where the warm-down starts
    assert lr_scale(0.9, wd) == pytest.approx(0.5)
    assert lr_scale(0.95, wd) == pytest.approx(0.25)
    assert lr_scale(1.0, wd) == 0.0
    assert lr_scale(1.7, wd) == 0.0 and lr_scale(-0.5, wd) == 1.0  # progress is clamped to [0, 1]
    assert lr_scale(0.999, 0.0) == 1.0  # no warm-down
    assert lr_scale(0.25, 1.0) == pytest.approx(0.75)  # all warm-down: 1 - progress
    grid = [lr_scale(i / 1000, wd) for i in range(1001)]
    assert all(a >= b for a, b in zip(grid, grid[1:])) and all(0.0 <= g <= 1.0 for g in grid)


def test_budget_fits_charges_and_reports_progress():
    tokens = Budget("tokens", 10_000)
    tokens.charge(0.1, 4096, 1e9)
    tokens.charge(0.1, 4096, 1e9)
    assert tokens.progress() == pytest.approx(0.8192) and tokens.steps == 2
    assert tokens.fits(1808, 0) and not tokens.fits(1809, 0)

    flops = Budget("flops", 3.5e9)
    for _ in range(3):
        assert flops.fits(0, 1e9)
        flops.charge(0.1, 1, 1e9)
    assert not flops.fits(0, 1e9) and flops.fits(0, 0.5e9) and not flops.over()

    # The wallclock rule (parameter-golf's): a step starts while the clock is inside the limit and may end past it.
    clock = Budget("seconds", 1.0)
    assert clock.fits(0, 0)  # nothing spent yet: the first step always starts
    clock.charge(0.3, 1, 0)
    clock.charge(0.5, 1, 0)
    assert clock.fits(0, 0)  # 0.8 s spent < 1.0: the next step starts even if it will end at 1.3 s
    clock.charge(0.5, 1, 0)  # it ends at 1.3 s: the overshoot is recorded, and it is not over budget
    assert clock.seconds == pytest.approx(1.3) and not clock.over() and clock.progress() == 1.0
    assert not clock.fits(0, 0)  # 1.3 >= 1.0: no step starts after the limit
    clock.extend_last(0.04)  # its completion on the device, measured after the loop, belongs to it
    assert clock.last_step_seconds() == pytest.approx(0.54) and not clock.over()
    clock.charge(0.1, 1, 0)  # a step that started at 1.34 s, past the limit: over budget
    assert clock.over()
    # with a reserve kept for work after the loop, progress (and so the lr warm-down) runs to limit - reserve
    reserved = Budget("seconds", 10.0)
    reserved.charge(4.0, 1, 0)
    assert reserved.progress() == pytest.approx(0.4) and reserved.progress(reserve=2.0) == pytest.approx(0.5)
    assert Budget("tokens", 10.0).progress(reserve=5.0) == 0.0
    exact = Budget("seconds", 1.0)
    exact.charge(1.0, 1, 0)
    assert not exact.fits(0, 0)  # at the limit exactly, nothing more starts


def test_the_three_tracks_and_their_rules():
    tracks = {t.name: t for t in list_tracks()}
    assert {n: t.budget_kind for n, t in tracks.items()} == {
        "wallclock-10min": "seconds",
        "fixed-data": "tokens",
        "flop-budget": "flops",
    }
    assert tracks["wallclock-10min"].scale("official")["budget"] == 600
    assert tracks["wallclock-10min"].scale("official")["hardware"] == "8xH100-SXM"
    assert tracks["fixed-data"].scale("official")["budget"] == 1_000_000_000
    assert tracks["flop-budget"].scale("official")["budget"] == 1e18
    for t in tracks.values():
        assert t.artifact_cap_bytes == 16_000_000
        assert t.scale("official")["dataset"] == "fineweb_sp1024" and t.scale("dev")["dataset"] == "shakespeare_sp1024"
        # official: scored once (no pre-quant diagnostic), in bf16; dev: fp32 and the pre-quant score too
        assert (t.scale("official")["eval_precision"], t.scale("official")["eval_prequant"]) == ("bf16", False)
        assert (t.scale("dev")["eval_precision"], t.scale("dev")["eval_prequant"]) == ("fp32", False)
        assert t.sha256 == hashlib.sha256(t.path.read_bytes()).hexdigest()
    with pytest.raises(GolfError, match="unknown track 'marathon'.*fixed-data"):
        load_track("marathon")
    with pytest.raises(GolfError, match="unknown scale"):
        tracks["fixed-data"].scale("huge")


def test_track_files_are_validated(tmp_path):
    (tmp_path / "broken.toml").write_text("name = 'broken'\nbudget_kind = \n")
    with pytest.raises(GolfError, match="malformed TOML"):
        load_track("broken", tmp_path)
    (tmp_path / "odd.toml").write_text("name = 'odd'\nbudget_kind = 'joules'\n[dev]\ndataset='x'\nbudget=1\n")
    with pytest.raises(GolfError, match="budget_kind 'joules'"):
        load_track("odd", tmp_path)
    (tmp_path / "fp16.toml").write_text(
        "name = 'fp16'\nbudget_kind = 'tokens'\n[dev]\ndataset='x'\nbudget=1\neval_precision='fp16'\n"
    )
    with pytest.raises(GolfError, match=r"\[dev\] eval_precision 'fp16' must be one of fp32, bf16"):
        load_track("fp16", tmp_path)
    (tmp_path / "pq.toml").write_text(
        "name = 'pq'\nbudget_kind = 'tokens'\n[dev]\ndataset='x'\nbudget=1\neval_prequant='no'\n"
    )
    with pytest.raises(GolfError, match="eval_prequant must be true or false"):
        load_track("pq", tmp_path)
    (tmp_path / "plain.toml").write_text("name = 'plain'\nbudget_kind = 'tokens'\n[dev]\ndataset='x'\nbudget=1\n")
    assert {k: load_track("plain", tmp_path).scale("dev")[k] for k in ("eval_precision", "eval_prequant")} == {
        "eval_precision": "fp32",
        "eval_prequant": True,
    }  # the defaults of a track file without the keys
    (tmp_path / "nobudget.toml").write_text("name = 'nobudget'\nbudget_kind = 'tokens'\n[dev]\ndataset='x'\n")
    with pytest.raises(GolfError, match="missing or has a bad field"):
        load_track("nobudget", tmp_path)


def test_parse_budget():
    assert parse_budget("2e11") == 2e11 and parse_budget("40_000") == 40000 and parse_budget(None) is None
    for bad in ("abc", "0", "-5", "nan", "inf"):
        with pytest.raises(GolfError):
            parse_budget(bad)


# ----------------------------------------------------------------------------------------------------------
# the runner on each track


@pytest.fixture
def one_thread():
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # two test processes on two cores: more threads only fight
    yield
    torch.set_num_threads(n)


@pytest.fixture
def run_loop(shakespeare_dir, tmp_path, monkeypatch, one_thread):
    """Run the real training loop in this process (evaluation stubbed out); returns (result, run_dir)."""
    from golfbench.harness import runner

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    monkeypatch.setattr(runner, "_score", _no_score)

    def go(track: str, budget: float, run_id: str = "r", **overrides):
        spec = runner.RunSpec(
            track=track,
            scale="dev",
            backend="torch",
            model="llama",
            preset="tiny",
            seed=0,
            data=str(shakespeare_dir),
            budget=budget,
            out=str(tmp_path / "runs"),
            run_id=run_id,
            eval_stride=256,
            overrides={**MICRO, **overrides},
        )
        result = runner.execute(spec)
        return result, tmp_path / "runs" / track / "dev" / run_id

    return go


def _step_flops() -> float:
    from golfbench.harness.models import get_spec

    spec = get_spec("llama")
    return spec.flops_per_token(spec.config("tiny", MICRO))["total"] * BATCH


@pytest.fixture
def record_batches(monkeypatch):
    """Every global batch the runner hands the backend to train on (prepare_batch; warm-up uses its own), in order."""
    from golfbench.harness.backend import get_backend

    backend = get_backend("torch")
    seen = []
    real_prepare = backend.prepare_batch

    def prepare(state, batch):
        seen.append(np.array(batch))
        return real_prepare(state, batch)

    monkeypatch.setattr(backend, "prepare_batch", prepare)
    return seen


def test_fixed_data_trains_exactly_the_first_tokens_once(run_loop, record_batches, shakespeare):
    budget = 5 * SEQ + 100  # not a whole batch (4 sequences) nor a whole sequence
    result, d = run_loop("fixed-data", budget)
    assert result["status"] == "ok", result["reason"]
    assert result["train_tokens"] == 5 * SEQ and result["steps"] == 2  # one full batch, then one short one
    assert [b.shape for b in record_batches] == [(4, SEQ + 1), (1, SEQ + 1)]
    train = np.concatenate(
        [np.asarray(np.memmap(p, dtype="<u2", mode="r", offset=1024)) for p in shakespeare.train_paths]
    )
    inputs = np.concatenate([b[:, :-1].ravel() for b in record_batches])
    targets = np.concatenate([b[:, 1:].ravel() for b in record_batches])
    np.testing.assert_array_equal(inputs, train[: 5 * SEQ])  # the first tokens, in stream order
    np.testing.assert_array_equal(targets, train[1 : 5 * SEQ + 1])  # each target exactly once
    steps = [e for e in read_events(d / "events.jsonl") if "loss" in e]
    assert steps[-1]["tokens"] == 5 * SEQ and steps[-1]["flops"] == pytest.approx(_step_flops() / BATCH * 5 * SEQ)


def test_lr_scale_follows_budget_progress_in_a_run(run_loop):
    budget = 40 * BATCH
    result, d = run_loop("fixed-data", budget)
    steps = {e["step"]: e for e in read_events(d / "events.jsonl") if "loss" in e}
    assert sorted(steps) == [1, 10, 20, 30, 40]
    for s, e in steps.items():  # the scale used at step s comes from the progress before it
        assert e["lr_scale"] == pytest.approx(lr_scale((s - 1) * BATCH / budget, 0.2), abs=1e-12)
    assert steps[1]["lr_scale"] == 1.0 and steps[40]["lr_scale"] == pytest.approx(0.125)


def test_fixed_data_refuses_a_budget_the_dataset_cannot_cover_before_training(shakespeare_dir, shakespeare, tmp_path):
    res = golf(
        "run",
        "--track",
        "fixed-data",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        shakespeare_dir,
        "--budget",
        "5e6",
        "--out",
        tmp_path / "runs",
    )
    assert res.returncode == 2, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    have = shakespeare.train_tokens_total() - 1
    assert "needs 4,999,936 training tokens" in line and f"has {have:,}" in line and "lower --budget" in line
    assert not (tmp_path / "runs").exists()  # nothing was created, so nothing trained
    res = golf("run", "--track", "fixed-data", "--data", shakespeare_dir, "--budget", "100", "--out", tmp_path / "runs")
    assert res.returncode == 2 and "smaller than one sequence of 256" in res.stderr


@pytest.mark.parametrize("steps_worth", [3.5, 3.0])
def test_flop_budget_stops_before_the_step_that_would_exceed_it(run_loop, steps_worth):
    step = _step_flops()
    budget = steps_worth * step
    result, d = run_loop("flop-budget", budget, run_id=f"f{steps_worth}")
    assert result["status"] == "ok" and result["steps"] == 3
    assert result["train_flops"] == pytest.approx(3 * step, rel=1e-12)
    assert result["train_flops"] <= budget < result["train_flops"] + step
    assert result["train_tokens"] == 3 * BATCH
    events = read_events(d / "events.jsonl")
    assert [e["flops"] for e in events if "loss" in e][-1] == result["train_flops"]
    check = next(e for e in events if e.get("event") == "flops_check")
    assert check["analytic_step_flops"] == pytest.approx(step, rel=1e-12)  # the formula, not the counter
    # torch's own count of one step, logged beside it: matmuls identical, attention counted as a full square
    assert 1.0 < check["compiler_step_flops"] / check["analytic_step_flops"] < 2.0


def test_flop_budget_below_one_step_fails_cleanly(run_loop):
    result, _ = run_loop("flop-budget", 0.5 * _step_flops())
    assert result["status"] == "failed" and result["steps"] == 0
    assert "did not allow a single training step" in result["reason"]


def test_wallclock_warmup_is_untimed_and_the_model_is_reset(run_loop, monkeypatch, shakespeare):
    from golfbench.harness.backend import get_backend
    from golfbench.harness.data.stream import BatchStream
    from golfbench.harness.models import get_spec

    backend = get_backend("torch")
    real_warmup = backend.warmup
    warmed = []

    def slow_warmup(state, batch, *a, **k):
        state = real_warmup(state, batch, *a, **k)
        time.sleep(4.0)  # a compile that takes longer than the whole budget
        warmed.append(batch.shape)
        return state

    monkeypatch.setattr(backend, "warmup", slow_warmup)
    result, d = run_loop("wallclock-10min", 3.0)
    assert warmed, "the runner did not warm up"
    assert result["steps"] >= 2 and result["train_seconds"] < 4.0  # the 4 s warm-up is not on the clock
    # ok, or at worst a slight overrun when a step ran slower than the recent ones (a loaded machine)
    assert result["status"] == "ok" or (result["status"] == "over_budget" and result["train_seconds"] < 3.0 * 1.5)
    # reset: step 1 saw exactly the untouched initial model on the first real batch
    config = get_spec("llama").config("tiny", MICRO)
    fresh = backend.init("llama", config, 0)
    first = BatchStream(shakespeare.train_paths, BATCH // SEQ, SEQ).next()
    _, metrics = backend.train_step(fresh, first, 1.0)
    step1 = next(e for e in read_events(d / "events.jsonl") if e.get("step") == 1)
    assert step1["loss"] == pytest.approx(float(metrics["loss"]), rel=1e-6)


def test_wallclock_step_in_flight_may_finish_late_and_data_time_counts(run_loop, monkeypatch):
    """parameter-golf's rule: a step that starts inside the limit finishes; its overshoot is recorded, the run is ok,
    and no step starts after the limit. A data stall counts: the batch of step 3 is read (prepared ahead) during
    step 2, so step 2 carries the stall."""
    from golfbench.harness import runner
    from golfbench.harness.data.stream import BatchStream
    from golfbench.harness.verify import verify_run

    calls = []

    class SlowStream(BatchStream):
        def next(self, rows=None):
            calls.append(rows)
            if len(calls) == 3:
                time.sleep(3.5)  # a data stall on the third batch, inside the harness clock
            return super().next(rows)

    monkeypatch.setattr(runner, "BatchStream", SlowStream)
    result, d = run_loop("wallclock-10min", 3.0)
    assert result["status"] == "ok", result
    assert result["train_seconds"] > 3.5 and result["steps"] == 2  # step 2 started at < 3 s and ended past it
    last = [e for e in read_events(d / "events.jsonl") if "loss" in e][-1]
    assert last["time"] == pytest.approx(result["train_seconds"]) and last["time"] > 3.5
    assert last["time"] - last["step_seconds"] < 3.0  # it started inside the limit
    verdict = verify_run(d, rescore=False)
    assert "budget" in verdict.checks and not [f for f in verdict.failures if f.startswith("budget:")], verdict
    # a log whose last step started past the limit is refused by verify
    events = (d / "events.jsonl").read_text().splitlines()
    i = max(i for i, line in enumerate(events) if '"step_seconds"' in line)
    body = json.loads(events[i])
    body["step_seconds"] = body["time"] - 3.2
    events[i] = json.dumps(body)
    (d / "events.jsonl").write_text("\n".join(events) + "\n")
    verdict = verify_run(d, rescore=False)
    assert any(f.startswith("budget:") and "before the last step started" in f for f in verdict.failures), verdict
    # ... and so is one whose last step claims to have started before the step before it ended (an inflated
    # step_seconds hiding a step that started past the limit)
    body["time"], body["step_seconds"] = 104.0, 104.0  # "it ran 104 s, from 0 s on": before step 1 ended
    events[i] = json.dumps(body)
    (d / "events.jsonl").write_text("\n".join(events) + "\n")
    verdict = verify_run(d, rescore=False)
    assert any(f.startswith("step-seconds:") for f in verdict.failures), verdict
    assert math.isfinite(last["loss"])
