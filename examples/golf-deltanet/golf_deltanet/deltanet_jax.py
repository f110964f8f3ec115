"""Gated DeltaNet in Flax NNX (the JAX implementation of the ``deltanet`` plugin; golf_deltanet/spec.py states
the model). Source: Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
arXiv:2412.06464 (ICLR 2025); the chunked form is the paper's §3 (WY representation / UT transform, as in
Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over Sequence Length").

Chunked form, per head, one chunk of C positions with state S0 (dv, dk) at its start; gam = the cumulative
sum of the log decays g inside the chunk, Gam = exp(gam), D[t, j] = exp(gam_t - gam_j) for j <= t, 0 else:

    (I + A) U = diag(beta) V - diag(beta Gam) K S0^T,    A[t, j] = beta_t D[t, j] (k_t . k_j) for j < t
    O         = diag(Gam) Q S0^T + (D * Q K^T) U
    S_C       = Gam_C S0 + U^T diag(Gam_C / Gam) K

(U are the delta rule's "pseudo values" u_t = beta_t (v_t - alpha_t S_{t-1} k_t)). The unit lower-triangular
system is solved once per chunk for [beta Gam K | beta V] (forward substitution); a ``lax.scan`` carries S over the chunks. Every
exponent is <= 0, so nothing overflows. Small and correct rather than fast: everything fp32 but the
projections (which take the compute dtype, as golfbench's own models).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from golfbench.backends.jax.layers import Embedding, Linear, matmul_t, rms_norm


class Weight(nnx.Module):
    """A bare ``weight`` parameter (norm scales, depthwise conv kernels): canonical name ``<attr>.weight``."""

    def __init__(self, *shape: int):
        self.weight = nnx.Param(jnp.zeros(shape, jnp.float32))


def short_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """Causal depthwise convolution, then SiLU: y[t] = silu(sum_i w[:, i] x[t - K + 1 + i]); x (B, T, N), w (N, K)."""
    K, T = w.shape[1], x.shape[1]
    xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (K - 1, 0), (0, 0)))
    y = sum(xp[:, i : i + T] * w[:, i] for i in range(K))
    return jax.nn.silu(y)


def l2norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


def unit_lower_solve(a: jax.Array, rhs: jax.Array) -> jax.Array:
    """X with (I + a) X = rhs for strictly lower-triangular a (..., C, C), by forward substitution over the rows
    (a ``fori_loop``: plain matmuls only; the CPU LAPACK triangular-solve call deadlocked inside XLA's
    thread pool in our runs). Row i reads only rows < i of X, which are already final."""
    C = a.shape[-1]

    def row(i, x):
        a_i = jax.lax.dynamic_index_in_dim(a, i, axis=-2, keepdims=True)  # (..., 1, C)
        r_i = jax.lax.dynamic_index_in_dim(rhs, i, axis=-2, keepdims=True)  # (..., 1, d)
        return jax.lax.dynamic_update_index_in_dim(x, r_i - a_i @ x, i, axis=-2)

    return jax.lax.fori_loop(0, C, row, jnp.zeros_like(rhs))


def gated_delta_rule(q, k, v, g, beta, chunk: int) -> jax.Array:
    """o_t = S_t q_t with S_t = exp(g_t) S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T, S_0 = 0, chunked.

    q, k: (B, T, H, dk); v: (B, T, H, dv); g (log decay, <= 0), beta: (B, T, H); all fp32. Returns (B, T, H, dv).
    A last partial chunk is padded at the end with g = beta = 0 and zero keys (nothing after a real token
    reaches it)."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    C = min(chunk, T)
    pad = (-T) % C
    if pad:
        q, k, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (q, k, v))
        g, beta = (jnp.pad(t, ((0, 0), (0, pad), (0, 0))) for t in (g, beta))
    n = (T + pad) // C

    def chunks(t):  # (B, n*C, H, ...) -> (n, B, H, C, ...)
        t = t.reshape(B, n, C, H, *t.shape[3:])
        return jnp.moveaxis(jnp.moveaxis(t, 1, 0), 3, 2)

    q, k, v, g, beta = (chunks(t) for t in (q, k, v, g, beta))
    gam = jnp.cumsum(g, axis=-1)  # (n, B, H, C)
    incl = jnp.asarray(np.tril(np.ones((C, C), bool)))
    strict = jnp.asarray(np.tril(np.ones((C, C), bool), -1))
    decay = jnp.where(incl, jnp.exp(jnp.where(incl, gam[..., :, None] - gam[..., None, :], 0.0)), 0.0)
    kk = jnp.einsum("...td,...sd->...ts", k, k)
    a = jnp.where(strict, beta[..., :, None] * decay * kk, 0.0)
    rhs = jnp.concatenate([(beta * jnp.exp(gam))[..., None] * k, beta[..., None] * v], axis=-1)
    sol = unit_lower_solve(a, rhs)
    w, u_base = sol[..., :dk], sol[..., dk:]  # U = u_base - w S0^T
    scores = jnp.einsum("...td,...sd->...ts", q, k) * decay
    q_decayed = q * jnp.exp(gam)[..., None]
    k_to_end = k * jnp.exp(gam[..., -1:] - gam)[..., None]
    end_decay = jnp.exp(gam[..., -1])[..., None, None]

    def step(s, xs):
        w_c, ub_c, p_c, qd_c, kd_c, ed_c = xs
        u = ub_c - jnp.einsum("bhcd,bhvd->bhcv", w_c, s)
        o = jnp.einsum("bhcd,bhvd->bhcv", qd_c, s) + jnp.einsum("bhts,bhsv->bhtv", p_c, u)
        s = ed_c * s + jnp.einsum("bhcv,bhcd->bhvd", u, kd_c)
        return s, o

    s0 = jnp.zeros((B, H, dv, dk), jnp.float32)
    _, o = jax.lax.scan(step, s0, (w, u_base, scores, q_decayed, k_to_end, end_decay))  # (n, B, H, C, dv)
    o = jnp.moveaxis(jnp.moveaxis(o, 2, 3), 0, 1).reshape(B, n * C, H, dv)
    return o[:, :T]


class MLP(nnx.Module):
    def __init__(self, d: int, hidden: int, dtype):
        self.w1 = Linear(d, hidden, dtype=dtype)
        self.w3 = Linear(d, hidden, dtype=dtype)
        self.w2 = Linear(hidden, d, dtype=dtype)

    def __call__(self, x):
        return self.w2(jax.nn.silu(self.w1(x).astype(jnp.float32)) * self.w3(x).astype(jnp.float32))


class DeltaNetLayer(nnx.Module):
    def __init__(self, c: dict, dtype):
        D, H, dk, dv = c["model_dim"], c["num_heads"], c["head_k_dim"], c["head_v_dim"]
        F, K = c["ffn_hidden_dim"], c["conv_size"]
        self.H, self.dk, self.dv, self.chunk, self.eps = H, dk, dv, c["chunk_size"], float(c["norm_eps"])
        self.attn_norm = Weight(D)
        self.q_proj, self.k_proj = Linear(D, H * dk, dtype=dtype), Linear(D, H * dk, dtype=dtype)
        self.v_proj = Linear(D, H * dv, dtype=dtype)
        self.q_conv, self.k_conv, self.v_conv = Weight(H * dk, K), Weight(H * dk, K), Weight(H * dv, K)
        self.a_proj, self.b_proj = Linear(D, H, dtype=jnp.float32), Linear(D, H, dtype=jnp.float32)
        self.A_log = nnx.Param(jnp.zeros((H,), jnp.float32))
        self.dt_bias = nnx.Param(jnp.zeros((H,), jnp.float32))
        self.g_proj = Linear(D, H * dv, dtype=dtype)
        self.o_norm = Weight(dv)
        self.o_proj = Linear(H * dv, D, dtype=dtype)
        self.mlp_norm = Weight(D)
        self.mlp = MLP(D, F, dtype)

    def mixer(self, h: jax.Array) -> jax.Array:
        B, T, _ = h.shape
        H, dk, dv = self.H, self.dk, self.dv
        q = l2norm(short_conv(self.q_proj(h), self.q_conv.weight[...]).reshape(B, T, H, dk)) * dk**-0.5
        k = l2norm(short_conv(self.k_proj(h), self.k_conv.weight[...]).reshape(B, T, H, dk))
        v = short_conv(self.v_proj(h), self.v_conv.weight[...]).reshape(B, T, H, dv)
        g = -jnp.exp(self.A_log[...]) * jax.nn.softplus(self.a_proj(h).astype(jnp.float32) + self.dt_bias[...])
        beta = jax.nn.sigmoid(self.b_proj(h).astype(jnp.float32))
        o = gated_delta_rule(q, k, v, g, beta, self.chunk)
        gate = jax.nn.silu(self.g_proj(h).astype(jnp.float32)).reshape(B, T, H, dv)
        o = rms_norm(o, self.eps) * self.o_norm.weight[...] * gate
        return self.o_proj(o.reshape(B, T, H * dv)).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.mixer(rms_norm(x, self.eps) * self.attn_norm.weight[...])
        return x + self.mlp(rms_norm(x, self.eps) * self.mlp_norm.weight[...]).astype(jnp.float32)


class DeltaNetLM(nnx.Module):
    """Token ids int32 (B, T) -> fp32 logits (B, T, V); tied embedding; the residual stream is fp32."""

    def __init__(self, c: dict, dtype=jnp.float32):
        self.eps, self.dtype = float(c["norm_eps"]), dtype
        self.embed = Embedding(c["vocab_size"], c["model_dim"])
        self.layers = nnx.List([DeltaNetLayer(c, dtype) for _ in range(c["num_layers"])])
        self.final_norm = Weight(c["model_dim"])

    def __call__(self, idx: jax.Array) -> jax.Array:
        x = self.embed(idx).astype(jnp.float32)
        for layer in self.layers:
            x = layer(x)
        h = rms_norm(x, self.eps) * self.final_norm.weight[...]
        return matmul_t(h, self.embed.weight[...], self.dtype, out_dtype=jnp.float32)
