"""Divergence (issue 6.2): a NaN or inf training loss stops the run at that step with status `diverged`, a
readable reason and a valid run directory; the leaderboard ignores it and `golf verify` refuses it.

The runs diverge for real: absurd learning rates through `--set`, nothing else. llama's logit soft-cap and
norms keep its loss finite up to lr 1e6 (it collapses to the uniform ln 1024), so it needs 1e30; megalodon
goes to NaN at 1e6.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from golf_helpers import RUN_ARGS, files_under, golf, golf_ok, small_dataset

from golfbench.harness.records import validate_result


@pytest.fixture(scope="module")
def data(shakespeare_dir: Path, tmp_path_factory) -> Path:
    return small_dataset(shakespeare_dir, tmp_path_factory.mktemp("div") / "shakespeare_sp1024")


CASES = [
    pytest.param("llama", "torch", ["matrix_lr=1e30", "scalar_lr=1e30", "tied_embed_lr=1e30"], id="llama@torch"),
    pytest.param("megalodon", "jax", ["matrix_lr=1e6", "adam_lr=1e6"], id="megalodon@jax"),
]


@pytest.mark.parametrize("model, backend, lrs", CASES)
def test_nan_loss_stops_the_run_as_diverged(
    model: str, backend: str, lrs: list[str], data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "runs"
    sets = [a for lr in lrs for a in ("--set", lr)]
    res = golf(
        "run",
        *RUN_ARGS,
        "--backend",
        backend,
        "--model",
        model,
        "--preset",
        "tiny",
        "--data",
        data,
        "--budget",
        "20480",
        "--out",
        out,
        "--run-id",
        "div",
        *sets,
        "--json",
    )
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    result = json.loads(res.stdout)
    d = out / "fixed-data" / "dev" / "div"
    assert json.loads((d / "result.json").read_text()) == result
    assert validate_result(result) == []
    assert result["status"] == "diverged"
    m = re.fullmatch(r"training loss became (nan|inf|-inf) at step (\d+)", result["reason"])
    assert m, result["reason"]
    step = int(m.group(2))
    assert 1 < step < 5 and result["steps"] == step  # stopped at the bad step, well before the budget's 5
    assert result["val_bpb"] is None and result["artifact_bytes"] is None

    # A valid run directory: every record parses; no artifact of a broken model, no checkpoint, no temp file.
    assert {f for f in files_under(d) if not f.startswith("code")} <= {
        "run.json",
        "events.jsonl",
        "result.json",
        "loss.png",
    }, files_under(d)
    assert json.loads((d / "run.json").read_text())["config"][lrs[0].split("=")[0]] == float(lrs[0].split("=")[1])
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    steps = [e for e in events if "loss" in e]
    assert [e["step"] for e in steps] == sorted({1, step})  # logged at step 1 and at the bad step, nothing after
    assert steps[-1]["loss"] is None  # NaN is stored as JSON null, never as an unparseable token
    assert all(math.isfinite(e["loss"]) for e in steps[:-1])

    # The leaderboard ignores it, even with unofficial runs included; verify names the status.
    board = json.loads(golf_ok("leaderboard", "--runs", out, "--include-unofficial", "--format", "json").stdout)
    assert board["boards"] == [] and board["warnings"] == []
    assert "no eligible runs" in golf_ok("leaderboard", "--runs", out, "--include-unofficial").stdout
    ver = golf("verify", d)
    assert ver.returncode == 1 and f"status: status is 'diverged' ({result['reason']})" in ver.stderr, ver.stderr


def test_a_non_finite_score_fails_the_run_naming_where(shakespeare_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A scorer that returns NaN for one window: the run is `failed` (never `ok` with val_bpb null), and the
    reason names the val position of the window."""
    import numpy as np

    from golfbench.harness import runner
    from golfbench.harness.backend import get_backend

    backend = get_backend("torch")
    real = backend.scorer

    class NanAt:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, tokens):
            nll = self.inner(tokens)
            if tokens.shape[0] > 1:  # evaluation batches, not the integrity probes' single rows
                nll[1, -1] = np.nan
            return nll

        def logprobs(self, tokens, positions):
            return self.inner.logprobs(tokens, positions)

    monkeypatch.setattr(backend, "scorer", lambda *a, **k: NanAt(real(*a, **k)))
    monkeypatch.setenv("GOLF_NO_PROGRESS", "1")
    micro = {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "train_batch_tokens": 1024}
    data = small_dataset(shakespeare_dir, tmp_path / "small")
    result = runner.execute(
        runner.RunSpec(
            track="fixed-data",
            scale="dev",
            backend="torch",
            model="llama",
            preset="tiny",
            data=str(data),
            budget=2048,
            out=str(tmp_path / "runs"),
            run_id="nan",
            eval_stride=256,
            overrides=micro,
        )
    )
    assert result["status"] == "failed" and result["val_bpb"] is None
    # window 1 of the first batch starts at val token 256 (stride 256 = context)
    assert result["reason"].startswith(
        "the scorer returned a non-finite NLL (nan) in the window starting at val token 256"
    )
    assert validate_result(result) == []
