"""What a number is of: dataset content identity, the track's pin on it, and cohorts."""

from __future__ import annotations

import hashlib
import json

from golf_helpers import golf, one_line_error, small_dataset

from golfbench.harness.cohort import COHORT_FIELDS, cohort_key, dataset_content_sha256, dataset_full_sha256
from golfbench.harness.data.manifest import read_manifest
from golfbench.harness.tracks import load_track


def test_content_identity_hashes_the_tokenizer_and_val_shard_bytes(shakespeare_dir):
    manifest, _ = read_manifest(shakespeare_dir)
    # computed here from the files themselves, not from the manifest's recorded hashes
    val = [
        hashlib.sha256((shakespeare_dir / s["file"]).read_bytes()).hexdigest()
        for s in manifest["shards"]
        if s["split"] == "val"
    ]
    tok = hashlib.sha256((shakespeare_dir / manifest["tokenizer"]).read_bytes()).hexdigest()
    want = hashlib.sha256(json.dumps({"tokenizer_sha256": tok, "val": val}, sort_keys=True).encode()).hexdigest()
    assert dataset_content_sha256(manifest) == want
    # the dev tracks pin exactly this build, train shards included: `golf data build shakespeare` is
    # byte-identical on every machine
    train = [hashlib.sha256((shakespeare_dir / s["file"]).read_bytes()).hexdigest() for s in manifest["shards"]
             if s["split"] == "train"]  # fmt: skip
    full = json.dumps({"tokenizer_sha256": tok, "val": val, "train": train}, sort_keys=True).encode()
    assert dataset_full_sha256(manifest) == hashlib.sha256(full).hexdigest()
    for track in ("fixed-data", "flop-budget", "wallclock-10min"):
        assert load_track(track).scale("dev")["dataset_sha256"] == dataset_full_sha256(manifest)


def test_same_name_other_content_is_another_dataset(shakespeare_dir, tmp_path):
    small = small_dataset(shakespeare_dir, tmp_path / "shakespeare_sp1024")
    a, _ = read_manifest(shakespeare_dir)
    b, _ = read_manifest(small)
    assert a["name"] == b["name"] and a.get("id") == b.get("id")
    assert dataset_content_sha256(a) != dataset_content_sha256(b)
    # an official dev run on it is refused before anything is written: the track pins the content
    out = tmp_path / "runs"
    res = golf("run", "--track", "fixed-data", "--scale", "dev", "--data", small, "--out", out)
    one_line_error(res, "pins dataset content 5d62f5f27841", "same name, other train/val tokens or tokenizer")
    assert not out.exists()


def test_other_training_data_under_the_same_name_is_not_official(shakespeare_dir, tmp_path):
    """Same tokenizer and val shards (so the same cohort content), but a train split cut short: it would
    train on other data, so the pin (which covers the train shards) refuses it as an official dev run."""
    alt = small_dataset(shakespeare_dir, tmp_path / "shakespeare_sp1024", train_tokens=1_000_000, val_tokens=10**9)
    a, _ = read_manifest(shakespeare_dir)
    b, _ = read_manifest(alt)
    assert dataset_content_sha256(a) == dataset_content_sha256(b) and dataset_full_sha256(a) != dataset_full_sha256(b)
    out = tmp_path / "runs"
    res = golf("run", "--track", "fixed-data", "--scale", "dev", "--data", alt, "--out", out)
    one_line_error(res, "pins dataset content")
    assert not out.exists()


def test_cohort_key_covers_data_policy_precision_and_hardware():
    base = {
        "track": "fixed-data",
        "track_version": 2,
        "scale": "dev",
        "dataset_content_sha256": "a" * 64,
        "eval_stride": 64,
        "eval_context": 256,
        "eval_precision": "fp32",
        "hardware_class": "cpu",
    }
    assert cohort_key(base) == tuple(base[k] for k in COHORT_FIELDS)
    for field, other in [
        ("track_version", 1),
        ("dataset_content_sha256", "b" * 64),
        ("eval_stride", 256),
        ("eval_context", 1024),
        ("eval_precision", "bf16"),
        ("hardware_class", "8xH100"),
    ]:
        assert cohort_key({**base, field: other}) != cohort_key(base), field
    assert cohort_key({**base, "model": "megalodon", "seed": 3}) == cohort_key(base)  # entries, not cohorts
