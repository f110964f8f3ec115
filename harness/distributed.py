"""Many processes, one run: the small collective the harness needs from a backend, and the logic built on it.

The harness decides everything that must agree across processes (when to stop, the learning-rate scale, the
seconds charged, which evaluation windows each process scores) on process 0 and broadcasts it, so no
process ever decides alone on its own clock. A backend provides only the transport: ``Collective`` (rank,
world size, a float64 sum over processes and a float64 broadcast from process 0), in torch over
``torch.distributed`` (gloo on CPU, NCCL on GPUs), in JAX over ``jax.distributed`` (see docs/architecture.md,
"Processes and devices").

Process identity follows torchrun's environment for every backend: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``; `golf run --nproc-per-node N` sets them for JAX processes as torchrun does
for torch ones.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np

from golfbench.harness.errors import GolfError


def env_rank() -> int:
    """This process's rank from the launcher's environment (0 when not launched as a group)."""
    return int(os.environ.get("RANK", "0"))


def env_world_size() -> int:
    """Number of processes in the run from the launcher's environment (1 when not launched as a group)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@runtime_checkable
class Collective(Protocol):
    """Transport between the processes of one run. Every method is collective: all processes call it, in the
    same order, with arrays of the same length.

    ``values`` are 1-D float64 arrays; results are float64 arrays of the same shape, bit-identical on every
    process (a sum is reduced in one fixed order and then shared).
    """

    rank: int
    world_size: int

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum over processes; float64 (n,) -> float64 (n,)."""

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Process 0's ``values`` on every process; float64 (n,) -> float64 (n,)."""

    def step_sync(self, control: np.ndarray, loss) -> tuple[np.ndarray, float]:
        """The training loop's one host sync per step: process 0's ``control`` float64 (k,) on every process and
        the step's global loss as a Python float, in ONE transport call. ``loss`` is what the backend's
        ``train_step`` returned as ``metrics["loss"]`` (a float, or a lazy device value: ``float(loss)`` gives the
        global mean loss, this process's share summed over processes), read here for the first time."""


class SingleProcess:
    """The collective of a run with one process: identity operations."""

    rank = 0
    world_size = 1

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Returns a float64 copy of ``values``."""
        return np.array(values, dtype=np.float64).reshape(-1)

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Returns a float64 copy of ``values``."""
        return np.array(values, dtype=np.float64).reshape(-1)

    def step_sync(self, control: np.ndarray, loss) -> tuple[np.ndarray, float]:
        """(a float64 copy of ``control``, ``float(loss)``): the loss read is the step's one host sync."""
        return np.array(control, dtype=np.float64).reshape(-1), float(loss)


SINGLE = SingleProcess()


def as_f64(values) -> np.ndarray:
    """Any scalar or sequence of numbers as a contiguous 1-D float64 array (what a Collective carries)."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1))


# A sha256 digest travels as four float64 numbers of 48 bits each (integers below 2**53 are exact in float64,
# whatever the transport does with them).
_DIGEST_CHUNK = 6


def digest_to_f64(hexdigest: str) -> np.ndarray:
    """The first 24 bytes of a hex digest as four exact float64 integers (each < 2**48)."""
    raw = bytes.fromhex(hexdigest)[: 4 * _DIGEST_CHUNK]
    return as_f64([int.from_bytes(raw[i : i + _DIGEST_CHUNK], "big") for i in range(0, len(raw), _DIGEST_CHUNK)])


def weights_digest(weights: dict[str, np.ndarray]) -> str:
    """sha256 over the canonical weights (sorted names, shapes, raw float32 bytes): equal iff bit-identical."""
    h = hashlib.sha256()
    for name in sorted(weights):
        a = np.ascontiguousarray(weights[name], dtype=np.float32)
        h.update(name.encode("utf-8") + b"\0" + repr(a.shape).encode("ascii") + b"\0")
        h.update(a.tobytes())
    return h.hexdigest()


def replicas_identical(coll: Collective, hexdigest: str) -> bool:
    """True on every process iff every process's ``hexdigest`` equals process 0's (collective)."""
    mine = digest_to_f64(hexdigest)
    root = coll.broadcast(mine)
    mismatches = coll.all_reduce_sum(as_f64([0.0 if np.array_equal(mine, root) else 1.0]))
    return bool(mismatches[0] == 0.0)


def check_world(world_size: int, batch_rows: int, devices_per_process: int = 1) -> None:
    """Refuse a layout in which some process (or device) would never see a real row of a full batch.

    Raises GolfError naming the batch, the world size and the fix.
    """
    if world_size < 1:
        raise GolfError(f"world size must be at least 1, got {world_size}")
    shards = world_size * max(1, devices_per_process)
    if batch_rows < shards:
        raise GolfError(
            f"a training batch of {batch_rows} sequence(s) cannot feed {shards} data-parallel shard(s)"
            f" ({world_size} process(es) × {max(1, devices_per_process)} device(s)): raise train_batch_tokens"
            f" to at least {shards} sequences or use fewer processes"
        )


def pad_rows(batch: np.ndarray, multiple: int, rows: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Append zero rows so the row count is at least ``rows`` and divides by ``multiple``.

    batch: int32 (B, T+1). Returns (padded int32 (B', T+1), row_weight float32 (B',)) with B' the least
    multiple of ``multiple`` >= max(B, rows); weight 1 for real rows, 0 for padding. Both backends train on the
    weighted mean over real rows, so padding never changes a loss or a gradient.
    """
    batch = np.ascontiguousarray(batch)
    n = batch.shape[0]
    target = max(n, int(rows))
    extra = target - n + (-target) % max(1, multiple)
    if extra:
        batch = np.concatenate([batch, np.zeros((extra, *batch.shape[1:]), batch.dtype)])
    weight = (np.arange(batch.shape[0]) < n).astype(np.float32)
    return batch, weight


def fixed_data_plan(budget_tokens: float, seq_len: int, batch_rows: int) -> list[int]:
    """Rows per step for the fixed-data track: full batches, then one short batch with the remainder.

    The budget is consumed in whole sequences (``budget_tokens // seq_len`` of them), independently of the
    world size: a short last batch is padded with zero-weight rows by the backend, never rounded down.
    Returns a list of positive ints whose sum is the number of sequences.
    """
    total = int(budget_tokens) // int(seq_len)
    full, rest = divmod(total, int(batch_rows))
    return [int(batch_rows)] * full + ([rest] if rest else [])
