"""`golf verify RUN_DIR`: re-derive a run's result from its files alone.

Checks: result and manifest well-formed and describing the same run; an official run used the track's own
budget, eval stride and dataset; track file and dataset unchanged (sha256) and the dataset's train/val
documents disjoint; artifact present, its sha256 and size equal to the claim, total under the cap, and
packed by this run (model, preset, config, run id); budget honoured per the event log; val_bpb recomputed
from the artifact at the recorded eval_precision (fp32 when a record predates the field) equal to the claim
(1e-6 relative for fp32, 5e-4 for bf16; BPB_RTOL_BY_PRECISION), and an official run scored at the track's
eval_precision. Every failed check gives one line; the run passes only if none fails.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from golfbench.harness.artifact import CAP_BYTES, TOKENIZER_FILE, describe, unpack_tokenizer
from golfbench.harness.code import SNAPSHOT_DIR, code_bytes, code_digest, snapshot_files
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.dataset import verify as verify_dataset
from golfbench.harness.errors import GolfError
from golfbench.harness.models import get_spec
from golfbench.harness.records import atomic_write_json, read_events, read_json, validate_result
from golfbench.harness.tracks import load_track

BPB_RTOL = 1e-6
# Re-scoring tolerance (relative, on val_bpb) per recorded eval_precision. fp32: the same backend reproduces
# its score to ~1e-15 and torch vs JAX agree to ~5e-9. bf16, measured on the CPU: tiny llama / megalodon
# trained 40 steps, full Shakespeare val, stride 256: run to run and 1 vs 2 threads bit-identical; torch-bf16
# vs JAX-bf16 3.5e-7 (llama) and 4.2e-6 (megalodon); bf16 vs fp32 6e-6 and 7e-6. The random-weight tiny
# artifacts of tests/test_eval_precision.py (2,048 targets): torch-bf16 vs JAX-bf16 1.3e-6 and 2.2e-5; bf16
# vs fp32 3e-5 to 6e-5. Per-target bf16 noise (up to ~0.05 nats) averages out over a split, but a bigger
# trained model on a GPU can add a systematic shift of order 1e-4, so the bf16 tolerance is 5e-4 (6e-4 BPB at
# BPB 1.2, below any gap a leaderboard ranks on).
BPB_RTOL_BY_PRECISION = {"fp32": BPB_RTOL, "bf16": 5e-4}


class _Skip(Exception):
    pass


@dataclass
class Verdict:
    """The outcome of `verify_run`: ``checks`` (names of every check made), ``failures`` ("name: why", one per
    failed check) and ``recomputed_bpb`` (bits per byte from re-scoring the artifact; None when not rescored).
    """

    run_dir: Path
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    recomputed_bpb: float | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.failures

    def check(self, name: str, passed: bool, why: str) -> bool:
        """Record the check ``name``; when it did not pass, add "name: why" to the failures. Returns ``passed``."""
        self.checks.append(name)
        if not passed:
            self.failures.append(f"{name}: {why}")
        return passed


def _recorded_recipe(result: dict, manifest: dict):
    """The AdaptRecipe an adaptive run was scored with (run.json's eval.adapt), or None for a plain score.
    Raises GolfError when result.json names a recipe but run.json's record of it is missing or malformed."""
    from golfbench.harness.adapt import AdaptRecipe

    if result.get("adapt_recipe", "none") in (None, "none"):
        return None
    params = (manifest.get("eval") or {}).get("adapt")
    try:
        return AdaptRecipe(**params)
    except TypeError:
        raise GolfError(
            f"result.json says the score adapted with '{result['adapt_recipe']}' but run.json's eval.adapt does not"
            " record a recipe (eval.adapt missing or malformed)"
        ) from None


def _budget_check(v: Verdict, result: dict, manifest: dict, events: list[dict]) -> None:
    kind, limit = manifest["budget"]["kind"], float(manifest["budget"]["limit"])
    steps = [e for e in events if "step" in e and e.get("event") is None]  # train steps (not val-curve points)
    if not v.check("events", bool(steps), "events.jsonl holds no training step"):
        return
    last = steps[-1]
    key = {"seconds": "time", "tokens": "tokens", "flops": "flops"}[kind]
    claimed = {"seconds": result["train_seconds"], "tokens": result["train_tokens"], "flops": result["train_flops"]}[
        kind
    ]
    # GPTQ calibration after the loop is charged to the budget too (seconds and FLOPs; it trains on no tokens)
    calib = [e for e in events if e.get("event") == "calibration"]
    extra = float(calib[-1].get({"seconds": "seconds", "tokens": "", "flops": "flops"}[kind], 0.0)) if calib else 0.0
    v.check(
        "calibration-claim",
        math.isclose(
            float(calib[-1]["seconds"]) if calib else 0.0,
            float(result.get("calibration_seconds", 0.0)),
            rel_tol=1e-9,
            abs_tol=1e-9,
        ),
        f"result claims {result.get('calibration_seconds', 0.0):g} s of calibration, the log shows"
        f" {float(calib[-1]['seconds']) if calib else 0.0:g}",
    )
    spent = float(last[key]) + extra
    # The wallclock rule (tracks/wallclock-10min.toml): the last step must START inside the limit and may finish
    # after it; everything charged after it (calibration) must fit. Logs without step_seconds: the whole spend.
    started = spent - (float(last.get("step_seconds", 0.0)) if kind == "seconds" else 0.0)
    if kind == "seconds" and "step_seconds" in last and len(steps) > 1:  # it started after the step before it ended
        step_start = float(last["time"]) - float(last["step_seconds"])
        v.check(
            "step-seconds",
            float(last["step_seconds"]) >= 0 and step_start >= float(steps[-2]["time"]) * (1 - 1e-9) - 1e-9,
            f"the last step claims {float(last['step_seconds']):g} s, starting at {step_start:g} s, before the step"
            f" logged before it ended ({float(steps[-2]['time']):g} s)",
        )
    v.check(
        "budget",
        started <= limit * (1 + 1e-9),
        f"the log shows {spent:g} {kind}"
        + (f" ({started:g} before the last step started)" if started != spent else "")
        + f", over the limit {limit:g}",
    )
    v.check(
        "budget-claim",
        math.isclose(spent, float(claimed), rel_tol=1e-9, abs_tol=1e-9),
        f"result claims {claimed:g} {kind} but the log ends at {spent:g}",
    )
    v.check(
        "steps",
        last["step"] == result["steps"],
        f"result claims {result['steps']} steps, the log ends at {last['step']}",
    )
    if kind == "flops" and result.get("adapt_flops"):  # score-first TTT is paid from the same FLOP budget
        total = float(last[key]) + float(result["adapt_flops"])
        v.check(
            "budget-adapt",
            total <= limit * (1 + 1e-9),
            f"training {last[key]:g} + adaptation {result['adapt_flops']:g} FLOPs is over the limit {limit:g}",
        )
    tokens = [e["tokens"] for e in steps]
    v.check("monotonic", all(a < b for a, b in zip(tokens, tokens[1:])), "event tokens are not increasing")
    if kind == "tokens":
        seq = int(manifest["batch"]["seq_len"])
        exact = (int(limit) // seq) * seq
        v.check(
            "fixed-data",
            result["train_tokens"] == exact,
            f"fixed-data must train exactly {exact:,} tokens, the run trained {result['train_tokens']:,}",
        )


def _claims_check(v: Verdict, result: dict, manifest: dict) -> None:
    """result.json must describe the run that run.json records (a leaderboard trusts these fields)."""
    fields = ("track", "scale", "backend", "model", "preset", "seed", "unofficial")
    differ = [k for k in fields if result.get(k) != manifest.get(k)]
    if result.get("hardware_class") != (manifest.get("hardware") or {}).get("class"):
        differ.append("hardware_class")
    v.check("claims", not differ, f"result.json and run.json disagree on {', '.join(differ)}")
    adapt = result.get("adapt_recipe") or "none"
    asked = (manifest.get("spec") or {}).get("adapt") or "none"
    v.check(
        "adaptation", adapt == asked, f"result.json says the score adapted with '{adapt}', run.json asked '{asked}'"
    )
    if adapt != "none":
        try:
            rule = load_track(manifest["track"]).scale(manifest["scale"]).get("eval_adaptation", "none")
        except (GolfError, KeyError):
            rule = "unknown"
        v.check(
            "adaptation-rule",
            rule == "score-first",
            f"the score adapted with '{adapt}' but track '{manifest.get('track')}' allows eval_adaptation '{rule}'",
        )


def _rules_check(v: Verdict, result: dict, manifest: dict, rules: dict) -> None:
    """An official run must have used the track's own budget, eval stride and dataset."""
    problems = []
    if float(manifest["budget"]["limit"]) != float(rules["budget"]):
        problems.append(f"budget {float(manifest['budget']['limit']):g} is not the track's {float(rules['budget']):g}")
    stride = min(int(rules["eval_stride"]), int(manifest.get("eval", {}).get("context") or result["eval_stride"]))
    if int(result["eval_stride"]) != stride:
        problems.append(f"eval stride {result['eval_stride']} is not the track's {stride}")
    if manifest["dataset"].get("id") != rules["dataset"]:
        problems.append(f"dataset '{manifest['dataset'].get('id')}' is not the track's '{rules['dataset']}'")
    pin = rules.get("dataset_sha256")
    if pin and manifest["dataset"].get("full_sha256") != pin:  # content, not the name, is what ran
        problems.append(
            f"dataset content {str(manifest['dataset'].get('full_sha256'))[:12]} is not the track's pinned {pin[:12]}"
        )
    precision, rule = recorded_precision(result), rules.get("eval_precision", "fp32")
    if precision != rule:
        problems.append(f"eval precision {precision} is not the track's {rule}")
    v.check("rules", not problems, "the run claims to be official but its " + "; ".join(problems))


def _code_check(v: Verdict, run_dir: Path, result: dict, manifest: dict) -> None:
    """code_bytes are recounted from the run's code/ snapshot, whose files must be the ones run.json recorded."""
    snap = snapshot_files(run_dir)
    if not v.check("code", bool(snap), f"{run_dir / SNAPSHOT_DIR} is missing: the code that ran cannot be counted"):
        return
    digest = code_digest(snap)
    want = manifest.get("code_sha256") or {}
    changed = sorted(k for k in set(digest) | set(want) if digest.get(k) != want.get(k))
    v.check("code", not changed, f"code/ snapshot differs from what run.json recorded in {', '.join(changed)}")
    size = code_bytes(snap)
    v.check(
        "code-bytes",
        size == result["code_bytes"],
        f"code/ holds {size:,} bytes, result claims {result['code_bytes']:,}",
    )


def _track_cap(manifest: dict) -> int:
    """The artifact cap of the run's track (CAP_BYTES when the track file cannot be read: its own check fails)."""
    try:
        return int(load_track(manifest["track"]).artifact_cap_bytes)
    except (GolfError, KeyError):
        return CAP_BYTES


def _tokenizer_problem(path: Path, claimed: int, manifest: dict) -> tuple[bool, str]:
    """(ok, problem) for the counted tokenizer of a run: ``path`` (artifact.TOKENIZER_FILE) holds ``claimed`` bytes
    and decompresses to the tokenizer the run's dataset had (its sha256 in run.json)."""
    if not path.is_file():
        return False, f"{path.name} is missing: the track counts the tokenizer the run shipped"
    blob = path.read_bytes()
    if len(blob) != claimed:
        return False, f"{path.name} is {len(blob):,} bytes, result claims {claimed:,}"
    try:
        raw = unpack_tokenizer(blob)
    except GolfError as exc:
        return False, str(exc)
    want = manifest.get("dataset", {}).get("tokenizer_sha256")
    if hashlib.sha256(raw).hexdigest() != want:
        return False, f"{path.name} is not the tokenizer of the run's dataset (sha256 differs)"
    return True, ""


def _track_counts_tokenizer(manifest: dict) -> bool:
    """Whether the run's track (at its scale) counts the tokenizer toward the cap: the track file's rule, never the
    result's own claim (False when the track file cannot be read: its own check fails)."""
    try:
        return bool(load_track(manifest["track"]).scale(manifest["scale"]).get("count_tokenizer_bytes", False))
    except (GolfError, KeyError):
        return False


def recorded_precision(result: dict) -> str:
    """The precision a result was scored at: its ``eval_precision``, or fp32 for records older than the field."""
    return str(result.get("eval_precision") or "fp32")


def verify_run(
    run_dir: Path, data: Path | None = None, backend: str | None = None, rescore: bool = True, check_data: bool = True
) -> Verdict:
    """Full check by default; the leaderboard runs the cheap file checks only (check_data=rescore=False)."""
    run_dir = Path(run_dir)
    v = Verdict(run_dir)
    try:
        result = read_json(run_dir / "result.json", "result")
        manifest = read_json(run_dir / "run.json", "run manifest")
    except GolfError as exc:
        v.check("files", False, str(exc))
        return v
    problems = validate_result(result)
    if not v.check("result-schema", not problems, "; ".join(problems[:3])):
        return v
    if not v.check("status", result["status"] == "ok", f"status is '{result['status']}' ({result.get('reason')})"):
        return v
    try:
        _verify_files(v, run_dir, result, manifest, data, backend, rescore, check_data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # a hand-edited or partial record
        v.check(
            "files",
            False,
            f"result.json or run.json has a missing or malformed field ({exc.__class__.__name__}: {exc})",
        )
    return v


def _verify_files(
    v: Verdict,
    run_dir: Path,
    result: dict,
    manifest: dict,
    data: Path | None,
    backend: str | None,
    rescore: bool,
    check_data: bool,
) -> None:
    _claims_check(v, result, manifest)
    try:
        track = load_track(manifest["track"])
        v.check(
            "track-hash",
            track.sha256 == manifest["track_sha256"],
            f"tracks/{track.name}.toml changed since the run (sha256 differs); rules may differ",
        )
        if not manifest.get("unofficial"):
            _rules_check(v, result, manifest, track.scale(manifest["scale"]))
    except GolfError as exc:
        v.check("track-hash", False, str(exc))

    data_dir = Path(data) if data else Path(manifest["dataset"]["dir"])
    dataset = None
    try:
        if not check_data:
            raise _Skip
        if not (data_dir / "manifest.json").is_file():
            v.check("dataset", False, f"the run's dataset {data_dir} is not there; pass --data with its location")
            raise _Skip
        report = verify_dataset(data_dir)
        if not v.check(
            "dataset", report["ok"], "; ".join(report.get("problems", [])[:3]) or "dataset verification failed"
        ):
            raise _Skip
        dataset = Dataset.open(data_dir)
        if not v.check(
            "dataset-hash",
            dataset.manifest_sha256 == manifest["dataset"]["manifest_sha256"],
            f"dataset at {data_dir} is not the one the run used (manifest sha256 differs)",
        ):
            dataset = None  # scoring on other data would prove nothing
    except _Skip:
        pass
    except GolfError as exc:
        v.check("dataset", False, str(exc))

    _code_check(v, run_dir, result, manifest)

    art_path = run_dir / "artifact.golf"
    blob = art_path.read_bytes() if art_path.is_file() else None
    if v.check("artifact", blob is not None, f"{art_path} is missing"):
        v.check(
            "artifact-hash",
            hashlib.sha256(blob).hexdigest() == result.get("artifact_sha256"),
            "artifact.golf is not the artifact the result was computed from (sha256 differs)",
        )
        v.check(
            "artifact-size",
            len(blob) == result["model_bytes"],
            f"artifact.golf is {len(blob):,} bytes, result claims {result['model_bytes']:,}",
        )
        tokenizer = int(result.get("tokenizer_bytes") or 0) if _track_counts_tokenizer(manifest) else 0
        if tokenizer:
            v.check("tokenizer-size", *_tokenizer_problem(run_dir / TOKENIZER_FILE, tokenizer, manifest))
        total = len(blob) + int(result["code_bytes"]) + tokenizer
        v.check(
            "artifact-total",
            total == result["artifact_bytes"],
            f"code + model{' + tokenizer' if tokenizer else ''} = {total:,}, result claims {result['artifact_bytes']:,}",
        )
        cap = _track_cap(manifest)  # the track's rule, never a number the result file states for itself
        v.check("cap", total <= cap, f"artifact total {total:,} bytes is over the {cap:,}-byte cap")
        try:  # the codec and compressor as the artifact itself states them (records before the fields: defaults)
            kind = describe(blob)
            claim = {k: result.get(k, d) for k, d in (("codec", "int8_per_row"), ("compressor", "zstd-22"))}
            v.check(
                "artifact-codec",
                kind == claim,
                f"artifact.golf is {kind['codec']}/{kind['compressor']}, result claims"
                f" {claim['codec']}/{claim['compressor']}",
            )
        except GolfError as exc:
            v.check("artifact-codec", False, str(exc))

    _budget_check(v, result, manifest, read_events(run_dir / "events.jsonl"))

    if rescore and blob is not None and dataset is not None and not any(f.startswith("artifact") for f in v.failures):
        from golfbench.harness.scoring import load_artifact_model, score_weights, score_weights_adaptive

        try:
            loaded = load_artifact_model(blob)
            # The artifact names the run that packed it: one copied in from another run is refused unscored.
            # Artifacts store the architecture only (ModelConfig), so the configs compare on those keys.
            model_keys = get_spec(loaded.model).model_keys
            stated = manifest.get("config")
            origin = {
                "model": loaded.model,
                "preset": loaded.preset,
                "run_id": loaded.meta.get("run_id"),
                "config": {k: loaded.config[k] for k in model_keys},
            }
            claimed = {
                **manifest,
                "config": {k: stated.get(k) for k in model_keys} if isinstance(stated, dict) else stated,
            }
            wrong = [k for k, val in origin.items() if val != claimed.get(k)]
            if not v.check(
                "artifact-origin",
                not wrong,
                f"artifact.golf was made by another run (its {', '.join(wrong)} differ from run.json)",
            ):
                return
            precision = recorded_precision(result)
            recipe = _recorded_recipe(result, manifest)
            common = (
                backend or manifest["backend"],
                loaded.model,
                loaded.config,
                loaded.weights,
                dataset,
                int(result["eval_stride"]),
            )
            context = result.get("eval_context")
            planned = (manifest.get("eval") or {}).get("context")
            if not v.check(
                "eval-context",
                planned is None or context is None or int(planned) == int(context),
                f"result.json says the score used context {context}, run.json planned {planned}",
            ):
                return
            if recipe is None:
                res = score_weights(*common, label="verify", precision=precision, context=context)
            else:  # the score was adaptive: re-derive it with the recipe run.json recorded
                res, _ = score_weights_adaptive(
                    *common, recipe=recipe, label="verify (adaptive)", precision=precision, context=context
                )
            v.recomputed_bpb = res.val_bpb
            rtol = BPB_RTOL_BY_PRECISION[precision]
            v.check(
                "val_bpb",
                math.isclose(res.val_bpb, float(result["val_bpb"]), rel_tol=rtol, abs_tol=0.0),
                f"recomputed val_bpb {res.val_bpb:.8f} ({precision}) differs from the claimed {result['val_bpb']:.8f}"
                f" by more than {rtol:g} relative",
            )
        except GolfError as exc:
            v.check("val_bpb", False, str(exc))
    if v.ok and rescore:
        atomic_write_json(
            run_dir / "verify.json",
            {
                "ok": True,
                "artifact_sha256": result.get("artifact_sha256"),
                "val_bpb": v.recomputed_bpb,
                "checks": v.checks,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
