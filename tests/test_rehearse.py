"""`golf rehearse`: every track's official rules on the CPU, and a checker that fails loudly on a broken rule."""

from __future__ import annotations

import json
import subprocess

import pytest
from golf_helpers import golf

from golfbench.harness import rehearse as reh
from golfbench.harness.tracks import list_tracks, load_track


def test_rehearsal_tracks_keep_every_official_rule_but_dataset_budget_and_hardware(tmp_path):
    rules = reh.rehearsal_tracks(tmp_path / "tracks", "shakespeare_sp1024", seconds=12.0)
    assert sorted(rules) == sorted(t.name for t in list_tracks() if "official" in t.scales)
    for track in list_tracks():
        copy = load_track(track.name, tmp_path / "tracks")
        original, rehearsed = track.scales["official"], copy.scales["official"]
        changed = {k for k in set(original) | set(rehearsed) if original.get(k) != rehearsed.get(k)}
        assert changed <= {"dataset", "budget", "hardware", "rehearsal_of"}, changed
        assert copy.budget_kind == track.budget_kind and copy.artifact_cap_bytes == track.artifact_cap_bytes
        assert rehearsed["rehearsal_of"] == track.sha256 and rehearsed["dataset"] == "shakespeare_sp1024"
    assert rules["fixed-data"]["budget"] == 145 * 256  # 145 sequences: a remainder on 2, 3, 4 and 8 processes
    assert rules["wallclock-10min"]["budget"] == 12.0


def _fake_run(result: dict, events: list[dict], verify_rc: int = 0):
    def fake(args, env, timeout):
        if args[0] == "run":
            out = args[args.index("--out") + 1]
            d = out / args[args.index("--track") + 1] / "official" / args[args.index("--run-id") + 1]
            d.mkdir(parents=True)
            (d / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
            return subprocess.CompletedProcess(args, 0, json.dumps(result, indent=2), "")
        return subprocess.CompletedProcess(args, verify_rc, "", "FAIL something" if verify_rc else "")

    return fake


GOOD = {
    "status": "ok",
    "budget_kind": "tokens",
    "train_tokens": 145 * 256,
    "eval_precision": "bf16",
    "eval_stride": 64,
    "world_size": 2,
    "replicas_identical": True,
    "eval_seconds": 1.0,
}
RULES = {
    "budget_kind": "tokens",
    "budget": 145 * 256 + 100,
    "eval_precision": "bf16",
    "eval_prequant": False,
    "eval_stride": 64,
}


@pytest.mark.parametrize(
    "tamper, events, needle",
    [
        ({}, [{"event": "eval"}], None),
        ({"eval_precision": "fp32"}, [{"event": "eval"}], "scored at fp32"),
        ({"train_tokens": 144 * 256}, [{"event": "eval"}], "not exactly 37120"),
        ({}, [{"event": "eval"}, {"event": "eval"}], "2 scoring pass(es)"),
        ({"replicas_identical": None}, [{"event": "eval"}], "replicas"),
        ({"status": "over_budget", "reason": "x"}, [{"event": "eval"}], "status over_budget"),
    ],
)
def test_the_rehearsal_checker_catches_each_broken_rule(tmp_path, monkeypatch, tamper, events, needle):
    monkeypatch.setattr(reh, "_golf", _fake_run({**GOOD, **tamper}, events))
    r = reh.rehearse_one("fixed-data", RULES, "torch", tmp_path / "data", tmp_path / "runs", {}, processes=2, devices=2)
    if needle is None:
        assert r.failures == [] and r.checks >= 8
    else:
        assert any(needle in f for f in r.failures), r.failures


def test_a_failed_verify_fails_the_rehearsal(tmp_path, monkeypatch):
    monkeypatch.setattr(reh, "_golf", _fake_run(GOOD, [{"event": "eval"}], verify_rc=1))
    r = reh.rehearse_one("fixed-data", RULES, "torch", tmp_path / "data", tmp_path / "runs", {}, processes=2, devices=2)
    assert r.failures == ["golf verify failed: FAIL something"]


def test_rehearse_refuses_bad_input(tmp_path):
    res = golf("rehearse", "--data", tmp_path / "nope")
    assert res.returncode == 2 and "no dataset at" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_golf_rehearse_passes_every_track_official_rules(shakespeare_dir, tmp_path):
    res = golf(
        "rehearse", "--data", shakespeare_dir, "--out", tmp_path / "r", "--seconds", "10", "--json", timeout=1500
    )
    assert res.returncode == 0, res.stdout + res.stderr
    done = json.loads(res.stdout)
    assert {(d["track"], d["backend"]) for d in done} == {(t.name, b) for t in list_tracks() for b in ("torch", "jax")}
    assert all(not d["failures"] and d["checks"] >= 8 for d in done), done  # 8: no eval time limit on flop-budget
