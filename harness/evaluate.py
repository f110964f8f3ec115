"""The BPB evaluator: sliding windows over the full val split, float64 sums, parameter-golf byte accounting.

Scored targets are val positions 1..N-1 (every token after the first), each exactly once. The backend
scorer only maps windows of tokens to per-position NLLs; which positions count is decided here.

The eval clock (``eval_seconds``) starts only after `warm_scorer` has run the scorer once at every batch shape
the pass will send, so a scorer that compiles per shape (torch.compile, jax.jit) compiles off the clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from golfbench.harness.data.tokenizer import ByteAccounting
from golfbench.harness.distributed import SINGLE, Collective
from golfbench.harness.errors import GolfError

ScoreFn = Callable[[np.ndarray], np.ndarray]
_BYTES_CHUNK = 1 << 22

BOS_POLICY = "BOS targets: NLL summed, 0 bytes (parameter-golf convention)"


@dataclass
class EvalResult:
    """One evaluation of the full val split. ``val_nll_sum``: Σ NLL over scored targets, in nats (float64 sum);
    ``val_tokens``: scored targets (val tokens after the first); ``val_bytes``: their UTF-8 bytes by the
    parameter-golf rule; ``val_bpb``: bits per byte, val_nll_sum / (ln 2 · val_bytes); ``val_loss``: nats per
    target; ``eval_seconds``: wall-clock seconds of the evaluation; ``eval_stride`` and ``eval_context``: in
    tokens; ``policy``: the scoring policy in words (`policy_text`).
    """

    val_nll_sum: float
    val_tokens: int  # scored targets: val tokens after the first
    val_bytes: int
    val_bpb: float
    val_loss: float
    eval_seconds: float
    eval_stride: int
    eval_context: int
    policy: str

    def to_dict(self) -> dict:
        """The fields as a plain dict (what result.json records)."""
        return asdict(self)

    @classmethod
    def from_sums(
        cls, nll_sum: float, n_scored: int, val_bytes: int, t0: float, context: int, stride: int, policy: str
    ) -> "EvalResult":
        """The result of one pass from its float64 NLL sum (nats) over ``n_scored`` targets of ``val_bytes`` bytes:
        BPB = nll_sum / (ln 2 · val_bytes), loss = nll_sum / n_scored; ``t0`` is the pass's time.perf_counter start."""
        return cls(
            val_nll_sum=nll_sum,
            val_tokens=n_scored,
            val_bytes=val_bytes,
            val_bpb=nll_sum / (math.log(2) * val_bytes),
            val_loss=nll_sum / n_scored,
            eval_seconds=time.perf_counter() - t0,
            eval_stride=stride,
            eval_context=context,
            policy=policy,
        )


def count_val_bytes(tokens: np.ndarray, accounting: ByteAccounting) -> int:
    """The BPB denominator: bytes of every token after the first, each given the token before it."""
    tokens = np.asarray(tokens)
    total = 0
    for start in range(1, len(tokens), _BYTES_CHUNK):
        end = min(start + _BYTES_CHUNK, len(tokens))
        total += int(accounting.token_bytes(tokens[start - 1 : end - 1], tokens[start:end]).sum())
    return total


def window_plan(n_tokens: int, context: int, stride: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Return (starts, width, scored): window k reads tokens[starts[k] : starts[k] + width + 1] and
    scores its last scored[k] targets.

    Full-length windows start every `stride` tokens; the first scores all its targets, later ones their
    last `stride`. If targets remain past the last full window, one more window is right-aligned to the
    end so it keeps full context and scores only what is left. Every window has the same width, so
    batches never need padding; only a split shorter than `context` gives one shorter window.
    Raises GolfError for a context < 1, a stride outside [1, context] or fewer than 2 tokens.
    """
    if context < 1:
        raise GolfError(f"eval context must be >= 1, got {context}")
    if not 1 <= stride <= context:
        raise GolfError(f"eval stride {stride} must lie in [1, context={context}]; use a stride of at most the context")
    targets = n_tokens - 1
    if targets < 1:
        raise GolfError(f"the val split has {n_tokens} token(s); at least 2 are needed to score anything")
    width = min(context, targets)
    starts = np.arange(0, targets - width + 1, stride, dtype=np.int64)
    scored = np.full(len(starts), stride, dtype=np.int64)
    scored[0] = width
    left = targets - (int(starts[-1]) + width)
    if left > 0:
        starts = np.append(starts, targets - width)
        scored = np.append(scored, left)
    assert int(scored.sum()) == targets
    return starts, width, scored


def policy_text(context: int, stride: int, train_context: int | None = None) -> str:
    """The scoring policy for ``context`` and ``stride`` (tokens) in words, as recorded with every result. When
    ``train_context`` (the seq_len the model trained at) differs from ``context``, the text says "evaluated at
    context N, trained at M" (a longer eval context, `golf run/eval --eval-context`)."""
    kind = "non-overlapping windows" if stride == context else f"sliding windows, stride {stride}"
    text = (
        f"{kind} of {context} targets; every val token after the first scored exactly once, each with at least"
        f" {context - stride} tokens of context except in the first window; last window right-aligned to the end;"
        f" windows cross document boundaries; {BOS_POLICY}"
    )
    if train_context is not None and train_context != context:
        text += f"; evaluated at context {context}, trained at {train_context}"
    return text


def score_windows(
    score_fn: ScoreFn,
    tokens: np.ndarray,
    starts: np.ndarray,
    width: int,
    scored: np.ndarray,
    b0: int,
    b1: int,
) -> tuple[float, int]:
    """Score windows b0..b1-1 of a `window_plan` over tokens int32 (N,): (float64 Σ NLL in nats over their scored
    targets, number of scored targets). Raises GolfError for a scorer returning the wrong shape or a non-finite NLL.
    """
    windows = tokens[starts[b0:b1, None] + np.arange(width + 1, dtype=np.int64)]
    nll = np.asarray(score_fn(windows))
    if nll.shape != (b1 - b0, width):
        raise GolfError(
            f"the scorer returned shape {nll.shape} for windows {windows.shape}; expected {(b1 - b0, width)}"
        )
    mask = np.arange(width, dtype=np.int64)[None, :] >= width - scored[b0:b1, None]
    picked = nll[mask].astype(np.float64)
    batch_sum = float(picked.sum())
    if not math.isfinite(batch_sum):
        bad_rows = ~np.isfinite(np.where(mask, nll, 0.0)).all(axis=1)  # only scored positions count
        bad = int(starts[b0 + int(np.argmax(bad_rows))])
        raise GolfError(
            f"the scorer returned a non-finite NLL ({batch_sum}) in the window starting at val token {bad}; the model's weights or scorer are broken"
        )
    return batch_sum, int(picked.size)


def warm_scorer(score_fn: ScoreFn, width: int, rows) -> None:
    """Run ``score_fn`` once on all-zero int32 windows (r, width + 1) for each distinct row count r in ``rows``
    (an iterable of ints), discarding the NLLs: every batch shape a pass will send is compiled before its clock
    starts. Token 0 only (never val data), so the scorer sees nothing it will later score; a still scorer
    (the probes check it) gives the same NLLs afterwards, so no result changes.
    """
    for r in sorted({int(r) for r in rows}, reverse=True):
        score_fn(np.zeros((r, width + 1), dtype=np.int32))


def evaluate(
    score_fn: ScoreFn,
    tokens: np.ndarray,
    accounting: ByteAccounting,
    context: int,
    stride: int = 64,
    batch_windows: int = 32,
    progress: Callable[[int, int], None] | None = None,
    collective: Collective = SINGLE,
    train_context: int | None = None,
) -> EvalResult:
    """Score every val target once with sliding windows; BPB = Σ NLL / (ln 2 · Σ target bytes).

    ``train_context``: the seq_len the model trained at, only named in the policy text when it differs from
    ``context``.

    tokens: int (N,) val token ids. ``score_fn`` maps int32 windows (B, width+1) to float32 NLLs (B, width)
    in nats. With a multi-process ``collective`` the window batches are split into contiguous blocks, one per
    process; each process sums its float64 NLLs and the sums are all-reduced, so every process returns the
    same result (equal to the single-process one up to float64 summation order, ~1e-15 relative).
    Raises GolfError for a bad context/stride, an empty split, 0 val bytes, a scorer returning the wrong
    shape, or a non-finite NLL. ``eval_seconds`` starts after `warm_scorer` has run this process's batch shapes.
    """
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    starts, width, scored = window_plan(len(tokens), context, stride)
    batch_windows = max(1, int(batch_windows))
    n_batches = -(-len(starts) // batch_windows)
    first = n_batches * collective.rank // collective.world_size
    last = n_batches * (collective.rank + 1) // collective.world_size
    mine = min(last * batch_windows, len(starts)) - first * batch_windows  # windows this process scores
    batches = [
        (b0, min(b0 + batch_windows, len(starts)))
        for b0 in range(first * batch_windows, min(last * batch_windows, len(starts)), batch_windows)
    ]
    warm_scorer(score_fn, width, (b1 - b0 for b0, b1 in batches))  # compiles happen here, off the clock
    t0 = time.perf_counter()
    val_bytes = count_val_bytes(tokens, accounting)
    if val_bytes <= 0:
        raise GolfError("the val tokens decode to 0 bytes; BPB is undefined (is this the right tokenizer?)")
    nll_sum = 0.0
    n_scored = 0
    for b0, b1 in batches:
        batch_sum, count = score_windows(score_fn, tokens, starts, width, scored, b0, b1)
        nll_sum += batch_sum
        n_scored += count
        if progress:
            progress(b1 - first * batch_windows, mine)
    if collective.world_size > 1:
        nll_sum, total = (float(x) for x in collective.all_reduce_sum([nll_sum, n_scored]))
        n_scored = int(total)
    assert n_scored == len(tokens) - 1
    return EvalResult.from_sums(
        nll_sum, n_scored, val_bytes, t0, context, stride, policy_text(context, stride, train_context)
    )
