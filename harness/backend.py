"""The Backend protocol and a lazy registry: the harness reaches a backend only by name.

A backend module exposes ``BACKEND``, an object with the members of :class:`Backend`. The registry maps a
name to a module path and imports it on first use, so ``golfbench[jax]`` works without torch and the reverse.

Batches are ``np.ndarray[int32, (B, T+1)]``: inputs are ``batch[:, :-1]``, targets ``batch[:, 1:]``.

A scorer is a callable ``score(tokens: int32 (B, T+1)) -> float32 (B, T)``: entry ``[b, t]`` is the NLL in nats
of ``tokens[b, t+1]`` given ``tokens[b, :t+1]``. It also offers ``logprobs(tokens, positions)`` where
``positions`` is an int array (n, 2) of ``(row, t)`` pairs; it returns float32 (n, V): the full log-distribution
of the token after position t in that row, so the evaluator can probe any scorer.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from golfbench.harness.distributed import Collective
from golfbench.harness.errors import GolfError

REGISTRY: dict[str, str] = {
    "torch": "golfbench.backends.torch.backend",
    "jax": "golfbench.backends.jax.backend",
}

INSTALL_HINT = {
    "torch": "pip install 'golfbench[torch]' (CPU: pip install torch==2.13.0)",
    "jax": "pip install 'golfbench[jax]'",
}


@runtime_checkable
class Scorer(Protocol):
    """What a backend's ``scorer`` returns: ``score(tokens int32 (B, T+1)) -> float32 (B, T)`` NLLs in nats, and
    ``logprobs`` (the module docstring states both). The evaluator decides which positions count.
    """

    def __call__(self, tokens: np.ndarray) -> np.ndarray: ...

    def logprobs(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """float32 (n, V): the log-distribution of the token after position t of row b, for each (b, t) of
        ``positions`` int (n, 2) over ``tokens`` int32 (B, T+1).
        """


@runtime_checkable
class Backend(Protocol):
    """What a framework provides to the harness, reached by name through `get_backend`. Batches are int32
    (B, T+1); weights cross the boundary as fp32 numpy arrays under the canonical names and shapes of
    harness/models.py; states are opaque to the harness. Methods raise GolfError for what the user can fix.

    Optional member (not required by this protocol; the runner looks for it): ``input_hessians(state, batches:
    list[np.ndarray int32 (B, T+1)]) -> dict[str, np.ndarray float64 (in, in)]``, keyed by canonical weight name:
    H = Σ x xᵀ over every input row x (float32, widened) reaching each 2-D weight used as a linear map while the
    model runs forward in fp32 on the inputs ``[:, :-1]`` of each batch. GPTQ (codec ``gptq_int6``, Frantar et al.
    2022) needs it; weights missing from the dict are rounded instead. A backend without it is refused for that
    codec before training.
    """

    name: str

    def models(self) -> list[str]:
        """Spec names this backend implements."""

    def devices(self) -> dict[str, Any]:
        """What the run uses: {"kind": "cpu"|"cuda"|"gpu", "count": int, "names": [...], "world_size": int}, with
        ``count`` the devices used (the world size × devices per process, never the devices merely visible) and
        ``names`` as the framework reports them; harness/hardware.py turns it into the hardware class."""

    def init(self, spec_name: str, config: dict, seed: int) -> Any:
        """Build model + optimizer deterministically from ``seed``; return an opaque state."""

    def warmup(self, state: Any, batch: np.ndarray) -> Any:
        """Compile/prime on a synthetic batch, then reset model and optimizer to their initial values."""

    def train_step(self, state: Any, batch: np.ndarray, lr_scale: float) -> tuple[Any, dict]:
        """One optimizer step on ``batch`` (B, T+1). Returns (state, {"loss": float, ...})."""

    def export(self, state: Any) -> dict[str, np.ndarray]:
        """fp32 numpy arrays under the canonical names and shapes of harness/models.py."""

    def scorer(self, spec_name: str, config: dict, weights: dict[str, np.ndarray], precision: str = "fp32") -> Scorer:
        """A Scorer for ``weights`` (canonical names, fp32) of ``spec_name``/``config`` at ``precision``
        ("fp32" | "bf16": the track's eval_precision, the same meaning in every backend)."""

    def save_checkpoint(self, state: Any, path: Path) -> None:
        """Write everything a resume needs (weights, optimizer state, step) to ``path``, atomically."""

    def load_checkpoint(self, path: Path, spec_name: str, config: dict) -> Any:
        """The state saved at ``path``, for ``spec_name``/``config``; GolfError for a missing, foreign or corrupt
        checkpoint or one made for another model or config.
        """

    def code_layout(self) -> Any:
        """The backend package's golfbench.harness.code.CodeLayout (shared files, each model's own files)."""

    def code_files(self, spec_name: str) -> list[Path]:
        """Source files that define the model in this backend; their raw bytes count toward the cap."""

    def compiler_flops(self, state: Any, batch: np.ndarray) -> float | None:
        """The framework's own FLOP count for one training step, or None where it offers none."""

    def collective(self) -> "Collective":
        """The run's process group (harness/distributed.py): joins it on first call when the process was
        launched as one of several (``WORLD_SIZE`` > 1), else returns ``golfbench.harness.distributed.SINGLE``."""


def backend_names() -> list[str]:
    """The registered backend names, sorted ("jax", "torch")."""
    return sorted(REGISTRY)


def get_backend(name: str) -> Backend:
    """The ``BACKEND`` object of backend ``name``, importing its module on first use. Raises GolfError for an
    unknown name (listing the known ones) or a framework that is not installed (with the pip command).
    """
    if name not in REGISTRY:
        raise GolfError(f"unknown backend '{name}': choose one of {', '.join(backend_names())}")
    # OpenMP threads that spin while they wait burn the cores the other threads need whenever a CPU is shared
    # (two frameworks in one process, parallel runs): torch's megalodon scorer used 6x the CPU time with 2
    # threads (bench/devloop.py). Sleeping waiters cost nothing measurable alone. libgomp reads this once, when
    # the framework is loaded, so it only applies if nothing loaded it yet; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        module = importlib.import_module(REGISTRY[name])
    except ModuleNotFoundError as exc:
        raise GolfError(
            f"backend '{name}' needs the missing package '{exc.name}': {INSTALL_HINT.get(name, 'install it')}"
        ) from None
    return module.BACKEND


ScoreFn = Callable[[np.ndarray], np.ndarray]
