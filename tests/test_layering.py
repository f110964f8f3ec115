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
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_harness_sources_import_no_framework():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & (FRAMEWORKS | {"backends"}))
        for p in (ROOT / "harness").rglob("*.py")
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert offenders == {}, f"harness modules import frameworks/backends: {offenders}"


def test_importing_the_whole_harness_loads_no_framework():
    mods = [p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".") for p in (ROOT / "harness").rglob("*.py")]
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
    bad.write_text("import numpy\nfrom torch import nn\nimport jax.numpy as jnp\n")
    assert _imports(bad) & FRAMEWORKS == {"torch", "jax"}
