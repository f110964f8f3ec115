"""The analytic FLOP formula (harness/models.py) against each framework's own counter, on llama/tiny.

The formula charges 6 x matmul params per token (forward + backward, LM head included) plus causal
attention, 6 * L * 2 * d * (T+1)/2 per token. What the counters count differently:

- torch FlopCounterMode (one forward + backward, what `compiler_flops` logs): matmuls (aten.mm) exactly as
  the formula; scaled_dot_product_attention as a full T x T square (no causal halving), forward 4*T^2*d and
  backward 10*T^2*d (it charges the backward's recomputation of Q K^T), so its attention is 14/6 * T/(T+1)
  of the formula's; it ignores every elementwise op (RMSNorm, rotary, relu^2, softmax, softcap tanh,
  residual mixing, the cross-entropy) and the embedding gather; the optimizer step is not in the count.
- XLA cost_analysis (the whole jitted train step, what the JAX backend logs): dot_generals of the model
  exactly as the formula; attention as a full square without recomputation (12*T^2*d per sequence and
  layer, 2 * T/(T+1) of the formula's); plus the optimizer (Muon's Newton-Schulz matmuls) and elementwise
  ops, which the formula leaves out.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from golfbench.harness.models import get_spec

B = 4  # sequences in the counted batch: FLOPs per token do not depend on it


def _no_score(run, state, result, code, coll):
    """Evaluation stubbed out: the loop is what these tests check. Placeholder numbers keep the record valid."""
    result.update(val_bpb=0.0, val_nll_sum=0.0, val_bytes=1, artifact_bytes=code, model_bytes=0)


def _llama_tiny():
    spec = get_spec("llama")
    config = spec.config("tiny")
    return spec, config


def _formula(spec, config, tokens: int) -> dict[str, float]:
    return {k: v * tokens for k, v in spec.flops_per_token(config).items()}


def _batch(config) -> np.ndarray:
    return np.random.default_rng(0).integers(0, config["vocab_size"], size=(B, config["seq_len"] + 1), dtype=np.int32)


def test_matmul_params_in_the_formula_are_the_model_matrices():
    spec, c = _llama_tiny()
    shapes = spec.shapes(c)
    matrices = sum(
        math.prod(s) for n, s in shapes.items() if n.endswith(".weight") and len(s) == 2 and n != "tok_emb.weight"
    )
    lm_head = math.prod(shapes["tok_emb.weight"])  # tied, but the head matmul is executed
    assert spec.flops_per_token(c)["matmul"] == 6 * (matrices + lm_head)
    # executed FLOPs: a looped megalodon layer pays for each pass (matrices, attention and CEMA alike)
    mega = get_spec("megalodon")
    m1, m2 = mega.config("tiny"), mega.config("tiny", {"loops": 2})
    shapes = mega.shapes(m1)
    layer_matrices = sum(
        math.prod(s) for n, s in shapes.items() if n.startswith("layers.") and n.endswith(".weight") and len(s) == 2
    )
    f1, f2 = mega.flops_per_token(m1), mega.flops_per_token(m2)
    assert f2["matmul"] - f1["matmul"] == 6 * layer_matrices
    assert f2["attention"] == 2 * f1["attention"] and f2["cema"] == 2 * f1["cema"]


def test_torch_flop_counter_agrees_with_the_formula_on_llama_tiny():
    torch = pytest.importorskip("torch")
    from torch.utils import flop_counter

    from golfbench.harness.backend import get_backend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec, config = _llama_tiny()
        backend = get_backend("torch")
        state = backend.init("llama", config, 0)
        batch = _batch(config)
        total = backend.compiler_flops(state, batch)  # the number every torch run logs as its cross-check
        with flop_counter.FlopCounterMode(display=False) as plain:  # no attention mapping: matmuls only on CPU
            tokens = torch.from_numpy(batch.astype(np.int64))
            state.model(tokens[:, :-1], tokens[:, 1:]).backward()
        state.model.zero_grad(set_to_none=True)
        by_op = {str(k): v for k, v in plain.get_flop_counts()["Global"].items()}
    finally:
        torch.set_num_threads(threads)
    T, d, L = config["seq_len"], config["model_dim"], config["num_layers"]
    n = B * T
    f = _formula(spec, config, n)
    matmul = by_op.pop("aten.mm")
    assert not by_op, f"ops counted besides aten.mm: {by_op}"
    attention = total - matmul  # what the CPU SDPA mapping adds
    print(
        f"\ntorch llama/tiny, {n} tokens: formula matmul {f['matmul']:.4e} attention {f['attention']:.4e} total"
        f" {f['total']:.4e}; counter mm {matmul:.4e} (x{matmul / f['matmul']:.4f}) sdpa {attention:.4e}"
        f" (x{attention / f['attention']:.4f}) total {total:.4e} (x{total / f['total']:.4f})"
    )
    assert abs(matmul / f["matmul"] - 1) < 0.10  # the contract: within 10% on the matmul part
    assert matmul == pytest.approx(f["matmul"], rel=1e-9)  # in fact identical: 6 x matmul params x tokens
    assert attention == pytest.approx(14 * T * T * d * L * B, rel=1e-9)  # full square, fwd 4 + bwd 10
    assert attention * (6 / 14) * (T + 1) / T == pytest.approx(f["attention"], rel=1e-9)
    assert 1.0 < total / f["total"] < 1.3  # the whole logged count: the formula plus full-square attention


def _dot_flops(hlo: str) -> dict[str, int]:
    """FLOPs of every stablehlo.dot_general (2 x output elements x contracted size), split into the model's
    dense matmuls (no batch dims), attention (batched over batch and heads: two or more batch dims) and the rest
    (the optimizer's Newton-Schulz products, batched over stacked matrices: one batch dim)."""
    dot = re.compile(
        r"stablehlo\.dot_general\s+%[^,]+,\s*%[^,]+,\s*(?:batching_dims = \[([\d, ]*)\] x \[[\d, ]*\],\s*)?"
        r"contracting_dims = \[([\d, ]*)\] x \[[\d, ]*\].*?:\s*\(tensor<([\dx]+)x\w+>,\s*tensor<([\dx]+)x\w+>\)"
        r"\s*->\s*tensor<([\dx]+)x\w+>"
    )
    out = {"dense": 0, "attention": 0, "other": 0, "count": 0}
    for m in dot.finditer(hlo):
        batch, contract, lhs, rhs, res = m.groups()
        lhs, rhs, res = ([int(x) for x in s.split("x")] for s in (lhs, rhs, res))
        flops = 2 * math.prod(res) * math.prod(lhs[int(i)] for i in contract.split(","))
        if not batch:
            out["dense"] += flops
        elif len(batch.split(",")) >= 2:
            out["attention"] += flops
        else:
            out["other"] += flops
        out["count"] += 1
    return out


def test_jax_cost_analysis_agrees_with_the_formula_on_llama_tiny():
    pytest.importorskip("jax")
    from golfbench.harness.backend import get_backend

    spec, config = _llama_tiny()
    backend = get_backend("jax")
    state = backend.init("llama", config, 0)
    batch = _batch(config)
    total = backend.compiler_flops(state, batch)  # the number every JAX run logs as its cross-check
    assert total is not None, "the JAX backend's compiler_flops returned no count (cost_analysis broke)"
    try:
        tr = state.trainer
        tokens, weight = tr.device_batch(batch)
        hlo = tr.step_fn.lower(state.params, state.opt_state, tokens, weight, np.float32(1.0)).as_text()
    except AttributeError as exc:
        pytest.skip(f"JAX backend internals changed, cannot split the count by op ({exc})")
    T, d, L = config["seq_len"], config["model_dim"], config["num_layers"]
    n = B * T
    f = _formula(spec, config, n)
    dots = _dot_flops(hlo)
    assert dots["count"] > 0
    elementwise = total - dots["dense"] - dots["attention"] - dots["other"]
    print(
        f"\njax llama/tiny, {n} tokens: formula matmul {f['matmul']:.4e} attention {f['attention']:.4e} total"
        f" {f['total']:.4e}; XLA dense dots {dots['dense']:.4e} (x{dots['dense'] / f['matmul']:.4f}) attention dots"
        f" {dots['attention']:.4e} (x{dots['attention'] / f['attention']:.4f}) optimizer dots {dots['other']:.4e}"
        f" elementwise+rest {elementwise:.4e}; cost_analysis total {total:.4e} (x{total / f['total']:.4f})"
    )
    assert abs(dots["dense"] / f["matmul"] - 1) < 0.10
    assert dots["dense"] == pytest.approx(f["matmul"], rel=1e-9)
    # Block-causal attention (4 query blocks, block i attends i+1 key blocks): 10/16 of the full square,
    # fwd 4 + bwd 8 per query-key pair and head dim, against the formula's causal (T+1)/2 keys and 3x forward.
    executed = 12 * T * T * d * L * B * 10 / 16
    assert dots["attention"] == pytest.approx(executed, rel=1e-9)
    assert dots["attention"] / f["attention"] == pytest.approx(12 * T * 10 / 16 / (6 * (T + 1)), rel=1e-9)
    assert dots["other"] > 0 and elementwise > 0  # Muon and elementwise work: counted by XLA, not by the formula
    assert 1.0 < total / f["total"] < 1.5


def test_every_backend_is_charged_the_formula_and_logs_its_own_count(shakespeare_dir, tmp_path, monkeypatch):
    """flop-budget runs of the same spec in torch and in JAX: identical charges, each with its compiler's count."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    from golfbench.harness import runner
    from golfbench.harness.records import read_events

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    monkeypatch.setattr(runner, "_score", _no_score)  # the loop is what is charged
    micro = {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
    spec, config = get_spec("llama"), get_spec("llama").config("tiny", micro)
    step = spec.flops_per_token(config)["total"] * 1024
    runs = {}
    try:
        for backend in ("torch", "jax"):
            result = runner.execute(
                runner.RunSpec(
                    track="flop-budget",
                    scale="dev",
                    backend=backend,
                    model="llama",
                    preset="tiny",
                    data=str(shakespeare_dir),
                    budget=2.5 * step,
                    out=str(tmp_path),
                    run_id=backend,
                    eval_stride=256,
                    overrides=micro,
                )
            )
            check = next(
                e
                for e in read_events(tmp_path / "flop-budget" / "dev" / backend / "events.jsonl")
                if e.get("event") == "flops_check"
            )
            runs[backend] = (result, check)
    finally:
        torch.set_num_threads(threads)
    (t, t_check), (j, j_check) = runs["torch"], runs["jax"]
    assert t["status"] == j["status"] == "ok" and t["steps"] == j["steps"] == 2
    assert t["train_flops"] == j["train_flops"] == 2 * step
    assert t_check["analytic_step_flops"] == j_check["analytic_step_flops"] == step
    # each framework's own count of one step differs from the formula in its own way (see the module docstring)
    assert t_check["compiler_step_flops"] and j_check["compiler_step_flops"]
    assert t_check["compiler_step_flops"] != j_check["compiler_step_flops"]


def test_torch_flop_cross_check_of_an_official_step_fits_in_4_gb():
    """llama/baseline at 524,288 tokens/step (512 rows of 1,024): the cross-check counts one row and scales, so a
    GPU run's first step cannot die in it. Measured in a fresh process: peak RSS (ru_maxrss) < 4 GB."""
    pytest.importorskip("torch")
    import subprocess
    import sys

    code = """
import json, resource, numpy as np, torch
torch.set_num_threads(1)
from golfbench.harness.backend import get_backend
from golfbench.harness.models import get_spec
spec = get_spec("llama"); config = spec.config("baseline")
backend = get_backend("torch")
state = backend.init("llama", config, 0)
rows = config["train_batch_tokens"] // config["seq_len"]
batch = np.random.default_rng(0).integers(0, config["vocab_size"], (rows, config["seq_len"] + 1), dtype=np.int32)
flops = backend.compiler_flops(state, batch)
print(json.dumps({"rows": rows, "flops": flops, "matmul": spec.flops_per_token(config)["matmul"] * rows * config["seq_len"],
                  "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows"] == 512
    assert out["peak_bytes"] < 4 * 1024**3, out
    # the scaled count still covers at least every weight matmul of the whole 524,288-token step
    assert out["matmul"] < out["flops"] < 2.5 * out["matmul"], out


def test_a_failing_flop_cross_check_is_logged_not_fatal(shakespeare_dir, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from golfbench.harness import runner
    from golfbench.harness.backend import get_backend
    from golfbench.harness.records import read_events

    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    monkeypatch.setattr(runner, "_score", _no_score)

    def boom(state, batch):
        raise MemoryError("out of memory in the counter")

    monkeypatch.setattr(get_backend("torch"), "compiler_flops", boom)
    micro = {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
    result = runner.execute(
        runner.RunSpec(
            track="fixed-data",
            scale="dev",
            backend="torch",
            model="llama",
            preset="tiny",
            data=str(shakespeare_dir),
            budget=2048,
            out=str(tmp_path),
            run_id="x",
            eval_stride=256,
            overrides=micro,
        )
    )
    assert result["status"] == "ok" and result["train_tokens"] == 2048
    check = next(
        e
        for e in read_events(tmp_path / "fixed-data" / "dev" / "x" / "events.jsonl")
        if e.get("event") == "flops_check"
    )
    assert check["compiler_step_flops"] is None
