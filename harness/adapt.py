"""Score-first test-time adaptation (TTT), enforced by the evaluator.

parameter-golf accepted TTT only in its score-first form (reference: parameter-golf.md §2.5, the legality canon
C1-C4): each chunk of the val stream is scored under no-grad, its scores are fixed, and only then may the model
train on that already-scored chunk; the last chunk is never trained on. Here the harness, not the submission,
owns that order:

- the val targets are cut into chunks of about ``recipe.chunk_tokens`` targets, aligned to the sliding windows of
  `window_plan` (a chunk is a run of whole windows, so every window is scored by exactly one model state);
- for chunk k the evaluator scores every window of the chunk with the adapter's current weights and adds the NLLs
  to the float64 sums (fixed, never revisited), THEN calls ``adapter.adapt(val[lo - 1 : hi + 1])`` where
  ``lo..hi`` are the chunk's scored target positions: every token handed over is a target already scored (or the
  token before the first one, which is context only);
- with ``recipe.reset_at_bos`` the adapter is reset before a chunk whose scored targets contain a BOS (a new
  document) and is given only the chunk's tokens from its last BOS on (per-document adaptation);
- after the first adapt the integrity probes run again on the adapted scorer (``probe``), so a scorer that
  cheats only once it has adapted is refused too;
- before the eval clock starts, the scorer runs once at every batch shape the pass will send (`warm_scorer`) and
  an adapter with the optional ``warm_adapt(lengths)`` compiles its update for every adapt() length, changing
  no weight; neither sees a val token, so compiles (torch.compile, jax.jit) stay off the clock;
- adaptation time counts in ``eval_seconds``; its analytic FLOPs are ``adapt_tokens`` x the spec's training
  FLOPs per token (forward + backward, harness/models.py), the same number for every backend.

The recipe (`AdaptRecipe`) is declared once here; torch and JAX implement the same update (chunked SGD with
momentum and global-norm clipping on the mean token NLL of the chunk) and agree on CPU fp32
(tests/test_adapt.py measures it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol, runtime_checkable

import numpy as np

from golfbench.harness.data.tokenizer import ByteAccounting
from golfbench.harness.distributed import SINGLE, Collective
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import (
    EvalResult,
    count_val_bytes,
    policy_text,
    score_windows,
    warm_scorer,
    window_plan,
)

ADAPTATION_RULES = ("none", "score-first")  # a track's eval_adaptation


@dataclass(frozen=True)
class AdaptRecipe:
    """One score-first TTT recipe, identical for every backend.

    ``name``: what `golf run --adapt` takes; ``chunk_tokens``: targets per chunk (rounded to whole windows);
    ``steps``: SGD steps on each scored chunk (each over all its rows); ``lr``: learning rate; ``momentum``:
    heavy-ball momentum (buf <- momentum * buf + g; w <- w - lr * buf; torch.optim.SGD's rule), the buffer kept
    across chunks; ``grad_clip``: global L2 norm the gradient is clipped to before the update (0 = none);
    ``reset_at_bos``: reset weights and momentum at every document start. The loss is the mean NLL (nats) over
    the rows `adapt_rows` cuts from the tokens given. Follows parameter-golf's chunked global TTT (SGD on the
    already-scored chunk; parameter-golf.md §2.5).
    """

    name: str
    chunk_tokens: int = 4096
    steps: int = 2
    lr: float = 0.05
    momentum: float = 0.9
    grad_clip: float = 1.0
    reset_at_bos: bool = False

    def to_dict(self) -> dict:
        """The hyperparameters as a plain dict (recorded in result.json as ``adapt_params``)."""
        return asdict(self)


# "sgd": tuned on the dev track (llama/tiny trained 60 s on Shakespeare, first 40k val tokens, val_bpb 3.018):
# lr 0.003/0.01/0.03/0.1 at 8192-target chunks saved 0.041 (0.01), 0.078 (0.03), 0.132 (0.1) bpb; lr 0.05 at 4096
# saved 0.173. A well-trained official model likely wants a smaller lr (parameter-golf's records: 0.002).
RECIPES: dict[str, AdaptRecipe | None] = {
    "none": None,
    "sgd": AdaptRecipe("sgd"),
}


def get_recipe(name: str) -> AdaptRecipe | None:
    """The recipe called ``name`` (None for "none"). Raises GolfError for an unknown name, listing the known ones."""
    if name not in RECIPES:
        raise GolfError(f"unknown adaptation recipe '{name}': choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


@runtime_checkable
class Adapter(Protocol):
    """What a backend's ``adapter(spec_name, config, weights, precision, recipe)`` returns: a Scorer
    (harness/backend.py: ``__call__`` and ``logprobs``, scoring with the current weights, never changing them)
    plus ``adapt(tokens int32 (n,))``: `recipe.steps` updates on `adapt_rows(tokens, seq_len)`; and ``reset()``:
    back to the given weights with zero momentum. Optional: ``warm_adapt(lengths)``, called once before the eval
    clock with the distinct token counts (ints) adapt() will get: compile the update for them without changing
    the weights or the optimizer state (the JAX adapter jits per row count; the torch adapter trains eagerly
    and has none).
    """

    def __call__(self, tokens: np.ndarray) -> np.ndarray: ...

    def logprobs(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """float32 (n, V) log-distributions at ``positions`` int (n, 2) of ``tokens`` int32 (B, T+1) (as Scorer)."""

    def adapt(self, tokens: np.ndarray) -> None:
        """Train on ``tokens`` int32 (n >= 2,), every one already scored (the evaluator guarantees it)."""

    def reset(self) -> None:
        """Back to the weights the adapter was built with, optimizer state cleared."""


def adapt_rows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """Training rows int32 (R, w+1), w = min(seq_len, n-1), for tokens int (n,): non-overlapping windows of
    `window_plan` (stride = context), the last right-aligned to the end, so every target is trained on at least
    once and at most twice. Raises GolfError for fewer than 2 tokens."""
    tokens = np.asarray(tokens, dtype=np.int32)
    starts, width, _ = window_plan(len(tokens), seq_len, seq_len)
    return tokens[starts[:, None] + np.arange(width + 1)]


def chunk_plan(scored: np.ndarray, chunk_tokens: int) -> list[tuple[int, int]]:
    """Group consecutive windows into chunks of at least ``chunk_tokens`` scored targets (the last chunk takes
    what is left): a list of (first window, end window) over ``scored`` int (W,) from `window_plan`."""
    chunks, w0, acc = [], 0, 0
    for w, s in enumerate(np.asarray(scored).tolist()):
        acc += s
        if acc >= chunk_tokens:
            chunks.append((w0, w + 1))
            w0, acc = w + 1, 0
    if w0 < len(scored):
        chunks.append((w0, len(scored)))
    return chunks


def _chunk_targets(starts, width, scored, w0: int, w1: int) -> tuple[int, int]:
    """First and last val token index (inclusive) scored by windows w0..w1-1."""
    lo = int(starts[w0]) + width - int(scored[w0]) + 1
    hi = int(starts[w1 - 1]) + width
    return lo, hi


def _adapt_slices(tokens: np.ndarray, context: int, stride: int, recipe: AdaptRecipe, bos_id: int | None):
    """Yield (w0, w1, reset_before, adapt_slice or None) for every chunk; the last chunk gets None."""
    starts, width, scored = window_plan(len(tokens), context, stride)
    chunks = chunk_plan(scored, recipe.chunk_tokens)
    for k, (w0, w1) in enumerate(chunks):
        lo, hi = _chunk_targets(starts, width, scored, w0, w1)
        begin, reset = lo - 1, False
        if recipe.reset_at_bos and bos_id is not None:
            bos = np.flatnonzero(tokens[lo : hi + 1] == bos_id)
            if len(bos):
                reset, begin = True, lo + int(bos[-1])
        last = k == len(chunks) - 1
        yield w0, w1, reset, (None if last or hi + 1 - begin < 2 else slice(begin, hi + 1))


def _trained_tokens(n_tokens: int, context: int, steps: int) -> int:
    """Tokens one adapt() over ``n_tokens`` tokens trains on: rows x row width x steps (`adapt_rows`)."""
    starts, width, _ = window_plan(n_tokens, context, context)
    return len(starts) * width * steps


def adapt_token_count(
    tokens: np.ndarray, context: int, stride: int, recipe: AdaptRecipe, bos_id: int | None = None
) -> int:
    """Tokens trained on by an adaptive evaluation of the val ``tokens`` int (N,): Σ over adapted chunks of rows x
    row width x steps. Known before training (it depends on the val split and the recipe only), so a FLOP-budget
    track can reserve ``adapt_token_count`` x training FLOPs per token. Raises GolfError as `window_plan`."""
    total = 0
    for _, _, _, piece in _adapt_slices(np.asarray(tokens), context, stride, recipe, bos_id):
        if piece is not None:
            total += _trained_tokens(piece.stop - piece.start, context, recipe.steps)
    return total


@dataclass
class AdaptStats:
    """What adaptation cost: ``adapt_seconds`` (wall-clock seconds inside adapt/reset, part of eval_seconds),
    ``adapt_tokens`` (tokens trained on, x steps), ``adapt_flops`` (adapt_tokens x analytic training FLOPs per
    token), ``adapt_chunks`` (chunks scored) and ``adapt_resets`` (per-document resets)."""

    adapt_seconds: float
    adapt_tokens: int
    adapt_flops: float
    adapt_chunks: int
    adapt_resets: int


def evaluate_adaptive(
    adapter: Adapter,
    tokens: np.ndarray,
    accounting: ByteAccounting,
    context: int,
    stride: int,
    recipe: AdaptRecipe,
    flops_per_token: float,
    bos_id: int | None = None,
    batch_windows: int = 32,
    probe: Callable[[Adapter], object] | None = None,
    progress: Callable[[int, int], None] | None = None,
    collective: Collective = SINGLE,
    train_context: int | None = None,
) -> tuple[EvalResult, AdaptStats]:
    """Score-first adaptive evaluation of the full val split (module docstring): same windows, float64 sums and
    BPB as `evaluate`; each chunk is scored, then adapted on. ``flops_per_token``: analytic training FLOPs per
    token of the model; ``train_context``: the seq_len it trained at (for the policy text); ``probe``: called with the adapter once after its first adapt (raises to refuse).

    Sequential by nature, so it is never sharded: with several processes (a multi-GPU run) every process runs the
    whole adaptive evaluation on its own replica of the weights, and the sums of process 0 are broadcast so every
    process returns process 0's result (each replica's pass is a complete score-first evaluation; on a CPU they
    agree bit for bit, tests/test_adapt.py). Raises GolfError as `evaluate` does (bad context/stride, 0 val
    bytes, a wrong shape, a non-finite NLL). ``eval_seconds`` starts after the scorer and the update are warmed
    (`warm_scorer`, ``adapter.warm_adapt``) at every shape the pass uses.
    """
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    starts, width, scored = window_plan(len(tokens), context, stride)
    batch_windows = max(1, int(batch_windows))
    plan = list(_adapt_slices(tokens, context, stride, recipe, bos_id))
    warm_scorer(
        adapter,
        width,
        (min(b0 + batch_windows, w1) - b0 for w0, w1, _, _ in plan for b0 in range(w0, w1, batch_windows)),
    )
    if hasattr(adapter, "warm_adapt"):
        adapter.warm_adapt(sorted({p.stop - p.start for *_, p in plan if p is not None}))
    t0 = time.perf_counter()
    val_bytes = count_val_bytes(tokens, accounting)
    if val_bytes <= 0:
        raise GolfError("the val tokens decode to 0 bytes; BPB is undefined (is this the right tokenizer?)")
    nll_sum, n_scored = 0.0, 0
    adapt_seconds, adapt_tokens, resets, n_chunks, probed = 0.0, 0, 0, 0, False
    for w0, w1, reset, piece in plan:
        n_chunks += 1
        if reset:
            ta = time.perf_counter()
            adapter.reset()
            adapt_seconds += time.perf_counter() - ta
            resets += 1
        for b0 in range(w0, w1, batch_windows):
            b1 = min(b0 + batch_windows, w1)
            s, n = score_windows(adapter, tokens, starts, width, scored, b0, b1)
            nll_sum += s  # fixed: nothing below can change it
            n_scored += n
        if progress:
            progress(w1, len(starts))
        if piece is None:
            continue  # the last chunk (or a 1-token remnant) is never trained on
        ta = time.perf_counter()
        adapter.adapt(tokens[piece].copy())  # a copy: the adapter cannot reach the tokens not yet scored
        adapt_seconds += time.perf_counter() - ta
        adapt_tokens += _trained_tokens(piece.stop - piece.start, context, recipe.steps)
        if probe is not None and not probed:
            probe(adapter)
            probed = True
    assert n_scored == len(tokens) - 1
    if collective.world_size > 1:  # one number for the run: process 0's, identical on every process
        nll_sum = float(collective.broadcast([nll_sum])[0])
    result = EvalResult.from_sums(
        nll_sum,
        n_scored,
        val_bytes,
        t0,
        context,
        stride,
        policy_text(context, stride, train_context)
        + f"; score-first adaptation '{recipe.name}': {n_chunks} chunks of ~{recipe.chunk_tokens} targets, each"
        " scored before the model trains on it, the last never trained on",
    )
    stats = AdaptStats(adapt_seconds, adapt_tokens, adapt_tokens * float(flops_per_token), n_chunks, resets)
    return result, stats
