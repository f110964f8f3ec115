"""The real data: parameter-golf's FineWeb export, downloaded from Hugging Face or copied from a local copy.

Remote layout (dataset repo, root `datasets/`): `manifest.json`, `datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin`,
`tokenizers/fineweb_<V>_bpe.model`. A `--source` folder has the same layout under its root (parameter-golf's
own `data/` folder is one). The result is our dataset layout with a manifest of hashes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from golfbench.harness.data.manifest import (
    FORMAT,
    FORMAT_VERSION,
    check_out_dir,
    install_build_dir,
    lossy_id,
    sha256_file,
    start_build_dir,
    write_manifest,
)
from golfbench.harness.data.shards import read_shard
from golfbench.harness.data.tokenizer import (
    ByteAccounting,
    doc_bytes_problem,
    load_tokenizer,
    probe_problem,
    token_roundtrip_problem,
)
from golfbench.harness.errors import GolfError

NAME = "fineweb"
REPO_ID = "willdepueoai/parameter-golf"
REMOTE_ROOT = "datasets"
# Exact names: a `fineweb_val_*.bin` glob also matches CaseOps' `fineweb_val_bytes_*.bin` sidecars.
_SHARD_RE = {split: re.compile(rf"fineweb_{split}_\d{{6}}\.bin") for split in ("train", "val")}

Progress = Callable[[int, int], None]


def variant_vocab(variant: str) -> int:
    """The vocab size of a SentencePiece variant name ("sp1024" -> 1024). Raises GolfError for any other name (byte260
    included)."""
    m = re.fullmatch(r"sp(\d+)", variant)
    if not m:
        raise GolfError(f"unsupported FineWeb variant '{variant}': use a SentencePiece one such as sp1024")
    return int(m.group(1))


def _dataset_dir(variant: str) -> str:
    return f"datasets/fineweb10B_{variant}"


def _tokenizer_rel(variant: str) -> str:
    return f"tokenizers/fineweb_{variant_vocab(variant)}_bpe.model"


def _place(src: Path, dst: Path) -> None:
    """Hard-link when possible (the HF cache or a big local copy is not duplicated), else copy."""
    src = src.resolve(strict=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _local_plan(source: Path, variant: str, train_shards: int) -> tuple[dict[str, Path], dict[str, Any]]:
    source = Path(source)
    if (source / "datasets" / "datasets").is_dir():  # the raw HF layout, with the remote root kept
        source = source / "datasets"
    shard_dir = source / _dataset_dir(variant)
    if not shard_dir.is_dir():
        raise GolfError(
            f"--source {source}: no folder {_dataset_dir(variant)}; point --source at a folder holding datasets/ and tokenizers/"
        )
    found = {split: sorted(p for p in shard_dir.iterdir() if rx.fullmatch(p.name)) for split, rx in _SHARD_RE.items()}
    if not found["val"]:
        raise GolfError(f"--source {shard_dir} has no fineweb_val_NNNNNN.bin shard; the val split is required")
    if len(found["train"]) < train_shards:
        raise GolfError(
            f"--source {shard_dir} has {len(found['train'])} train shard(s), {train_shards} requested; lower --train-shards"
        )
    plan = {p.name: p for p in found["val"] + found["train"][:train_shards]}
    plan["tokenizer.model"] = source / _tokenizer_rel(variant)
    if not plan["tokenizer.model"].is_file():
        raise GolfError(f"--source {source}: tokenizer {_tokenizer_rel(variant)} is missing")
    return plan, {"source": str(source.absolute())}


def _remote_plan(repo_id: str, variant: str, train_shards: int) -> tuple[dict[str, str], dict[str, Any]]:
    manifest_path = _download(repo_id, f"{REMOTE_ROOT}/manifest.json")
    try:
        remote = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GolfError(f"the remote manifest of {repo_id} is unreadable ({exc}); try again or use --source") from None
    name = f"fineweb10B_{variant}"
    entry = next((d for d in remote.get("datasets", []) if d.get("name") == name), None)
    if entry is None:
        raise GolfError(
            f"{repo_id} has no dataset {name}; available: {[d.get('name') for d in remote.get('datasets', [])]}"
        )
    stats = entry.get("stats") or {}
    files_val, files_train = int(stats.get("files_val", 0)), int(stats.get("files_train", 0))
    if files_val < 1:
        raise GolfError(f"{repo_id}: the manifest lists no val shard for {name}")
    if train_shards > files_train:
        raise GolfError(
            f"{repo_id} has {files_train} train shards for {name}, {train_shards} requested; lower --train-shards"
        )
    tok_rel = _tokenizer_rel(variant)
    tok_entry = next((t for t in remote.get("tokenizers", []) if t.get("name") == entry.get("tokenizer_name")), None)
    if tok_entry and str(tok_entry.get("model_path", "")).endswith(".model"):
        tok_rel = str(tok_entry["model_path"])
    plan = {
        f"fineweb_val_{i:06d}.bin": f"{REMOTE_ROOT}/{_dataset_dir(variant)}/fineweb_val_{i:06d}.bin"
        for i in range(files_val)
    }
    plan |= {
        f"fineweb_train_{i:06d}.bin": f"{REMOTE_ROOT}/{_dataset_dir(variant)}/fineweb_train_{i:06d}.bin"
        for i in range(train_shards)
    }
    plan["tokenizer.model"] = f"{REMOTE_ROOT}/{tok_rel}"
    info = {
        "source": f"hf://datasets/{repo_id}/{REMOTE_ROOT}",
        "remote_manifest_sha256": sha256_file(manifest_path),
        "remote_stats": stats,
    }
    return plan, info


def _download(repo_id: str, filename: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise GolfError("huggingface_hub is not installed; run `pip install huggingface_hub` or use --source") from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset"))
    except Exception as exc:  # HTTP, network and cache errors come in many types; all mean "not fetched"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GolfError(
            f"cannot download {filename} from {repo_id}: {first}; check the network or use --source"
        ) from None


def _largest_id(tokens: np.ndarray, chunk: int = 1 << 22) -> int:
    return max((int(tokens[i : i + chunk].max()) for i in range(0, len(tokens), chunk)), default=-1)


def check_export(files: dict[str, Path], variant: str, allow_lossy: bool = False) -> tuple[dict[str, int], str | None]:
    """Check an export before anything is installed: ``files`` maps our file names (shards, "tokenizer.model")
    to local paths. The tokenizer loads with the variant's vocab; every shard is well-formed with token ids below
    the vocab (train shards too); the val split holds at least 2 tokens; the byte table is proven on every val
    document (`doc_bytes_problem`); the tokenizer is lossless as far as tokens can show (`probe_problem`,
    `token_roundtrip_problem`: the raw text is not in the export, so only the decoded val documents can be
    round-tripped). Returns ({shard name: token count}, lossy reason or None). Raises GolfError (one line)
    for any failure, and for a lossy tokenizer unless ``allow_lossy``."""
    vocab = variant_vocab(variant)
    sp = load_tokenizer(files["tokenizer.model"])
    if sp.vocab_size() != vocab:
        raise GolfError(
            f"the tokenizer for variant {variant} has vocab {sp.vocab_size()}, expected {vocab}; check --variant/--source"
        )
    counts, val = {}, []
    for name in sorted(n for n in files if n != "tokenizer.model"):
        tokens = read_shard(files[name])
        counts[name] = len(tokens)
        top = _largest_id(tokens)
        if top >= vocab:
            raise GolfError(
                f"shard {files[name]} holds token id {top} >= vocab size {vocab}: it does not match the tokenizer;"
                " check --variant/--source"
            )
        if _SHARD_RE["val"].fullmatch(name):
            val.append(np.asarray(tokens))
    val_tokens = np.concatenate(val) if val else np.zeros(0, dtype=np.uint16)
    if len(val_tokens) < 2:
        raise GolfError(
            f"the val split of variant {variant} has {len(val_tokens)} token(s), nothing to score; check --source"
        )
    bos = sp.bos_id()
    problem = doc_bytes_problem(sp, ByteAccounting.from_processor(sp, vocab), val_tokens, bos, "val")
    if problem:
        raise GolfError(f"refusing the {variant} export: {problem}; check --variant/--source")
    lossy = probe_problem(sp) or token_roundtrip_problem(sp, val_tokens, bos, "val")
    if lossy and not allow_lossy:
        raise GolfError(
            f"refusing the {variant} export: its tokenizer is lossy ({lossy}); pass --allow-lossy to fetch it anyway"
            f" as unofficial dataset {lossy_id(f'{NAME}_{variant}', True)}"
        )
    return counts, lossy


def fetch(
    out_dir: Path,
    variant: str = "sp1024",
    train_shards: int = 10,
    source: Path | None = None,
    repo_id: str = REPO_ID,
    progress: Progress | None = None,
    allow_lossy: bool = False,
) -> Path:
    """Fetch the export into ``out_dir`` (all val shards, the first ``train_shards`` train shards, the
    tokenizer), write the manifest, and return ``out_dir``. 10 train shards = 1B tokens, the fixed-data budget.

    Every file is downloaded (to the Hugging Face cache) or found locally and checked (`check_export`) before
    anything is written at ``out_dir``: a refused export leaves no folder behind. Raises GolfError (one line).
    """
    vocab = variant_vocab(variant)
    if train_shards < 1:
        raise GolfError(f"--train-shards must be >= 1, got {train_shards}")
    out_dir = Path(out_dir).absolute()
    check_out_dir(out_dir)
    if source is not None:
        plan, info = _local_plan(Path(source), variant, train_shards)
    else:
        plan, info = _remote_plan(repo_id, variant, train_shards)
    tick = progress or (lambda done, total: None)
    files: dict[str, Path] = {}
    for i, (dst_name, src) in enumerate(sorted(plan.items())):
        tick(i, len(plan))
        files[dst_name] = Path(src) if source is not None else _download(repo_id, str(src))
    tick(len(plan), len(plan))
    counts, lossy = check_export(files, variant, allow_lossy)
    sp = load_tokenizer(files["tokenizer.model"])
    tmp = start_build_dir(out_dir)
    try:
        shards = []
        for dst_name, src_path in sorted(files.items()):
            _place(src_path, tmp / dst_name)
            if dst_name != "tokenizer.model":
                split = "val" if _SHARD_RE["val"].fullmatch(dst_name) else "train"
                shards.append(
                    {
                        "file": dst_name,
                        "split": split,
                        "tokens": counts[dst_name],
                        "sha256": sha256_file(tmp / dst_name),
                    }
                )
        shards.sort(key=lambda s: (s["split"] != "train", s["file"]))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": NAME,
            "id": lossy_id(f"{NAME}_{variant}", bool(lossy)),
            "lossy": bool(lossy),
            **({"lossy_reason": lossy} if lossy else {}),
            "variant": variant,
            "vocab_size": vocab,
            "bos_id": sp.bos_id(),
            "eos_id": sp.eos_id(),
            "pad_id": sp.pad_id(),
            "unk_id": sp.unk_id(),
            "tokenizer": "tokenizer.model",
            "tokenizer_sha256": sha256_file(tmp / "tokenizer.model"),
            "shards": shards,
            "stats": {
                f"{key}_{split}": sum(s["tokens"] if key == "tokens" else 1 for s in shards if s["split"] == split)
                for split in ("train", "val")
                for key in ("tokens", "files")
            },
            "build": {
                "builder": "golfbench.harness.data.fineweb",
                **info,
                "variant": variant,
                "train_shards": train_shards,
                "files": {name: str(src) for name, src in sorted(plan.items())},
                "split": "parameter-golf's: the first 50,000 documents of the frozen shuffled export are val",
            },
        }
        write_manifest(tmp, manifest)
        install_build_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
