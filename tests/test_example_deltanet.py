"""The worked plugin example (examples/golf-deltanet): a chunked Gated DeltaNet checked against a float64
token-by-token numpy reference, its formulas against the built model, its golf16 artifact against the cap,
and (slow) that the tiny preset learns on Shakespeare in a 60 s dev run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import reference_deltanet as ref
from golf_helpers import golf_ok

from golfbench.harness.artifact import CAP_BYTES
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec

pytest.importorskip("golf_deltanet", reason="install examples/golf-deltanet (make setup does)")
jax = pytest.importorskip("jax")
jnp = jax.numpy

from golf_deltanet.deltanet_jax import gated_delta_rule  # noqa: E402

from golfbench.backends.jax.runtime import abstract_model, make_apply, model_shapes  # noqa: E402

SPEC = get_spec("deltanet")


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("T, chunk", [(37, 16), (32, 8), (5, 64)])
def test_chunked_delta_rule_matches_the_recurrence(T, chunk):
    rng = np.random.default_rng(T + chunk)
    B, H, dk, dv = 2, 3, 8, 6
    q, k = (rng.normal(size=(B, T, H, dk)) for _ in range(2))
    k /= np.linalg.norm(k, axis=-1, keepdims=True)  # the model's keys are L2-normalized
    v = rng.normal(size=(B, T, H, dv))
    g = -rng.uniform(0.0, 1.5, size=(B, T, H))
    beta = rng.uniform(0.0, 1.0, size=(B, T, H))
    with jax.default_matmul_precision("highest"):
        out = gated_delta_rule(*(jnp.asarray(a, jnp.float32) for a in (q, k, v, g, beta)), chunk)
    want = np.stack([ref.delta_rule_recurrent(q[b], k[b], v[b], g[b], beta[b]) for b in range(B)])
    assert _rel(out, want) < 1e-5


def test_model_logits_match_the_float64_reference():
    cfg = SPEC.config("tiny", {"seq_len": 48, "chunk_size": 16})
    rng = np.random.default_rng(1)
    w = init_weights(SPEC, cfg, 0)
    for n in w:  # the canonical init zeroes the output projections: make every path count
        if n.endswith(("o_proj.weight", "mlp.w2.weight")):
            w[n] = rng.normal(0, 0.05, w[n].shape).astype(np.float32)
    idx = rng.integers(0, cfg["vocab_size"], (2, 37)).astype(np.int32)  # a partial last chunk
    apply = make_apply("deltanet", cfg, jnp.float32)
    with jax.default_matmul_precision("highest"):
        out = apply({k: jnp.asarray(v) for k, v in w.items()}, jnp.asarray(idx))
    assert out.dtype == jnp.float32 and out.shape == (2, 37, cfg["vocab_size"])
    assert _rel(out, ref.forward(w, cfg, idx)) < 1e-4  # measured ~2.4e-6


def test_causal_prefix_outputs_do_not_depend_on_later_tokens():
    cfg = SPEC.config("tiny", {"seq_len": 64, "chunk_size": 16})
    apply = make_apply("deltanet", cfg, jnp.float32)
    params = {k: jnp.asarray(v) for k, v in init_weights(SPEC, cfg, 3).items()}
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1024, (1, 64)).astype(np.int32)
    b = a.copy()
    b[0, 40:] = rng.integers(0, 1024, 24)
    np.testing.assert_allclose(np.asarray(apply(params, a))[0, :40], np.asarray(apply(params, b))[0, :40], atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny", "golf16"])
def test_param_count_formula_equals_the_built_model(preset):
    cfg = SPEC.config(preset)
    built = model_shapes(abstract_model("deltanet", cfg))
    assert built == SPEC.shapes(cfg)
    assert SPEC.param_count(cfg) == sum(math.prod(s) for s in built.values())
    groups = SPEC.optimizer_groups(cfg)
    assert [g.optimizer for g in groups] == ["muon", "adam"]


def test_golf16_fits_the_cap_by_the_int8_estimate():
    from golfbench.backends.jax.backend import BACKEND
    from golfbench.harness.code import code_bytes

    cfg = SPEC.config("golf16")
    estimate = SPEC.param_count(cfg) + code_bytes(BACKEND.code_files("deltanet"))  # ~1 byte per param
    assert estimate < CAP_BYTES, estimate


@pytest.mark.slow
def test_golf16_canonical_init_artifact_fits_the_cap():
    from golfbench.backends.jax.backend import BACKEND
    from golfbench.harness.artifact import pack
    from golfbench.harness.code import code_bytes

    cfg = SPEC.config("golf16")
    meta = {"model": "deltanet", "preset": "golf16", "config": SPEC.model_part(cfg), "backend": "jax"}
    blob = pack(init_weights(SPEC, cfg, 0), SPEC.is_control, meta)
    total = len(blob) + code_bytes(BACKEND.code_files("deltanet"))
    assert total < CAP_BYTES, total


def unigram_bpb(dataset_dir) -> float:
    """BPB of the unigram model fitted on the train split (add-one counts), scored on every val target."""
    from golfbench.harness.data.dataset import Dataset
    from golfbench.harness.evaluate import count_val_bytes

    ds = Dataset.open(dataset_dir)
    train = np.concatenate([np.asarray(np.memmap(p, dtype="<u2", mode="r", offset=1024)) for p in ds.train_paths])
    counts = np.bincount(train, minlength=ds.vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    val = ds.val_tokens()
    return float(-logp[val[1:]].sum() / (math.log(2) * count_val_bytes(val, ds.accounting())))


@pytest.mark.slow
def test_tiny_learns_in_a_60s_dev_run(shakespeare_dir, tmp_path):
    res = golf_ok(
        "run",
        "--track",
        "wallclock-10min",
        "--scale",
        "dev",
        "--backend",
        "jax",
        "--model",
        "deltanet",
        "--preset",
        "tiny",
        "--data",
        shakespeare_dir,
        "--out",
        tmp_path,
        "--json",
    )
    result = json.loads(res.stdout)
    baseline = unigram_bpb(shakespeare_dir)
    assert result["status"] == "ok" and result["model"] == "deltanet"
    assert result["val_bpb"] < baseline - 0.2, (result["val_bpb"], baseline)
    assert result["artifact_bytes"] <= CAP_BYTES
