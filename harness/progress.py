"""Progress bars for long work (training, evaluation), on stderr so --json output stays clean."""

from __future__ import annotations

import os
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def enabled() -> bool:
    """Whether to draw progress bars: only on process 0 (``RANK``) and unless ``GOLF_NO_PROGRESS`` is set."""
    return os.environ.get("GOLF_NO_PROGRESS", "") == "" and int(os.environ.get("RANK", "0")) == 0


@contextmanager
def bar(description: str, total: float, unit: str = ""):
    """Yields update(done, **fields); a no-op when progress is disabled (tests, non-zero ranks)."""
    if not enabled():
        yield lambda done, **fields: None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if unit == "windows":
        columns.insert(2, MofNCompleteColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def update(done: float, **fields) -> None:
            info = "  ".join(f"{k} {v}" for k, v in fields.items())
            progress.update(task, completed=min(done, total), info=info)

        yield update
