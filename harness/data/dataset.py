"""Open a built dataset folder (cheap checks) and verify one thoroughly (hashes, ids, split hygiene, bytes proven
per val document, tokenizer losslessness)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from golfbench.harness.data.manifest import LOSSY_SUFFIX, MANIFEST_NAME, read_manifest, sha256_bytes, sha256_file
from golfbench.harness.data.shards import read_header, read_shard
from golfbench.harness.data.tokenizer import (
    ByteAccounting,
    doc_bytes_problem,
    load_tokenizer,
    probe_problem,
    token_roundtrip_problem,
)
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import count_val_bytes  # the evaluator owns the byte rule

_CHUNK = 1 << 22  # tokens per pass over a memmap, so verifying 8B tokens stays within a little memory


def fix_hint(manifest: dict[str, Any]) -> str:
    """What to tell the user to do about a damaged dataset: rebuild (shakespeare), re-fetch (fineweb) or either."""
    if manifest.get("name") == "shakespeare":
        return "rebuild with `golf data build shakespeare`"
    if manifest.get("name") == "fineweb":
        return "re-fetch with `golf data fetch fineweb`"
    return "rebuild or re-fetch the dataset"


def _shard_name_ok(name: str, dataset: str, split: str) -> bool:
    return re.fullmatch(rf"{re.escape(dataset)}_{split}_\d{{6}}\.bin", name) is not None


@dataclass
class Dataset:
    """A built dataset folder, opened: its manifest (and that file's sha256), tokenizer path and shard paths.

    ``vocab_size`` and ``bos_id`` are token ids from the manifest; ``train_paths``/``val_paths`` are the shards in
    manifest order (the parameter-golf / llm.c uint16 format, harness/data/shards.py). ``id`` names the
    tokenized variant tracks refer to; ``lossy`` marks a tokenizer that does not round-trip text.
    """

    path: Path
    name: str
    vocab_size: int
    bos_id: int
    manifest: dict[str, Any]
    manifest_sha256: str
    tokenizer_path: Path
    train_paths: list[Path] = field(default_factory=list)
    val_paths: list[Path] = field(default_factory=list)
    id: str = ""  # name plus tokenizer variant, e.g. "shakespeare_sp1024": what tracks refer to
    lossy: bool = False  # the manifest says the tokenizer is lossy; the id then ends with "-lossy"

    @classmethod
    def open(cls, dataset_dir: Path) -> "Dataset":
        """Read the manifest and check what is cheap to check: files present, shard headers and token
        counts, tokenizer loadable with the manifest's vocab. `verify` does the full check.

        Raises GolfError, naming the file and the fix, for a missing or invalid manifest (`read_manifest`), a
        misnamed or missing shard, a shard whose header token count differs from the manifest, no val shard or
        fewer than 2 val tokens, a lossy dataset whose id lacks LOSSY_SUFFIX, or a tokenizer that does not load
        or whose vocab size differs from the manifest's.
        """
        dataset_dir = Path(dataset_dir)
        manifest, raw = read_manifest(dataset_dir)
        hint = fix_hint(manifest)
        name, vocab = str(manifest["name"]), int(manifest["vocab_size"])
        paths: dict[str, list[Path]] = {"train": [], "val": []}
        for entry in manifest["shards"]:
            path = dataset_dir / entry["file"]
            if not _shard_name_ok(path.name, name, entry["split"]):
                raise GolfError(
                    f"{dataset_dir / MANIFEST_NAME}: shard {path.name} is not named {name}_{entry['split']}_NNNNNN.bin; {hint}"
                )
            if not path.is_file():
                raise GolfError(f"shard {path} listed in {MANIFEST_NAME} is missing; {hint}")
            count = read_header(path)
            if count != int(entry["tokens"]):
                raise GolfError(f"shard {path} holds {count} tokens but {MANIFEST_NAME} says {entry['tokens']}; {hint}")
            paths[entry["split"]].append(path)
        if not paths["val"]:
            raise GolfError(f"{dataset_dir / MANIFEST_NAME} lists no val shard; {hint}")
        val_count = sum(int(s["tokens"]) for s in manifest["shards"] if s["split"] == "val")
        if val_count < 2:
            raise GolfError(f"{dataset_dir}: the val split has fewer than 2 tokens, nothing to score; {hint}")
        lossy_problem = _lossy_label_problem(manifest)
        if lossy_problem:
            raise GolfError(f"{dataset_dir / MANIFEST_NAME}: {lossy_problem}; {hint}")
        tok_path = dataset_dir / str(manifest["tokenizer"])
        sp = load_tokenizer(tok_path)
        if sp.vocab_size() != vocab:
            raise GolfError(
                f"tokenizer {tok_path} has vocab {sp.vocab_size()} but {MANIFEST_NAME} says {vocab}; {hint}"
            )
        return cls(
            path=dataset_dir,
            name=name,
            vocab_size=vocab,
            bos_id=int(manifest["bos_id"]),
            manifest=manifest,
            manifest_sha256=sha256_bytes(raw),
            tokenizer_path=tok_path,
            train_paths=paths["train"],
            val_paths=paths["val"],
            id=str(manifest.get("id", name)),
            lossy=bool(manifest.get("lossy", False)),
        )

    def check_contents(self) -> None:
        """What `open` leaves to `verify`, for a run about to start: the tokenizer's and every shard's sha256
        against the manifest, and every token id below the vocab size (one chunked pass per file).

        Raises GolfError for a tokenizer or shard whose sha256 changed, or a token id >= ``vocab_size``.
        """
        hint = fix_hint(self.manifest)
        if sha256_file(self.tokenizer_path) != self.manifest["tokenizer_sha256"]:
            raise GolfError(
                f"tokenizer {self.tokenizer_path} sha256 differs from {MANIFEST_NAME}: it changed since the dataset"
                f" was built; {hint}"
            )
        for entry in self.manifest["shards"]:
            path = self.path / entry["file"]
            if sha256_file(path) != entry["sha256"]:
                raise GolfError(
                    f"shard {path} sha256 differs from {MANIFEST_NAME}: the file changed since the dataset was built; {hint}"
                )
            top = _scan(read_shard(path), self.bos_id)[0]
            if top >= self.vocab_size:
                raise GolfError(f"shard {path} holds token id {top} >= vocab size {self.vocab_size}; {hint}")

    def accounting(self) -> ByteAccounting:
        """The val bytes rule for this dataset's tokenizer (ByteAccounting over ``vocab_size`` ids); GolfError if
        the tokenizer cannot be loaded."""
        return ByteAccounting.from_model(self.tokenizer_path, self.vocab_size)

    def val_tokens(self) -> np.ndarray:
        """All val shards concatenated, as int32 (the val split is small enough to hold in memory)."""
        return np.concatenate([np.asarray(read_shard(p), dtype=np.int32) for p in self.val_paths])

    def train_tokens_total(self) -> int:
        """Tokens in the train shards, as the manifest lists them."""
        return sum(int(s["tokens"]) for s in self.manifest["shards"] if s["split"] == "train")

    def val_tokens_total(self) -> int:
        """Tokens in the val shards, as the manifest lists them."""
        return sum(int(s["tokens"]) for s in self.manifest["shards"] if s["split"] == "val")


def _lossy_label_problem(manifest: dict[str, Any]) -> str | None:
    """A manifest marked lossy must carry an id ending with LOSSY_SUFFIX (so no track takes it as official)."""
    lossy, ident = manifest.get("lossy", False), str(manifest.get("id", manifest.get("name")))
    if not isinstance(lossy, bool):
        return f"'lossy' must be true or false, got {lossy!r}"
    if lossy and not ident.endswith(LOSSY_SUFFIX):
        return f"the dataset is marked lossy but its id {ident!r} does not end with {LOSSY_SUFFIX!r}"
    return None


def _scan(tokens: np.ndarray, bos: int) -> tuple[int, int]:
    """(largest id, number of BOS) in one chunked pass."""
    top, n_bos = -1, 0
    for i in range(0, len(tokens), _CHUNK):
        chunk = tokens[i : i + _CHUNK]
        top = max(top, int(chunk.max()))
        n_bos += int(np.count_nonzero(chunk == bos))
    return top, n_bos


def _check_docs(
    manifest: dict[str, Any], streams: dict[str, list[np.ndarray]], complete: set[str], problems: list[str]
) -> dict[str, int]:
    """Train and val must share no document (by name or by content hash), and every recorded document
    offset must point at a BOS in its split (checked only where all the split's shards could be read)."""
    docs = manifest.get("docs") or {}
    counts = {split: len(docs.get(split) or []) for split in ("train", "val")}
    hint = fix_hint(manifest)
    for key in ("name", "sha256"):
        seen = {d.get(key) for d in docs.get("train", []) if d.get(key)}
        shared = sorted(d[key] for d in docs.get("val", []) if d.get(key) in seen)
        if shared:
            problems.append(
                f"{MANIFEST_NAME}: {len(shared)} document(s) in both train and val by {key}"
                f" (first: {shared[0][:40]}); {hint}"
            )
    bos = int(manifest["bos_id"])
    for split in sorted(complete):
        bounds = np.cumsum([0] + [len(s) for s in streams[split]])
        for d in docs.get(split, []):
            off = int(d.get("offset", -1))
            k = int(np.searchsorted(bounds, off, side="right")) - 1
            if off < 0 or off >= bounds[-1] or int(streams[split][k][off - bounds[k]]) != bos:
                problems.append(
                    f"{MANIFEST_NAME}: {split} document {d.get('name')} at offset {off} does not start with BOS {bos}; {hint}"
                )
                break
    return counts


def verify(
    dataset_dir: Path, progress: Callable[[int, int], None] | None = None, allow_lossy: bool = False
) -> dict[str, Any]:
    """Check everything and report; problems are one-line strings naming the file and the fix.

    ``val_tokens`` is the token count of the val shards; ``val_bytes`` is the evaluator's denominator, the
    bytes of every val token after the first (``val_tokens - 1`` targets), proven document by document against
    the decoded text (`doc_bytes_problem`). ``lossy`` is true when the manifest says so or the tokenizer fails
    the checks tokens allow (`probe_problem`, `token_roundtrip_problem`; ``lossy_reason`` says why): a lossy
    tokenizer the manifest does not declare is a problem, and a declared one too unless ``allow_lossy``.
    """
    dataset_dir = Path(dataset_dir)
    report: dict[str, Any] = {
        "ok": False,
        "path": str(dataset_dir),
        "name": None,
        "id": None,
        "vocab_size": None,
        "manifest_sha256": None,
        "train_tokens": 0,
        "val_tokens": 0,
        "val_bytes": 0,
        "bytes_per_token": None,
        "train_shards": 0,
        "val_shards": 0,
        "train_docs": 0,
        "val_docs": 0,
        "lossy": None,
        "lossy_reason": None,
        "problems": [],
    }
    problems: list[str] = report["problems"]
    try:
        manifest, raw = read_manifest(dataset_dir)
    except GolfError as exc:
        problems.append(str(exc))
        return report
    hint = fix_hint(manifest)
    name, vocab = str(manifest["name"]), int(manifest["vocab_size"])
    report.update(name=name, id=str(manifest.get("id", name)), vocab_size=vocab, manifest_sha256=sha256_bytes(raw))
    marked_lossy = manifest.get("lossy", False) is True
    if marked_lossy:  # otherwise "lossy" stays None until the tokenizer has been checked
        report.update(lossy=True, lossy_reason=manifest.get("lossy_reason"))
    label_problem = _lossy_label_problem(manifest)
    if label_problem:
        problems.append(f"{dataset_dir / MANIFEST_NAME}: {label_problem}; {hint}")

    accounting = sp = None
    tok_path = dataset_dir / str(manifest["tokenizer"])
    if not tok_path.is_file():
        problems.append(f"tokenizer {tok_path} is missing; {hint}")
    else:
        if sha256_file(tok_path) != manifest["tokenizer_sha256"]:
            problems.append(
                f"tokenizer {tok_path} sha256 differs from {MANIFEST_NAME}: it changed since the dataset was built; {hint}"
            )
        try:
            sp = load_tokenizer(tok_path)
            if sp.vocab_size() != vocab:
                problems.append(
                    f"tokenizer {tok_path} has vocab {sp.vocab_size()} but {MANIFEST_NAME} says {vocab}; {hint}"
                )
            else:
                accounting = ByteAccounting.from_processor(sp, vocab)
        except GolfError as exc:
            problems.append(str(exc))

    streams: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    bos_counts = {"train": 0, "val": 0}
    ids_ok = True
    shards = manifest["shards"]
    for i, entry in enumerate(shards):
        if progress:
            progress(i, len(shards))
        split, path = entry["split"], dataset_dir / entry["file"]
        if not _shard_name_ok(path.name, name, split):
            problems.append(f"{MANIFEST_NAME}: shard {path.name} is not named {name}_{split}_NNNNNN.bin; {hint}")
            continue
        if not path.is_file():
            problems.append(f"shard {path} listed in {MANIFEST_NAME} is missing; {hint}")
            continue
        try:
            tokens = read_shard(path)
        except GolfError as exc:
            problems.append(f"{exc} ({hint})")
            continue
        if len(tokens) != int(entry["tokens"]):
            problems.append(
                f"shard {path} holds {len(tokens)} tokens but {MANIFEST_NAME} says {entry['tokens']}; {hint}"
            )
        if sha256_file(path) != entry["sha256"]:
            problems.append(
                f"shard {path} sha256 differs from {MANIFEST_NAME}: the file changed since the dataset was built; {hint}"
            )
        top, n_bos = _scan(tokens, int(manifest["bos_id"]))
        bos_counts[split] += n_bos
        if top >= vocab:
            ids_ok = False
            problems.append(
                f"shard {path} holds token id {top} >= vocab size {vocab}; it does not match the tokenizer, {hint}"
            )
        streams[split].append(tokens)
        report[f"{split}_shards"] += 1
        report[f"{split}_tokens"] += len(tokens)
    if progress:
        progress(len(shards), len(shards))

    listed = {e["file"] for e in shards}
    for stray in sorted(dataset_dir.glob(f"{name}_*.bin")):
        if stray.name not in listed:
            problems.append(f"shard {stray} is not listed in {MANIFEST_NAME}; delete it or {hint}")
    complete = {
        split for split in ("train", "val") if len(streams[split]) == sum(1 for e in shards if e["split"] == split)
    }
    # A split whose shards could not all be read already has its problem reported; "empty" would only mislead.
    if report["train_tokens"] < 2 and "train" in complete:
        problems.append(f"{dataset_dir}: the train split is empty; {hint}")
    if report["val_tokens"] < 2 and "val" in complete:
        problems.append(f"{dataset_dir}: the val split has fewer than 2 tokens, nothing to score; {hint}")
    listed_docs = _check_docs(manifest, streams, complete, problems)
    for split in sorted(complete):
        if manifest.get("docs") and listed_docs[split] != bos_counts[split]:
            problems.append(
                f"{MANIFEST_NAME} lists {listed_docs[split]} {split} documents but the shards hold"
                f" {bos_counts[split]} BOS tokens; {hint}"
            )
    # Documents are counted by their BOS, so exports without a document list (FineWeb) get counts too.
    report.update(train_docs=bos_counts["train"], val_docs=bos_counts["val"])

    if accounting is not None and ids_ok and report["val_tokens"] >= 2:
        val = np.concatenate([np.asarray(s, dtype=np.int32) for s in streams["val"]])
        report["val_bytes"] = count_val_bytes(val, accounting)
        if report["val_bytes"] > 0:
            report["bytes_per_token"] = report["val_bytes"] / (len(val) - 1)
        else:
            problems.append(f"{dataset_dir}: the val split decodes to 0 bytes, BPB is undefined; {hint}")
        bos = int(manifest["bos_id"])
        val_docs = (manifest.get("docs") or {}).get("val", [])
        names = {int(d["offset"]): str(d.get("name")) for d in val_docs if "offset" in d}
        problem = doc_bytes_problem(sp, accounting, val, bos, "val", names)
        if problem:
            problems.append(f"{dataset_dir}: {problem}; val_bytes would be wrong, {hint}")
        reason = probe_problem(sp) or token_roundtrip_problem(sp, val, bos, "val", names)
        if reason:
            report.update(lossy=True, lossy_reason=reason)
            if not marked_lossy:
                problems.append(
                    f"tokenizer {tok_path} is lossy ({reason}) but {MANIFEST_NAME} does not say so;"
                    f" {hint} (with --allow-lossy it is labelled lossy)"
                )
        elif not marked_lossy:
            report["lossy"] = False
    if marked_lossy and not allow_lossy:
        problems.append(
            f"{dataset_dir} is a lossy dataset ({report['lossy_reason']}), never official;"
            " pass --allow-lossy to accept it"
        )
    report["ok"] = not problems
    return report
