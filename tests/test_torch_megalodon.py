"""The torch Megalodon against the float64 numpy statement of docs/models.md (tests/reference_megalodon.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference_megalodon as ref  # noqa: E402

from golfbench.backends.torch import megalodon as tm  # noqa: E402
from golfbench.backends.torch.megalodon_optim import megalodon_optimizers  # noqa: E402
from golfbench.backends.torch.muon import Muon  # noqa: E402
from golfbench.harness.models import get_spec, megalodon_param_count, megalodon_shapes  # noqa: E402

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


def torch_nll(model, tokens: np.ndarray) -> np.ndarray:
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    with torch.no_grad():
        logits = model(tokens[:, :-1])
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none").numpy()


def cema_params(D: int, N: int, rng):
    return dict(
        alpha=rng.normal(0, 1, (D, N)),
        delta=rng.normal(0, 1, (D, N)),
        theta=rng.normal(0, 1, D),
        gamma=rng.normal(0, 1, (D, N, 2)),
        omega=rng.normal(0, 0.5, D),
    )


@pytest.mark.parametrize("T", [64, 100, 257])
def test_cema_fft_matches_sequential_recurrence(T):
    rng = np.random.default_rng(T)
    D, N = 6, 4
    p = cema_params(D, N, rng)
    p["alpha"][0] = p["delta"][0] = -4.0  # |q| close to 1: a long-range kernel that must not wrap around
    x = rng.normal(0, 1, (2, T, D))
    got = tm.cema(torch.tensor(x, dtype=torch.float32), *(torch.tensor(v, dtype=torch.float32) for v in p.values()))
    assert got.dtype == torch.float32
    for b in range(2):
        assert ref.rel_err(got[b].numpy(), ref.cema_sequential(x[b], **p)) < 1e-4


def test_cema_gradients_match_a_direct_convolution():
    """The FFT path's backward (eager, outside compile) equals autograd through a plain Toeplitz convolution."""
    rng = np.random.default_rng(7)
    D, N, T = 5, 3, 40
    leaves = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in cema_params(D, N, rng).values()]
    x = torch.tensor(rng.normal(0, 1, (2, T, D)), dtype=torch.float64, requires_grad=True)
    probe = torch.tensor(rng.normal(0, 1, (2, T, D)), dtype=torch.float64)

    def direct(x, alpha, delta, theta, gamma, omega):
        K = tm.cema_kernel(alpha, delta, theta, gamma, T).double()  # (D, T)
        lag = torch.arange(T)[:, None] - torch.arange(T)[None, :]  # t - s
        toeplitz = torch.where(lag >= 0, K[:, lag.clamp_min(0)], 0.0)  # (D, T, T)
        return torch.einsum("dts,bsd->btd", toeplitz, x) + omega * x

    grads = []
    for fn in (tm.cema, direct):
        out = fn(x, *leaves)
        grads.append(torch.autograd.grad((out * probe).sum(), [x, *leaves]))
    for fft_grad, direct_grad in zip(*grads):
        assert ref.rel_err(fft_grad.numpy(), direct_grad.numpy()) < 1e-4


def test_timestep_norm_matches_direct_statistics():
    rng = np.random.default_rng(1)
    T, D, G = 50, 16, 4
    x = 3.0 + 2.0 * rng.normal(0, 1, (2, T, D))  # an offset, so a naive E[x^2] - E[x]^2 would lose digits
    w, b = rng.normal(0, 0.5, D), rng.normal(0, 0.5, D)
    got = tm.timestep_norm(*(torch.tensor(v, dtype=torch.float32) for v in (x, w, b)), G, 1e-5)
    for i in range(2):
        assert ref.rel_err(got[i].numpy(), ref.timestep_norm_direct(x[i], w, b, G, 1e-5)) < 1e-4


@pytest.mark.parametrize("T", [24, 20, 6])  # whole chunks, a partial last chunk, a single short chunk
def test_chunked_attention_matches_reference(T):
    rng = np.random.default_rng(T)
    H, dq, dv, C, base = 2, 6, 4, 8, 10000.0
    q, k, v = rng.normal(0, 1, (T, H, dq)), rng.normal(0, 1, (T, H, dq)), rng.normal(0, 1, (T, H, dv))
    got = tm.chunked_attention(*(torch.tensor(a[None], dtype=torch.float32) for a in (q, k, v)), C, base)[0].numpy()
    pos = np.arange(T) % C
    for h in range(H):
        want = ref.chunked_attention(ref.rope(q[:, h], pos, base), ref.rope(k[:, h], pos, base), v[:, h], C)
        assert ref.rel_err(got[:, h], want) < 1e-5


def test_attention_never_crosses_a_chunk_boundary():
    rng = np.random.default_rng(2)
    T, H, C = 24, 2, 8
    q, k, v = (torch.tensor(rng.normal(0, 1, (1, T, H, d)), dtype=torch.float32) for d in (6, 6, 4))
    base = tm.chunked_attention(q, k, v, C, 10000.0)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    for t in (q2, k2, v2):
        t[:, C : 2 * C] += 5.0  # rewrite everything in the middle chunk
    moved = tm.chunked_attention(q2, k2, v2, C, 10000.0)
    assert torch.equal(moved[:, :C], base[:, :C]) and torch.equal(moved[:, 2 * C :], base[:, 2 * C :])
    assert not torch.allclose(moved[:, C : 2 * C], base[:, C : 2 * C])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        dict(swiglu=False, tied_embeddings=False),
        dict(loops=2, num_layers=1),
        dict(seq_len=8, chunk_size=16),  # T <= C: one chunk, pos = t
    ],
    ids=["default", "mlp-untied", "looped", "single-chunk"],
)
def test_model_nll_matches_numpy_reference(overrides):
    config = ref.micro_config(**overrides)
    weights = ref.noisy_weights(config)
    model = tm.build_megalodon(config, weights)
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, config["vocab_size"], (2, config["seq_len"] + 1))
    got = torch_nll(model, tokens)
    for b in range(2):
        assert ref.rel_err(got[b], ref.nll(weights, config, tokens[b])) < 1e-4


def test_model_nll_matches_reference_on_a_partial_last_chunk():
    config = ref.micro_config()
    weights = ref.noisy_weights(config, seed=4)
    tokens = np.random.default_rng(4).integers(0, config["vocab_size"], (1, 21))  # T = 20, chunks 8 + 8 + 4
    assert (
        ref.rel_err(torch_nll(tm.build_megalodon(config, weights), tokens)[0], ref.nll(weights, config, tokens[0]))
        < 1e-4
    )


def test_changing_a_token_never_changes_earlier_predictions():
    config = ref.micro_config()
    model = tm.build_megalodon(config, ref.noisy_weights(config, seed=5))
    rng = np.random.default_rng(5)
    tokens = torch.as_tensor(rng.integers(0, config["vocab_size"], (1, config["seq_len"])))
    with torch.no_grad():
        base = model(tokens)
        for t in (3, 8, 13, 23):  # inside the first chunk, on chunk starts, mid-chunk, the last position
            changed = tokens.clone()
            changed[0, t] = (changed[0, t] + 1) % config["vocab_size"]
            out = model(changed)
            # The FFT mixes every position at round-off level, so "unchanged" means within float32 noise.
            assert torch.allclose(out[:, :t], base[:, :t], rtol=0, atol=1e-5 * base.abs().max())
            assert not torch.allclose(out[:, t], base[:, t], atol=1e-3)


@pytest.mark.parametrize("preset", ["golf16", "tiny"])
def test_presets_have_canonical_names_shapes_and_counts(preset):
    config = SPEC.config(preset)
    model = tm.Megalodon(config)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == megalodon_shapes(config)
    assert sum(p.numel() for p in model.parameters()) == megalodon_param_count(config)
    assert all(not p.is_complex() for p in model.parameters())


def test_muon_takes_exactly_the_block_matrices():
    config = ref.micro_config(tied_embeddings=False)
    model = tm.Megalodon(config)
    names = [n for n, _ in model.named_parameters()]
    by_id = {id(p): n for n, p in model.named_parameters()}
    muon = {
        by_id[id(p)]
        for opt in megalodon_optimizers(model, config)
        if isinstance(opt, Muon)
        for p in opt.param_groups[0]["params"]
    }
    assert muon == {n for n in names if n.split(".", 2)[-1] in MUON_SUFFIXES}
    assert len(muon) == config["num_layers"] * 8
    assert not any(SPEC.is_control(n) for n in muon) and "embed.weight" not in muon and "lm_head.weight" not in muon


def test_autocast_keeps_cema_and_norms_in_fp32():
    config = ref.micro_config()
    model = tm.build_megalodon(config, ref.noisy_weights(config, seed=6))
    tokens = torch.as_tensor(np.random.default_rng(6).integers(0, config["vocab_size"], (2, config["seq_len"])))
    with torch.no_grad():
        full = model(tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x = model.embed(tokens)
            layer = model.layers[0]
            xt = tm.timestep_norm(x, layer.tsnorm.weight, layer.tsnorm.bias, config["norm_num_groups"], 1e-5)
            assert xt.dtype == torch.float32 and layer.cema(xt).dtype == torch.float32
            mixed = model(tokens)
    assert mixed.dtype == torch.float32
    assert ref.rel_err(mixed.numpy(), full.numpy()) < 0.05


# ----------------------------------------------------------------------------------------------------------
# Through the torch backend


def backend():
    from golfbench.harness.backend import get_backend

    return get_backend("torch")


def structured_batch(config: dict, rows: int, length: int, seed: int) -> np.ndarray:
    """Arithmetic progressions mod V with a per-row start and stride: learnable, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    start, stride = rng.integers(0, config["vocab_size"], (rows, 1)), rng.integers(1, 4, (rows, 1))
    return ((start + stride * np.arange(length + 1)) % config["vocab_size"]).astype(np.int32)


def test_backend_lists_megalodon_and_its_code_files():
    be = backend()
    assert "megalodon" in be.models()
    files = be.code_files("megalodon")
    assert {f.name for f in files} >= {"megalodon.py", "megalodon_optim.py", "muon.py"} and all(
        f.exists() for f in files
    )


def test_training_tiny_reduces_loss():
    config = SPEC.config("tiny", dict(seq_len=64))  # the tiny model itself, on short rows to stay fast
    be = backend()
    state = be.init("megalodon", config, seed=0)
    batch = structured_batch(config, 4, config["seq_len"], seed=0)
    losses = []
    for _ in range(6):
        state, metrics = be.train_step(state, batch, 1.0)
        losses.append(float(metrics["loss"]))
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0], losses


def test_same_seed_gives_same_losses():
    config = ref.micro_config()
    batch = structured_batch(config, 4, config["seq_len"], seed=1)

    def run():
        be = backend()
        state, losses = be.init("megalodon", config, seed=3), []
        for _ in range(3):
            state, metrics = be.train_step(state, batch, 0.5)
            losses.append(float(metrics["loss"]))
        return losses

    assert run() == run()


def test_export_scorer_and_artifact_round_trip():
    from golfbench.harness import artifact
    from golfbench.harness.scoring import load_artifact_model

    config = ref.micro_config()
    be = backend()
    state = be.init("megalodon", config, seed=2)
    batch = structured_batch(config, 2, config["seq_len"], seed=2)
    state, _ = be.train_step(state, batch, 1.0)
    weights = be.export(state)
    assert {k: v.shape for k, v in weights.items()} == megalodon_shapes(config)
    assert all(v.dtype == np.float32 for v in weights.values())

    # The fp32 scorer on the exported weights is the numpy reference on the same weights.
    scorer = be.scorer("megalodon", config, weights)
    nll = scorer(batch)
    assert nll.shape == (2, config["seq_len"]) and nll.dtype == np.float32
    assert ref.rel_err(nll[1], ref.nll(weights, config, batch[1])) < 1e-4
    lp = scorer.logprobs(batch, np.array([[0, 0], [1, 17]]))
    assert np.allclose(np.exp(lp).sum(-1), 1.0, atol=1e-5)
    assert np.allclose(-lp[1, batch[1, 18]], nll[1, 17], rtol=1e-5)

    # Through the artifact: control tensors come back bit-exact, the rest int8/fp16-close.
    blob = artifact.pack(weights, SPEC.is_control, {"model": "megalodon", "preset": "tiny", "config": config})
    loaded = load_artifact_model(blob)
    assert all(np.array_equal(loaded.weights[k], v) for k, v in weights.items() if SPEC.is_control(k))
    round_tripped = be.scorer("megalodon", loaded.config, loaded.weights)(batch)
    assert abs(float(round_tripped.mean()) / float(nll.mean()) - 1) < 0.02


def test_checkpoint_resume_continues_the_same_run(tmp_path):
    config = ref.micro_config()
    be = backend()
    batches = [structured_batch(config, 4, config["seq_len"], seed=s) for s in (10, 11)]
    state = be.init("megalodon", config, seed=4)
    state, _ = be.train_step(state, batches[0], 1.0)
    be.save_checkpoint(state, tmp_path / "ckpt.pt")
    _, straight = be.train_step(state, batches[1], 1.0)
    resumed = be.load_checkpoint(tmp_path / "ckpt.pt", "megalodon", config)
    _, again = be.train_step(resumed, batches[1], 1.0)
    assert float(again["loss"]) == float(straight["loss"])
