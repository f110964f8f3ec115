"""TimestepNorm: a causal group norm whose statistics at step t cover every scalar of the group at steps <= t.

Training sees whole sequences, so the running statistics are prefix sums (one cumsum over time) instead of
a sequential Welford recurrence. Everything is fp32. Subtracting a per-(row, group) anchor first (the first
token's group mean) keeps E[x^2] - E[x]^2 from cancelling catastrophically when the features carry a large
common offset; the variance is shift-invariant, so the anchor changes nothing mathematically and needs no
gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def timestep_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, groups: int, eps: float) -> jax.Array:
    """x (B, T, D) -> (B, T, D) fp32: (x - mu_t) / sqrt(var_t + eps) * (1 + weight) + bias per group."""
    B, T, D = x.shape
    xg = x.astype(jnp.float32).reshape(B, T, groups, D // groups)
    anchor = jax.lax.stop_gradient(jnp.mean(xg[:, :1], axis=-1, keepdims=True))  # (B, 1, G, 1)
    xs = xg - anchor
    count = jnp.arange(1, T + 1, dtype=jnp.float32)[None, :, None]
    # Every token contributes the same number (D/G) of scalars, so the mean of per-token means is exact.
    mean = jnp.cumsum(jnp.mean(xs, axis=-1), axis=1) / count  # (B, T, G)
    meansq = jnp.cumsum(jnp.mean(xs * xs, axis=-1), axis=1) / count
    var = jnp.maximum(meansq - mean * mean, 0.0)  # round-off can push a zero variance slightly negative
    out = (xs - mean[..., None]) * jax.lax.rsqrt(var + eps)[..., None]
    return out.reshape(B, T, D) * (1.0 + weight.astype(jnp.float32)) + bias.astype(jnp.float32)
