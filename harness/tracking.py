"""Experiment tracking: `golf run --log-to wandb|tensorboard` streams a run to those libraries, through their own APIs.

A tracker gets the run's config (run.json) once at the start, every event as it is appended to events.jsonl
(train steps, val-curve points, eval passes) and the final result.json. Only process 0 tracks. Both libraries
are optional extras (``pip install 'golfbench[wandb]'``, ``'golfbench[tensorboard]'``); neither imports torch.

- wandb (https://docs.wandb.ai/ref/python/init): ``wandb.init(mode="offline")`` unless ``WANDB_MODE`` says
  otherwise, files under ``<log dir>/wandb/``; train and val scalars by step (``train/loss``, ``val/bpb``, with
  ``tokens``, ``seconds`` and ``flops`` as x-axes), the result as the run summary.
- TensorBoard (the ``tensorboard`` package's own ``tensorboard.summary.Writer``, no torch): event files under
  ``<log dir>/tensorboard/``; the same scalar tags, step = training step; the result's numbers as ``result/*``.

A tracking library that fails mid-run (disk full, a bug) prints one warning and is dropped: tracking never
costs a result.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

from golfbench.harness.errors import GolfError

SINKS = ("wandb", "tensorboard")
PACKAGES = {"wandb": "wandb", "tensorboard": "tensorboard"}


def check(names: list[str]) -> None:
    """Raise GolfError (one line, with the pip command) for an unknown tracker name or a missing library; run
    before anything is written."""
    for name in names or []:
        if name not in SINKS:
            raise GolfError(f"unknown --log-to '{name}': choose {' or '.join(SINKS)}")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise GolfError(
                f"--log-to {name} needs the {PACKAGES[name]} package, which is not installed:"
                f" pip install 'golfbench[{name}]'"
            )


def scalars(event: dict) -> tuple[int | None, dict[str, float]]:
    """The scalars one events.jsonl event contributes, by tag, and its training step (None: no step).

    Train events (a ``loss``): ``train/loss`` (nats/token), ``train/lr_scale``; val-curve events: ``val/bpb``,
    ``val/loss`` (nats/token, on the val subset), ``val/seconds`` (scoring time, untimed); both also
    ``progress/tokens``, ``progress/seconds`` and ``progress/flops`` (the budget's training tokens, seconds and
    model FLOPs at that step). Eval passes: ``eval/<label>/bpb`` and ``eval/<label>/seconds``. Non-finite or
    missing values are left out.
    """
    kind = event.get("event")
    out: dict[str, float] = {}
    if kind is None and "loss" in event:
        out = {"train/loss": event.get("loss"), "train/lr_scale": event.get("lr_scale")}
    elif kind == "val":
        out = {"val/bpb": event.get("val_bpb"), "val/loss": event.get("val_loss"), "val/seconds": event.get("seconds")}
    elif kind == "eval":
        label = str(event.get("label", "eval"))
        out = {f"eval/{label}/bpb": event.get("val_bpb"), f"eval/{label}/seconds": event.get("seconds")}
    if kind is None or kind == "val":
        out.update(
            {
                "progress/tokens": event.get("tokens"),
                "progress/seconds": event.get("time"),
                "progress/flops": event.get("flops"),
            }
        )
    clean = {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
    step = event.get("step")
    return (int(step) if isinstance(step, int) else None), clean


def result_numbers(result: dict) -> dict[str, float]:
    """The result's finite numeric fields (bools left out), by name: what trackers record as the summary."""
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


class WandbSink:
    """Streams to wandb (offline unless ``WANDB_MODE`` is set), files under ``<log_dir>/wandb``."""

    def __init__(self, log_dir: Path, run_id: str, config: dict) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "golfbench"),
            name=run_id,
            dir=str(log_dir),
            mode=os.environ.get("WANDB_MODE", "offline"),
            config=config,
            reinit=True,
        )
        self.last_step = 0

    def event(self, event: dict) -> None:
        """Log the event's scalars at its step (eval passes, which have none, at the last step seen)."""
        step, values = scalars(event)
        if step is not None:
            self.last_step = max(self.last_step, step)
        if values:
            self.run.log(values, step=self.last_step)

    def result(self, result: dict) -> None:
        """The result's numbers and status as the run summary."""
        self.run.summary.update({**result_numbers(result), "status": result.get("status")})

    def close(self) -> None:
        """Finish the run (writes the offline files)."""
        self.run.finish()


class TensorBoardSink:
    """Streams to TensorBoard event files under ``<log_dir>/tensorboard`` via ``tensorboard.summary.Writer``."""

    def __init__(self, log_dir: Path, run_id: str, config: dict) -> None:
        import json

        from tensorboard.summary import Writer

        path = log_dir / "tensorboard"
        path.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(str(path))
        self.last_step = 0
        self.config_text = json.dumps(config, sort_keys=True, default=str)

    def event(self, event: dict) -> None:
        """Write the event's scalars at its step (eval passes at the last step seen)."""
        step, values = scalars(event)
        if step is not None:
            self.last_step = max(self.last_step, step)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step=self.last_step)

    def result(self, result: dict) -> None:
        """The result's numbers as ``result/<field>`` scalars at the last step."""
        for key, value in result_numbers(result).items():
            self.writer.add_scalar(f"result/{key}", value, step=self.last_step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.flush()
        self.writer.close()


class Tracker:
    """Fans config, events and the result out to sinks; a sink that raises is warned about once and dropped."""

    def __init__(self, sinks: list) -> None:
        self.sinks = list(sinks)

    def _each(self, method: str, *args) -> None:
        from golfbench.harness import progress

        for sink in list(self.sinks):
            try:
                getattr(sink, method)(*args)
            except Exception as exc:  # noqa: BLE001 - tracking never costs a run
                progress.console.print(
                    f"[yellow]warning:[/] {type(sink).__name__} failed ({exc.__class__.__name__}: {exc});"
                    " tracking to it stops, the run goes on",
                    highlight=False,
                    markup=True,
                )
                self.sinks.remove(sink)

    def event(self, event: dict) -> None:
        """Hand one events.jsonl event to every sink."""
        self._each("event", event)

    def result(self, result: dict) -> None:
        """Hand the final result.json to every sink."""
        self._each("result", result)

    def close(self) -> None:
        """Close every sink (once)."""
        self._each("close")
        self.sinks = []


NULL = Tracker([])


def open_tracker(names: list[str], log_dir: Path, run_id: str, config: dict) -> Tracker:
    """A Tracker writing to each of ``names`` (wandb, tensorboard) under ``log_dir``, given the run's ``config``
    (run.json). Raises GolfError as `check`; a library failing to start raises GolfError too (nothing trained yet).
    """
    check(names)
    sinks = []
    for name in dict.fromkeys(names):
        cls = {"wandb": WandbSink, "tensorboard": TensorBoardSink}[name]
        try:
            sinks.append(cls(Path(log_dir), run_id, config))
        except Exception as exc:  # noqa: BLE001
            for sink in sinks:
                sink.close()
            raise GolfError(f"--log-to {name} could not start ({exc.__class__.__name__}: {exc})") from None
    return Tracker(sinks)
