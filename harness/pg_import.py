"""`golf import parameter-golf PATH`: the openai/parameter-golf record history as leaderboard entries.

A record is a folder ``records/<track folder>/<YYYY-MM-DD_Name>/`` holding a ``submission.json`` and the
train logs beside it (``train.log``, ``train_seed{S}.log``, ...). The challenge never had a schema for
submission.json (docs: /work/shared/reference/parameter-golf.md §4.3): half the records lack ``track``, a third
lack ``bytes_total`` or ``val_loss``, and the score, the seeds and the sizes appear under several names. This
module reads what is there, in a fixed order of field names, falls back to the train logs only for what the
JSON lacks, and records the source of every value. What is found nowhere stays ``None`` and is listed in
``missing``; nothing is guessed (a tokenizer is ``unknown`` unless the record names one).

Each record becomes one ``imported.json`` (schema: harness/schemas/imported.schema.json) under
``<runs>/imported/parameter-golf/<track folder>/<record folder>/``. Imported entries are self-reported:
golfbench re-ran nothing, so they are never *verified*, and they rank only among themselves, in cohorts keyed
by the normalized track and the tokenizer variant (`cohort`).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path

from golfbench.harness import schema
from golfbench.harness.errors import GolfError
from golfbench.harness.records import atomic_write_json
from golfbench.harness.stats import mean_std

SOURCE = "parameter-golf"
IMPORT_DIR = Path("imported") / SOURCE
"""Where imports live under a runs folder: <runs>/imported/parameter-golf/ (replaced whole by each import)."""

TRACK_NAMES = {"10min_16mb": "10min_16mb", "non_record_16mb": "non-record 16mb"}
"""Normalized track key -> the words shown on a board (after "parameter-golf ")."""

# Field names in the order they are tried; the first present, non-null number wins.
_BPB_KEYS = ("val_bpb", "mean_val_bpb", "val_bpb_mean", "mean_bpb", "score")
_LOSS_KEYS = ("val_loss", "mean_val_loss", "val_loss_mean", "mean_val_loss_nats", "val_loss_nats")
_BYTES_KEYS = ("bytes_total", "artifact_bytes_max", "artifact_bytes", "artifact_size_bytes")
_STD_KEYS = ("val_bpb_std", "std_bpb", "std_val_bpb")
_SECONDS_KEYS = ("wallclock_seconds", "train_time_seconds", "train_time_s_mean")
_PER_SEED_KEYS = ("seed_results", "seeds", "seed_scores")
_TEXT_KEYS = ("name", "author", "github_id", "date", "blurb", "hardware")

_FINAL_EXACT = re.compile(r"^final_\S*_exact\s+val_loss:\s*([0-9.]+)\s+val_bpb:\s*([0-9.]+)", re.M)
_TOTAL_SIZE = re.compile(r"^Total submission size[^:\n]*:\s*([0-9]+)\s*bytes", re.M)
_TRAIN_LOSS = re.compile(r"^step:(\d+)/\d+\s+train_loss:\s*([0-9.]+)", re.M)
_LOG_SEED = re.compile(r"seed[_-]?(\d+)", re.I)
_SP = re.compile(r"(?:^|[^a-z0-9])sp[_-]?(\d{3,6})(?![0-9])", re.I)
_BYTE = re.compile(r"(?:^|[^a-z0-9])byte(\d{3})(?![0-9])", re.I)
_BPE_WORDS = re.compile(r"(?:sentencepiece|bpe|unigram)\D*(\d{3,6})", re.I)
_LOG_VOCAB = re.compile(r"^\s*vocab_size[:=]\s*(\d+)", re.M)
_LOG_SP_PATH = re.compile(r"fineweb\d*\w*?_sp(\d{3,6})|fineweb_(\d{3,6})_bpe", re.I)
_MAX_CURVE_POINTS = 200


def normalize_track(raw: str | None, folder: str | None = None) -> tuple[str, str]:
    """(normalized track key, source of it) from a submission's ``track`` value, else its track folder name.

    ``10min_16mb`` / ``track_10min_16mb`` -> ``10min_16mb``; every non-record spelling (``non-record-16mb``,
    ``non_record_16mb``, ``track_non_record_16mb``, ``non-record-unlimited-compute-16mb``) ->
    ``non_record_16mb``; another spelling is kept lower-cased with ``-`` as ``_``; neither -> ``unknown``.
    """
    for value, source in ((raw, "submission.json track"), (folder, "records folder name")):
        if not isinstance(value, str) or not value.strip():
            continue
        key = value.strip().lower().replace("-", "_")
        key = key.removeprefix("track_")
        if key.startswith("non_record") and key.endswith("16mb"):
            key = "non_record_16mb"
        if source == "records folder name" and key not in TRACK_NAMES:
            continue  # a folder that is not a track folder says nothing
        return key, source
    return "unknown", "none"


def track_label(key: str) -> str:
    """The board title of a normalized track key: "parameter-golf 10min_16mb", "parameter-golf non-record 16mb"."""
    return f"{SOURCE} {TRACK_NAMES.get(key, key)}"


def tokenizer_variant(sub: dict, record_name: str, logs: dict[str, str]) -> tuple[str, str]:
    """(tokenizer variant such as ``sp1024`` / ``sp8192`` / ``byte260``, source) as the record states it.

    Tried in order: the ``tokenizer`` field (e.g. "SentencePiece BPE 8192"), a ``vocab_size`` field, the record
    folder name (``..._SP8192_...``, ``..._byte260_...``), the submission's ``name``, then the train logs
    (``vocab_size: N`` or an ``_spN`` / ``fineweb_N_bpe`` tokenizer path). ``("unknown", "none")`` when none says.
    """
    tok = sub.get("tokenizer")
    if isinstance(tok, str):
        for rx, fmt in ((_SP, "sp{}"), (_BYTE, "byte{}"), (_BPE_WORDS, "sp{}")):
            m = rx.search(tok)
            if m:
                return fmt.format(m.group(1)), "submission.json tokenizer"
    vocab = sub.get("vocab_size")
    if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0:
        return f"sp{vocab}", "submission.json vocab_size"
    for text, source in ((record_name, "record folder name"), (sub.get("name"), "submission.json name")):
        if isinstance(text, str):
            for rx, fmt in ((_SP, "sp{}"), (_BYTE, "byte{}")):
                m = rx.search(text)
                if m:
                    return fmt.format(m.group(1)), source
    for log_name, text in sorted(logs.items()):
        m = _LOG_VOCAB.search(text)
        if m:
            return f"sp{m.group(1)}", f"{log_name} vocab_size"
        m = _LOG_SP_PATH.search(text)
        if m:
            return f"sp{m.group(1) or m.group(2)}", f"{log_name} tokenizer path"
    return "unknown", "none"


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _first(sub: dict, keys: tuple[str, ...]) -> tuple[float | None, str | None]:
    for k in keys:
        v = _number(sub.get(k))
        if v is not None:
            return v, f"submission.json {k}"
    return None, None


def _per_seed(sub: dict) -> tuple[dict[str, dict], str | None]:
    """{seed: {field: value}} from seed_results / seeds / seed_scores dicts (a list of seeds carries no values)."""
    for k in _PER_SEED_KEYS:
        v = sub.get(k)
        if isinstance(v, dict) and v:
            out = {}
            for seed, vals in v.items():
                if isinstance(vals, dict):
                    out[str(seed)] = vals
                elif _number(vals) is not None:
                    out[str(seed)] = {"val_bpb": vals}
            if out:
                return out, k
    return {}, None


def _seed_of_log(name: str) -> str:
    m = _LOG_SEED.search(name)
    return m.group(1) if m else name


def _curve(text: str) -> list[list[float]]:
    pts = [[int(s), float(loss)] for s, loss in _TRAIN_LOSS.findall(text)]
    if len(pts) > _MAX_CURVE_POINTS:
        stride = math.ceil(len(pts) / _MAX_CURVE_POINTS)
        pts = pts[::stride] + ([pts[-1]] if (len(pts) - 1) % stride else [])
    return pts


def read_record(record: Path, root: Path | None = None) -> dict:
    """One record folder (holding submission.json) -> the imported.json document (see the module docstring).

    ``root``: the clone's root, to store the record's path relative to it. Raises GolfError when
    submission.json is unreadable or not a JSON object. Numbers: val_bpb in bits per byte, val_loss in nats per
    token, bytes_total in bytes, train_seconds in seconds; each ``None`` when nowhere in the record.
    """
    path = record / "submission.json"
    try:
        sub = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GolfError(f"cannot read {path}: {exc}") from None
    if not isinstance(sub, dict):
        raise GolfError(f"{path} is not a JSON object")
    logs = {}
    for p in sorted(record.iterdir()):
        if p.is_file() and p.suffix in (".log", ".txt") and p.name.lower() not in ("requirements.txt",):
            logs[p.name] = p.read_text(encoding="utf-8", errors="replace")
    sources: dict[str, str] = {}

    per_seed, per_seed_key = _per_seed(sub)
    seed_bpb = {s: _number(v.get("val_bpb")) for s, v in per_seed.items() if _number(v.get("val_bpb")) is not None}
    if seed_bpb:
        sources["seed_val_bpb"] = f"submission.json {per_seed_key}"
    # A log's last final_*_exact line is its score. Logs stand for seeds only when their names say which seed
    # (train_seed42.log); several logs that do not (a study's variants) are not averaged into anything.
    log_finals = {name: _FINAL_EXACT.findall(text) for name, text in logs.items()}
    log_finals = {name: f[-1] for name, f in log_finals.items() if f}
    seed_logs = {_seed_of_log(n): f for n, f in sorted(log_finals.items()) if _LOG_SEED.search(n)}
    if len(seed_logs) < len(log_finals):
        log_finals = {"train log": next(iter(log_finals.values()))} if len(log_finals) == 1 else {}
    else:
        log_finals = seed_logs
    if not seed_bpb and len(log_finals) > 1:
        seed_bpb = {seed: float(f[1]) for seed, f in log_finals.items()}
        sources["seed_val_bpb"] = "train logs (last final_*_exact line of each train_seed log)"

    val_bpb, src = _first(sub, _BPB_KEYS)
    if val_bpb is None and seed_bpb:
        val_bpb, src = mean_std(list(seed_bpb.values()))[0], f"mean of per-seed val_bpb ({sources['seed_val_bpb']})"
    if val_bpb is None and log_finals:
        val_bpb = mean_std([float(f[1]) for f in log_finals.values()])[0]
        src = "train logs (mean of the last final_*_exact val_bpb lines)"
    if src:
        sources["val_bpb"] = src

    val_loss, src = _first(sub, _LOSS_KEYS)
    if val_loss is None:
        losses = [_number(v.get("val_loss")) for v in per_seed.values()]
        if losses and all(x is not None for x in losses):
            val_loss, src = mean_std(losses)[0], f"mean of per-seed val_loss (submission.json {per_seed_key})"
    if val_loss is None and log_finals:
        val_loss = mean_std([float(f[0]) for f in log_finals.values()])[0]
        src = "train logs (mean of the last final_*_exact val_loss lines)"
    if src:
        sources["val_loss"] = src

    bytes_total, src = _first(sub, _BYTES_KEYS)
    if bytes_total is None:
        sizes = [_number(v.get("bytes_total", v.get("artifact_bytes"))) for v in per_seed.values()]
        if sizes and all(x is not None for x in sizes):
            bytes_total, src = max(sizes), f"max of per-seed bytes (submission.json {per_seed_key})"
    if bytes_total is None:
        sizes = [int(m[-1]) for m in (_TOTAL_SIZE.findall(t) for t in logs.values()) if m]
        if sizes:
            bytes_total, src = float(max(sizes)), "train logs (last 'Total submission size' line, max over logs)"
    if bytes_total is None:
        bytes_total, src = _first(sub, ("artifact_bytes_mean",))
    if src:
        sources["bytes_total"] = src

    std, src = _first(sub, _STD_KEYS)
    if std is None and len(seed_bpb) > 1:
        std, src = mean_std(list(seed_bpb.values()))[1], "sample std of per-seed val_bpb"
    if src:
        sources["val_bpb_std"] = src

    seeds: list[str] | None = None
    if isinstance(sub.get("seeds"), list) and sub["seeds"]:
        seeds, sources["seeds"] = [str(s) for s in sub["seeds"]], "submission.json seeds"
    elif per_seed:
        seeds, sources["seeds"] = list(per_seed), f"submission.json {per_seed_key}"
    elif _number(sub.get("seed")) is not None:
        seeds, sources["seeds"] = [str(sub["seed"])], "submission.json seed"
    elif any(_LOG_SEED.search(n) for n in logs):
        seeds = sorted({_seed_of_log(n) for n in logs if _LOG_SEED.search(n)})
        sources["seeds"] = "train log file names"

    train_seconds, src = _first(sub, _SECONDS_KEYS)
    if src:
        sources["train_seconds"] = src

    track, sources["track"] = normalize_track(
        sub.get("track") if isinstance(sub.get("track"), str) else None, record.parent.name
    )
    tokenizer, sources["tokenizer"] = tokenizer_variant(sub, record.name, logs)
    doc = {
        "kind": "imported",
        "source": SOURCE,
        "self_reported": True,
        "verified": False,
        "record": str(record.relative_to(root)) if root else record.name,
        "record_name": record.name,
        "track_raw": sub.get("track") if isinstance(sub.get("track"), str) else None,
        "track": track,
        "tokenizer": tokenizer,
        **{k: (str(sub[k]) if isinstance(sub.get(k), (str, int, float)) else None) for k in _TEXT_KEYS},
        "val_bpb": val_bpb,
        "val_bpb_std": std,
        "val_loss": val_loss,
        "bytes_total": int(bytes_total) if bytes_total is not None else None,
        "train_seconds": train_seconds,
        "seeds": seeds,
        "seed_val_bpb": seed_bpb or None,
        "logs": sorted(logs),
        "curves": {name: c for name, c in ((n, _curve(t)) for n, t in sorted(logs.items())) if c},
        "sources": {k: v for k, v in sorted(sources.items()) if v != "none"},
    }
    doc["missing"] = [
        k
        for k in ("track", "tokenizer", "val_bpb", "val_loss", "bytes_total", "seeds", "author", "date")
        if doc[k] is None or doc[k] == "unknown"
    ]
    return doc


def cohort(doc: dict) -> dict:
    """The cohort of an imported entry: source, normalized track and tokenizer variant (all must match to rank)."""
    return {"source": doc["source"], "track": doc["track"], "tokenizer": doc["tokenizer"]}


def find_records(path: Path) -> list[Path]:
    """Record folders under a parameter-golf clone (``records/*/*/submission.json``), sorted; the clone's root
    or its ``records`` folder may be given. Raises GolfError for a path that is not such a clone."""
    path = Path(path)
    if not path.is_dir():
        raise GolfError(f"{path} is not a folder; pass a local clone of openai/parameter-golf")
    records = path / "records" if (path / "records").is_dir() else path
    found = sorted(p.parent for p in records.glob("*/*/submission.json"))
    if not found:
        raise GolfError(f"no records/*/*/submission.json under {path}; pass a local clone of openai/parameter-golf")
    return found


def import_parameter_golf(path: Path, runs: Path) -> list[dict]:
    """Read every record of a parameter-golf clone at ``path`` into ``<runs>/imported/parameter-golf/``.

    All records are read and validated against the imported schema before anything is written; the folder is
    then replaced whole (written beside it, renamed into place), so a re-import replaces the last one and a
    failure leaves the previous import untouched. Returns the documents in record order. Raises GolfError for a
    bad path, an unreadable submission.json or a document the schema refuses.
    """
    path = Path(path)
    records = find_records(path)
    root = path if (path / "records").is_dir() else path.parent
    docs = []
    for rec in records:
        doc = read_record(rec, root)
        problems = schema.errors("imported", doc, rec.name)
        if problems:
            raise GolfError(f"{rec}: {problems[0]}")
        docs.append(doc)
    target = Path(runs) / IMPORT_DIR
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".import-", dir=target.parent))
    try:
        for rec, doc in zip(records, docs):
            atomic_write_json(tmp / rec.parent.name / rec.name / "imported.json", doc)
        old = None
        if target.exists():
            old = target.parent / f"{tmp.name}-old"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return docs
