"""Byte accounting is exact for any SentencePiece model, and proven on the data ("What is measured is pinned", 1).

Tokenizers are trained here (vocab 400 or 1024, on 180,000 characters of Shakespeare, a tenth of a second each) with every
option that changes what a '\u2581' means or which pieces exist. The expected bytes of a document are computed
independently, by SentencePiece's own decoder: len(sp.decode(ids).encode("utf-8")).
"""

from __future__ import annotations

import shutil
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from golfbench.harness.data.dataset import Dataset, verify
from golfbench.harness.data.manifest import read_manifest, sha256_file, write_manifest
from golfbench.harness.data.shakespeare import build, load_documents
from golfbench.harness.data.shards import read_shard, write_shard
from golfbench.harness.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    ByteAccounting,
    doc_bytes_problem,
    probe_problem,
    token_roundtrip_problem,
    train_tokenizer_bytes,
)
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import count_val_bytes

SPACE = "\u2581"


@cache
def texts() -> dict[str, str]:
    return {d.name: d.text for d in load_documents()}


DOCS = [
    "to be, or not to be: that is the question",
    "  leading, trailing  and   repeated   spaces  ",
    "tabs\tand\nnewlines\r\nand  double  spaces\n\n\nend",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u3068\u5317\u4eac\u70e4\u9e2d emoji \U0001f600\U0001f44d\U0001f3fd and \U0001f1eb\U0001f1f7 flags",
    "caf\u00e9, na\u00efve, \u00c5ngstr\u00f6m, Stra\u00dfe; ligature \ufb01, fullwidth \uff21\uff22\uff23, \u00bd",
    f"a literal {SPACE} piece, {SPACE}{SPACE} twice, and {SPACE}leading",
    f"{SPACE}starts with the meta space",
    f"the end{SPACE}",
    "x",
    "NUL\x00inside\x00\x00text",
]

OPTIONS: dict[str, dict] = {
    "standard": {},
    "suffix": {"treat_whitespace_as_suffix": True},
    "suffix-dummy": {"treat_whitespace_as_suffix": True, "add_dummy_prefix": True},
    "no-split-by-whitespace": {"split_by_whitespace": False},
    "user-defined": {"user_defined_symbols": [f"{SPACE}to{SPACE}be", f"the{SPACE}", f"{SPACE}{SPACE}", "\u2713"]},
    "control": {"control_symbols": ["<sep>"]},
    "no-byte-fallback": {"byte_fallback": False},
    "repeated-spaces": {"remove_extra_whitespaces": False},
    "repeated-spaces-suffix": {"remove_extra_whitespaces": False, "treat_whitespace_as_suffix": True},
    "dummy-prefix": {"add_dummy_prefix": True},
    "dummy-prefix-repeated-spaces": {"add_dummy_prefix": True, "remove_extra_whitespaces": False},
    "identity-normalization": {"normalization_rule_name": "identity"},
}


@cache
def tokenizer(option: str) -> spm.SentencePieceProcessor:
    train = [texts()[n][20_000:80_000] for n in ("hamlet", "sonnets", "tempest")]
    vocab = 1024 if option == "no-split-by-whitespace" else 400  # merges across words ("▁of▁the") need room
    return spm.SentencePieceProcessor(model_proto=train_tokenizer_bytes(train, vocab, OPTIONS[option]))


@cache
def documents() -> list[str]:
    # Two real documents (their first 30,000 characters) and the hard cases.
    return [texts()["john"][:30_000], texts()["merchant_of_venice"][:30_000], *DOCS]


def stream(docs_ids: list[list[int]]) -> np.ndarray:
    return np.concatenate([np.r_[BOS_ID, ids] for ids in docs_ids]).astype(np.int64)


def decoded_bytes(sp, ids: list[int]) -> int:
    return len(sp.decode(ids).encode("utf-8"))


def reference_luts(sp) -> ByteAccounting:
    """parameter-golf's build_sentencepiece_luts as reference/parameter-golf.md §2.1 states it: the old table."""
    n = sp.vocab_size()
    base, lead, boundary = np.zeros(n, np.int64), np.zeros(n, bool), np.ones(n, bool)
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE):
            lead[i], piece = True, piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteAccounting(base, lead, boundary)


# What each option must show in the encoded documents, so no case passes for want of the thing it tests.
def _pieces(sp, encoded):
    return {sp.id_to_piece(i) for ids in encoded for i in ids}


SHOWS = {
    "standard": lambda sp, enc, dec: any(sp.is_byte(i) for ids in enc for i in ids),
    "suffix": lambda sp, enc, dec: any(len(p) > 1 and p.endswith(SPACE) for p in _pieces(sp, enc)),
    "suffix-dummy": lambda sp, enc, dec: dec[0].endswith(" "),  # the dummy suffix decodes to a trailing space
    "no-split-by-whitespace": lambda sp, enc, dec: any(SPACE in p.strip(SPACE) for p in _pieces(sp, enc)),
    "user-defined": lambda sp, enc, dec: (
        f"{SPACE}to{SPACE}be" in _pieces(sp, enc) and f"the{SPACE}" in _pieces(sp, enc)
    ),
    "control": lambda sp, enc, dec: sp.is_control(sp.piece_to_id("<sep>")),
    "no-byte-fallback": lambda sp, enc, dec: any(sp.is_unknown(i) for ids in enc for i in ids),
    "repeated-spaces": lambda sp, enc, dec: "   " in dec[3] and dec[3].startswith("  "),
    "repeated-spaces-suffix": lambda sp, enc, dec: "   " in dec[3] and any(p.endswith(SPACE) for p in _pieces(sp, enc)),
    "dummy-prefix": lambda sp, enc, dec: all(ids and sp.id_to_piece(ids[0]).startswith(SPACE) for ids in enc[:2]),
    "dummy-prefix-repeated-spaces": lambda sp, enc, dec: dec[3].startswith("  lead"),
    "identity-normalization": lambda sp, enc, dec: "\ufb01" in dec[6],  # NFKC would have made it "fi"
}


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_bytes_equal_decoded_utf8_per_document(option: str) -> None:
    sp = tokenizer(option)
    accounting = ByteAccounting.from_processor(sp)
    encoded = sp.encode(documents())
    expected = [decoded_bytes(sp, ids) for ids in encoded]
    assert SHOWS[option](sp, encoded, [sp.decode(ids) for ids in encoded]), option
    for ids, want in zip(encoded, expected):
        tokens = np.r_[BOS_ID, ids].astype(np.int64)
        assert int(accounting.token_bytes(tokens[:-1], tokens[1:]).sum()) == want, sp.decode(ids)[:40]
    val = stream(encoded)
    assert count_val_bytes(val, accounting) == sum(expected) > 59_000
    assert doc_bytes_problem(sp, accounting, val, BOS_ID) is None


@pytest.mark.parametrize("option", ["suffix", "no-split-by-whitespace", "user-defined"])
def test_the_old_table_was_wrong_where_pieces_hold_inner_or_trailing_spaces(option: str) -> None:
    sp = tokenizer(option)
    encoded = sp.encode(documents()[:2])
    val = stream(encoded)
    expected = sum(decoded_bytes(sp, ids) for ids in encoded)
    old = count_val_bytes(val, reference_luts(sp))
    assert old > expected * 1.01  # each inner or trailing '▁' counted 3 bytes instead of 1
    assert count_val_bytes(val, ByteAccounting.from_processor(sp)) == expected
    problem = doc_bytes_problem(sp, reference_luts(sp), val, BOS_ID, names={0: "john"})
    assert problem.startswith("val document 0 'john' (BOS at val token 0): the byte table counts")
    assert "\n" not in problem and "piece '" in problem and SPACE in problem.split("piece '")[1].split("'")[0]


def test_the_standard_table_is_parameter_golfs_bit_for_bit(sp) -> None:
    """The sp1024 Shakespeare tokenizer (the standard recipe): official numbers cannot move."""
    for tok in (sp, tokenizer("standard")):
        new, old = ByteAccounting.from_processor(tok), reference_luts(tok)
        assert np.array_equal(new.base_bytes, old.base_bytes)
        assert np.array_equal(new.has_leading_space, old.has_leading_space)
        assert np.array_equal(new.is_boundary, old.is_boundary)


def test_a_control_token_at_a_document_edge_is_exact_inside_it_is_refused() -> None:
    sp = tokenizer("control")
    acc = ByteAccounting.from_processor(sp)
    sep, ids = sp.piece_to_id("<sep>"), sp.encode("to be or not")
    assert [sp.id_to_piece(i) for i in ids][2] == f"{SPACE}be"
    edges = [sep, *ids, sep, EOS_ID]
    assert count_val_bytes(stream([edges]), acc) == decoded_bytes(sp, edges) == len("to be or not")
    assert doc_bytes_problem(sp, acc, stream([edges]), BOS_ID) is None
    inside = [*ids[:2], sep, *ids[2:]]  # the decoder keeps the space after an invisible control token
    problem = doc_bytes_problem(sp, acc, stream([edges, inside]), BOS_ID)
    assert problem == (
        f"val document 1 (BOS at val token {len(edges) + 1}): the byte table counts 11 bytes but the document decodes"
        f" to 12; at document token 4, piece '{SPACE}be' (id {ids[2]}) counts 2 byte(s) where decode prints ' be' (3 bytes)"
    )


def test_invalid_utf8_byte_runs_are_reported_not_passed() -> None:
    sp = tokenizer("standard")
    acc = ByteAccounting.from_processor(sp)
    byte = {b: sp.piece_to_id(f"<0x{b:02X}>") for b in (0xE2, 0x96, 0x81, 0x41)}
    valid = [byte[0xE2], byte[0x96], byte[0x81], byte[0x41]]  # "▁A": a whole character, then 'A'
    assert sp.decode(valid) == f"{SPACE}A" and count_val_bytes(stream([valid]), acc) == 4
    assert doc_bytes_problem(sp, acc, stream([valid]), BOS_ID) is None
    cut = [byte[0xE2], byte[0x41]]  # a lead byte without its continuation: decode prints U+FFFD (3 bytes) for it
    assert decoded_bytes(sp, cut) == 4 and count_val_bytes(stream([cut]), acc) == 2
    problem = doc_bytes_problem(sp, acc, stream([valid, cut]), BOS_ID)
    assert problem.startswith(
        "val document 1 (BOS at val token 5): the byte table counts 2 bytes but the document decodes to 4; at document"
        " token 1, piece '<0xE2>'"
    )
    assert "U+FFFD" in problem and "not made by this tokenizer" in problem


def test_unknown_pieces_count_what_the_decoder_prints() -> None:
    sp = tokenizer("no-byte-fallback")
    acc = ByteAccounting.from_processor(sp)
    unk = sp.unk_id()
    assert not acc.is_boundary[unk] and acc.base_bytes[unk] == len(sp.decode([unk]).encode()) == 5  # " ⁇ "
    ids = sp.encode("\u6771 the \u4eac")
    assert ids.count(unk) == 2 and count_val_bytes(stream([ids]), acc) == decoded_bytes(sp, ids)
    # ... and the tokens show the character was lost: the dataset is lossy
    assert "holds <unk>" in token_roundtrip_problem(sp, stream([ids]), BOS_ID)
    # With byte fallback, encode never writes <unk>: parameter-golf's 0-byte boundary stays, and the proof refuses it.
    std = tokenizer("standard")
    assert std.unk_id() == 3 and ByteAccounting.from_processor(std).is_boundary[3]
    problem = doc_bytes_problem(std, ByteAccounting.from_processor(std), stream([[3]]), BOS_ID)
    assert "piece '<unk>' (id 3) counts 0 byte(s) where decode prints ' \u2047 ' (5 bytes)" in problem


def test_a_stream_must_start_with_bos_and_spaces_after_a_stripped_space_are_refused() -> None:
    sp = tokenizer("standard")
    acc = ByteAccounting.from_processor(sp)
    the = sp.piece_to_id(f"{SPACE}the")
    assert sp.id_to_piece(the) == f"{SPACE}the"
    problem = doc_bytes_problem(sp, acc, np.array([the, BOS_ID, the]), BOS_ID)
    assert problem.startswith(f"the val split starts with token {the}, not BOS 1")
    # Encode never writes a lone '▁' first; the decoder strips every leading one while its text is empty.
    lone = sp.piece_to_id(SPACE)
    assert sp.decode([lone, the]) == "the"
    assert f"piece '{SPACE}the'" in doc_bytes_problem(sp, acc, stream([[lone, the]]), BOS_ID)


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_the_probe_finds_tokenizers_that_do_not_round_trip_to_the_recipes_text(option: str) -> None:
    lossy = {
        "suffix-dummy": "' \\\\ e ~ 100%! '",  # the dummy suffix decodes to a trailing space
        "no-byte-fallback": "\u2047",  # characters outside the coverage come back as <unk>
        "repeated-spaces": "two  spaces",
        "repeated-spaces-suffix": "two  spaces",
        "dummy-prefix-repeated-spaces": "two  spaces",
        "identity-normalization": "\ufb01",  # no NFKC
    }
    problem = probe_problem(tokenizer(option))
    if option in lossy:
        assert problem.startswith("decode(encode(text)) of the probe text differs from its nmt_nfkc form at character")
        assert lossy[option] in problem, problem
    else:
        assert problem is None


# ---------------------------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def small_source(tmp_path_factory) -> Path:
    """Twelve 4,000-character documents in the package's layout: the split puts one in val, a build takes ~1 s."""
    src = tmp_path_factory.mktemp("src")
    for name in sorted(texts())[:12]:
        (src / f"{name}_gut.txt").write_text(texts()[name][20_000:24_000])
    return src


def _val_decoded_bytes(dataset_dir: Path) -> tuple[int, list[str]]:
    ds = Dataset.open(dataset_dir)
    sp = spm.SentencePieceProcessor(model_file=str(ds.tokenizer_path))
    val = ds.val_tokens()
    docs = ds.manifest["docs"]["val"]
    ids = [val[d["offset"] + 1 : d["offset"] + d["tokens"]].tolist() for d in docs]
    return sum(decoded_bytes(sp, i) for i in ids), [d["name"] for d in docs]


def test_a_build_proves_its_bytes_and_a_custom_recipe_is_not_official(small_source: Path, tmp_path: Path) -> None:
    out = build(tmp_path / "suffix", source_dir=small_source, tokenizer_options=OPTIONS["suffix"])
    report = verify(out)
    assert report["ok"], report["problems"]
    assert report["id"] == "shakespeare_sp1024-custom" and report["lossy"] is False
    expected, _ = _val_decoded_bytes(out)
    assert report["val_bytes"] == expected > 3_000


def test_a_build_whose_byte_table_is_wrong_is_refused_naming_document_and_piece(
    small_source: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(ByteAccounting, "from_processor", classmethod(lambda cls, sp, vocab=None: reference_luts(sp)))
    with pytest.raises(GolfError) as info:
        build(tmp_path / "data" / "suffix", source_dir=small_source, tokenizer_options=OPTIONS["suffix"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"cannot build {tmp_path / 'data' / 'suffix'}: val document 0 '")
    assert "(BOS at val token 0): the byte table counts" in message and f"{SPACE}' (id " in message
    assert not (tmp_path / "data").exists()  # nothing written, not even the parent folder


def test_verify_refuses_a_dataset_whose_tokens_break_the_byte_rule(small_source: Path, tmp_path: Path) -> None:
    """Hand-built damage the hashes cannot see: an EOS inside a val document, right before a spaced piece."""
    out = build(tmp_path / "ds", source_dir=small_source)
    manifest, _ = read_manifest(out)
    (entry,) = [s for s in manifest["shards"] if s["split"] == "val"]
    val = np.asarray(read_shard(out / entry["file"]), dtype=np.int64)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    k = next(i for i in range(10, len(val)) if sp.id_to_piece(int(val[i])).startswith(SPACE))
    write_shard(out / entry["file"], np.r_[val[:k], EOS_ID, val[k:]], manifest["vocab_size"])
    entry.update(tokens=len(val) + 1, sha256=sha256_file(out / entry["file"]))
    manifest["docs"]["val"][0]["tokens"] += 1
    write_manifest(out, manifest)
    (problem,) = verify(out)["problems"]
    name = manifest["docs"]["val"][0]["name"]
    piece = sp.id_to_piece(int(val[k]))
    assert problem.startswith(f"{out}: val document 0 '{name}' (BOS at val token 0): the byte table counts")
    assert f"at document token {k + 1}, piece '{piece}' (id {int(val[k])}) counts {len(piece) - 1} byte(s)" in problem
    assert problem.endswith("val_bytes would be wrong, rebuild with `golf data build shakespeare`")
    shutil.rmtree(out)


# ---------------------------------------------------------------------------------------------- lossless or labelled


def test_a_lossy_tokenizer_makes_no_official_dataset(small_source: Path, tmp_path: Path) -> None:
    """Case folding loses what the recipe keeps: refused, or built only as labelled, never with an official id."""
    folding = {"normalization_rule_name": "nmt_nfkc_cf"}
    out = tmp_path / "data" / "cf"
    with pytest.raises(GolfError) as info:
        build(out, source_dir=small_source, tokenizer_options=folding)
    message = str(info.value)
    assert "\n" not in message and not (tmp_path / "data").exists()
    assert message.startswith(f"cannot build {out}: the tokenizer is lossy (decode(encode(text)) of the probe text")
    assert "at character 0: 'the quick br' instead of 'The Quick Br'" in message
    assert message.endswith(
        "pass --allow-lossy to build it anyway as unofficial dataset shakespeare_sp1024-custom-lossy"
    )

    build(out, source_dir=small_source, tokenizer_options=folding, allow_lossy=True)
    manifest, _ = read_manifest(out)
    assert manifest["lossy"] is True and manifest["id"] == "shakespeare_sp1024-custom-lossy"
    assert manifest["lossy_reason"].startswith("decode(encode(text)) of the probe text differs")
    assert Dataset.open(out).lossy is True
    refused = verify(out)
    assert not refused["ok"] and refused["lossy"] is True
    (problem,) = refused["problems"]
    assert problem.startswith(f"{out} is a lossy dataset (decode(encode(text))") and problem.endswith(
        "pass --allow-lossy to accept it"
    )
    accepted = verify(out, allow_lossy=True)
    assert accepted["ok"] and accepted["lossy"] is True and accepted["id"] == "shakespeare_sp1024-custom-lossy"
    expected, _ = _val_decoded_bytes(out)
    assert accepted["val_bytes"] == expected  # the bytes of the folded text: what the model is scored on

    # A manifest that hides it: verify finds the tokenizer lossy anyway; a lossy mark without the id suffix is refused.
    manifest.update(lossy=False, id="shakespeare_sp1024")
    write_manifest(out, manifest)
    (problem,) = verify(out, allow_lossy=True)["problems"]
    assert problem.startswith(f"tokenizer {out / 'tokenizer.model'} is lossy (decode(encode(text)) of the probe text")
    assert "but manifest.json does not say so" in problem
    manifest.update(lossy=True)
    write_manifest(out, manifest)
    with pytest.raises(GolfError, match="marked lossy but its id 'shakespeare_sp1024' does not end with '-lossy'"):
        Dataset.open(out)


def test_the_standard_build_is_lossless_and_labelled_so(shakespeare_dir: Path) -> None:
    manifest, _ = read_manifest(shakespeare_dir)
    assert manifest["lossy"] is False and "lossy_reason" not in manifest and manifest["id"] == "shakespeare_sp1024"
    report = verify(shakespeare_dir)
    assert report["ok"] and report["lossy"] is False and report["lossy_reason"] is None
    assert report["val_bytes"] == 486_075
