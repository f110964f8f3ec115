"""The llama spec (parameter-golf's baseline GPT) in Flax NNX, exactly as docs/models.md states it.

Attribute paths are the canonical names of golfbench.harness.models.llama_shapes (``blocks.3.attn.c_q.weight`` ...),
linear weights are stored (out, in), so the same artifact loads into this model and the torch one.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from golfbench.backends.jax.layers import Embedding, Linear, matmul_t, rms_norm, rope_tables
from golfbench.harness.errors import GolfError

# F.rms_norm's default eps for fp32 inputs (torch.finfo(float32).eps); docs/models.md fixes it for both frameworks
RMS_EPS = float(np.finfo(np.float32).eps)


def rms(x: jax.Array) -> jax.Array:
    """Weightless RMSNorm over the last axis with eps = fp32 machine epsilon (F.rms_norm's default), in fp32."""
    return rms_norm(x, RMS_EPS)


def rope_half(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Half-split rotary (parameter-golf's convention): x (B, T, H, hd), tables (T, hd/2)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = cos[:, None, :], sin[:, None, :]
    return jnp.concatenate((x1 * cos + x2 * sin, x2 * cos - x1 * sin), axis=-1)


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, dtype) -> jax.Array:
    """softmax(q k^T / sqrt(hd)) v (dot_product_attention's default scale), causal, GQA when k/v have fewer
    heads; fp32 logits and softmax.

    On GPUs in bf16, cuDNN's fused (flash) kernel is used when it accepts the shapes (GOLF_JAX_ATTENTION=xla
    turns it off); otherwise, and always on CPU, JAX's XLA implementation (einsums with fp32 logits).
    """
    q, k, v = q.astype(dtype), k.astype(dtype), v.astype(dtype)
    fused = os.environ.get("GOLF_JAX_ATTENTION", "cudnn") != "xla"
    if fused and dtype == jnp.bfloat16 and jax.default_backend() == "gpu":
        try:
            return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        except Exception:  # unsupported shape/GPU/cuDNN version (raised while tracing): use the XLA path
            pass
    return blocked_causal_attention(q, k, v)


def blocked_causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, blocks: int = 4) -> jax.Array:
    """XLA attention over query blocks, each attending only the keys up to its end: the masked upper triangle is
    mostly never computed (10/16 of the square for 4 blocks). Same softmax per query, so the same result to fp32
    rounding; measured 1.6x faster than one full causal square on the CPU at T=256."""
    T = q.shape[1]
    if T % blocks or T < 32 * blocks:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")
    size, outs = T // blocks, []
    for i in range(blocks):
        end = (i + 1) * size
        mask = (jnp.arange(size)[:, None] + i * size) >= jnp.arange(end)[None, :]
        outs.append(
            jax.nn.dot_product_attention(
                q[:, i * size : end], k[:, :end], v[:, :end], mask=mask[None, None], implementation="xla"
            )
        )
    return jnp.concatenate(outs, axis=1)


class Attention(nnx.Module):
    """parameter-golf's attention: q, k, v projections (GQA: ``num_kv_heads`` k/v heads), QK-RMSNorm, half-split
    RoPE, a learned per-head ``q_gain`` on q, causal softmax attention and an output projection.
    x (B, T, D) -> (B, T, D) in the compute dtype; cos/sin tables (T, head_dim/2).
    """

    def __init__(self, c: dict, dtype):
        d = c["model_dim"]
        self.heads, self.kv_heads = c["num_heads"], c["num_kv_heads"]
        self.head_dim, self.dtype = d // self.heads, dtype
        kv_dim = self.kv_heads * self.head_dim
        self.c_q = Linear(d, d, dtype=dtype)
        self.c_k = Linear(d, kv_dim, dtype=dtype)
        self.c_v = Linear(d, kv_dim, dtype=dtype)
        self.proj = Linear(d, d, dtype=dtype)
        self.q_gain = nnx.Param(jnp.zeros((self.heads,), jnp.float32))

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        B, T, d = x.shape
        q = self.c_q(x).reshape(B, T, self.heads, self.head_dim)
        k = self.c_k(x).reshape(B, T, self.kv_heads, self.head_dim)
        v = self.c_v(x).reshape(B, T, self.kv_heads, self.head_dim)
        q = rope_half(rms(q), cos, sin) * self.q_gain[...][:, None]
        k = rope_half(rms(k), cos, sin)
        y = causal_attention(q, k, v, self.dtype)
        return self.proj(y.reshape(B, T, d))


class MLP(nnx.Module):
    """parameter-golf's ReLU² MLP: proj(relu(fc(x))²), hidden width mlp_mult × D; (B, T, D) -> (B, T, D)."""

    def __init__(self, c: dict, dtype):
        d = c["model_dim"]
        self.fc = Linear(d, c["mlp_mult"] * d, dtype=dtype)
        self.proj = Linear(c["mlp_mult"] * d, d, dtype=dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(jnp.square(jax.nn.relu(self.fc(x))))


class Block(nnx.Module):
    """One transformer block of parameter-golf's train_gpt.py: x <- resid_mix[0]·x + resid_mix[1]·x0 (x0: the
    normed embedding), then pre-norm attention and MLP residuals scaled per channel by attn_scale and
    mlp_scale. x, x0 fp32 (B, T, D) -> fp32 (B, T, D).
    """

    def __init__(self, c: dict, dtype):
        d = c["model_dim"]
        self.attn_scale = nnx.Param(jnp.zeros((d,), jnp.float32))
        self.mlp_scale = nnx.Param(jnp.zeros((d,), jnp.float32))
        self.resid_mix = nnx.Param(jnp.zeros((2, d), jnp.float32))
        self.attn = Attention(c, dtype)
        self.mlp = MLP(c, dtype)

    def __call__(self, x: jax.Array, x0: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
        mix = self.resid_mix[...]
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale[...] * self.attn(rms(x), cos, sin).astype(jnp.float32)
        return x + self.mlp_scale[...] * self.mlp(rms(x)).astype(jnp.float32)


class GPT(nnx.Module):
    """Token ids (B, T) -> softcapped fp32 logits (B, T, V). The residual stream is fp32. Construction raises
    GolfError for loops != 1."""

    def __init__(self, c: dict, dtype=jnp.float32):
        if c["loops"] != 1:
            # docs/models.md does not say how a looped U-Net reuses its skips; refuse rather than guess
            raise GolfError("llama: loops != 1 is not defined for the U-Net skip structure; use loops=1")
        L, d = c["num_layers"], c["model_dim"]
        self.n_enc = L // 2
        self.head_dim, self.rope_base = d // c["num_heads"], float(c["rope_base"])
        self.softcap, self.dtype = float(c["logit_softcap"]), dtype
        self.tok_emb = Embedding(c["vocab_size"], d)
        self.skip_weights = nnx.Param(jnp.zeros((min(self.n_enc, L - self.n_enc), d), jnp.float32))
        self.blocks = nnx.List([Block(c, dtype) for _ in range(L)])

    def __call__(self, idx: jax.Array) -> jax.Array:
        # fp32 tables computed like the torch model's (fp32 inv_freq and angles) so both round identically
        cos, sin = rope_tables(idx.shape[1], self.head_dim, self.rope_base, exponent_dtype=np.float32)
        x = x0 = rms(self.tok_emb(idx))
        skips = []
        for block in self.blocks[: self.n_enc]:
            x = block(x, x0, cos, sin)
            skips.append(x)
        skip_w = self.skip_weights[...]
        for j, block in enumerate(self.blocks[self.n_enc :]):
            if skips:  # U-Net: decoder block j adds the output of encoder block n_enc-1-j
                x = x + skip_w[j] * skips.pop()
            x = block(x, x0, cos, sin)
        logits = matmul_t(rms(x), self.tok_emb.weight[...], self.dtype, out_dtype=jnp.float32)
        return self.softcap * jnp.tanh(logits / self.softcap)  # fp32: tanh saturates coarsely in bf16
