"""`golf run --nproc-per-node N` (harness/launch.py): the parent checks everything before any process starts or
any file is written; a failure, before or after the launch, reaches the user as one line, once; the command
lines for torchrun and for JAX processes; rank 0's clock alone decides when training stops.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from golf_helpers import ENV, ROOT, descendants, files_under, golf, one_line_error, small_dataset

from golfbench.harness import launch as L
from golfbench.harness.errors import GolfError

# llama/tiny at dev scale; 4096-token batches of 16 rows of 256 tokens
TORCH2 = (
    "run",
    "--track",
    "fixed-data",
    "--scale",
    "dev",
    "--backend",
    "torch",
    "--model",
    "llama",
    "--preset",
    "tiny",
    "--eval-stride",
    "256",
    "--nproc-per-node",
    "2",
)


# ----------------------------------------------------------------------------------------------------------
# command lines and environments (multi-node cannot run here: the arguments are checked instead)


def test_torchrun_command_one_node():
    cmd = L.torchrun_command(L.Layout(8), ["run", "--seed", "1"], "rid")
    assert cmd == [
        sys.executable,
        "-m",
        "golfbench.backends.torch.launcher",
        "--nproc-per-node=8",
        "--standalone",
        "--max-restarts=0",
        "-m",
        "golfbench.harness.cli",
        "run",
        "--seed",
        "1",
    ]


def test_torchrun_command_two_nodes():
    cmd = L.torchrun_command(L.Layout(8, nnodes=2, node_rank=1, rdzv_endpoint="node0:29500"), ["run"], "llama-s0")
    assert cmd == [
        sys.executable,
        "-m",
        "golfbench.backends.torch.launcher",
        "--nproc-per-node=8",
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=node0:29500",
        "--rdzv-id=llama-s0",
        "--max-restarts=0",
        "-m",
        "golfbench.harness.cli",
        "run",
    ]
    # the quiet launcher accepts exactly what torchrun accepts
    torch_run = pytest.importorskip("torch.distributed.run")
    args = torch_run.get_args_parser().parse_args(cmd[3:])
    assert (
        args.nproc_per_node,
        args.nnodes,
        args.rdzv_backend,
        args.rdzv_endpoint,
        args.rdzv_id,
        args.max_restarts,
    ) == ("8", "2", "c10d", "node0:29500", "llama-s0", 0)
    assert args.module and args.training_script == "golfbench.harness.cli" and args.training_script_args == ["run"]


def test_jax_process_env_numbers_processes_across_nodes():
    layout = L.Layout(4, nnodes=3, node_rank=2, rdzv_endpoint="host0:1234")
    envs = [L.process_env(layout, r, ("host0", 1234), {"KEEP": "1"}) for r in range(4)]
    assert [e["RANK"] for e in envs] == ["8", "9", "10", "11"]
    assert {
        (e["WORLD_SIZE"], e["LOCAL_WORLD_SIZE"], e["MASTER_ADDR"], e["MASTER_PORT"], e["GROUP_RANK"], e["KEEP"])
        for e in envs
    } == {("12", "4", "host0", "1234", "2", "1")}
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "2", "3"]


def test_child_env_sets_threads_and_error_dir(tmp_path):
    env = L.child_env(L.Layout(2), tmp_path, base={"PATH": "/bin"})
    assert env[L.ERROR_DIR_ENV] == str(tmp_path) and int(env["OMP_NUM_THREADS"]) >= 1
    assert L.child_env(L.Layout(2), tmp_path, base={"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize(
    "layout, needle",
    [
        (L.Layout(0), "--nproc-per-node"),
        (L.Layout(2, nnodes=2), "--rdzv-endpoint"),
        (L.Layout(2, nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "--node-rank"),
        (L.Layout(2, nnodes=2, rdzv_endpoint="no-port"), "HOST:PORT"),
    ],
)
def test_layout_refuses_what_cannot_start(layout, needle):
    with pytest.raises(GolfError, match=needle):
        layout.check()


@pytest.mark.parametrize("prequant", [None, True, False])
def test_child_arguments_rebuild_the_same_spec(monkeypatch, prequant):
    """What the children run is what the parent checked: cli_args -> the real CLI -> the same RunSpec."""
    from typer.testing import CliRunner

    from golfbench.harness import cli, runner

    spec = runner.RunSpec(
        track="fixed-data",
        scale="dev",
        backend="jax",
        model="megalodon",
        preset="tiny",
        seed=7,
        data="d/x",
        budget=12345.0,
        out="o",
        run_id="r",
        eval_stride=128,
        overrides={"num_layers": 2, "model_dim": 64},
        checkpoint_every=3,
        log_every=2,
        force=True,
        prequant=prequant,
        val_points=3,
        log_to=["tensorboard", "wandb"],
        log_dir="logs",
        eval_context=512,
        adapt="sgd",
        codec="gptq_int6",
        compressor="brotli",
    )
    seen = []
    monkeypatch.setattr(runner, "execute", lambda s: seen.append(s) or {"status": "ok"})
    res = CliRunner().invoke(cli.app, L.cli_args(spec))
    assert res.exit_code == 0, res.output
    assert seen == [spec]
    assert L.cli_args(spec, resume_dir=Path("runs/a/b/c")) == ["run", "--resume", "runs/a/b/c"]


def test_the_cause_is_reported_not_the_processes_it_took_down(tmp_path):
    def report(rank, t, message, kind="error"):
        (tmp_path / f"rank{rank}.json").write_text(
            json.dumps({"rank": rank, "kind": kind, "message": message, "exit_code": 2, "time": t})
        )

    assert L.first_failure(tmp_path, []) is None
    # nothing reported: the first non-zero exit, unless process 0 wrote a result (a non-ok status exits 1)
    assert "process 1 (local rank 1 on this node) exited with code 3" in str(L.first_failure(tmp_path, [(1, 1, 3)]))
    assert L.first_failure(tmp_path, [(0, 0, 1)], have_result=True) is None
    report(1, 10.0, "the cause")
    report(0, 11.0, "Connection closed by peer", kind="internal error")
    first = L.first_failure(tmp_path, [(0, 0, 1), (1, 1, 2)])
    assert (str(first), first.kind, first.exit_code) == ("the cause", "error", 2)
    # a process killed outright (out of memory) left no report; its peers' errors are consequences
    killed = L.first_failure(tmp_path, [(0, 0, 1), (1, 1, 2), (2, 0, -signal.SIGKILL)])
    assert "process 2 (local rank 0 on this node) was killed by SIGKILL" in str(killed)
    # the launcher's own SIGTERM to the survivors is not a cause
    assert str(L.first_failure(tmp_path, [(1, 1, 2), (3, 1, -signal.SIGTERM)])) == "the cause"


def test_a_launched_process_leaves_its_error_for_the_parent(tmp_path):
    res = golf("run", "--track", "no-such-track", env={"RANK": "1", L.ERROR_DIR_ENV: str(tmp_path)})
    assert res.returncode == 2 and res.stderr == "" and "Traceback" not in res.stdout
    report = json.loads((tmp_path / "rank1.json").read_text())
    assert report["rank"] == 1 and report["kind"] == "error" and report["exit_code"] == 2
    assert "no-such-track" in report["message"] and not report["message"].startswith("error")


# ----------------------------------------------------------------------------------------------------------
# refused in the parent: one line, nothing started, nothing written


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--budget", "8192", "--set", "train_batch_tokens=256"], ["1 sequence(s) cannot feed 2"]),  # 1 row, 2 ranks
        (
            ["--budget", "8192", "--set", "train_batch_tokens=100000000"],
            ["one training batch needs 100,000,001 tokens"],
        ),
        (["--budget", "1e9"], ["fixed-data budget needs 1,000,000,000 training tokens"]),
        # the parent counts every node's processes: 2 nodes x 2 = 4 shards for a 3-row batch
        (
            ["--budget", "8192", "--set", "train_batch_tokens=768", "--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:9"],
            ["3 sequence(s) cannot feed 4"],
        ),
    ],
)
def test_bad_runs_are_refused_before_launch(shakespeare_dir, tmp_path, extra, needles):
    out = tmp_path / "runs"
    t0 = time.monotonic()
    res = golf(*TORCH2, "--data", shakespeare_dir, "--out", out, *extra)
    one_line_error(res, *needles)
    assert res.returncode == 2
    assert files_under(out) == set() and not out.exists()
    assert time.monotonic() - t0 < 60  # refused by the parent: no process group ever started


def test_an_existing_run_directory_is_refused_before_launch(shakespeare_dir, tmp_path):
    out = tmp_path / "runs"
    d = out / "fixed-data" / "dev" / "taken"
    d.mkdir(parents=True)
    (d / "notes.txt").write_text("mine")
    res = golf(*TORCH2, "--data", shakespeare_dir, "--out", out, "--run-id", "taken", "--budget", "8192")
    one_line_error(res, "already exists", "--force")
    assert files_under(out) == {
        "fixed-data",
        "fixed-data/dev",
        "fixed-data/dev/taken",
        "fixed-data/dev/taken/notes.txt",
    }


def test_jax_runs_are_checked_in_the_parent_too(shakespeare_dir, tmp_path):
    pytest.importorskip("jax")
    out = tmp_path / "runs"
    res = golf(
        "run",
        "--backend",
        "jax",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        shakespeare_dir,
        "--out",
        out,
        "--budget",
        "8192",
        "--eval-stride",
        "256",
        "--set",
        "train_batch_tokens=256",
        "--nproc-per-node",
        "2",
    )
    one_line_error(res, "cannot feed 2")
    assert not out.exists()


def test_resume_refusals_come_from_the_parent(shakespeare_dir, tmp_path):
    d = tmp_path / "runs" / "fixed-data" / "dev" / "x"
    d.mkdir(parents=True)
    manifest = {
        "spec": {
            "track": "fixed-data",
            "scale": "dev",
            "backend": "torch",
            "model": "llama",
            "preset": "tiny",
            "seed": 0,
            "data": str(shakespeare_dir),
            "budget": 8192.0,
            "out": "elsewhere",
            "run_id": "x",
            "eval_stride": 256,
            "overrides": {},
            "log_every": 10,
            "checkpoint_every": 0,
        }
    }
    (d / "run.json").write_text(json.dumps(manifest))
    before = files_under(tmp_path / "runs")
    one_line_error(golf("run", "--resume", d, "--nproc-per-node", "2"), "has no checkpoint")
    assert files_under(tmp_path / "runs") == before


# ----------------------------------------------------------------------------------------------------------
# failures after the launch: every process would have printed; the user sees one line


def _interrupted_run(backend: str, data: Path, out: Path, run_id: str, backend_checkpoint: bytes) -> Path:
    """A run directory as an interrupted run leaves it (manifest, a checkpoint), with the backend's part of the
    checkpoint replaced by ``backend_checkpoint``: the parent only checks that a checkpoint exists, every
    process reads it after the launch."""
    from golfbench.harness import runner
    from golfbench.harness.records import atomic_write_json

    spec = runner.RunSpec(
        track="fixed-data",
        scale="dev",
        backend=backend,
        model="llama",
        preset="tiny",
        data=str(data),
        budget=8192.0,
        out=str(out),
        run_id=run_id,
        eval_stride=256,
    )
    run = runner.Run(spec, world_size=2)
    run.dir.mkdir(parents=True)
    atomic_write_json(run.dir / "run.json", run.manifest())
    ck = run.dir / "checkpoint"
    ck.mkdir()
    (ck / "backend").write_bytes(backend_checkpoint)
    atomic_write_json(
        ck / "harness.json",
        {"steps": 1, "seconds": 0.5, "tokens": 4096, "flops": 1.0e10, "stream_tokens": 4096, "step_seconds": [0.5]},
    )
    return run.dir


@pytest.mark.parametrize(
    "backend, needle", [("torch", "is not a readable torch checkpoint"), ("jax", "cannot read JAX checkpoint")]
)
def test_a_failure_every_process_hits_after_launch_is_shown_once(shakespeare_dir, tmp_path, backend, needle):
    pytest.importorskip(backend)
    from golfbench.harness import runner

    d = _interrupted_run(backend, shakespeare_dir, tmp_path / "runs", "cut", b"not a checkpoint")
    runner.Run(runner.resume_spec(d), resume=True, world_size=2)  # the parent's checks pass: only the children fail
    before = files_under(d)
    res = golf("run", "--resume", d, "--nproc-per-node", "2", timeout=300)
    one_line_error(res, needle, str(d / "checkpoint" / "backend"))
    assert res.returncode == 2 and files_under(d) == before


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks and any(v.startswith(L.ERROR_DIR_ENV.encode() + b"=") for v in env) else None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the processes through /proc")
def test_a_process_killed_after_launch_is_named_in_one_line(shakespeare_dir, tmp_path):
    """Process 1 dies without a word (SIGKILL, as the kernel's OOM killer does) in the middle of training."""
    data = small_dataset(shakespeare_dir, tmp_path / "data" / "shakespeare_sp1024", train_tokens=400_000)
    out = tmp_path / "runs"
    d = out / "fixed-data" / "dev" / "victim"
    cmd = [
        sys.executable,
        "-m",
        "golfbench.harness.cli",
        *TORCH2,
        "--data",
        str(data),
        "--out",
        str(out),
        "--run-id",
        "victim",
        "--budget",
        str(90 * 4096),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (d / "events.jsonl").exists() or '"step": 1,' not in (d / "events.jsonl").read_text():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no training step after 300 s"
            time.sleep(0.05)
        victims = [p for p in descendants(proc.pid) if _rank_of(p) == 1]
        assert victims, "process 1 not found"
        for p in victims:
            os.kill(p, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    res = subprocess.CompletedProcess(cmd, proc.returncode, "", stderr)
    one_line_error(res, "process 1 (local rank 1 on this node) was killed by SIGKILL")
    assert not (d / "result.json").exists() or json.loads((d / "result.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------------------------------------------------
# one clock: rank 0 decides when training stops (issue point 1)


def _wallclock(out: Path, data: Path, skew: str) -> tuple[dict, list[dict], float]:
    cmd = [
        sys.executable,
        "-m",
        "golfbench.harness.cli",
        "run",
        "--track",
        "wallclock-10min",
        "--scale",
        "dev",
        "--backend",
        "torch",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--budget",
        "8",
        "--eval-stride",
        "256",
        "--log-every",
        "1",
        "--out",
        str(out),
        "--nproc-per-node",
        "2",
        "--json",
    ]
    t0 = time.monotonic()
    res = subprocess.run(
        cmd, cwd=ROOT, env={**ENV, "GOLF_CLOCK_SKEW": skew}, capture_output=True, text=True, timeout=600
    )
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads(res.stdout)
    d = next((out / "wallclock-10min" / "dev").iterdir())
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    return result, [e for e in events if "loss" in e], wall


@pytest.mark.slow
def test_a_fast_clock_on_rank_1_changes_nothing(shakespeare_dir, tmp_path):
    """Rank 1's clock runs 5x fast; the run still trains until rank 0's 8 s are spent, with identical replicas."""
    result, steps, wall = _wallclock(tmp_path / "skew1", shakespeare_dir, "1:5")
    assert result["status"] == "ok" and result["world_size"] == 2
    assert result["replicas_identical"] is True
    # the wallclock rule (track v4): the last step started inside rank 0's 8 s and may end after them
    assert steps[-1]["time"] - steps[-1]["step_seconds"] < 8.0 and steps[-1]["time"] == result["train_seconds"]
    assert wall < 600  # no rank waited forever in a collective (the subprocess timeout would fire first)
    # What rank 1 would have decided on its own clock: it reads 5x each logged time, so it stops (at the
    # latest) after the last step whose 5x time fits the budget -- well before the steps rank 0 allowed.
    rank1_alone = sum(1 for e in steps if 5 * e["time"] <= 8.0)
    assert rank1_alone < result["steps"], (rank1_alone, result["steps"])

    # Negative control: the same skew on rank 0, whose clock is the one that counts, does stop early. So the
    # hook works, and the 1:5 run above trained on rank 0's clock only because only rank 0's clock is read.
    control, control_steps, _ = _wallclock(tmp_path / "skew0", shakespeare_dir, "0:5")
    assert control["status"] == "ok" and control_steps[-1]["time"] - control_steps[-1]["step_seconds"] < 8.0
    assert control["steps"] * 2 < result["steps"], (control["steps"], result["steps"])
    assert np.isclose(control_steps[-1]["time"], control["train_seconds"])
    print(
        f"steps: skew on rank 1 {result['steps']} (rank 1 alone would have stopped by {rank1_alone}),"
        f" skew on rank 0 {control['steps']}; wall {wall:.1f} s"
    )
