"""SentencePiece tokenizer: training with the parameter-golf recipe, loading, and per-token byte accounting.

Byte accounting follows reference/parameter-golf.md §2.1 exactly, so our BPB denominators match the
challenge's: piece bytes with one leading '▁' stripped, +1 for that space unless the previous token is a
boundary (control/unknown/unused) token; byte-fallback tokens count 1; boundary tokens count 0.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import sentencepiece as spm

from harness.errors import GolfError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

# The parameter-golf recipe (data/download_hf_docs_and_tokenize.py), plus what makes a build reproducible:
# one thread (thread count changes the model bytes), no sentence sampling or shuffling.
RECIPE: dict[str, object] = dict(
    model_type="bpe",
    character_coverage=0.999,
    byte_fallback=True,
    split_digits=True,
    normalization_rule_name="nmt_nfkc",
    add_dummy_prefix=False,
    pad_id=PAD_ID,
    bos_id=BOS_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    hard_vocab_limit=False,
    num_threads=1,
    input_sentence_size=0,
    shuffle_input_sentence=False,
)

# SentencePiece silently skips training sentences longer than this (its default max_sentence_length).
_MAX_SENTENCE_BYTES = 4000


def _training_sentences(texts: Iterable[str]) -> Iterable[str]:
    """Cut documents into paragraphs so merges can span line breaks (which nmt_nfkc turns into spaces)
    while every sentence stays under SentencePiece's length limit."""
    for text in texts:
        text = text.replace("\x00", " ")
        for para in re.split(r"\n\s*\n", text):
            para = para.strip()
            if not para:
                continue
            if len(para.encode("utf-8")) <= _MAX_SENTENCE_BYTES:
                yield para
            else:
                yield from (line.strip() for line in para.splitlines() if line.strip())


def _read_texts(items: Iterable[str | Path]) -> Iterable[str]:
    for item in items:
        if isinstance(item, Path):
            try:
                yield item.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise GolfError(f"cannot read tokenizer training text {item}: {exc}") from None
        else:
            yield item


def train_tokenizer(text_files_or_iter: Iterable[str | Path], out_model_path: Path, vocab_size: int = 1024) -> Path:
    """Train a BPE SentencePiece model. Items are ``Path`` objects (files read as UTF-8) or document texts
    (a ``str`` is always text, never a file name).

    The same inputs give byte-identical .model files. Written atomically.
    """
    out_model_path = Path(out_model_path)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_training_sentences(_read_texts(text_files_or_iter))),
            model_writer=buf,
            vocab_size=vocab_size,
            minloglevel=2,
            **RECIPE,
        )
    except RuntimeError as exc:
        raise GolfError(f"tokenizer training failed for {out_model_path}: {str(exc).strip()}") from None
    tmp = out_model_path.with_name(out_model_path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, out_model_path)
    return out_model_path


def load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise GolfError(
            f"tokenizer {path} is missing; rebuild the dataset (`golf data build shakespeare`) or re-fetch it"
        )
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(path))
    except (OSError, RuntimeError):
        raise GolfError(
            f"tokenizer {path} is not a readable SentencePiece model; rebuild or re-fetch the dataset"
        ) from None
    return sp


class ByteAccounting:
    """The three lookup tables of parameter-golf's build_sentencepiece_luts, and the per-target byte rule."""

    def __init__(self, base_bytes: np.ndarray, has_leading_space: np.ndarray, is_boundary: np.ndarray):
        self.base_bytes = np.asarray(base_bytes, dtype=np.int64)
        self.has_leading_space = np.asarray(has_leading_space, dtype=bool)
        self.is_boundary = np.asarray(is_boundary, dtype=bool)

    @property
    def size(self) -> int:
        return len(self.base_bytes)

    @classmethod
    def from_processor(cls, sp: spm.SentencePieceProcessor, vocab_size: int | None = None) -> "ByteAccounting":
        n = max(sp.vocab_size(), vocab_size or 0)
        base_bytes = np.zeros(n, dtype=np.int64)
        has_leading_space = np.zeros(n, dtype=bool)
        is_boundary = np.ones(n, dtype=bool)  # ids past the tokenizer's vocab behave like control tokens
        for i in range(sp.vocab_size()):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue
            is_boundary[i] = False
            if sp.is_byte(i):
                base_bytes[i] = 1
                continue
            piece = sp.id_to_piece(i)
            if piece.startswith("\u2581"):
                has_leading_space[i] = True
                piece = piece[1:]
            base_bytes[i] = len(piece.encode("utf-8"))
        return cls(base_bytes, has_leading_space, is_boundary)

    @classmethod
    def from_model(cls, path: Path, vocab_size: int | None = None) -> "ByteAccounting":
        return cls.from_processor(load_tokenizer(path), vocab_size)

    def token_bytes(self, prev_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
        """Bytes of each target given the token before it (int64, same shape as the inputs)."""
        prev = np.asarray(prev_ids, dtype=np.int64)
        tgt = np.asarray(target_ids, dtype=np.int64)
        if prev.shape != tgt.shape:
            raise ValueError(f"prev_ids {prev.shape} and target_ids {tgt.shape} differ in shape")
        if tgt.size and (min(prev.min(), tgt.min()) < 0 or max(prev.max(), tgt.max()) >= self.size):
            raise GolfError(f"token ids must lie in [0, {self.size}); the tokens do not match this tokenizer")
        return self.base_bytes[tgt] + (self.has_leading_space[tgt] & ~self.is_boundary[prev])
