"""The shard format, byte-exact: our writer against hand-built bytes, and every way a shard can be broken."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from golfbench.harness.data.shards import HEADER_BYTES, MAGIC, VERSION, read_header, read_shard, write_shard
from golfbench.harness.errors import GolfError


def hand_built(tokens: list[int], magic: int = 20240520, version: int = 1, count: int | None = None) -> bytes:
    """An independent writer: struct only, no numpy and no harness code."""
    n = len(tokens) if count is None else count
    header = struct.pack("<256i", magic, version, n, *([0] * 253))
    return header + struct.pack(f"<{len(tokens)}H", *tokens)


def test_constants_match_the_reference() -> None:
    assert (MAGIC, VERSION, HEADER_BYTES) == (20240520, 1, 1024)


def test_exact_byte_layout(tmp_path: Path) -> None:
    tokens = [0, 1, 2, 1023, 255, 256, 65535, 7]
    path = tmp_path / "x_train_000000.bin"
    write_shard(path, np.array(tokens, dtype=np.int64))
    raw = path.read_bytes()
    assert raw == hand_built(tokens)
    assert len(raw) == 1024 + 2 * len(tokens)
    assert struct.unpack_from("<3i", raw, 0) == (20240520, 1, len(tokens))
    assert raw[12:1024] == bytes(1012)
    assert raw[1024:1026] == b"\x00\x00" and raw[1030:1032] == b"\xff\x03"  # little-endian uint16
    assert not list(tmp_path.glob("*.tmp"))


def test_independent_writer_reads_identically_via_memmap(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 65536, size=5000).tolist()
    path = tmp_path / "y_val_000000.bin"
    path.write_bytes(hand_built(tokens))
    assert read_header(path) == 5000
    got = read_shard(path)
    assert isinstance(got, np.memmap)
    assert got.dtype == np.dtype("<u2") and not got.flags.writeable
    assert got.tolist() == tokens


def test_round_trip_and_empty_shard(tmp_path: Path) -> None:
    tokens = np.arange(3000, dtype=np.int32) % 1024
    write_shard(tmp_path / "a.bin", tokens, vocab_size=1024)
    assert np.array_equal(read_shard(tmp_path / "a.bin"), tokens)
    write_shard(tmp_path / "e.bin", np.zeros(0, dtype=np.int32))
    assert (tmp_path / "e.bin").stat().st_size == 1024
    assert len(read_shard(tmp_path / "e.bin")) == 0


@pytest.mark.parametrize(
    "data, words",
    [
        (hand_built([1, 2, 3])[:1000], "truncated"),
        (hand_built([1, 2, 3], magic=20240521), "bad magic"),
        (hand_built([1, 2, 3], version=2), "unsupported version"),
        (hand_built([1, 2, 3])[:-1], "header says 3 tokens"),
        (hand_built([1, 2, 3]) + b"\x00\x00", "header says 3 tokens"),
        (hand_built([1, 2, 3], count=-1), "header says -1 tokens"),
    ],
    ids=["short-header", "magic", "version", "missing-byte", "extra-token", "negative-count"],
)
def test_broken_shards_are_refused_with_the_file_named(tmp_path: Path, data: bytes, words: str) -> None:
    path = tmp_path / "bad_train_000000.bin"
    path.write_bytes(data)
    for reader in (read_header, read_shard):
        with pytest.raises(GolfError, match=words) as err:
            reader(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_shard(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="cannot read shard"):
        read_header(tmp_path / "nope.bin")


def test_writer_refuses_bad_tokens(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="token ids"):
        write_shard(tmp_path / "a.bin", np.array([0, 1024]), vocab_size=1024)
    with pytest.raises(GolfError, match="token ids"):
        write_shard(tmp_path / "a.bin", np.array([-1, 3]))
    with pytest.raises(GolfError, match="1-D"):
        write_shard(tmp_path / "a.bin", np.zeros((2, 2), dtype=np.int32))
    assert not (tmp_path / "a.bin").exists()
