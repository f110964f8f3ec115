"""Integrity probes: before scoring, check that a scorer is a real, causal, normalized language model.

parameter-golf lost weeks to "distributions" that summed to ~277 (its PR #886), to scores that saw the
target, and to eval paths that peeked ahead. Each probe turns one of those failures into a refusal:
- normalization: every probed next-token distribution sums to 1 (|sum p - 1| < 1e-3 in fp32);
- consistency: the NLL the scorer reports equals -log p of the realized token (< 1e-4);
- causality: changing every token after a position leaves that position's distribution unchanged;
- stillness: scoring the same windows twice gives the same NLLs, so a scorer cannot train on a window before
  scoring it (the score-first rule of test-time adaptation; harness/adapt.py probes an adapter again after its
  first update).
"""

from __future__ import annotations

import numpy as np

from golfbench.harness.errors import GolfError

SUM_TOL = 1e-3
NLL_TOL = 1e-4
CAUSAL_TOL = 1e-4
# Causality at bf16 scoring: a model whose position t numerically touches later positions (the CEMA FFT
# convolution of megalodon spreads fp32 rounding noise of ~1e-7 over the whole window) has that noise flip
# bf16 roundings downstream, which moves a distribution by a few 1e-4 (measured: 4.0e-4 and 1.7e-4 on
# megalodon/tiny@jax in `golf rehearse`). A real look-ahead (a leaked next token) moves it by O(1).
CAUSAL_TOL_BY_PRECISION = {"fp32": CAUSAL_TOL, "bf16": 1e-2}


class ProbeFailure(GolfError):
    """The scorer failed an integrity probe; the run is `failed`, never scored."""


def _logsumexp(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def probe_scorer(
    scorer,
    tokens: np.ndarray,
    context: int,
    vocab_size: int,
    n_positions: int = 256,
    n_windows: int = 4,
    seed: int = 0,
    precision: str = "fp32",
) -> dict:
    """Raise ProbeFailure naming the first broken property; return the measured worst cases otherwise."""
    rng = np.random.default_rng(seed)
    tokens = np.asarray(tokens, dtype=np.int32)
    width = min(context, len(tokens) - 1)
    if width < 2:
        raise GolfError("the val split is too short to probe the scorer (needs at least 3 tokens)")
    starts = rng.integers(0, len(tokens) - width, size=n_windows)
    windows = np.stack([tokens[s : s + width + 1] for s in starts])
    rows = rng.integers(0, n_windows, size=n_positions)
    cols = rng.integers(0, width, size=n_positions)
    positions = np.stack([rows, cols], axis=1).astype(np.int64)

    logp = np.asarray(scorer.logprobs(windows, positions), dtype=np.float64)
    if logp.shape != (n_positions, vocab_size):
        raise ProbeFailure(f"scorer.logprobs returned shape {logp.shape}, expected ({n_positions}, {vocab_size})")
    if not np.isfinite(logp).all() and not (np.isneginf(logp) | np.isfinite(logp)).all():
        raise ProbeFailure("scorer.logprobs returned NaN or +inf")
    sums = np.exp(_logsumexp(logp))
    worst_sum = float(np.abs(sums - 1).max())
    if worst_sum >= SUM_TOL:
        i = int(np.abs(sums - 1).argmax())
        raise ProbeFailure(
            f"integrity probe: the next-token distribution at window {rows[i]} position {cols[i]} sums to"
            f" {sums[i]:.6g}, not 1; a score must come from a normalized distribution"
        )

    nll = np.asarray(scorer(windows), dtype=np.float64)
    reported = nll[rows, cols]
    realized = -logp[np.arange(n_positions), windows[rows, cols + 1]]
    gap = np.abs(reported - realized)
    worst_nll = float(gap.max())
    if worst_nll >= NLL_TOL * max(1.0, float(np.abs(realized).max())):
        i = int(gap.argmax())
        raise ProbeFailure(
            f"integrity probe: the scorer reports NLL {reported[i]:.6f} at window {rows[i]} position"
            f" {cols[i]} but its own distribution gives {realized[i]:.6f} for the realized token"
        )

    # Stillness: a scorer that learns from what it is asked to score (adapt before scoring) drifts between calls.
    # A non-finite NLL is the evaluator's to report (with the window it came from), not a drift: NaN == NaN here.
    again = np.asarray(scorer(windows), dtype=np.float64)
    same = (again == nll) | (np.isnan(again) & np.isnan(nll))
    finite = np.isfinite(again) & np.isfinite(nll)
    drift = float(np.abs(np.where(finite, again - nll, 0.0)).max())
    if not (same | finite).all():  # a value turned finite <-> non-finite between the two calls: it moved
        drift = float("inf")
    scale = float(np.abs(np.where(np.isfinite(nll), nll, 0.0)).max())
    if not drift < NLL_TOL * max(1.0, scale):
        raise ProbeFailure(
            f"integrity probe: scoring the same windows twice changed an NLL by {drift:.3g}; a scorer must not"
            " change while it scores (training on a chunk before scoring it breaks score-first adaptation)"
        )

    # Causality: scramble everything after each probed position; its distribution must not move.
    worst_causal = 0.0
    for r in range(n_windows):
        for t in sorted(set(cols[rows == r].tolist()))[:3]:
            changed = windows.copy()
            changed[r, t + 1 :] = rng.integers(0, vocab_size, size=width - t)
            at = positions[(rows == r) & (cols == t)][:1]
            before = logp[(rows == r) & (cols == t)][:1]
            after = np.asarray(scorer.logprobs(changed, at), dtype=np.float64)
            diff = float(np.abs(np.exp(after) - np.exp(before)).max())
            worst_causal = max(worst_causal, diff)
            if diff >= CAUSAL_TOL_BY_PRECISION.get(precision, CAUSAL_TOL):
                raise ProbeFailure(
                    f"integrity probe: changing the tokens after position {t} of window {r} changed the"
                    f" distribution at position {t} by {diff:.3g}; the scorer looks ahead"
                )
    return {
        "probe_positions": n_positions,
        "worst_sum_error": worst_sum,
        "worst_nll_gap": worst_nll,
        "worst_causal_change": worst_causal,
        "worst_rescore_drift": drift,
    }
