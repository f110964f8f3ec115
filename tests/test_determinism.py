"""Determinism (issue 6.6): on a CPU the same seed gives the same batches, losses, weights and val_bpb, bit for
bit, in a fresh process; another seed gives another val_bpb. For every (model, backend) pair a backend offers.

Each backend gets two processes: the first runs seeds 0 and 1 of every model, the second seed 0 again into
another runs folder (same run id, so even the artifact bytes must match). Several runs share a process to
keep the framework imports and JIT compiles to one per process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from golf_helpers import ENV, ROOT, small_dataset

from golfbench.harness.backend import get_backend

DRIVER = """
import json, sys
from golfbench.harness.runner import RunSpec, execute
data, out, runs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for backend, model, seed in runs:
    spec = RunSpec(track="fixed-data", scale="dev", backend=backend, model=model, preset="tiny", seed=seed, data=data,
                   budget=8192.0, out=out, run_id=f"{model}-{backend}-s{seed}", eval_stride=256, prequant=True)
    result = execute(spec)
    assert result["status"] == "ok", result
"""


def _run_all(jobs: list[tuple[str, list[tuple[str, int]], Path]], data: Path) -> None:
    """One process per job, all at once (each is single-threaded); every run must end `ok`."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(data), str(out), json.dumps([[backend, m, s] for m, s in runs])],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend, runs, out in jobs
    ]
    try:
        for proc in procs:
            _, stderr = proc.communicate(timeout=600)
            assert proc.returncode == 0, stderr[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


def _record(out: Path, model: str, backend: str, seed: int) -> dict:
    d = out / "fixed-data" / "dev" / f"{model}-{backend}-s{seed}"
    result = json.loads((d / "result.json").read_text())
    losses = [e["loss"] for e in map(json.loads, (d / "events.jsonl").read_text().splitlines()) if "loss" in e]
    return {
        "val_bpb": result["val_bpb"],
        "pre_quant": result["pre_quant_val_bpb"],
        "artifact": result["artifact_sha256"],
        "losses": losses,
        "steps": result["steps"],
    }


@pytest.fixture(scope="module")
def data(shakespeare_dir: Path, tmp_path_factory) -> Path:
    return small_dataset(shakespeare_dir, tmp_path_factory.mktemp("det") / "shakespeare_sp1024")


PACK = """
import hashlib
from golfbench.harness import artifact as art
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec
spec = get_spec("megalodon")
cfg = spec.config("tiny")
meta = {"model": "megalodon", "preset": "tiny", "config": cfg, "backend": "jax", "run_id": "r"}
print(hashlib.sha256(art.pack(init_weights(spec, cfg, 3), spec.is_control, meta)).hexdigest())
"""


def test_the_same_weights_pack_to_the_same_artifact_bytes_in_every_process() -> None:
    # Each process hashes its dicts with another random seed; the container must not depend on it.
    digests = {
        subprocess.run(
            [sys.executable, "-c", PACK],
            cwd=ROOT,
            env={**ENV, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in (1, 2, 3)
    }
    assert len(digests) == 1, digests


def test_every_landed_pair_is_covered() -> None:
    from golfbench.harness.plugins import get_plugin

    builtin = {(m, b) for b in ("torch", "jax") for m in get_backend(b).models() if get_plugin(m) is None}
    assert builtin == {
        ("llama", "torch"),
        ("megalodon", "torch"),
        ("llama", "jax"),
        ("megalodon", "jax"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_same_seed_same_bits_other_seed_other_bpb(backend: str, data: Path, tmp_path: Path) -> None:
    models = get_backend(backend).models()
    first, second = tmp_path / "first", tmp_path / "second"
    _run_all(
        [(backend, [(m, s) for s in (0, 1) for m in models], first), (backend, [(m, 0) for m in models], second)], data
    )
    for model in models:
        a, b = _record(first, model, backend, 0), _record(second, model, backend, 0)
        other = _record(first, model, backend, 1)
        assert a["steps"] == 2 and len(a["losses"]) == 2
        assert a == b, f"{model}@{backend}: seed 0 differs between two processes: {a} vs {b}"
        assert other["val_bpb"] != a["val_bpb"] and other["losses"][0] != a["losses"][0], (
            f"{model}@{backend}: seeds 0 and 1 agree"
        )
