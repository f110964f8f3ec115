"""Megalodon in PyTorch, exactly the forward of docs/models.md, under the canonical names of harness/models.py.

Every parameter is real (CEMA's complex gamma is stored as (D, N, 2)), so DDP, Muon and torch.compile only
ever see real tensors. The only complex arithmetic is the FFT convolution, which is kept in eager fp32
behind ``torch.compiler.disable``; everything else (the EMA kernel included) is real and compiles.

Precision: under autocast the projections run in the autocast dtype, while TimestepNorm, CEMA, the RMS /
layer norms and the Q/K affine run in fp32 (autocast is switched off around them), as the spec requires.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _fp32_region(x: torch.Tensor):
    # Autocast would silently run reductions/matmuls inside these regions in bf16; switch it off locally.
    return torch.autocast(device_type=x.device.type, enabled=False)


def lm_head(x: torch.Tensor, weight: torch.Tensor, exact: bool) -> torch.Tensor:
    """fp32 logits x @ weight.T, x (..., D), weight (V, D) -> (..., V). Under autocast with ``exact`` (the
    scorer's bf16 rule) bf16-rounded inputs, fp32 accumulation and an fp32 result, as the JAX head; without it,
    autocast's own matmul (its output rounded to bf16)."""
    device = x.device.type
    if exact and torch.is_autocast_enabled(device):
        low = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):
            return F.linear(x.to(low).float(), weight.to(low).float())
    return F.linear(x, weight).float()


# ----------------------------------------------------------------------------------------------------------
# TimestepNorm


def timestep_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: int, eps: float) -> torch.Tensor:
    """Causal group norm: at t, mean/var of every scalar of the group over positions 0..t. x: (B, T, D)."""
    with _fp32_region(x):
        B, T, D = x.shape
        xf = x.float().view(B, T, groups, D // groups)
        # Shift by the first token's group mean before the cumulative sums: the variance is shift-invariant
        # and the shift keeps E[x^2] - E[x]^2 from cancelling catastrophically in fp32. The output does not
        # depend on the anchor, so it needs no gradient.
        anchor = xf[:, :1].mean(dim=-1, keepdim=True).detach()
        xs = xf - anchor
        count = torch.arange(1, T + 1, device=x.device, dtype=torch.float32).view(1, T, 1)
        mean = xs.mean(dim=-1).cumsum(dim=1) / count  # (B, T, G); equal group sizes make means of means exact
        meansq = (xs * xs).mean(dim=-1).cumsum(dim=1) / count
        var = (meansq - mean * mean).clamp_min(0.0)
        out = (xs - mean.unsqueeze(-1)) * torch.rsqrt(var + eps).unsqueeze(-1)
        return out.view(B, T, D) * (1.0 + weight.float()) + bias.float()


# ----------------------------------------------------------------------------------------------------------
# CEMA


def cema_kernel(alpha, delta, theta, gamma, length: int) -> torch.Tensor:
    """K[d, j] = sum_n p r^j (g0 cos(j phi) - g1 sin(j phi)) / sqrt(N), (D, length) fp32, in real arithmetic.

    Powers come from magnitude and phase (exp(j log r), j phi) rather than a cumulative product, so there is
    no drift along j and nothing complex to compile.
    """
    D, N = alpha.shape
    alpha, delta, theta, gamma = alpha.float(), delta.float(), theta.float(), gamma.float()
    p = torch.sigmoid(alpha)
    # log1p keeps precision when p*sigmoid(delta) is small; the clamp only matters when it rounds to 1 (r=0),
    # where it turns 0 * log 0 = nan at j=0 into r^0 = 1 and leaves r^j ~ 0 for j >= 1.
    log_r = torch.log1p(-p * torch.sigmoid(delta)).clamp_min(-80.0)
    phi = torch.arange(1, N + 1, device=alpha.device, dtype=torch.float32) * (
        torch.sigmoid(theta)[:, None] * (2 * math.pi / N)
    )
    j = torch.arange(length, device=alpha.device, dtype=torch.float32)
    mag = torch.exp(log_r[..., None] * j)  # (D, N, L)
    ang = phi[..., None] * j
    wave = gamma[..., 0:1] * torch.cos(ang) - gamma[..., 1:2] * torch.sin(ang)
    return (p[..., None] * mag * wave).sum(dim=1) / math.sqrt(N)


@torch.compiler.disable
def fft_causal_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """y[b, d, t] = sum_{s<=t} kernel[d, s] x[b, d, t-s], x (B, D, T), by fp32 FFT of length next_pow2(2T).

    Kept out of torch.compile: complex FFTs and their autograd stay in eager, the rest of the model compiles.
    Padding to >= 2T makes the circular convolution linear.
    """
    T = x.shape[-1]
    n_fft = 1 << math.ceil(math.log2(2 * T))
    xf = torch.fft.rfft(x.float(), n=n_fft)
    kf = torch.fft.rfft(kernel.float(), n=n_fft)
    return torch.fft.irfft(xf * kf, n=n_fft)[..., :T]


def cema(x: torch.Tensor, alpha, delta, theta, gamma, omega) -> torch.Tensor:
    """y = causal_conv(x, K) + omega x over x (B, T, D), fp32."""
    with _fp32_region(x):
        xf = x.float()
        kernel = cema_kernel(alpha, delta, theta, gamma, x.shape[1])
        y = fft_causal_conv(xf.transpose(1, 2), kernel).transpose(1, 2)
        return y + omega.float() * xf


# ----------------------------------------------------------------------------------------------------------
# Chunked attention


def rope_tables(length: int, dim: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin fp32 (length, dim/2) of angle pos · base^(-2i/dim), computed in float64 on ``device`` (as the JAX
    model's)."""
    inv_freq = base ** (-2.0 * torch.arange(dim // 2, device=device, dtype=torch.float64) / dim)
    angle = torch.arange(length, device=device, dtype=torch.float64)[:, None] * inv_freq
    return torch.cos(angle).float(), torch.sin(angle).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Adjacent pairs (a, b) -> (a cos - b sin, a sin + b cos); x (..., L, H, d), tables (L, d/2)."""
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[:, None, :], sin[:, None, :]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def chunked_attention(q, k, v, chunk: int, rope_base: float) -> torch.Tensor:
    """Causal softmax(q k^T) v (scale 1) inside each chunk of `chunk` positions, RoPE restarting per chunk.

    q, k: (B, T, H, dq); v: (B, T, H, dv). Chunks are folded into the batch so attention can never cross a
    chunk boundary. A last partial chunk is zero-padded: padding sits after every real query, so causality
    keeps it invisible.
    """
    B, T, H, _ = q.shape
    C = min(chunk, T)
    pad = (-T) % C
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    n = (T + pad) // C
    fold = lambda t: t.reshape(B * n, C, H, t.shape[-1])  # noqa: E731
    q, k, v = fold(q), fold(k), fold(v)
    cos, sin = rope_tables(C, q.shape[-1], rope_base, q.device)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if q.device.type == "cpu" and q.shape[-1] != v.shape[-1] and not torch.is_autocast_enabled("cpu"):
        # fp32 on the CPU: SDPA has no fused kernel for a value head dim different from the q/k one and falls
        # back to its unfused math path (mask building, copies, checks); the plain ops are the same math.
        future = torch.ones(C, C, dtype=torch.bool, device=q.device).triu(1)
        scores = torch.matmul(q, k.transpose(-1, -2)).masked_fill(future, float("-inf"))
        o = torch.matmul(torch.softmax(scores, dim=-1).to(v.dtype), v)
    else:  # scale=1 because q, k are already normalised
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
    return o.transpose(1, 2).reshape(B, n * C, H, -1)[:, :T]


# ----------------------------------------------------------------------------------------------------------
# Modules (attribute paths = canonical names)


class Norm(nn.Module):
    """Affine offsets of a norm: the applied scale is 1 + weight."""

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None


class CEMA(nn.Module):
    """Megalodon's complex exponential moving average (Ma et al. 2024, §3.1; the released code's form, which
    megalodon-jax and megalodon-hf follow: real input gain p, phase only in q). Parameters fp32: alpha, delta
    (D, N), theta (D,), gamma (D, N, 2) = (real, imaginary) of eta·sqrt(N), omega (D,).
    """

    def __init__(self, dim: int, ndim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(dim, ndim))
        self.delta = nn.Parameter(torch.zeros(dim, ndim))
        self.theta = nn.Parameter(torch.zeros(dim))
        self.gamma = nn.Parameter(torch.zeros(dim, ndim, 2))  # (real, imaginary) of eta * sqrt(N)
        self.omega = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> fp32 (B, T, D): causal_conv(x, K) + omega·x, computed in fp32 with autocast off."""
        return cema(x, self.alpha, self.delta, self.theta, self.gamma, self.omega)


class FFN(nn.Module):
    """Megalodon's feed-forward: w2(silu(w1 x) ⊙ w3 x) with ``swiglu``, else w2(silu(w1 x)); no biases."""

    def __init__(self, dim: int, hidden: int, swiglu: bool):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False) if swiglu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        a = F.silu(self.w1(x))
        return self.w2(a * self.w3(x) if self.w3 is not None else a)


class MegalodonLayer(nn.Module):
    """One Megalodon block (Ma et al. 2024, §3; the released code's MegaBlock): TimestepNorm -> CEMA -> RMSNorm
    gives mx; h = wh1(mx) + wh2(chunked normalized attention gated by silu(wr(mx))), with V from the
    TimestepNorm output; then the two-hop residual x + FFN(LayerNorm(x + h)).
    """

    def __init__(self, c: dict):
        super().__init__()
        D, Z, E = c["model_dim"], c["z_dim"], c["value_dim"]
        self.c = c
        self.tsnorm = Norm(D)
        self.cema = CEMA(D, c["cema_ndim"])
        self.rmsnorm = Norm(D, bias=False)
        self.wz = nn.Linear(D, Z)
        self.qk_gamma = nn.Parameter(torch.zeros(2, Z))
        self.qk_beta = nn.Parameter(torch.zeros(2, Z))
        self.wv = nn.Linear(D, E)
        self.wr = nn.Linear(D, E)
        self.wh1 = nn.Linear(D, D)
        self.wh2 = nn.Linear(E, D, bias=False)
        self.ffn_norm = Norm(D)
        self.ffn = FFN(D, c["ffn_hidden_dim"], c["swiglu"])

    def attention(self, mx: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
        """The chunked-attention branch output o * r, (B, T, E)."""
        c, eps = self.c, self.c["norm_eps"]
        B, T, _ = mx.shape
        H = c["num_heads"]
        zh = c["z_dim"] // H
        z = self.wz(mx).view(B, T, H, zh)
        with _fp32_region(z):
            z = z.float()
            z = z * torch.rsqrt(z.pow(2).mean(dim=-1, keepdim=True) + eps)
            gamma = (1.0 + self.qk_gamma.float()).view(2, H, zh) / math.sqrt(zh)
            beta = self.qk_beta.float().view(2, H, zh)
            q, k = z * gamma[0] + beta[0], z * gamma[1] + beta[1]
        v = F.silu(self.wv(xt)).view(B, T, H, -1)
        r = F.silu(self.wr(mx))
        o = chunked_attention(q, k, v, c["chunk_size"], c["rope_base"])
        return o.reshape(B, T, -1).to(r.dtype) * r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D); the norms, CEMA and the Q/K affine run in fp32 even under autocast."""
        c, eps = self.c, self.c["norm_eps"]
        xt = timestep_norm(x, self.tsnorm.weight, self.tsnorm.bias, c["norm_num_groups"], eps)
        cx = self.cema(xt)
        with _fp32_region(cx):
            mx = cx * torch.rsqrt(cx.pow(2).mean(dim=-1, keepdim=True) + eps) * (1.0 + self.rmsnorm.weight.float())
        h = self.wh1(mx) + self.wh2(self.attention(mx, xt))
        y = x + h
        with _fp32_region(y):
            n = F.layer_norm(
                y.float(), (y.shape[-1],), 1.0 + self.ffn_norm.weight.float(), self.ffn_norm.bias.float(), eps
            )
        return x + self.ffn(n)


class Megalodon(nn.Module):
    """Token ids (B, T) -> fp32 logits (B, T, V); with targets (B, T), the mean cross-entropy instead."""

    def __init__(self, config: dict):
        super().__init__()
        c = self.config = dict(config)
        D, V = c["model_dim"], c["vocab_size"]
        self.embed = nn.Embedding(V, D)
        self.layers = nn.ModuleList(MegalodonLayer(c) for _ in range(c["num_layers"]))
        self.final_norm = Norm(D)
        self.lm_head = None if c["tied_embeddings"] else nn.Linear(D, V, bias=False)
        self.exact_logits = False  # the scorer sets it: fp32 logits under autocast (lm_head)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids int64 (B, T) -> fp32 logits (B, T, V) (the stack applied ``loops`` times, then TimestepNorm and
        the head, tied to the embedding unless ``tied_embeddings`` is off); with ``targets`` (B, T), the mean
        cross-entropy in nats per token (scalar).
        """
        c = self.config
        x = self.embed(idx)
        for _ in range(c["loops"]):  # a looped model reapplies the whole stack
            for layer in self.layers:
                x = layer(x)
        h = timestep_norm(x, self.final_norm.weight, self.final_norm.bias, c["norm_num_groups"], c["norm_eps"])
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        logits = lm_head(h, head, self.exact_logits)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def build_megalodon(config: dict, weights: dict | None = None) -> Megalodon:
    """A Megalodon module holding `weights` (canonical name -> array), fp32, on the CPU."""
    model = Megalodon(config)
    if weights is not None:
        state = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in weights.items()}
        model.load_state_dict(state, strict=True)
    return model
