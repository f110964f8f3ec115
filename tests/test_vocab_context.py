"""Tokenizer variants and eval context (issue "The frontier fits", points 3 and 4).

- a run takes its vocab from the dataset; a shakespeare_sp4096 run is unofficial and in its own cohort;
- the track's ``count_tokenizer_bytes`` adds the tokenizer .model bytes to the artifact total;
- ``--eval-context``: models that support it score windows longer than their seq_len, equal across backends
  and equal to the float64 numpy references; other models are refused in one line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import reference_llama
import reference_megalodon
import zstandard
from golf_helpers import ENV, golf, one_line_error, small_dataset

from golfbench.harness import runner
from golfbench.harness.artifact import size_report
from golfbench.harness.backend import get_backend
from golfbench.harness.cohort import cohort_key
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.manifest import write_manifest
from golfbench.harness.data.shakespeare import build
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import policy_text
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec
from golfbench.harness.scoring import score_weights
from golfbench.harness.tracks import load_track

TRACKS = ("fixed-data", "flop-budget", "wallclock-10min")


@pytest.fixture(scope="module")
def sp4096_dir(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("data") / "shakespeare_sp4096", vocab_size=4096)


# ---------------------------------------------------------------------------------------------- vocab from data


def _spec(data: Path, tmp_path: Path, **kw) -> runner.RunSpec:
    return runner.RunSpec(
        track="fixed-data", scale="dev", backend="torch", model="llama", preset="tiny", data=str(data),
        out=str(tmp_path / "runs"), **kw,
    )  # fmt: skip


def test_a_run_takes_the_vocab_of_its_dataset(sp4096_dir: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    base = runner.Run(_spec(shakespeare_dir, tmp_path))
    assert base.config["vocab_size"] == 1024 and base.unofficial is False
    run = runner.Run(_spec(sp4096_dir, tmp_path))
    assert run.config["vocab_size"] == 4096
    assert {k: v for k, v in run.config.items() if k != "vocab_size"} == {
        k: v for k, v in base.config.items() if k != "vocab_size"
    }
    manifest = run.manifest()
    assert manifest["config"]["vocab_size"] == 4096 and manifest["overrides"] == {}
    assert manifest["config_sha256"] == runner.config_hash({**base.config, "vocab_size": 4096})
    assert manifest["config_sha256"] != base.manifest()["config_sha256"]
    # another tokenizer of the track's corpus: a different dataset, so unofficial (never refused)
    assert run.unofficial is True and manifest["unofficial"] is True
    assert manifest["dataset"]["id"] == "shakespeare_sp4096"
    # an explicit matching --set is fine; a mismatching one is a one-line error
    assert runner.Run(_spec(sp4096_dir, tmp_path, overrides={"vocab_size": "4096"})).config["vocab_size"] == 4096
    with pytest.raises(GolfError) as info:
        runner.Run(_spec(sp4096_dir, tmp_path, overrides={"vocab_size": "1024"}))
    assert str(info.value) == (
        "llama/tiny has vocab 1024 (--set vocab_size) but dataset 'shakespeare_sp4096' has 4096: drop --set"
        " vocab_size, the model takes the dataset's"
    )


def test_a_foreign_corpus_is_still_refused_for_an_official_looking_run(shakespeare_dir: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(shakespeare_dir, tmp_path / "other"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest.update(name="novels", id="novels_sp1024")
    for shard in manifest["shards"]:
        new = shard["file"].replace("shakespeare_", "novels_")
        (other / shard["file"]).rename(other / new)
        shard["file"] = new
    write_manifest(other, manifest)
    with pytest.raises(GolfError, match="uses dataset 'shakespeare_sp1024', but .* holds 'novels_sp1024'"):
        runner.Run(_spec(other, tmp_path))


# ---------------------------------------------------------------------------------------------- tokenizer bytes


def test_every_track_section_states_count_tokenizer_bytes() -> None:
    rules = {t: {s: load_track(t).scale(s)["count_tokenizer_bytes"] for s in ("official", "dev")} for t in TRACKS}
    assert rules == {
        "fixed-data": {"official": True, "dev": True},
        "flop-budget": {"official": True, "dev": True},
        "wallclock-10min": {"official": False, "dev": False},
    }
    for t in TRACKS:  # written out in every section, never left to the default
        text = (Path(load_track(t).path)).read_text()
        assert text.count("\ncount_tokenizer_bytes = ") == 2, t


def test_count_tokenizer_bytes_must_be_a_bool(tmp_path: Path) -> None:
    text = (
        load_track("fixed-data")
        .path.read_text()
        .replace("count_tokenizer_bytes = true", 'count_tokenizer_bytes = "yes"')
    )
    (tmp_path / "fixed-data.toml").write_text(text)
    with pytest.raises(GolfError, match=r"\[official\] count_tokenizer_bytes must be true or false"):
        load_track("fixed-data", tmp_path)


def test_size_rule_adds_the_tokenizer() -> None:
    rep = size_report(15_700_000, 50_000, 16_000_000, 254_560)
    assert rep["total_bytes"] == 15_700_000 + 50_000 + 254_560 and rep["tokenizer_bytes"] == 254_560
    assert not rep["under_cap"] and size_report(15_700_000, 50_000, 16_000_000)["under_cap"]


def test_run_records_and_counts_tokenizer_bytes(sp4096_dir: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    run = runner.Run(_spec(sp4096_dir, tmp_path))
    assert run.count_tokenizer_bytes is True
    raw = (sp4096_dir / "tokenizer.model").read_bytes()  # counted zstd-22 compressed, as the model's bytes are
    assert run.tokenizer_bytes == len(zstandard.ZstdCompressor(level=22).compress(raw)) > 0
    wall = runner.Run(dataclasses.replace(_spec(shakespeare_dir, tmp_path), track="wallclock-10min"))
    assert wall.count_tokenizer_bytes is False
    raw = (shakespeare_dir / "tokenizer.model").read_bytes()
    assert wall.tokenizer_bytes == len(zstandard.ZstdCompressor(level=22).compress(raw))  # recorded, not counted


# ---------------------------------------------------------------------------------------------- eval context


def _per_token_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b) / np.maximum(np.abs(b), 1e-3)).max())


def test_llama_scores_twice_its_seq_len_like_the_reference_in_both_backends() -> None:
    spec = get_spec("llama")
    cfg = spec.config("tiny")
    weights = reference_llama.random_weights(spec.shapes(cfg), seed=3)
    batch = np.random.default_rng(3).integers(0, cfg["vocab_size"], (2, 2 * cfg["seq_len"] + 1)).astype(np.int32)
    expected = reference_llama.nll(weights, cfg, batch)  # float64, rotary computed for 512 positions
    got = {name: np.asarray(get_backend(name).scorer("llama", cfg, weights)(batch)) for name in ("torch", "jax")}
    for name, nll in got.items():
        assert nll.shape == (2, 512)
        assert _per_token_rel(nll, expected) < 1e-4, name
    assert _per_token_rel(got["torch"], got["jax"]) < 1e-4


def test_megalodon_scores_twice_its_seq_len_like_the_reference_in_both_backends() -> None:
    cfg = reference_megalodon.micro_config()
    weights = reference_megalodon.noisy_weights(cfg, seed=2)
    T = 2 * cfg["seq_len"] + cfg["chunk_size"] // 2  # past the training length, ending in a partial chunk
    batch = np.random.default_rng(2).integers(0, cfg["vocab_size"], (2, T + 1)).astype(np.int32)
    expected = np.stack([reference_megalodon.nll(weights, cfg, row) for row in batch])
    got = {name: np.asarray(get_backend(name).scorer("megalodon", cfg, weights)(batch)) for name in ("torch", "jax")}
    for name, nll in got.items():
        assert nll.shape == (2, T)
        assert _per_token_rel(nll, expected) < 1e-4, name


@pytest.mark.parametrize("model", ["llama", "megalodon"])
def test_score_weights_at_a_longer_context(model: str, shakespeare_dir: Path, tmp_path: Path) -> None:
    data = Dataset.open(small_dataset(shakespeare_dir, tmp_path / "small", val_tokens=1_500))
    spec = get_spec(model)
    cfg = spec.config("tiny")
    weights = init_weights(spec, cfg, seed=0)
    res = {name: score_weights(name, model, cfg, weights, data, stride=256, context=512) for name in ("torch", "jax")}
    for r in res.values():
        assert r.eval_context == 512 and r.eval_stride == 256 and math.isfinite(r.val_bpb)
        assert r.val_tokens == 1_499
        assert "evaluated at context 512, trained at 256" in r.policy
    # measured: the backends agree to ~1e-7 relative on the BPB (float32 scorers, float64 sums)
    assert res["torch"].val_bpb == pytest.approx(res["jax"].val_bpb, rel=1e-5)
    same = score_weights("torch", model, cfg, weights, data, stride=256)
    assert same.eval_context == 256 and "trained at" not in same.policy


def test_policy_text_names_both_contexts_only_when_they_differ() -> None:
    assert policy_text(512, 64, 256).endswith("; evaluated at context 512, trained at 256")
    assert policy_text(256, 64, 256) == policy_text(256, 64)


def test_a_model_without_longer_eval_context_is_refused() -> None:
    cfg = get_spec("llama").config("tiny")
    plain = dataclasses.replace(get_spec("llama"), eval_context_extends=False)
    assert plain.check_eval_context(cfg, 128) == 128  # shorter is always fine
    with pytest.raises(GolfError) as info:
        plain.check_eval_context(cfg, 512)
    assert str(info.value) == (
        "model 'llama' cannot be evaluated at context 512: it trained at 256 and does not support a longer eval context"
    )
    with pytest.raises(GolfError, match="--eval-context must be a positive number of tokens, got 0"):
        get_spec("llama").check_eval_context(cfg, 0)


@pytest.mark.slow  # ~45 s: a training run, its verify re-score and a JAX import
def test_cli_run_records_the_eval_context_and_refuses_what_a_model_cannot(shakespeare_dir: Path, tmp_path: Path):
    data = small_dataset(shakespeare_dir, tmp_path / "small", train_tokens=9_000, val_tokens=1_500)
    out = tmp_path / "runs"
    args = ("run", "--track", "fixed-data", "--scale", "dev", "--data", data, "--budget", "4096", "--out", out)
    res = golf(*args, "--model", "llama", "--eval-context", "512", "--json", env=ENV)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert (result["eval_context"], result["train_context"], result["status"]) == (512, 256, "ok")
    assert "evaluated at context 512, trained at 256" in result["eval_policy"]
    run_dir = out / "fixed-data" / "dev" / "llama-tiny-torch-s0-b4096-ctx512"  # the default id names the context
    manifest = json.loads((run_dir / "run.json").read_text())
    assert {k: manifest["eval"][k] for k in ("stride", "context", "train_context")} == {
        "stride": 64,
        "context": 512,
        "train_context": 256,
    }
    assert manifest["spec"]["eval_context"] == 512
    # the track counts the tokenizer: model + code + tokenizer, and `golf verify` agrees (it re-scores at 512)
    assert result["count_tokenizer_bytes"] is True
    raw = (data / "tokenizer.model").read_bytes()  # counted zstd-22 compressed
    assert result["tokenizer_bytes"] == len(zstandard.ZstdCompressor(level=22).compress(raw))
    assert result["artifact_bytes"] == result["model_bytes"] + result["code_bytes"] + result["tokenizer_bytes"]
    verified = golf("verify", run_dir, env=ENV)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    again = golf("eval", run_dir / "artifact.golf", "--data", data, "--eval-context", "512", "--json", env=ENV)
    rescored = json.loads(again.stdout)
    assert (rescored["eval_context"], rescored["train_context"]) == (512, 256)
    assert rescored["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-9)
    # a different eval context is a different cohort
    assert cohort_key(result) != cohort_key({**result, "eval_context": 256})
    # deltanet (a plugin, no longer-context support) is refused in one line before anything is written
    bad = golf(*args, "--model", "deltanet", "--backend", "jax", "--eval-context", "512", "--run-id", "x", env=ENV)
    one_line_error(bad, "cannot be evaluated at context 512")
    assert not (out / "fixed-data" / "dev" / "x").exists()
