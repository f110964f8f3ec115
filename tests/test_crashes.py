"""Crashes (issue 6.3): a SIGKILL at any moment of `golf run` leaves each file either absent or complete.

Runs are killed when the run directory appears (setup), at the first training step, after the last one
(evaluation), when the artifact is being written, and when result.json lands, plus at seeded random moments.
After every kill each file in the run directory must parse (JSON files, every events.jsonl line, the artifact)
or be absent, leftover temp files must never be taken for results, and `golf leaderboard` must still work.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from golf_helpers import ENV, ROOT, RUN_ARGS, TMP_NAME, golf, golf_ok, small_dataset

from golfbench.harness import artifact as art
from golfbench.harness.records import validate_result

BUDGET = 8_192  # two 4096-token steps of llama/tiny
RECORDS = {"run.json", "events.jsonl", "artifact.golf", "result.json", "loss.png"}


def _step_events(d: Path) -> list[int]:
    try:
        lines = (d / "events.jsonl").read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line)["step"] for line in lines if '"step"' in line and line.endswith("}")]


TRIGGERS = {
    "setup": lambda d: d.exists(),
    "first-step": lambda d: 1 in _step_events(d),
    "evaluation": lambda d: 2 in _step_events(d),  # the last step is logged, then evaluation starts
    "artifact": lambda d: (
        (d / "artifact.golf").exists() or any(p.name.startswith(".artifact.golf.") for p in d.iterdir())
    ),
    "result": lambda d: (d / "result.json").exists(),
}


def _kill_run(data: Path, out: Path, run_id: str, plan) -> float | None:
    """Start `golf run`; SIGKILL it when plan(run_dir) first holds, or after `plan` seconds. Returns when it was
    killed, or None if it finished first (which must then be a success)."""
    cmd = [
        sys.executable,
        "-m",
        "golfbench.harness.cli",
        "run",
        *RUN_ARGS,
        "--backend",
        "torch",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--budget",
        str(BUDGET),
        "--out",
        str(out),
        "--run-id",
        run_id,
    ]
    d = out / "fixed-data" / "dev" / run_id
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = None
    try:
        while proc.poll() is None:
            now = time.monotonic() - start
            if (callable(plan) and d.exists() and plan(d)) or (not callable(plan) and now >= plan):
                proc.send_signal(signal.SIGKILL)
                killed = now
                break
            time.sleep(0.003)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if killed is None:
        assert proc.returncode == 0, f"{run_id} failed ({proc.returncode}): {proc.stderr.read().decode()}"
    else:
        assert proc.returncode == -signal.SIGKILL
    return killed


def _check_run_dir(d: Path) -> set[str]:
    """Every record parses or is absent; returns the names of the records present."""
    if not d.exists():
        return set()
    names = {p.name for p in d.iterdir()}
    for name in names - RECORDS:
        # code/ is the run's source snapshot (harness/code.py), written whole (temp folder, then rename)
        # tokenizer.model.zst: the counted tokenizer (fixed-data counts it), written atomically beside the artifact
        assert (
            TMP_NAME.match(name) or name.startswith(("checkpoint", ".code.tmp")) or name in ("code", art.TOKENIZER_FILE)
        ), f"unexpected file {d / name}"
    if art.TOKENIZER_FILE in names:
        assert art.unpack_tokenizer((d / art.TOKENIZER_FILE).read_bytes())  # whole, never a torn write
    if "run.json" in names:
        assert json.loads((d / "run.json").read_text())["run_id"] == d.name
    if "events.jsonl" in names:
        for line in (d / "events.jsonl").read_text().splitlines():
            assert isinstance(json.loads(line), dict), line
    blob = (d / "artifact.golf").read_bytes() if "artifact.golf" in names else None
    if blob is not None:
        weights, meta = art.unpack(blob)
        assert meta["model"] == "llama" and "tok_emb.weight" in weights
    if "result.json" in names:
        result = json.loads((d / "result.json").read_text())
        assert validate_result(result) == [] and result["status"] == "ok", result
        assert blob is not None and hashlib.sha256(blob).hexdigest() == result["artifact_sha256"]
    if "loss.png" in names:
        assert (d / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return names & RECORDS


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_no_partial_record(shakespeare_dir: Path, tmp_path: Path) -> None:
    data = small_dataset(shakespeare_dir, tmp_path / "shakespeare_sp1024")
    out = tmp_path / "runs"
    when, seen = {}, {}
    for name, trigger in TRIGGERS.items():
        when[name] = _kill_run(data, out, name, trigger)
        assert when[name] is not None, f"the run finished before reaching '{name}'"
        seen[name] = _check_run_dir(out / "fixed-data" / "dev" / name)
    rng = random.Random(6)
    for i in range(2):  # and at random moments between the start and the moment result.json landed
        name = f"random-{i}"
        when[name] = _kill_run(data, out, name, rng.uniform(0.5, when["result"]))
        seen[name] = _check_run_dir(out / "fixed-data" / "dev" / name)

    # The kills landed where they were aimed: before any result, then with the artifact, then after the result.
    assert "result.json" not in seen["setup"] | seen["first-step"] | seen["evaluation"], seen
    assert {"run.json", "events.jsonl"} <= seen["first-step"], seen
    assert {"artifact.golf", "result.json"} <= seen["result"], seen

    # A killed run never passes for a result: the leaderboard lists exactly the runs whose result.json landed.
    board = json.loads(golf_ok("leaderboard", "--runs", out, "--include-unofficial", "--format", "json").stdout)
    listed = sorted(Path(p).name for b in board["boards"] for e in b["entries"] for p in e["run_dirs"])
    assert listed == sorted(name for name, files in seen.items() if "result.json" in files), (listed, seen, when)
    assert not board["warnings"], board["warnings"]
    res = golf("leaderboard", "--runs", out)
    assert res.returncode == 0 and "Traceback" not in res.stderr
