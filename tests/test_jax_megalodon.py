"""The JAX Megalodon against the float64 numpy statement of docs/models.md (tests/reference_megalodon.py),
plus the backend contract on it: training, warm-up reset, checkpoints, scorer. CPU, fp32, tiny configs."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402
import reference_megalodon as ref  # noqa: E402

from golfbench.backends.jax import cema as jcema  # noqa: E402
from golfbench.backends.jax import megalodon as jm  # noqa: E402
from golfbench.backends.jax.backend import BACKEND  # noqa: E402
from golfbench.backends.jax.runtime import abstract_model, make_apply, model_shapes  # noqa: E402
from golfbench.backends.jax.timestep_norm import timestep_norm  # noqa: E402
from golfbench.harness.init import init_weights  # noqa: E402
from golfbench.harness.models import get_spec  # noqa: E402

SPEC = get_spec("megalodon")
# Muon's share of a layer, written out here independently of harness/models.py's declaration
MUON_SUFFIXES = (
    "wz.weight",
    "wv.weight",
    "wr.weight",
    "wh1.weight",
    "wh2.weight",
    "ffn.w1.weight",
    "ffn.w2.weight",
    "ffn.w3.weight",
)


def cema_params(D: int, N: int, rng) -> dict[str, np.ndarray]:
    p = dict(
        alpha=rng.normal(0, 1, (D, N)),
        delta=rng.normal(0, 1, (D, N)),
        theta=rng.normal(0, 1, D),
        gamma=rng.normal(0, 1, (D, N, 2)),
        omega=rng.normal(0, 0.5, D),
    )
    p["alpha"][0] = p["delta"][0] = -4.0  # |q| ~ 0.9997 on channel 0: a long kernel that must not wrap around
    return {k: v.astype(np.float32) for k, v in p.items()}


# ---------------------------------------------------------------------------------------------------------
# the pieces


@pytest.mark.parametrize("T", [64, 100, 257])  # a power of two, and two lengths that are not
def test_cema_fft_equals_the_sequential_complex_recurrence(T):
    rng = np.random.default_rng(T)
    D, N = 6, 4
    p = cema_params(D, N, rng)
    x = rng.normal(0, 1, (2, T, D)).astype(np.float32)
    got = jcema.cema(jnp.asarray(x), *(jnp.asarray(v) for v in p.values()))
    assert got.dtype == jnp.float32
    for b in range(2):
        assert ref.rel_err(got[b], ref.cema_sequential(x[b], **p)) < 1e-4


def test_cema_kernel_is_the_impulse_response():
    # K[j] is what the recurrence emits j steps after a unit impulse (minus the omega skip at j = 0).
    rng = np.random.default_rng(7)
    p = cema_params(3, 5, rng)
    T = 40
    impulse = np.zeros((T, 3), np.float32)
    impulse[0] = 1.0
    want = ref.cema_sequential(impulse, **p) - p["omega"] * impulse
    got = jcema.cema_kernel(*(jnp.asarray(p[k]) for k in ("alpha", "delta", "theta", "gamma")), T)
    assert ref.rel_err(np.asarray(got).T, want) < 1e-5


def test_timestep_norm_equals_direct_cumulative_statistics():
    rng = np.random.default_rng(1)
    T, D, G = 50, 16, 4
    x = (3.0 + 2.0 * rng.normal(0, 1, (2, T, D))).astype(np.float32)  # an offset: naive E[x^2]-E[x]^2 loses digits
    w, b = rng.normal(0, 0.5, D).astype(np.float32), rng.normal(0, 0.5, D).astype(np.float32)
    got = timestep_norm(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), G, 1e-5)
    for i in range(2):
        assert ref.rel_err(got[i], ref.timestep_norm_direct(x[i], w, b, G, 1e-5)) < 1e-4


def _attention(q, k, v, C=8):
    return np.asarray(jm.chunked_attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), C, 10000.0, jnp.float32))


@pytest.mark.parametrize("T", [24, 20, 6])  # whole chunks, a partial last chunk, a single short chunk
def test_chunked_attention_matches_reference(T):
    rng = np.random.default_rng(T)
    H, dq, dv, C = 2, 6, 4, 8
    q, k, v = rng.normal(0, 1, (T, H, dq)), rng.normal(0, 1, (T, H, dq)), rng.normal(0, 1, (T, H, dv))
    got = _attention(q[None], k[None], v[None], C)[0]
    pos = np.arange(T) % C
    for h in range(H):
        want = ref.chunked_attention(ref.rope(q[:, h], pos, 1e4), ref.rope(k[:, h], pos, 1e4), v[:, h], C)
        assert ref.rel_err(got[:, h], want) < 1e-5


def test_attention_never_crosses_a_chunk_boundary():
    rng = np.random.default_rng(2)
    T, H, C = 32, 2, 8
    q, k, v = (rng.normal(0, 1, (1, T, H, d)) for d in (6, 6, 4))
    base = _attention(q, k, v, C)
    for chunk in (1, 2, 3):
        q2, k2, v2 = q.copy(), k.copy(), v.copy()
        for a in (q2, k2, v2):
            a[:, chunk * C + 3] += 5.0  # one token inside chunk `chunk`
        moved = _attention(q2, k2, v2, C)
        assert np.array_equal(moved[:, : chunk * C], base[:, : chunk * C])  # earlier chunks: bit for bit
        assert np.array_equal(moved[:, (chunk + 1) * C :], base[:, (chunk + 1) * C :])  # later ones too
        assert not np.allclose(moved[:, chunk * C + 3], base[:, chunk * C + 3])


# ---------------------------------------------------------------------------------------------------------
# the whole model


@pytest.mark.parametrize(
    "overrides, T",
    [
        ({}, 24),
        (dict(swiglu=False, tied_embeddings=False), 24),
        (dict(loops=2, num_layers=1), 24),
        (dict(seq_len=8, chunk_size=16), 8),
        ({}, 20),
    ],
    ids=["default", "mlp-untied", "looped", "single-chunk", "partial-last-chunk"],
)
def test_model_nll_matches_numpy_reference(overrides, T):
    config = ref.micro_config(**overrides)
    weights = ref.noisy_weights(config)
    tokens = np.random.default_rng(3).integers(0, config["vocab_size"], (2, T + 1))
    got = BACKEND.scorer("megalodon", config, weights)(tokens)
    assert got.shape == (2, T) and got.dtype == np.float32
    for b in range(2):
        assert ref.rel_err(got[b], ref.nll(weights, config, tokens[b])) < 1e-4


def test_logprobs_are_causal_normalized_and_agree_with_the_nll():
    config = ref.micro_config()
    scorer = BACKEND.scorer("megalodon", config, ref.noisy_weights(config, seed=5))
    T = config["seq_len"]
    tokens = np.random.default_rng(5).integers(0, config["vocab_size"], (2, T + 1))
    every = np.stack([np.zeros(T, np.int64), np.arange(T)], axis=1)  # every position of row 0
    base, base_nll = scorer.logprobs(tokens, every), scorer(tokens)
    assert base.shape == (T, config["vocab_size"]) and base.dtype == np.float32
    assert np.allclose(np.exp(base.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(-base[np.arange(T), tokens[0, 1:]], base_nll[0], rtol=0, atol=1e-5)
    for t in (3, 8, 13, 23):  # inside the first chunk, on a chunk start, mid-chunk, the last input position
        changed = tokens.copy()
        changed[0, t] = (changed[0, t] + 1) % config["vocab_size"]
        out, nll = scorer.logprobs(changed, every), scorer(changed)
        # The FFT mixes every position at round-off level: "unchanged" means within float32 noise.
        assert np.allclose(out[:t], base[:t], rtol=0, atol=1e-5)  # predictions made before seeing token t
        assert np.allclose(nll[0, : t - 1], base_nll[0, : t - 1], rtol=0, atol=1e-5)
        assert not np.allclose(out[t], base[t], atol=1e-3)  # the prediction made after seeing it does move
        assert np.array_equal(nll[1], base_nll[1])  # rows never mix


def test_bf16_compute_stays_close_and_keeps_logits_fp32():
    """The GPU precision policy, exercised on the CPU: bf16 matmuls, fp32 CEMA/norms/softmax/logits."""
    config = ref.micro_config(num_layers=1)
    weights = {k: jnp.asarray(v) for k, v in ref.noisy_weights(config, seed=9).items()}
    idx = jnp.asarray(np.random.default_rng(9).integers(0, config["vocab_size"], (2, config["seq_len"])))
    full = jax.jit(make_apply("megalodon", config, jnp.float32))(weights, idx)
    mixed = jax.jit(make_apply("megalodon", config, jnp.bfloat16))(weights, idx)
    assert mixed.dtype == jnp.float32
    assert ref.rel_err(mixed, full) < 0.05


@pytest.mark.parametrize("preset", ["golf16", "tiny"])
def test_presets_have_canonical_names_shapes_and_counts(preset):
    config = SPEC.config(preset)
    shapes = model_shapes(abstract_model("megalodon", config))  # shape-only: nothing allocated
    assert shapes == SPEC.shapes(config)
    assert sum(int(np.prod(s)) for s in shapes.values()) == SPEC.param_count(config)


def test_muon_takes_exactly_the_block_matrices():
    config = ref.micro_config(tied_embeddings=False)
    state = BACKEND.init("megalodon", config, 0)
    labels = state.trainer.recipe.labels
    muon = {n for n, label in labels.items() if label == "muon"}
    assert muon == {n for n in labels if n.split(".", 2)[-1] in MUON_SUFFIXES}
    assert len(muon) == config["num_layers"] * 8
    assert "embed.weight" not in muon and "lm_head.weight" not in muon and not any(SPEC.is_control(n) for n in muon)


# ---------------------------------------------------------------------------------------------------------
# training through the backend contract


def train_config() -> dict:
    """One layer: the training tests exercise the step, the optimizer and the state, not depth (the reference
    tests above cover that), and a smaller graph compiles twice as fast."""
    return ref.micro_config(num_layers=1)


def _batches(config, n, rows=4, seed=11):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, config["vocab_size"], (rows, config["seq_len"] + 1), dtype=np.int32) for _ in range(n)]


def _losses(state, batches, lr_scale=1.0):
    out = []
    for b in batches:
        state, m = BACKEND.train_step(state, b, lr_scale)
        out.append(float(m["loss"]))
    return state, out


def test_training_starts_from_canonical_init_is_deterministic_and_learns():
    config = train_config()
    batches = _batches(config, 1) * 8  # one batch, repeated: the loss must fall
    state = BACKEND.init("megalodon", config, seed=3)
    init = init_weights(SPEC, config, 3)
    exported = BACKEND.export(state)
    assert set(exported) == set(init) and all(np.array_equal(exported[k], init[k]) for k in init)
    _, first = _losses(state, batches)
    _, second = _losses(BACKEND.init("megalodon", config, seed=3), batches)
    assert first == second  # bit-identical on CPU
    assert first[-1] < first[0] - 0.5
    assert all(np.isfinite(first))


def test_warmup_compiles_then_restores_the_exact_initial_state():
    config = train_config()
    batches = _batches(config, 3)
    _, plain = _losses(BACKEND.init("megalodon", config, seed=1), batches)
    state = BACKEND.warmup(BACKEND.init("megalodon", config, seed=1), _batches(config, 1, seed=99)[0])
    assert state.step == 0
    exported = BACKEND.export(state)
    assert all(np.array_equal(v, init_weights(SPEC, config, 1)[k]) for k, v in exported.items())
    _, after = _losses(state, batches)
    assert after == plain


def test_checkpoint_round_trip_resumes_bit_for_bit(tmp_path):
    config = train_config()
    batches = _batches(config, 4, seed=5)
    _, straight = _losses(BACKEND.init("megalodon", config, seed=2), batches, lr_scale=0.7)
    state, first = _losses(BACKEND.init("megalodon", config, seed=2), batches[:2], lr_scale=0.7)
    path = tmp_path / "ckpt" / "backend"
    BACKEND.save_checkpoint(state, path)
    assert path.exists() and not path.with_name("backend.tmp").exists()
    with np.load(path, allow_pickle=False) as z:  # plain arrays only: no pickle needed to read it
        assert int(z["step"]) == 2
    resumed = BACKEND.load_checkpoint(path, "megalodon", config)
    assert resumed.step == 2
    _, rest = _losses(resumed, batches[2:], lr_scale=0.7)
    assert first + rest == straight


def test_scorer_takes_short_windows_and_exported_weights():
    config = train_config()
    state, _ = _losses(BACKEND.init("megalodon", config, seed=4), _batches(config, 2))
    weights = BACKEND.export(state)
    assert all(v.dtype == np.float32 for v in weights.values())
    scorer = BACKEND.scorer("megalodon", config, weights)
    tokens = np.random.default_rng(6).integers(0, config["vocab_size"], (2, 13))  # T = 12 < seq_len
    assert ref.rel_err(scorer(tokens)[1], ref.nll(weights, config, tokens[1])) < 1e-4


def test_compiler_flops_and_code_files():
    config = train_config()
    state = BACKEND.init("megalodon", config, 0)
    flops = BACKEND.compiler_flops(state, _batches(config, 1)[0])
    assert flops is None or flops > 0
    names = {p.name for p in BACKEND.code_files("megalodon")}
    assert {"megalodon.py", "cema.py", "timestep_norm.py", "layers.py"} <= names
    assert all(p.exists() for p in BACKEND.code_files("megalodon"))
