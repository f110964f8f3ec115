"""Fixed-data is exact for any world size: the budget is consumed in whole sequences, a short last batch is padded
with zero-weight rows (never rounded down), and padding changes no loss.

The expected numbers are computed here from the track's definition (budget // seq_len sequences), not by the
code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from golf_helpers import RUN_ARGS, golf, golf_ok, small_dataset

from golfbench.harness.distributed import check_world, fixed_data_plan, pad_rows
from golfbench.harness.errors import GolfError

LOSS_RTOL = 2e-4  # as tests/test_distributed.py: DDP sums gradients in another order than one process


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_official_fixed_data_plan_is_exact_on_any_world_size(world):
    # the official track: 1e9 tokens, llama/baseline 1,024-token sequences, 524,288 tokens (512 rows) per step
    plan = fixed_data_plan(1e9, 1024, 512)
    assert sum(plan) == 976_562  # 10**9 // 1024: remainder 2 on 8 ranks, the case that used to round down
    assert plan[:-1] == [512] * 1907 and plan[-1] == 976_562 - 1907 * 512 == 178
    padded_rows = 0
    for rows in plan:
        batch = np.ones((rows, 5), np.int32)
        padded, weight = pad_rows(batch, world)
        assert padded.shape[0] % world == 0 and padded.shape[0] - rows < world
        assert weight.sum() == rows and np.all(padded[rows:] == 0) and np.all(weight[rows:] == 0)
        padded_rows += padded.shape[0] - rows
    assert padded_rows == 1907 * ((-512) % world) + (-178) % world  # 8 ranks: only the last batch, 6 rows
    assert sum(plan) * 1024 == (10**9 // 1024) * 1024  # train_tokens the run will report


def test_plan_edges():
    assert fixed_data_plan(4352, 256, 16) == [16, 1]  # 17 sequences
    assert fixed_data_plan(4096, 256, 16) == [16]
    assert fixed_data_plan(255, 256, 16) == []
    with pytest.raises(GolfError, match="cannot feed 2 data-parallel"):
        check_world(2, 1)
    check_world(3, 16)


def _run(out, data, nproc: int) -> tuple[dict, list[dict]]:
    res = golf(
        "run",
        *RUN_ARGS,
        "--backend",
        "torch",
        "--model",
        "llama",
        "--seed",
        "1",
        "--data",
        data,
        "--budget",
        "4352",
        "--out",
        out,
        "--run-id",
        "r",
        "--nproc-per-node",
        nproc,
        "--json",
        timeout=900,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    d = out / "fixed-data" / "dev" / "r"
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    return json.loads((d / "result.json").read_text()), [e for e in events if "loss" in e]


@pytest.mark.slow
def test_fixed_data_is_exact_on_one_two_and_three_ranks(shakespeare_dir, tmp_path):
    """17 sequences of 256 with 16-row batches: steps of 16 and 1 rows; on 3 ranks the last step gives two
    ranks nothing but padding. Every world size trains exactly 4,352 tokens and the same losses."""
    data = small_dataset(shakespeare_dir, tmp_path / "small")
    runs = {n: _run(tmp_path / f"w{n}", data, n) for n in (1, 2, 3)}
    for n, (result, events) in runs.items():
        assert result["status"] == "ok", (n, result["reason"])
        assert result["train_tokens"] == 4352 and result["steps"] == 2 and result["world_size"] == n
        assert [e["tokens"] for e in events] == [4096, 4352]
    ref = runs[1][1]
    for n in (2, 3):
        for a, b in zip(ref, runs[n][1]):
            assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL), (n, a, b)
        assert runs[n][0]["val_bpb"] == pytest.approx(runs[1][0]["val_bpb"], rel=1e-3)
        assert runs[n][0]["replicas_identical"] is True
    golf_ok("verify", tmp_path / "w2" / "fixed-data" / "dev" / "r")  # it used to fail its own verify
