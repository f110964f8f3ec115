"""Shared fixtures: the Shakespeare dataset is built once per session (a few seconds) and reused read-only.

Tests that damage a dataset work on a copy (`dataset_copy`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.shakespeare import build
from golfbench.harness.data.tokenizer import ByteAccounting, load_tokenizer


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("data") / "shakespeare_sp1024")


@pytest.fixture(scope="session")
def shakespeare(shakespeare_dir: Path) -> Dataset:
    return Dataset.open(shakespeare_dir)


@pytest.fixture(scope="session")
def sp(shakespeare_dir: Path):
    return load_tokenizer(shakespeare_dir / "tokenizer.model")


@pytest.fixture(scope="session")
def accounting(shakespeare_dir: Path) -> ByteAccounting:
    return ByteAccounting.from_model(shakespeare_dir / "tokenizer.model")


@pytest.fixture
def dataset_copy(shakespeare_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the built dataset that a test may modify."""
    return Path(shutil.copytree(shakespeare_dir, tmp_path / "shakespeare_sp1024"))


# ----------------------------------------------------------------------------------------------------------
# No silent skips: `make setup` installs both backends, so a test that skips (an import that failed, a backend
# that broke) hides a defect. The session fails listing them; GOLF_ALLOW_SKIPS=1 allows them (a partial
# install, e.g. `pip install golfbench[torch]` only).

# One skip is expected: tests/test_site.py's `chromium` fixture installs Debian's chromium with apt-get and skips,
# with this reason and the cause, only where it cannot (no apt-get, not root, the install failed).
_ALLOWED_SKIP = "headless chromium cannot be installed here"

_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if _ALLOWED_SKIP not in reason:
            _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    import os

    if _SKIPPED and os.environ.get("GOLF_ALLOW_SKIPS") != "1" and exitstatus == 0:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"FAILED: {len(_SKIPPED)} unexpected skip(s) (set GOLF_ALLOW_SKIPS=1 for a partial install):\n  "
            + "\n  ".join(_SKIPPED),
            red=True,
        )
        session.exitstatus = 1
