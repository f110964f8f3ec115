"""Run directories, the event log, the run manifest and the result schema. Every write is atomic.

A run directory is `runs/<track>/<scale>/<run-id>/`: run.json, events.jsonl, artifact.golf, result.json,
loss.png, and checkpoint/ while a resumable run is in flight. A SIGKILL at any moment leaves each file
either absent or complete: JSON files are written to a temp file and renamed; events are appended one
whole line per write() call, and readers ignore a line that does not parse.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from golfbench.harness.errors import GolfError
from golfbench.harness.hardware import hardware_class
from golfbench.harness.models import check_name

STATUSES = ("ok", "over_budget", "diverged", "failed")
RESULT_FIELDS = (
    "status",
    "track",
    "scale",
    "backend",
    "model",
    "preset",
    "seed",
    "val_bpb",
    "val_loss",
    "val_nll_sum",
    "val_tokens",
    "val_bytes",
    "pre_quant_val_bpb",
    "artifact_bytes",
    "code_bytes",
    "model_bytes",
    "train_tokens",
    "train_flops",
    "train_seconds",
    "steps",
    "eval_seconds",
    "eval_stride",
    "unofficial",
)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync'd, then renamed over ``path``
    (parents created). A crash leaves the old file or the new one, never a mix; the temp file is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj)}")


def _sanitize(obj):
    # JSON has no NaN/inf: a diverged loss is recorded as null, never as an unparseable token.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def dumps(obj) -> str:
    """Canonical JSON of ``obj`` (indent 2, sorted keys): non-finite floats become null, numpy scalars plain
    numbers, paths strings. Raises TypeError for anything else JSON cannot hold.
    """
    return json.dumps(_sanitize(obj), indent=2, sort_keys=True, default=_json_default, allow_nan=False)


def dumps_line(obj) -> str:
    """`dumps` on one line: compact JSON (sorted keys, non-finite floats as null), no newline inside."""
    return json.dumps(_sanitize(obj), sort_keys=True, default=_json_default, allow_nan=False, separators=(",", ":"))


def atomic_write_json(path: Path, obj) -> None:
    """`dumps` ``obj`` plus a newline to ``path``, atomically (`atomic_write_bytes`)."""
    atomic_write_bytes(path, (dumps(obj) + "\n").encode("utf-8"))


def read_json(path: Path, what: str = "file") -> dict:
    """The JSON object in ``path``. Raises GolfError naming ``what`` and the path when the file is missing,
    unreadable, not valid JSON (perhaps partial) or not a JSON object.
    """
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GolfError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GolfError(
            f"{what} {path} is unreadable or not valid JSON ({exc.__class__.__name__}); it may be partial"
        ) from None
    if not isinstance(obj, dict):
        raise GolfError(f"{what} {path} is not a JSON object")
    return obj


class EventLog:
    """Append-only JSON lines; one os.write per line so a kill never leaves half a record."""

    def __init__(self, path: Path, listener=None) -> None:
        """``listener``: optional callable given each event once it is written (experiment tracking)."""
        self.path = Path(path)
        self.listener = listener

    def append(self, event: dict) -> None:
        """Append ``event`` as one JSON line (non-finite floats as null) with a single O_APPEND write, then hand
        it to the listener, if any."""
        line = (json.dumps(_sanitize(event), sort_keys=True, default=_json_default) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        if self.listener is not None:
            self.listener(event)

    def truncate_after(self, step: int) -> None:
        """On resume, drop events logged after the checkpoint we resume from (they will be redone)."""
        kept = [e for e in read_events(self.path) if e.get("step", 0) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in kept).encode())


def read_events(path: Path) -> list[dict]:
    """The events of a JSON-lines file, in order; lines that do not parse to an object are skipped (a missing file gives
    [])."""
    if not Path(path).exists():
        return []
    events = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events


def run_dir(out: Path, track: str, scale: str, run_id: str) -> Path:
    """``out/track/scale/run_id``. Raises GolfError when ``track``, ``scale`` or ``run_id`` is not a safe name
    (`check_name`: no path separators or traversal).
    """
    check_name("run id", run_id)
    return Path(out) / check_name("track", track) / check_name("scale", scale) / run_id


def default_run_id(
    model: str,
    preset: str,
    backend: str,
    seed: int,
    unofficial: bool,
    budget: float | None,
    choices: tuple[str, ...] = (),
) -> str:
    """``model-preset-backend-s<seed>``, plus ``-b<budget>`` (``%g``, without "+") for an unofficial run with an
    overridden budget (seconds, tokens or FLOPs by track), so such runs never overwrite official ones, plus each of
    ``choices`` (non-default submission choices such as a codec, a compressor or an adaptation recipe), so a run
    with another codec does not collide with the plain one.
    """
    rid = f"{model}-{preset}-{backend}-s{seed}"
    if unofficial and budget is not None:
        rid += f"-b{budget:g}".replace("+", "")
    for choice in choices:
        rid += f"-{choice}"
    return rid


# ----------------------------------------------------------------------------------------------------------
# provenance


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Python's version and those of golfbench and the libraries a result depends on (None where not installed)."""
    out = {"python": platform.python_version()}
    for pkg in ("golfbench", "numpy", "torch", "jax", "jaxlib", "flax", "optax", "sentencepiece", "zstandard"):
        out[pkg] = _version(pkg)
    return out


def git_info(repo: Path | None = None) -> dict:
    """``{"sha": HEAD commit, "dirty": uncommitted changes?}`` of ``repo`` (default: the folder above the harness
    package); both None when git is missing, times out (10 s) or the folder is not a repository.
    """
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None}


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(devices: dict) -> dict:
    """What ran the job, from a backend's ``devices()``, and its class for leaderboards (never mix classes on one
    board): "cpu", or the devices used × their part (``harness.hardware``: 8 processes on "NVIDIA H100 80GB HBM3"
    -> "8xH100-SXM"). ``count`` is the devices the run used (the world size × devices per process), not those
    visible."""
    kind = devices.get("kind", "cpu")
    count = int(devices.get("count", 1))
    names = devices.get("names") or []
    return {
        "class": hardware_class(kind, count, names[0] if names else None),
        "kind": kind,
        "count": count,
        "device_names": names,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "world_size": int(devices.get("world_size", os.environ.get("WORLD_SIZE", 1))),
    }


def validate_result(obj: dict) -> list[str]:
    """Problems with a result.json (empty list = well-formed), against harness/schemas/result.schema.json.
    ``pre_quant_val_bpb`` is null when the track (eval_prequant) or --no-prequant skipped that score;
    ``eval_precision`` is fp32 | bf16, absent = fp32. Lines read "missing field 'x'", "field 'x' is not a
    number", "status 'x' is not one of ...", or the schema's own message."""
    from golfbench.harness.schema import errors

    if not isinstance(obj, dict):
        return ["the result is not a JSON object"]
    out = []
    for line in errors("result", obj):
        where, _, what = line.partition(": ")
        if what.startswith("missing required field"):
            out.append(what.replace("missing required field", "missing field"))
        elif where == "status":
            out.append(f"status '{obj.get('status')}' is not one of {', '.join(STATUSES)}")
        elif what.startswith("expected "):
            out.append(f"field '{where}' is not a {what[len('expected ') :].split(',')[0]}")
        else:
            out.append(line)
    return out
