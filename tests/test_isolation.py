"""Isolation (issue 6.5): training never opens a val shard, warm-up never opens any shard, and `golf verify`
rejects a run whose dataset manifest shows a document in both train and val.

The stream-level guards are unit-tested in test_data.py (test_stream_never_opens_val); here a real run is
watched from inside with a Python audit hook that records every file the process opens, phase by phase.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from golf_helpers import ENV, ROOT, RUN_ARGS, golf, golf_ok, one_line_error, rewrite_manifest, small_dataset

from golfbench.harness.data.manifest import MANIFEST_NAME, sha256_file

# Runs one `golf run` in-process with an audit hook on every open(); the phase flips when the runner builds
# the batch stream (training) and when it exports the weights (evaluation). Prints {phase: [shard files]}.
DRIVER = """
import json, os, sys
from pathlib import Path
phase, opened = ["setup"], {}
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        name = Path(os.fsdecode(args[0])).name
        if name.endswith(".bin"):
            opened.setdefault(phase[0], set()).add(name)
sys.addaudithook(hook)
from golfbench.harness import runner
from golfbench.harness.backend import get_backend
backend = get_backend("torch")
def marked(name, fn):
    def wrapper(*a, **k):
        phase[0] = name
        out = fn(*a, **k)
        if name == "warmup":
            phase[0] = "after-warmup"
        return out
    return wrapper
backend.warmup = marked("warmup", backend.warmup)
backend.export = marked("eval", backend.export)
runner.BatchStream = marked("train", runner.BatchStream)
from golfbench.harness.cli import app
try:
    app(sys.argv[1:])
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps({k: sorted(v) for k, v in opened.items()}))
"""


@pytest.fixture(scope="module")
def watched_run(shakespeare_dir: Path, tmp_path_factory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("iso")
    data = small_dataset(shakespeare_dir, tmp / "shakespeare_sp1024")
    out = tmp / "runs"
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            "run",
            *RUN_ARGS,
            "--backend",
            "torch",
            "--model",
            "llama",
            "--data",
            str(data),
            "--budget",
            "8192",
            "--out",
            str(out),
            "--run-id",
            "iso",
            "--val-points",  # the val curve scores a val subset during training by design (untimed, no gradient);
            "0",  # this test watches the training data path alone
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return data, out / "fixed-data" / "dev" / "iso", json.loads(res.stdout.strip().splitlines()[-1])


def test_training_opens_only_train_shards(watched_run) -> None:
    _, run_dir, opened = watched_run
    train, val = "shakespeare_train_000000.bin", "shakespeare_val_000000.bin"
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 2
    assert "warmup" not in opened  # compile warm-up runs on synthetic tokens only
    assert opened["train"] == [train]  # the hook sees the stream's shards ...
    assert val in opened["eval"]  # ... and would see a val shard: evaluation opens it


def test_verify_rejects_a_run_whose_manifest_overlaps_train_and_val(watched_run, tmp_path: Path) -> None:
    data, run_dir, _ = watched_run
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    golf_ok("verify", run_dir)  # the untouched run verifies

    # The same data, but its manifest now lists a val document that is also a train document.
    overlap = Path(shutil.copytree(data, tmp_path / "shakespeare_sp1024"))

    def share_a_doc(m):
        m["docs"]["val"][0].update(name=m["docs"]["train"][0]["name"])

    rewrite_manifest(overlap, share_a_doc)
    manifest = json.loads((run / "run.json").read_text())
    # Record that manifest as the one the run used, so the overlap is the only thing wrong.
    manifest["dataset"].update(dir=str(overlap), manifest_sha256=sha256_file(overlap / MANIFEST_NAME))
    (run / "run.json").write_text(json.dumps(manifest))

    res = golf("verify", run)
    fails = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert len(fails) == 1, fails
    name = json.loads((overlap / MANIFEST_NAME).read_text())["docs"]["train"][0]["name"]
    assert fails[0].startswith("FAIL dataset: manifest.json: 1 document(s) in both train and val by name"), fails
    assert f"(first: {name})" in fails[0] and "rebuild" in fails[0]
    assert not (run / "verify.json").exists()  # no verification stamp for a failed run


def test_a_val_shard_listed_as_train_is_refused(watched_run, tmp_path: Path) -> None:
    data, _, _ = watched_run
    d = Path(shutil.copytree(data, tmp_path / "shakespeare_sp1024"))
    rewrite_manifest(d, lambda m: m["shards"].append({**m["shards"][1], "split": "train"}))
    out = tmp_path / "runs"
    one_line_error(
        golf("run", *RUN_ARGS, "--data", d, "--budget", "4096", "--out", out),
        "shard shakespeare_val_000000.bin is not named shakespeare_train_NNNNNN.bin",
    )
    assert not out.exists()
