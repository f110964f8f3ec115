"""The parameter-golf / llm.c shard format, byte-exact.

Header: 256 little-endian int32 (magic 20240520, version 1, token count, zeros); then count uint16 LE tokens.
The file size must equal 1024 + 2 * count.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from golfbench.harness.errors import GolfError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4


def write_shard(path: Path, tokens: np.ndarray, vocab_size: int | None = None) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half shard.

    tokens: 1-D integer ids, stored as uint16 little-endian. Raises GolfError for a tokens array that is not
    1-D, 2**31 or more tokens, or an id outside [0, vocab_size) ([0, 2**16) without ``vocab_size``).
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise GolfError(f"shard tokens must be 1-D, got shape {tokens.shape}")
    if len(tokens) >= 2**31:
        raise GolfError(f"shard {path}: {len(tokens)} tokens exceed the format's 2**31 limit; split it")
    if len(tokens) and (tokens.min() < 0 or tokens.max() >= (vocab_size or 2**16)):
        raise GolfError(f"shard {path}: token ids must lie in [0, {vocab_size or 2**16})")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, len(tokens)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u2", copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_header(path: Path) -> int:
    """Validate the header and the file size; return the token count.

    Raises GolfError for an unreadable file, one shorter than the 1,024-byte header, a bad magic or version,
    or a size other than 1024 + 2 * count bytes.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise GolfError(f"cannot read shard {path}: {exc.strerror}; check the path or rebuild the dataset") from None
    if len(raw) < HEADER_BYTES:
        raise GolfError(
            f"shard {path} is truncated: {size} bytes, shorter than the 1024-byte header; rebuild or re-download it"
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise GolfError(
            f"shard {path} has bad magic {header[0]} (expected {MAGIC}); it is not a parameter-golf shard, rebuild or re-download it"
        )
    if header[1] != VERSION:
        raise GolfError(
            f"shard {path} has unsupported version {header[1]} (expected {VERSION}); rebuild or re-download it"
        )
    count = int(header[2])
    if count < 0 or size != HEADER_BYTES + 2 * count:
        raise GolfError(
            f"shard {path}: header says {count} tokens ({HEADER_BYTES + 2 * count} bytes) but the file has {size} bytes;"
            " it is truncated or corrupt, rebuild or re-download it"
        )
    return count


def read_shard(path: Path) -> np.ndarray:
    """Memory-map the tokens: a read-only uint16 (count,) view, nothing copied. Raises as `read_header`."""
    count = read_header(path)
    if count == 0:
        return np.zeros(0, dtype="<u2")
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))
