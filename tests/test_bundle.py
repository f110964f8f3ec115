"""`golf bundle OUT` (harness/bundle.py) and the bundle's install.sh / gpu.sh: an offline GPU node installs golfbench
from the bundle's wheels alone, on top of the node's own torch/jax, and runs the bench and official-rules runs.

The slow test plays the node with this machine: the "node python" is this environment's python (CPU torch and
jax), pip's configuration is switched off (no index, no find-links but the bundle's), and a fresh venv is made."""

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
from golf_helpers import ENV, files_under, golf, one_line_error

from golfbench.harness.bundle import dependency_pins, excluded

ROOT = Path(__file__).resolve().parent.parent
# pip with no configuration files and no PIP_* settings: only what install.sh passes (the bundle's wheels)
OFFLINE = {k: v for k, v in ENV.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}


def test_bundle_refuses_a_non_empty_out_and_writes_nothing(tmp_path, shakespeare_dir):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = golf("bundle", out, "--data", shakespeare_dir, cwd=tmp_path)
    one_line_error(res, "is not empty", "new folder")
    assert files_under(tmp_path) == {"b", "b/keep.txt"} and (out / "keep.txt").read_text() == "mine"


def test_bundle_refuses_missing_data_and_writes_nothing(tmp_path):
    res = golf("bundle", tmp_path / "b", "--data", tmp_path / "nope", cwd=tmp_path)
    one_line_error(res, "no dataset at", "golf data build shakespeare")
    res = golf("bundle", tmp_path / "b", cwd=tmp_path)  # no data/ under the current folder at all
    one_line_error(res, "no built dataset under data/")
    assert files_under(tmp_path) == set()


def test_dependency_pins_ship_everything_but_the_frameworks():
    pins, met = dependency_pins()
    for name in ("numpy", "typer", "sentencepiece", "flax", "optax", "setuptools"):
        assert pins[name] == metadata.version(name), name
    assert not [n for n in pins if excluded(n)]
    assert {"jax", "jaxlib"} <= set(met)  # reached through flax/optax and left to the node
    assert not {"golfbench", "golf-deltanet", "shakespeare", "torch", "jax"} & set(pins)
    assert excluded("nvidia-cublas-cu12") and excluded("jax_cuda12_plugin") and excluded("Torch")
    assert not excluded("jaxtyping") and not excluded("torchmetrics")


def _run(cmd, timeout=600, cwd=ROOT, **kw):
    """``cmd`` from the source checkout by default: its golfbench/ folder must not shadow what was installed."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, **kw)


@pytest.mark.slow
def test_bundle_installs_offline_and_runs_the_smoke_bench(tmp_path, shakespeare_dir):
    out = tmp_path / "bundle"
    t0 = time.monotonic()
    res = golf("bundle", out, "--data", shakespeare_dir, "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    print(f"bundle: {info['bytes'] / 1e6:.1f} MB in {time.monotonic() - t0:.0f} s")
    wheels = {w.split("-")[0].lower() for w in info["wheels"]}
    assert {"golfbench", "golf_deltanet", "shakespeare", "flax", "optax", "numpy"} <= wheels
    assert not wheels & {"torch", "jax", "jaxlib", "triton"} and not [w for w in wheels if w.startswith("nvidia")]
    assert info["datasets"] == ["shakespeare_sp1024"] and (out / "data/shakespeare_sp1024/manifest.json").is_file()
    assert not (ROOT / "examples/golf-deltanet/build").exists()  # the build's leftovers are removed

    venv = tmp_path / "node venv"  # a space in the path, as a user's home may have
    node_python = sys.executable  # has CPU torch and jax: the node's own frameworks
    t0 = time.monotonic()
    res = _run(["bash", out / "install.sh", venv], env={**OFFLINE, "PYTHON": node_python})
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"offline install: {time.monotonic() - t0:.0f} s")
    py = venv / "bin" / "python"
    code = "import golfbench, golf_deltanet, torch, jax; print(golfbench.__file__, torch.__file__, sep=chr(10))"
    where = _run([py, "-c", code], cwd=tmp_path)  # -c puts the current folder first on sys.path
    ours, theirs = where.stdout.splitlines()
    assert ours.startswith(str(venv)) and not theirs.startswith(str(venv))  # golfbench installed, torch the node's
    site = Path(theirs).parent.parent
    for fw in ("torch", "jax", "jaxlib"):  # nothing of the frameworks was copied into the venv
        assert not list(venv.glob(f"lib/python*/site-packages/{fw}")), fw
    # pip's resolver sees the node's frameworks as installed: nothing to fetch for them
    dry = _run([py, "-m", "pip", "install", "--no-index", "--dry-run", "torch>=2.5", "jax>=0.5"], env=OFFLINE)
    assert dry.returncode == 0 and "Would install" not in dry.stdout, dry.stdout + dry.stderr
    # the wheelhouse alone resolves golfbench's own dependencies (a bare venv: nothing of the node's)
    bare = tmp_path / "bare"
    assert _run([node_python, "-m", "venv", bare]).returncode == 0
    find = ["--no-index", "--find-links", out / "wheels"]
    dry = _run(
        [bare / "bin/python", "-m", "pip", "install", *find, "--dry-run", "golfbench", "golf-deltanet"], env=OFFLINE
    )
    assert dry.returncode == 0 and "Would install" in dry.stdout, dry.stdout + dry.stderr

    # gpu.sh from the installed venv: the smoke bench (one torch, one JAX plugin measurement) and one short
    # official-rules run (the rehearsal's fixed-data track on the bundled Shakespeare data) and its verify
    results = tmp_path / "results"
    env = {
        **OFFLINE,
        "SMOKE": "1",
        "BENCH_ARGS": "--only train:llama/tiny@torch --only train:deltanet/tiny@jax",
        "PAIRS": "llama@torch@tiny",
        "REHEARSAL_VAL_TOKENS": "2048",
        "RESULTS": str(results),
    }
    res = _run(["bash", out / "gpu.sh", venv], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    logs = {p.name for p in results.glob("*.log")}
    assert logs == {
        "versions.log",
        "bench.log",
        "prepare.log",
        "run-fixed-data-llama-torch.log",
        "verify-fixed-data-llama-torch.log",
    }
    bench = json.loads((results / "gpu.json").read_text())
    assert [m["status"] for m in bench["measurements"].values()] == ["ok", "ok"]
    assert bench["versions"]["golfbench"] == metadata.version("golfbench") and str(site) not in ours
    run = json.loads((results / "run-fixed-data-llama-torch.log").read_text().strip().splitlines()[-1])
    assert run["status"] == "ok" and run["track"] == "fixed-data" and run["scale"] == "official"
