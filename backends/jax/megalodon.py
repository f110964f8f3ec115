"""Megalodon in Flax NNX, exactly the forward of docs/models.md, under the canonical names of harness/models.py.

Attribute paths are the canonical names (``layers.0.cema.alpha`` ...), every parameter is real (CEMA's
complex gamma is stored as (D, N, 2)) and fp32. TimestepNorm, CEMA, the RMS/layer norms, the Q/K affine,
the attention softmax and the logits run in fp32 whatever the compute dtype; only the projections take it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from golfbench.backends.jax.cema import cema
from golfbench.backends.jax.layers import (
    Embedding,
    Linear,
    NormAffine,
    causal_mask,
    layer_norm,
    matmul_t,
    rms_norm,
    rope_tables,
)
from golfbench.backends.jax.timestep_norm import timestep_norm


def rope_pairs(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Adjacent pairs (a, b) as a + ib times exp(i angle); x (..., L, H, d), tables (L, d/2)."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return jnp.stack((a * cos - b * sin, a * sin + b * cos), axis=-1).reshape(x.shape)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, chunk: int, rope_base: float, dtype) -> jax.Array:
    """Causal softmax(q k^T) v with scale 1 inside each chunk of ``chunk`` positions; RoPE restarts per chunk.

    q, k: (B, T, H, dq) fp32; v: (B, T, H, dv). Chunks are folded into the batch axis, so attention cannot
    cross a chunk boundary by construction. A last partial chunk is zero-padded at the end: the padding comes
    after every real query, so the causal mask hides it. Scores and softmax are fp32.
    """
    B, T, H, dq = q.shape
    C = min(chunk, T)
    pad = (-T) % C
    if pad:
        q, k, v = (jnp.pad(t, ((0, 0), (0, pad), (0, 0), (0, 0))) for t in (q, k, v))
    n = (T + pad) // C
    q, k, v = (t.reshape(B * n, C, H, t.shape[-1]) for t in (q, k, v))
    cos, sin = rope_tables(C, dq, rope_base)
    q, k = rope_pairs(q, cos, sin), rope_pairs(k, cos, sin)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q.astype(dtype), k.astype(dtype), preferred_element_type=jnp.float32)
    scores = jnp.where(causal_mask(C), scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    o = jnp.einsum("bhqk,bkhe->bqhe", probs.astype(dtype), v.astype(dtype), preferred_element_type=jnp.float32)
    return o.reshape(B, n * C, H, -1)[:, :T]


class CEMA(nnx.Module):
    """Megalodon's complex exponential moving average (Ma et al. 2024, §3.1; the released code's form, which
    megalodon-jax follows: real input gain p, phase only in q). Parameters fp32: alpha, delta (D, N), theta
    (D,), gamma (D, N, 2) = (real, imaginary) of eta·sqrt(N), omega (D,). x (B, T, D) -> fp32 (B, T, D), by one
    FFT convolution (cema.py).
    """

    def __init__(self, dim: int, ndim: int):
        z = lambda *s: nnx.Param(jnp.zeros(s, jnp.float32))  # noqa: E731
        self.alpha, self.delta, self.theta = z(dim, ndim), z(dim, ndim), z(dim)
        self.gamma = z(dim, ndim, 2)  # (real, imaginary) of eta * sqrt(N)
        self.omega = z(dim)

    def __call__(self, x: jax.Array) -> jax.Array:
        return cema(x, self.alpha[...], self.delta[...], self.theta[...], self.gamma[...], self.omega[...])


class FFN(nnx.Module):
    """Megalodon's feed-forward: w2(silu(w1 x) ⊙ w3 x) with ``swiglu``, else w2(silu(w1 x)); no biases. (B, T, D) ->
    (B, T, D)."""

    def __init__(self, dim: int, hidden: int, swiglu: bool, dtype):
        self.w1 = Linear(dim, hidden, dtype=dtype)
        self.w2 = Linear(hidden, dim, dtype=dtype)
        self.w3 = Linear(dim, hidden, dtype=dtype) if swiglu else None

    def __call__(self, x: jax.Array) -> jax.Array:
        a = jax.nn.silu(self.w1(x))
        return self.w2(a * self.w3(x) if self.w3 is not None else a)


class MegalodonLayer(nnx.Module):
    """One Megalodon block (Ma et al. 2024, §3; the released code's MegaBlock): TimestepNorm -> CEMA -> RMSNorm
    gives mx; h = wh1(mx) + wh2(chunked normalized attention gated by silu(wr(mx))), with V from the
    TimestepNorm output; then the two-hop residual x + FFN(LayerNorm(x + h)). x fp32 (B, T, D) -> fp32
    (B, T, D).
    """

    def __init__(self, c: dict, dtype):
        D, Z, E = c["model_dim"], c["z_dim"], c["value_dim"]
        self.heads, self.groups, self.eps = c["num_heads"], c["norm_num_groups"], float(c["norm_eps"])
        self.chunk, self.rope_base, self.dtype = c["chunk_size"], float(c["rope_base"]), dtype
        self.tsnorm = NormAffine(D)
        self.cema = CEMA(D, c["cema_ndim"])
        self.rmsnorm = NormAffine(D, bias=False)
        self.wz = Linear(D, Z, bias=True, dtype=dtype)
        self.qk_gamma = nnx.Param(jnp.zeros((2, Z), jnp.float32))
        self.qk_beta = nnx.Param(jnp.zeros((2, Z), jnp.float32))
        self.wv = Linear(D, E, bias=True, dtype=dtype)
        self.wr = Linear(D, E, bias=True, dtype=dtype)
        self.wh1 = Linear(D, D, bias=True, dtype=dtype)
        self.wh2 = Linear(E, D, dtype=dtype)
        self.ffn_norm = NormAffine(D)
        self.ffn = FFN(D, c["ffn_hidden_dim"], c["swiglu"], dtype)

    def gated_attention(self, mx: jax.Array, xt: jax.Array) -> jax.Array:
        """(o * r), (B, T, E): shared-z normalized attention over chunks, gated by the reset gate."""
        B, T, _ = mx.shape
        H, eps = self.heads, self.eps
        z = self.wz(mx)
        zh = z.shape[-1] // H
        # per-head RMS without affine, then the Q/K affine; all fp32 (the logits have scale 1)
        z = rms_norm(z.reshape(B, T, H, zh), eps)
        gamma = (1.0 + self.qk_gamma[...]).reshape(2, H, zh) / math.sqrt(zh)
        beta = self.qk_beta[...].reshape(2, H, zh)
        q, k = z * gamma[0] + beta[0], z * gamma[1] + beta[1]
        v = jax.nn.silu(self.wv(xt)).reshape(B, T, H, -1)  # V comes from the TimestepNorm output
        r = jax.nn.silu(self.wr(mx))
        o = chunked_attention(q, k, v, self.chunk, self.rope_base, self.dtype)
        return o.reshape(B, T, -1).astype(r.dtype) * r

    def __call__(self, x: jax.Array) -> jax.Array:
        eps = self.eps
        xt = timestep_norm(x, self.tsnorm.weight[...], self.tsnorm.bias[...], self.groups, eps)
        mx = self.rmsnorm(rms_norm(self.cema(xt), eps))
        h = self.wh1(mx).astype(jnp.float32) + self.wh2(self.gated_attention(mx, xt)).astype(jnp.float32)
        n = self.ffn_norm(layer_norm(x + h, eps))
        return x + self.ffn(n).astype(jnp.float32)  # two-hop residual: the FFN adds to x, not to x + h


class Megalodon(nnx.Module):
    """Token ids (B, T) -> fp32 logits (B, T, V). The residual stream is fp32."""

    def __init__(self, c: dict, dtype=jnp.float32):
        D, V = c["model_dim"], c["vocab_size"]
        self.groups, self.eps, self.loops, self.dtype = c["norm_num_groups"], float(c["norm_eps"]), c["loops"], dtype
        self.embed = Embedding(V, D)
        self.layers = nnx.List([MegalodonLayer(c, dtype) for _ in range(c["num_layers"])])
        self.final_norm = NormAffine(D)
        self.lm_head = None if c["tied_embeddings"] else Linear(D, V, dtype=dtype)

    def __call__(self, idx: jax.Array) -> jax.Array:
        x = self.embed(idx)
        for _ in range(self.loops):  # a looped model reapplies the whole stack (the FLOP formula charges each)
            for layer in self.layers:
                x = layer(x)
        h = timestep_norm(x, self.final_norm.weight[...], self.final_norm.bias[...], self.groups, self.eps)
        head = self.embed.weight[...] if self.lm_head is None else self.lm_head.weight[...]
        return matmul_t(h, head, self.dtype, out_dtype=jnp.float32)
