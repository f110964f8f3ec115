"""The llama spec (parameter-golf's baseline GPT) as a torch module, exactly as docs/models.md states it.

Parameter names are the canonical names of golfbench.harness.models.llama_shapes, so ``state_dict()`` is the canonical
weight dict. Parameters stay fp32; on CUDA the backend runs the forward under bf16 autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms(x: torch.Tensor) -> torch.Tensor:
    """Weightless RMSNorm over the last axis (F.rms_norm, eps = the dtype's machine epsilon), as parameter-golf's
    train_gpt.py."""
    return F.rms_norm(x, (x.size(-1),))


def lm_head(x: torch.Tensor, weight: torch.Tensor, exact: bool) -> torch.Tensor:
    """fp32 logits x @ weight.T, x (..., d), weight (V, d) -> (..., V).

    Under autocast with ``exact`` (the scorer's bf16 rule) the inputs are rounded to the autocast dtype and
    multiplied with fp32 accumulation into an fp32 result (bf16 products are exact in fp32), as the JAX models'
    head does; without it, autocast's own matmul (its output rounded to bf16, as parameter-golf trains).
    """
    device = x.device.type
    if exact and torch.is_autocast_enabled(device):
        low = torch.get_autocast_dtype(device)
        with torch.autocast(device_type=device, enabled=False):
            return F.linear(x.to(low).float(), weight.to(low).float())
    return F.linear(x, weight).float()


def rotary(seq_len: int, head_dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of angle pos * base^(-2i/hd), computed in fp32 for any length (no cache to outgrow)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # half-split convention (x1 = first half, x2 = second half), as in parameter-golf
    """Half-split RoPE (parameter-golf's convention): x (..., T, hd) with tables cos/sin (T, hd/2), cast to x's
    dtype; returns x's shape and dtype.
    """
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


class Attention(nn.Module):
    """parameter-golf's attention (train_gpt.py): q, k, v projections (GQA: ``num_kv_heads`` k/v heads),
    QK-RMSNorm, half-split RoPE, a learned per-head ``q_gain`` on q, causal SDPA and an output projection.
    """

    def __init__(self, c: dict):
        super().__init__()
        d = c["model_dim"]
        self.num_heads, self.num_kv_heads = c["num_heads"], c["num_kv_heads"]
        self.head_dim = d // self.num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, kv_dim, bias=False)
        self.c_v = nn.Linear(d, kv_dim, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.q_gain = nn.Parameter(torch.empty(self.num_heads))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) and rotary tables (T, head_dim/2) -> (B, T, D)."""
        B, T, d = x.shape
        # (B, heads, T, hd): the layout SDPA expects
        q = self.c_q(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rotary(rms(q), cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        k = apply_rotary(rms(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.num_kv_heads != self.num_heads)
        return self.proj(y.transpose(1, 2).reshape(B, T, d))


class MLP(nn.Module):
    """parameter-golf's ReLU² MLP: proj(relu(fc(x))²), hidden width mlp_mult × D."""

    def __init__(self, c: dict):
        super().__init__()
        d = c["model_dim"]
        self.fc = nn.Linear(d, c["mlp_mult"] * d, bias=False)
        self.proj = nn.Linear(c["mlp_mult"] * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.proj(torch.relu(self.fc(x)).square())


class Block(nn.Module):
    """One transformer block of parameter-golf's train_gpt.py: x <- resid_mix[0]·x + resid_mix[1]·x0 (x0: the
    normed embedding), then pre-norm attention and MLP residuals scaled per channel by attn_scale and mlp_scale.
    """

    def __init__(self, c: dict):
        super().__init__()
        d = c["model_dim"]
        self.attn_scale = nn.Parameter(torch.empty(d))
        self.mlp_scale = nn.Parameter(torch.empty(d))
        self.resid_mix = nn.Parameter(torch.empty(2, d))
        self.attn = Attention(c)
        self.mlp = MLP(c)

    def forward(self, x, x0, cos, sin):
        """x, x0 (B, T, D) and rotary tables (T, head_dim/2) -> (B, T, D)."""
        x = self.resid_mix[0] * x + self.resid_mix[1] * x0
        x = x + self.attn_scale * self.attn(rms(x), cos, sin)
        return x + self.mlp_scale * self.mlp(rms(x))


class GPT(nn.Module):
    """forward(idx) -> softcapped fp32 logits (B, T, V); forward(idx, targets) -> mean cross-entropy."""

    def __init__(self, c: dict):
        super().__init__()
        self.n_enc = c["num_layers"] // 2
        self.head_dim = c["model_dim"] // c["num_heads"]
        self.rope_base = float(c["rope_base"])
        self.softcap = float(c["logit_softcap"])
        self.tok_emb = nn.Embedding(c["vocab_size"], c["model_dim"])
        self.skip_weights = nn.Parameter(torch.empty(min(self.n_enc, c["num_layers"] - self.n_enc), c["model_dim"]))
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["num_layers"]))
        self.exact_logits = False  # the scorer sets it: fp32 logits under autocast (lm_head)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids int64 (B, T) -> softcapped logits fp32 (B, T, V): normed embedding, encoder blocks, decoder
        blocks each adding its mirrored encoder output (U-Net skips), final RMSNorm, the tied head, then
        softcap·tanh(z / softcap).
        """
        cos, sin = rotary(idx.size(1), self.head_dim, self.rope_base, idx.device)
        x = x0 = rms(self.tok_emb(idx))
        skips = []
        for block in self.blocks[: self.n_enc]:
            x = block(x, x0, cos, sin)
            skips.append(x)
        for j, block in enumerate(self.blocks[self.n_enc :]):
            if skips:  # U-Net: decoder j takes the output of encoder n_enc-1-j
                x = x + self.skip_weights[j] * skips.pop()
            x = block(x, x0, cos, sin)
        # the softcap runs in fp32 even under autocast: tanh saturates coarsely in bf16
        logits = lm_head(rms(x), self.tok_emb.weight, self.exact_logits)
        return self.softcap * torch.tanh(logits / self.softcap)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``logits(idx)`` without ``targets``; with targets (B, T), the mean cross-entropy in nats per token
        (scalar)."""
        logits = self.logits(idx)
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
