"""Bad input, clear error (issue 6.1), through the real CLI: one line naming the file or value and what to do,
a non-zero exit, no traceback, and nothing written anywhere.

Each data case damages a private copy of a small real dataset and is checked twice: `golf data verify` reports
the problem, and `golf run` refuses before it creates a run directory. Artifact cases go through `golf eval`,
`golf artifact inspect` and `golf artifact unpack`; track cases through GOLF_TRACKS_DIR.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import zstandard
from golf_helpers import ROOT, RUN_ARGS, files_under, golf, golf_ok, one_line_error, rewrite_manifest, small_dataset

from golfbench.harness import artifact as art
from golfbench.harness.data.manifest import sha256_file
from golfbench.harness.data.shards import HEADER_BYTES, write_shard
from golfbench.harness.data.tokenizer import train_tokenizer
from golfbench.harness.init import init_weights
from golfbench.harness.models import get_spec

TRAIN = "shakespeare_train_000000.bin"
VAL = "shakespeare_val_000000.bin"
FIX = ("rebuild", "re-download", "re-fetch")


@pytest.fixture(scope="module")
def base(shakespeare_dir: Path, tmp_path_factory) -> Path:
    return small_dataset(shakespeare_dir, tmp_path_factory.mktemp("hostile") / "shakespeare_sp1024")


# ----------------------------------------------------------------------------------------------------------
# datasets


def _patch(path: Path, offset: int, value: int, nbytes: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset : offset + nbytes] = value.to_bytes(nbytes, "little")
    path.write_bytes(bytes(raw))


def _rehash(d: Path) -> None:
    """Make the manifest agree with the files again, so only the damage under test is wrong."""

    def edit(m):
        for s in m["shards"]:
            s["sha256"] = sha256_file(d / s["file"])
        m["tokenizer_sha256"] = sha256_file(d / m["tokenizer"])

    rewrite_manifest(d, edit)


def truncated(d):
    raw = (d / TRAIN).read_bytes()
    (d / TRAIN).write_bytes(raw[: len(raw) // 2 + 1])


def truncated_header(d):
    (d / TRAIN).write_bytes((d / TRAIN).read_bytes()[:100])


def bad_magic(d):
    _patch(d / TRAIN, 0, 20240521, 4)


def bad_version(d):
    _patch(d / TRAIN, 4, 7, 4)


def count_not_size(d):
    _patch(d / TRAIN, 8, 30_000, 4)  # the file holds 24,000 tokens


def id_over_vocab(d):
    _patch(d / TRAIN, HEADER_BYTES + 2 * 500, 4000, 2)
    _rehash(d)


def sha_differs(d):
    _patch(d / TRAIN, HEADER_BYTES + 2 * 500, 17, 2)  # a valid id, just not the built one


def no_tokenizer(d):
    (d / "tokenizer.model").unlink()


def garbage_tokenizer(d):
    (d / "tokenizer.model").write_bytes(b"\x00not a sentencepiece model\xff" * 10)
    _rehash(d)


def other_vocab_tokenizer(d):
    text = "\n".join(f"the quick brown fox {i} jumps over the lazy dog." for i in range(3000))
    train_tokenizer([text], d / "tokenizer.model", vocab_size=320)
    _rehash(d)


def empty_val(d):
    write_shard(d / VAL, np.zeros(0, dtype=np.uint16))
    _rehash(d)
    rewrite_manifest(
        d, lambda m: ([s.update(tokens=0) for s in m["shards"] if s["split"] == "val"], m["docs"].update(val=[]))
    )


def partial_manifest(d):
    raw = (d / "manifest.json").read_bytes()
    (d / "manifest.json").write_bytes(raw[: len(raw) // 2])


DATA_CASES = {
    # case: (damage, file named in the message ("" = the dataset folder), what is wrong)
    "truncated-shard": (truncated, TRAIN, "truncated or corrupt"),
    "truncated-header": (truncated_header, TRAIN, "shorter than the 1024-byte header"),
    "bad-magic": (bad_magic, TRAIN, "bad magic 20240521"),
    "bad-version": (bad_version, TRAIN, "unsupported version 7"),
    "count-not-size": (count_not_size, TRAIN, "header says 30000 tokens"),
    "token-id-over-vocab": (id_over_vocab, TRAIN, "token id 4000 >= vocab size 1024"),
    "sha256-differs": (sha_differs, TRAIN, "sha256 differs from manifest.json"),
    "missing-tokenizer": (no_tokenizer, "tokenizer.model", "is missing"),
    "unreadable-tokenizer": (garbage_tokenizer, "tokenizer.model", "not a readable SentencePiece model"),
    "tokenizer-vocab-differs": (other_vocab_tokenizer, "tokenizer.model", "has vocab 320 but manifest.json says 1024"),
    "empty-val-split": (empty_val, "", "val split has fewer than 2 tokens"),
    "partial-manifest": (partial_manifest, "manifest.json", "is not valid JSON"),
}


@pytest.fixture
def damaged(base: Path, tmp_path: Path):
    def make(case: str) -> Path:
        d = Path(shutil.copytree(base, tmp_path / "data" / "shakespeare_sp1024"))
        DATA_CASES[case][0](d)
        return d

    return make


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_damaged_dataset_is_named_by_verify_and_refused_by_run(case: str, damaged, tmp_path: Path) -> None:
    _, name, what = DATA_CASES[case]
    d = damaged(case)
    name = str(d / name) if name else str(d)
    before = {p: (d / p).read_bytes() for p in files_under(d) if (d / p).is_file()}

    res = golf("data", "verify", d)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    problems = [line for line in res.stderr.splitlines() if line.strip()]
    assert problems and all(line.startswith(("problem: ", "error: ")) for line in problems), res.stderr
    hit = [line for line in problems if name in line and what in line]
    assert hit and any(fix in hit[0] for fix in FIX), problems

    out = tmp_path / "runs"
    line = one_line_error(golf("run", *RUN_ARGS, "--data", d, "--budget", "4096", "--out", out), name, what)
    assert any(fix in line for fix in FIX), line
    assert not out.exists(), files_under(out)
    assert {p: (d / p).read_bytes() for p in files_under(d) if (d / p).is_file()} == before  # read-only


# ----------------------------------------------------------------------------------------------------------
# names and values


BAD_VALUES = [
    (["--track", "sprint"], ["unknown track 'sprint'", "fixed-data, flop-budget, wallclock-10min"]),
    (["--scale", "huge"], ["unknown scale 'huge'", "official or dev"]),
    (["--model", "gpt5"], ["unknown model 'gpt5'", "llama, megalodon"]),
    (["--preset", "huge"], ["unknown preset 'huge' for model 'llama'", "baseline, tiny"]),
    (["--backend", "tensorflow"], ["unknown backend 'tensorflow'", "jax, torch"]),
    (["--run-id", "../escaped"], ["invalid run id '../escaped'", "no path separators or '..'"]),
    (["--run-id", "a/b"], ["invalid run id 'a/b'"]),
    (["--run-id", ".."], ["invalid run id '..'"]),
    (["--preset", "../../tiny"], ["invalid preset '../../tiny'"]),
    (["--track", "../tracks/fixed-data"], ["invalid track '../tracks/fixed-data'"]),
    (["--budget", "-4096"], ["--budget must be a positive finite number, got '-4096'"]),
    (["--budget", "lots"], ["--budget 'lots' is not a number"]),
    (["--eval-stride", "0"], ["--eval-stride must be a positive number of tokens, got 0"]),
    (["--set", "num_layers=four"], ["config key 'num_layers' of model 'llama' must be int, got 'four'"]),
    (["--set", "depth=4"], ["unknown config key 'depth' for model 'llama'"]),
]


@pytest.mark.parametrize("args, needles", BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_bad_names_and_values_are_refused_before_anything_is_written(args, needles, base: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    out = work / "deep" / "runs"
    opts = {"--model": "llama", "--backend": "torch", "--budget": "4096", "--eval-stride": "256"}
    cmd = ["run", "--track", "fixed-data", "--scale", "dev", "--data", base, "--out", out]
    for flag, default in opts.items():
        if flag not in args:
            cmd += [flag, default]
    one_line_error(golf(*cmd, *args), *needles)
    assert not work.exists(), files_under(work)  # not even ../escaped beside the runs folder


# ----------------------------------------------------------------------------------------------------------
# tracks (GOLF_TRACKS_DIR)

GOOD_TRACK = (Path(__file__).resolve().parent.parent / "tracks" / "fixed-data.toml").read_text()


@pytest.mark.parametrize(
    "toml, needles",
    [
        (
            GOOD_TRACK.replace('budget_kind = "tokens"', 'budget_kind = "tokens'),
            ["is malformed TOML", "fix or restore it"],
        ),
        (GOOD_TRACK.replace('budget_kind = "tokens"\n', ""), ["is missing or has a bad field ('budget_kind')"]),
        (
            GOOD_TRACK.replace('budget_kind = "tokens"', 'budget_kind = "joules"'),
            ["budget_kind 'joules' must be one of"],
        ),
        (GOOD_TRACK.replace("budget = 262_144", "budget = -1"), ["[dev] budget and eval_stride must be positive"]),
        (GOOD_TRACK.replace("budget = 262_144", 'budget = "lots"'), ["is missing or has a bad field"]),
        (GOOD_TRACK.replace('name = "fixed-data"', 'name = "../../evil"'), ["declares name '../../evil'"]),
        (b"\xff\xfe not utf-8", ["is malformed TOML"]),
    ],
    ids=["syntax", "missing-field", "bad-kind", "negative-budget", "budget-not-a-number", "name-mismatch", "binary"],
)
def test_malformed_track_file_is_named(toml, needles, base: Path, tmp_path: Path) -> None:
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    path = tracks / "fixed-data.toml"
    path.write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    env = {"GOLF_TRACKS_DIR": str(tracks)}
    out = tmp_path / "runs"
    one_line_error(
        golf("run", *RUN_ARGS, "--data", base, "--budget", "4096", "--out", out, env=env), str(path), *needles
    )
    assert not out.exists()
    one_line_error(golf("tracks", env=env), str(path), *needles)


def test_tracks_folder_from_the_environment(tmp_path: Path) -> None:
    tracks = tmp_path / "tracks"
    tracks.mkdir()
    (tracks / "sprint.toml").write_text(GOOD_TRACK.replace('name = "fixed-data"', 'name = "sprint"'))
    listed = json.loads(golf_ok("tracks", "--json", env={"GOLF_TRACKS_DIR": str(tracks)}).stdout)
    assert [t["name"] for t in listed] == ["sprint"]
    one_line_error(
        golf("tracks", env={"GOLF_TRACKS_DIR": str(tmp_path / "nope")}),
        str(tmp_path / "nope"),
        "GOLF_TRACKS_DIR",
        "does not exist",
    )


# ----------------------------------------------------------------------------------------------------------
# artifacts: never executed, sizes checked before allocation, decompression bounded


class _Payload:
    """Unpickling this creates a folder: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def _container(header: dict, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def _llama_tiny(edit=None) -> bytes:
    spec = get_spec("llama")
    cfg = spec.config("tiny")
    weights = init_weights(spec, cfg, 0)
    if edit:
        edit(weights)
    return art.pack(weights, spec.is_control, {"model": "llama", "preset": "tiny", "config": cfg, "backend": "torch"})


@pytest.fixture(scope="module")
def good_artifact(tmp_path_factory) -> bytes:
    blob = _llama_tiny()
    assert art.unpack(blob)[1]["model"] == "llama"
    return blob


def _bomb() -> bytes:
    c = zstandard.ZstdCompressor(level=3).compressobj()
    chunk = b"\0" * (1 << 20)
    parts = [c.compress(chunk) for _ in range(art.MAX_DECOMPRESSED // len(chunk) + 2)]
    return b"".join(parts) + c.flush()


def _artifact_cases(tmp: Path, good: bytes) -> dict:
    marker = tmp / "EXECUTED"
    evil = pickle.dumps({"weights": _Payload(marker)}, protocol=4)
    zipped = tmp / "zip.bin"
    with zipfile.ZipFile(zipped, "w") as z:  # the torch.save layout: a zip holding data.pkl
        z.writestr("archive/data.pkl", evil)
    flipped = bytearray(good)
    for i in range(64, len(flipped), 101):
        flipped[i] ^= 0xFF
    huge = {
        "w": {"dtype": "F32", "shape": [25_000_000_000], "data_offsets": [0, 100_000_000_000]},
        "__metadata__": {"format": art.FORMAT, "codec": "int8", "tensors": "{}"},
    }
    wraps = {
        "w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]},
        "__metadata__": {"format": art.FORMAT, "codec": "int8", "tensors": "{}"},
    }
    safetensors_plain = art._safetensors_bytes({"w": np.zeros(3, np.float32)}, {"format": art.FORMAT})
    z = zstandard.ZstdCompressor().compress
    return {
        # case: (bytes, what the message says)
        "pickle": (evil, "is a pickle / torch.save file"),
        "torch-save-zip": (zipped.read_bytes(), "is a pickle / torch.save file"),
        "zstd-of-a-pickle": (z(evil), "artifact is corrupt: container header claims"),
        "truncated-zstd": (good[: len(good) // 2], "artifact is truncated or corrupt"),
        "corrupt-zstd": (bytes(flipped), "artifact is truncated or corrupt"),
        "not-zstd": (safetensors_plain, "no zstd frame magic"),
        "100GB-tensor-header": (z(_container(huge, b"\0" * 64)), "refusing to allocate"),
        "dims-overflow-int64": (z(_container(wraps)), "refusing to allocate"),
        "zstd-bomb": (_bomb(), "decompression bomb"),
    }, marker


@pytest.fixture(scope="module")
def artifact_cases(tmp_path_factory, good_artifact):
    tmp = tmp_path_factory.mktemp("artifacts")
    cases, marker = _artifact_cases(tmp, good_artifact)
    paths = {}
    for name, (blob, what) in cases.items():
        paths[name] = (tmp / f"{name}.golf", what)
        paths[name][0].write_bytes(blob)
    return paths, marker


ARTIFACT_HINTS = ("re-create", "re-download", "written by `golf run`", "is this the right file?")
ARTIFACT_CASES = [
    "pickle",
    "torch-save-zip",
    "zstd-of-a-pickle",
    "truncated-zstd",
    "corrupt-zstd",
    "not-zstd",
    "100GB-tensor-header",
    "dims-overflow-int64",
    "zstd-bomb",
]


@pytest.mark.parametrize("case", ARTIFACT_CASES)
def test_hostile_artifact_is_refused_by_eval_and_inspect(case, artifact_cases, base: Path, tmp_path: Path) -> None:
    paths, marker = artifact_cases
    path, what = paths[case]
    work = tmp_path / "work"
    work.mkdir()
    cmds = [["eval", path, "--data", base, "--stride", "256"], ["artifact", "inspect", path]]
    if case == "pickle":
        cmds.append(["artifact", "unpack", path, "--out", work / "weights.safetensors"])
    for cmd in cmds:
        line = one_line_error(golf(*cmd, cwd=work), f"{path}: ", what)
        assert any(hint in line for hint in ARTIFACT_HINTS), line
        assert not marker.exists(), "unpickling ran code from the artifact"
        assert files_under(work) == set()


def test_artifact_whose_tensors_do_not_match_the_spec(base: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.golf"
    missing.write_bytes(_llama_tiny(lambda w: w.pop("blocks.3.mlp.proj.weight")))
    one_line_error(
        golf("eval", missing, "--data", base, "--stride", "256"),
        f"{missing}: weights do not match llama",
        "missing ['blocks.3.mlp.proj.weight']",
        "another model/preset",
    )
    reshaped = tmp_path / "reshaped.golf"
    reshaped.write_bytes(_llama_tiny(lambda w: w.update({"tok_emb.weight": np.zeros((1024, 64), np.float32)})))
    one_line_error(
        golf("eval", reshaped, "--data", base, "--stride", "256"), f"{reshaped}: ", "tok_emb.weight", "(1024, 64)"
    )
    assert files_under(tmp_path) == {"missing.golf", "reshaped.golf"}


def test_artifact_over_the_cap_and_missing_files(good_artifact: bytes, tmp_path: Path) -> None:
    path = tmp_path / "model.golf"
    path.write_bytes(good_artifact)
    code = tmp_path / "big_model.py"
    code.write_bytes(b"#" * (art.CAP_BYTES - len(good_artifact) + 1))
    res = golf("artifact", "inspect", path, "--code", code)
    one_line_error(res, str(path), f"totals {art.CAP_BYTES + 1:,} bytes", "over the 16,000,000-byte cap", "shrink")
    assert "OVER THE CAP" in res.stdout
    code.write_bytes(b"#" * (art.CAP_BYTES - len(good_artifact)))  # the cap is inclusive
    assert "under the cap" in golf_ok("artifact", "inspect", path, "--code", code).stdout
    one_line_error(
        golf("artifact", "inspect", path, "--code", tmp_path / "nope.py"), "nope.py", "cannot read code file"
    )
    one_line_error(golf("artifact", "inspect", tmp_path / "nope.golf"), "cannot read artifact", "nope.golf")
    assert files_under(tmp_path) == {"model.golf", "big_model.py"}


# ----------------------------------------------------------------------------------------------------------
# leaderboard over a runs folder with malformed results


@pytest.fixture(scope="module")
def finished_run(base: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    golf_ok(
        "run",
        *RUN_ARGS,
        "--backend",
        "torch",
        "--model",
        "llama",
        "--preset",
        "tiny",
        "--data",
        base,
        "--budget",
        "4096",
        "--out",
        out,
        "--run-id",
        "good",
    )
    return out / "fixed-data" / "dev" / "good"


def test_leaderboard_skips_malformed_results_and_prints_the_rest(finished_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    board_dir = runs / "fixed-data" / "dev"
    shutil.copytree(finished_run, board_dir / "good")
    good = json.loads((finished_run / "result.json").read_text())
    text = (finished_run / "result.json").read_text()
    bad = {
        "partial": text[: len(text) // 2],
        "empty": "",
        "not-an-object": "[1, 2, 3]",
        "missing-fields": json.dumps({"status": "ok", "val_bpb": 0.1}),
        "bpb-not-a-number": json.dumps({**good, "val_bpb": "0.1"}),
        "unknown-status": json.dumps({**good, "status": "great"}),
        "seed-not-a-number": json.dumps({**good, "seed": "zero"}),
        "bytes-null": json.dumps({**good, "artifact_bytes": None}),
        "binary": "\udcff\udcfe",
    }
    for name, body in bad.items():  # whole run directories whose result.json alone is damaged
        shutil.copytree(finished_run, board_dir / name)
        (board_dir / name / "result.json").write_bytes(body.encode("utf-8", "surrogateescape"))
    before = files_under(runs)
    res = golf("leaderboard", "--runs", runs, "--include-unofficial")
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(warnings) == len(bad) and all(line.startswith("warning: skipped ") for line in warnings), res.stderr
    for name in bad:
        assert sum(f"/{name}/result.json" in line for line in warnings) == 1, (name, warnings)
    assert "Traceback" not in res.stderr
    assert "| 1 | llama/tiny" in res.stdout and f"{good['val_bpb']:.4f}" in res.stdout
    assert files_under(runs) == before
    board = json.loads(golf_ok("leaderboard", "--runs", runs, "--include-unofficial", "--format", "json").stdout)
    assert [e["run_dirs"] for b in board["boards"] for e in b["entries"]] == [[str(board_dir / "good")]]
    assert len(board["warnings"]) == len(bad)


# ----------------------------------------------------------------------------------------------------------
# static: nothing that loads files can execute code from them

CODE_EXECUTING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _unsafe_calls(source: str, label: str) -> list[str]:
    """Imports of unpickling modules, eval/exec, allow_pickle other than False, torch.load without weights_only."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, filename=label)):
        where = f"{label}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} imports {a.name}" for a in node.names if a.name.split(".")[0] in CODE_EXECUTING_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in CODE_EXECUTING_MODULES:
            found.append(f"{where} imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            owner = getattr(getattr(func, "value", None), "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            if isinstance(func, ast.Name) and func.id in ("eval", "exec", "__import__"):
                found.append(f"{where} calls {func.id}()")
            if "allow_pickle" in kw and not (
                isinstance(kw["allow_pickle"], ast.Constant) and kw["allow_pickle"].value is False
            ):
                found.append(f"{where} passes allow_pickle other than False")
            if isinstance(func, ast.Attribute) and func.attr == "load" and owner == "torch":
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    found.append(f"{where} calls torch.load without weights_only=True")
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "load"
                and owner in ("np", "numpy")
                and "allow_pickle" not in kw
            ):
                found.append(f"{where} calls np.load without allow_pickle=False")
    return found


def test_no_code_path_can_unpickle_or_eval() -> None:
    files = sorted(p for d in ("harness", "backends") for p in (ROOT / d).rglob("*.py"))
    assert ROOT / "harness" / "artifact.py" in files and ROOT / "backends" / "torch" / "backend.py" in files
    problems = [p for f in files for p in _unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert problems == [], problems
    # The scan sees each thing it looks for (and not a model's `.eval()` mode switch).
    probe = "import pickle\nimport numpy as np, torch\neval('1')\nnp.load('x', allow_pickle=True)\ntorch.load('y')\nm.eval()\n"
    assert _unsafe_calls(probe, "probe.py") == [
        "probe.py:1 imports pickle",
        "probe.py:3 calls eval()",
        "probe.py:4 passes allow_pickle other than False",
        "probe.py:5 calls torch.load without weights_only=True",
    ]
