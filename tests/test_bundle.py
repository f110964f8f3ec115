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


def _dataset_stub(root: Path) -> Path:
    """A folder `golf bundle` accepts as the Shakespeare dataset before writing anything (it checks the name and
    that manifest.json exists): the path checks below come first or fail, with no real dataset built."""
    d = root / "data" / "shakespeare_sp1024"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")
    return d


def test_bundle_into_a_file_says_it_is_a_file_and_writes_nothing(tmp_path):
    data = _dataset_stub(tmp_path)
    bfile = tmp_path / "bfile"
    bfile.write_text("mine")
    before = files_under(tmp_path)
    one_line_error(golf("bundle", bfile, "--data", data, cwd=tmp_path), f"{bfile} is a file", "new folder")
    res = golf("bundle", bfile / "sub" / "out", "--data", data, cwd=tmp_path)  # a file where a folder must go
    one_line_error(res, f"{bfile} is a file", "cannot be made", "new folder")
    assert files_under(tmp_path) == before and bfile.read_text() == "mine"


@pytest.mark.parametrize("out", ["/proc/golf-bundle-xx", "/proc/golf-bundle-xx/deeper/out"])
def test_bundle_into_an_uncreatable_folder_is_one_line(tmp_path, out):
    data = _dataset_stub(tmp_path)
    res = golf("bundle", out, "--data", data, cwd=tmp_path)
    assert res.returncode == 2
    one_line_error(res, f"cannot create the bundle folder {out}", "choose a folder in a writable place")
    assert not Path(out).exists() and files_under(tmp_path) == {"data", "data/shakespeare_sp1024",
                                                                "data/shakespeare_sp1024/manifest.json"}  # fmt: skip


def _make_bundle(bin_dir: Path, out: Path) -> subprocess.CompletedProcess:
    """The Makefile's `bundle` recipe alone (its setup/data prerequisites held as done: make -o), run with a
    `golf` on BIN that refuses a non-empty OUT like `golf bundle` does and otherwise writes a bundle.json."""
    cmd = ["make", "-s", "-o", "setup", "-o", "data", "bundle", f"BIN={bin_dir}", f"BUNDLE={out}"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_make_bundle_twice_replaces_its_own_output_and_nothing_else(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    golf_stub = bin_dir / "golf"
    golf_stub.write_text(
        '#!/bin/sh\n[ "$1" = bundle ] || exit 3\n'
        'if [ -d "$2" ] && [ -n "$(ls -A "$2")" ]; then echo "error: $2 exists and is not empty" >&2; exit 2; fi\n'
        'mkdir -p "$2" && echo "{}" > "$2/bundle.json"\n'
    )
    golf_stub.chmod(0o755)
    out = tmp_path / "dist dir" / "golf-node"  # a space: the recipe quotes the path
    first = _make_bundle(bin_dir, out)
    assert first.returncode == 0, first.stderr
    (out / "stale.txt").write_text("from the first build")
    second = _make_bundle(bin_dir, out)
    assert second.returncode == 0, second.stderr  # was: "dist/golf-node exists and is not empty"
    assert files_under(out) == {"bundle.json"}  # a fresh output, not the old one plus the new
    mine = tmp_path / "mine"  # not a bundle (no bundle.json): make leaves it to golf bundle, which refuses
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    res = _make_bundle(bin_dir, mine)
    assert res.returncode != 0 and "is not empty" in res.stderr
    assert files_under(mine) == {"keep.txt"} and (mine / "keep.txt").read_text() == "mine"
