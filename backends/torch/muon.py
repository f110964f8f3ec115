"""Muon: momentum SGD whose update for each 2-D matrix is replaced by its nearest semi-orthogonal matrix.

Our own small implementation (older CUDA torch builds lack ``torch.optim.Muon``). The orthogonalization is
a quintic Newton-Schulz iteration: bf16 on CUDA for speed, fp32 on CPU so CPU runs stay bit-reproducible.

Under torch.distributed the matrices are dealt round-robin, as in parameter-golf's train_gpt.py: matrix i (counted
over every param group in order, the index of the optimizer's state_dict) belongs to rank i % world. A rank keeps
and updates the momentum of its own matrices only and orthogonalizes them; one flat all-reduce (zeros in the other
ranks' slots) then hands every rank every update. Gradients are already all-reduced, so the updates are the same
bits as if every rank did everything. The momenta are thus spread over the ranks: ``full_state_dict`` gathers them
(a collective, at checkpoint time) into the complete state dict one process would hold, and ``load_state_dict``
keeps this rank's share of any state dict, so a checkpoint does not depend on the world size.
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
    ``backend_steps`` the Newton–Schulz iterations. Raises ValueError for a parameter that is not 2-D.
    Under torch.distributed this rank's ``state`` holds the momenta of its own matrices only (module docstring).
    """

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
        torch.distributed each rank does this for the matrices it owns (i % world == rank) and one flat
        all-reduce per param group (bf16 on CUDA, fp32 on CPU) shares the updates. Returns ``closure()``'s loss,
        or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rank, world = _world()
        first = 0  # the global index of the group's first matrix
        for group in self.param_groups:
            live = [(i, p) for i, p in enumerate(group["params"], start=first) if p.grad is not None]
            first += len(group["params"])
            if not live:
                continue
            device = live[0][1].device
            ortho = _orthogonalize_fn(device)
            momentum = group["momentum"]
            flat = torch.zeros(
                sum(p.numel() for _, p in live),
                device=device,
                dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
            )
            offset = 0
            for i, p in live:
                if i % world == rank:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is None:
                        buf = self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf.mul_(momentum).add_(p.grad)
                    g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                    update = ortho(g, group["backend_steps"]) * max(1.0, p.size(0) / p.size(1)) ** 0.5
                    flat[offset : offset + p.numel()] = update.reshape(-1)
                offset += p.numel()
            if world > 1:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            offset = 0
            for _, p in live:
                p.add_(flat[offset : offset + p.numel()].view_as(p).to(p.dtype), alpha=-group["lr"])
                offset += p.numel()
        return loss

    def full_state_dict(self) -> dict:
        """The complete state dict, as one process holding every momentum would return from ``state_dict()``:
        {"state": {matrix index: {"momentum_buffer": tensor shaped and typed like the matrix}}, "param_groups"}.

        Under torch.distributed this is a collective that every rank must call at the same point: each rank's
        momenta travel in one ``all_gather`` of a flat tensor on the matrices' device (padded to the largest
        share), and every rank returns the whole dict. A matrix that has no momentum yet (before its first step)
        has no entry, as in ``state_dict()``. Raises ValueError when the matrices differ in dtype or device.
        """
        local = self.state_dict()
        rank, world = _world()
        if world == 1:
            return local
        params = [p for group in self.param_groups for p in group["params"]]
        if len({(p.dtype, p.device) for p in params}) != 1:
            raise ValueError("Muon.full_state_dict needs every matrix on one device in one dtype")
        shares = [range(r, len(params), world) for r in range(world)]
        # per share: one presence flag per matrix, then a fixed slot of numel per matrix
        size = max(len(s) + sum(params[i].numel() for i in s) for s in shares)
        send = torch.zeros(size, dtype=params[0].dtype, device=params[0].device)
        offset = len(shares[rank])
        for j, i in enumerate(shares[rank]):
            buf = local["state"].get(i, {}).get("momentum_buffer")
            if buf is not None:
                send[j] = 1
                send[offset : offset + buf.numel()] = buf.reshape(-1)
            offset += params[i].numel()
        parts = [torch.empty_like(send) for _ in range(world)]
        dist.all_gather(parts, send)
        state = {}
        for share, part in zip(shares, parts, strict=True):
            present = part[: len(share)].tolist()
            offset = len(share)
            for j, i in enumerate(share):
                n = params[i].numel()
                if present[j]:
                    state[i] = {"momentum_buffer": part[offset : offset + n].view_as(params[i]).clone()}
                offset += n
        return {"state": dict(sorted(state.items())), "param_groups": local["param_groups"]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load ``state_dict`` (complete, from ``full_state_dict`` on any world size, or this rank's own
        ``state_dict()``), keeping the momenta of only the matrices this rank owns (index % world == rank)."""
        rank, world = _world()
        mine = {k: v for k, v in state_dict["state"].items() if int(k) % world == rank}
        super().load_state_dict({**state_dict, "state": mine})
