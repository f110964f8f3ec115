"""Data parallelism in the JAX backend: the batch sharded over two (forced host) devices gives the same losses
and scores as one device for the same global batch, with and without gradient accumulation.

XLA fixes the host device count when JAX initializes, so the two-device run happens in a fresh interpreter
with XLA_FLAGS set before ``import jax``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import dataclasses
    import json
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P
    from golfbench.backends.jax.backend import BACKEND
    from golfbench.harness.models import get_spec

    config = get_spec("megalodon").config("tiny", dict(
        vocab_size=61, num_layers=1, model_dim=24, num_heads=2, z_dim=12, value_dim=16, ffn_hidden_dim=40,
        cema_ndim=4, chunk_size=8, norm_num_groups=4, seq_len=24))
    rng = np.random.default_rng(0)
    # 4 rows split 2 + 2; then 3 rows, which the backend pads with one zero-weight row
    batches = [rng.integers(0, 61, (rows, 25), dtype=np.int32) for rows in (4, 4, 3, 4)]
    devices = jax.devices()

    def run(devs, micro_tokens=None):
        state = BACKEND.init("megalodon", config, seed=0, devices=devs)
        # gradient accumulation (the accelerator default) forced on: micro_tokens per device per micro-batch
        state = dataclasses.replace(state, trainer=dataclasses.replace(state.trainer, micro_tokens=micro_tokens))
        losses = []
        for b in batches:
            state, m = BACKEND.train_step(state, b, 1.0)
            losses.append(float(m["loss"]))
        weights = BACKEND.export(state)
        nll = BACKEND.scorer("megalodon", config, weights, devices=devs)(batches[2])
        return state, losses, nll

    state2, losses2, nll2 = run(devices)
    _, losses1, nll1 = run(devices[:1])
    _, losses_acc, _ = run(devices, micro_tokens=24)  # one row per device per micro-batch: 2 micro-batches
    micro_shape = list(dataclasses.replace(state2.trainer, micro_tokens=24).device_batch(batches[0])[0].shape)
    tokens, _ = state2.trainer.device_batch(batches[0])  # (1, 4, 25): one micro-batch, rows over devices
    leaf = state2.params["layers.0.wz.weight"]
    print(json.dumps({
        "count": len(devices),
        "losses2": losses2, "losses1": losses1, "losses_acc": losses_acc, "micro_shape": micro_shape,
        "nll_max_diff": float(np.abs(nll2 - nll1).max()),
        "batch_spec": list(tokens.sharding.spec), "batch_devices": len(tokens.sharding.device_set),
        "batch_shards": [list(s.data.shape) for s in tokens.addressable_shards],
        "param_replicated": leaf.sharding.is_fully_replicated, "param_devices": len(leaf.sharding.device_set),
    }))
    """
)


@pytest.fixture(scope="module")
def two_device_run():
    # Both runs (two devices and one) live in the child and share its flags; the cheap optimization level
    # halves XLA's compile time here and changes nothing about what is compared.
    flags = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_batch_is_sharded_and_params_replicated(two_device_run):
    r = two_device_run
    assert r["count"] == 2
    assert r["batch_spec"] == [None, "data"] and r["batch_devices"] == 2
    assert r["batch_shards"] == [[1, 2, 25], [1, 2, 25]]  # each device holds half of the rows
    assert r["param_replicated"] and r["param_devices"] == 2


def test_two_devices_give_the_same_losses_as_one(two_device_run):
    l2, l1 = two_device_run["losses2"], two_device_run["losses1"]
    assert len(l2) == len(l1) == 4
    for a, b in zip(l2, l1):
        assert abs(a - b) <= 1e-5 * abs(b), (l2, l1)  # the same math; only the all-reduce order differs


def test_gradient_accumulation_gives_the_same_losses(two_device_run):
    assert two_device_run["micro_shape"] == [2, 2, 25]  # 2 micro-batches of 2 rows (1 per device)
    for a, b in zip(two_device_run["losses_acc"], two_device_run["losses1"]):
        assert abs(a - b) <= 1e-5 * abs(b), (two_device_run["losses_acc"], two_device_run["losses1"])


def test_two_devices_score_the_same_as_one(two_device_run):
    assert two_device_run["nll_max_diff"] < 1e-5
