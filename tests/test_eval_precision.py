"""Scoring precision is a track rule with one meaning in both frameworks (bf16 matmul inputs, fp32 accumulation,
fp32 norms/softmax/logits/log-sum-exp): torch-bf16 and JAX-bf16 agree on one artifact within the tolerance
`golf verify` uses for bf16, bf16 really differs from fp32 (the flag is not ignored), and a bf16 run verifies
at its recorded precision, with either backend.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

import reference_llama  # noqa: E402
import reference_megalodon  # noqa: E402
from golf_helpers import golf, golf_ok, one_line_error, small_dataset  # noqa: E402

from golfbench.harness.artifact import pack  # noqa: E402
from golfbench.harness.backend import get_backend  # noqa: E402
from golfbench.harness.data.dataset import Dataset  # noqa: E402
from golfbench.harness.errors import GolfError  # noqa: E402
from golfbench.harness.evaluate import evaluate  # noqa: E402
from golfbench.harness.models import get_spec  # noqa: E402
from golfbench.harness.scoring import load_artifact_model  # noqa: E402
from golfbench.harness.verify import BPB_RTOL_BY_PRECISION  # noqa: E402

BF16_RTOL = BPB_RTOL_BY_PRECISION["bf16"]
WINDOWS = 8  # non-overlapping windows of the tiny presets' 256 tokens: 2,048 scored val targets


def _artifact(model: str):
    """A tiny-preset artifact (int8 round trip) of non-degenerate weights: the canonical init would zero the
    projections and make bf16 and fp32 agree trivially."""
    spec = get_spec(model)
    config = spec.config("tiny")
    if model == "llama":
        weights = reference_llama.random_weights(spec.shapes(config), seed=11)
    else:
        weights = reference_megalodon.noisy_weights(config, seed=11)
    blob = pack(weights, spec.is_control, {"model": model, "preset": "tiny", "config": config, "backend": "torch"})
    return load_artifact_model(blob)


@pytest.fixture(scope="module", params=["llama", "megalodon"])
def scored(request, shakespeare: Dataset, accounting) -> dict:
    """val_nll_sum and the per-target NLLs of one artifact, by (backend, precision)."""
    art = _artifact(request.param)
    context = int(art.config["seq_len"])
    tokens = np.asarray(shakespeare.val_tokens()[: WINDOWS * context + 1])
    out = {"model": request.param}
    for backend in ("torch", "jax"):
        for precision in ("fp32", "bf16"):
            scorer = get_backend(backend).scorer(art.model, art.config, art.weights, precision=precision)
            seen = []  # stride = context and one batch: the evaluator sends exactly the WINDOWS windows, once

            def score(windows, scorer=scorer, seen=seen):
                nll = np.asarray(scorer(windows), np.float64)
                if windows.any():  # not the evaluator's all-zero warm-up batch (evaluate.warm_scorer)
                    seen.append(nll)
                return nll

            res = evaluate(score, tokens, accounting, context=context, stride=context, batch_windows=WINDOWS)
            assert len(seen) == 1 and seen[0].shape == (WINDOWS, context)
            assert res.val_nll_sum == pytest.approx(seen[0].sum(), rel=1e-12)
            out[backend, precision] = (res.val_nll_sum, seen[0])
    return out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_torch_and_jax_agree_at_each_precision(scored):
    """fp32: the two frameworks are the same function to fp32 rounding; bf16: within verify's bf16 tolerance."""
    (t32, t32_nll), (j32, j32_nll) = scored["torch", "fp32"], scored["jax", "fp32"]
    (t16, _), (j16, _) = scored["torch", "bf16"], scored["jax", "bf16"]
    assert _rel(t32, j32) < 1e-6 and np.abs(t32_nll - j32_nll).max() < 1e-3
    # measured here: llama 1.3e-6, megalodon 2.2e-5 (harness/verify.py states these and the full-val numbers)
    assert _rel(t16, j16) < BF16_RTOL, (scored["model"], t16, j16)


def test_bf16_differs_from_fp32_but_approximates_it(scored):
    """The flag reaches the arithmetic: per-target NLLs move by bf16 rounding (>= 1e-3 nats somewhere), far
    more than fp32 torch vs JAX, while the summed NLL stays within the bf16 tolerance of fp32."""
    t32, t32_nll = scored["torch", "fp32"]
    _, j32_nll = scored["jax", "fp32"]
    cross_fp32 = np.abs(t32_nll - j32_nll).max()
    for backend in ("torch", "jax"):
        total32, nll32 = scored[backend, "fp32"]
        total16, nll16 = scored[backend, "bf16"]
        moved = np.abs(nll16 - nll32).max()
        assert moved > 1e-3 and moved > 50 * cross_fp32, (scored["model"], backend, moved, cross_fp32)
        assert total16 != total32
        assert _rel(total16, total32) < BF16_RTOL, (scored["model"], backend, total16, total32)


def test_torch_head_gives_fp32_logits_from_bf16_inputs_under_autocast():
    """lm_head (the scorer's exact_logits) = float64 product of the bf16-rounded inputs, up to fp32
    accumulation; plain autocast rounds the logits themselves to bf16."""
    import torch
    import torch.nn.functional as F

    from golfbench.backends.torch.llama import lm_head

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 5, 128, generator=g) * 4, torch.randn(1024, 128, generator=g) / 4
    exact = (x.bfloat16().double() @ w.bfloat16().double().T).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = lm_head(x, w, exact=True)
        rounded = lm_head(x, w, exact=False)
        assert torch.equal(rounded, F.linear(x, w).float())
    assert got.dtype == torch.float32 and rounded.dtype == torch.float32
    assert (got - exact).abs().max() < 1e-5 * exact.abs().max()
    assert (rounded - exact).abs().max() > 1e-3 * exact.abs().max()  # bf16 keeps 8 bits: ~4e-3 relative


def test_unknown_precisions_are_refused():
    config = get_spec("llama").config("tiny")
    weights = reference_llama.random_weights(get_spec("llama").shapes(config), seed=0)
    for backend in ("torch", "jax"):
        with pytest.raises(GolfError, match="fp32 or bf16"):
            get_backend(backend).scorer("llama", config, weights, precision="fp16")


# ----------------------------------------------------------------------------------------------------------
# a run scored in bf16 verifies at bf16, with either backend


MICRO = [
    "--set",
    "num_layers=2",
    "--set",
    "model_dim=64",
    "--set",
    "num_heads=2",
    "--set",
    "num_kv_heads=1",
    "--set",
    "train_batch_tokens=1024",
]


@pytest.fixture(scope="module")
def bf16_run(shakespeare_dir, tmp_path_factory) -> tuple[Path, dict, dict]:
    """A dev run under a track whose [dev] rule says eval_precision = "bf16" (and no pre-quant score)."""
    root = tmp_path_factory.mktemp("bf16")
    tracks = root / "tracks"
    tracks.mkdir()
    text = (Path(__file__).resolve().parents[1] / "tracks" / "fixed-data.toml").read_text()
    dev = text.index("[dev]")
    text = text[:dev] + text[dev:].replace('eval_precision = "fp32"', 'eval_precision = "bf16"')
    text = text[:dev] + text[dev:].replace("eval_prequant = true", "eval_prequant = false")
    (tracks / "fixed-data.toml").write_text(text)
    env = {"GOLF_TRACKS_DIR": str(tracks)}
    data = small_dataset(shakespeare_dir, root / "shakespeare_sp1024", train_tokens=16_384)
    res = golf_ok(
        "run",
        "--track",
        "fixed-data",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        data,
        "--budget",
        4096,
        "--eval-stride",
        256,
        *MICRO,
        "--out",
        root / "runs",
        "--run-id",
        "b0",
        "--json",
        env=env,
    )
    return root / "runs" / "fixed-data" / "dev" / "b0", json.loads(res.stdout), env


def test_a_bf16_run_records_its_precision_and_skips_the_prequant_score(bf16_run):
    run_dir, result, _ = bf16_run
    assert result["eval_precision"] == "bf16" and result["status"] == "ok"
    assert result["pre_quant_val_bpb"] is None  # the track's eval_prequant = false: scored once
    assert json.loads((run_dir / "result.json").read_text())["eval_precision"] == "bf16"


def test_a_bf16_run_verifies_at_bf16_with_either_backend(bf16_run, tmp_path):
    run_dir, result, env = bf16_run
    same = golf_ok("verify", run_dir, env=env)
    assert "verified" in same.stdout
    verdict = json.loads((run_dir / "verify.json").read_text())
    assert verdict["val_bpb"] == pytest.approx(result["val_bpb"], rel=1e-12)  # same backend: bit-for-bit
    cross = golf_ok("verify", run_dir, "--backend", "jax", env=env)
    assert "verified" in cross.stdout
    jax_bpb = json.loads((run_dir / "verify.json").read_text())["val_bpb"]
    assert jax_bpb != result["val_bpb"] and _rel(jax_bpb, result["val_bpb"]) < BF16_RTOL
    # Re-scored at fp32, the same artifact is a different number: verify must use the recorded precision.
    copy = Path(shutil.copytree(run_dir, tmp_path / "fixed-data" / "dev" / "b0"))
    record = json.loads((copy / "result.json").read_text())
    record["val_bpb"] = result["val_bpb"] * (1 + 4 * BF16_RTOL)
    (copy / "result.json").write_text(json.dumps(record))
    bad = golf("verify", copy, env=env)
    assert bad.returncode == 1 and "val_bpb" in bad.stderr and "bf16" in bad.stderr, bad.stderr


def test_golf_eval_takes_the_precision(bf16_run, shakespeare_dir, tmp_path):
    run_dir, result, _ = bf16_run
    data = json.loads((run_dir / "run.json").read_text())["dataset"]["dir"]
    art = run_dir / "artifact.golf"
    bf16 = json.loads(golf_ok("eval", art, "--data", data, "--stride", 256, "--precision", "bf16", "--json").stdout)
    fp32 = json.loads(golf_ok("eval", art, "--data", data, "--stride", 256, "--json").stdout)
    assert bf16["eval_precision"] == "bf16" and fp32["eval_precision"] == "fp32"
    assert bf16["val_nll_sum"] == result["val_nll_sum"]  # what the run itself scored
    assert fp32["val_nll_sum"] != bf16["val_nll_sum"] and math.isclose(
        fp32["val_bpb"], bf16["val_bpb"], rel_tol=BF16_RTOL
    )
    one_line_error(golf("eval", art, "--data", data, "--precision", "fp16"), "--precision", "fp32 or bf16")


def test_a_run_scored_once_exports_and_ranks(bf16_run, tmp_path):
    """pre_quant_val_bpb is null when not scored: the submission, its train log and the leaderboard cope."""
    run_dir, result, env = bf16_run
    records = tmp_path / "records"
    golf_ok("export", run_dir, "--out", records, env=env)
    golf_ok("validate-submission", records, env=env)
    sub = json.loads((records / "submission.json").read_text())
    assert "pre_quant_val_bpb" not in sub["seed_results"]["0"] and sub["val_bpb"] == pytest.approx(result["val_bpb"])
    board = json.loads(
        golf_ok("leaderboard", "--runs", run_dir.parents[2], "--format", "json", "--include-unofficial", env=env).stdout
    )
    entries = [e for b in board["boards"] for e in b["entries"]]
    assert [e["mean_val_bpb"] for e in entries] == [pytest.approx(result["val_bpb"])] and not board["warnings"], board


def test_prequant_flag_overrides_the_track_rule(shakespeare_dir, tmp_path, monkeypatch):
    """`golf run --prequant/--no-prequant` reaches RunSpec.prequant, and Run.eval_prequant follows it over the
    track's eval_prequant (dev: false since track version 3)."""
    from typer.testing import CliRunner

    from golfbench.harness import cli, runner

    specs = []
    monkeypatch.setattr(runner, "execute", lambda spec: specs.append(spec) or {"status": "ok"})
    base = ["run", "--track", "fixed-data", "--data", str(shakespeare_dir), "--out", str(tmp_path)]
    for flag in ([], ["--prequant"], ["--no-prequant"]):
        assert CliRunner().invoke(cli.app, [*base, *flag]).exit_code == 0
    assert [s.prequant for s in specs] == [None, True, False]
    assert [runner.Run(s).eval_prequant for s in specs] == [False, True, False]
    assert runner.Run(specs[0]).eval_precision == "fp32"
