"""Muon: momentum SGD whose update for each 2-D matrix is replaced by its nearest semi-orthogonal matrix.

Our own small implementation (older CUDA torch builds lack ``torch.optim.Muon``). The orthogonalization is
a quintic Newton-Schulz iteration: bf16 on CUDA for speed, fp32 on CPU so CPU runs stay bit-reproducible.
Under torch.distributed every rank keeps the full momentum (gradients are already all-reduced, so it is
identical everywhere and a rank-0 checkpoint is complete) but orthogonalizes only its round-robin share of
the matrices; one flat all-reduce then hands every rank every update.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """The nearest semi-orthogonal matrix to the 2-D ``g``, approximately: ``steps`` quintic Newton–Schulz
    iterations with coefficients (3.4445, -4.7750, 2.0315) after scaling g to unit Frobenius norm (Muon, Keller
    Jordan 2024, as in modded-nanogpt and parameter-golf's train_gpt.py). Computed and returned in bf16 on
    CUDA, fp32 on CPU; same shape as ``g``.
    """
    a, b, c = NS_COEFFS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    x = x / (x.norm() + eps)  # the iteration converges only for singular values <= 1
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


_ORTHOGONALIZE: dict[tuple, object] = {}


def _orthogonalize_fn(device: torch.device):
    """Compiled where the backend compiles (a large share of the step time on GPUs; backend.compiled: CUDA, or any
    device with GOLF_TORCH_COMPILE); eager on CPU otherwise. One compiled function per (device type, setting)."""
    from golfbench.backends.torch.backend import COMPILE_ENV, compiled

    key = (device.type, os.environ.get(COMPILE_ENV, ""))
    if key not in _ORTHOGONALIZE:
        _ORTHOGONALIZE[key] = compiled(orthogonalize, device)
    return _ORTHOGONALIZE[key]


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Muon(torch.optim.Optimizer):
    """Nesterov momentum + Newton-Schulz orthogonalization, update scaled by sqrt(max(1, rows/cols)) (Muon,
    Keller Jordan 2024; parameter-golf's train_gpt.py). ``lr`` is the step size of the orthogonalized update;
    ``backend_steps`` the Newton–Schulz iterations. Raises ValueError for a parameter that is not 2-D."""

    def __init__(self, params, lr: float, momentum: float = 0.95, backend_steps: int = 5, nesterov: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, backend_steps=backend_steps, nesterov=nesterov))
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon takes 2-D matrices only, got a parameter of shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every matrix with a gradient: buf <- momentum·buf + grad; direction grad + momentum·buf
        (Nesterov) or buf; orthogonalized and scaled by sqrt(max(1, rows/cols)); p <- p - lr·update. Under
        torch.distributed each rank orthogonalizes its round-robin share and one flat all-reduce (bf16 on CUDA,
        fp32 on CPU) shares the updates. Returns ``closure()``'s loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world = _world()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            ortho = _orthogonalize_fn(params[0].device)
            momentum = group["momentum"]
            flat = torch.zeros(
                sum(p.numel() for p in params),
                device=params[0].device,
                dtype=torch.bfloat16 if params[0].is_cuda else torch.float32,
            )
            offset = 0
            for i, p in enumerate(params):
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                buf.mul_(momentum).add_(p.grad)
                if i % world == rank:
                    g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                    update = ortho(g, group["backend_steps"]) * max(1.0, p.size(0) / p.size(1)) ** 0.5
                    flat[offset : offset + p.numel()] = update.reshape(-1)
                offset += p.numel()
            if world > 1:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for p in params:
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return loss
