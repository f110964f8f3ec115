"""One code-bytes rule for every backend (harness/code.py): shared files + the model's own, every source file of
a backend package claimed by one or the other, and a snapshot of exactly those bytes in every run."""

from __future__ import annotations

import hashlib
import importlib
import json

import pytest
from golf_helpers import RUN_ARGS, golf, golf_ok, small_dataset

from golfbench.harness.backend import backend_names, get_backend


@pytest.mark.parametrize("name", backend_names())
def test_every_backend_source_file_is_counted_for_some_model(name):
    layout = get_backend(name).code_layout()
    assert layout.unclaimed() == [], f"backends/{name} files that count for no model: {layout.unclaimed()}"
    for model in get_backend(name).models():
        files = get_backend(name).code_files(model)
        assert [f.name for f in files[: len(layout.shared)]] == list(layout.shared)  # shared first, always
        assert all(f.is_file() for f in files)


def test_the_rule_is_the_same_for_both_backends_and_covers_the_whole_package():
    for name in backend_names():
        package = importlib.import_module(f"golfbench.backends.{name}")
        root = __import__("pathlib").Path(package.__file__).parent
        every = sorted(p.name for p in root.glob("*.py"))
        layout = get_backend(name).code_layout()
        counted = set(layout.shared).union(*layout.models.values())
        assert sorted(counted) == every  # nothing left out, nothing declared that does not exist


@pytest.mark.slow
def test_a_run_snapshots_its_code_and_export_verify_use_the_snapshot(shakespeare_dir, tmp_path):
    data = small_dataset(shakespeare_dir, tmp_path / "data")
    out = tmp_path / "runs"
    res = golf_ok(
        "run",
        *RUN_ARGS,
        "--backend",
        "torch",
        "--model",
        "llama",
        "--data",
        data,
        "--budget",
        "4096",
        "--out",
        out,
        "--run-id",
        "r",
        "--json",
    )
    result = json.loads(res.stdout)
    d = out / "fixed-data" / "dev" / "r"
    manifest = json.loads((d / "run.json").read_text())
    snap = sorted((d / "code").iterdir())
    live = get_backend("torch").code_files("llama")
    assert [p.name for p in snap] == sorted(p.name for p in live)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(snap, sorted(live, key=lambda f: f.name)))
    assert result["code_bytes"] == sum(len(p.read_bytes()) for p in snap)  # counted independently here
    assert manifest["code_sha256"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in snap}

    # verify recounts the snapshot: an edited snapshot file is a mismatch
    golf_ok("verify", d)
    victim = d / "code" / "optim.py"
    original = victim.read_bytes()
    victim.write_bytes(original + b"# one more line\n")
    bad = golf("verify", d)
    assert bad.returncode == 1 and "code" in bad.stderr and "optim.py" in bad.stderr, bad.stderr
    victim.write_bytes(original)

    # export ships the snapshot, not today's working tree
    rec = tmp_path / "records"
    golf_ok("export", d, "--out", rec)
    shipped = sorted((rec / "src").iterdir())
    assert [p.read_bytes() for p in shipped] == [p.read_bytes() for p in snap]
    sub = json.loads((rec / "submission.json").read_text())
    assert sub["bytes_code"] == result["code_bytes"]
    golf_ok("validate-submission", rec)
