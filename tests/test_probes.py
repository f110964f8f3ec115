"""The evaluator's integrity probes catch planted cheats and pass the real backends."""

import numpy as np
import pytest

from golfbench.harness.probes import ProbeFailure, probe_scorer

V = 64


class Bigram:
    """An honest scorer: a fixed random bigram table, normalized, causal."""

    def __init__(self, seed=0):
        logits = np.random.default_rng(seed).normal(size=(V, V))
        self.table = logits - np.log(np.exp(logits).sum(1, keepdims=True))

    def dist(self, tokens):  # (B, T+1) -> (B, T, V) log-probs of the next token
        return self.table[tokens[:, :-1]]

    def __call__(self, tokens):
        d = self.dist(tokens)
        return -np.take_along_axis(d, tokens[:, 1:, None], axis=2)[..., 0].astype(np.float32)

    def logprobs(self, tokens, positions):
        return self.dist(tokens)[positions[:, 0], positions[:, 1]].astype(np.float32)


class LeaksNextToken(Bigram):
    """Puts most mass on the realized next token: its distribution depends on the target."""

    def dist(self, tokens):
        d = super().dist(tokens).copy()
        p = np.exp(d) * 0.1
        B, T = tokens.shape[0], tokens.shape[1] - 1
        p[np.arange(B)[:, None], np.arange(T)[None, :], tokens[:, 1:]] += 0.9
        return np.log(p)


class NotNormalized(Bigram):
    """A hashed-cache style score: the 'distribution' sums to far more than 1 (parameter-golf PR #886)."""

    def dist(self, tokens):
        return super().dist(tokens) + np.log(277.0)


class PeeksAhead(Bigram):
    """Conditions on the token two steps ahead (a look-ahead bug, not the target itself)."""

    def dist(self, tokens):
        ahead = np.concatenate([tokens[:, 2:], tokens[:, -1:]], axis=1)
        return self.table[(tokens[:, :-1] + ahead) % V]


class LiesAboutNll(Bigram):
    """Reports lower NLLs than its own distribution gives."""

    def __call__(self, tokens):
        return super().__call__(tokens) * 0.5


TOKENS = np.random.default_rng(1).integers(0, V, size=5000).astype(np.int32)


def test_honest_scorer_passes_with_measured_margins():
    report = probe_scorer(Bigram(), TOKENS, context=128, vocab_size=V)
    assert report["worst_sum_error"] < 1e-5 and report["worst_nll_gap"] < 1e-5 and report["worst_causal_change"] == 0


@pytest.mark.parametrize(
    "cheat, message",
    [
        (LeaksNextToken, "looks ahead|sums to"),
        (NotNormalized, "sums to"),
        (PeeksAhead, "looks ahead"),
        (LiesAboutNll, "reports NLL"),
    ],
)
def test_each_planted_cheat_is_caught(cheat, message):
    with pytest.raises(ProbeFailure, match=message):
        probe_scorer(cheat(), TOKENS, context=128, vocab_size=V)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_leaking_scorer_is_caught_by_causality_even_when_normalized(precision):
    # LeaksNextToken is normalized (0.1 * p + 0.9 * onehot sums to 1), so only the causal probe can catch it;
    # the looser bf16 tolerance (rounding noise, not look-ahead) still catches it, and the peek-ahead cheat.
    cheat = LeaksNextToken()
    d = np.exp(cheat.dist(TOKENS[None, :129]))
    assert np.allclose(d.sum(-1), 1, atol=1e-6)
    with pytest.raises(ProbeFailure, match="looks ahead"):
        probe_scorer(cheat, TOKENS, context=128, vocab_size=V, precision=precision)
    with pytest.raises(ProbeFailure, match="looks ahead"):
        probe_scorer(PeeksAhead(), TOKENS, context=128, vocab_size=V, precision=precision)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize(
    "backend, model", [("torch", "llama"), ("torch", "megalodon"), ("jax", "llama"), ("jax", "megalodon")]
)
def test_real_backends_pass_the_probes(backend, model, precision):
    from golfbench.harness.backend import get_backend
    from golfbench.harness.init import init_weights
    from golfbench.harness.models import get_spec

    spec = get_spec(model)
    cfg = spec.config("tiny")
    rng = np.random.default_rng(0)
    weights = {
        k: v + 0.02 * rng.standard_normal(v.shape).astype(np.float32) for k, v in init_weights(spec, cfg, 0).items()
    }
    scorer = get_backend(backend).scorer(model, cfg, weights, precision=precision)
    tokens = np.random.default_rng(2).integers(0, cfg["vocab_size"], size=3000).astype(np.int32)
    report = probe_scorer(
        scorer,
        tokens,
        context=cfg["seq_len"],
        vocab_size=cfg["vocab_size"],
        n_positions=64,
        n_windows=2,
        precision=precision,
    )
    causal = 1e-4 if precision == "fp32" else 1e-2
    assert (
        report["worst_sum_error"] < 1e-3 and report["worst_nll_gap"] < 1e-4 and report["worst_causal_change"] < causal
    )
