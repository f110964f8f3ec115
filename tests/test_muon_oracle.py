"""An independent float64 oracle for one and two Muon steps, against both backends' Muon (CPU, fp32).

The oracle is written from the math of Muon (reference/parameter-golf.md §5, after modded-nanogpt), not from
either backend:
- momentum buffer b_t = mu_t b_{t-1} + g_t (b_0 = 0); Nesterov direction d_t = g_t + mu_t b_t;
- X_0 = d_t / (||d_t||_F + 1e-7); five quintic Newton-Schulz steps X <- a X + b (X X^T) X + c (X X^T)^2 X with
  (a, b, c) = (3.4445, -4.7750, 2.0315). That polynomial maps X = U diag(s) V^T to U diag(p(s)) V^T with
  p(s) = a s + b s^3 + c s^5, so the oracle applies p five times to the singular values of an SVD;
- the update is scaled by sqrt(max(1, rows / cols)) of the (out, in) matrix and subtracted times lr.

The backends compute the iteration in fp32 on the smaller Gram matrix (CPU; bf16 only on GPUs), so they agree
with the float64 oracle to fp32 rounding. Measured max |update - oracle| / max |oracle update| over both steps
and a tall and a wide matrix: torch 1.2e-6 .. 2.0e-6, JAX 1.2e-6 .. 1.8e-6. The tolerance is 1e-5 of the
largest update entry, for the update and for the weights after each step. The weights start near 0 (1e-3)
so that reading the update back from fp32 weights adds no rounding of its own.
"""

from __future__ import annotations

import numpy as np
import pytest

NS = (3.4445, -4.7750, 2.0315)
STEPS = 5
EPS = 1e-7
LR = 0.04
MOMENTA = (0.85, 0.875)  # the llama warm-up (0.85 -> 0.95 over 4 steps) at steps 0 and 1
UPDATE_RTOL = 1e-5


def oracle_orthogonalize(d: np.ndarray) -> np.ndarray:
    """Five quintic Newton-Schulz steps on d / (||d||_F + eps), applied to its singular values (float64)."""
    u, s, vt = np.linalg.svd(d / (np.linalg.norm(d) + EPS), full_matrices=False)
    a, b, c = NS
    for _ in range(STEPS):
        s = a * s + b * s**3 + c * s**5
    return (u * s) @ vt


def oracle_muon(w0: np.ndarray, grads: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(update direction, weights after the step)] for each gradient, Nesterov momentum MOMENTA[t]."""
    rows, cols = w0.shape
    scale = np.sqrt(max(1.0, rows / cols))
    w, buf, out = w0.astype(np.float64), np.zeros_like(w0, dtype=np.float64), []
    for mu, g in zip(MOMENTA, grads, strict=True):
        buf = mu * buf + g
        update = oracle_orthogonalize(g + mu * buf) * scale
        w = w - LR * update
        out.append((update, w))
    return out


def problem(shape: tuple[int, int], seed: int):
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(shape).astype(np.float32) * 1e-3  # small: the update is read back from fp32 weights
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in MOMENTA]
    return w0, grads


def torch_muon(w0: np.ndarray, grads: list[np.ndarray]) -> list[np.ndarray]:
    torch = pytest.importorskip("torch")
    from golfbench.backends.torch.muon import Muon

    p = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = Muon([p], lr=LR, momentum=MOMENTA[0], backend_steps=STEPS)
    out = []
    for mu, g in zip(MOMENTA, grads, strict=True):
        opt.param_groups[0]["momentum"] = mu  # what the backend's before_update does each step
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        out.append(p.detach().numpy().astype(np.float64).copy())
    return out


def jax_muon(w0: np.ndarray, grads: list[np.ndarray]) -> list[np.ndarray]:
    pytest.importorskip("jax")
    import jax.numpy as jnp

    from golfbench.backends.jax import optim
    from golfbench.harness.models import MomentumSchedule

    momentum_at = optim.momentum_fn(MomentumSchedule(0.85, 0.95, 4))
    recipe = optim.Recipe(optim.scale_by_muon(momentum_at, STEPS, jnp.float32), {"w": LR}, {"w": "muon"})
    params = {"w": jnp.asarray(w0)}
    state = recipe.init(params)
    out = []
    for g in grads:
        updates, state = recipe.update({"w": jnp.asarray(g)}, state, params, jnp.float32(1.0))
        params = {"w": params["w"] + updates["w"]}
        out.append(np.asarray(params["w"], dtype=np.float64))
    return out


BACKENDS = {"torch": torch_muon, "jax": jax_muon}


def test_oracle_is_muon():
    """The oracle's own sanity: the orthogonalized direction has singular values in the quintic's band, and
    the SVD form equals the matrix polynomial (the backends' form) in float64."""
    rng = np.random.default_rng(0)
    d = rng.standard_normal((12, 20))
    x = oracle_orthogonalize(d)
    s = np.linalg.svd(x, compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.25
    y = d / (np.linalg.norm(d) + EPS)
    a, b, c = NS
    for _ in range(STEPS):
        gram = y @ y.T
        y = a * y + (b * gram + c * gram @ gram) @ y
    np.testing.assert_allclose(x, y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(48, 32), (24, 40)], ids=["tall", "wide"])
@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_backend_muon_matches_the_float64_oracle(backend, shape):
    w0, grads = problem(shape, seed=sum(shape))
    expected = oracle_muon(w0, grads)
    got = BACKENDS[backend](w0, grads)
    previous = w0.astype(np.float64)
    for step, ((update, w_expected), w_got) in enumerate(zip(expected, got, strict=True)):
        update_got = (previous - w_got) / LR
        rel = np.abs(update_got - update).max() / np.abs(update).max()
        assert rel < UPDATE_RTOL, f"{backend} step {step}: update differs from the oracle by {rel:.2e} relative"
        np.testing.assert_allclose(w_got, w_expected, rtol=0, atol=UPDATE_RTOL * np.abs(w_expected).max())
        previous = w_got
    # the second step really used the momentum buffer: without it the update would be visibly different
    no_momentum = oracle_orthogonalize(grads[1] * (1 + MOMENTA[1])) * np.sqrt(max(1.0, shape[0] / shape[1]))
    assert np.abs(no_momentum - expected[1][0]).max() > 1e-2 * np.abs(expected[1][0]).max()
