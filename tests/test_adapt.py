"""Score-first test-time adaptation (harness/adapt.py): the evaluator's order, the backends' recipe, the cheats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from golfbench.harness.adapt import (
    AdaptRecipe,
    adapt_rows,
    adapt_token_count,
    chunk_plan,
    evaluate_adaptive,
    get_recipe,
)
from golfbench.harness.distributed import SINGLE
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import evaluate, window_plan
from golfbench.harness.probes import ProbeFailure

V = 64


class FakeAccounting:
    """Every target is one byte: BPB = Σ NLL / (ln 2 · (N - 1))."""

    def token_bytes(self, prev, cur):
        return np.ones(len(cur), dtype=np.int64)


class Bigram:
    """An honest, still scorer over a fixed random bigram table (token ids taken mod V)."""

    def __init__(self, seed=0):
        logits = np.random.default_rng(seed).normal(size=(V, V))
        self.table = logits - np.log(np.exp(logits).sum(1, keepdims=True))

    def dist(self, tokens):
        return self.table[tokens[:, :-1] % V]

    def __call__(self, tokens):
        return -np.take_along_axis(self.dist(tokens), (tokens[:, 1:] % V)[..., None], axis=2)[..., 0].astype(np.float32)

    def logprobs(self, tokens, positions):
        return self.dist(tokens)[positions[:, 0], positions[:, 1]].astype(np.float32)


class Recorder(Bigram):
    """Records every call in order; after its first adapt() its NLL is 0 everywhere (so what was summed before is
    told apart from what came after). Token ids here are val indices (tokens = arange(N))."""

    def __init__(self, zero_after_adapt=True, ids_are_indices=True):
        super().__init__()
        self.log, self.adapted, self.zero, self.ids_are_indices = [], False, zero_after_adapt, ids_are_indices
        self.highest_scored = -1

    def __call__(self, tokens):
        self.highest_scored = max(self.highest_scored, int(tokens[:, -1].max()))  # a window's last target is scored
        self.log.append(("score", tokens.copy()))
        nll = super().__call__(tokens)
        return np.zeros_like(nll) if (self.adapted and self.zero) else nll

    def adapt(self, tokens):
        if self.ids_are_indices:
            assert tokens.max() <= self.highest_scored, "adapt() was given a token not yet scored"
        self.log.append(("adapt", tokens.copy(), self.highest_scored))
        self.adapted = True

    def reset(self):
        self.log.append(("reset",))


def test_noop_adapter_equals_the_plain_evaluator():
    tokens = np.random.default_rng(1).integers(0, V, size=5_000)
    recipe = AdaptRecipe("test", chunk_tokens=700)
    plain = evaluate(Bigram(), tokens, FakeAccounting(), context=128, stride=32)
    adapted, stats = evaluate_adaptive(
        Recorder(zero_after_adapt=False, ids_are_indices=False),
        tokens,
        FakeAccounting(),
        128,
        32,
        recipe,
        flops_per_token=10.0,
    )
    assert abs(adapted.val_nll_sum - plain.val_nll_sum) <= 1e-12 * abs(plain.val_nll_sum)
    assert adapted.val_tokens == plain.val_tokens == 4_999 and adapted.val_bytes == 4_999
    assert stats.adapt_flops == 10.0 * stats.adapt_tokens


def test_adapt_gets_only_scored_tokens_and_scores_are_fixed_first():
    N, context, stride, C = 3_001, 128, 32, 500
    tokens = np.arange(N)  # token id = val index
    rec = Recorder()
    res, stats = evaluate_adaptive(rec, tokens, FakeAccounting(), context, stride, AdaptRecipe("t", C), 1.0)
    adapts = [e for e in rec.log if e[0] == "adapt"]
    # independently: windows score targets 1..128, then 32 each; chunks close once >= 500 targets are scored
    # (128 + 12*32 = 512 -> targets 1..512, then 16*32 = 512 each: 513..1024, 1025..1536, 1537..2048,
    # 2049..2560, then the last chunk 2561..3000 is never adapted on)
    expect = [(0, 512), (512, 1024), (1024, 1536), (1536, 2048), (2048, 2560)]
    assert [(int(a[1][0]), int(a[1][-1])) for a in adapts] == expect
    for _, given, highest in adapts:
        assert given.max() == highest  # exactly up to the last scored target, never beyond
        assert np.array_equal(given, np.arange(given[0], given[-1] + 1))
    # scores before the first adapt are fixed: only chunk 0's NLLs (targets 1..512) count, the rest are 0 after it
    first = Bigram()(tokens[None, :513])[0].astype(np.float64).sum()
    assert res.val_nll_sum == pytest.approx(first, rel=1e-12)
    assert stats.adapt_chunks == 6 and stats.adapt_resets == 0
    # every adapt() gets 513 tokens: 4 rows of 128 targets (adapt_rows), times 2 steps
    per_chunk = len(adapt_rows(np.arange(513), context)) * context * 2
    assert stats.adapt_tokens == 5 * per_chunk == adapt_token_count(tokens, context, stride, AdaptRecipe("t", C))


def test_per_document_reset_at_bos():
    N, bos = 2_001, 1
    tokens = np.full(N, 7)
    tokens[[0, 900, 1700]] = bos
    rec = Recorder(zero_after_adapt=False, ids_are_indices=False)
    recipe = AdaptRecipe("t", chunk_tokens=500, reset_at_bos=True)
    evaluate_adaptive(rec, tokens, FakeAccounting(), 100, 50, recipe, 1.0, bos_id=bos)
    kinds = [e[0] for e in rec.log]
    # chunks: targets 1..500 (holds no BOS target), 501..1000 (BOS at 900), 1001..1500, 1501..2000 (BOS at 1700)
    resets = [i for i, k in enumerate(kinds) if k == "reset"]
    assert len(resets) == 2
    adapts = [e for e in rec.log if e[0] == "adapt"]
    assert [len(a[1]) for a in adapts] == [501, 1000 - 900 + 1, 501]  # from the chunk's last BOS on
    assert adapts[1][1][0] == bos


def test_adaptive_eval_on_several_processes_runs_whole_and_returns_process_0s_sums():
    class Two:  # process 1 of 2: it adapts on its own replica, then takes process 0's sum
        rank, world_size = 1, 2
        sent: list = []

        def broadcast(self, values):
            self.sent.append(list(values))
            return [123.0 for _ in values]

    alone, _ = evaluate_adaptive(Recorder(), np.arange(600), FakeAccounting(), 64, 32, AdaptRecipe("t", 100), 1.0)
    two = Two()
    rec = Recorder()
    res, stats = evaluate_adaptive(
        rec, np.arange(600), FakeAccounting(), 64, 32, AdaptRecipe("t", 100), 1.0, collective=two
    )
    assert two.sent == [[alone.val_nll_sum]]  # every window scored here (never sharded), then one broadcast
    assert res.val_nll_sum == 123.0 and res.val_tokens == 599  # process 0's number, for the whole split
    assert stats.adapt_tokens > 0 and any(e[0] == "adapt" for e in rec.log)
    assert SINGLE.world_size == 1


def test_chunk_plan_and_recipes():
    _, _, scored = window_plan(1_001, 100, 50)  # 100, then 50 x 18
    chunks = chunk_plan(scored, 300)
    assert chunks[0] == (0, 5) and sum(int(scored[a:b].sum()) for a, b in chunks) == 1_000
    assert get_recipe("none") is None and get_recipe("sgd").lr > 0
    with pytest.raises(GolfError, match="unknown adaptation recipe 'adam'"):
        get_recipe("adam")


# -- the backends' recipe ------------------------------------------------------------------------------------

SMALL = {"num_layers": 2, "seq_len": 64}


def _weights(config):
    from golfbench.harness.init import init_weights
    from golfbench.harness.models import get_spec

    return init_weights(get_spec("llama"), config, 0)


@pytest.mark.slow  # ~60 s on a shared CPU: JAX compiles the forward, the SGD step and the scorer
def test_torch_and_jax_recipes_agree_on_cpu_fp32(shakespeare):
    from golfbench.harness.backend import get_backend
    from golfbench.harness.models import get_spec

    config = get_spec("llama").config("tiny", SMALL)
    weights = _weights(config)
    val = shakespeare.val_tokens()[:800]
    recipe = AdaptRecipe("t", steps=2, lr=0.05)
    windows = np.stack([val[300:365], val[600:665]])
    after = {}
    for name in ("torch", "jax"):
        adapter = get_backend(name).adapter("llama", config, weights, "fp32", recipe)
        before = adapter(windows)
        adapter.adapt(val[:300])
        adapter.adapt(val[299:500])
        after[name] = adapter(windows).astype(np.float64)
        assert after[name].mean() < before.mean() - 0.05  # it learned from the scored text
        adapter.reset()
        assert np.array_equal(adapter(windows), before)
    # measured: 1.0e-6 (llama 2x128, seq 64, 4 SGD steps at lr 0.05)
    assert np.abs(after["torch"] - after["jax"]).max() < 2e-5


@pytest.fixture(scope="module")
def small_ds(shakespeare_dir, tmp_path_factory):
    from golf_helpers import small_dataset

    from golfbench.harness.data.dataset import Dataset

    return Dataset.open(small_dataset(shakespeare_dir, tmp_path_factory.mktemp("ttt") / "ds", val_tokens=1_500))


def _cheat_adapter(sneaky: bool):
    from golfbench.backends.torch.backend import BACKEND, TorchAdapter, _tokens

    class Cheat(TorchAdapter):
        """Adapts on the windows it is asked to score before scoring them (a chunk trained on before it is scored).
        ``sneaky``: only once its first honest adapt() has happened (so the probe before the first chunk passes)."""

        armed = not sneaky

        def adapt(self, tokens):
            super().adapt(tokens)
            self.armed = True

        def __call__(self, tokens):
            if self.armed:
                for row in np.asarray(tokens):
                    super().adapt(row)  # train on the window, targets included, then score it
            return super().__call__(tokens)

    def make(spec_name, config, weights, precision="fp32", recipe=None):
        from golfbench.backends.torch.backend import _build_model, _device

        model = _build_model(spec_name, config, weights, _device())
        return Cheat(model, config, _device(), precision, recipe)

    assert _tokens is not None
    return BACKEND, make


@pytest.mark.parametrize("sneaky", [False, True])
def test_a_planted_cheat_that_adapts_before_scoring_is_refused(small_ds, monkeypatch, sneaky):
    from golfbench.harness.models import get_spec
    from golfbench.harness.scoring import score_weights_adaptive

    config = get_spec("llama").config("tiny", SMALL)
    backend, make = _cheat_adapter(sneaky)
    monkeypatch.setattr(backend, "adapter", make, raising=False)
    recipe = AdaptRecipe("t", chunk_tokens=256, steps=1, lr=0.05)
    with pytest.raises(ProbeFailure, match="scoring the same windows twice|reports NLL"):
        score_weights_adaptive("torch", "llama", config, _weights(config), small_ds, 32, recipe)


def test_honest_torch_adapter_lowers_the_score_and_is_accounted(small_ds):
    from golfbench.harness.models import get_spec
    from golfbench.harness.scoring import score_weights, score_weights_adaptive

    config = get_spec("llama").config("tiny", SMALL)
    weights = _weights(config)
    recipe = AdaptRecipe("t", chunk_tokens=256, steps=2, lr=0.05)
    plain = score_weights("torch", "llama", config, weights, small_ds, 32)
    res, stats = score_weights_adaptive("torch", "llama", config, weights, small_ds, 32, recipe)
    assert res.val_tokens == plain.val_tokens and res.val_bytes == plain.val_bytes
    assert res.val_bpb < plain.val_bpb - 0.02  # measured: 4.540 -> 4.504 (an untrained model learns from the chunks)
    fpt = get_spec("llama").flops_per_token(config)["total"]
    assert stats.adapt_tokens == adapt_token_count(small_ds.val_tokens(), 64, 32, recipe, small_ds.bos_id)
    assert stats.adapt_flops == stats.adapt_tokens * fpt
    assert 0 < stats.adapt_seconds < res.eval_seconds
    assert "again after the first adaptation" in res.policy and math.isfinite(res.val_bpb)


# -- track rules, the run, the CLI ---------------------------------------------------------------------------


def test_track_rules_for_adaptation(tmp_path):
    from golfbench.harness.tracks import list_tracks, load_track

    rules = {t.name: {s: t.scale(s)["eval_adaptation"] for s in ("official", "dev")} for t in list_tracks()}
    assert rules == {
        "fixed-data": {"official": "none", "dev": "none"},
        "flop-budget": {"official": "score-first", "dev": "score-first"},
        "wallclock-10min": {"official": "score-first", "dev": "score-first"},
    }
    (tmp_path / "odd.toml").write_text(
        "name='odd'\nbudget_kind='tokens'\n[dev]\ndataset='x'\nbudget=1\neval_adaptation='yes'\n"
    )
    with pytest.raises(GolfError, match=r"\[dev\] eval_adaptation 'yes' must be one of none, score-first"):
        load_track("odd", tmp_path)
    (tmp_path / "plain.toml").write_text("name='plain'\nbudget_kind='tokens'\n[dev]\ndataset='x'\nbudget=1\n")
    assert load_track("plain", tmp_path).scale("dev")["eval_adaptation"] == "none"  # the default


def _spec(track, data, tmp_path, **kw):
    from golfbench.harness.runner import RunSpec

    base = dict(track=track, scale="dev", backend="torch", model="llama", preset="tiny", data=str(data))
    return RunSpec(**{**base, "out": str(tmp_path / "runs"), **kw})


def test_run_refuses_adaptation_where_the_track_forbids_it_and_reserves_flops(shakespeare_dir, shakespeare, tmp_path):
    from golfbench.harness.errors import BudgetError
    from golfbench.harness.models import get_spec
    from golfbench.harness.runner import Run

    with pytest.raises(GolfError, match="track 'fixed-data' does not allow test-time adaptation"):
        Run(_spec("fixed-data", shakespeare_dir, tmp_path, adapt="sgd"))
    with pytest.raises(GolfError, match="unknown adaptation recipe 'lora'"):
        Run(_spec("wallclock-10min", shakespeare_dir, tmp_path, adapt="lora"))
    assert Run(_spec("wallclock-10min", shakespeare_dir, tmp_path, adapt="sgd"), world_size=2).adapt_recipe
    run = Run(_spec("flop-budget", shakespeare_dir, tmp_path, adapt="sgd", budget=1e13))
    recipe = get_recipe("sgd")
    # independently: 191,549 targets in chunks of >= 4096 (256 + 60 x 64 = 4096, then 64 windows x 64 each):
    # 46 chunks of 4096 targets are adapted on (4,097 tokens -> 16 rows of 256 targets), the 47th (3,133) is not
    assert recipe.chunk_tokens == 4096 and recipe.steps == 2
    assert adapt_token_count(shakespeare.val_tokens(), 256, 64, recipe) == 46 * 16 * 256 * 2
    fpt = get_spec("llama").flops_per_token(run.config)["total"]
    assert run.train_limit == pytest.approx(1e13 - 46 * 16 * 256 * 2 * fpt, rel=1e-12)
    assert run.manifest()["eval"]["adapt_flops_reserved"] == pytest.approx(1e13 - run.train_limit)
    with pytest.raises(BudgetError, match="needs .* FLOPs .* all of the 1e\\+12-FLOP budget"):
        Run(_spec("flop-budget", shakespeare_dir, tmp_path, adapt="sgd", budget=1e12))
    assert not (tmp_path / "runs").exists()


def test_cli_refuses_adapt_on_fixed_data_in_one_line(shakespeare_dir, tmp_path):
    import os
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", "run", "--track", "fixed-data", "--data", str(shakespeare_dir)]
        + ["--adapt", "sgd", "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env={**os.environ, "GOLF_NO_PROGRESS": "1"},
        timeout=300,
    )
    assert res.returncode != 0 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "does not allow test-time adaptation" in lines[0]
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "golfbench.harness.cli",
            "eval",
            str(tmp_path / "x.golf"),
            "--data",
            str(shakespeare_dir),
        ]
        + ["--adapt", "sgd", "--nproc-per-node", "2"],
        capture_output=True,
        text=True,
        env={**os.environ, "GOLF_NO_PROGRESS": "1"},
        timeout=300,
    )
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "one process" in lines[0], res.stderr


def test_adaptive_run_records_its_cost(shakespeare_dir, tmp_path, monkeypatch):
    from golf_helpers import small_dataset

    from golfbench.harness import adapt, runner
    from golfbench.harness.models import get_spec
    from golfbench.harness.records import validate_result

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    small = AdaptRecipe("sgd", chunk_tokens=256)
    monkeypatch.setitem(adapt.RECIPES, "sgd", small)
    data = small_dataset(shakespeare_dir, tmp_path / "ds", val_tokens=1_200)
    spec_ = get_spec("llama")
    fpt = spec_.flops_per_token(spec_.config("tiny", SMALL))["total"]
    # 1,199 targets, windows of 64 (stride 64): chunks of 4 windows = 256 targets; 4 of them (257 tokens: 4 rows
    # of 64) are trained on twice, the fifth (175 targets) is the last, never trained on
    adapt_tokens = 4 * 4 * 64 * 2
    step = 4096 * fpt  # one training step of the tiny preset (train_batch_tokens 4096)
    budget = adapt_tokens * fpt + 2.5 * step  # the reserve plus two and a half steps: training takes two
    spec = _spec("flop-budget", data, tmp_path, adapt="sgd", budget=budget, prequant=False, overrides=SMALL, run_id="a")
    result = runner.execute(spec)
    assert result["status"] == "ok", result["reason"]
    assert result["eval_adaptation"] == "score-first" and result["adapt_recipe"] == "sgd"
    assert result["adapt_params"] == small.to_dict()
    assert result["adapt_tokens"] == adapt_tokens
    assert result["adapt_flops"] == pytest.approx(adapt_tokens * fpt, rel=1e-12)
    assert result["steps"] == 2 and result["train_flops"] + result["adapt_flops"] <= budget
    assert 0 < result["adapt_seconds"] < result["eval_seconds"]
    assert validate_result(result) == []
    # golf eval --adapt sgd re-scores the artifact to the same number (same recipe, CPU: deterministic)
    import json

    from typer.testing import CliRunner

    from golfbench.harness.cli import app

    artifact = tmp_path / "runs" / "flop-budget" / "dev" / "a" / "artifact.golf"
    out = CliRunner().invoke(app, ["eval", str(artifact), "--data", str(data), "--adapt", "sgd", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout[out.stdout.index("{") :])
    assert report["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-9)
    assert report["adapt_tokens"] == adapt_tokens and report["adapt_params"] == small.to_dict()
    # golf verify re-derives the adaptive score from the files, with the recipe run.json recorded
    from golfbench.harness.verify import verify_run

    monkeypatch.setitem(adapt.RECIPES, "sgd", AdaptRecipe("sgd"))  # the registry's default: not what this run used
    verdict = verify_run(tmp_path / "runs" / "flop-budget" / "dev" / "a", data=data)
    assert verdict.ok, verdict.failures
    assert verdict.recomputed_bpb == pytest.approx(result["val_bpb"], rel=1e-9)


@pytest.mark.slow  # trains llama/tiny for ~40 steps, then scores 20k val tokens twice (minutes on a shared CPU)
def test_sgd_recipe_lowers_a_trained_llama_tiny_val_bpb_on_shakespeare(shakespeare_dir, tmp_path, monkeypatch):
    from golf_helpers import small_dataset

    from golfbench.harness import runner
    from golfbench.harness.artifact import read_artifact
    from golfbench.harness.data.dataset import Dataset
    from golfbench.harness.models import get_spec
    from golfbench.harness.scoring import load_artifact_model, score_weights

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    data = small_dataset(shakespeare_dir, tmp_path / "ds", train_tokens=400_000, val_tokens=20_000)
    spec_ = get_spec("llama")
    fpt = spec_.flops_per_token(spec_.config("tiny"))["total"]
    recipe = get_recipe("sgd")
    reserve = adapt_token_count(Dataset.open(data).val_tokens(), 256, 64, recipe) * fpt
    budget = reserve + 40.5 * 4096 * fpt  # the adaptation's reserve plus 40 training steps
    spec = _spec("flop-budget", data, tmp_path, adapt="sgd", budget=budget, prequant=False, run_id="g")
    result = runner.execute(spec)
    assert result["status"] == "ok" and result["steps"] == 40, result["reason"]
    loaded = load_artifact_model(read_artifact(tmp_path / "runs" / "flop-budget" / "dev" / "g" / "artifact.golf"))
    plain = score_weights("torch", "llama", loaded.config, loaded.weights, Dataset.open(data), 64)
    # measured on the full dev val split with a 60 s wallclock llama/tiny: see bench/results/ttt.json
    assert result["val_bpb"] < plain.val_bpb - 0.02, (plain.val_bpb, result["val_bpb"])


def test_stillness_probe_refuses_a_scorer_that_learns_while_scoring():
    from golfbench.harness.probes import probe_scorer

    class LearnsWhileScoring(Bigram):
        """Honest distributions, but every score() call first moves its table toward what it was shown."""

        def __call__(self, tokens):
            self.table = self.table.copy()
            self.table[tokens[:, :-1] % V, tokens[:, 1:] % V] += 0.5  # counts the realized bigrams ...
            self.table -= np.log(np.exp(self.table).sum(1, keepdims=True))  # ... renormalized: still a distribution
            return super().__call__(tokens)

    tokens = np.random.default_rng(3).integers(0, V, size=2_000)
    assert probe_scorer(Bigram(), tokens, 128, V)["worst_rescore_drift"] == 0.0
    with pytest.raises(ProbeFailure, match="reports NLL|scoring the same windows twice"):
        probe_scorer(LearnsWhileScoring(), tokens, 128, V)

    class LearnsAfterScoring(Bigram):
        """Scores honestly, then trains on the windows inside score(): NLL = -log p holds on every call, so only
        stillness sees the adaptation the harness neither ordered nor counted."""

        def __call__(self, tokens):
            nll = super().__call__(tokens)
            self.table = self.table.copy()
            self.table[tokens[:, :-1] % V, tokens[:, 1:] % V] += 0.5
            self.table -= np.log(np.exp(self.table).sum(1, keepdims=True))
            return nll

    with pytest.raises(ProbeFailure, match="scoring the same windows twice changed an NLL"):
        probe_scorer(LearnsAfterScoring(), tokens, 128, V)


def test_leaderboard_never_pools_adapted_and_plain_runs_and_verify_checks_the_rule(tmp_path):
    import json

    from test_leaderboard import write_run

    from golfbench.harness.leaderboard import collect, to_markdown
    from golfbench.harness.verify import verify_run

    runs = tmp_path / "runs"
    for s in range(2):
        write_run(runs, f"plain-s{s}", track="wallclock-10min", seed=s, bpb=2.0 + s / 100)
        d = write_run(runs, f"ttt-s{s}", track="wallclock-10min", seed=s, bpb=1.9 + s / 100)
        res = json.loads((d / "result.json").read_text())
        (d / "result.json").write_text(json.dumps({**res, "adapt_recipe": "sgd"}))
        run = json.loads((d / "run.json").read_text())
        run["spec"] = {**run.get("spec", {}), "adapt": "sgd"}
        (d / "run.json").write_text(json.dumps(run))
    board = collect(runs).boards[0]
    assert [(e.adapt, len(e.runs)) for e in board.entries] == [("sgd", 2), ("none", 2)]
    assert "llama/tiny + TTT sgd" in to_markdown(collect(runs))
    # the same claim on a track whose rule is "none" fails verification; a result that disagrees with run.json too
    bad = write_run(runs, "fixed-ttt", seed=0, bpb=1.5)
    res = json.loads((bad / "result.json").read_text())
    (bad / "result.json").write_text(json.dumps({**res, "adapt_recipe": "sgd"}))
    verdict = verify_run(bad, rescore=False, check_data=False)
    assert any(f.startswith("adaptation: result.json says the score adapted with 'sgd'") for f in verdict.failures)
    run = json.loads((bad / "run.json").read_text())
    (bad / "run.json").write_text(json.dumps({**run, "spec": {**run.get("spec", {}), "adapt": "sgd"}}))
    verdict = verify_run(bad, rescore=False, check_data=False)
    assert [f for f in verdict.failures if f.startswith("adaptation")] == [
        "adaptation-rule: the score adapted with 'sgd' but track 'fixed-data' allows eval_adaptation 'none'"
    ]


@pytest.mark.slow  # two torch processes (gloo) train, then each adapts on its own replica
def test_a_two_process_run_adapts_and_scores_as_one_process_does(shakespeare_dir, tmp_path):
    import json

    from golf_helpers import golf_ok, small_dataset

    from golfbench.harness.data.dataset import Dataset
    from golfbench.harness.models import get_spec

    data = small_dataset(shakespeare_dir, tmp_path / "ds", train_tokens=24_000, val_tokens=9_000)
    cfg = get_spec("llama").config("tiny", SMALL)
    fpt = get_spec("llama").flops_per_token(cfg)["total"]
    adapted = adapt_token_count(Dataset.open(data).val_tokens(), 64, 64, get_recipe("sgd"))
    assert adapted > 0  # 8,999 targets: two chunks of 4,096 are trained on, the last is not
    budget = adapted * fpt + 2.5 * 4096 * fpt  # the adaptation's reserve plus two training steps
    sets = [a for k, v in SMALL.items() for a in ("--set", f"{k}={v}")]
    res = golf_ok(
        "run", "--track", "flop-budget", "--scale", "dev", "--data", data, "--out", tmp_path / "runs",
        "--budget", f"{budget:.17g}", "--adapt", "sgd", "--no-prequant", "--val-points", "0", "--eval-stride", "64",
        "--nproc-per-node", "2", "--run-id", "two", *sets,
    )  # fmt: skip
    result = json.loads(res.stdout.splitlines()[-1])
    assert result["status"] == "ok" and result["world_size"] == 2 and result["steps"] == 2
    assert result["adapt_tokens"] == adapted and result["replicas_identical"] is True
    artifact = tmp_path / "runs" / "flop-budget" / "dev" / "two" / "artifact.golf"
    alone = json.loads(golf_ok("eval", artifact, "--data", data, "--adapt", "sgd", "--stride", "64", "--json").stdout)
    assert alone["val_bpb"] == result["val_bpb"]  # one process alone, the same recipe: the same number, bit for bit
