"""Helpers shared by the reliability tests (issue 6): the real CLI as a subprocess, a small dataset, file checks.

The small dataset is a prefix of the real Shakespeare shards (whole manifest rewritten: counts, hashes and the
documents that start inside the prefix), so runs train and score in seconds while every check still applies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from golfbench.harness.data.manifest import read_manifest, write_manifest
from golfbench.harness.rehearse import prefix_dataset

ROOT = Path(__file__).resolve().parent.parent
# One BLAS/XLA thread per subprocess: the test machine's cores are shared.
ENV = {
    **os.environ,
    "GOLF_NO_PROGRESS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
ENV.pop("GOLF_DEBUG", None)
ENV.pop("GOLF_TRACKS_DIR", None)

# Every run in these tests: dev scale, one 4096-token step of a tiny preset per 4096 tokens of budget.
RUN_ARGS = ("--track", "fixed-data", "--scale", "dev", "--eval-stride", "256")


def golf(*args, env: dict | None = None, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    """`golf ARGS` as a user runs it: a fresh process, the real CLI entry point."""
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def golf_ok(*args, **kw) -> subprocess.CompletedProcess:
    res = golf(*args, **kw)
    assert res.returncode == 0, (
        f"golf {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    )
    return res


def one_line_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    """The contract for bad input: non-zero exit, exactly one line on stderr, `error: ...`, no traceback."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode != 0, f"expected a failure, got exit 0:\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr + res.stdout, res.stderr
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{res.stderr}"
    line = lines[0]
    assert line.startswith("error: "), line  # `internal error:` means an unhandled exception
    for needle in needles:
        assert needle in line, f"{needle!r} not in: {line}"
    return line


def files_under(path: Path) -> set[str]:
    """Every file and folder below ``path`` (relative), to show a failed command wrote nothing."""
    path = Path(path)
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def small_dataset(src: Path, dst: Path, train_tokens: int = 24_000, val_tokens: int = 2_048) -> Path:
    """A prefix of dataset ``src`` written to ``dst`` as a complete, verifiable dataset (the harness's
    rehearsal builds its datasets the same way: golfbench.harness.rehearse.prefix_dataset)."""
    return prefix_dataset(src, dst, train_tokens, val_tokens)


def rewrite_manifest(dataset: Path, edit) -> None:
    manifest, _ = read_manifest(dataset)
    edit(manifest)
    write_manifest(dataset, manifest)


# What an atomic write leaves behind when killed mid-write (records.atomic_write_bytes); never a result.
TMP_NAME = re.compile(r"^\..+\.tmp$")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc): the processes a launcher started, to kill them all at once."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found
