"""The llama training recipe: which parameter goes to which optimizer, and the per-step schedule.

Every param group carries ``base_lr``; the backend sets ``lr = base_lr * lr_scale`` before each step, so the
harness's one schedule drives every group.
"""

from __future__ import annotations

import torch
from torch import nn

from backends.torch.muon import Muon
from harness.models import get_spec


def adam(params: list[nn.Parameter], lr: float, config: dict) -> torch.optim.Adam:
    fused = bool(params) and params[0].is_cuda  # fused Adam is the fast path on GPUs; CPU keeps the default
    return torch.optim.Adam(
        [{"params": params, "lr": lr, "base_lr": lr}],
        betas=(config["beta1"], config["beta2"]),
        eps=config["adam_eps"],
        fused=fused or None,
    )


def llama_optimizers(model: nn.Module, config: dict) -> list[torch.optim.Optimizer]:
    """Muon on the 2-D block matrices; Adam on the tied embedding and on every vector/control tensor."""
    spec = get_spec("llama")
    matrices, scalars = [], [model.skip_weights]
    for name, p in model.blocks.named_parameters():
        # resid_mix is 2-D but a control tensor (the spec says which), not a matrix to orthogonalize
        (matrices if p.ndim == 2 and not spec.is_control(name) else scalars).append(p)
    muon = Muon(matrices, lr=config["matrix_lr"], backend_steps=config["muon_backend_steps"])
    for group in muon.param_groups:
        group["base_lr"] = config["matrix_lr"]
    return [
        adam([model.tok_emb.weight], config["tied_embed_lr"], config),
        muon,
        adam(scalars, config["scalar_lr"], config),
    ]


def llama_before_update(model: nn.Module, optimizers: list[torch.optim.Optimizer], config: dict, step: int) -> None:
    """Muon momentum warms linearly from muon_momentum_warmup_start to muon_momentum; step counts from 0."""
    warm = config["muon_momentum_warmup_steps"]
    frac = min(step / warm, 1.0) if warm > 0 else 1.0
    momentum = (1 - frac) * config["muon_momentum_warmup_start"] + frac * config["muon_momentum"]
    for opt in optimizers:
        if isinstance(opt, Muon):
            for group in opt.param_groups:
                group["momentum"] = momentum
