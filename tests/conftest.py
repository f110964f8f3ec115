"""Shared fixtures: the Shakespeare dataset is built once per session (a few seconds) and reused read-only.

Tests that damage a dataset work on a copy (`dataset_copy`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.data.dataset import Dataset
from harness.data.shakespeare import build
from harness.data.tokenizer import ByteAccounting, load_tokenizer


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
