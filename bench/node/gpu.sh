#!/usr/bin/env bash
# The GPU checks of an offline node, after `bash install.sh VENV_DIR`:
#
#   bash gpu.sh VENV_DIR
#
# Writes everything under one folder, results-<UTC timestamp>/ beside this script (RESULTS=... to choose), one log
# per step; a failing step is logged and the script goes on (exit 1 at the end if any failed):
#   versions.log    golfbench, python, torch/jax/flax versions and the devices each framework sees
#   bench.log       bench/gpu.py -> gpu.json (one process per measurement, stops after BENCH_BUDGET_S, default 480)
#   prepare.log     the rehearsal dataset and tracks (every track's official rules on the bundled Shakespeare data)
#   run-<track>-<model>-<framework>.log, verify-...log   a short official-rules `golf run` per model x framework
#                   (TRACKS, default "fixed-data"; PAIRS="llama@torch ..." to choose) and `golf verify` of it
# SMOKE=1 runs the bench's --smoke (tiny presets: checks the installation on a CPU); BENCH_ARGS adds bench flags;
# REHEARSAL_VAL_TOKENS (default 16384) sizes the rehearsal's val split.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 1 ] || { echo "error: usage: bash gpu.sh VENV_DIR (after bash install.sh VENV_DIR)" >&2; exit 2; }
case $1 in /*) VENV=$1 ;; *) VENV=$PWD/$1 ;; esac
PY=$VENV/bin/python
RESULTS=${RESULTS:-$HERE/results-$(date -u +%Y%m%dT%H%M%SZ)}
case $RESULTS in /*) ;; *) RESULTS=$PWD/$RESULTS ;; esac
# every step runs from the bundle's folder: a golfbench/ folder in the current one (a source checkout) would
# shadow the installed package for `python -m` / `python -c`
cd "$HERE" || exit 2
[ -x "$PY" ] && "$PY" -c 'import golfbench' 2>/dev/null || {
  echo "error: no golfbench in $VENV: install it first with bash $HERE/install.sh $VENV" >&2; exit 2; }
DATA=$HERE/data/shakespeare_sp1024
[ -f "$DATA/manifest.json" ] || { echo "error: no $DATA in the bundle: bundle it (golf bundle --data ...)" >&2; exit 2; }
mkdir -p "$RESULTS" || exit 2
export GOLF_NO_PROGRESS=1
FAILED=()
step() {  # step NAME CMD...: run CMD with its output in RESULTS/NAME.log
  local name=$1; shift
  local t0=$SECONDS
  echo "[gpu.sh] $name ..."
  if "$@" >"$RESULTS/$name.log" 2>&1; then
    echo "[gpu.sh] $name ok ($((SECONDS - t0)) s)"
  else
    echo "[gpu.sh] $name FAILED (exit $?, $((SECONDS - t0)) s): $RESULTS/$name.log"
    FAILED+=("$name")
  fi
}
versions() {
  "$PY" -c 'import json; from golfbench.harness.records import versions; print(json.dumps(versions()))'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' || true
  "$PY" -c 'import jax; print("jax", jax.__version__, jax.devices())' || true
}
step versions versions
BENCH=(--out "$RESULTS/gpu.json" --budget-s "${BENCH_BUDGET_S:-480}")
[ -n "${SMOKE:-}" ] && BENCH+=(--smoke --steps 1 --warmup 1)
read -r -a EXTRA <<<"${BENCH_ARGS:-}"  # e.g. BENCH_ARGS="--only train:llama/baseline@torch --pg-step-ms 43.5"
BENCH+=(${EXTRA[@]+"${EXTRA[@]}"})
step bench "$PY" "$HERE/bench/gpu.py" "${BENCH[@]}"
step prepare "$PY" "$HERE/bench/node_runs.py" prepare "$DATA" "$RESULTS/rehearsal" \
  --val-tokens "${REHEARSAL_VAL_TOKENS:-16384}"
REH_DATA=$(tail -n 1 "$RESULTS/prepare.log")
if [ -z "${PAIRS:-}" ]; then
  PAIRS=$("$PY" "$HERE/bench/node_runs.py" pairs | awk '{print $1"@"$2"@"$3}')
fi
for track in ${TRACKS:-fixed-data}; do
  for pair in $PAIRS; do
    IFS=@ read -r model fw preset <<<"$pair"
    preset=${preset:-tiny}
    id="$model-$fw"
    step "run-$track-$id" env GOLF_TRACKS_DIR="$RESULTS/rehearsal/tracks" "$PY" -m golfbench.harness.cli run \
      --track "$track" --scale official --backend "$fw" --model "$model" --preset "$preset" --seed 0 \
      --data "$REH_DATA" --out "$RESULTS/runs" --run-id "$id" --json
    step "verify-$track-$id" env GOLF_TRACKS_DIR="$RESULTS/rehearsal/tracks" "$PY" -m golfbench.harness.cli verify \
      "$RESULTS/runs/$track/official/$id"
  done
done
echo "[gpu.sh] results: $RESULTS"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "[gpu.sh] failed steps: ${FAILED[*]}"
  exit 1
fi
