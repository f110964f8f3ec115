"""`golf budget`: parameters, FLOPs per token, what each track buys and the artifact estimate, before training.

The counts are checked against the spec's formulas and the track files read independently here; the artifact
estimate against real artifacts of fully trained dev runs (the default dev fixed-data budget, 262,144 tokens).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest
from golf_helpers import golf, golf_ok, one_line_error, small_dataset

from golfbench.harness.models import get_spec

ROOT = Path(__file__).resolve().parent.parent


def test_budget_json_counts_match_the_spec_and_the_track_files():
    rep = json.loads(golf_ok("budget", "llama", "--preset", "baseline", "--backend", "torch", "--json").stdout)
    spec = get_spec("llama")
    cfg = spec.config("baseline")
    assert rep["param_count"] == spec.param_count(cfg) == 17_059_912  # parameter-golf's baseline: 17.06M
    fpt = rep["flops_per_token"]["total"]
    assert fpt == spec.flops_per_token(cfg)["total"]
    by_track = {t["track"]: t for t in rep["tracks"]}
    seq = cfg["seq_len"]
    fixed = tomllib.loads((ROOT / "tracks" / "fixed-data.toml").read_text())["official"]["budget"]
    flops = tomllib.loads((ROOT / "tracks" / "flop-budget.toml").read_text())["official"]["budget"]
    assert by_track["fixed-data"]["tokens"] == fixed // seq * seq
    assert by_track["flop-budget"]["tokens"] == math.floor(flops / fpt / seq) * seq
    assert by_track["flop-budget"]["steps"] == math.ceil(by_track["flop-budget"]["tokens"] / 524_288)
    assert by_track["wallclock-10min"]["tokens"] is None  # no throughput given: not guessed
    code = rep["code_bytes"]["torch"]
    est = rep["artifact"]["int8_per_row"]
    assert est["estimate"] <= est["upper"]
    fit = by_track["fixed-data"]["artifact"]["int8_per_row@torch"]
    assert fit["total_bytes"] == est["estimate"] + code and fit["cap_bytes"] == 16_000_000
    # parameter-golf's trained baseline: int8 per row + zlib-9 gave ~15.8 MB; the prior lands within 5% of it
    assert abs(est["estimate"] - 15_800_000) / 15_800_000 < 0.05


def test_budget_prices_a_wallclock_budget_from_a_throughput():
    rep = json.loads(
        golf_ok(
            "budget", "llama", "--scale", "dev", "--backend", "torch", "--tokens-per-second", "1000", "--json"
        ).stdout
    )
    wall = next(t for t in rep["tracks"] if t["track"] == "wallclock-10min")
    seconds = tomllib.loads((ROOT / "tracks" / "wallclock-10min.toml").read_text())["dev"]["budget"]
    assert wall["tokens"] == math.floor(seconds * 1000 / 256) * 256
    assert wall["artifact"]["int8_per_row@torch"]["fits"] == "yes"  # a tiny model fits even incompressible


def test_budget_says_no_when_the_config_cannot_fit():
    rep = json.loads(
        golf_ok(
            "budget", "llama", "--preset", "baseline", "--set", "model_dim=1024", "--backend", "torch", "--json"
        ).stdout
    )
    assert all(t["artifact"]["int8_per_row@torch"]["fits"] == "no" for t in rep["tracks"])


@pytest.mark.parametrize(
    "args, needle",
    [
        (("budget", "gpt9"), "unknown model 'gpt9'"),
        (("budget", "llama", "--preset", "huge"), "unknown preset 'huge'"),
        (("budget", "llama", "--set", "depth=3"), "unknown config key 'depth'"),
        (("budget", "llama", "--tokens-per-second", "-5", "--backend", "torch"), "--tokens-per-second"),
        (("budget", "llama", "--scale", "galactic", "--backend", "torch"), "unknown scale 'galactic'"),
    ],
)
def test_budget_bad_input_is_one_line(args, needle):
    one_line_error(golf(*args), needle)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["llama@torch", "megalodon@jax"])
def test_estimate_is_within_2_percent_of_a_trained_tiny_artifact(target, shakespeare_dir, tmp_path):
    model, backend = target.split("@")
    data = small_dataset(shakespeare_dir, tmp_path / "shakespeare_sp1024", train_tokens=262_145, val_tokens=2_048)
    golf_ok(
        "run", "--track", "fixed-data", "--scale", "dev", "--model", model, "--backend", backend,
        "--data", data, "--out", tmp_path / "runs", "--no-prequant", "--eval-stride", "256",
    )  # fmt: skip
    (result,) = (tmp_path / "runs").rglob("result.json")
    res = json.loads(result.read_text())
    assert res["train_tokens"] == 262_144  # the full dev budget: a trained model, not an initial one
    rep = json.loads(golf_ok("budget", model, "--scale", "dev", "--backend", backend, "--json").stdout)
    est = rep["artifact"]["int8_per_row"]["estimate"]
    assert abs(est - res["model_bytes"]) / res["model_bytes"] < 0.02, (est, res["model_bytes"])
    assert res["model_bytes"] <= rep["artifact"]["int8_per_row"]["upper"]
