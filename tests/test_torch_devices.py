"""Every tensor on its own device: under `golf run|eval --nproc-per-node 2 --backend torch` with 8 (stand-in) CUDA
devices visible, each rank's process group, collectives, DDP module and batches use cuda:LOCAL_RANK, chosen
(``torch.cuda.set_device``) before the first collective; and the hardware class says what ran (2 processes,
not the 8 visible devices).

The stand-in (tests/fake_cuda.py) is loaded into the torchrun children by a ``sitecustomize.py`` on PYTHONPATH:
production code has no test hook. It records every torch.distributed call with the device of each tensor it is
given, while the real transport runs on gloo over CPU storage.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fake_cuda import LOG_ENV
from golf_helpers import ROOT, golf_ok, small_dataset

pytestmark = pytest.mark.slow  # ~50 s: a 2-process run and a 2-process eval

# llama/tiny shrunk: 1024-token steps (4 rows of 256, 2 per rank), 3 steps, a checkpoint after every step
MICRO = ("--set", "num_layers=2", "--set", "model_dim=64", "--set", "num_heads=2", "--set", "num_kv_heads=1")
RUN_ID = "devices"


def _records(folder: Path) -> dict[int, list[dict]]:
    """rank -> its records in call order (one file per process)."""
    out: dict[int, list[dict]] = {}
    for f in sorted(folder.glob("*.jsonl")):
        recs = [json.loads(line) for line in f.read_text().splitlines()]
        out.setdefault(recs[0]["rank"], []).extend(recs)
    return out


@pytest.fixture(scope="module")
def fake_runs(shakespeare_dir, tmp_path_factory):
    """A 2-rank run and a 2-rank eval of its artifact under 8 stand-in CUDA devices: (run dir, run log, eval log,
    eval result)."""
    root = tmp_path_factory.mktemp("devices")
    data = small_dataset(shakespeare_dir, root / "shakespeare_sp1024", train_tokens=16_384, val_tokens=2_048)
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import fake_cuda\n\nfake_cuda.install()\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    logs = {name: root / f"log-{name}" for name in ("run", "eval")}
    for folder in logs.values():
        folder.mkdir()
    golf_ok(
        "run", "--track", "fixed-data", "--scale", "dev", "--backend", "torch", "--model", "llama", "--preset",
        "tiny", *MICRO, "--set", "train_batch_tokens=1024", "--budget", 3072, "--checkpoint-every", 1,
        "--val-points", 0, "--eval-stride", 256, "--data", data, "--out", root / "runs", "--run-id", RUN_ID,
        "--nproc-per-node", 2, "--json",
        env={**env, LOG_ENV: str(logs["run"])}, timeout=600,
    )  # fmt: skip
    run_dir = root / "runs" / "fixed-data" / "dev" / RUN_ID
    res = golf_ok(
        "eval", run_dir / "artifact.golf", "--data", data, "--stride", 256, "--nproc-per-node", 2, "--json",
        env={**env, LOG_ENV: str(logs["eval"])}, timeout=600,
    )  # fmt: skip
    return run_dir, _records(logs["run"]), _records(logs["eval"]), json.loads(res.stdout)


def _problems(records: list[dict], local_rank: int) -> list[str]:
    """What breaks this rank's device contract (empty: none), each problem once."""
    mine, out = f"cuda:{local_rank}", []
    sets = [i for i, r in enumerate(records) if r["event"] == "set_device"]
    colls = [i for i, r in enumerate(records) if r["event"] == "collective"]
    inits = [i for i, r in enumerate(records) if r["event"] == "init_process_group"]
    if not colls or len(inits) != 1:
        return [f"rank {local_rank}: {len(colls)} collectives, {len(inits)} process groups"]
    init = records[inits[0]]
    if (init["backend"], init["device_id"]) != ("nccl", mine):
        out.append(f"rank {local_rank}: init_process_group({init['backend']!r}, device_id={init['device_id']})")
    if not sets or sets[0] > min(inits[0], colls[0]):
        out.append(f"rank {local_rank}: set_device came after the process group or the first collective")
    if {records[i]["device"] for i in sets} != {mine}:
        out.append(f"rank {local_rank}: set_device to {sorted({records[i]['device'] for i in sets})}")
    for r in (records[i] for i in colls):
        wrong = f"rank {local_rank}: {r['op']} given tensors on {sorted(set(r['devices']))}"
        if not set(r["devices"]) <= {mine} and wrong not in out:
            out.append(wrong)
        if r.get("device_ids", [local_rank]) != [local_rank]:
            out.append(f"rank {local_rank}: {r['op']} with device_ids {r['device_ids']}")
    # every tensor of the process (model, optimizer state, batches, scorer, control values) on its own device
    placed = [r["devices"] for r in records if r["event"] == "placements"]
    if placed != [[mine]]:
        out.append(f"rank {local_rank}: tensors placed on {placed}")
    return out


def test_every_collective_of_a_run_uses_its_ranks_device(fake_runs):
    _, run, _, _ = fake_runs
    assert sorted(run) == [0, 1]
    assert [r["local_rank"] for rank in (0, 1) for r in run[rank]] == [0] * len(run[0]) + [1] * len(run[1])
    problems = [p for rank in (0, 1) for p in _problems(run[rank], rank)]
    assert not problems, "\n".join(problems)
    for rank, records in run.items():
        # at least each of the 3 steps' one sync (an all-gather of process 0's decision and the loss shares) and
        # Muon's update exchange (an all-reduce per step)
        ops = [r["op"] for r in records if r["event"] == "collective" and r["devices"]]
        assert ops.count("all_gather") >= 3 and ops.count("all_reduce") >= 3, ops
        [ddp] = [r for r in records if r["event"] == "ddp"]
        assert (ddp["device_ids"], ddp["param_devices"]) == ([rank], [f"cuda:{rank}"])


def test_every_collective_of_an_eval_uses_its_ranks_device(fake_runs):
    _, _, ev, result = fake_runs
    assert sorted(ev) == [0, 1] and result["world_size"] == 2
    problems = [p for rank in (0, 1) for p in _problems(ev[rank], rank)]
    assert not problems, "\n".join(problems)
    for records in ev.values():  # the final sums: one all-gather of float64 values
        assert any(r["op"] == "all_gather" and r["devices"] for r in records if r["event"] == "collective")


def test_the_hardware_class_counts_the_processes_not_the_visible_devices(fake_runs):
    run_dir, *_ = fake_runs
    hw = json.loads((run_dir / "run.json").read_text())["hardware"]
    assert (hw["class"], hw["count"], hw["world_size"]) == ("2xH100-SXM", 2, 2)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["hardware_class"] == "2xH100-SXM" and result["status"] == "ok"
