"""A float64 numpy reference of the deltanet plugin's forward (golf_deltanet/spec.py), in the recurrent,
token-by-token form of Yang, Kautz, Hatamizadeh (ICLR 2025), eq. (10): per head,
S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, o_t = S_t q_t. Written from the paper and
the spec's docstring, independently of the chunked JAX implementation it checks."""

from __future__ import annotations

import numpy as np


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _silu(x):
    return x / (1.0 + np.exp(-x))


def _conv_silu(x, w):
    """x (T, N), w (N, K): y[t] = silu(sum_i w[:, i] x[t - K + 1 + i]), zeros before the start."""
    T, K = x.shape[0], w.shape[1]
    y = np.zeros_like(x)
    for t in range(T):
        for i in range(K):
            s = t - K + 1 + i
            if s >= 0:
                y[t] += w[:, i] * x[s]
    return _silu(y)


def _l2(x, eps=1e-6):
    return x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + eps)


def delta_rule_recurrent(q, k, v, g, beta):
    """q, k (T, H, dk), v (T, H, dv), g, beta (T, H): o (T, H, dv), one token at a time."""
    T, H, dk = q.shape
    dv = v.shape[-1]
    S = np.zeros((H, dv, dk))
    o = np.zeros((T, H, dv))
    eye = np.eye(dk)
    for t in range(T):
        for h in range(H):
            kt = k[t, h]
            S[h] = np.exp(g[t, h]) * S[h] @ (eye - beta[t, h] * np.outer(kt, kt)) + beta[t, h] * np.outer(v[t, h], kt)
            o[t, h] = S[h] @ q[t, h]
    return o


def forward(weights: dict, c: dict, idx: np.ndarray) -> np.ndarray:
    """Token ids (B, T) -> float64 logits (B, T, V)."""
    w = {n: np.asarray(a, np.float64) for n, a in weights.items()}
    H, dk, dv, eps = c["num_heads"], c["head_k_dim"], c["head_v_dim"], c["norm_eps"]
    out = []
    for row in np.asarray(idx):
        x = w["embed.weight"][row]
        T = x.shape[0]
        for i in range(c["num_layers"]):
            p = lambda n, i=i: w[f"layers.{i}.{n}"]  # noqa: E731
            h = _rms(x, p("attn_norm.weight"), eps)
            q = _l2(_conv_silu(h @ p("q_proj.weight").T, p("q_conv.weight")).reshape(T, H, dk)) * dk**-0.5
            k = _l2(_conv_silu(h @ p("k_proj.weight").T, p("k_conv.weight")).reshape(T, H, dk))
            v = _conv_silu(h @ p("v_proj.weight").T, p("v_conv.weight")).reshape(T, H, dv)
            g = -np.exp(p("A_log")) * np.logaddexp(0.0, h @ p("a_proj.weight").T + p("dt_bias"))
            beta = 1.0 / (1.0 + np.exp(-(h @ p("b_proj.weight").T)))
            o = delta_rule_recurrent(q, k, v, g, beta)
            o = _rms(o, p("o_norm.weight"), eps) * _silu(h @ p("g_proj.weight").T).reshape(T, H, dv)
            x = x + o.reshape(T, H * dv) @ p("o_proj.weight").T
            h = _rms(x, p("mlp_norm.weight"), eps)
            x = x + (_silu(h @ p("mlp.w1.weight").T) * (h @ p("mlp.w3.weight").T)) @ p("mlp.w2.weight").T
        out.append(_rms(x, w["final_norm.weight"], eps) @ w["embed.weight"].T)
    return np.stack(out)
