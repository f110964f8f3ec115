"""Building blocks shared by the JAX models: canonical (out, in) linear layers, norms, RoPE tables, precision.

Weights are stored exactly as the canonical names/shapes of harness/models.py say (linear weights (out, in)),
so a model's parameter paths joined by '.' ARE the canonical names and export/import is a rename-free copy.

Precision policy (no autocast in JAX): parameters are always fp32. On GPU matmuls take bf16 inputs and
accumulate in fp32 (``preferred_element_type``); norms, CEMA, softmax and the loss upcast to fp32 themselves.
On CPU training is fp32, which is what the exactness and parity tests rely on. Scoring does not follow the
device: it uses the track's ``eval_precision`` everywhere (runtime.score_fns: fp32, or bf16 as above).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def default_compute_dtype():
    """bf16 matmuls on GPUs (tensor cores), fp32 elsewhere (CPU tests stay exact)."""
    return jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32


def matmul_t(x: jax.Array, w: jax.Array, dtype, out_dtype=None) -> jax.Array:
    """x @ w.T for a canonical (out, in) weight: inputs cast to ``dtype``, fp32 accumulation, result in
    ``out_dtype`` (default ``dtype``; the LM head asks for fp32 so logits never round to bf16)."""
    y = jax.lax.dot_general(
        x.astype(dtype), w.astype(dtype), (((x.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32
    )
    return y.astype(out_dtype or dtype)


# Set only while runtime.input_hessians runs a model eagerly: called with (the Linear, its input) on every call. None
# during training and scoring, where it is never looked at inside a trace, so it costs nothing there.
INPUT_TAP = None


class Linear(nnx.Module):
    """y = x @ weight.T (+ bias), weight stored (out, in) like torch so the canonical form needs no transpose."""

    def __init__(self, d_in: int, d_out: int, *, bias: bool = False, dtype=jnp.float32):
        self.weight = nnx.Param(jnp.zeros((d_out, d_in), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32)) if bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        if INPUT_TAP is not None:
            INPUT_TAP(self, x)
        y = matmul_t(x, self.weight[...], self.dtype)
        if self.bias is not None:
            y = (y.astype(jnp.float32) + self.bias[...]).astype(self.dtype)
        return y


class Embedding(nnx.Module):
    """Token embedding: ``weight`` fp32 (vocab, dim); int ids (...) -> fp32 rows (..., dim)."""

    def __init__(self, vocab: int, dim: int):
        self.weight = nnx.Param(jnp.zeros((vocab, dim), jnp.float32))

    def __call__(self, idx: jax.Array) -> jax.Array:
        return jnp.take(self.weight[...], idx, axis=0)


class NormAffine(nnx.Module):
    """The stored affine of a norm: applied scale is (1 + weight), optional bias (the Megalodon convention)."""

    def __init__(self, dim: int, *, bias: bool = True):
        self.weight = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32)) if bias else None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x * (1.0 + self.weight[...])
        return y + self.bias[...] if self.bias is not None else y


def rms_norm(x: jax.Array, eps: float) -> jax.Array:
    """x / sqrt(mean(x^2) + eps) over the last axis, computed in fp32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """(x - mean) / sqrt(var + eps) over the last axis, in fp32, without affine (NormAffine adds it)."""
    x = x.astype(jnp.float32)
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps)


def rope_tables(length: int, dim: int, base: float, exponent_dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin (length, dim/2) of angle pos * base^(-2i/dim), as trace-time numpy constants (shapes are static)."""
    i = np.arange(0, dim, 2, dtype=exponent_dtype)
    inv_freq = (1.0 / (exponent_dtype(base) ** (i / exponent_dtype(dim)))).astype(exponent_dtype)
    angle = np.outer(np.arange(length, dtype=exponent_dtype), inv_freq)
    return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)


def causal_mask(length: int) -> np.ndarray:
    """bool (length, length), True where query t may attend key s (s <= t)."""
    return np.tril(np.ones((length, length), dtype=bool))


def param_paths(name: str) -> tuple:
    """Canonical name -> NNX state path ('layers.3.wz.weight' -> ('layers', 3, 'wz', 'weight'))."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))


def path_name(path: tuple) -> str:
    """NNX state path -> canonical name (('layers', 3, 'wz', 'weight') -> 'layers.3.wz.weight'); inverse of
    param_paths."""
    return ".".join(str(p) for p in path)
