"""The JAX llama: canonical shapes, the forward against the float64 reference, the scorer contract, the
optimizer recipe, and cross-framework parity with the torch llama (weights exported by one framework give
the same per-token NLLs in the other; the same steps give the same losses). CPU, fp32, small configs."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402
import reference_llama as ref  # noqa: E402

from golfbench.backends.jax import optim  # noqa: E402
from golfbench.backends.jax.backend import BACKEND  # noqa: E402
from golfbench.backends.jax.runtime import abstract_model, model_shapes  # noqa: E402
from golfbench.harness.backend import Backend  # noqa: E402
from golfbench.harness.errors import GolfError  # noqa: E402
from golfbench.harness.init import init_weights  # noqa: E402
from golfbench.harness.models import get_spec  # noqa: E402

SPEC = get_spec("llama")
# odd depth: a decoder block with no skip left to pop; GQA with 2 query heads per kv head
MICRO = dict(vocab_size=64, num_layers=3, model_dim=32, num_heads=4, num_kv_heads=2, seq_len=16)


def micro_config(**extra) -> dict:
    return SPEC.config("tiny", {**MICRO, **extra})


def per_token_rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b) / np.maximum(np.abs(b), 1e-3)).max())


def noisy_init(config: dict, seed: int) -> dict[str, np.ndarray]:
    """Canonical init plus noise: the zero-initialised output projections become non-zero, so every path counts."""
    rng = np.random.default_rng(seed)
    w = init_weights(SPEC, config, seed)
    return {
        k: (v + 0.5 * rng.standard_normal(v.shape) * max(float(np.std(v)), 0.05)).astype(np.float32)
        for k, v in w.items()
    }


def tokens(config: dict, rows: int, seed: int, length: int | None = None) -> np.ndarray:
    T = length or config["seq_len"]
    return np.random.default_rng(seed).integers(0, config["vocab_size"], (rows, T + 1)).astype(np.int32)


def test_backend_contract():
    assert isinstance(BACKEND, Backend)
    assert BACKEND.name == "jax" and BACKEND.models()[:2] == ["llama", "megalodon"]  # then any installed plugin models
    devices = BACKEND.devices()
    assert devices["count"] == len(devices["names"]) >= 1 and devices["kind"] == jax.default_backend()
    assert {p.name for p in BACKEND.code_files("llama")} == {
        "__init__.py",
        "backend.py",
        "runtime.py",
        "optim.py",
        "layers.py",
        "llama.py",
    }


@pytest.mark.parametrize("preset", ["baseline", "tiny"])
def test_names_shapes_and_count(preset):
    config = SPEC.config(preset)
    shapes = model_shapes(abstract_model("llama", config))
    assert shapes == SPEC.shapes(config)
    assert sum(int(np.prod(s)) for s in shapes.values()) == SPEC.param_count(config)
    if preset == "baseline":
        assert len(shapes) == 92 and SPEC.param_count(config) == 17_059_912


@pytest.mark.parametrize("length", [16, 11])  # the full context and a shorter window
def test_forward_matches_float64_reference(length):
    config = micro_config()
    weights = ref.random_weights(SPEC.shapes(config), seed=1)
    batch = tokens(config, 2, seed=1, length=length)
    got = BACKEND.scorer("llama", config, weights)(batch)
    assert got.shape == (2, length) and got.dtype == np.float32
    assert per_token_rel(got, ref.nll(weights, config, batch)) < 1e-5


def test_scorer_is_causal_and_logprobs_agree_with_nll():
    config = micro_config()
    scorer = BACKEND.scorer("llama", config, ref.random_weights(SPEC.shapes(config), seed=2))
    batch = tokens(config, 2, seed=2)
    T = config["seq_len"]
    every = np.stack([np.zeros(T, np.int64), np.arange(T)], axis=1)
    base, nll = scorer.logprobs(batch, every), scorer(batch)
    assert np.allclose(np.exp(base.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(-base[np.arange(T), batch[0, 1:]], nll[0], atol=1e-5)
    for t in (1, 7, 15):
        changed = batch.copy()
        changed[0, t] = (changed[0, t] + 1) % config["vocab_size"]
        out = scorer.logprobs(changed, every)
        assert np.allclose(out[:t], base[:t], rtol=0, atol=1e-6)
        assert not np.allclose(out[t], base[t], atol=1e-4)


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
    with pytest.raises(GolfError, match="loops"):
        BACKEND.init("llama", micro_config(loops=2), seed=0)


def test_optimizer_labels_rates_and_momentum_warmup():
    config = micro_config(muon_momentum_warmup_steps=4)
    recipe = BACKEND.init("llama", config, seed=0).trainer.recipe
    muon = {n for n, label in recipe.labels.items() if label == "muon"}
    assert len(muon) == 6 * config["num_layers"]
    assert all(n.startswith("blocks.") and n.endswith(".weight") for n in muon)
    assert recipe.lrs["tok_emb.weight"] == config["tied_embed_lr"] and recipe.labels["tok_emb.weight"] == "adam"
    assert recipe.labels["skip_weights"] == recipe.labels["blocks.0.resid_mix"] == "adam"
    assert (
        recipe.lrs["skip_weights"] == config["scalar_lr"]
        and recipe.lrs["blocks.0.attn.c_q.weight"] == config["matrix_lr"]
    )
    momentum = optim.llama_momentum(config)
    np.testing.assert_allclose([float(momentum(s)) for s in range(6)], [0.85, 0.875, 0.9, 0.925, 0.95, 0.95], rtol=1e-6)


def test_newton_schulz_orthogonalizes():
    g = jnp.asarray(np.random.default_rng(0).standard_normal((24, 40)), jnp.float32)
    x = optim.orthogonalize(g, 5, jnp.float32)
    s = np.linalg.svd(np.asarray(x), compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.25  # the quintic's fixed band, not exactly 1
    np.testing.assert_allclose(np.asarray(optim.orthogonalize(g.T, 5, jnp.float32)), np.asarray(x).T, atol=1e-6)


def test_training_is_deterministic_and_learns():
    config = micro_config()
    batch = np.tile(np.random.default_rng(0).integers(0, 64, (4, 8)), (1, 3))[:, :17].astype(np.int32)  # periodic

    def run(seed):
        state, losses = BACKEND.init("llama", config, seed=seed), []
        for _ in range(8):
            state, m = BACKEND.train_step(state, batch, 1.0)
            losses.append(float(m["loss"]))
        return losses

    first = run(0)
    assert first == run(0)  # bit-identical on CPU
    assert first != run(1)
    assert first[-1] < first[0] - 1.0


# ---------------------------------------------------------------------------------------------------------
# cross-framework parity with the torch llama


@pytest.fixture(scope="module")
def torch_backend():
    pytest.importorskip("torch")
    from golfbench.harness.backend import get_backend

    try:
        return get_backend("torch")
    except Exception as exc:  # pragma: no cover - depends on the other backend being installed
        pytest.skip(f"torch backend unavailable: {exc}")


def test_same_weights_score_the_same_in_torch_and_jax_on_tiny(torch_backend):
    config = SPEC.config("tiny")
    batch = tokens(config, 2, seed=3)
    weights = noisy_init(config, seed=3)
    nll_torch = torch_backend.scorer("llama", config, weights)(batch)
    nll_jax = BACKEND.scorer("llama", config, weights)(batch)
    assert per_token_rel(nll_jax, nll_torch) < 1e-5


@pytest.mark.parametrize("maker_name", ["torch", "jax"])
def test_exported_weights_score_the_same_in_the_other_framework(torch_backend, maker_name):
    """Weights trained a few steps by one framework and exported by it, scored by both."""
    config = micro_config()
    maker, judge = (torch_backend, BACKEND) if maker_name == "torch" else (BACKEND, torch_backend)
    state = maker.init("llama", config, seed=5)
    for _ in range(3):
        state, _ = maker.train_step(state, tokens(config, 4, seed=4), 1.0)
    exported = maker.export(state)
    assert set(exported) == set(SPEC.shapes(config)) and all(v.dtype == np.float32 for v in exported.values())
    assert np.abs(exported["blocks.0.attn.proj.weight"]).max() > 0  # trained: no zero projections left
    batch = tokens(config, 2, seed=8)
    got, own = judge.scorer("llama", config, exported)(batch), maker.scorer("llama", config, exported)(batch)
    assert per_token_rel(got, own) < 1e-5, f"{maker.name} export scored by {judge.name}"


def test_same_init_and_same_losses_as_torch(torch_backend):
    """Same canonical init, and the optimizer recipe mirrors torch's: a few steps give the same losses."""
    config = micro_config()
    a = torch_backend.export(torch_backend.init("llama", config, seed=6))
    b = BACKEND.export(BACKEND.init("llama", config, seed=6))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    batch = tokens(config, 4, seed=6)
    losses = {}
    for be in (torch_backend, BACKEND):
        state, losses[be.name] = be.init("llama", config, seed=6), []
        for scale in (1.0, 1.0, 0.5, 0.5):
            state, m = be.train_step(state, batch, scale)
            losses[be.name].append(float(m["loss"]))
    np.testing.assert_allclose(losses["jax"], losses["torch"], rtol=1e-4)


def test_blocked_causal_attention_equals_the_full_causal_square():
    import jax
    import jax.numpy as jnp

    from golfbench.backends.jax.llama import blocked_causal_attention

    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.standard_normal((2, 256, 4, 32)), jnp.float32)
    k, v = (jnp.asarray(rng.standard_normal((2, 256, 2, 32)), jnp.float32) for _ in range(2))  # GQA: 2 kv heads
    full = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    for blocks in (2, 4, 8):
        np.testing.assert_allclose(blocked_causal_attention(q, k, v, blocks), full, rtol=1e-5, atol=1e-6)
    # a length the blocks do not divide falls back to the full square
    short = [x[:, :250] for x in (q, k, v)]
    np.testing.assert_allclose(
        blocked_causal_attention(*short), jax.nn.dot_product_attention(*short, is_causal=True), rtol=1e-5, atol=1e-6
    )
