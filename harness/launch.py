"""`golf run --nproc-per-node N [--nnodes K ...]`: one run over several processes, checked once, failing in one line.

The parent process validates the run first (``runner.Run(spec, resume, world_size)``: world layout, batch,
budget, run directory, resume compatibility), so a bad run is refused in one line before any process starts
and before anything is written. Then it starts the processes:

- torch: torchrun (DDP; gloo on CPU, NCCL on GPUs), through ``golfbench.backends.torch.launcher``, which runs torchrun
  with its own logs and error report silenced (the harness stays framework-free: it only names that module);
- JAX: the processes are spawned here, each with torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), and join ``jax.distributed``; when
  one fails the others are ended.

Every child reports a failure through ``GOLF_ERROR_DIR`` (a temporary folder of the parent) instead of
printing it (cli.handled writes ``rank<r>.json``); the parent prints the first failure once. Every process
draws the same global batch and its backend takes its own rows, so the global batch is the same for any
world size; process 0 writes the records.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from golfbench.harness.distributed import env_rank
from golfbench.harness.errors import GolfError

ERROR_DIR_ENV = "GOLF_ERROR_DIR"
LAUNCHER_REPORT = "launcher.json"  # written by the torch launcher module when torchrun itself reports a failure
TORCH_LAUNCHER = "golfbench.backends.torch.launcher"


class LaunchError(GolfError):
    """A child process's failure, re-raised in the parent: printed as ``<kind>: <message>`` with its exit code."""

    def __init__(self, message: str, kind: str = "error", exit_code: int = 2) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = int(exit_code) or 1


@dataclass(frozen=True)
class Layout:
    """Processes of one run: ``nproc_per_node`` on each of ``nnodes`` machines; this is node ``node_rank``.

    ``rdzv_endpoint`` (HOST:PORT) is where the nodes meet: torchrun's c10d rendezvous for torch, the
    ``jax.distributed`` coordinator (process 0, on node 0) for JAX. Required when ``nnodes`` > 1.
    """

    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def world_size(self) -> int:
        """Processes in the run: ``nproc_per_node`` × ``nnodes``."""
        return self.nproc_per_node * self.nnodes

    def check(self) -> None:
        """Raises GolfError for a layout that cannot start."""
        if self.nproc_per_node < 1:
            raise GolfError(f"--nproc-per-node must be at least 1, got {self.nproc_per_node}")
        if self.nnodes < 1:
            raise GolfError(f"--nnodes must be at least 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise GolfError(
                f"--node-rank must lie in [0, {self.nnodes - 1}] for --nnodes {self.nnodes}, got {self.node_rank}"
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise GolfError(
                "a run over several nodes needs --rdzv-endpoint HOST:PORT (a port on node 0 every node can reach)"
            )
        if self.rdzv_endpoint is not None:
            host, _, port = self.rdzv_endpoint.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise GolfError(
                    f"--rdzv-endpoint must look like HOST:PORT (e.g. node0:29500), got '{self.rdzv_endpoint}'"
                )


DATA_CHECKED_ENV = "GOLF_DATA_CHECKED"  # manifest sha256 of a dataset whose contents the launcher verified


def cli_args(spec, resume_dir: Path | None = None) -> list[str]:
    """The `golf` arguments that make a child process run ``spec`` (or resume ``resume_dir``) exactly."""
    if resume_dir is not None:
        return ["run", "--resume", str(resume_dir)]
    args = [
        "run",
        "--track",
        spec.track,
        "--scale",
        spec.scale,
        "--backend",
        spec.backend,
        "--model",
        spec.model,
        "--preset",
        spec.preset,
        "--seed",
        str(spec.seed),
        "--out",
        str(spec.out),
    ]
    if spec.data:
        args += ["--data", str(spec.data)]
    if spec.budget is not None:
        args += ["--budget", repr(float(spec.budget))]
    if spec.run_id:
        args += ["--run-id", spec.run_id]
    if spec.eval_stride:
        args += ["--eval-stride", str(spec.eval_stride)]
    if spec.eval_context:
        args += ["--eval-context", str(spec.eval_context)]
    for key, value in spec.overrides.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    if spec.checkpoint_every:
        args += ["--checkpoint-every", str(spec.checkpoint_every)]
    if spec.log_every != 10:
        args += ["--log-every", str(spec.log_every)]
    if spec.prequant is not None:
        args.append("--prequant" if spec.prequant else "--no-prequant")
    from golfbench.harness.runner import VAL_POINTS

    if spec.val_points != VAL_POINTS:
        args += ["--val-points", str(spec.val_points)]
    for name in spec.log_to:
        args += ["--log-to", name]
    if spec.log_dir:
        args += ["--log-dir", str(spec.log_dir)]
    from golfbench.harness.runner import chosen

    for flag, value in chosen(vars(spec)):
        args += [flag, value]
    if spec.force:
        args.append("--force")
    return args


def torchrun_command(layout: Layout, child_args: list[str], rdzv_id: str) -> list[str]:
    """The torchrun command line (through the quiet launcher module) that starts this node's processes.

    One node: ``--standalone`` (a local rendezvous on a free port). Several: c10d rendezvous at
    ``layout.rdzv_endpoint`` under ``rdzv_id``, the same on every node (the run id); the rendezvous numbers
    the nodes, so process 0 may run on any node (the run directory must be on a shared filesystem).
    """
    cmd = [sys.executable, "-m", TORCH_LAUNCHER, f"--nproc-per-node={layout.nproc_per_node}"]
    if layout.nnodes == 1 and layout.rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        # c10d assigns the node ranks at the rendezvous (torchrun ignores --node-rank there), so none is passed
        cmd += [
            f"--nnodes={layout.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={layout.rdzv_endpoint}",
            f"--rdzv-id={rdzv_id}",
        ]
    cmd += ["--max-restarts=0", "-m", "golfbench.harness.cli", *child_args]
    return cmd


def process_env(layout: Layout, local_rank: int, master: tuple[str, int], base: dict) -> dict:
    """torchrun's environment for local process ``local_rank`` of this node (the JAX launcher)."""
    env = dict(base)
    env.update(
        RANK=str(layout.node_rank * layout.nproc_per_node + local_rank),
        WORLD_SIZE=str(layout.world_size),
        LOCAL_RANK=str(local_rank),
        LOCAL_WORLD_SIZE=str(layout.nproc_per_node),
        GROUP_RANK=str(layout.node_rank),
        MASTER_ADDR=master[0],
        MASTER_PORT=str(master[1]),
    )
    return env


def child_env(layout: Layout, error_dir: Path, base: dict | None = None) -> dict:
    """The parent's environment for the children: the error folder, and BLAS threads split between the
    processes of a node (kept when the user set OMP_NUM_THREADS; torchrun would otherwise warn and use 1)."""
    env = dict(os.environ if base is None else base)
    env[ERROR_DIR_ENV] = str(error_dir)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // layout.nproc_per_node)))
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ----------------------------------------------------------------------------------------------------------
# the child's side


def report_failure(kind: str, message: str, exit_code: int) -> bool:
    """In a launched process: leave this failure for the parent (``GOLF_ERROR_DIR/rank<r>.json``) and return
    True; elsewhere return False (the caller prints it)."""
    where = os.environ.get(ERROR_DIR_ENV)
    if not where:
        return False
    rank = env_rank()
    body = json.dumps(
        {"rank": rank, "kind": kind, "message": message, "exit_code": int(exit_code), "time": time.time()}
    )
    path = Path(where) / f"rank{rank}.json"
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(body, encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # the parent is gone or its folder too: say it here rather than nowhere
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# the parent's side


def describe_exit(rank: int, local_rank: int, exit_code: int) -> str:
    """One line for a process that ended without reporting why (its exit code; negative: a signal)."""
    if exit_code < 0:
        try:
            how = f"was killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            how = f"was killed by signal {-exit_code}"
    else:
        how = f"exited with code {exit_code}"
    return f"process {rank} (local rank {local_rank} on this node) {how} without reporting an error"


TEARDOWN = {-signal.SIGTERM, -signal.SIGINT}  # how a launcher ends the processes left after a failure


def first_failure(error_dir: Path, exits: list[tuple[int, int, int]], have_result: bool = False) -> LaunchError | None:
    """The failure to show for a process group, or None when nothing failed.

    ``exits``: (rank, local rank, exit code) of the processes that exited non-zero. The cause, not the
    processes it took down: a process killed by a signal (other than the launcher's SIGTERM/SIGINT teardown)
    without a report of its own comes first (its peers then fail in their collectives); else the earliest
    report a process left in ``error_dir`` (ties: the lowest rank); else, unless ``have_result`` (process 0
    wrote a result, and exits 1 when its status is not ok), the first non-zero exit.
    """
    reports = {}
    for path in error_dir.glob("rank*.json"):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        reports[int(report.get("rank", 0))] = report
    killed = sorted(e for e in exits if e[2] < 0 and e[2] not in TEARDOWN and e[0] not in reports)
    if killed:
        return LaunchError(describe_exit(*killed[0]), "error", 1)
    if reports:
        first = min(reports.values(), key=lambda r: (float(r.get("time", 0.0)), int(r.get("rank", 0))))
        return LaunchError(
            str(first.get("message", "")), str(first.get("kind", "error")), int(first.get("exit_code", 1))
        )
    if exits and not have_result:
        return LaunchError(describe_exit(*sorted(exits)[0]), "error", 1)
    return None


def _stat(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def launch(spec, layout: Layout, resume_dir: Path | None = None) -> dict:
    """Validate ``spec`` for ``layout.world_size`` processes, start this node's processes, wait for them.

    Returns process 0's result dict (read from result.json; on the nodes without process 0, that of the
    shared run directory when it is visible, else a status-only dict). Raises GolfError before anything
    starts for a run that cannot be done, and LaunchError with the first child's one-line failure.
    """
    from golfbench.harness.records import read_json
    from golfbench.harness.runner import Run

    layout.check()
    run = Run(spec, resume=resume_dir is not None, world_size=layout.world_size)
    result_path = run.dir / "result.json"
    before = _stat(result_path)
    error_dir = Path(tempfile.mkdtemp(prefix="golf-launch-"))
    try:
        env = child_env(layout, error_dir)
        # the parent just hashed every shard (Run above): the children need not hash them again
        env[DATA_CHECKED_ENV] = run.dataset.manifest_sha256
        args = cli_args(spec, resume_dir)
        if spec.backend == "torch":
            code, exits = run_torchrun(layout, args, env, run.run_id, error_dir)
        else:
            code, exits = _run_processes(layout, args, env)
        fresh = _stat(result_path) not in (None, before)
        failure = first_failure(error_dir, exits, have_result=fresh)
        if failure is not None:
            raise failure
        if fresh:
            return read_json(result_path, "result")
        if code == 0 and layout.node_rank != 0:
            return {"status": "ok", "world_size": layout.world_size}
        raise LaunchError(
            f"the {layout.world_size} processes exited (code {code}) without a result in {run.dir}", "error", code or 1
        )
    finally:
        shutil.rmtree(error_dir, ignore_errors=True)


def run_torchrun(layout: Layout, args: list[str], env: dict, rdzv_id: str, error_dir: Path) -> tuple[int, list]:
    """torchrun (through the quiet launcher module); returns (its exit code, the failed processes' exits as
    (global rank, local rank, exit code)). Raises LaunchError when torchrun itself failed (rendezvous, bad
    arguments), with the message the launcher left in ``error_dir``."""
    proc = subprocess.Popen(torchrun_command(layout, args, rdzv_id), env=env, stdout=subprocess.DEVNULL)
    try:
        code = proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to the whole group; give torchrun time to stop it
        _stop([proc], grace=30.0)
        raise
    report = error_dir / LAUNCHER_REPORT
    body = json.loads(report.read_text(encoding="utf-8")) if report.exists() else {}
    if "message" in body:  # torchrun itself failed (rendezvous, bad arguments)
        raise LaunchError(str(body["message"]), "error", 1)
    return code, [tuple(int(x) for x in f) for f in body.get("failures", [])]


def _run_processes(layout: Layout, args: list[str], env: dict) -> tuple[int, list]:
    """Start this node's processes with torchrun's environment; when one fails, end the others.

    Returns (0 or the first failure's exit code, (rank, local rank, exit code) of every process that
    exited non-zero).
    """
    if layout.rdzv_endpoint:
        host, _, port = layout.rdzv_endpoint.rpartition(":")
        master = (host, int(port))
    else:
        master = ("127.0.0.1", _free_port())
    cmd = [sys.executable, "-m", "golfbench.harness.cli", *args]
    procs = [
        subprocess.Popen(cmd, env=process_env(layout, r, master, env), stdout=subprocess.DEVNULL)
        for r in range(layout.nproc_per_node)
    ]
    first = 0
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                first = failed[0]
                _stop(procs)
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs)
        raise
    base = layout.node_rank * layout.nproc_per_node
    exits = [(base + r, r, p.returncode) for r, p in enumerate(procs) if p.returncode]
    return first, exits


def _stop(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM the processes still running, SIGKILL those left after ``grace`` seconds, reap all."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
