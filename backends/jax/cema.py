"""Complex exponential moving average (CEMA) as one FFT convolution, fp32 / complex64 throughout.

The recurrence h_t = p x_t + q h_{t-1}, y_t = Re(sum_n eta_n h_t) + omega x_t (per channel, N complex modes)
is linear and time-invariant, so y = causal_conv(x, K) + omega x with K[j] = sum_n Re(eta_n p_n q_n^j).
The kernel is built in real arithmetic from magnitude and phase, |q|^j = exp(j log r) and angle j phi: no
cumulative product (which drifts along j) and no complex parameters (the optimizer only sees reals). The
convolution is an rfft/irfft of length next_pow2(2T), long enough that the circular wrap-around never
reaches the first T outputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def fft_length(T: int) -> int:
    """The rfft/irfft length for a causal convolution of ``T`` steps: the next power of two >= 2T, so the
    circular wrap-around never reaches the first T outputs (megalodon-jax's FFT path does the same).
    """
    return 1 << math.ceil(math.log2(2 * T))


def cema_kernel(alpha, delta, theta, gamma, length: int) -> jax.Array:
    """K (D, length) fp32: K[d, j] = sum_n p r^j (g0 cos(j phi) - g1 sin(j phi)) / sqrt(N)."""
    alpha, delta, theta, gamma = (a.astype(jnp.float32) for a in (alpha, delta, theta, gamma))
    N = alpha.shape[-1]
    p = jax.nn.sigmoid(alpha)  # (D, N), real input gain
    # log|q| = log(1 - p sigmoid(delta)); log1p keeps the digits when r is close to 1 (long memory). The
    # clamp only bites when r rounds to 0, where it turns 0 * log(0) = nan at j = 0 into r^0 = 1.
    log_r = jnp.maximum(jnp.log1p(-p * jax.nn.sigmoid(delta)), -80.0)
    phi = jnp.arange(1, N + 1, dtype=jnp.float32) * (jax.nn.sigmoid(theta)[:, None] * (2.0 * math.pi / N))
    j = jnp.arange(length, dtype=jnp.float32)
    mag = jnp.exp(log_r[..., None] * j)  # (D, N, L)
    ang = phi[..., None] * j
    wave = gamma[..., 0:1] * jnp.cos(ang) - gamma[..., 1:2] * jnp.sin(ang)
    return jnp.sum(p[..., None] * mag * wave, axis=1) * (1.0 / math.sqrt(N))


def causal_fft_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """y[b, d, t] = sum_{s <= t} kernel[d, s] x[b, d, t - s] for x (B, D, T) fp32, kernel (D, T)."""
    T = x.shape[-1]
    n = fft_length(T)
    spectrum = jnp.fft.rfft(x, n=n) * jnp.fft.rfft(kernel, n=n)  # the kernel's FFT is shared by the batch
    return jnp.fft.irfft(spectrum, n=n)[..., :T]


def cema(x: jax.Array, alpha, delta, theta, gamma, omega) -> jax.Array:
    """x (B, T, D) -> (B, T, D) fp32."""
    xf = x.astype(jnp.float32)
    kernel = cema_kernel(alpha, delta, theta, gamma, x.shape[1])
    y = causal_fft_conv(jnp.swapaxes(xf, 1, 2), kernel)  # FFT along the last (time) axis
    return jnp.swapaxes(y, 1, 2) + omega.astype(jnp.float32) * xf
