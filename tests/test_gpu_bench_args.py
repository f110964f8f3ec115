"""bench/gpu.py refuses nonsense up front (bench/gpu_args.py) and computes MFU against the detected part's bf16 peak
(PEAK_BF16 keyed by golfbench.harness.hardware.part_name). No GPU and no measurement: the checks and the table."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from golf_helpers import ENV, files_under, one_line_error

from golfbench.harness.bundle import BENCH_FILES
from golfbench.harness.hardware import PARTS

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bench(*args, script=ROOT / "bench" / "gpu.py", cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )


# (flags, words the one error line must hold): every numeric flag, below and at its limit, nan/inf, not a number
BAD = [
    (["--steps", "-1"], ["--steps", "-1 is out of range", "whole number >= 1"]),
    (["--steps", "0"], ["--steps", "0 is out of range"]),
    (["--steps", "2.5"], ["--steps", "'2.5' is not a whole number"]),
    (["--warmup", "0"], ["--warmup", "0 is out of range", ">= 1"]),
    (["--warmup", "-3"], ["--warmup", "out of range"]),
    (["--budget-s", "nan"], ["--budget-s", "nan is out of range", "finite number of seconds > 1"]),
    (["--budget-s", "inf"], ["--budget-s", "inf is out of range"]),
    (["--budget-s", "0"], ["--budget-s", "0 is out of range"]),
    (["--budget-s", "-5"], ["--budget-s", "-5 is out of range"]),
    (["--budget-s", "1"], ["--budget-s", "1 is out of range"]),  # the loop starts nothing with <= 1 s left
    (["--peak-tflops", "-1"], ["--peak-tflops", "-1 is out of range", "> 0"]),
    (["--peak-tflops", "0"], ["--peak-tflops", "0 is out of range"]),
    (["--peak-tflops", "nan"], ["--peak-tflops", "out of range"]),
    (["--peak-tflops", "x"], ["--peak-tflops", "'x' is not a number"]),
    (["--pg-step-ms", "0"], ["--pg-step-ms", "0 is out of range", "milliseconds"]),
    (["--pg-step-ms", "-43.5"], ["--pg-step-ms", "out of range"]),
    (["--pg-step-ms", "inf"], ["--pg-step-ms", "out of range"]),
    (["--eval-tokens", "0"], ["--eval-tokens", "0 is out of range"]),
    (["--eval-tokens", "1"], ["--eval-tokens", "1 is out of range"]),
]


@pytest.mark.parametrize("flags, needles", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_every_numeric_flag_is_checked(flags, needles, tmp_path, capsys):
    ap = _load("gpu_args").parser("gpu bench")
    with pytest.raises(SystemExit) as exc:
        ap.parse_args(["--out", str(tmp_path / "g.json"), *flags])
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: argument "), lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert files_under(tmp_path) == set()


def test_good_flags_parse_to_their_values(tmp_path):
    ap = _load("gpu_args").parser("gpu bench")
    args = ap.parse_args(["--out", str(tmp_path / "g.json"), "--steps", "1", "--warmup", "1", "--budget-s", "1.5",
                          "--peak-tflops", "0.5", "--pg-step-ms", "43.5", "--eval-tokens", "2"])  # fmt: skip
    assert (args.steps, args.warmup, args.budget_s, args.peak_tflops) == (1, 1, 1.5, 0.5)
    assert (args.pg_step_ms, args.eval_tokens, args.out) == (43.5, 2, str(tmp_path / "g.json"))
    defaults = ap.parse_args(["--out", str(tmp_path / "g.json")])
    assert (defaults.steps, defaults.warmup, defaults.budget_s, defaults.peak_tflops) == (10, 3, 480.0, None)


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--steps", "-1"], ["argument --steps: -1 is out of range"]),
        (["--budget-s", "nan"], ["argument --budget-s: nan is out of range"]),
        (["--peak-tflops", "0"], ["argument --peak-tflops: 0 is out of range"]),
        (["--smoke", "--eval-tokens", "256"], ["--eval-tokens: 256 tokens do not fill one 256-token", "at least 257"]),
        (["--smoke", "--only", "train:nope@torch"], ["unknown --only", "train:llama/tiny@torch"]),
    ],
)
def test_the_script_refuses_bad_flags_in_one_line_with_nothing_written(flags, needles, tmp_path):
    res = _bench("--out", tmp_path / "g.json", *flags, cwd=tmp_path)
    one_line_error(res, *needles)
    assert res.returncode == 2 and res.stdout == "" and files_under(tmp_path) == set()


def test_out_must_be_a_file_in_an_existing_folder(tmp_path):
    res = _bench("--out", tmp_path / "no" / "dir" / "g.json", cwd=tmp_path)
    one_line_error(res, "argument --out: folder", "no/dir does not exist", "create it first")
    assert res.returncode == 2 and files_under(tmp_path) == set()  # the folder was not created
    res = _bench("--out", tmp_path, cwd=tmp_path)
    one_line_error(res, "is a folder", "gpu.json")
    assert res.returncode == 2 and files_under(tmp_path) == set()


def test_the_bundled_bench_folder_is_enough_to_run_the_script(tmp_path):
    """The bundle ships BENCH_FILES: gpu.py must find its argument module there (a bad flag needs it)."""
    (tmp_path / "bench").mkdir()
    for f in BENCH_FILES:
        shutil.copy2(ROOT / "bench" / f, tmp_path / "bench" / f)
    res = _bench("--out", tmp_path / "g.json", "--steps", "0", script=tmp_path / "bench" / "gpu.py", cwd=tmp_path)
    one_line_error(res, "argument --steps: 0 is out of range")


@pytest.mark.parametrize(
    "device, peak, part",
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12, "H100-SXM"),
        ("NVIDIA H100 PCIe", 756e12, "H100-PCIe"),  # the old substring match gave the SXM's 989.4
        ("NVIDIA H100 NVL", 835e12, "H100-NVL"),
        ("NVIDIA H200", 989.4e12, "H200-SXM"),
        ("NVIDIA H200 NVL", 835e12, "H200-NVL"),
        ("NVIDIA A100-SXM4-80GB", 312e12, "A100-SXM-80GB"),
        ("NVIDIA A100-PCIE-40GB", 312e12, "A100-PCIe-40GB"),
    ],
)
def test_peak_is_the_parts_bf16_dense_peak(device, peak, part):
    gpu = _load("gpu")
    assert gpu.peak_flops(device) == (peak, f"table: {part}")


def test_peak_table_is_keyed_by_part_names_and_unknown_parts_get_no_mfu():
    gpu = _load("gpu")
    assert set(gpu.PEAK_BF16) == set(PARTS.values())  # the one device-name table, every part priced
    for device in ("NVIDIA GH200 480GB", "NVIDIA H100 80GB HBM3e", "cpu", "Tesla V100-SXM2-16GB"):
        peak, source = gpu.peak_flops(device)  # "GH200"/"H100" substrings matched the old table
        assert peak is None and "unknown part" in source and "--peak-tflops" in source, (device, source)
    assert gpu.peak_flops("NVIDIA GH200 480GB", 989.4) == (989.4e12, "--peak-tflops")
    assert gpu.peak_flops("NVIDIA H100 PCIe", 0.5) == (0.5e12, "--peak-tflops")  # the override wins
    for bad in (0.0, -1.0, float("nan")):  # 0 was silently ignored, -1 used as given
        with pytest.raises(ValueError, match="--peak-tflops must be a finite number > 0"):
            gpu.peak_flops("NVIDIA H100 PCIe", bad)
