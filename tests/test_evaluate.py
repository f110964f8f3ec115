"""The BPB evaluator: the byte rule on real and adversarial text, closed-form BPB, window coverage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.shards import read_shard
from golfbench.harness.data.tokenizer import BOS_ID, ByteAccounting
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import count_val_bytes, evaluate, window_plan

ADVERSARIAL = [
    "café, naïve, Ångström, Straße",
    "東京タワーと北京烤鸭",
    "emoji 😀👍🏽 and 🇫🇷 flags",
    "digits 0123456789 3.14159 1,000,000",
    "a literal \u2581 piece, \u2581\u2581 twice, and \u2581leading",
    "\u2581starts with the meta space",
    "NUL\x00inside\x00\x00text",
    "combining: e\u0301 a\u0308 n\u0303 (decomposed) vs é ä ñ",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "ligature ﬁ, fullwidth ＡＢＣ, superscript ², roman Ⅻ",  # NFKC rewrites these
    "zero\u200bwidth and \ufeffBOM and \u00a0nbsp",
    "x",
    "\u2581",
    " ",
]


def doc_bytes(accounting: ByteAccounting, ids: list[int]) -> int:
    tokens = np.array([BOS_ID] + list(ids), dtype=np.int64)
    return int(accounting.token_bytes(tokens[:-1], tokens[1:]).sum())


def test_lut_follows_the_reference_rule(sp, accounting: ByteAccounting) -> None:
    assert accounting.size == 1024
    for i in range(4):  # pad, bos, eos, unk
        assert accounting.is_boundary[i] and accounting.base_bytes[i] == 0
    byte_ids = [i for i in range(sp.vocab_size()) if sp.is_byte(i)]
    assert len(byte_ids) == 256 and all(accounting.base_bytes[i] == 1 for i in byte_ids)
    spaced = next(
        i for i in range(sp.vocab_size()) if sp.id_to_piece(i).startswith("\u2581") and len(sp.id_to_piece(i)) > 2
    )
    piece = sp.id_to_piece(spaced)
    assert accounting.has_leading_space[spaced] and accounting.base_bytes[spaced] == len(piece[1:].encode())
    word = sp.piece_to_id("e")
    got = accounting.token_bytes(np.array([BOS_ID, word]), np.array([spaced, spaced]))
    assert got.dtype == np.int64 and got.tolist() == [len(piece) - 1, len(piece)]
    with pytest.raises(GolfError, match="token ids"):
        accounting.token_bytes(np.array([0]), np.array([5000]))


def test_bytes_equal_decoded_utf8_on_every_shakespeare_document(shakespeare: Dataset, sp, accounting) -> None:
    for split, paths in (("train", shakespeare.train_paths), ("val", shakespeare.val_paths)):
        stream = np.concatenate([np.asarray(read_shard(p), dtype=np.int64) for p in paths])
        for d in shakespeare.manifest["docs"][split]:
            ids = stream[d["offset"] + 1 : d["offset"] + d["tokens"]].tolist()
            assert doc_bytes(accounting, ids) == len(sp.decode(ids).encode("utf-8")), d["name"]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_bytes_equal_decoded_utf8_on_adversarial_text(sp, accounting, text: str) -> None:
    ids = sp.encode(text)
    assert doc_bytes(accounting, ids) == len(sp.decode(ids).encode("utf-8"))


def test_adversarial_text_exercises_byte_fallback_and_the_space_rule(sp, accounting) -> None:
    ids = [i for t in ADVERSARIAL for i in sp.encode(t)]
    assert any(sp.is_byte(i) for i in ids) and any(sp.id_to_piece(i) == "\u2581" for i in ids)


def test_bytes_over_concatenated_documents_add_up(sp, accounting) -> None:
    """BOS is a boundary: the next document's leading-space rule restarts, and BOS itself counts 0."""
    stream, expected = [], 0
    for text in ADVERSARIAL:
        ids = sp.encode(text)
        stream += [BOS_ID] + ids
        expected += len(sp.decode(ids).encode("utf-8"))
    assert count_val_bytes(np.array(stream), accounting) == expected


# ---------------------------------------------------------------------------------------------- BPB


def uniform_scorer(vocab: int):
    def score(windows: np.ndarray) -> np.ndarray:
        assert windows.dtype == np.int32 and windows.ndim == 2
        return np.full((windows.shape[0], windows.shape[1] - 1), math.log(vocab), dtype=np.float32)

    return score


def target_scorer(table: np.ndarray, log: list | None = None):
    """NLL depends only on the target id: the sum is known in closed form whatever the windows."""

    def score(windows: np.ndarray) -> np.ndarray:
        if log is not None:
            log.append(windows.shape)
        return table[windows[:, 1:]].astype(np.float32)

    return score


def test_uniform_scorer_on_real_val_gives_the_closed_form(shakespeare: Dataset, accounting) -> None:
    tokens = shakespeare.val_tokens()
    calls: list[tuple[int, int]] = []
    res = evaluate(
        uniform_scorer(1024),
        tokens,
        accounting,
        context=256,
        stride=64,
        batch_windows=64,
        progress=lambda d, t: calls.append((d, t)),
    )
    n = len(tokens) - 1
    nbytes = count_val_bytes(tokens, accounting)
    nll = float(np.float32(math.log(1024)))
    assert res.val_tokens == n and res.val_bytes == nbytes
    assert res.val_bpb == pytest.approx(n * nll / (math.log(2) * nbytes), rel=1e-12)
    assert res.val_loss == pytest.approx(nll, rel=1e-12)
    assert calls[-1][0] == calls[-1][1] and len(calls) == math.ceil(calls[-1][1] / 64)
    d = res.to_dict()
    json.dumps(d)
    assert set(d) == {
        "val_nll_sum",
        "val_tokens",
        "val_bytes",
        "val_bpb",
        "val_loss",
        "eval_seconds",
        "eval_stride",
        "eval_context",
        "policy",
    }
    assert "BOS" in res.policy and "0 bytes" in res.policy and (res.eval_context, res.eval_stride) == (256, 64)


def test_target_dependent_scorer_is_exact_and_independent_of_windows(shakespeare: Dataset, accounting) -> None:
    tokens = shakespeare.val_tokens()[:20_000]
    table = (np.arange(1024) % 13) * 0.25 + 0.5  # exact in float32, so the float64 sum is exact
    expected = float(table[tokens[1:]].sum())
    results = [
        evaluate(target_scorer(table), tokens, accounting, context=c, stride=s)
        for c, s in [(128, 64), (128, 128), (1024, 64), (100, 7), (50_000, 64)]
    ]
    assert all(r.val_nll_sum == expected for r in results)
    assert results[0].val_bpb == expected / (math.log(2) * count_val_bytes(tokens, accounting))


def coverage(n: int, context: int, stride: int) -> tuple[np.ndarray, int, np.ndarray]:
    starts, width, scored = window_plan(n, context, stride)
    targets = np.concatenate([np.arange(s + width - k + 1, s + width + 1) for s, k in zip(starts, scored)])
    return targets, width, np.concatenate([np.arange(width - k, width) for k in scored])


@pytest.mark.parametrize("n", [2, 3, 10, 64, 65, 129, 1000, 1025, 4097])
@pytest.mark.parametrize(
    "context,stride", [(1, 1), (8, 1), (8, 3), (8, 8), (64, 64), (64, 7), (128, 64), (1024, 64), (1024, 1024)]
)
def test_every_target_is_scored_exactly_once(n: int, context: int, stride: int) -> None:
    targets, width, positions = coverage(n, context, stride)
    assert np.array_equal(targets, np.arange(1, n))  # each target once, in order
    assert width == min(context, n - 1)
    starts, _, scored = window_plan(n, context, stride)
    assert starts[-1] + width + 1 <= n and starts.min() >= 0
    # after the first window, every scored target sees at least context - stride tokens before it
    assert np.all(positions[scored[0] :] >= width - stride)


@pytest.mark.parametrize(
    "n,context,stride,batch", [(2, 16, 4, 3), (17, 16, 4, 3), (100, 16, 16, 5), (1000, 64, 7, 32), (333, 1000, 64, 2)]
)
def test_evaluate_scores_each_target_once_with_equal_length_windows(accounting, n, context, stride, batch) -> None:
    """Tokens are their own positions and the NLL of target j is j (then j²): both sums must come out exact."""
    acc = ByteAccounting(np.ones(n), np.zeros(n, bool), np.zeros(n, bool))
    tokens = np.arange(n, dtype=np.int32)
    for power in (1, 2):
        shapes: list[tuple[int, int]] = []
        res = evaluate(
            target_scorer(np.arange(n, dtype=np.float64) ** power, shapes), tokens, acc, context, stride, batch
        )
        assert res.val_nll_sum == float(sum(j**power for j in range(1, n)))
        assert res.val_tokens == n - 1 == res.val_bytes
        assert len({w for _, w in shapes}) == 1 and all(b <= batch for b, _ in shapes)


def test_sums_are_float64(accounting) -> None:
    n = 5000
    acc = ByteAccounting(np.ones(n), np.zeros(n, bool), np.zeros(n, bool))
    table = np.ones(n)
    table[1] = 2.0**24  # float32 accumulation would drop the +1s after this one
    res = evaluate(target_scorer(table), np.arange(n, dtype=np.int32), acc, context=4999, stride=64, batch_windows=1)
    assert res.val_nll_sum == 2.0**24 + (n - 2)
    assert isinstance(res.val_nll_sum, float)


def test_bad_arguments_are_golf_errors(accounting) -> None:
    tokens = np.array([1, 5, 6, 7], dtype=np.int32)
    with pytest.raises(GolfError, match="stride 65 must lie in"):
        evaluate(uniform_scorer(1024), tokens, accounting, context=64, stride=65)
    with pytest.raises(GolfError, match="at least 2"):
        evaluate(uniform_scorer(1024), tokens[:1], accounting, context=64)
    with pytest.raises(GolfError, match="scorer returned shape"):
        evaluate(lambda w: np.zeros((1, 1), np.float32), tokens, accounting, context=2, stride=1)
