"""JAX over several processes (`golf run --backend jax --nproc-per-node N`, jax.distributed on CPU over gloo).

Two processes with one CPU device each train the same global batches as one process: the same losses up to
the all-reduce order, the same tokens, the same score. The Collective carries float64 bits exactly (checked
for torch's too, with the same launcher environment).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")

from golf_helpers import ENV, ROOT, small_dataset  # noqa: E402

from golfbench.harness import launch as L  # noqa: E402

# Measured on CPU (llama/tiny shrunk as below, 17 steps, 2 processes vs 1): losses agree to 1e-7 relative
# (2.5e-7 on other budgets), val_bpb to 2.2e-7; the tolerance leaves room for other BLAS/XLA builds.
LOSS_RTOL = 1e-5
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
BUDGET = 16 * 1024 + 256  # 16 steps of 4 rows, then one of a single row: padded with a zero-weight row for 2 processes
JAX_ENV = {k: v for k, v in {**ENV, "JAX_PLATFORMS": "cpu"}.items() if k != "XLA_FLAGS"}  # one CPU device per process

COLLECTIVE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from golfbench.harness.backend import get_backend
    backend = get_backend(sys.argv[1])
    coll = backend.collective()
    devices = backend.devices()
    values = [0.1, 1e300, -0.0, 2.0 ** -1074, 1.0 / 3.0, -7.25]
    mine = np.array(values, np.float64) * (coll.rank + 1)
    mine[2] = -0.0
    out = {"rank": coll.rank, "world": coll.world_size, "devices": devices["count"], "world_size": devices["world_size"],
           "sum": coll.all_reduce_sum(mine).tobytes().hex(), "bcast": coll.broadcast(mine).tobytes().hex()}
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_collective_is_bit_exact_across_two_processes(backend):
    pytest.importorskip(backend)
    layout = L.Layout(2)
    master = ("127.0.0.1", L._free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", COLLECTIVE, backend],
            cwd=ROOT,
            env=L.process_env(layout, r, master, JAX_ENV),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    values = np.array([0.1, 1e300, -0.0, 2.0**-1074, 1.0 / 3.0, -7.25])
    parts = [values * (r + 1) for r in range(2)]
    for part in parts:
        part[2] = -0.0
    want_sum = (parts[0] + parts[1]).tobytes().hex()  # two addends: the sum is exact in any order
    assert [(o["rank"], o["world"], o["world_size"]) for o in outs] == [(0, 2, 2), (1, 2, 2)]
    if backend == "jax":  # one CPU device per process; the mesh sees both
        assert [o["devices"] for o in outs] == [2, 2]
    for o in outs:
        assert o["sum"] == want_sum
        assert o["bcast"] == parts[0].tobytes().hex()  # rank 0's bits, -0.0 and the subnormal included
    total = np.frombuffer(bytes.fromhex(want_sum))
    assert total[3] == 3 * 2.0**-1074 and str(total[2]) == "-0.0"  # subnormals add exactly; -0.0 + -0.0 is -0.0


def _run(data: Path, out: Path, nproc: int) -> tuple[dict, list[dict], dict, float]:
    cmd = [
        sys.executable,
        "-m",
        "golfbench.harness.cli",
        "run",
        "--track",
        "fixed-data",
        "--scale",
        "dev",
        "--backend",
        "jax",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--seed",
        "2",
        "--data",
        str(data),
        "--budget",
        str(BUDGET),
        "--eval-stride",
        "256",
        "--log-every",
        "1",
        *MICRO,
        "--out",
        str(out),
        "--nproc-per-node",
        str(nproc),
        "--run-id",
        "r",
        "--json",
    ]
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=ROOT, env=JAX_ENV, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    d = out / "fixed-data" / "dev" / "r"
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    manifest = json.loads((d / "run.json").read_text())
    return json.loads(res.stdout), [e for e in events if "loss" in e], manifest, wall


@pytest.mark.slow
def test_two_jax_processes_match_one(shakespeare_dir, tmp_path):
    data = small_dataset(shakespeare_dir, tmp_path / "data" / "shakespeare_sp1024", train_tokens=BUDGET + 4096)
    one, ev1, _, wall1 = _run(data, tmp_path / "one", 1)
    two, ev2, manifest, wall2 = _run(data, tmp_path / "two", 2)
    print(f"wall: 1 process {wall1:.1f} s, 2 processes {wall2:.1f} s")
    assert one["status"] == two["status"] == "ok"
    assert (one["world_size"], two["world_size"]) == (1, 2) and two["replicas_identical"] is True
    assert one["train_tokens"] == two["train_tokens"] == BUDGET and one["steps"] == two["steps"] == 17
    assert [e["step"] for e in ev1] == [e["step"] for e in ev2] == list(range(1, 18))
    worst = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(ev1, ev2))
    print(f"worst relative loss difference, 1 vs 2 processes: {worst:.2e}")
    assert worst <= LOSS_RTOL
    assert [e["tokens"] for e in ev1] == [e["tokens"] for e in ev2]
    print(f"val_bpb: 1 process {one['val_bpb']!r}, 2 processes {two['val_bpb']!r}")
    assert two["val_bpb"] == pytest.approx(one["val_bpb"], rel=1e-5)
    assert (
        manifest["world_size"] == 2 and manifest["hardware"]["count"] == 2 and manifest["hardware"]["world_size"] == 2
    )
