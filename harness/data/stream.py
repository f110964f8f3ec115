"""The deterministic training batch stream: sequential over the concatenated train shards, memmapped.

Batch rows overlap by one token (row r = stream[off + r*T : off + (r+1)*T + 1]) and the offset advances by
B*T, so in one pass every token after the first is a target exactly once. Every backend sees the same
batches for the same start offset. Only train shards can be opened here: nothing in training reads val.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from golfbench.harness.data.manifest import MANIFEST_NAME
from golfbench.harness.data.shards import read_header, read_shard
from golfbench.harness.errors import GolfError

_TRAIN_NAME = re.compile(r".+_train_\d{6}\.bin")


def _listed_train_files(folder: Path) -> set[str] | None:
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        return {s["file"] for s in manifest["shards"] if s["split"] == "train"}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise GolfError(f"{folder / MANIFEST_NAME} is unreadable; verify the dataset with `golf data verify`") from None


def check_train_paths(paths: list[Path]) -> list[Path]:
    """Refuse anything that is not a train shard: by name, and by the folder's manifest when there is one."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise GolfError("no train shards given to the batch stream; check the dataset with `golf data verify`")
    listed: dict[Path, set[str] | None] = {}
    for p in paths:
        if "_val_" in p.name or not _TRAIN_NAME.fullmatch(p.name):
            raise GolfError(
                f"{p} is not a train shard (expected <name>_train_NNNNNN.bin); training never reads val data"
            )
        folder = p.parent
        if folder not in listed:
            listed[folder] = _listed_train_files(folder)
        if listed[folder] is not None and p.name not in listed[folder]:
            raise GolfError(
                f"{p} is not listed as a train shard in {folder / MANIFEST_NAME}; training reads only listed train shards"
            )
    return paths


class BatchStream:
    """The next training batches, int32 (B, T+1) with B = ``batch_seqs`` and T = ``seq_len``, from
    ``start_tokens`` targets into the train stream (resume restarts at the recorded offset).

    With ``wrap`` the stream is endless (it restarts at the first train token); without it, `next` refuses a
    batch past the end. With ``vocab_size``, each shard's token ids are checked once, when the shard is first
    read (GolfError naming the shard for an id >= vocab_size), so a batch needs no per-step check. Raises GolfError for non-positive sizes, a negative offset, paths that are not listed
    train shards (`check_train_paths`), fewer than 2 train tokens, or, with ``wrap``, fewer than B*T+1 tokens.
    """

    def __init__(
        self,
        train_paths: list[Path],
        batch_seqs: int,
        seq_len: int,
        start_tokens: int = 0,
        wrap: bool = True,
        vocab_size: int | None = None,
    ):
        if batch_seqs < 1 or seq_len < 1:
            raise GolfError(f"batch_seqs and seq_len must be >= 1, got {batch_seqs} and {seq_len}")
        if start_tokens < 0:
            raise GolfError(f"start_tokens must be >= 0, got {start_tokens}")
        self.paths = check_train_paths(train_paths)
        self.batch_seqs, self.seq_len, self.wrap = int(batch_seqs), int(seq_len), bool(wrap)
        self.vocab_size = vocab_size
        counts = [read_header(p) for p in self.paths]
        self._bounds = np.cumsum([0] + counts).astype(np.int64)
        self.total_tokens = int(self._bounds[-1])
        self._shards: list[np.ndarray | None] = [None] * len(self.paths)  # memmaps, opened on first use
        if self.total_tokens < 2:
            raise GolfError(f"the train shards hold {self.total_tokens} token(s); at least 2 are needed")
        if wrap and self.total_tokens < batch_seqs * seq_len + 1:
            # With fewer tokens than one batch, a wrapped batch would repeat targets inside itself.
            raise GolfError(
                f"the train split has {self.total_tokens} tokens, fewer than one batch of {batch_seqs}x{seq_len}+1;"
                " use a smaller batch or more data"
            )
        self._offset = int(start_tokens)

    @property
    def tokens_consumed(self) -> int:
        """Targets handed out so far (including start_tokens): the offset into the endless stream."""
        return self._offset

    @property
    def epoch(self) -> int:
        """Completed passes over the train stream (``tokens_consumed // total_tokens``)."""
        return self._offset // self.total_tokens

    @property
    def available_tokens(self) -> int:
        """Targets one pass can deliver without wrapping: every train token but the first."""
        return self.total_tokens - 1

    def _shard(self, i: int) -> np.ndarray:
        if self._shards[i] is None:
            shard = read_shard(self.paths[i])
            if self.vocab_size is not None and len(shard) and int(shard.max()) >= self.vocab_size:
                raise GolfError(
                    f"{self.paths[i]} holds token id {int(shard.max())}, outside the model's vocabulary"
                    f" [0, {self.vocab_size}): does the dataset's vocab_size match the model's?"
                )
            self._shards[i] = shard
        return self._shards[i]

    def _span(self, start: int, length: int) -> np.ndarray:
        """stream[start : start + length] of the endless (wrapped) stream; a view when it lies in one shard."""
        pieces = []
        pos = start % self.total_tokens
        while length > 0:
            i = int(np.searchsorted(self._bounds, pos, side="right")) - 1
            local = pos - int(self._bounds[i])
            take = min(length, int(self._bounds[i + 1]) - pos)
            pieces.append(self._shard(i)[local : local + take])
            length -= take
            pos = (pos + take) % self.total_tokens
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def next(self, rows: int | None = None) -> np.ndarray:
        """The next batch, int32 (rows, seq_len+1) (rows default batch_seqs); `rows` < batch_seqs gives a short
        final batch (fixed-data budgets end mid-batch). Without ``wrap``, raises GolfError when the train data
        cannot fill the batch."""
        B, T = (self.batch_seqs if rows is None else int(rows)), self.seq_len
        n = B * T
        if not self.wrap and self._offset + n + 1 > self.total_tokens:
            raise GolfError(
                f"the train data is exhausted: {self._offset:,} of {self.available_tokens:,} targets used, a batch needs"
                f" {n:,} more; fetch more train shards or lower the token budget"
            )
        span = self._span(self._offset, n + 1)
        out = np.empty((B, T + 1), dtype=np.int32)
        out[:, :T] = span[:n].reshape(B, T)
        out[:, T] = span[T::T]  # each row's last token is the next row's first
        self._offset += n
        return out

    def rewind(self, rows: int) -> None:
        """Give back the last ``rows`` sequences handed out (a batch prepared ahead but never trained on), so the
        offset, a checkpoint and what is read next are as if they had never been read."""
        n = int(rows) * self.seq_len
        if n < 0 or n > self._offset:
            raise ValueError(f"cannot rewind {rows} rows: only {self._offset} tokens were handed out")
        self._offset -= n
