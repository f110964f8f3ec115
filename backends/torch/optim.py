"""The training recipes of harness/models.py in torch: one optimizer per declared group, and the per-step schedule.

Which tensor goes to which optimizer, at which learning-rate key, and the Muon momentum schedule are declared
once, by canonical name, in the spec (``ModelSpec.optimizer_groups`` / ``momentum_schedule``); this module only
builds the torch optimizers from that declaration (the update math lives in torch.optim.Adam and muon.py).
Every param group carries ``base_lr``; the backend sets ``lr = base_lr * lr_scale`` before each step, so the
harness's one schedule drives every group.
"""

from __future__ import annotations

import torch
from torch import nn

from golfbench.backends.torch.muon import Muon
from golfbench.harness.errors import GolfError
from golfbench.harness.models import get_spec


def adam(params: list[nn.Parameter], lr: float, config: dict) -> torch.optim.Adam:
    """Adam (betas ``beta1``/``beta2``, ``adam_eps``, no weight decay) at ``lr``; fused on CUDA."""
    fused = bool(params) and params[0].is_cuda  # fused Adam is the fast path on GPUs; CPU keeps the default
    return torch.optim.Adam(
        [{"params": params, "lr": lr, "base_lr": lr}],
        betas=(config["beta1"], config["beta2"]),
        eps=config["adam_eps"],
        fused=fused or None,
    )


def build_optimizers(spec_name: str, model: nn.Module, config: dict) -> list[torch.optim.Optimizer]:
    """One optimizer per group of ``spec.optimizer_groups(config)``, in the declared order; each holds its
    tensors in ``model.named_parameters()`` order. Muon starts at the schedule's step-0 momentum with
    ``muon_backend_steps`` Newton-Schulz steps. GolfError if the module's parameter names are not exactly the
    spec's canonical names."""
    spec = get_spec(spec_name)
    params = dict(model.named_parameters())
    groups = spec.optimizer_groups(config)
    owner = {name: i for i, group in enumerate(groups) for name in group.tensors}
    if set(owner) != set(params):
        odd = sorted(set(owner) ^ set(params))
        raise GolfError(
            f"{spec_name}: the torch module's parameters differ from the spec's canonical names ({odd[:3]})"
        )
    momentum = spec.momentum_schedule(config).at(0)
    optimizers: list[torch.optim.Optimizer] = []
    for i, group in enumerate(groups):
        members = [p for name, p in params.items() if owner[name] == i]
        lr = config[group.lr_key]
        if group.optimizer == "muon":
            opt = Muon(members, lr=lr, momentum=momentum, backend_steps=config["muon_backend_steps"])
            for pg in opt.param_groups:
                pg["base_lr"] = lr
        elif group.optimizer == "adam":
            opt = adam(members, lr, config)
        else:
            raise GolfError(f"{spec_name}: optimizer group '{group.name}' names unknown optimizer '{group.optimizer}'")
        optimizers.append(opt)
    return optimizers


def set_muon_momentum(spec_name: str, optimizers: list[torch.optim.Optimizer], config: dict, step: int) -> None:
    """Give every Muon group the spec's momentum for ``step`` (counted from 0)."""
    momentum = get_spec(spec_name).momentum_schedule(config).at(step)
    for opt in optimizers:
        if isinstance(opt, Muon):
            for group in opt.param_groups:
                group["momentum"] = momentum


def llama_optimizers(model: nn.Module, config: dict) -> list[torch.optim.Optimizer]:
    """[Adam on the tied embedding, Muon on the block matrices, Adam on the control tensors] (the spec's groups)."""
    return build_optimizers("llama", model, config)


def llama_before_update(model: nn.Module, optimizers: list[torch.optim.Optimizer], config: dict, step: int) -> None:
    """Muon momentum warms linearly from muon_momentum_warmup_start to muon_momentum; step counts from 0."""
    set_muon_momentum("llama", optimizers, config, step)
