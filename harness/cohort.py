"""What a number is *of*: dataset content identity and the cohort a run belongs to.

A dataset's name ("shakespeare_sp1024") says what it was meant to be; its content says what it is. The
content identity is the sha256 of the tokenizer's sha256 and the val shards' sha256s (in order): the two
things a BPB depends on. Two builds that score differently cannot share it; two byte-identical builds on
different machines always do. Train shards are not part of it (they change what is learned, not what the
score measures) but a run's manifest sha256 still pins them for resume and verify.

A cohort is everything that must be equal before two results may be pooled as seeds, compared or ranked:
track name and version, scale, dataset content, eval policy (stride, context, precision) and hardware class.
Leaderboards rank inside one cohort only; `golf compare` refuses to pool across cohorts.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

COHORT_FIELDS = (
    "track",
    "track_version",
    "scale",
    "dataset_content_sha256",
    "eval_stride",
    "eval_context",
    "eval_precision",
    "hardware_class",
)


def dataset_content_sha256(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of {"tokenizer_sha256", "val": [val shard sha256s in manifest order]} as canonical JSON.

    ``manifest``: a dataset manifest (manifest.json) with ``tokenizer_sha256`` and ``shards`` entries carrying
    ``split`` and ``sha256``. Raises KeyError for a manifest without them (Dataset.open refuses those first).
    """
    content = {
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "val": [s["sha256"] for s in manifest["shards"] if s["split"] == "val"],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def dataset_full_sha256(manifest: dict[str, Any]) -> str:
    """sha256 (hex) of the whole dataset's content: the tokenizer, the val shards and the train shards (in
    manifest order). What a track pins (``dataset_sha256``): an official run must also have trained on the
    pinned data, not only been scored on it. Raises KeyError like ``dataset_content_sha256``."""
    content = {
        "tokenizer_sha256": manifest["tokenizer_sha256"],
        "val": [s["sha256"] for s in manifest["shards"] if s["split"] == "val"],
        "train": [s["sha256"] for s in manifest["shards"] if s["split"] == "train"],
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def cohort_key(result: dict[str, Any]) -> tuple:
    """The fields of ``result`` (a result.json) that define its cohort, in COHORT_FIELDS order. Records that
    predate a field carry None there, so they form their own cohort instead of joining a newer one."""
    return tuple(result.get(k) for k in COHORT_FIELDS)


def cohort_label(result: dict[str, Any]) -> str:
    """A short human label: "fixed-data v1 · dev · data 3f2a9c1b · stride 64/ctx 256 · fp32 · cpu"."""
    content = result.get("dataset_content_sha256") or "unknown"
    return (
        f"{result.get('track')} v{result.get('track_version', '?')} · {result.get('scale')} · data {content[:8]}"
        f" · stride {result.get('eval_stride')}/ctx {result.get('eval_context')} · {result.get('eval_precision') or 'fp32'}"
        f" · {result.get('hardware_class')}"
    )
