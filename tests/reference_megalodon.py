"""The Megalodon forward of docs/models.md, stated in float64 numpy for one sequence.

This is the oracle the torch and JAX implementations are tested against, so it is written to be obviously
correct rather than fast: TimestepNorm recomputes its statistics from scratch at every position, CEMA runs
the complex recurrence one step at a time, attention loops over chunks and heads. Use tiny configs.

Conventions pinned down here where the prose could be read two ways:
- RoPE pairs (2i, 2i+1) are the complex number a + ib multiplied by exp(i * angle):
  (a, b) -> (a cos - b sin, a sin + b cos), angle = pos * base^(-2i / z_h), pos = t mod C.
- Chunks are the blocks [kC, (k+1)C) of the sequence; a last partial chunk (T not a multiple of C) is
  simply shorter. When T <= C there is one chunk and pos = t.
- ``loops`` repeats the whole stack of layers (layers 0..L-1, then again), as the FLOP formula charges it.
- ``nll(weights, config, tokens)`` follows the scorer convention: tokens has T+1 entries, entry t of the
  result is -log p(tokens[t+1] | tokens[:t+1]).
"""

from __future__ import annotations

import math

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _silu(x: np.ndarray) -> np.ndarray:
    return x * _sigmoid(x)


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def timestep_norm_direct(x: np.ndarray, w: np.ndarray, b: np.ndarray, groups: int, eps: float) -> np.ndarray:
    """Causal group norm over time: at t, statistics of every scalar of the group at positions 0..t."""
    x, w, b = _f64(x), _f64(w), _f64(b)
    T, D = x.shape
    size = D // groups
    out = np.empty_like(x)
    for t in range(T):
        for g in range(groups):
            cols = slice(g * size, (g + 1) * size)
            seen = x[: t + 1, cols].ravel()
            mu = seen.mean()
            var = ((seen - mu) ** 2).mean()
            out[t, cols] = (x[t, cols] - mu) / math.sqrt(var + eps) * (1.0 + w[cols]) + b[cols]
    return out


def cema_coefficients(alpha, delta, theta, gamma):
    """p (real), q (complex, |q| < 1) and eta (complex), each (D, N)."""
    alpha, delta, theta, gamma = _f64(alpha), _f64(delta), _f64(theta), _f64(gamma)
    N = alpha.shape[1]
    p = _sigmoid(alpha)
    r = 1.0 - _sigmoid(alpha) * _sigmoid(delta)
    phi = np.arange(1, N + 1)[None, :] * _sigmoid(theta)[:, None] * 2.0 * math.pi / N
    q = r * np.exp(1j * phi)
    eta = (gamma[..., 0] + 1j * gamma[..., 1]) / math.sqrt(N)
    return p, q, eta


def cema_sequential(x, alpha, delta, theta, gamma, omega) -> np.ndarray:
    """h_t = p x_t + q h_{t-1} (h_{-1} = 0), y_t = Re(sum_n eta h_t) + omega x_t, over x of shape (T, D)."""
    x, omega = _f64(x), _f64(omega)
    p, q, eta = cema_coefficients(alpha, delta, theta, gamma)
    h = np.zeros(p.shape, dtype=np.complex128)
    y = np.empty_like(x)
    for t in range(x.shape[0]):
        h = p * x[t][:, None] + q * h
        y[t] = (eta * h).sum(axis=1).real + omega * x[t]
    return y


def _rms(x: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)


def _layer_norm(x: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def rope(x: np.ndarray, positions: np.ndarray, base: float) -> np.ndarray:
    """Rotate adjacent pairs of x (T, d) by pos * base^(-2i/d)."""
    d = x.shape[-1]
    i = np.arange(d // 2)
    angle = positions[:, None] * base ** (-2.0 * i / d)[None, :]
    a, b = x[:, 0::2], x[:, 1::2]
    out = np.empty_like(x)
    out[:, 0::2] = a * np.cos(angle) - b * np.sin(angle)
    out[:, 1::2] = a * np.sin(angle) + b * np.cos(angle)
    return out


def chunked_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, chunk: int) -> np.ndarray:
    """Per chunk of `chunk` positions, causal softmax(q k^T) v with scale 1, for one head: (T, dq),(T, dv)."""
    T = q.shape[0]
    o = np.zeros((T, v.shape[1]))
    for start in range(0, T, chunk):
        stop = min(start + chunk, T)
        for t in range(start, stop):
            scores = k[start : t + 1] @ q[t]
            weights = np.exp(scores - scores.max())
            o[t] = (weights / weights.sum()) @ v[start : t + 1]
    return o


def megalodon_layer(wt: dict, prefix: str, config: dict, x: np.ndarray) -> np.ndarray:
    W = lambda name: _f64(wt[prefix + name])  # noqa: E731
    eps, H, C = config["norm_eps"], config["num_heads"], config["chunk_size"]
    T = x.shape[0]
    Z, E = config["z_dim"], config["value_dim"]
    zh, eh = Z // H, E // H

    xt = timestep_norm_direct(x, W("tsnorm.weight"), W("tsnorm.bias"), config["norm_num_groups"], eps)
    c = cema_sequential(xt, W("cema.alpha"), W("cema.delta"), W("cema.theta"), W("cema.gamma"), W("cema.omega"))
    mx = _rms(c, eps) * (1.0 + W("rmsnorm.weight"))

    z = mx @ W("wz.weight").T + W("wz.bias")
    z = _rms(z.reshape(T, H, zh), eps).reshape(T, Z)
    q = z * (1.0 + W("qk_gamma")[0]) / math.sqrt(zh) + W("qk_beta")[0]
    k = z * (1.0 + W("qk_gamma")[1]) / math.sqrt(zh) + W("qk_beta")[1]
    v = _silu(xt @ W("wv.weight").T + W("wv.bias"))
    r = _silu(mx @ W("wr.weight").T + W("wr.bias"))

    positions = np.arange(T) % C
    o = np.zeros((T, E))
    for h in range(H):
        qs, ks = slice(h * zh, (h + 1) * zh), slice(h * eh, (h + 1) * eh)
        qh = rope(q[:, qs], positions, config["rope_base"])
        kh = rope(k[:, qs], positions, config["rope_base"])
        o[:, ks] = chunked_attention(qh, kh, v[:, ks], C)

    h_out = mx @ W("wh1.weight").T + W("wh1.bias") + (o * r) @ W("wh2.weight").T
    y = x + h_out
    n = _layer_norm(y, eps) * (1.0 + W("ffn_norm.weight")) + W("ffn_norm.bias")
    a = _silu(n @ W("ffn.w1.weight").T)
    if config["swiglu"]:
        a = a * (n @ W("ffn.w3.weight").T)
    return x + a @ W("ffn.w2.weight").T


def megalodon_forward(weights: dict, config: dict, tokens: np.ndarray) -> np.ndarray:
    """Logits (T, V) for one sequence of T token ids."""
    embed = _f64(weights["embed.weight"])
    x = embed[np.asarray(tokens)]
    for _ in range(config.get("loops", 1)):
        for i in range(config["num_layers"]):
            x = megalodon_layer(weights, f"layers.{i}.", config, x)
    h = timestep_norm_direct(
        x, weights["final_norm.weight"], weights["final_norm.bias"], config["norm_num_groups"], config["norm_eps"]
    )
    head = embed if config["tied_embeddings"] else _f64(weights["lm_head.weight"])
    return h @ head.T


def nll(weights: dict, config: dict, tokens: np.ndarray) -> np.ndarray:
    """(T,) NLL in nats of tokens[t+1] given tokens[:t+1], for tokens of length T+1."""
    tokens = np.asarray(tokens)
    logits = megalodon_forward(weights, config, tokens[:-1])
    m = logits.max(axis=-1, keepdims=True)
    logz = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[:, 0]
    return logz - logits[np.arange(len(tokens) - 1), tokens[1:]]


# -- shared by the megalodon tests of both backends ----------------------------------------------------------

# Small enough for the numpy oracle, every feature live: 3 chunks, 2 heads with z_h != e_h, groups > 1.
MICRO = dict(
    vocab_size=61,
    num_layers=2,
    model_dim=24,
    num_heads=2,
    z_dim=12,
    value_dim=16,
    ffn_hidden_dim=40,
    cema_ndim=4,
    chunk_size=8,
    norm_num_groups=4,
    seq_len=24,
)


def micro_config(**overrides) -> dict:
    from golfbench.harness.models import get_spec

    return get_spec("megalodon").config("tiny", {**MICRO, **overrides})


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def noisy_weights(config: dict, seed: int = 0, scale: float = 0.3) -> dict[str, np.ndarray]:
    """Canonical init plus noise, so zero-initialised biases, offsets and gamma's imaginary part all matter."""
    from golfbench.harness.init import init_weights
    from golfbench.harness.models import get_spec

    rng = np.random.default_rng(seed)
    weights = init_weights(get_spec("megalodon"), config, seed)
    return {
        k: (v + scale * rng.standard_normal(v.shape) * max(float(np.std(v)), 0.1)).astype(np.float32)
        for k, v in weights.items()
    }
