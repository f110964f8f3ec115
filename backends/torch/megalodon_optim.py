"""The megalodon training recipe (docs/models.md): Muon on the block matrices, Adam on the rest, grad clip.

Muon takes wz, wv, wr, wh1, wh2 and ffn.w1/w2/w3 at ``matrix_lr`` with constant ``muon_momentum``. Adam
(beta1/beta2 from the config, 0.9/0.98 by default) takes everything else at ``adam_lr``: the embedding and
lm_head (2-D, but not block matrices), CEMA, norm offsets, biases and the Q/K affine. Every group carries
``base_lr`` for the backend's lr_scale schedule, as in backends/torch/optim.py.
"""

from __future__ import annotations

import torch
from torch import nn

from backends.torch.megalodon import is_muon_param
from backends.torch.muon import Muon
from backends.torch.optim import adam
from harness.errors import GolfError


def megalodon_optimizers(model: nn.Module, config: dict) -> list[torch.optim.Optimizer]:
    if config["weight_decay"]:
        # docs/models.md's recipe has no weight decay; refuse rather than silently train something else
        raise GolfError("megalodon: weight_decay is not part of the recipe in docs/models.md; leave it at 0")
    matrices, rest = [], []
    for name, p in model.named_parameters():
        (matrices if is_muon_param(name) else rest).append(p)
    muon = Muon(matrices, lr=config["matrix_lr"], momentum=config["muon_momentum"], backend_steps=config["muon_backend_steps"])
    for group in muon.param_groups:
        group["base_lr"] = config["matrix_lr"]
    return [muon, adam(rest, config["adam_lr"], config)]


def megalodon_before_update(model: nn.Module, optimizers: list[torch.optim.Optimizer], config: dict, step: int) -> None:
    """Clip the global gradient norm (over every parameter, both optimizers) to ``grad_clip``; 0 disables."""
    if config["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
