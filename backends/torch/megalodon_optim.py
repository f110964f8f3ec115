"""The megalodon training recipe (docs/models.md): Muon on the block matrices, Adam on the rest, grad clip.

The groups (which tensors Muon takes at ``matrix_lr``, which Adam takes at ``adam_lr``) and the constant
``muon_momentum`` are declared in harness/models.py (MEGALODON_GROUPS) and built by backends/torch/optim.py;
this module adds what is megalodon's own: no weight decay, and the global gradient-norm clip.
"""

from __future__ import annotations

import torch
from torch import nn

from golfbench.backends.torch.optim import build_optimizers, set_muon_momentum
from golfbench.harness.errors import GolfError


def megalodon_optimizers(model: nn.Module, config: dict) -> list[torch.optim.Optimizer]:
    """[Muon on the block matrices, Adam on everything else] (the spec's groups); refuses weight decay."""
    if config["weight_decay"]:
        # docs/models.md's recipe has no weight decay; refuse rather than silently train something else
        raise GolfError("megalodon: weight_decay is not part of the recipe in docs/models.md; leave it at 0")
    return build_optimizers("megalodon", model, config)


def megalodon_before_update(model: nn.Module, optimizers: list[torch.optim.Optimizer], config: dict, step: int) -> None:
    """Clip the global gradient norm (over every parameter, both optimizers) to ``grad_clip``; 0 disables."""
    if config["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config["grad_clip"])
    set_muon_momentum("megalodon", optimizers, config, step)  # constant for megalodon
