"""Export runs as a parameter-golf records folder, and validate such folders.

`submission.json` follows harness/schemas/submission.schema.json (one spelling per track, every field typed)
and is validated before it is written; the folder is assembled in a temp dir and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from golfbench.harness.artifact import CAP_BYTES, TOKENIZER_FILE, unpack_tokenizer
from golfbench.harness.code import code_bytes, code_digest, snapshot_files
from golfbench.harness.errors import GolfError
from golfbench.harness.records import atomic_write_bytes, dumps, read_events, read_json
from golfbench.harness.schema import errors as schema_check
from golfbench.harness.schema import load as schema_load
from golfbench.harness.stats import mean_std


def schema() -> dict:
    """The submission.json schema (harness/schemas/submission.schema.json)."""
    return schema_load("submission")


def schema_errors(submission: dict) -> list[str]:
    """Every way ``submission`` breaks the schema (jsonschema), one line each; [] when it validates."""
    return schema_check("submission", submission, "submission")


def _train_log(run_dir: Path, manifest: dict, result: dict) -> str:
    """A parameter-golf-style train log: the manifest first (so a record reproduces from its log), then steps."""
    lines = [f"# golfbench run {manifest['run_id']}", "# run.json:"]
    lines += ["# " + ln for ln in dumps(manifest).splitlines()]
    for e in read_events(run_dir / "events.jsonl"):
        if "step" in e and e.get("loss") is not None:
            lines.append(
                f"step:{e['step']} train_loss:{e['loss']:.4f} train_time:{e['time'] * 1000:.0f}ms"
                f" tokens:{e['tokens']} flops:{e['flops']:.4g} lr_scale:{e['lr_scale']:.4f}"
            )
        elif e.get("event") == "val" and e.get("val_bpb") is not None:  # the val curve, on the fixed val subset
            lines.append(
                f"step:{e['step']} val_loss:{e['val_loss']:.4f} val_bpb:{e['val_bpb']:.4f}"
                f" subset_tokens:{e['subset_tokens']} tokens:{e['tokens']}"
            )
    lines.append(f"final_int8_zstd_roundtrip val_loss:{result['val_loss']:.8f} val_bpb:{result['val_bpb']:.8f}")
    pre = result.get("pre_quant_val_bpb")  # null when the run did not score before quantization
    lines.append(
        f"pre_quant val_bpb:{'n/a' if pre is None else f'{pre:.8f}'} eval_time:{result['eval_seconds'] * 1000:.0f}ms"
    )
    lines.append(f"Total submission size int8+zstd: {result['artifact_bytes']} bytes")
    return "\n".join(lines) + "\n"


def export(run_dirs: list[Path], out: Path, author: str, github_id: str, name: str, blurb: str) -> dict:
    """Write ``out``, a parameter-golf-style records folder, from ok runs that are seeds of one configuration:
    submission.json (validated against the schema first), artifact_seed<N>.golf and train_seed<N>.log per seed,
    src/ (the code snapshot the runs trained with) and a README. Returns the submission dict; val_bpb is the
    mean over seeds (bits per byte), bytes_total the largest compressed model + code bytes.

    Raises GolfError for no runs, a run that is not ok, runs that differ in track, scale, backend, model,
    preset, config or eval stride, a repeated seed, a missing or altered code snapshot, snapshots that differ
    between runs, a submission that would not validate, or an ``out`` that already exists (never overwritten).
    """
    if not run_dirs:
        raise GolfError("give at least one run directory to export")
    runs = []
    for d in run_dirs:
        result = read_json(Path(d) / "result.json", "result")
        manifest = read_json(Path(d) / "run.json", "run manifest")
        if result.get("status") != "ok":
            raise GolfError(f"run {d} has status '{result.get('status')}'; only ok runs can be exported")
        runs.append((Path(d), manifest, result))
    first = runs[0][2]
    same = ("track", "scale", "backend", "model", "preset", "config_sha256", "eval_stride", "eval_context")
    for d, _, r in runs[1:]:
        diff = [k for k in same if r.get(k) != first.get(k)]
        if diff:
            raise GolfError(
                f"run {d} differs from {runs[0][0]} in {diff}: one submission holds seeds of one configuration"
            )
    seeds = [int(r["seed"]) for _, _, r in runs]
    if len(set(seeds)) != len(seeds):
        raise GolfError(f"two runs share a seed ({seeds}); export each seed once")
    # Ship the code that trained the artifacts (each run's snapshot), never today's working tree.
    code_files = snapshot_files(runs[0][0])
    for d, manifest, r in runs:
        snap = snapshot_files(d)
        if not snap:
            raise GolfError(f"run {d} has no code snapshot (code/): it predates them; re-run it to export")
        if code_digest(snap) != manifest.get("code_sha256") or code_bytes(snap) != r["code_bytes"]:
            raise GolfError(
                f"run {d}: its code/ snapshot is not the code it recorded (sha256 or bytes differ); re-run it"
            )
        if code_digest(snap) != code_digest(code_files):
            raise GolfError(f"run {d} ran other code than {runs[0][0]}: one submission holds seeds of one code version")
    bytes_code = code_bytes(code_files)
    # Where the track counts the tokenizer (result count_tokenizer_bytes), it ships in the folder and counts.
    # It ships as the run counted it: the zstd-22 blob the run wrote (artifact.pack_tokenizer, TOKENIZER_FILE).
    tokenizer_file = None
    if first.get("count_tokenizer_bytes"):
        m0 = runs[0][1]["dataset"]
        tokenizer_file = runs[0][0] / TOKENIZER_FILE
        ok = tokenizer_file.is_file()
        if ok:
            try:
                ok = hashlib.sha256(unpack_tokenizer(tokenizer_file.read_bytes())).hexdigest() == m0.get(
                    "tokenizer_sha256"
                )
            except GolfError:
                ok = False
        if not ok:
            raise GolfError(
                f"the track counts the tokenizer, but {tokenizer_file} is missing or not the one the run used"
                " (sha256 differs); re-run to export"
            )
    bytes_tokenizer = tokenizer_file.stat().st_size if tokenizer_file else 0
    bpbs = [float(r["val_bpb"]) for _, _, r in runs]
    losses = [float(r["val_loss"]) for _, _, r in runs]
    seed_results = {}
    for _, _, r in runs:
        seed_results[str(r["seed"])] = {
            "val_bpb": r["val_bpb"],
            "val_loss": r["val_loss"],
            "pre_quant_val_bpb": r["pre_quant_val_bpb"],
            "artifact_bytes": int(r["model_bytes"]) + bytes_code + bytes_tokenizer,
            "artifact_file": f"artifact_seed{r['seed']}.golf",
            "artifact_sha256": r["artifact_sha256"],
            "steps": int(r["steps"]),
            "train_tokens": int(r["train_tokens"]),
            "train_seconds": float(r["train_seconds"]),
            "eval_seconds": float(r["eval_seconds"]),
        }
        if r["pre_quant_val_bpb"] is None:  # not scored (official scale): the schema field is optional
            del seed_results[str(r["seed"])]["pre_quant_val_bpb"]
    manifest0 = runs[0][1]
    cmd = (
        f"golf run --track {first['track']} --scale {first['scale']} --backend {first['backend']} --model"
        f" {first['model']} --preset {first['preset']} --seed <SEED>"
    )
    # an unofficial run reproduces only with its overrides: the command carries them
    recorded = manifest0.get("spec", {})
    if recorded.get("budget") is not None:
        cmd += f" --budget {float(recorded['budget']):g}"
    if recorded.get("eval_stride"):
        cmd += f" --eval-stride {int(recorded['eval_stride'])}"
    if recorded.get("eval_context"):
        cmd += f" --eval-context {int(recorded['eval_context'])}"
    for key, value in (recorded.get("overrides") or {}).items():
        cmd += f" --set {key}={json.dumps(value)}"
    # submission choices that change the score or the bytes: the codec, the compressor, test-time adaptation
    from golfbench.harness.runner import chosen

    for flag, value in chosen(recorded):
        cmd += f" {flag} {value}"
    submission = {
        "author": author,
        "github_id": github_id,
        "name": name,
        "blurb": blurb,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "track": first["track"],
        "scale": first["scale"],
        "backend": first["backend"],
        "model": first["model"],
        "preset": first["preset"],
        "val_bpb": mean_std(bpbs)[0],
        "val_loss": mean_std(losses)[0],
        "val_bpb_std": mean_std(bpbs)[1],
        "bytes_total": max(s["artifact_bytes"] for s in seed_results.values()),
        "bytes_code": bytes_code,
        **({"bytes_tokenizer": bytes_tokenizer} if tokenizer_file else {}),
        "seeds": sorted(seeds),
        "seed_results": seed_results,
        "hardware": manifest0["hardware"]["class"],
        "framework_versions": {k: v for k, v in manifest0["versions"].items()},
        "eval_stride": int(first["eval_stride"]),
        "eval_policy": str(first.get("eval_policy", "")),
        "command": cmd,
    }
    errors = schema_errors(submission)
    if errors:
        raise GolfError(f"the submission would not validate: {errors[0]}")
    out = Path(out)
    if out.exists():
        raise GolfError(f"{out} already exists; choose a new folder (records are never overwritten)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        atomic_write_bytes(tmp / "submission.json", (dumps(submission) + "\n").encode())
        for d, m, r in runs:
            shutil.copyfile(d / "artifact.golf", tmp / f"artifact_seed{r['seed']}.golf")
            atomic_write_bytes(tmp / f"train_seed{r['seed']}.log", _train_log(d, m, r).encode())
        if tokenizer_file:
            shutil.copyfile(tokenizer_file, tmp / TOKENIZER_FILE)
        src = tmp / "src"
        src.mkdir()
        for f in code_files:
            shutil.copyfile(f, src / Path(f).name)
        readme = [
            f"# {name}",
            "",
            blurb,
            "",
            f"- track: `{first['track']}` ({first['scale']}), hardware `{submission['hardware']}`",
            f"- model: `{first['model']}/{first['preset']}` on the `{first['backend']}` backend of golfbench",
            f"- val_bpb: **{submission['val_bpb']:.4f}** ± {submission['val_bpb_std']:.4f} over seeds {sorted(seeds)}",
            f"- bytes: {submission['bytes_total']:,} total ({bytes_code:,} code in `src/` + compressed model"
            + (f" + {bytes_tokenizer:,} {TOKENIZER_FILE}" if tokenizer_file else "")
            + ")",
            f"- eval: {submission['eval_policy']}",
            "",
            "## Reproduce",
            "",
            "```",
            cmd,
            "```",
            "",
            "Re-score an artifact: `golf eval artifact_seed<SEED>.golf --data <dataset> --json`;",
            "check this folder: `golf validate-submission .`",
        ]
        atomic_write_bytes(tmp / "README.md", ("\n".join(readme) + "\n").encode())
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return submission


def validate_folder(folder: Path) -> list[str]:
    """Problems with a records folder (empty = valid): schema, files present, hashes, the size rule."""
    folder = Path(folder)
    try:
        sub = read_json(folder / "submission.json", "submission")
    except GolfError as exc:
        return [str(exc)]
    problems = schema_errors(sub)
    if problems:
        return problems
    src = folder / "src"
    code = sum(len(p.read_bytes()) for p in sorted(src.glob("*.py"))) if src.is_dir() else 0
    if code != sub["bytes_code"]:
        problems.append(f"bytes_code says {sub['bytes_code']:,} but the source files in src/ hold {code:,} bytes")
    tokenizer = int(sub.get("bytes_tokenizer", 0))  # present where the track counts the tokenizer
    if tokenizer:
        tok = folder / TOKENIZER_FILE
        real = tok.stat().st_size if tok.is_file() else None
        if real != tokenizer:
            problems.append(f"bytes_tokenizer says {tokenizer:,} but {TOKENIZER_FILE} holds {real}")
        else:
            try:
                unpack_tokenizer(tok.read_bytes())
            except GolfError as exc:
                problems.append(str(exc))
    for seed, r in sub["seed_results"].items():
        art = folder / r["artifact_file"]
        if not art.is_file():
            problems.append(f"{r['artifact_file']} for seed {seed} is missing")
            continue
        blob = art.read_bytes()
        if r.get("artifact_sha256") and hashlib.sha256(blob).hexdigest() != r["artifact_sha256"]:
            problems.append(f"{r['artifact_file']} does not match its sha256 in submission.json")
        if len(blob) + sub["bytes_code"] + tokenizer != r["artifact_bytes"]:
            problems.append(
                f"seed {seed}: artifact_bytes {r['artifact_bytes']:,} != model {len(blob):,} + code {sub['bytes_code']:,}"
                + (f" + tokenizer {tokenizer:,}" if tokenizer else "")
            )
        if len(blob) + code + tokenizer > CAP_BYTES:
            problems.append(f"seed {seed}: {len(blob) + code + tokenizer:,} bytes is over the {CAP_BYTES:,}-byte cap")
        if not (folder / f"train_seed{seed}.log").is_file():
            problems.append(f"train_seed{seed}.log is missing")
    if sorted(int(s) for s in sub["seed_results"]) != sorted(sub["seeds"]):
        problems.append("seeds and seed_results disagree")
    bpbs = [r["val_bpb"] for r in sub["seed_results"].values()]
    if abs(mean_std(bpbs)[0] - sub["val_bpb"]) > 1e-9:
        problems.append(f"val_bpb {sub['val_bpb']} is not the mean of the seed results ({mean_std(bpbs)[0]})")
    if not (folder / "README.md").is_file():
        problems.append("README.md is missing")
    return problems
