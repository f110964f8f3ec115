"""What a researcher really types: usage errors, --resume with extra flags, a moved run directory, verify from
another folder. Each bad input is one line, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
from golf_helpers import RUN_ARGS, files_under, golf, golf_ok, one_line_error, small_dataset


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "--nproc-pre-node", "2"], ["No such option: --nproc-pre-node", "golf run --help"]),
        (["compare"], ["Missing argument", "golf compare --help"]),
        (["run", "--seed", "x"], ["golf run --help"]),
    ],
)
def test_usage_errors_are_one_line(args, needles, tmp_path):
    res = golf(*args, cwd=tmp_path)
    one_line_error(res, *needles)
    assert res.returncode == 2 and files_under(tmp_path) == set()


def test_compare_help_renders():
    res = golf_ok("compare", "--help")
    assert "model[/preset]@backend" in res.stdout


@pytest.fixture(scope="module")
def finished(shakespeare_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hygiene")
    data = small_dataset(shakespeare_dir, root / "shakespeare_sp1024")
    out = root / "runs"
    golf_ok("run", *RUN_ARGS, "--data", data, "--budget", "4096", "--out", out, "--run-id", "r", "--json")
    return root, data, out / "fixed-data" / "dev" / "r"


def test_resume_refuses_flags_it_would_ignore(finished):
    _, data, d = finished
    res = golf("run", "--resume", d, "--data", data, "--set", "num_layers=2")
    one_line_error(res, "--resume continues a run with the settings in its run.json", "--data", "--set")


def test_resume_of_a_moved_run_directory_names_the_layout(finished, tmp_path):
    _, _, d = finished
    moved = tmp_path / "somewhere"
    shutil.copytree(d, moved)
    res = golf("run", "--resume", moved)
    one_line_error(res, "OUT/fixed-data/dev/RUN_ID")


def test_verify_works_from_another_directory(finished, tmp_path):
    _, _, d = finished
    manifest = json.loads((d / "run.json").read_text())
    assert manifest["dataset"]["dir"].startswith("/")  # recorded absolute
    res = golf("verify", d, cwd=tmp_path)
    assert res.returncode == 0, res.stderr


def test_verify_without_the_dataset_says_pass_data_once(finished, tmp_path):
    root, data, d = finished
    copy = tmp_path / "runs" / "fixed-data" / "dev" / "r"
    shutil.copytree(d, copy)
    manifest = json.loads((copy / "run.json").read_text())
    manifest["dataset"]["dir"] = str(tmp_path / "gone")
    (copy / "run.json").write_text(json.dumps(manifest))
    res = golf("verify", copy)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 1 and len(lines) == 1 and "pass --data" in lines[0], res.stderr
    assert golf("verify", copy, "--data", data).returncode == 0
