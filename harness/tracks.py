"""Tracks: the rules in tracks/*.toml, and the budget clocks that enforce them.

One schedule serves every track: the learning-rate scale is a function of the budget's progress in [0, 1]
(constant, then a linear warm-down over the last `warmdown_frac`), whatever the budget measures.
"""

from __future__ import annotations

import hashlib
import os
import time
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from golfbench.harness.errors import GolfError
from golfbench.harness.models import check_name

# The installed track rules: package data of golfbench.tracks (tracks/ in the repository).
TRACKS_DIR = Path(str(resources.files("golfbench.tracks")))
TRACKS_ENV = "GOLF_TRACKS_DIR"  # point golf at another tracks folder (tests, private rule sets)
BUDGET_KINDS = ("seconds", "tokens", "flops")
EVAL_PRECISIONS = ("fp32", "bf16")  # how every backend's scorer computes (backends' scorer docstrings)
SCALES = ("official", "dev")
EVAL_ADAPTATIONS = ("none", "score-first")  # may the evaluator adapt the model on already-scored val (harness/adapt.py)


@dataclass(frozen=True)
class Track:
    """One track's rules, parsed from tracks/<name>.toml: ``budget_kind`` (seconds, tokens or flops),
    ``artifact_cap_bytes`` (decimal bytes, 16,000,000 by default), ``scales`` ({"official"|"dev": dataset,
    budget, eval_stride in tokens, eval_precision, eval_prequant, eval_adaptation ("none" | "score-first", default
    "none"), count_tokenizer_bytes (bool: the dataset's tokenizer .model bytes count toward the cap), hardware,
    optional dataset_sha256}), the
    file's ``path`` and the sha256 of its bytes (recorded with every run).
    """

    name: str
    version: int
    description: str
    budget_kind: str
    artifact_cap_bytes: int
    scales: dict
    path: Path
    sha256: str

    def scale(self, scale: str) -> dict:
        """The rules of ``scale``. Raises GolfError for a scale other than official/dev or one the track file lacks."""
        if scale not in SCALES:
            raise GolfError(f"unknown scale '{scale}': choose official or dev")
        if scale not in self.scales:
            raise GolfError(f"track '{self.name}' has no [{scale}] section in {self.path}")
        return self.scales[scale]


def _parse(path: Path) -> Track:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise GolfError(f"cannot read track file {path}: {exc.strerror}; fix its permissions or restore it") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GolfError(f"track file {path} is malformed TOML ({exc}); fix or restore it") from None
    try:
        if str(doc["name"]) != path.stem:
            raise GolfError(
                f"track file {path} declares name '{doc['name']}'; it must match the file name '{path.stem}'"
            )
        kind = doc["budget_kind"]
        if kind not in BUDGET_KINDS:
            raise GolfError(
                f"track file {path}: budget_kind '{kind}' must be one of {', '.join(BUDGET_KINDS)}; fix or restore it"
            )
        scales = {}
        for s in SCALES:
            if s in doc:
                sec = dict(doc[s])
                sec["budget"] = float(sec["budget"])
                sec["eval_stride"] = int(sec.get("eval_stride", 64))
                if not 0 < sec["budget"] < float("inf") or sec["eval_stride"] < 1:
                    raise GolfError(
                        f"track file {path}: [{s}] budget and eval_stride must be positive; fix or restore it"
                    )
                sec.setdefault("hardware", "any")
                sec["eval_precision"] = sec.get("eval_precision", "fp32")
                if sec["eval_precision"] not in EVAL_PRECISIONS:
                    raise GolfError(
                        f"track file {path}: [{s}] eval_precision '{sec['eval_precision']}' must be one of"
                        f" {', '.join(EVAL_PRECISIONS)}; fix or restore it"
                    )
                # parameter-golf never counted the tokenizer (issue #43): absent means false
                sec["count_tokenizer_bytes"] = sec.get("count_tokenizer_bytes", False)
                if not isinstance(sec["count_tokenizer_bytes"], bool):
                    raise GolfError(
                        f"track file {path}: [{s}] count_tokenizer_bytes must be true or false; fix or restore it"
                    )
                sec["eval_prequant"] = sec.get("eval_prequant", True)
                if not isinstance(sec["eval_prequant"], bool):
                    raise GolfError(f"track file {path}: [{s}] eval_prequant must be true or false; fix or restore it")
                sec["eval_adaptation"] = sec.get("eval_adaptation", "none")
                if sec["eval_adaptation"] not in EVAL_ADAPTATIONS:
                    raise GolfError(
                        f"track file {path}: [{s}] eval_adaptation '{sec['eval_adaptation']}' must be one of"
                        f" {', '.join(EVAL_ADAPTATIONS)}; fix or restore it"
                    )
                str(sec["dataset"])
                pin = sec.get("dataset_sha256")
                if pin is not None and (not isinstance(pin, str) or len(pin) != 64 or pin.strip("0123456789abcdef")):
                    raise GolfError(
                        f"track file {path}: [{s}] dataset_sha256 must be 64 lowercase hex digits; fix or restore it"
                    )
                scales[s] = sec
        return Track(
            name=str(doc["name"]),
            version=int(doc.get("version", 1)),
            description=str(doc.get("description", "")),
            budget_kind=kind,
            artifact_cap_bytes=int(doc.get("artifact_cap_bytes", 16_000_000)),
            scales=scales,
            path=path,
            sha256=hashlib.sha256(raw).hexdigest(),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise GolfError(
            f"track file {path} is missing or has a bad field ({exc}); see tracks/fixed-data.toml"
        ) from None


def default_tracks_dir() -> Path:
    """The installed tracks (golfbench.tracks: the repository's tracks/ folder), or $GOLF_TRACKS_DIR when set.
    Raises GolfError when that folder does not exist."""
    env = os.environ.get(TRACKS_ENV)
    path = Path(env) if env else TRACKS_DIR
    if not path.is_dir():
        raise GolfError(
            f"tracks folder {path} ({TRACKS_ENV}) does not exist; unset {TRACKS_ENV} or point it at a folder of track TOML files"
        )
    return path


def list_tracks(tracks_dir: Path | None = None) -> list[Track]:
    """Every track in ``tracks_dir`` (default: `default_tracks_dir`), by file name; raises GolfError for a malformed
    file."""
    tracks_dir = tracks_dir or default_tracks_dir()
    return [_parse(p) for p in sorted(tracks_dir.glob("*.toml"))]


def load_track(name: str, tracks_dir: Path | None = None) -> Track:
    """The track ``name`` from ``tracks_dir`` (default: `default_tracks_dir`). Raises GolfError for an unsafe
    name, an unknown track (listing the known ones) or a malformed file (unreadable, bad TOML, a name that
    differs from the file's, a missing or bad field).
    """
    check_name("track", name)
    tracks_dir = tracks_dir or default_tracks_dir()
    path = tracks_dir / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(tracks_dir.glob("*.toml")))
        raise GolfError(f"unknown track '{name}': choose one of {known} (see `golf tracks`)")
    return _parse(path)


def parse_budget(text: str | float | None) -> float | None:
    """`--budget` accepts numbers like 30, 40000 or 2e11 (seconds, tokens or FLOPs, by track; "_" separators
    allowed); None stays None. Raises GolfError for text that is not a number or a value that is not positive
    and finite."""
    if text is None:
        return None
    try:
        value = float(str(text).replace("_", ""))
    except ValueError:
        raise GolfError(
            f"--budget '{text}' is not a number: give seconds, tokens or FLOPs like 30, 40000 or 2e11"
        ) from None
    if not value > 0 or value != value or value == float("inf"):
        raise GolfError(f"--budget must be a positive finite number, got '{text}'")
    return value


def lr_scale(progress: float, warmdown_frac: float) -> float:
    """The learning-rate multiplier at budget ``progress`` in [0, 1] (clamped): 1.0, then a linear warm-down to 0
    over the last ``warmdown_frac`` of the budget (parameter-golf's warm-down, measured in budget progress
    instead of steps or milliseconds); always 1.0 when ``warmdown_frac`` <= 0.
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmdown_frac <= 0 or progress < 1.0 - warmdown_frac:
        return 1.0
    return max(0.0, (1.0 - progress) / warmdown_frac)


@dataclass
class Budget:
    """Charges seconds, tokens and FLOPs; decides whether another step fits; reports progress."""

    kind: str
    limit: float
    seconds: float = 0.0
    tokens: int = 0
    flops: float = 0.0
    steps: int = 0
    _step_seconds: list = field(default_factory=list)

    def spent(self) -> float:
        """What the budget measures, spent so far: seconds, tokens or FLOPs by ``kind``."""
        return {"seconds": self.seconds, "tokens": float(self.tokens), "flops": self.flops}[self.kind]

    def progress(self, reserve: float = 0.0) -> float:
        """``spent / (limit - reserve)``, capped at 1.0: with a ``reserve`` (seconds or FLOPs kept for work after the
        loop, e.g. GPTQ calibration; ignored for tokens), the part of the budget the loop itself may use."""
        usable = self.limit - (reserve if self.kind != "tokens" else 0.0)
        return min(self.spent() / usable, 1.0) if usable > 0 else 1.0

    def charge(self, seconds: float, tokens: int, flops: float) -> None:
        """Record one step: ``seconds`` of training time, ``tokens`` trained on and ``flops`` (analytic model FLOPs)."""
        self.seconds += seconds
        self.tokens += tokens
        self.flops += flops
        self.steps += 1
        self._step_seconds.append(seconds)

    def fits(self, step_tokens: int, step_flops: float, reserve: float = 0.0) -> bool:
        """May one more step of this size start, leaving ``reserve`` (in the budget's own unit: seconds or FLOPs;
        ignored for tokens) free for work charged after the loop (GPTQ calibration)? Tokens and FLOPs: only if it
        ends within the limit. Seconds (parameter-golf's wallclock rule): if it starts inside the limit; the step
        in flight may finish after it."""
        if self.kind == "tokens":
            return self.tokens + step_tokens <= self.limit
        if self.kind == "flops":
            return self.flops + step_flops + reserve <= self.limit
        return self.seconds + reserve < self.limit

    def last_step_seconds(self) -> float:
        """Seconds charged to the last step (0.0 before the first)."""
        return float(self._step_seconds[-1]) if self._step_seconds else 0.0

    def extend_last(self, seconds: float) -> None:
        """Add ``seconds`` to the last step (its completion on the device, measured after the loop)."""
        self.seconds += seconds
        if self._step_seconds:
            self._step_seconds[-1] += seconds

    def over(self) -> bool:
        """True when the spent amount passed the limit (1e-9 relative slack for float round-off). Seconds: when
        what was spent before the last step started, plus anything charged after it, passed the limit (the last
        step itself may overshoot: the wallclock rule)."""
        spent = self.spent() - (self.last_step_seconds() if self.kind == "seconds" else 0.0)
        return spent > self.limit * (1 + 1e-9)


class Clock:
    """The harness's training clock: it runs only while the harness says so (steps, data, post-processing)."""

    def __init__(self) -> None:
        self._start: float | None = None

    def start(self) -> None:
        """Start timing (time.perf_counter)."""
        self._start = time.perf_counter()

    def stop(self) -> float:
        """Stop and return the seconds since `start` (AssertionError when not started)."""
        assert self._start is not None
        elapsed = time.perf_counter() - self._start
        self._start = None
        return elapsed
