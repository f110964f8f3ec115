"""The code-bytes rule, one for every backend: what source counts toward the 16,000,000-byte cap, and the
snapshot of it that a run keeps.

A backend package declares a ``CodeLayout``: its shared files (training step, optimizer, scorer, launcher,
runtime glue: everything a run of any of its models executes) and each model's own files. The files that
count for a model are the shared ones plus that model's, as raw bytes. Every ``*.py`` file of the package
must be claimed by one or the other (tests/test_code_rule.py), so no backend can keep training code outside
the count. At run start the counted files are copied into the run directory (``code/``) with their sha256
in run.json; `golf export` ships that snapshot and `golf verify` recounts it, so the code that is measured
is the code that ran.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from golfbench.harness.errors import GolfError

SNAPSHOT_DIR = "code"


@dataclass(frozen=True)
class CodeLayout:
    """A backend package's source files. ``root``: the package folder; ``shared``: file names every run counts;
    ``models``: spec name -> that model's own file names (relative to ``root``)."""

    root: Path
    shared: tuple[str, ...]
    models: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def files(self, spec_name: str) -> list[Path]:
        """The counted files for ``spec_name``: shared + the model's own, in that order, each once.

        Raises GolfError for a model the layout does not list.
        """
        if spec_name not in self.models:
            raise GolfError(
                f"no source files are declared for model '{spec_name}' (declared: {', '.join(sorted(self.models))})"
            )
        names = list(dict.fromkeys([*self.shared, *self.models[spec_name]]))
        return [self.root / n for n in names]

    def unclaimed(self) -> list[str]:
        """Python files in ``root`` that neither the shared list nor any model claims (must be empty)."""
        claimed = set(self.shared).union(*self.models.values()) if self.models else set(self.shared)
        return sorted(p.name for p in self.root.glob("*.py") if p.name not in claimed)


def code_bytes(files: list[Path]) -> int:
    """Total raw bytes of ``files`` (what counts toward the cap). Raises GolfError for an unreadable file."""
    total = 0
    for f in files:
        try:
            total += len(Path(f).read_bytes())
        except OSError as exc:
            raise GolfError(f"cannot read code file {f}: {exc.strerror}; check the --code paths") from None
    return total


def code_digest(files: list[Path]) -> dict[str, str]:
    """{file name: sha256 hex} of ``files`` (names are unique within one backend package)."""
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def snapshot(files: list[Path], run_dir: Path) -> dict[str, str]:
    """Copy ``files`` into ``run_dir/code/`` (atomically: a temp folder renamed into place); returns their digest."""
    dst = Path(run_dir) / SNAPSHOT_DIR
    tmp = Path(run_dir) / f".{SNAPSHOT_DIR}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in files:
        shutil.copyfile(f, tmp / Path(f).name)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return code_digest(sorted(dst.iterdir()))


def snapshot_files(run_dir: Path) -> list[Path]:
    """The files of a run's code snapshot, sorted by name (empty when the run predates snapshots)."""
    d = Path(run_dir) / SNAPSHOT_DIR
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []
