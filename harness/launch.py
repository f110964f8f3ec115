"""`golf run --nproc-per-node N`: relaunch the same run under torchrun (DDP; gloo on CPU, NCCL on GPUs).

The harness stays framework-free: torchrun is started as a subprocess. Every rank draws the same global batch
from the stream and its backend takes its own rows, so the global batch is the same for any N; rank 0 writes
the records and scores the artifact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.errors import GolfError
from harness.records import read_json, run_dir


def _cli_args(spec) -> list[str]:
    args = ["run", "--track", spec.track, "--scale", spec.scale, "--backend", spec.backend, "--model", spec.model,
            "--preset", spec.preset, "--seed", str(spec.seed), "--out", str(spec.out)]  # fmt: skip
    if spec.data:
        args += ["--data", str(spec.data)]
    if spec.budget is not None:
        args += ["--budget", repr(float(spec.budget))]
    if spec.run_id:
        args += ["--run-id", spec.run_id]
    if spec.eval_stride:
        args += ["--eval-stride", str(spec.eval_stride)]
    for key, value in spec.overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    if spec.force:
        args.append("--force")
    return args


def launch_torchrun(spec, nproc: int) -> dict:
    if spec.backend != "torch":
        raise GolfError("--nproc-per-node is for the torch backend; the jax backend uses every visible device itself")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "harness.cli", *_cli_args(spec)]  # fmt: skip
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    from harness.records import default_run_id

    rid = spec.run_id or default_run_id(spec.model, spec.preset, spec.backend, spec.seed, spec.unofficial, spec.budget)
    result_path = run_dir(Path(spec.out), spec.track, spec.scale, rid) / "result.json"
    if not result_path.exists():
        raise GolfError(f"torchrun with {nproc} processes exited {proc.returncode} without a result; see the log above")
    return read_json(result_path, "result")
