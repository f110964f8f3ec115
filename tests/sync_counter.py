"""A stand-in that counts host syncs: device-to-host reads and torch.distributed collectives issued by golfbench.

A host sync is a place where the host waits for the device (or for its peers): reading a tensor's value
(``item``, ``float()``, ``int()``, ``bool()``, ``tolist``, ``cpu``). On a GPU those are the calls that block; on
the CPU they are the same call sites, so counting them on the CPU counts what would block on a GPU. Only calls made
from golfbench's own source count: torch's CPU optimizers read their step counters with ``.item()`` where the fused
CUDA kernels do not, and the count is about the harness and the backends, not torch internals.

In-process: ``with counting() as counts: ...``. In launched ranks: put this folder's ``sitecustomize`` on
PYTHONPATH with GOLF_SYNC_COUNT_DIR set; each process writes ``rank-<RANK>.json`` at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

READS = ("item", "__float__", "__int__", "__bool__", "tolist", "cpu")
COLLECTIVES = ("all_gather", "all_reduce", "broadcast", "reduce_scatter_tensor", "all_gather_into_tensor", "barrier")
_ROOTS: tuple[str, ...] = ()


def _roots() -> tuple[str, ...]:
    """The folders of the golfbench.harness and golfbench.backends packages this interpreter imports."""
    global _ROOTS
    if not _ROOTS:
        import golfbench.backends
        import golfbench.harness

        _ROOTS = tuple(str(Path(p.__file__).parent) for p in (golfbench.harness, golfbench.backends))
    return _ROOTS


def _ours(depth: int = 2) -> str | None:
    """The golfbench file that made the call, or None."""
    name = sys._getframe(depth).f_code.co_filename
    return name if name.startswith(_roots()) else None


def install(counts: Counter) -> list:
    """Patch torch.Tensor's reads and torch.distributed's collectives to count calls from golfbench into
    ``counts`` (keys "read", "collective", and "read:<file>"/"collective:<file>"). Returns the undo list."""
    import torch
    import torch.distributed as dist

    undo = []

    def wrap(owner, name: str, kind: str):
        real = getattr(owner, name)

        def counted(*args, **kwargs):
            where = _ours()
            if where is not None:
                counts[kind] += 1
                counts[f"{kind}:{Path(where).name}"] += 1
            return real(*args, **kwargs)

        setattr(owner, name, counted)
        undo.append((owner, name, real))

    for name in READS:
        wrap(torch.Tensor, name, "read")
    for name in COLLECTIVES:
        if hasattr(dist, name):
            wrap(dist, name, "collective")
    return undo


@contextlib.contextmanager
def counting():
    """Count host syncs made by golfbench inside the block (in this process)."""
    counts: Counter = Counter()
    undo = install(counts)
    try:
        yield counts
    finally:
        for owner, name, real in reversed(undo):
            setattr(owner, name, real)


def install_for_rank() -> None:
    """sitecustomize entry: count for the whole process, write the counts at exit."""
    out = os.environ.get("GOLF_SYNC_COUNT_DIR")
    if not out:
        return
    counts: Counter = Counter()
    install(counts)

    def dump() -> None:
        path = Path(out) / f"rank-{os.environ.get('RANK', '0')}-{os.getpid()}.json"
        path.write_text(json.dumps({"rank": os.environ.get("RANK"), **counts}), encoding="utf-8")

    atexit.register(dump)
