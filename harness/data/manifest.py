"""A dataset's manifest.json: file hashes, atomic write, and a read that explains what is wrong."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from golfbench.harness.errors import GolfError

MANIFEST_NAME = "manifest.json"
FORMAT = "golfbench-dataset"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("name", "vocab_size", "bos_id", "tokenizer", "tokenizer_sha256", "shards")
# A dataset whose tokenizer does not round-trip text to its canonical form is marked "lossy": true and its id
# ends with this, so no track (they name datasets like "shakespeare_sp1024") takes it for an official one.
LOSSY_SUFFIX = "-lossy"


def lossy_id(dataset_id: str, lossy: bool) -> str:
    """The id a dataset gets: ``dataset_id``, plus LOSSY_SUFFIX when it is lossy."""
    return dataset_id + LOSSY_SUFFIX if lossy else dataset_id


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    """sha256 (hex) of a file's bytes, read in ``chunk_bytes`` blocks. Raises GolfError for an unreadable file."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk_bytes):
                h.update(block)
    except OSError as exc:
        raise GolfError(f"cannot read {path}: {exc.strerror}") from None
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """sha256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """Canonical encoding: the same manifest always gives the same bytes (and sha256)."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_manifest(dataset_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` (canonical bytes, ``manifest_bytes``) to ``dataset_dir/manifest.json`` atomically (temp
    file, fsync, rename); returns its path."""
    path = Path(dataset_dir) / MANIFEST_NAME
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(manifest_bytes(manifest))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_manifest(dataset_dir: Path) -> tuple[dict[str, Any], bytes]:
    """Return (manifest, raw bytes); the raw bytes are what a run records the sha256 of.

    Raises GolfError for a missing folder or manifest, one that is not a UTF-8 JSON object, lacks a
    REQUIRED_KEYS entry, has a newer format_version, or lists malformed shards (not {file, split, tokens,
    sha256}, a split other than train/val) or a tokenizer or shard file name that leaves the folder.
    """
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST_NAME
    if not dataset_dir.is_dir():
        raise GolfError(
            f"dataset folder {dataset_dir} does not exist; build it with `golf data build shakespeare --out {dataset_dir}`"
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise GolfError(
            f"{path} is missing: {dataset_dir} is not a built dataset; build or fetch it"
            " (`golf data build shakespeare` / `golf data fetch fineweb`)"
        ) from None
    except OSError as exc:
        raise GolfError(f"cannot read {path}: {exc.strerror}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GolfError(f"{path} is not valid JSON ({exc}); rebuild the dataset") from None
    if not isinstance(manifest, dict):
        raise GolfError(f"{path} is not a JSON object; rebuild the dataset")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise GolfError(f"{path} lacks {', '.join(missing)}; it was not written by golfbench, rebuild the dataset")
    if manifest.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise GolfError(
            f"{path} has format_version {manifest['format_version']}, newer than this golfbench; upgrade it"
        )
    shards = manifest["shards"]
    if not isinstance(shards, list) or not all(
        isinstance(s, dict) and {"file", "split", "tokens", "sha256"} <= s.keys() for s in shards
    ):
        raise GolfError(f"{path}: 'shards' must be a list of {{file, split, tokens, sha256}}; rebuild the dataset")
    tok = str(manifest["tokenizer"])
    if Path(tok).name != tok or tok.startswith("."):
        raise GolfError(f"{path}: tokenizer {tok!r} must be a file name inside the dataset folder; rebuild the dataset")
    for s in shards:
        name = str(s["file"])
        if s["split"] not in ("train", "val") or Path(name).name != name or name.startswith("."):
            raise GolfError(f"{path}: bad shard entry {name!r} (split {s['split']!r}); rebuild the dataset")
    return manifest, raw


def check_out_dir(out_dir: Path) -> None:
    """Refuse (GolfError) an ``out_dir`` that holds something other than a dataset: we never delete what we did
    not make. Cheap; builders call it before any slow work, `start_build_dir` again before writing."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise GolfError(f"{out_dir} exists and is not a folder; choose another --out")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
            raise GolfError(
                f"{out_dir} is a non-empty folder without {MANIFEST_NAME}; refusing to replace it, choose another --out"
            )


def start_build_dir(out_dir: Path) -> Path:
    """A fresh hidden sibling of ``out_dir`` to build into, so a crash never leaves a half dataset.

    Refuses to go on when ``out_dir`` holds something that is not a dataset (`check_out_dir`).
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def install_build_dir(tmp: Path, out_dir: Path) -> None:
    """Swap the finished folder into place; an old dataset there is removed only once the new one is in."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)
