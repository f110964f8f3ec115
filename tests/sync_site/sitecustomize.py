"""Loaded at interpreter start when this folder is on PYTHONPATH: counts host syncs per process (sync_counter)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sync_counter  # noqa: E402

sync_counter.install_for_rank()
