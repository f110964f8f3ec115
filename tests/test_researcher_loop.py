"""The researcher's loop: val curves during training, experiment tracking (wandb, TensorBoard) and the
machine-readable CLI (one result line on `golf run`'s stdout, --json on every command that prints a result).

One pair of tiny runs serves every test: 5 steps of 4,096 tokens on a 2,048-token val split, the same seed,
once with 4 val points (streamed to wandb and TensorBoard) and once with none.
"""

from __future__ import annotations

import json
import math
import struct

import pytest
from golf_helpers import RUN_ARGS, files_under, golf, golf_ok, one_line_error, small_dataset

from golfbench.harness import tracking
from golfbench.harness.errors import GolfError
from golfbench.harness.records import read_events

STEPS, POINTS = 5, 4
TRACKED = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


@pytest.fixture(scope="module")
def runs(shakespeare_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    data = small_dataset(shakespeare_dir, root / "shakespeare_sp1024")
    out = root / "runs"
    common = (*RUN_ARGS, "--data", data, "--budget", str(STEPS * 4096), "--out", out, "--log-every", "1", "--prequant")
    curve = golf_ok(
        "run", *common, "--run-id", "curve", "--val-points", POINTS, "--log-to", "wandb", "--log-to", "tensorboard",
        env=TRACKED,
    )  # fmt: skip
    plain = golf_ok("run", *common, "--run-id", "plain", "--val-points", "0", "--json")
    d = out / "fixed-data" / "dev"
    return {"root": root, "data": data, "curve": d / "curve", "plain": d / "plain", "out": (curve, plain)}


def _train(d):
    return [e for e in read_events(d / "events.jsonl") if "loss" in e]


def _val(d):
    return [e for e in read_events(d / "events.jsonl") if e.get("event") == "val"]


# ----------------------------------------------------------------------------------------------------------
# 1. validation during training


@pytest.mark.slow
def test_val_points_fall_at_fixed_fractions_of_the_budget(runs):
    val = _val(runs["curve"])
    # progress after step s is s/5; point k comes after the first step with s/5 >= k/4: s = ceil(5k/4)
    assert [e["step"] for e in val] == [math.ceil(STEPS * k / POINTS) for k in range(1, POINTS + 1)] == [2, 3, 4, 5]
    assert [e["tokens"] for e in val] == [4096 * e["step"] for e in val]
    assert all(math.isfinite(e["val_bpb"]) and 0 < e["val_bpb"] < 10 and e["seconds"] > 0 for e in val)
    assert val[-1]["val_bpb"] < val[0]["val_bpb"]  # it learns
    # the subset is the first min(8192, 2048 - 1) targets, recorded once in run.json and in every event
    manifest = json.loads((runs["curve"] / "run.json").read_text())
    assert manifest["val_curve"] == {"points": POINTS, "subset_targets": 2047, "context": 256, "stride": 256}
    assert {e["subset_tokens"] for e in val} == {2047}
    # train steps carry the same budget counters at the same step
    train = {e["step"]: e for e in _train(runs["curve"])}
    for e in val:
        assert (e["time"], e["tokens"], e["flops"]) == tuple(train[e["step"]][k] for k in ("time", "tokens", "flops"))


@pytest.mark.slow
def test_the_last_point_is_the_full_val_score_when_the_subset_is_the_whole_split(runs):
    """Here the subset is the whole 2,048-token split and the eval stride equals the context, so the end-of-training
    point scores exactly what the pre-quant score scores: the same number, to the bit."""
    result = json.loads((runs["curve"] / "result.json").read_text())
    assert _val(runs["curve"])[-1]["val_bpb"] == result["pre_quant_val_bpb"]


@pytest.mark.slow
def test_val_points_change_neither_training_nor_the_score(runs):
    a = json.loads((runs["curve"] / "result.json").read_text())
    b = json.loads((runs["plain"] / "result.json").read_text())
    assert [e["loss"] for e in _train(runs["curve"])] == [e["loss"] for e in _train(runs["plain"])]
    for key in ("val_bpb", "val_nll_sum", "pre_quant_val_bpb", "train_tokens", "steps"):
        assert a[key] == b[key], key  # (the artifact's bytes differ: it records its run id)
    assert _val(runs["plain"]) == []  # --val-points 0: no curve
    assert json.loads((runs["plain"] / "run.json").read_text())["val_curve"]["points"] == 0
    # and the budget's seconds are only the steps': the val points' own seconds are not in train_seconds
    assert a["train_seconds"] == _train(runs["curve"])[-1]["time"]


@pytest.mark.slow
def test_loss_png_is_drawn(runs):
    assert (runs["curve"] / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_val_points_and_unknown_tracker_are_one_line_errors(tmp_path):
    one_line_error(golf("run", "--val-points", "-1", "--out", tmp_path / "r", cwd=tmp_path), "--val-points")
    one_line_error(
        golf("run", "--log-to", "mlflow", "--out", tmp_path / "r", cwd=tmp_path), "unknown --log-to 'mlflow'"
    )
    assert files_under(tmp_path) == set()


# ----------------------------------------------------------------------------------------------------------
# 3. experiment tracking


def test_a_missing_tracking_library_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(GolfError, match=r"pip install 'golfbench\[wandb\]'"):
        tracking.check(["tensorboard", "wandb"])
    tracking.check(["tensorboard"])  # installed: no error


def test_scalars_map_events_to_tags():
    step, train = tracking.scalars({"step": 3, "time": 1.5, "tokens": 12, "flops": 9.0, "loss": 2.0, "lr_scale": 1})
    assert step == 3 and train == {
        "train/loss": 2.0,
        "train/lr_scale": 1.0,
        "progress/tokens": 12.0,
        "progress/seconds": 1.5,
        "progress/flops": 9.0,
    }
    assert tracking.scalars({"step": 4, "loss": None, "tokens": 16})[1] == {"progress/tokens": 16.0}  # NaN left out
    assert tracking.scalars({"event": "flops_check", "analytic_step_flops": 1.0}) == (None, {})


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard's own reader: tensorboard.summary.Writer stores scalars as tensor summaries of the scalars plugin
    (what TensorBoard's Scalars tab shows)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert {acc.SummaryMetadata(tag).plugin_data.plugin_name for tag in tags} == {"scalars"}
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)] for tag in tags}


def _wandb_records(path) -> list:
    """The records of a wandb .wandb file, read with wandb's own protobuf schema: a 7-byte file header
    (":W&B", 0xBEE1, version), then LevelDB-log framing (32 KiB blocks; each chunk = crc32 (4), length (2,
    little-endian), type (1: full, 2: first, 3: middle, 4: last))."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", raw[:7]
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunk = raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            records.append(rec)
    return records


@pytest.mark.slow
def test_tensorboard_holds_every_event_of_the_run(runs):
    d = runs["curve"]
    tb = _tensorboard_scalars(d / "tensorboard")
    train, val = _train(d), _val(d)
    assert tb["train/loss"] == [(e["step"], pytest.approx(e["loss"], rel=1e-6)) for e in train]
    assert tb["val/bpb"] == [(e["step"], pytest.approx(e["val_bpb"], rel=1e-6)) for e in val]
    assert sorted(tb["progress/tokens"]) == sorted((e["step"], e["tokens"]) for e in train + val)
    result = json.loads((d / "result.json").read_text())
    assert tb["result/val_bpb"] == [(STEPS, pytest.approx(result["val_bpb"], rel=1e-6))]


@pytest.mark.slow
def test_wandb_offline_run_holds_config_history_and_summary(runs):
    d = runs["curve"]
    [offline] = list((d / "wandb").glob("offline-run-*"))
    [store] = list(offline.glob("run-*.wandb"))
    records = _wandb_records(store)
    history: dict[str, list[tuple[int, float]]] = {}
    summary, config = {}, {}
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            for key, value in items.items():
                if not key.startswith("_"):
                    history.setdefault(key, []).append((items["_step"], value))
        elif kind == "summary":
            summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "config":
            config.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.config.update})
        elif kind == "run":
            config.update({i.key: json.loads(i.value_json) for i in rec.run.config.update})
    train, val = _train(d), _val(d)
    assert history["train/loss"] == [(e["step"], pytest.approx(e["loss"], rel=1e-12)) for e in train]
    assert history["val/bpb"] == [(e["step"], pytest.approx(e["val_bpb"], rel=1e-12)) for e in val]
    result = json.loads((d / "result.json").read_text())
    assert summary["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-12) and summary["status"] == "ok"
    manifest = json.loads((d / "run.json").read_text())
    assert config["run_id"] == "curve" and config["config_sha256"] == manifest["config_sha256"]


# ----------------------------------------------------------------------------------------------------------
# 4. agent- and script-friendly output


@pytest.mark.slow
def test_golf_run_stdout_ends_with_the_result_line(runs):
    curve, plain = runs["out"]
    for res, d in ((curve, runs["curve"]), (plain, runs["plain"])):
        lines = res.stdout.splitlines()
        assert len(lines) == 1, res.stdout  # everything for humans went to stderr
        assert json.loads(lines[-1]) == json.loads((d / "result.json").read_text())
    assert "val_bpb" in curve.stderr and "val_bpb" not in plain.stderr  # the table, only without --json


@pytest.mark.slow
def test_every_result_command_has_json(runs, tmp_path):
    d, data = runs["curve"], runs["data"]
    art = d / "artifact.golf"

    def as_json(*args):
        res = golf(*args, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(res.stdout)

    assert {t["name"] for t in as_json("tracks")} >= {"fixed-data", "wallclock-10min", "flop-budget"}
    assert {(m["model"], m["preset"]) for m in as_json("models")} >= {("llama", "tiny")}
    assert as_json("data", "verify", data)["ok"] is True
    verdict = as_json("verify", d)
    assert verdict["ok"] is True and verdict["failures"] == [] and len(verdict["checks"]) > 5
    assert verdict["recomputed_bpb"] == pytest.approx(json.loads((d / "result.json").read_text())["val_bpb"], abs=1e-9)
    inspect = as_json("artifact", "inspect", art)
    assert inspect["under_cap"] is True and inspect["model_bytes"] == art.stat().st_size
    assert {t["name"] for t in inspect["tensors"]} >= {"tok_emb.weight"}
    unpacked = as_json("artifact", "unpack", art, "--out", tmp_path / "w.safetensors")
    assert unpacked["tensors"] == {t["name"]: t["shape"] for t in inspect["tensors"]}
    rec = tmp_path / "records"
    exported = as_json("export", d, "--out", rec)
    assert exported["submission"]["val_bpb"] == pytest.approx(json.loads((d / "result.json").read_text())["val_bpb"])
    assert as_json("validate-submission", rec) == {"folder": str(rec), "valid": True, "problems": []}
    board = as_json("leaderboard", "--runs", runs["root"] / "runs", "--include-unofficial")
    assert "boards" in board
    score = as_json("eval", art, "--data", data, "--stride", "256")
    assert score["val_bpb"] == pytest.approx(json.loads((d / "result.json").read_text())["val_bpb"], abs=1e-9)
