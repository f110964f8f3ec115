"""Sharded evaluation: the window batches split over processes (and, in JAX, the rows over devices) give the
single-process val_nll_sum to 1e-9 relative.

- evaluate() over K simulated processes (threads sharing a float64 collective): every target once, the same
  result on every process, equal to one process;
- torch: `golf eval --nproc-per-node 2` (two gloo processes under torchrun) against one process;
- JAX: four forced host devices in a fresh interpreter (XLA fixes the device count at start-up) against one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from golf_helpers import ROOT, golf, golf_ok, one_line_error, small_dataset

from golfbench.harness.data.tokenizer import ByteAccounting
from golfbench.harness.distributed import as_f64
from golfbench.harness.evaluate import evaluate, window_plan

SHARDED_RTOL = 1e-9


class ThreadCollective:
    """golfbench.harness.distributed.Collective for K threads: each call waits for all K, then sums in rank order."""

    def __init__(self, shared: dict, rank: int, world_size: int) -> None:
        self.rank, self.world_size, self.shared = rank, world_size, shared

    def _exchange(self, values) -> list[np.ndarray]:
        self.shared["slots"][self.rank] = as_f64(values)
        self.shared["barrier"].wait()
        got = [a.copy() for a in self.shared["slots"]]
        self.shared["barrier"].wait()  # nobody overwrites a slot before everyone has read it
        return got

    def all_reduce_sum(self, values) -> np.ndarray:
        return np.sum(np.stack(self._exchange(values)), axis=0)

    def broadcast(self, values) -> np.ndarray:
        return self._exchange(values)[0]


def _sharded(world: int, score, *args, **kw):
    shared = {"slots": [None] * world, "barrier": threading.Barrier(world)}
    results, errors = [None] * world, []

    def work(rank: int) -> None:
        try:
            results[rank] = evaluate(score(rank), *args, collective=ThreadCollective(shared, rank, world), **kw)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)
            shared["barrier"].abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("world,n,batch", [(2, 1000, 4), (3, 1000, 5), (4, 333, 2), (5, 300, 64), (7, 1000, 3)])
def test_windows_split_over_processes_score_every_target_once(world, n, batch):
    """Tokens are their own positions and the NLL of target j is sqrt(j): each process scores a contiguous block
    of whole batches (some none when there are fewer batches than processes), every window exactly once, and
    every process returns the one-process result. Before scoring, each process warms its scorer once per distinct
    batch shape on all-zero windows (evaluate.warm_scorer), never with val tokens."""
    acc = ByteAccounting(np.ones(n), np.zeros(n, bool), np.zeros(n, bool))
    tokens = np.arange(n, dtype=np.int32)
    table = np.sqrt(np.arange(n, dtype=np.float64))
    context, stride = 32, 8
    seen: dict[int, list[int]] = {r: [] for r in range(world)}
    warmed: dict[int, list[int]] = {r: [] for r in range(world)}

    def score(rank):
        def fn(windows):
            if not windows.any():  # a warm-up batch (tokens = positions: no real window is all zeros)
                assert not seen[rank], "warm-up after scoring began"
                warmed[rank].append(len(windows))
            else:
                seen[rank].extend(int(w[0]) for w in windows)  # the window's start
            return table[windows[:, 1:]].astype(np.float32)

        return fn

    one = evaluate(score(0), tokens, acc, context, stride, batch)
    seen[0].clear()
    warmed[0].clear()
    results = _sharded(world, score, tokens, acc, context, stride, batch)
    starts, _, _ = window_plan(n, context, stride)
    assert sorted(s for r in seen.values() for s in r) == sorted(starts.tolist())  # each window once
    n_batches = -(-len(starts) // batch)
    for r in range(world):  # the contiguous block of whole batches evaluate() documents
        lo, hi = n_batches * r // world * batch, min(n_batches * (r + 1) // world * batch, len(starts))
        assert seen[r] == starts[lo:hi].tolist()
        sizes = {min(b + batch, hi) - b for b in range(lo, hi, batch)}  # this process's batch row counts
        assert warmed[r] == sorted(sizes, reverse=True)  # each shape once, before the first real batch
    expected = float(np.float32(table[1:]).astype(np.float64).sum())  # what a float32 scorer reports, in float64
    for res in results:
        assert res.val_tokens == n - 1 and res.val_bytes == n - 1
        assert res.val_nll_sum == results[0].val_nll_sum  # the same bits on every process
        assert res.val_nll_sum == pytest.approx(one.val_nll_sum, rel=1e-12)
        assert res.val_nll_sum == pytest.approx(expected, rel=1e-12)


def test_a_non_finite_nll_on_one_process_is_a_golf_error():
    from golfbench.harness.errors import GolfError

    n = 400
    acc = ByteAccounting(np.ones(n), np.zeros(n, bool), np.zeros(n, bool))

    def score(rank):
        return lambda w: np.full((len(w), w.shape[1] - 1), np.nan if rank == 1 else 1.0, np.float32)

    with pytest.raises(GolfError, match="non-finite NLL"):
        _sharded(2, score, np.arange(n, dtype=np.int32), acc, 32, 8, 4)


# ----------------------------------------------------------------------------------------------------------
# torch: two gloo processes under torchrun


@pytest.fixture(scope="module")
def small_artifact(shakespeare_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A llama artifact of random (non-degenerate) weights, smaller than tiny, and a 16k-token val split."""
    import reference_llama

    from golfbench.harness.artifact import pack
    from golfbench.harness.models import get_spec

    root = tmp_path_factory.mktemp("sharded")
    data = small_dataset(shakespeare_dir, root / "shakespeare_sp1024", train_tokens=8_192, val_tokens=16_384)
    spec = get_spec("llama")
    config = spec.config("tiny", {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "seq_len": 128})
    weights = reference_llama.random_weights(spec.shapes(config), seed=5)
    art = root / "artifact.golf"
    art.write_bytes(
        pack(weights, spec.is_control, {"model": "llama", "preset": "tiny", "config": config, "backend": "torch"})
    )
    return art, data


def test_torch_two_ranks_match_one(small_artifact):
    """128 windows of 128 targets (stride 128 over 16,383 targets, the last right-aligned) in 4 batches of 32:
    2 batches per rank. Measured: bit-identical sums."""
    art, data = small_artifact
    args = ("eval", art, "--data", data, "--stride", 128, "--json")
    one = json.loads(golf_ok(*args, timeout=300).stdout)
    two = json.loads(golf_ok(*args, "--nproc-per-node", 2, timeout=300).stdout)
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["val_tokens"] == one["val_tokens"] == 16_383 and two["val_bytes"] == one["val_bytes"]
    assert abs(two["val_nll_sum"] - one["val_nll_sum"]) <= SHARDED_RTOL * abs(one["val_nll_sum"])
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], rel=SHARDED_RTOL)


def test_eval_refuses_processes_for_jax(small_artifact):
    art, data = small_artifact
    one_line_error(
        golf("eval", art, "--data", data, "--backend", "jax", "--nproc-per-node", "2"), "--nproc-per-node", "jax"
    )


# ----------------------------------------------------------------------------------------------------------
# JAX: four forced host devices, one process

JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    sys.path.insert(0, "tests")
    import reference_llama
    from golfbench.backends.jax.backend import BACKEND
    from golfbench.harness.data.dataset import Dataset
    from golfbench.harness.evaluate import evaluate
    from golfbench.harness.models import get_spec

    ds = Dataset.open(sys.argv[1])
    spec = get_spec("llama")
    config = spec.config("tiny", {"num_layers": 2, "model_dim": 64, "num_heads": 2, "num_kv_heads": 1, "seq_len": 128})
    weights = reference_llama.random_weights(spec.shapes(config), seed=5)
    tokens = np.asarray(ds.val_tokens()[:4_097])
    devices = jax.devices()
    out = {"count": len(devices)}
    for name, devs in (("all", None), ("one", devices[:1])):
        scorer = BACKEND.scorer("llama", config, weights, devices=devs)
        shapes = []
        def score(w, scorer=scorer, shapes=shapes):
            rows, _ = scorer._rows(w)  # what the scorer puts on the devices
            shapes.append([len(rows.sharding.device_set), [list(s.data.shape) for s in rows.addressable_shards]])
            return scorer(w)
        # 6 windows per batch: padded to 8 rows, 2 per device, on four devices
        res = evaluate(score, tokens, ds.accounting(), context=128, stride=64, batch_windows=6)
        out[name] = {"nll_sum": res.val_nll_sum, "tokens": res.val_tokens, "devices": scorer.place.count,
                     "first_batch": shapes[0]}
    print(json.dumps(out))
    """
)


def test_jax_scorer_shards_rows_over_every_visible_device(small_artifact):
    """Measured: 4 devices vs 1 differ by 9e-11 relative (XLA blocks a 2-row and a 6-row matmul differently)."""
    _, data = small_artifact
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "OMP_NUM_THREADS": "1",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(data)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["count"] == 4
    assert out["all"]["devices"] == 4 and out["one"]["devices"] == 1  # the default is every visible device
    assert out["all"]["first_batch"] == [4, [[2, 129]] * 4]  # 6 windows padded to 8 rows: 2 rows per device
    assert out["one"]["first_batch"] == [1, [[6, 129]]]
    assert out["all"]["tokens"] == out["one"]["tokens"] == 4_096
    assert abs(out["all"]["nll_sum"] - out["one"]["nll_sum"]) <= SHARDED_RTOL * abs(out["one"]["nll_sum"])
