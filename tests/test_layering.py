"""harness/ never imports a framework; backends depend on the harness, never the reverse."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"torch", "jax", "jaxlib", "flax", "optax"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _forbidden(module: str) -> bool:
    return module.split(".")[0] in FRAMEWORKS or module.startswith("golfbench.backends")


def test_harness_sources_import_no_framework():
    offenders = {
        str(p.relative_to(ROOT)): sorted(m for m in _imports(p) if _forbidden(m))
        for p in (ROOT / "harness").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"harness modules import frameworks/backends: {offenders}"


def test_importing_the_whole_harness_loads_no_framework():
    mods = [
        "golfbench." + p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        for p in (ROOT / "harness").rglob("*.py")
    ]
    code = (
        "import importlib, sys\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FRAMEWORKS)!r})\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "", f"framework modules loaded by the harness: {res.stdout.strip()}"


def test_the_detector_catches_a_framework_import(tmp_path):
    # The layering test must be able to fail.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import numpy\nfrom torch import nn\nimport jax.numpy as jnp\nfrom golfbench.backends.jax import llama\n"
    )
    assert sorted(m for m in _imports(bad) if _forbidden(m)) == ["golfbench.backends.jax", "jax.numpy", "torch"]


def test_a_plain_install_is_one_namespace_and_runs(tmp_path, shakespeare_dir):
    """A non-editable `pip install .` (into a target folder, no deps: they are this venv's) puts only `golfbench`
    on the path: `import harness` fails outside the repository, the tracks come from package data, and
    `golf tracks` and a dev run work from another directory."""
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(ROOT)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert sorted(p.name for p in site.iterdir() if not p.name.endswith((".dist-info", "__pycache__"))) == [
        "bin",
        "golfbench",
    ]
    assert (site / "golfbench" / "tracks" / "fixed-data.toml").is_file()
    env = {**__import__("os").environ, "PYTHONPATH": str(site), "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    away = tmp_path / "elsewhere"
    away.mkdir()

    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=away, env=env, capture_output=True, text=True, timeout=600)

    probe = run("-c", "import golfbench.harness.tracks as t; print(t.TRACKS_DIR)")
    assert probe.returncode == 0 and probe.stdout.strip() == str(site / "golfbench" / "tracks"), probe.stderr
    assert run("-c", "import harness").returncode != 0 and run("-c", "import backends").returncode != 0
    tracks = run("-m", "golfbench.harness.cli", "tracks", "--json")
    assert tracks.returncode == 0 and {t["name"] for t in __import__("json").loads(tracks.stdout)} >= {"fixed-data"}
    dev = run("-m", "golfbench.harness.cli", "run", "--track", "fixed-data", "--data", str(shakespeare_dir),
              "--budget", "4096", "--eval-stride", "256", "--out", str(away / "runs"), "--json")  # fmt: skip
    assert dev.returncode == 0, dev.stderr
    result = __import__("json").loads(dev.stdout)
    assert result["status"] == "ok" and result["train_tokens"] == 4096
    snapshot = away / "runs" / "fixed-data" / "dev" / result["run_id"] / "code"
    assert (snapshot / "llama.py").read_bytes() == (ROOT / "backends" / "torch" / "llama.py").read_bytes()
