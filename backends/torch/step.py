"""One torch training step, lean enough for 8×H100: the batch prepared ahead, the loss in the compiled graph, no
host sync.

- ``prepare_batch`` turns a global batch into this rank's device tensors (its rows, padded, int64, pinned, copied
  with ``non_blocking``); the runner calls it for step k+1 while step k runs on the GPU.
- ``SummedNLL`` wraps the model so that softcap (inside the model's logits) and cross-entropy are one module: the
  backend compiles and DDP-wraps this wrapper, so the loss is fused into the training graph (as parameter-golf's
  ``GPT.forward(x, y)``), not run eagerly on the (rows, T, V) fp32 logits.
- ``train_step`` queues forward, backward and the optimizer update and returns a ``PendingLoss``: this rank's share
  of the global mean loss, still on the device. Nothing here reads a value back to the host; the harness reads the
  loss once per step, in the same collective as its stop decision (``TorchCollective.step_sync``).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from golfbench.harness.distributed import pad_rows
from golfbench.harness.models import check_tokens

IGNORE_INDEX = -100  # targets of zero-weight padding rows


class SummedNLL(nn.Module):
    """``forward(inputs int64 (R, T), targets int64 (R, T)) -> fp32 scalar``: the summed next-token NLL in nats of
    ``model(inputs)`` (softcapped logits, taken in fp32) against ``targets``; targets equal to IGNORE_INDEX (-100)
    add nothing. Holds no parameters of its own: its ``model.`` parameters are the model's."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """inputs, targets int64 (R, T) -> the summed NLL over targets != IGNORE_INDEX, fp32 scalar (nats)."""
        logits = self.model(inputs)
        return F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )


@dataclass
class TorchBatch:
    """A global batch prepared for this rank: ``tokens`` int64 (rows, T+1) on the device (this rank's rows of the
    padded batch), ``keep`` bool (rows,) on the device (False for zero-weight padding rows), and ``real_rows``, the
    global batch's real row count (the loss's denominator is real_rows·T)."""

    tokens: torch.Tensor
    keep: torch.Tensor
    real_rows: int


class PendingLoss:
    """The loss of a step still on the device: ``share`` fp32 0-d, this rank's summed NLL / (B·T), so the global mean
    loss is the sum of the shares over ranks. ``float()`` reads it (summed over ranks in float32: a collective);
    the runner instead hands it to ``TorchCollective.step_sync``, which reads it together with the stop decision."""

    def __init__(self, share: torch.Tensor, world: int):
        self.share, self.world = share, world

    def __float__(self) -> float:
        loss = self.share.detach().clone()
        if self.world > 1:
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
        return float(loss)


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


def prepare_batch(state, batch: np.ndarray) -> TorchBatch:
    """This rank's part of the global ``batch`` int32 (B, T+1), whose token ids were already checked (a
    BatchStream checks each shard once, when it loads it).

    Rows are padded with zero-weight rows to a multiple of the world size (golfbench.harness.distributed.pad_rows),
    and, when the training graph is compiled, to the full batch's row count first (``state.batch_rows``), so a short
    last fixed-data batch reuses the compiled graph instead of recompiling inside the timed loop. The host work
    (slice, int64, pin) and the non-blocking copy run while the previous step is still on the GPU.
    """
    batch = np.asarray(batch)
    real = int(batch.shape[0])
    state.batch_rows = max(state.batch_rows, real)
    full = state.batch_rows if state.compiled else real
    padded, weight = pad_rows(batch, state.world, rows=full)
    per = padded.shape[0] // state.world
    mine = slice(state.rank * per, (state.rank + 1) * per)
    tokens = _to_device(np.ascontiguousarray(padded[mine], dtype=np.int64), state.device)
    keep = _to_device(np.ascontiguousarray(weight[mine] > 0), state.device)
    return TorchBatch(tokens, keep, real)


def micro_rows(state, shape) -> int:
    """Rows per micro-batch: everything at once on CPU, at most GOLF_MICRO_BATCH_TOKENS (default 65,536) on GPU."""
    if state.device.type != "cuda":
        return shape[0]
    budget = int(os.environ.get("GOLF_MICRO_BATCH_TOKENS", "65536"))
    return max(1, min(shape[0], budget // max(1, shape[1] - 1)))


def train_step(state, batch, lr_scale: float, autocast) -> tuple[object, dict]:
    """One optimizer step on ``batch``: a TorchBatch from ``prepare_batch``, or a global int32 (B, T+1) array (checked
    with check_tokens, then prepared). The loss is the mean NLL over the real rows of the global batch: each
    micro-batch contributes its summed NLL over real targets / (B·T), times the world size because DDP averages
    gradients over ranks. ``autocast(device)`` is the backend's mixed-precision context. Returns (state,
    {"loss": PendingLoss}); nothing is read back to the host.
    """
    if not isinstance(batch, TorchBatch):
        batch = prepare_batch(state, check_tokens(batch, state.config["vocab_size"]))
    tokens = batch.tokens
    targets = torch.where(batch.keep[:, None], tokens[:, 1:], IGNORE_INDEX)  # no boolean indexing: no sync
    denom = float(batch.real_rows * (tokens.shape[1] - 1))
    for opt in state.optimizers:
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
    # Gradient accumulation keeps the global batch independent of memory: a 524,288-token step on one GPU runs as
    # micro-batches; on CPU (small dev batches) it is one pass.
    rows = micro_rows(state, tokens.shape)
    starts = range(0, tokens.shape[0], rows)
    loss = torch.zeros((), device=state.device)
    for i, r0 in enumerate(starts):
        last = i == len(starts) - 1
        sync = contextlib.nullcontext() if last or state.world == 1 else state.train_model.no_sync()
        with sync, autocast(state.device):
            part = state.train_model(tokens[r0 : r0 + rows, :-1], targets[r0 : r0 + rows]) / denom
        (part * state.world).backward()
        loss = loss + part.detach()
    state.family.before_update(state.model, state.optimizers, state.config, state.step)
    for opt in state.optimizers:
        opt.step()
        opt.zero_grad(set_to_none=True)  # between steps the state holds no gradients
    state.step += 1
    return state, {"loss": PendingLoss(loss, state.world)}
