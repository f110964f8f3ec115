"""The torch llama backend: canonical shapes, the forward against the float64 reference, the scorer contract,
training, determinism, warm-up reset, checkpoint resume and export round trip. CPU, small configs, seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference_llama as ref  # noqa: E402  (pytest puts tests/ on sys.path)

from golfbench.backends.torch.backend import BACKEND, TorchScorer  # noqa: E402
from golfbench.backends.torch.llama import GPT  # noqa: E402
from golfbench.backends.torch.muon import Muon, orthogonalize  # noqa: E402
from golfbench.harness.backend import Backend  # noqa: E402
from golfbench.harness.errors import GolfError  # noqa: E402
from golfbench.harness.init import init_weights  # noqa: E402
from golfbench.harness.models import get_spec  # noqa: E402

SPEC = get_spec("llama")
ROOT = Path(__file__).resolve().parents[1]
# odd depth: exercises a decoder block with no skip left to pop; GQA with 2 query heads per kv head
MICRO = dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, seq_len=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared CPU spinning OpenMP workers cost 10x."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def micro_config(**extra) -> dict:
    return SPEC.config("tiny", {**MICRO, **extra})


def repeating_batch(rows: int, length: int, vocab: int, period: int = 8, seed: int = 0) -> np.ndarray:
    """Random tokens that repeat with a fixed period: learnable in a few steps by attending back."""
    rng = np.random.default_rng(seed)
    motif = rng.integers(0, vocab, size=(rows, period))
    return np.tile(motif, (1, length // period + 1))[:, :length].astype(np.int32)


def train_losses(state, batch: np.ndarray, steps: int, lr_scale: float = 1.0) -> list[float]:
    losses = []
    for _ in range(steps):
        state, metrics = BACKEND.train_step(state, batch, lr_scale)
        losses.append(float(metrics["loss"]))
    return losses


def snapshot(state) -> dict[str, np.ndarray]:
    return BACKEND.export(state)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -- structure -----------------------------------------------------------------------------------------------


def test_backend_contract():
    assert isinstance(BACKEND, Backend)
    assert BACKEND.name == "torch" and "llama" in BACKEND.models()
    dev = BACKEND.devices()
    assert dev["kind"] in ("cpu", "cuda") and dev["count"] >= 1 and len(dev["names"]) >= 1
    files = BACKEND.code_files("llama")
    assert {f.name for f in files} == {
        "__init__.py",
        "backend.py",
        "launcher.py",
        "muon.py",
        "optim.py",
        "step.py",
        "llama.py",
    }
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    with pytest.raises(GolfError, match="no model 'nope'"):
        BACKEND.code_files("nope")


def test_baseline_names_shapes_and_count():
    config = SPEC.config("baseline")
    with torch.device("meta"):
        model = GPT(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == SPEC.shapes(config)
    assert len(shapes) == 92
    assert sum(p.numel() for p in model.parameters()) == 17_059_912 == SPEC.param_count(config)


def test_init_uses_canonical_weights_in_fp32():
    config = micro_config()
    state = BACKEND.init("llama", config, seed=3)
    assert all(p.dtype == torch.float32 for p in state.model.parameters())
    assert_same_weights(BACKEND.export(state), init_weights(SPEC, config, 3))


# -- forward and scorer --------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [11, 16, 23])  # shorter than, equal to and longer than seq_len
def test_forward_matches_float64_reference(length):
    config = micro_config()
    weights = ref.random_weights(SPEC.shapes(config), seed=1)
    tokens = np.random.default_rng(2).integers(0, config["vocab_size"], size=(3, length + 1)).astype(np.int32)
    scorer = BACKEND.scorer("llama", config, weights)
    with torch.no_grad():
        logits = scorer.model(torch.from_numpy(tokens[:, :-1].astype(np.int64))).numpy()
    expected = ref.logits(weights, config, tokens[:, :-1])
    assert np.abs(logits - expected).max() / np.abs(expected).max() < 1e-5
    expected_nll = ref.nll(weights, config, tokens)
    assert np.abs(scorer(tokens) - expected_nll).max() / np.abs(expected_nll).max() < 1e-5


def test_scorer_is_causal():
    config = micro_config()
    scorer = BACKEND.scorer("llama", config, ref.random_weights(SPEC.shapes(config), seed=4))
    tokens = np.random.default_rng(5).integers(0, 64, size=(2, 17)).astype(np.int32)
    base = scorer(tokens)
    all_pos = np.array([(r, t) for r in range(2) for t in range(16)])
    base_lp = scorer.logprobs(tokens, all_pos).reshape(2, 16, -1)
    for t in (1, 7, 16):
        changed = tokens.copy()
        changed[:, t] = (changed[:, t] + 1) % 64
        # NLL entry s scores token s+1 from tokens[:s+1]: entries s < t-1 never see token t
        np.testing.assert_array_equal(scorer(changed)[:, : t - 1], base[:, : t - 1])
        lp = scorer.logprobs(changed, all_pos).reshape(2, 16, -1)
        np.testing.assert_array_equal(lp[:, :t], base_lp[:, :t])
        if t < 16:  # and the change is visible from position t on
            assert not np.array_equal(lp[:, t:], base_lp[:, t:])


def test_logprobs_agree_with_nll_and_normalize():
    config = micro_config()
    scorer = BACKEND.scorer("llama", config, ref.random_weights(SPEC.shapes(config), seed=6))
    tokens = np.random.default_rng(7).integers(0, 64, size=(4, 10)).astype(np.int32)
    nll = scorer(tokens)
    assert nll.dtype == np.float32 and nll.shape == (4, 9)
    positions = np.array([[0, 0], [3, 8], [1, 4], [3, 2], [0, 0]])
    lp = scorer.logprobs(tokens, positions)
    assert lp.dtype == np.float32 and lp.shape == (5, 64)
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)).sum(-1), 1.0, atol=1e-5)
    realized = lp[np.arange(5), tokens[positions[:, 0], positions[:, 1] + 1]]
    np.testing.assert_allclose(-realized, nll[positions[:, 0], positions[:, 1]], rtol=1e-6, atol=1e-6)


def test_scorer_chunks_rows_without_changing_results():
    config = micro_config()
    weights = ref.random_weights(SPEC.shapes(config), seed=8)
    tokens = np.random.default_rng(9).integers(0, 64, size=(5, 13)).astype(np.int32)
    whole = BACKEND.scorer("llama", config, weights)
    chunked = TorchScorer(whole.model, 64, torch.device("cpu"), max_tokens=24)  # two rows per forward
    np.testing.assert_allclose(chunked(tokens), whole(tokens), rtol=1e-6, atol=1e-6)


def test_cpu_scorer_forwards_4096_tokens_at_a_time_with_the_same_bits():
    config = micro_config()
    weights = ref.random_weights(SPEC.shapes(config), seed=8)
    tokens = np.random.default_rng(10).integers(0, 64, size=(300, 33)).astype(np.int32)  # 9,600 targets
    default = BACKEND.scorer("llama", config, weights)
    assert default.max_tokens == 4096
    assert [s.stop - s.start for s in default._chunks(300, 32)] == [128, 128, 44]
    one_pass = TorchScorer(default.model, 64, torch.device("cpu"), max_tokens=1 << 20)
    np.testing.assert_array_equal(default(tokens), one_pass(tokens))


def test_scorer_refuses_bad_input():
    config = micro_config()
    weights = ref.random_weights(SPEC.shapes(config), seed=0)
    with pytest.raises(GolfError, match="expects"):
        BACKEND.scorer("llama", config, {**weights, "skip_weights": np.zeros((2, 32), np.float32)})
    scorer = BACKEND.scorer("llama", config, weights)
    with pytest.raises(GolfError, match="vocabulary"):
        scorer(np.full((1, 5), 64, dtype=np.int32))
    with pytest.raises(ValueError, match="positions"):
        scorer.logprobs(np.zeros((1, 5), np.int32), np.array([[0, 4]]))


# -- optimizer -----------------------------------------------------------------------------------------------


def test_newton_schulz_orthogonalizes():
    g = torch.from_numpy(np.random.default_rng(0).standard_normal((24, 40))).float()
    x = orthogonalize(g, steps=5)
    s = torch.linalg.svdvals(x)
    assert x.dtype == torch.float32 and 0.6 < s.min() and s.max() < 1.25  # the quintic's fixed band
    torch.testing.assert_close(orthogonalize(g.T, steps=5), x.T)  # tall matrices iterate on the transpose


def test_optimizer_groups_and_momentum_warmup():
    config = micro_config(muon_momentum_warmup_steps=4)
    state = BACKEND.init("llama", config, seed=0)
    tok, muon, scalars = state.optimizers
    names = {id(p): n for n, p in state.model.named_parameters()}
    muon_names = {names[id(p)] for p in muon.param_groups[0]["params"]}
    assert isinstance(muon, Muon) and all(n.endswith(".weight") and n != "tok_emb.weight" for n in muon_names)
    assert len(muon_names) == 6 * config["num_layers"]
    assert [names[id(p)] for p in tok.param_groups[0]["params"]] == ["tok_emb.weight"]
    assert "skip_weights" in {names[id(p)] for p in scalars.param_groups[0]["params"]}
    batch = repeating_batch(2, 9, 64)
    seen = []
    for _ in range(6):
        BACKEND.train_step(state, batch, 0.5)
        seen.append(muon.param_groups[0]["momentum"])
        assert muon.param_groups[0]["lr"] == 0.5 * config["matrix_lr"]
        assert tok.param_groups[0]["lr"] == 0.5 * config["tied_embed_lr"]
    np.testing.assert_allclose(seen, [0.85, 0.875, 0.9, 0.925, 0.95, 0.95])


# -- training ------------------------------------------------------------------------------------------------


def test_tiny_training_reduces_loss():
    config = SPEC.config("tiny")
    state = BACKEND.init("llama", config, seed=0)
    losses = train_losses(state, repeating_batch(8, 65, config["vocab_size"]), 30)
    assert abs(losses[0] - np.log(config["vocab_size"])) < 0.1  # zero-init projections: uniform start
    assert losses[-1] < 0.3 * losses[0] and all(np.isfinite(losses))


def test_same_seed_same_losses_other_seed_other_losses():
    config = micro_config()
    batch = repeating_batch(4, 17, 64)
    a = train_losses(BACKEND.init("llama", config, seed=11), batch, 5)
    b = train_losses(BACKEND.init("llama", config, seed=11), batch, 5)
    c = train_losses(BACKEND.init("llama", config, seed=12), batch, 5)
    assert a == b
    assert a != c


def test_losses_are_identical_across_processes():
    code = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, 'tests'); import test_torch_llama as t; "
        "s = t.BACKEND.init('llama', t.micro_config(), seed=11); "
        "print([x.hex() for x in t.train_losses(s, t.repeating_batch(4, 17, 64), 3)])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    here = train_losses(BACKEND.init("llama", micro_config(), seed=11), repeating_batch(4, 17, 64), 3)
    assert out.stdout.strip() == str([x.hex() for x in here])


def test_warmup_restores_initial_state_exactly():
    config = micro_config()
    batch = repeating_batch(4, 17, 64)
    state = BACKEND.init("llama", config, seed=5)
    initial = snapshot(state)
    state = BACKEND.warmup(state, repeating_batch(4, 17, 64, seed=99))
    assert state.step == 0
    assert_same_weights(snapshot(state), initial)
    assert all(not opt.state for opt in state.optimizers)
    assert all(p.grad is None for p in state.model.parameters())
    fresh = BACKEND.init("llama", config, seed=5)
    assert train_losses(state, batch, 4) == train_losses(fresh, batch, 4)


def test_checkpoint_resume_is_bit_identical(tmp_path):
    config = micro_config()
    batch_a, batch_b = repeating_batch(4, 17, 64, seed=1), repeating_batch(4, 17, 64, seed=2)
    state = BACKEND.init("llama", config, seed=7)
    train_losses(state, batch_a, 3)
    path = tmp_path / "run" / "ckpt.pt"
    BACKEND.save_checkpoint(state, path)
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temp file left behind
    uninterrupted = train_losses(state, batch_b, 4, lr_scale=0.7)
    resumed = BACKEND.load_checkpoint(path, "llama", config)
    assert resumed.step == 3
    assert train_losses(resumed, batch_b, 4, lr_scale=0.7) == uninterrupted
    assert_same_weights(snapshot(resumed), snapshot(state))
    with pytest.raises(GolfError, match="another config"):
        BACKEND.load_checkpoint(path, "llama", micro_config(model_dim=64))
    with pytest.raises(GolfError, match="does not exist"):
        BACKEND.load_checkpoint(tmp_path / "missing.pt", "llama", config)


def test_export_round_trip_scores_like_the_training_model():
    config = micro_config()
    state = BACKEND.init("llama", config, seed=9)
    train_losses(state, repeating_batch(4, 17, 64), 3)
    weights = BACKEND.export(state)
    assert list(weights) == list(SPEC.shapes(config))
    assert all(w.dtype == np.float32 and w.shape == SPEC.shapes(config)[k] for k, w in weights.items())
    tokens = repeating_batch(3, 17, 64, seed=4)
    state.model.eval()
    with torch.no_grad():
        inputs = torch.from_numpy(tokens.astype(np.int64))
        lp = torch.log_softmax(state.model(inputs[:, :-1]), -1)
        expected = -lp.gather(-1, inputs[:, 1:, None])[..., 0].numpy()
    np.testing.assert_array_equal(BACKEND.scorer("llama", config, weights)(tokens), expected)


def test_compiler_flops_counts_without_touching_state():
    config = SPEC.config("tiny")
    state = BACKEND.init("llama", config, seed=0)
    batch = repeating_batch(2, 257, config["vocab_size"])
    before = snapshot(state)
    flops = BACKEND.compiler_flops(state, batch)
    analytic = SPEC.flops_per_token(config)
    tokens = 2 * 256
    # torch counts attention as full (non-causal) T x T, so it lands between the analytic matmul and 2x total
    assert analytic["matmul"] * tokens < flops < 2 * analytic["total"] * tokens
    assert_same_weights(snapshot(state), before)
    assert state.step == 0 and all(not opt.state for opt in state.optimizers)
    assert all(p.grad is None for p in state.model.parameters())
