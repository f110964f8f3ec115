"""SentencePiece tokenizer: training with the parameter-golf recipe, loading, per-token byte accounting, and
the checks that prove the accounting (and the tokenizer's losslessness) on the data.

Byte accounting generalizes reference/parameter-golf.md §2.1 (build_sentencepiece_luts) to any SentencePiece
model, and is identical to it for the standard recipe (the table of sp1024 is the reference's, bit for bit):

- control and unused tokens (never written by encode; BOS is one) and ids past the tokenizer's vocab: 0 bytes,
  and they are *boundaries*;
- byte-fallback tokens ``<0xNN>``: 1 byte each;
- ``<unk>``: 0 bytes and a boundary when the model has byte-fallback pieces (encode never writes it then);
  otherwise the bytes of the surface the decoder prints for it (" \u2047 ", 5 bytes, by default);
- every other piece (normal or user-defined): its UTF-8 bytes with every '\u2581' counted as one space byte,
  except a leading '\u2581' that the decoder strips at a document's start (models with add_dummy_prefix or
  remove_extra_whitespaces): that one counts 1 unless the previous token is a boundary.

That is what ``sp.decode`` prints per piece (SentencePiece replaces every '\u2581' with ' ' and consumes the
leading one at the start of the text; it keeps a trailing '\u2581' of suffix-mode pieces as a space, including
at a document's end). Byte-fallback runs that are not valid UTF-8 decode to U+FFFD (3 bytes) per bad byte while
the table counts 1: encode never writes such runs, and `doc_bytes_problem` reports them. The rule looks only at
the previous token, so sequences encode never writes (a '\u2581'-only piece right after BOS followed by another
spaced piece, or a control token inside a document) can break it: that is why builds, fetches and `golf data
verify` prove Σ table bytes == len(sp.decode(doc).encode()) on every val document and refuse the data otherwise.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import sentencepiece as spm

from golfbench.harness.errors import GolfError

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


def train_tokenizer_bytes(
    text_files_or_iter: Iterable[str | Path],
    vocab_size: int = 1024,
    options: dict[str, object] | None = None,
    for_path: Path | None = None,
) -> bytes:
    """Train a BPE SentencePiece model in memory and return the .model bytes. Items are ``Path`` objects (files
    read as UTF-8) or document texts (a ``str`` is always text, never a file name). ``options`` override
    RECIPE (e.g. ``{"treat_whitespace_as_suffix": True}``); the same inputs give the same bytes.
    Raises GolfError when a file cannot be read or SentencePiece refuses the options or the text (naming
    ``for_path``, the model file being made, when given)."""
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_training_sentences(_read_texts(text_files_or_iter))),
            model_writer=buf,
            vocab_size=vocab_size,
            minloglevel=2,
            **{**RECIPE, **(options or {})},
        )
    except RuntimeError as exc:
        where = f" for {for_path}" if for_path else ""
        raise GolfError(f"tokenizer training failed{where}: {str(exc).strip()}") from None
    return buf.getvalue()


def train_tokenizer(
    text_files_or_iter: Iterable[str | Path],
    out_model_path: Path,
    vocab_size: int = 1024,
    options: dict[str, object] | None = None,
) -> Path:
    """Train a BPE SentencePiece model (see `train_tokenizer_bytes`) and write it atomically to ``out_model_path``.

    The same inputs give byte-identical .model files.
    """
    out_model_path = Path(out_model_path)
    model = train_tokenizer_bytes(text_files_or_iter, vocab_size, options, for_path=out_model_path)
    tmp = out_model_path.with_name(out_model_path.name + ".tmp")
    tmp.write_bytes(model)
    os.replace(tmp, out_model_path)
    return out_model_path


def load_tokenizer(path: Path) -> spm.SentencePieceProcessor:
    """Load a .model file. Raises GolfError naming the file when it is missing or not a SentencePiece model."""
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
    """Per-token byte tables and the per-target byte rule (the module docstring states the rule).

    ``base_bytes`` (int64), ``has_leading_space`` and ``is_boundary`` (bool) are indexed by token id, as in
    parameter-golf's build_sentencepiece_luts; a target's bytes are
    ``base_bytes[target] + (has_leading_space[target] and not is_boundary[previous token])``.
    """

    def __init__(self, base_bytes: np.ndarray, has_leading_space: np.ndarray, is_boundary: np.ndarray):
        self.base_bytes = np.asarray(base_bytes, dtype=np.int64)
        self.has_leading_space = np.asarray(has_leading_space, dtype=bool)
        self.is_boundary = np.asarray(is_boundary, dtype=bool)

    @property
    def size(self) -> int:
        """Number of token ids the tables cover (max of the tokenizer's vocab and the requested one)."""
        return len(self.base_bytes)

    @classmethod
    def from_processor(cls, sp: spm.SentencePieceProcessor, vocab_size: int | None = None) -> "ByteAccounting":
        """Tables of size max(sp.vocab_size(), vocab_size). What a piece costs at a document's start is read
        from the decoder itself (``sp.decode([id])``), so the stripped leading '\u2581' follows the model's own
        normalizer flags. Raises GolfError for a model whose decoder rewrites pieces in a way a per-token
        table cannot express (e.g. denormalization rules)."""
        n = max(sp.vocab_size(), vocab_size or 0)
        base_bytes = np.zeros(n, dtype=np.int64)
        has_leading_space = np.zeros(n, dtype=bool)
        is_boundary = np.ones(n, dtype=bool)  # ids past the tokenizer's vocab behave like control tokens
        ids = range(sp.vocab_size())
        byte_fallback = any(sp.is_byte(i) for i in ids)
        text_ids = []
        for i in ids:
            if sp.is_control(i) or sp.is_unused(i) or (sp.is_unknown(i) and byte_fallback):
                continue
            is_boundary[i] = False
            if sp.is_byte(i):
                base_bytes[i] = 1
            else:
                text_ids.append(i)
        at_start = sp.decode([[i] for i in text_ids]) if text_ids else []
        for i, surface in zip(text_ids, at_start):
            start = len(surface.encode("utf-8"))
            base_bytes[i] = start
            if sp.is_unknown(i):
                continue  # the decoder prints its surface, never stripped
            piece = sp.id_to_piece(i)
            inside = len(piece.replace("\u2581", " ").encode("utf-8"))
            if inside - start not in (0, 1) or (inside != start and not piece.startswith("\u2581")):
                raise GolfError(
                    f"tokenizer piece {piece!r} (id {i}) decodes to {surface!r}: this model rewrites pieces at decode"
                    " time (denormalization?), which a per-token byte table cannot count; use another tokenizer"
                )
            has_leading_space[i] = inside > start
        return cls(base_bytes, has_leading_space, is_boundary)

    @classmethod
    def from_model(cls, path: Path, vocab_size: int | None = None) -> "ByteAccounting":
        """`from_processor` for the .model file at ``path``; raises GolfError as `load_tokenizer` and `from_processor`
        do."""
        return cls.from_processor(load_tokenizer(path), vocab_size)

    def token_bytes(self, prev_ids: np.ndarray, target_ids: np.ndarray) -> np.ndarray:
        """Bytes of each target given the token before it.

        prev_ids, target_ids: integer arrays of one shape (any int dtype). Returns int64 of that shape (UTF-8
        bytes). Raises ValueError when the shapes differ and GolfError for an id outside [0, size).
        """
        prev = np.asarray(prev_ids, dtype=np.int64)
        tgt = np.asarray(target_ids, dtype=np.int64)
        if prev.shape != tgt.shape:
            raise ValueError(f"prev_ids {prev.shape} and target_ids {tgt.shape} differ in shape")
        if tgt.size and (min(prev.min(), tgt.min()) < 0 or max(prev.max(), tgt.max()) >= self.size):
            raise GolfError(f"token ids must lie in [0, {self.size}); the tokens do not match this tokenizer")
        return self.base_bytes[tgt] + (self.has_leading_space[tgt] & ~self.is_boundary[prev])


# ---------------------------------------------------------------------------------------------- proofs on data

_BATCH_TOKENS = 1 << 22  # tokens decoded per batch of documents: memory stays small on 62M-token val splits
_CUT_HINT = "if the split was cut from a longer one, cut it between documents"

# A fixed text a lossless tokenizer must round-trip to its canonical form: case, digits, punctuation, NFKC-rewritten
# characters, accents, CJK, emoji, tabs, newlines and repeated spaces.
PROBE_TEXT = (
    "The Quick Brown Fox, 0123456789 (3.14); \u201cquoted\u201d \u2014 "
    "caf\u00e9 na\u00efve Stra\u00dfe \ufb01 \u00bd \uff37,\n"
    "\u6771\u4eac\u30bf\u30ef\u30fc \U0001f600\U0001f44d\U0001f3fd\ttab  two  spaces, A_b-C/d \\ e ~ 100%!"
)

_normalizer = None


def canonical_text(text: str) -> str:
    """``text`` as the parameter-golf recipe's tokenizer keeps it: nmt_nfkc, whitespace trimmed and collapsed,
    no dummy prefix, spaces as ' ' (sentencepiece.SentencePieceNormalizer with those settings). That is what
    decode(encode(text)) gives for the recipe's tokenizer; a tokenizer that gives anything else is "lossy" here.
    Raises GolfError when the installed sentencepiece has no SentencePieceNormalizer (it appeared in 0.2.0)."""
    global _normalizer
    if _normalizer is None:
        if not hasattr(spm, "SentencePieceNormalizer"):
            raise GolfError(
                f"sentencepiece {spm.__version__} has no SentencePieceNormalizer;"
                " upgrade it (`pip install 'sentencepiece>=0.2'`)"
            )
        _normalizer = spm.SentencePieceNormalizer(
            rule_name=str(RECIPE["normalization_rule_name"]),
            add_dummy_prefix=False,
            remove_extra_whitespaces=True,
            escape_whitespaces=False,
        )
    return _normalizer.normalize(text)


def document_starts(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Indices (int64, ascending) of the BOS tokens that start the documents of a split's token stream."""
    return np.flatnonzero(np.asarray(tokens) == bos_id).astype(np.int64)


def _doc_batches(starts: np.ndarray, n_tokens: int, batch_tokens: int = _BATCH_TOKENS):
    """Yield (first, last) document indices (last exclusive) of consecutive documents holding about batch_tokens."""
    ends = np.r_[starts[1:], n_tokens]
    first = 0
    while first < len(starts):
        last = int(np.searchsorted(ends, starts[first] + batch_tokens, side="right"))
        last = max(last, first + 1)
        yield first, last
        first = last


def _doc_label(split: str, k: int, start: int, names: dict[int, str] | None) -> str:
    name = (names or {}).get(start)
    return f"{split} document {k}" + (f" '{name}'" if name else "") + f" (BOS at {split} token {start:,})"


def _piece_surfaces(sp: spm.SentencePieceProcessor, ids: list[int]) -> list[str] | None:
    """What the decoder prints for each piece (sentencepiece's own per-piece surfaces), or None when this
    sentencepiece cannot say (0.2.0 spells it out_type='immutable_proto', later versions return_type='proto')."""
    for kwargs in ({"return_type": "proto"}, {"out_type": "immutable_proto"}):
        try:
            proto = sp.decode(ids, **kwargs)
            return [p.surface for p in proto.pieces]
        except (TypeError, ValueError, AttributeError, RuntimeError):
            continue
    return None


def _first_wrong_piece(sp: spm.SentencePieceProcessor, accounting: ByteAccounting, ids: list[int], bos_id: int) -> str:
    """Name the first piece whose running table bytes leave the decoder's (compared where a character ends)."""
    surfaces = _piece_surfaces(sp, ids)
    if surfaces is None or len(surfaces) != len(ids):
        return "this sentencepiece cannot name the piece"
    arr = np.asarray(ids, dtype=np.int64)
    table = accounting.token_bytes(np.r_[np.int64(bos_id), arr[:-1]], arr)
    decoded = np.array([len(s.encode("utf-8")) for s in surfaces], dtype=np.int64)
    # Inside a valid multi-byte character the decoder prints nothing until its last byte piece: compare there.
    ends = np.array([not sp.is_byte(i) or s != "" for i, s in zip(ids, surfaces)])
    wrong = np.flatnonzero(ends & (np.cumsum(table) != np.cumsum(decoded)))
    if not wrong.size:
        return "no single piece differs"
    j = int(wrong[0])
    what = (
        f"at document token {j + 1}, piece {sp.id_to_piece(ids[j])!r} (id {ids[j]}) counts {int(table[j])} byte(s)"
        f" where decode prints {surfaces[j]!r} ({int(decoded[j])} bytes)"
    )
    if sp.is_byte(ids[j]) and surfaces[j] == "\ufffd":
        what += (
            ": byte-fallback pieces that are not valid UTF-8 decode to U+FFFD, 3 bytes each, and encode never"
            " writes them, so these tokens were not made by this tokenizer"
        )
    return what


def doc_bytes_problem(
    sp: spm.SentencePieceProcessor,
    accounting: ByteAccounting,
    tokens: np.ndarray,
    bos_id: int,
    split: str = "val",
    names: dict[int, str] | None = None,
) -> str | None:
    """Prove the byte table on the data: for every document of ``tokens`` (a split's stream of int ids, each
    document a BOS then its ids), Σ ``accounting.token_bytes`` == len(sp.decode(ids after the BOS).encode()).

    These sums add up to the evaluator's denominator (`count_val_bytes`). ``names`` maps a BOS offset to a
    document name for the message. Returns None, or one line naming the first failing document and piece.
    Expects ids already checked to lie below the tokenizer's vocab.
    """
    tokens = np.asarray(tokens)
    if not len(tokens):
        return None
    if int(tokens[0]) != bos_id:
        return (
            f"the {split} split starts with token {int(tokens[0])}, not BOS {bos_id}: its documents are BOS-delimited,"
            " so the first one has no start"
        )
    starts = document_starts(tokens, bos_id)
    ends = np.r_[starts[1:], len(tokens)]
    for first, last in _doc_batches(starts, len(tokens)):
        s, e = int(starts[first]), int(ends[last - 1])
        chunk = np.asarray(tokens[s:e], dtype=np.int64)
        # The chunk starts with a BOS, which counts 0 bytes whatever precedes it.
        table = np.add.reduceat(accounting.token_bytes(np.r_[chunk[0], chunk[:-1]], chunk), starts[first:last] - s)
        docs = [chunk[a - s + 1 : b - s].tolist() for a, b in zip(starts[first:last], ends[first:last])]
        decoded = np.array([len(t.encode("utf-8")) for t in sp.decode(docs)], dtype=np.int64)
        bad = np.flatnonzero(table != decoded)
        if bad.size:
            k = first + int(bad[0])
            where = _first_wrong_piece(sp, accounting, docs[bad[0]], bos_id)
            if k == len(starts) - 1 and docs[bad[0]] and sp.is_byte(docs[bad[0]][-1]):
                where += f" (the {split} split ends in this document's byte pieces: {_CUT_HINT})"
            return (
                f"{_doc_label(split, k, int(starts[k]), names)}: the byte table counts {int(table[bad[0]]):,} bytes"
                f" but the document decodes to {int(decoded[bad[0]]):,}; {where}"
            )
    return None


def _first_difference(got: str, expected: str) -> str:
    k = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    return f"at character {k:,}: {got[max(0, k - 12) : k + 12]!r} instead of {expected[max(0, k - 12) : k + 12]!r}"


def probe_problem(sp: spm.SentencePieceProcessor) -> str | None:
    """None when the tokenizer round-trips PROBE_TEXT to its canonical form, else one line saying where not.
    Catches what no token stream shows: case folding, a dummy suffix space, characters outside coverage."""
    got = sp.decode(sp.encode(PROBE_TEXT))
    expected = canonical_text(PROBE_TEXT)
    if got == expected:
        return None
    rule = RECIPE["normalization_rule_name"]
    return f"decode(encode(text)) of the probe text differs from its {rule} form {_first_difference(got, expected)}"


def text_roundtrip_problem(
    sp: spm.SentencePieceProcessor, names: list[str], texts: list[str], encoded: list[list[int]]
) -> str | None:
    """With the raw texts (a build): None when every decode(encode(text)) equals canonical_text(text), else one
    line naming the first document and character that differ. ``encoded[i]`` is sp.encode(texts[i])."""
    for name, text, ids in zip(names, texts, encoded):
        got, expected = sp.decode(ids), canonical_text(text)
        if got != expected:
            rule, where = RECIPE["normalization_rule_name"], _first_difference(got, expected)
            return f"document '{name}': decode(encode(text)) differs from the {rule} text {where}"
    return None


def token_roundtrip_problem(
    sp: spm.SentencePieceProcessor,
    tokens: np.ndarray,
    bos_id: int,
    split: str = "val",
    names: dict[int, str] | None = None,
) -> str | None:
    """Without the raw texts (a fetch, a verify): what the tokens alone can show. Each document must hold no
    <unk> (a character the tokenizer dropped), and its decoded text d must already be canonical
    (canonical_text(d) == d) and survive decode(encode(d)) == d. Lossy normalizations that leave canonical
    text behind (case folding) are invisible here: `probe_problem` catches those. Returns None or one line."""
    tokens = np.asarray(tokens)
    if not len(tokens):
        return None
    unk, rule = sp.unk_id(), RECIPE["normalization_rule_name"]
    starts = document_starts(tokens, bos_id)
    if not len(starts) or starts[0] != 0:  # tokens before the first BOS: checked as one more document
        starts = np.r_[np.int64(0), starts]
    ends = np.r_[starts[1:], len(tokens)]
    for first, last in _doc_batches(starts, len(tokens)):
        s, e = int(starts[first]), int(ends[last - 1])
        chunk = np.asarray(tokens[s:e], dtype=np.int64)
        if unk >= 0 and (chunk == unk).any():
            j = s + int(np.argmax(chunk == unk))
            k = int(np.searchsorted(starts, j, side="right")) - 1
            return (
                f"{_doc_label(split, k, int(starts[k]), names)} holds <unk> (id {unk}) at document token"
                f" {j - int(starts[k]):,}: a character the tokenizer could not represent was dropped"
            )
        docs = [
            chunk[a - s + int(chunk[a - s] == bos_id) : b - s].tolist()
            for a, b in zip(starts[first:last], ends[first:last])
        ]
        decoded = sp.decode(docs)
        for i, (d, again) in enumerate(zip(decoded, sp.decode(sp.encode(decoded)))):
            label = _doc_label(split, first + i, int(starts[first + i]), names)
            canon = canonical_text(d)
            if canon != d:
                cut = first + i == len(starts) - 1 and d != d.rstrip()
                note = f" (the {split} split ends in this document's spaces: {_CUT_HINT})" if cut else ""
                return f"{label} decodes to text not {rule}-normal {_first_difference(d, canon)}{note}"
            if again != d:
                return f"{label}: decode(encode(decoded text)) changes it {_first_difference(again, d)}"
    return None
