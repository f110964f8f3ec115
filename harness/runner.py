"""One run's lifecycle (docs/architecture.md §2): setup, untimed warm-up, the budgeted loop, artifact, eval, result.

The harness owns the loop: it draws the batches (the same for every backend), charges the budget, derives
the learning-rate scale from the budget's progress and logs events. Backends only step, export and score.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from golfbench.harness import code, progress, tracking, train_loop
from golfbench.harness.adapt import adapt_token_count, get_recipe
from golfbench.harness.artifact import (
    CODECS,
    KEEP_FLOAT_MAX_NUMEL,
    TOKENIZER_FILE,
    check_codec,
    check_compressor,
    pack,
    pack_tokenizer,
    size_report,
)
from golfbench.harness.backend import get_backend
from golfbench.harness.cohort import dataset_content_sha256, dataset_full_sha256
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.stream import BatchStream
from golfbench.harness.distributed import (
    Collective,
    check_world,
    env_rank,
    env_world_size,
    fixed_data_plan,
    replicas_identical,
    weights_digest,
)
from golfbench.harness.errors import BudgetError, GolfError
from golfbench.harness.models import get_spec
from golfbench.harness.plots import plot_loss
from golfbench.harness.plugins import get_plugin
from golfbench.harness.records import (
    EventLog,
    atomic_write_bytes,
    atomic_write_json,
    default_run_id,
    git_info,
    hardware,
    read_json,
    run_dir,
    validate_result,
    versions,
)
from golfbench.harness.scoring import (
    load_artifact_model,
    score_subset,
    score_weights,
    score_weights_adaptive,
    val_subset,
)
from golfbench.harness.tracks import Budget, load_track

CHECKPOINT = "checkpoint"
CALIBRATION_SEQS = 64  # GPTQ calibration sequences (of seq_len tokens) drawn from the training data
CALIBRATION_RESERVE_FACTOR = 1.5  # wallclock: the loop leaves this multiple of the measured calibration time free
# The val curve: every run scores the first VAL_SUBSET_TARGETS targets of the val split (non-overlapping windows
# of the model's context) at fixed fractions of its budget, whatever the track, so curves are comparable.
VAL_SUBSET_TARGETS = 8_192
VAL_POINTS = 10  # default points per run (--val-points)


@dataclass
class RunSpec:
    """What `golf run` was asked for, before anything is resolved. ``budget`` overrides the track's (seconds,
    tokens or FLOPs by track); ``eval_stride`` is in tokens; ``overrides`` are config fields set with --set;
    ``log_every`` and ``checkpoint_every`` are in steps; ``data`` and ``out`` are folders (default: data/<the
    track's dataset> and runs). A budget, eval-stride or config override makes the run unofficial.
    ``eval_context`` (tokens, default: the model's seq_len) scores at a longer context where the model supports
    it; it is recorded (result eval_context / train_context, and the cohort) but does not make a run unofficial.
    """

    track: str
    scale: str
    backend: str
    model: str
    preset: str
    seed: int = 0
    data: str | None = None
    budget: float | None = None
    out: str = "runs"
    run_id: str | None = None
    eval_stride: int | None = None
    overrides: dict = field(default_factory=dict)
    log_every: int = 10
    checkpoint_every: int = 0  # steps; 0 = by track (fixed-data checkpoints, others do not)
    force: bool = False
    prequant: bool | None = None  # also score the weights before quantization (default: the track's rule)
    adapt: str = "none"  # score-first test-time adaptation recipe (harness/adapt.py RECIPES) for the artifact's score
    codec: str = "int8_per_row"  # harness/artifact.py CODECS: a submission's choice, official with any value
    compressor: str = "zstd-22"  # harness/artifact.py COMPRESSORS
    val_points: int = VAL_POINTS  # val-curve points on the fixed val subset (VAL_SUBSET_TARGETS), untimed; 0 = none
    log_to: list = field(default_factory=list)  # experiment trackers to stream to: "wandb", "tensorboard"
    log_dir: str | None = None  # where trackers write (default: the run directory)
    eval_context: int | None = None  # tokens; None = the model's seq_len

    @property
    def unofficial(self) -> bool:
        """True when the budget, eval stride or config was overridden: the run is not comparable to official ones."""
        return self.budget is not None or self.eval_stride is not None or bool(self.overrides)


# Submission choices a run may make away from RunSpec's defaults: (RunSpec field, `golf run` flag). Each changes the
# artifact's bytes or its score, so launched children, default run ids and exported commands all carry them.
CHOICES = (("codec", "--codec"), ("compressor", "--compressor"), ("adapt", "--adapt"))


def chosen(values: dict) -> list[tuple[str, str]]:
    """(flag, value) of each of CHOICES that ``values`` (a RunSpec's fields, ``vars(spec)``, or run.json's
    recorded "spec") sets away from RunSpec's default, in CHOICES order; a missing key counts as the default."""
    out = []
    for key, flag in CHOICES:
        default = RunSpec.__dataclass_fields__[key].default
        if values.get(key, default) != default:
            out.append((flag, values[key]))
    return out


def config_hash(config: dict) -> str:
    """Runs group across seeds on the leaderboard only when their full config is identical."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def default_preset(model: str, scale: str) -> str:
    """Dev runs default to the CPU-sized preset; official runs to the model's 16 MB golf preset (for a plugin
    model: its first preset other than ``tiny``)."""
    if scale == "dev":
        return "tiny"
    if model in ("llama", "megalodon"):
        return {"llama": "baseline", "megalodon": "golf16"}[model]
    try:
        others = [p for p in get_spec(model).presets if p != "tiny"]
    except GolfError:
        others = []
    return others[0] if others else "baseline"


def default_data_dir(dataset_name: str) -> Path:
    """Where a track's dataset is looked for when --data is not given: ``data/<dataset_name>``."""
    return Path("data") / dataset_name


class Run:
    """Everything a run needs, resolved and validated before any training starts."""

    def __init__(self, spec: RunSpec, resume: bool = False, world_size: int | None = None) -> None:
        """Resolve and check everything before any directory is written or any step runs.

        ``world_size``: processes the run will use (default: this process's launcher environment); a launcher
        passes it so a bad layout is refused in the parent, once, before any process starts. Raises GolfError
        (BudgetError for budgets) with one line for every problem found.
        """
        self.spec = spec
        self.world_size = int(world_size) if world_size is not None else env_world_size()
        self.track = load_track(spec.track)
        self.scale = self.track.scale(spec.scale)
        self.model_spec = get_spec(spec.model)
        self.config = self.model_spec.config(spec.preset, spec.overrides)
        # record overrides as parsed (`--set swiglu=false` is the bool False in run.json, never the text)
        spec.overrides = {key: self.config[key] for key in spec.overrides}
        spec.codec = check_codec(spec.codec)
        check_compressor(spec.compressor)
        if spec.eval_stride is not None and spec.eval_stride < 1:
            raise GolfError(f"--eval-stride must be a positive number of tokens, got {spec.eval_stride}")
        if spec.eval_context is not None and spec.eval_context < 1:
            raise GolfError(f"--eval-context must be a positive number of tokens, got {spec.eval_context}")
        if not 0 <= int(spec.val_points) <= 1000:
            raise GolfError(f"--val-points must lie in 0..1000 (0 = no val curve), got {spec.val_points}")
        tracking.check(spec.log_to)  # a missing tracking library stops the run before anything is written
        self.tracker = tracking.NULL
        choices = tuple(value for _, value in chosen(vars(spec))) + (
            (f"ctx{spec.eval_context}",) if spec.eval_context else ()
        )
        run_id = spec.run_id or default_run_id(
            spec.model, spec.preset, spec.backend, spec.seed, spec.unofficial, spec.budget, choices
        )
        self.dir = run_dir(Path(spec.out), self.track.name, spec.scale, run_id)
        self.run_id = run_id
        data_dir = Path(spec.data) if spec.data else default_data_dir(self.scale["dataset"])
        if not (data_dir / "manifest.json").exists():
            hint = (
                "golf data build shakespeare"
                if "shakespeare" in str(self.scale["dataset"])
                else "golf data fetch fineweb"
            )
            raise GolfError(
                f"no dataset at {data_dir} (manifest.json missing): build it with `{hint} --out {data_dir}`"
            )
        self.dataset = Dataset.open(data_dir)
        # Another tokenizer of the track's corpus (shakespeare_sp4096 for shakespeare_sp1024): a different dataset,
        # so the run is unofficial, never refused; its dataset content hash keeps it out of the track's cohort.
        self.dataset_variant = self.dataset.id != self.scale["dataset"] and str(self.scale["dataset"]).startswith(
            f"{self.dataset.name}_"
        )
        self.unofficial = spec.unofficial or self.dataset_variant
        if self.dataset.id != self.scale["dataset"] and not self.unofficial:
            raise GolfError(
                f"track '{self.track.name}' at scale '{spec.scale}' uses dataset '{self.scale['dataset']}', but {data_dir}"
                f" holds '{self.dataset.id}'; point --data at the right dataset"
            )
        self.dataset_content = dataset_content_sha256(self.dataset.manifest)
        self.dataset_full = dataset_full_sha256(self.dataset.manifest)
        pin = self.scale.get("dataset_sha256")
        if pin and not self.unofficial and pin != self.dataset_full:
            raise GolfError(
                f"track '{self.track.name}' at scale '{spec.scale}' pins dataset content {pin[:12]}…, but {data_dir}"
                f" holds {self.dataset_full[:12]}… (same name, other train/val tokens or tokenizer); rebuild it with the"
                " pinned recipe or run unofficially with --budget"
            )
        if "vocab_size" not in spec.overrides and self.config["vocab_size"] != self.dataset.vocab_size:
            # the model takes its vocab from the dataset (recorded in run.json's config and its hash)
            self.config = self.model_spec.config(spec.preset, {**spec.overrides, "vocab_size": self.dataset.vocab_size})
        if self.config["vocab_size"] != self.dataset.vocab_size:
            raise GolfError(
                f"{spec.model}/{spec.preset} has vocab {self.config['vocab_size']} (--set vocab_size) but dataset"
                f" '{self.dataset.id}' has {self.dataset.vocab_size}: drop --set vocab_size, the model takes the dataset's"
            )
        # hashes and token ids, so bad data stops the run before its directory exists (once: a launcher that
        # already checked this exact manifest in the parent says so in GOLF_DATA_CHECKED)
        if env_rank() == 0 and os.environ.get("GOLF_DATA_CHECKED") != self.dataset.manifest_sha256:
            self.dataset.check_contents()
        # The framework import takes seconds: checked after the data, so bad input fails fast.
        plugin = get_plugin(spec.model)
        if plugin is not None and spec.backend not in plugin.implementations:
            # said before the framework import: a one-framework plugin model is refused at once, in one line
            raise GolfError(
                f"model '{spec.model}' (package {plugin.source}) is not implemented in {spec.backend}:"
                f" it implements {', '.join(sorted(plugin.implementations))}"
            )
        self.backend = get_backend(spec.backend)
        # environment settings that change the numbers (torch: GOLF_TORCH_COMPILE): checked now, recorded in run.json
        check = getattr(self.backend, "check_settings", None)
        self.settings = check() if check else {}
        if spec.model not in self.backend.models():
            raise GolfError(
                f"backend '{spec.backend}' does not implement model '{spec.model}' (it has: {', '.join(self.backend.models())})"
            )
        self.calibrate = CODECS[spec.codec].needs_hessians
        self.hessians: dict | None = None  # GPTQ's input Hessians, set after calibration
        if self.calibrate and not callable(getattr(self.backend, "input_hessians", None)):
            raise GolfError(
                f"codec '{spec.codec}' needs per-layer input Hessians, which backend '{spec.backend}' does not offer"
                " (no input_hessians); choose --codec int6_per_row or int8_per_row"
            )
        self.limit = spec.budget if spec.budget is not None else float(self.scale["budget"])
        self.stride = spec.eval_stride or int(self.scale["eval_stride"])
        self.eval_precision = str(self.scale.get("eval_precision", "fp32"))
        # the pre-quant score is a diagnostic: off where the track says so (official), unless asked for
        self.eval_prequant = bool(spec.prequant if spec.prequant is not None else self.scale.get("eval_prequant", True))
        self.flops_per_token = self.model_spec.flops_per_token(self.config)
        self.seq_len = int(self.config["seq_len"])
        self.eval_context = self.model_spec.check_eval_context(self.config, spec.eval_context or self.seq_len)
        # the tokenizer .model bytes, counted toward the cap where the track says so (count_tokenizer_bytes)
        self.count_tokenizer_bytes = bool(self.scale.get("count_tokenizer_bytes", False))
        # counted compressed (artifact.pack_tokenizer), as the model's bytes are; the blob ships in the run dir
        self.tokenizer_blob = pack_tokenizer(Path(self.dataset.tokenizer_path).read_bytes())
        self.tokenizer_bytes = len(self.tokenizer_blob)
        self.batch_seqs = max(1, int(self.config["train_batch_tokens"]) // self.seq_len)
        self.batch_tokens = self.batch_seqs * self.seq_len
        self.resume = resume
        check_world(self.world_size, self.batch_seqs)
        train_total = self.dataset.train_tokens_total()
        if self.batch_tokens + 1 > train_total:
            raise GolfError(
                f"one training batch needs {self.batch_tokens + 1:,} tokens but dataset '{self.dataset.name}' has"
                f" {train_total:,} training tokens: lower train_batch_tokens (--set) or use a larger dataset"
            )
        if self.track.budget_kind == "tokens":
            self._check_fixed_data()
        self._check_adaptation()
        self.code_files = self.backend.code_files(spec.model)
        self.code_sha256 = code.code_digest(self.code_files)
        if resume:
            self._check_resume()
        else:
            self._check_dir()

    def _check_dir(self) -> None:
        """A fresh run needs a free run directory (or --force); checked before anything is written."""
        d = self.dir
        if self.spec.force or not d.exists():
            return
        if (d / "result.json").exists():
            raise GolfError(f"run {d} already finished (result.json exists): pick another --run-id or pass --force")
        if (d / CHECKPOINT).exists() or (d / (CHECKPOINT + ".old")).exists():
            raise GolfError(f"run {d} was interrupted: continue it with `golf run --resume {d}` or pass --force")
        raise GolfError(f"run directory {d} already exists: pick another --run-id or pass --force")

    def _check_resume(self) -> None:
        """A resumed run must continue on the same dataset content, config and code, from a checkpoint."""
        d = self.dir
        if not (d / "run.json").exists():
            raise GolfError(f"cannot resume {d}: no run.json there")
        if (d / "result.json").exists():
            raise GolfError(f"cannot resume {d}: it already finished (result.json exists)")
        if _latest_checkpoint(d) is None:
            raise GolfError(f"cannot resume {d}: it has no checkpoint (only fixed-data runs checkpoint)")
        old = read_json(d / "run.json", "run manifest")
        if old.get("dataset", {}).get("manifest_sha256") != self.dataset.manifest_sha256:
            raise GolfError(
                f"cannot resume {d}: the dataset at {self.dataset.path} is not the one it started on (manifest sha256"
                " differs); point --data at the original dataset or start a new run"
            )
        if old.get("config_sha256", config_hash(old.get("config", {}))) != config_hash(self.config):
            raise GolfError(
                f"cannot resume {d}: the model config differs from the one it started with; start a new run"
            )
        if "code_sha256" in old and old["code_sha256"] != self.code_sha256:
            changed = sorted(
                k
                for k in set(old["code_sha256"]) | set(self.code_sha256)
                if old["code_sha256"].get(k) != self.code_sha256.get(k)
            )
            raise GolfError(
                f"cannot resume {d}: the backend code changed since it started ({', '.join(changed)}); restore that"
                " code (see run.json git sha) or start a new run"
            )

    def _check_adaptation(self) -> None:
        """--adapt against the track's eval_adaptation rule and the process count; on a FLOP budget, reserve the
        adaptation's analytic FLOPs (known from the val split and the recipe) so training stops that much earlier.
        Sets ``eval_adaptation``, ``adapt_recipe`` and ``train_limit`` (the budget left for training)."""
        self.eval_adaptation = str(self.scale.get("eval_adaptation", "none"))
        self.adapt_recipe = get_recipe(self.spec.adapt)
        self.adapt_reserve = 0.0
        self.train_limit = self.limit
        if self.adapt_recipe is None:
            return
        if self.eval_adaptation == "none":
            raise GolfError(
                f"track '{self.track.name}' does not allow test-time adaptation (eval_adaptation = \"none\" at"
                f" scale {self.spec.scale}); drop --adapt {self.spec.adapt}"
            )
        if self.track.budget_kind == "flops":
            stride = min(self.stride, self.eval_context)
            val = self.dataset.val_tokens()
            tokens = adapt_token_count(val, self.eval_context, stride, self.adapt_recipe, self.dataset.bos_id)
            self.adapt_reserve = tokens * self.flops_per_token["total"]
            self.train_limit = self.limit - self.adapt_reserve
            if self.train_limit <= 0:
                raise BudgetError(
                    f"--adapt {self.spec.adapt} needs {self.adapt_reserve:.3g} FLOPs ({tokens:,} adapted tokens), all of"
                    f" the {self.limit:g}-FLOP budget; raise --budget or drop --adapt"
                )

    def _check_fixed_data(self) -> None:
        available = self.dataset.train_tokens_total() - 1
        needed = (int(self.limit) // self.seq_len) * self.seq_len
        if needed == 0:
            raise BudgetError(f"fixed-data budget {self.limit:g} tokens is smaller than one sequence of {self.seq_len}")
        if needed > available:
            raise BudgetError(
                f"fixed-data budget needs {needed:,} training tokens but dataset '{self.dataset.name}' has {available:,};"
                " lower --budget or use a larger dataset (e.g. more FineWeb shards)"
            )

    # ------------------------------------------------------------------------------------------------------

    def val_curve(self) -> dict:
        """How the val curve is measured (recorded in run.json): ``points`` per run, the ``subset_targets`` scored
        (the first val targets, at most VAL_SUBSET_TARGETS), ``context`` and ``stride`` in tokens (non-overlapping
        windows of the model's context)."""
        targets = min(VAL_SUBSET_TARGETS, self.dataset.val_tokens_total() - 1)
        return {
            "points": int(self.spec.val_points),
            "subset_targets": targets,
            "context": self.seq_len,
            "stride": self.seq_len,
        }

    def manifest(self) -> dict:
        """The content of run.json: what ran (track with version and sha256, scale, backend, model, preset, seed,
        config and its hash, code sha256s, overrides), the budget (kind, limit, the track's default), eval stride
        and context (tokens), batch shape, analytic training FLOPs per token, parameter count, dataset identity
        (manifest and content sha256s), library versions, git commit, hardware and the creation time (UTC).
        """
        return {
            "run_id": self.run_id,
            "track": self.track.name,
            "track_version": self.track.version,
            "track_sha256": self.track.sha256,
            "scale": self.spec.scale,
            "backend": self.spec.backend,
            "model": self.spec.model,
            "preset": self.spec.preset,
            "seed": self.spec.seed,
            "config": self.config,
            "config_sha256": config_hash(self.config),
            "model_package": _model_package(self.spec.model),
            "code_sha256": self.code_sha256,
            "world_size": self.world_size,
            "overrides": self.spec.overrides,
            "codec": self.spec.codec,
            "compressor": self.spec.compressor,
            "budget": {"kind": self.track.budget_kind, "limit": self.limit, "track_default": self.scale["budget"]},
            "unofficial": self.unofficial,
            "eval": {
                "stride": self.stride,
                "context": self.eval_context,
                "train_context": self.seq_len,
                "adaptation": self.eval_adaptation,
                "adapt": self.adapt_recipe.to_dict() if self.adapt_recipe else None,
                "adapt_flops_reserved": self.adapt_reserve,
            },
            "val_curve": self.val_curve(),
            "batch": {"seqs": self.batch_seqs, "seq_len": self.seq_len, "tokens": self.batch_tokens},
            "flops_per_token": self.flops_per_token,
            "param_count": self.model_spec.param_count(self.config),
            "dataset": {
                "name": self.dataset.name,
                "id": self.dataset.id,
                "dir": str(Path(self.dataset.path).resolve()),  # absolute: verify works from any directory
                "manifest_sha256": self.dataset.manifest_sha256,
                "content_sha256": self.dataset_content,
                "full_sha256": self.dataset_full,
                "tokenizer_sha256": self.dataset.manifest["tokenizer_sha256"],
            },
            "versions": versions(),
            "settings": self.settings,
            "git": git_info(),
            "hardware": hardware(self.backend.devices()),
            "spec": {k: v for k, v in asdict(self.spec).items() if k not in ("force",)},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


def _model_package(model: str) -> dict:
    """Where the model comes from: {"name", "version"} of its distribution (golfbench for the built-ins, else the
    plugin's), so a record says which plugin release trained it."""
    from importlib import metadata

    from golfbench.harness.plugins import source_of

    name = source_of(model)
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:
        version = None
    return {"name": name, "version": version}


def _synthetic_batch(batch_seqs: int, seq_len: int, vocab: int, seed: int) -> np.ndarray:
    # Warm-up never touches real data (parameter-golf issue #1530: compile warm-up on val tokens).
    return np.random.default_rng(seed + 7919).integers(0, vocab, size=(batch_seqs, seq_len + 1), dtype=np.int32)


def _prepare_dir(run: Run) -> None:
    """Rank 0 only, after every check passed (Run._check_dir/_check_resume): make the run directory."""
    d = run.dir
    if run.resume:
        return
    if d.exists():  # only reachable with --force
        shutil.rmtree(d)
    d.mkdir(parents=True)


def _save_checkpoint(run: Run, state, budget: Budget, stream_tokens: int, coll: Collective) -> None:
    """Write checkpoint/ atomically (rank 0; every rank calls the backend). ``stream_tokens``: the stream offset
    just after the last batch trained on (a batch prepared ahead is not counted)."""
    if coll.rank != 0:  # the backend may synchronise ranks inside save_checkpoint; only rank 0 writes
        run.backend.save_checkpoint(state, run.dir / (CHECKPOINT + ".tmp") / "backend")
        return
    ck = run.dir / CHECKPOINT
    tmp = run.dir / (CHECKPOINT + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    run.backend.save_checkpoint(state, tmp / "backend")
    atomic_write_json(
        tmp / "harness.json",
        {
            "steps": budget.steps,
            "seconds": budget.seconds,
            "tokens": budget.tokens,
            "flops": budget.flops,
            "stream_tokens": stream_tokens,
            "step_seconds": budget._step_seconds[-5:],
        },
    )
    # Swap in the new checkpoint; a kill between the two renames leaves checkpoint.old, used by resume.
    old = run.dir / (CHECKPOINT + ".old")
    if ck.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(ck, old)
    os.replace(tmp, ck)
    if old.exists():
        shutil.rmtree(old)


def _latest_checkpoint(d: Path) -> Path | None:
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        if (d / name / "harness.json").exists():
            return d / name
    return None


CLOCK_SKEW_ENV = "GOLF_CLOCK_SKEW"  # test hook: "RANK:FACTOR" makes that rank's clock run FACTOR times fast


def _clock(rank: int):
    """The harness's training clock for this process (``time.perf_counter``, seconds).

    Only rank 0's readings are ever used (they are broadcast); ``GOLF_CLOCK_SKEW`` lets a test make one
    rank's clock run ahead to prove that.
    """
    skew = os.environ.get(CLOCK_SKEW_ENV, "")
    if skew:
        r, factor = skew.split(":")
        if int(r) == rank:
            return lambda: time.perf_counter() * float(factor)
    return time.perf_counter


class _RankFailure(Exception):
    """A non-zero rank's training crashed: re-raised so the launcher tears the group down."""


def execute(spec: RunSpec, resume_dir: Path | None = None) -> dict:
    """Run (or resume) one run on this process; returns the result dict (rank 0 also writes result.json).

    Under a launcher every process calls this with the same spec. Process 0 owns the clock and the
    schedule: each step it decides whether another step fits and the learning-rate scale, and broadcasts
    both, then broadcasts the seconds it measured, so every process charges the same budget and stops at
    the same step. Raises GolfError before anything is written for any problem found by ``Run``.
    """
    run = Run(spec, resume=resume_dir is not None)
    backend = run.backend
    coll = backend.collective()
    main = coll.rank == 0
    if main:
        _prepare_dir(run)
        if not run.resume:
            # the code that runs is the code that counts and ships: snapshot it before the first step
            if code.snapshot(run.code_files, run.dir) != run.code_sha256:
                raise GolfError(f"the backend's source files changed while {run.dir} was starting; start the run again")
            atomic_write_json(run.dir / "run.json", run.manifest())
    if main and spec.log_to:
        run.tracker = tracking.open_tracker(
            spec.log_to,
            Path(spec.log_dir) if spec.log_dir else run.dir,
            run.run_id,
            read_json(run.dir / "run.json", "run manifest"),
        )
    events = EventLog(run.dir / "events.jsonl", listener=run.tracker.event)

    budget = Budget(run.track.budget_kind, run.train_limit)  # a FLOP budget less the adaptation's reserve
    stream_start = 0
    ckpt = _latest_checkpoint(run.dir) if run.resume else None
    if ckpt is not None:
        h = read_json(ckpt / "harness.json", "checkpoint state")
        state = backend.load_checkpoint(ckpt / "backend", spec.model, run.config)
        budget.seconds, budget.tokens, budget.flops, budget.steps = h["seconds"], h["tokens"], h["flops"], h["steps"]
        budget._step_seconds = list(h.get("step_seconds", []))
        stream_start = int(h["stream_tokens"])
        if main:
            events.truncate_after(budget.steps)
        # compile before the clock resumes, as a fresh run does; the backend puts the loaded state back exactly
        state = backend.warmup(
            state, _synthetic_batch(run.batch_seqs, run.seq_len, run.config["vocab_size"], spec.seed)
        )
    else:
        state = backend.init(spec.model, run.config, spec.seed)
        synth = _synthetic_batch(run.batch_seqs, run.seq_len, run.config["vocab_size"], spec.seed)
        compiler_flops = _compiler_flops(backend, state, synth)
        state = backend.warmup(state, synth)
        if main:
            analytic = run.flops_per_token["total"] * run.batch_tokens
            events.append(
                {
                    "event": "flops_check",
                    "analytic_step_flops": analytic,
                    "compiler_step_flops": compiler_flops,
                    "devices": backend.devices(),
                    "world_size": coll.world_size,
                }
            )

    kind = run.track.budget_kind
    checkpoint_every = spec.checkpoint_every or (
        max(1, 50 // max(1, spec.log_every) * spec.log_every) if kind == "tokens" else 0
    )
    stream = BatchStream(
        run.dataset.train_paths,
        run.batch_seqs,
        run.seq_len,
        start_tokens=stream_start,
        wrap=kind != "tokens",
        vocab_size=run.config["vocab_size"],
    )
    fpt = run.flops_per_token["total"]
    status, reason = "ok", None
    plan = fixed_data_plan(run.limit, run.seq_len, run.batch_seqs) if kind == "tokens" else None
    clock = _clock(coll.rank)
    calib_rows = _calibration_rows(run, budget) if run.calibrate else 0
    # Room the loop leaves for GPTQ calibration, charged after it: its forward FLOPs (a third of the training
    # FLOPs per token), or on the wallclock its time measured on synthetic tokens now (untimed, like warm-up).
    reserve = 0.0
    if calib_rows and kind == "flops":
        reserve = fpt / 3 * calib_rows * run.seq_len
    elif calib_rows and kind == "seconds":
        synth = _synthetic_batch(calib_rows, run.seq_len, run.config["vocab_size"], spec.seed)
        t0 = clock()
        backend.input_hessians(state, _row_chunks(synth, run.batch_seqs))
        reserve = CALIBRATION_RESERVE_FACTOR * float(coll.broadcast([clock() - t0])[0])
    curve = _ValCurve(run, coll, events, budget)

    def checkpoint(state, stream_tokens: int) -> None:
        _save_checkpoint(run, state, budget, stream_tokens, coll)

    try:
        loop = train_loop.train(
            run, state, budget, stream, coll, events, curve, clock, reserve, plan, checkpoint_every, checkpoint
        )
        state, status, reason = loop.state, loop.status, loop.reason
    except GolfError:
        raise
    except Exception as exc:  # a backend crash still leaves a valid run directory
        if not main:
            raise
        status, reason = "failed", f"training crashed: {exc.__class__.__name__}: {exc}"
        if coll.world_size > 1:  # the other processes wait in a collective: record, then end the group
            finish(run, state, budget, status, reason, coll, score=False)
            raise GolfError(f"{reason} (run {run.dir} recorded as failed)") from None

    if status in ("ok", "over_budget") and budget.steps > 0 and curve.last_step != budget.steps:
        curve.point(state, final=True)  # the curve ends where training ended (a wallclock run stops short of 1)
    if budget.steps == 0 and status == "ok":
        status, reason = "failed", "the budget did not allow a single training step"
    calibration = {"calibration_seconds": 0.0, "calibration_tokens": 0, "calibration_flops": 0.0}
    hessians = None
    if run.calibrate and status == "ok":
        hessians, calibration = _calibrate(run, state, budget, stream, clock, coll)
    if status == "ok" and budget.over():
        status, reason = "over_budget", f"training used {budget.spent():g} {kind}, over the limit {run.limit:g}"
    return finish(run, state, budget, status, reason, coll, hessians=hessians, calibration=calibration)


def _calibration_rows(run: Run, budget: Budget) -> int:
    """How many calibration sequences GPTQ gets: CALIBRATION_SEQS, and on the fixed-data track no more than the
    budget's whole sequences (they re-read the first tokens trained on, so no token outside the budget is seen)."""
    if run.track.budget_kind == "tokens":
        return max(1, min(CALIBRATION_SEQS, int(run.limit) // run.seq_len))
    return CALIBRATION_SEQS


def _row_chunks(batch: np.ndarray, rows: int) -> list[np.ndarray]:
    """``batch`` (B, T+1) in pieces of at most ``rows`` rows (one training batch: what fits in memory)."""
    return [batch[i : i + rows] for i in range(0, len(batch), rows)]


def _calibrate(run: Run, state, budget: Budget, stream: BatchStream, clock, coll: Collective) -> tuple[dict, dict]:
    """GPTQ calibration after the loop, on TRAINING data only, charged to the training budget.

    Wallclock and FLOP tracks: the next CALIBRATION_SEQS sequences of the training stream. Fixed-data: the first
    sequences of the training stream again (tokens already inside the budget, so nothing past it is read).
    The seconds (rank 0's clock, broadcast) go to ``budget.seconds`` and the analytic forward FLOPs (a third of the
    training FLOPs per token) to ``budget.flops``; calibration tokens are not training tokens and are recorded
    apart. Returns (hessians {canonical name: float64 (in, in)}, the result's calibration fields).
    """
    rows = _calibration_rows(run, budget)
    if run.track.budget_kind == "tokens":
        rows = max(1, min(rows, budget.tokens // run.seq_len))
        source = BatchStream(run.dataset.train_paths, rows, run.seq_len, start_tokens=0, wrap=False)
    else:
        source = stream
    t0 = clock()
    batch = source.next(rows)
    hessians = run.backend.input_hessians(state, _row_chunks(batch, run.batch_seqs))
    seconds = float(coll.broadcast([clock() - t0])[0])
    tokens = rows * run.seq_len
    flops = run.flops_per_token["total"] / 3 * tokens
    budget.seconds += seconds
    budget.flops += flops
    shapes = run.model_spec.shapes(run.config)
    # the tensors GPTQ will actually quantize: a Hessian and big enough to leave the fp16/fp32 rule
    gptq = [n for n in hessians if n in shapes and len(shapes[n]) == 2 and math.prod(shapes[n]) > KEEP_FLOAT_MAX_NUMEL]
    if coll.rank == 0:
        EventLog(run.dir / "events.jsonl").append(
            {
                "event": "calibration",
                "seconds": seconds,
                "tokens": tokens,
                "flops": flops,
                "layers": len(hessians),
                "gptq_tensors": len(gptq),
            }
        )
        if not gptq:
            progress.console.print(
                f"[yellow]warning:[/] {run.spec.codec}: no tensor of this config has a Hessian and more than"
                f" {KEEP_FLOAT_MAX_NUMEL:,} entries, so GPTQ quantizes nothing (small matrices stay fp16) while the"
                " calibration was charged to the budget; int6_per_row stores the same bytes without it"
            )
    return hessians, {"calibration_seconds": seconds, "calibration_tokens": tokens, "calibration_flops": flops}


class _ValCurve:
    """The val curve of one run (docs/architecture.md §events): ``points`` scores of a fixed val subset, after the
    first step whose budget progress reaches k/points (k = 1..points) and at the end of training, so every track
    gets the same number of points at the same fractions of its budget. Untimed: never charged to the budget.

    Every process calls `due` and `point` alike (progress is computed from values process 0 broadcast) and
    exports; process 0 alone scores the subset (`score_subset`, no collective: 16k targets cost little, and a
    failure there cannot leave a peer waiting) and appends one ``val`` event per point. A point that fails is
    logged with ``val_bpb`` null and its ``error``; it never costs the run.
    """

    def __init__(self, run: Run, coll: Collective, events: EventLog, budget: Budget) -> None:
        self.run, self.coll, self.events, self.budget = run, coll, events, budget
        self.points = int(run.spec.val_points)
        # a resumed run picks up at the first fraction it has not yet passed (its val events up to the
        # checkpoint were kept; later ones were truncated with the steps that made them)
        self.next_k = math.floor(budget.progress() * self.points + 1e-9) + 1 if self.points else 1
        self.last_step = budget.steps if budget.steps and self.next_k > 1 else -1
        self._tokens = None

    def due(self) -> bool:
        """Whether the step just charged crossed the next k/points fraction of the budget."""
        return (
            self.points > 0
            and self.next_k <= self.points
            and self.budget.progress() >= self.next_k / self.points - 1e-12
        )

    def point(self, state, final: bool = False) -> None:
        """Export ``state``, score the subset, log a ``val`` event (process 0). ``final``: the end-of-training point."""
        if self.points == 0:
            return
        run, budget = self.run, self.budget
        t0 = time.perf_counter()
        if self._tokens is None:
            self._tokens = val_subset(run.dataset, run.val_curve()["subset_targets"])
            self._accounting = run.dataset.accounting()
        weights = run.backend.export(state)  # every process: an export may be collective
        res, error = None, None
        if self.coll.rank == 0:  # scored once, on process 0: no collective, so a failure here cannot hang a peer
            try:
                res = score_subset(
                    run.spec.backend,
                    run.spec.model,
                    run.config,
                    weights,
                    self._tokens,
                    self._accounting,
                    precision=run.eval_precision,
                )
            except Exception as exc:  # noqa: BLE001 - a curve point never costs the run; the final score decides
                error = f"{exc.__class__.__name__}: {exc}"
        del weights
        while self.next_k <= self.points and budget.progress() >= self.next_k / self.points - 1e-12:
            self.next_k += 1
        if final:
            self.next_k = self.points + 1
        self.last_step = budget.steps
        if self.coll.rank == 0:
            self.events.append(
                {
                    "event": "val",
                    "step": budget.steps,
                    "tokens": budget.tokens,
                    "time": budget.seconds,
                    "flops": budget.flops,
                    "progress": budget.progress(),
                    "val_bpb": res.val_bpb if res else None,
                    "val_loss": res.val_loss if res else None,
                    "subset_tokens": len(self._tokens) - 1,
                    "subset_bytes": res.val_bytes if res else None,
                    "seconds": time.perf_counter() - t0,
                    **({"error": error} if error else {}),
                }
            )


def _compiler_flops(backend, state, synth: np.ndarray) -> float | None:
    """The framework's FLOP count for one step: a cross-check only, so a failure is logged, never fatal."""
    try:
        return backend.compiler_flops(state, synth)
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory on a big preset
        progress.console.print(
            f"[yellow]warning:[/] compiler FLOP count failed ({exc.__class__.__name__}: {exc}); continuing"
        )
        return None


def finish(
    run: Run,
    state,
    budget: Budget,
    status: str,
    reason: str | None,
    coll: Collective,
    score: bool = True,
    hessians: dict | None = None,
    calibration: dict | None = None,
) -> dict:
    """Every process: export, check the replicas agree, pack and score (sharded); process 0 writes the records.

    ``hessians`` (from ``_calibrate``) feed a GPTQ codec; ``calibration`` holds the result's calibration_seconds,
    calibration_tokens and calibration_flops (zeros when the codec needs none).

    Raises GolfError when the processes' weights differ (the replicas drifted apart) or when the result record
    would break harness/schemas/result.schema.json (an internal error).
    """
    spec = run.spec
    main = coll.rank == 0
    counted = code.snapshot_files(run.dir) if main else run.code_files
    code_size = code.code_bytes(counted)
    result = {
        "status": status,
        "reason": reason,
        "run_id": run.run_id,
        "track": run.track.name,
        "track_version": run.track.version,
        "scale": spec.scale,
        "dataset_id": run.dataset.id,
        "dataset_content_sha256": run.dataset_content,
        "dataset_sha256": run.dataset_full,
        "backend": spec.backend,
        "model": spec.model,
        "preset": spec.preset,
        "seed": spec.seed,
        "unofficial": run.unofficial,
        "budget_kind": run.track.budget_kind,
        "budget_limit": run.limit,
        "train_tokens": budget.tokens,
        "train_flops": budget.flops,
        "train_seconds": budget.seconds,
        "steps": budget.steps,
        "tokens_per_second": budget.tokens / budget.seconds if budget.seconds else None,
        "world_size": coll.world_size,
        "code_bytes": code_size,
        "code_files": code.code_digest(counted),
        "hardware_class": read_json(run.dir / "run.json", "run manifest")["hardware"]["class"] if main else None,
        "param_count": run.model_spec.param_count(run.config),
        "config_sha256": config_hash(run.config),
        "eval_stride": run.stride,
        "eval_context": run.eval_context,
        "train_context": run.seq_len,
        "count_tokenizer_bytes": run.count_tokenizer_bytes,
        "tokenizer_bytes": run.tokenizer_bytes,
        "eval_precision": run.eval_precision,
        "eval_adaptation": run.eval_adaptation,
        "adapt_recipe": spec.adapt,
        "adapt_params": run.adapt_recipe.to_dict() if run.adapt_recipe else None,
        "codec": spec.codec,
        "compressor": spec.compressor,
        **(calibration or {"calibration_seconds": 0.0, "calibration_tokens": 0, "calibration_flops": 0.0}),
    }
    for key in (
        "val_bpb",
        "val_loss",
        "val_nll_sum",
        "val_tokens",
        "val_bytes",
        "pre_quant_val_bpb",
        "artifact_bytes",
        "model_bytes",
        "eval_seconds",
        "adapt_seconds",
        "adapt_tokens",
        "adapt_flops",
    ):
        result.setdefault(key, None)
    if score and status in ("ok", "over_budget"):
        try:
            run.hessians = hessians  # read by _score (whose signature tests replace)
            _score(run, state, result, code_size, coll)
        except GolfError as exc:
            result.update(status="failed", reason=str(exc))
        except Exception as exc:
            if not main:
                raise
            result.update(status="failed", reason=f"evaluation crashed: {exc.__class__.__name__}: {exc}")
    if not main:
        return {"status": result["status"]}
    ck = run.dir / CHECKPOINT
    problems = validate_result(result)  # the writer checks its record against the schema the readers use
    if problems:
        raise GolfError(f"internal error: the result record breaks harness/schemas/result.schema.json ({problems[0]})")
    atomic_write_json(run.dir / "result.json", result)
    run.tracker.result(result)
    run.tracker.close()
    if ck.exists() and result["status"] != "failed":
        shutil.rmtree(ck)
    try:
        plot_loss(
            run.dir / "events.jsonl",
            run.dir / "loss.png",
            title=f"{spec.model}/{spec.preset}@{spec.backend} seed {spec.seed}",
        )
    except Exception:  # a plot must never cost a result
        pass
    return result


def _score(run: Run, state, result: dict, code_size: int, coll: Collective) -> None:
    spec = run.spec
    main = coll.rank == 0
    weights = run.backend.export(state)
    if coll.world_size > 1:
        same = replicas_identical(coll, weights_digest(weights))
        result["replicas_identical"] = same
        if not same:
            raise GolfError(f"the {coll.world_size} processes ended with different weights: the replicas drifted apart")
    if run.eval_prequant:
        pre = score_weights(
            spec.backend,
            spec.model,
            run.config,
            weights,
            run.dataset,
            run.stride,
            label="eval (pre-quant)",
            collective=coll,
            precision=run.eval_precision,
            context=run.eval_context,
        )
        result["pre_quant_val_bpb"] = pre.val_bpb
        _log_eval(run, main, "pre-quant", pre)
    # Every process packs the same (bit-identical) weights into the same bytes; only process 0 writes them.
    blob = pack(
        weights,
        run.model_spec.is_control,
        {
            "model": spec.model,
            "preset": spec.preset,
            "config": run.model_spec.model_part(run.config),  # no recipe
            "backend": spec.backend,
            "run_id": run.run_id,
        },
        codec=spec.codec,
        compressor=spec.compressor,
        hessians=run.hessians,
    )
    if main:
        atomic_write_bytes(run.dir / "artifact.golf", blob)
        if run.count_tokenizer_bytes:  # the tokenizer the track counts, as counted
            atomic_write_bytes(run.dir / TOKENIZER_FILE, run.tokenizer_blob)
    # The score is always measured on the round trip, loaded back from the bytes alone.
    loaded = load_artifact_model(blob if not main else (run.dir / "artifact.golf").read_bytes())
    if run.adapt_recipe is None:
        post = score_weights(
            spec.backend,
            loaded.model,
            loaded.config,
            loaded.weights,
            run.dataset,
            run.stride,
            label="eval (artifact)",
            collective=coll,
            precision=run.eval_precision,
            context=run.eval_context,
        )
    else:  # score-first TTT: its seconds are part of eval_seconds, its FLOPs were reserved on a FLOP budget
        post, stats = score_weights_adaptive(
            spec.backend,
            loaded.model,
            loaded.config,
            loaded.weights,
            run.dataset,
            run.stride,
            run.adapt_recipe,
            label=f"eval (artifact, adapt {spec.adapt})",
            collective=coll,
            precision=run.eval_precision,
            context=run.eval_context,
        )
        result.update(adapt_seconds=stats.adapt_seconds, adapt_tokens=stats.adapt_tokens, adapt_flops=stats.adapt_flops)
    _log_eval(run, main, "artifact", post)
    size = size_report(
        len(blob), code_size, run.track.artifact_cap_bytes, run.tokenizer_bytes if run.count_tokenizer_bytes else 0
    )
    result.update(post.to_dict())
    result["artifact_sha256"] = hashlib.sha256(blob).hexdigest()
    result.update(
        artifact_bytes=size["total_bytes"],
        model_bytes=size["model_bytes"],
        artifact_cap_bytes=size["cap_bytes"],
        eval_policy=post.policy,
    )
    if not size["under_cap"]:
        result.update(
            status="over_budget",
            reason=f"artifact is {size['total_bytes']:,} bytes, over the {size['cap_bytes']:,}-byte cap",
        )
    eval_max = run.scale.get("eval_seconds_max")
    if eval_max and post.eval_seconds > eval_max and result["status"] == "ok":
        result.update(
            status="over_budget", reason=f"evaluation took {post.eval_seconds:.1f} s, over the {eval_max} s limit"
        )


def _log_eval(run: Run, main: bool, label: str, res) -> None:
    """One event per scoring pass of the full val split, so the number of passes is on record."""
    if main:
        EventLog(run.dir / "events.jsonl", listener=run.tracker.event).append(
            {
                "event": "eval",
                "label": label,
                "seconds": res.eval_seconds,
                "val_bpb": res.val_bpb,
                "precision": run.eval_precision,
            }
        )


def resume_spec(run_dir_path: Path) -> RunSpec:
    """The RunSpec recorded in an interrupted run's run.json, pointed at where the directory is now. Raises
    GolfError when the directory or its run.json is missing or unreadable."""
    if not Path(run_dir_path).is_dir():
        raise GolfError(f"cannot resume {run_dir_path}: the directory does not exist")
    if not (Path(run_dir_path) / "run.json").is_file():
        raise GolfError(f"cannot resume {run_dir_path}: no run.json there (is it a run directory?)")
    manifest = read_json(Path(run_dir_path) / "run.json", "run manifest")
    s = manifest["spec"]
    spec = RunSpec(**{k: v for k, v in s.items() if k in RunSpec.__dataclass_fields__})
    # The run directory may have moved since; resume where it is now, which must still be OUT/TRACK/SCALE/RUN_ID.
    where = Path(run_dir_path).resolve()
    if (where.parent.parent.name, where.parent.name) != (spec.track, spec.scale):
        raise GolfError(
            f"cannot resume {run_dir_path}: a run directory lives at OUT/{spec.track}/{spec.scale}/RUN_ID and this one"
            f" does not; move it back under such a folder (e.g. runs/{spec.track}/{spec.scale}/{where.name})"
        )
    spec.out = str(where.parent.parent.parent)
    spec.run_id = where.name
    spec.force = False
    return spec


def resume(run_dir_path: Path) -> dict:
    """Continue an interrupted run from its latest checkpoint (same process layout rules as a fresh run)."""
    return execute(resume_spec(run_dir_path), resume_dir=Path(run_dir_path))
