"""No compile inside a timed region (issue 19.3): with compilation forced on the CPU (``GOLF_TORCH_COMPILE``,
backends/torch/backend.py `compiled`), every torch.compile / jax.jit compile of a scoring pass happens before its
eval clock starts (evaluate.warm_scorer, adapter.warm_adapt), and no training step recompiles (a fixed-data run
whose last batch is short).

Compiles are counted with the frameworks' own hooks: torch._dynamo's compile-start callback (every frame dynamo
compiles, and lazily compiled backward graphs) and jax.monitoring's compile duration events (tracing, lowering,
backend compile), each stamped with time.perf_counter(). A pass's clock is [end - eval_seconds, end], ``end``
read right after the pass returns (the clock stops inside it, so the window starts a hair late, never early: a
compile just before the clock is never counted in it). ``GOLF_TORCH_COMPILE=eager`` makes dynamo trace, guard
and recompile exactly as with inductor, without generating code, so the tests take seconds.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from golfbench.harness.adapt import AdaptRecipe  # noqa: E402
from golfbench.harness.data.dataset import Dataset  # noqa: E402
from golfbench.harness.init import init_weights  # noqa: E402
from golfbench.harness.models import get_spec  # noqa: E402
from golfbench.harness.scoring import score_weights, score_weights_adaptive  # noqa: E402

SMALL = {"num_layers": 1, "seq_len": 64}
STRIDE = 32  # 1,500 val tokens: 46 windows of 64, sent as batches of 32 and 14 windows


class Stamps:
    """Start times (time.perf_counter, seconds) of the compiles a framework reported."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def torch_start(self, args) -> None:
        self.times.append(time.perf_counter())

    def jax_duration(self, event: str, seconds: float, **_) -> None:
        if event.startswith("/jax/core/compile/"):
            self.times.append(time.perf_counter() - seconds)

    def within(self, lo: float, hi: float) -> int:
        return sum(lo <= t <= hi for t in self.times)


@pytest.fixture
def torch_compiles(monkeypatch):
    """Compiles of a fresh dynamo (no graph cached by another test), with GOLF_TORCH_COMPILE=eager."""
    monkeypatch.setenv("GOLF_TORCH_COMPILE", "eager")
    torch._dynamo.reset()
    stamps = Stamps()
    torch._dynamo.callback_handler.register_start_callback(stamps.torch_start)
    yield stamps
    torch._dynamo.callback_handler.remove_start_callback(stamps.torch_start)
    torch._dynamo.reset()


@pytest.fixture
def jax_compiles():
    jax = pytest.importorskip("jax")
    jax.clear_caches()
    stamps = Stamps()
    jax.monitoring.register_event_duration_secs_listener(stamps.jax_duration)
    yield stamps
    jax.monitoring.unregister_event_duration_listener(stamps.jax_duration)


@pytest.fixture(scope="module")
def small_ds(shakespeare_dir, tmp_path_factory):
    from golf_helpers import small_dataset

    return Dataset.open(small_dataset(shakespeare_dir, tmp_path_factory.mktemp("clock") / "ds", val_tokens=1_500))


def _model(config=SMALL):
    config = get_spec("llama").config("tiny", config)
    return config, init_weights(get_spec("llama"), config, 0)


def _clocked(call):
    """(what ``call()`` returned, (clock start, clock stop)) for a call returning an EvalResult or (EvalResult, _)."""
    out = call()
    end = time.perf_counter()
    res = out[0] if isinstance(out, tuple) else out
    return out, (end - res.eval_seconds, end)


def test_the_switch_compiles_torch_on_the_cpu_and_stays_eager_by_default(monkeypatch):
    from golfbench.backends.torch.backend import compiled
    from golfbench.harness.errors import GolfError

    cpu, fn = torch.device("cpu"), torch.nn.Linear(2, 2)
    monkeypatch.delenv("GOLF_TORCH_COMPILE", raising=False)
    assert compiled(fn, cpu) is fn  # the default CPU path is the plain module: CPU numbers cannot move
    monkeypatch.setenv("GOLF_TORCH_COMPILE", "0")
    assert compiled(fn, torch.device("cuda")) is fn
    for mode in ("1", "eager"):
        monkeypatch.setenv("GOLF_TORCH_COMPILE", mode)
        assert compiled(fn, cpu) is not fn and compiled(fn, cpu)._orig_mod is fn
    monkeypatch.setenv("GOLF_TORCH_COMPILE", "warp-speed")
    with pytest.raises(GolfError, match="GOLF_TORCH_COMPILE=warp-speed is no torch.compile backend"):
        compiled(fn, cpu)


def test_a_bad_compile_setting_is_refused_before_anything_is_written_and_a_good_one_is_recorded(
    small_ds, monkeypatch, tmp_path
):
    """`GOLF_TORCH_COMPILE` changes a run's numbers (round-off), so run.json records it; a value that is no
    torch.compile backend is refused in the run's validation, before its directory exists."""
    from golfbench.harness import runner
    from golfbench.harness.errors import GolfError
    from golfbench.harness.records import read_json

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    overrides = {"num_layers": 1, "seq_len": 64, "train_batch_tokens": 1_024}

    def spec(run_id):
        return runner.RunSpec(
            "fixed-data", "dev", "torch", "llama", "tiny", data=str(small_ds.path), budget=1_024,
            out=str(tmp_path / "runs"), run_id=run_id, eval_stride=64, val_points=0, overrides=overrides,
        )  # fmt: skip

    monkeypatch.setenv("GOLF_TORCH_COMPILE", "warp-speed")
    with pytest.raises(GolfError, match="GOLF_TORCH_COMPILE=warp-speed is no torch.compile backend"):
        runner.execute(spec("bad"))
    assert not (tmp_path / "runs" / "fixed-data" / "dev" / "bad").exists()
    monkeypatch.setenv("GOLF_TORCH_COMPILE", "0")
    runner.execute(spec("off"))
    manifest = read_json(tmp_path / "runs" / "fixed-data" / "dev" / "off" / "run.json", "run")
    assert manifest["settings"] == {"GOLF_TORCH_COMPILE": "0"}


def test_torch_scoring_compiles_nothing_inside_the_eval_clock(small_ds, torch_compiles):
    """The evaluator on its own (as the val curve calls it: no probes before it to compile anything): 46 windows
    in batches of 32 and 14; before this change both shapes compiled inside the clock."""
    from golfbench.harness.backend import get_backend
    from golfbench.harness.evaluate import evaluate

    config, weights = _model()
    scorer = get_backend("torch").scorer("llama", config, weights)
    assert scorer._forward is not scorer.model  # compiled on the CPU: the switch is on
    tokens, accounting = small_ds.val_tokens(), small_ds.accounting()
    res, (start, stop) = _clocked(lambda: evaluate(scorer, tokens, accounting, context=64, stride=STRIDE))
    assert res.val_tokens == 1_499
    assert torch_compiles.within(0.0, start) >= 2, torch_compiles.times  # batch shapes 32 and 14, warmed
    assert torch_compiles.within(start, stop) == 0


def test_torch_adaptive_scoring_compiles_nothing_inside_the_eval_clock(small_ds, torch_compiles):
    """Score-first adaptation, chunks of ~256 targets: scoring batches of 7 and 8 windows (the torch update runs
    eagerly); before this change the scoring shapes compiled inside the clock."""
    from golfbench.harness.adapt import evaluate_adaptive
    from golfbench.harness.backend import get_backend

    config, weights = _model()
    recipe = AdaptRecipe("t", chunk_tokens=256, steps=1, lr=0.05)
    adapter = get_backend("torch").adapter("llama", config, weights, recipe=recipe)
    tokens, accounting = small_ds.val_tokens(), small_ds.accounting()
    (res, stats), (start, stop) = _clocked(
        lambda: evaluate_adaptive(adapter, tokens, accounting, 64, STRIDE, recipe, 1.0, batch_windows=8)
    )
    assert stats.adapt_chunks > 2 and stats.adapt_tokens > 0 and res.val_tokens == 1_499
    assert torch_compiles.within(0.0, start) >= 2, torch_compiles.times
    assert torch_compiles.within(start, stop) == 0


def test_golf_eval_path_with_torch_compiles_nothing_inside_the_eval_clock(small_ds, torch_compiles):
    """`golf eval`'s path (scoring.score_weights): probes first (4 rows, 1 row), then the pass."""
    config, weights = _model()
    res, (start, stop) = _clocked(lambda: score_weights("torch", "llama", config, weights, small_ds, STRIDE))
    assert res.val_tokens == 1_499
    assert torch_compiles.within(0.0, start) >= 2, torch_compiles.times
    assert torch_compiles.within(start, stop) == 0


def test_jax_scoring_compiles_nothing_inside_the_eval_clock(small_ds, jax_compiles):
    config, weights = _model({"num_layers": 1, "seq_len": 48})  # a shape no other test compiles
    res, (start, stop) = _clocked(lambda: score_weights("jax", "llama", config, weights, small_ds, STRIDE))
    assert res.val_tokens == 1_499
    assert jax_compiles.within(0.0, start) >= 3, jax_compiles.times
    assert jax_compiles.within(start, stop) == 0


def test_jax_adaptive_scoring_compiles_nothing_inside_the_eval_clock(small_ds, jax_compiles):
    config, weights = _model({"num_layers": 1, "seq_len": 40})
    recipe = AdaptRecipe("t", chunk_tokens=200, steps=1, lr=0.05)
    (res, stats), (start, stop) = _clocked(
        lambda: score_weights_adaptive("jax", "llama", config, weights, small_ds, STRIDE, recipe)
    )
    assert stats.adapt_chunks > 2 and res.val_tokens == 1_499
    assert jax_compiles.within(0.0, start) >= 3, jax_compiles.times
    assert jax_compiles.within(start, stop) == 0


def test_a_fixed_data_run_with_a_short_last_batch_compiles_no_timed_step(
    small_ds, torch_compiles, monkeypatch, tmp_path
):
    """Budget 2.25 batches of a 1-layer llama/tiny (16 rows of 64): steps of 16, 16 and 4 rows. A step's timed
    region holds its train_step call (runner.execute times t0..clock() around it); the loop's steps are the last
    3 calls (warm-up may call train_step too). Needs the backend to give a short batch the full batch's shape."""
    from golfbench.harness import runner
    from golfbench.harness.backend import get_backend

    backend = get_backend("torch")
    calls: list[tuple[float, float, int]] = []
    step = backend.train_step

    def timed_step(state, batch, lr_scale):
        t0 = time.perf_counter()
        try:
            return step(state, batch, lr_scale)
        finally:
            calls.append((t0, time.perf_counter(), getattr(batch, "real_rows", None) or len(batch)))

    def eager_scorer(*args, **kw):  # the final score is not under test here: spare its compiles
        with monkeypatch.context() as m:
            m.setenv("GOLF_TORCH_COMPILE", "0")
            return plain_scorer(*args, **kw)

    plain_scorer = backend.scorer
    monkeypatch.setattr(backend, "train_step", timed_step)
    monkeypatch.setattr(backend, "scorer", eager_scorer)
    overrides = {"num_layers": 1, "seq_len": 64, "train_batch_tokens": 1_024}  # batches of 16 rows of 64
    spec = runner.RunSpec(
        "fixed-data", "dev", "torch", "llama", "tiny", data=str(small_ds.path), budget=2.25 * 1_024,
        out=str(tmp_path / "runs"), eval_stride=64, val_points=0, overrides=overrides,
    )  # fmt: skip
    result = runner.execute(spec)
    assert result["status"] == "ok" and result["steps"] == 3
    loop = calls[-3:]
    assert [rows for *_, rows in loop] == [16, 16, 4]
    assert torch_compiles.within(0.0, loop[0][0]) >= 1  # the training graph compiled during warm-up
    in_steps = [torch_compiles.within(t0, t1) for t0, t1, _ in loop]
    assert in_steps == [0, 0, 0], f"compiles inside timed steps (16, 16, 4 rows): {in_steps}"
