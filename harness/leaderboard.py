"""Per-cohort leaderboards from run records: one board per cohort (harness/cohort.py: track and version, scale,
dataset content, eval stride/context/precision, hardware class), so runs scored on other data, another
tokenizer or another eval policy are never averaged or ranked together.

Entries group runs with the same (model, preset, backend, config hash, TTT recipe, codec, compressor) across
seeds (a repeated seed is skipped with a warning); they rank by mean
val_bpb; each row shows the one-sided Welch p-value that it is worse than the entry above. Only runs whose
files pass the verifier's file checks, with status ok and not unofficial (unless asked), are counted;
malformed or partial results are skipped with a warning.

Imported entries (`golf import parameter-golf`, harness/pg_import.py: ``imported/**/imported.json``) form
their own boards, one per (source, normalized track, tokenizer) cohort, marked "imported, self-reported" and
never verified; they never share a board with a golfbench run. A value a record lacks is shown as "—".
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from golfbench.harness.cohort import COHORT_FIELDS, cohort_key, cohort_label
from golfbench.harness.records import read_json, validate_result
from golfbench.harness.stats import mean_std, welch_one_sided
from golfbench.harness.verify import verify_run


@dataclass
class Entry:
    """One leaderboard row: the ok runs (result.json dicts, each with ``_dir`` and ``_rescored``) of one model,
    preset, backend and config sha256 under one budget and eval stride, official or not; its seeds are pooled.
    ``p_vs_above``: one-sided Welch p-value that the entry ranked just above has the lower mean BPB (None for
    the first row or with fewer than 2 seeds a side).
    """

    model: str
    preset: str
    backend: str
    config_sha256: str
    budget_limit: float | None = None
    eval_stride: int | None = None
    unofficial: bool = False
    adapt: str = "none"  # the score-first TTT recipe the runs were scored with (harness/adapt.py): not a seed of "none"
    codec: str = "int8_per_row"  # the artifact codec and compressor (harness/artifact.py): other bytes, other scores
    compressor: str = "zstd-22"
    runs: list[dict] = field(default_factory=list)
    p_vs_above: float | None = None

    @property
    def bpbs(self) -> list[float]:
        """val_bpb (bits per byte) of each run, in run order."""
        return [float(r["val_bpb"]) for r in self.runs]

    @property
    def mean(self) -> float:
        """Mean val_bpb over the runs (bits per byte): the rank key."""
        return mean_std(self.bpbs)[0]

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1) of val_bpb over the runs; 0.0 for one run."""
        return mean_std(self.bpbs)[1]

    @property
    def seeds(self) -> list[int]:
        """The runs' seeds, sorted."""
        return sorted(int(r["seed"]) for r in self.runs)

    @property
    def artifact_bytes(self) -> int:
        """The largest total artifact size over the runs: compressed model + code (+ the tokenizer where the track
        counts it) bytes, what the cap limits."""
        return max(int(r["artifact_bytes"]) for r in self.runs)

    @property
    def verified(self) -> bool:
        """True when every run carries a verify.json stamp for its artifact's sha256 (`golf verify` rescored it)."""
        return all(r.get("_rescored") for r in self.runs)

    def to_dict(self, rank: int) -> dict:
        """The row as JSON-ready data at ``rank`` (1-based); ``record_eligible`` means at least 3 seeds."""
        return {
            "rank": rank,
            "model": self.model,
            "preset": self.preset,
            "backend": self.backend,
            "config_sha256": self.config_sha256,
            "unofficial": self.unofficial,
            "budget_limit": self.budget_limit,
            "eval_stride": self.eval_stride,
            "adapt": self.adapt,
            "codec": self.codec,
            "compressor": self.compressor,
            "mean_val_bpb": self.mean,
            "std_val_bpb": self.std,
            "seeds": self.seeds,
            "n_seeds": len(self.runs),
            "artifact_bytes": self.artifact_bytes,
            "p_vs_above": self.p_vs_above,
            "rescored": self.verified,
            "record_eligible": len(self.runs) >= 3,
            "run_dirs": [r["_dir"] for r in self.runs],
        }


@dataclass
class ImportedEntry:
    """One imported record (an imported.json document, harness/pg_import.py) as a leaderboard row. Self-reported:
    ``verified`` is always False. ``p_vs_above`` as for `Entry`, from the per-seed val_bpb the record lists
    (None when either side lists fewer than 2)."""

    doc: dict
    path: str = ""
    p_vs_above: float | None = None
    unofficial = False

    @property
    def label(self) -> str:
        """The submission's name (else its record folder name)."""
        return self.doc.get("name") or self.doc["record_name"]

    @property
    def backend(self) -> str:
        """What stands in a golfbench row's backend column: the record's source ("parameter-golf")."""
        return self.doc["source"]

    @property
    def mean(self) -> float | None:
        """The record's val_bpb (bits per byte; its mean over seeds where it states one), None when missing."""
        return self.doc.get("val_bpb")

    @property
    def std(self) -> float | None:
        """The record's val_bpb std over seeds, None when it gives neither the std nor per-seed values."""
        return self.doc.get("val_bpb_std")

    @property
    def bpbs(self) -> list[float]:
        """The per-seed val_bpb the record lists (bits per byte), [] when none."""
        return list((self.doc.get("seed_val_bpb") or {}).values())

    @property
    def n(self) -> int | None:
        """How many seeds the record names, None when it names none."""
        return len(self.doc["seeds"]) if self.doc.get("seeds") else None

    @property
    def artifact_bytes(self) -> int | None:
        """bytes_total as reported (model + code), None when missing."""
        return self.doc.get("bytes_total")

    @property
    def verified(self) -> bool:
        """Always False: golfbench re-ran nothing of an imported record."""
        return False

    def to_dict(self, rank: int | None) -> dict:
        """The row as JSON-ready data; ``rank`` None for a record without val_bpb (listed, never ranked)."""
        d = self.doc
        return {
            "rank": rank,
            "imported": True,
            "self_reported": True,
            "rescored": False,
            "name": self.label,
            "record": d["record"],
            "author": d.get("author"),
            "date": d.get("date"),
            "mean_val_bpb": self.mean,
            "std_val_bpb": self.std,
            "val_loss": d.get("val_loss"),
            "seeds": d.get("seeds"),
            "n_seeds": self.n,
            "artifact_bytes": self.artifact_bytes,
            "p_vs_above": self.p_vs_above,
            "missing": d.get("missing", []),
            "sources": d.get("sources", {}),
            "path": self.path,
        }


@dataclass
class Board:
    """One cohort's ranked entries. ``cohort``: the COHORT_FIELDS values every run on the board shares (for an
    imported board: source, track, tokenizer). ``imported``: entries are `ImportedEntry` rows."""

    track: str
    scale: str
    hardware: str
    entries: list
    cohort: dict = field(default_factory=dict)
    imported: bool = False

    @property
    def label(self) -> str:
        """The cohort in words (`cohort_label`; for imports "imported, self-reported · ... · tokenizer sp1024")."""
        if self.imported:
            return f"imported, self-reported · {self.track} · tokenizer {self.cohort.get('tokenizer')}"
        return cohort_label(self.cohort)

    @property
    def title(self) -> str:
        """The board's heading: "track · scale · hardware" (imports: "parameter-golf 10min_16mb · sp1024")."""
        if self.imported:
            return f"{self.track} · {self.scale}"
        return f"{self.track} · {self.scale} · {self.hardware}"


@dataclass
class Collected:
    """What `collect` found: one Board per cohort, the warnings for skipped records, and ``skipped``, the count of runs
    left out for status or unofficial budget."""

    boards: list[Board]
    warnings: list[str]
    skipped: int


def collect(runs_dir: Path, track: str | None = None, include_unofficial: bool = False) -> Collected:
    """Boards from every result.json under ``runs_dir`` (recursively), optionally of one ``track``.

    A run counts when its result is well-formed, its status is ok, it is official (or ``include_unofficial``)
    and its files pass `verify_run` without rescoring; unreadable, malformed or failing records are skipped with
    a warning, never fatal. Boards are ordered by cohort key, entries within a board by mean val_bpb.
    """
    warnings: list[str] = []
    skipped = 0
    groups: dict[tuple, dict[tuple, Entry]] = {}
    for path in sorted(Path(runs_dir).rglob("result.json")):
        run_dir = path.parent
        try:
            result = read_json(path, "result")
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped, never fatal
            warnings.append(f"skipped {path}: {exc}")
            continue
        problems = validate_result(result)
        if problems:
            warnings.append(f"skipped {path}: malformed result ({problems[0]})")
            continue
        if track and result["track"] != track:
            continue
        if result["status"] != "ok" or (result["unofficial"] and not include_unofficial):
            skipped += 1
            continue
        verdict = verify_run(run_dir, rescore=False, check_data=False)
        if not verdict.ok:
            warnings.append(f"skipped {run_dir}: {verdict.failures[0]}")
            continue
        stamp = run_dir / "verify.json"
        try:
            rescored = stamp.exists() and read_json(stamp).get("artifact_sha256") == result.get("artifact_sha256")
        except Exception:  # noqa: BLE001
            rescored = False
        result = {**result, "_dir": str(run_dir), "_rescored": rescored}
        board_key = cohort_key(result)
        # Seeds group only under identical rules: an overridden budget or stride is another entry, never a seed.
        entry_key = (
            result["model"],
            result["preset"],
            result["backend"],
            result.get("config_sha256", ""),
            result.get("budget_limit"),
            result.get("eval_stride"),
            bool(result["unofficial"]),
            result.get("adapt_recipe") or "none",
            result.get("codec") or "int8_per_row",
            result.get("compressor") or "zstd-22",
        )
        entry = groups.setdefault(board_key, {}).setdefault(entry_key, Entry(*entry_key))
        if any(r["seed"] == result["seed"] for r in entry.runs):  # a repeated seed is not another sample
            warnings.append(
                f"skipped {run_dir}: seed {result['seed']} of this entry is already {entry.runs[0]['_dir']}"
            )
            continue
        entry.runs.append(result)
    boards = []
    for key, entries in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        cohort = dict(zip(COHORT_FIELDS, key))
        ranked = sorted(entries.values(), key=lambda e: e.mean)
        for above, entry in zip(ranked, ranked[1:]):
            entry.p_vs_above = welch_one_sided(above.bpbs, entry.bpbs)
        boards.append(Board(cohort["track"], cohort["scale"], cohort["hardware_class"] or "unknown", ranked, cohort))
    boards += _imported_boards(Path(runs_dir), track, warnings)
    return Collected(boards, warnings, skipped)


def _imported_boards(runs_dir: Path, track: str | None, warnings: list[str]) -> list[Board]:
    """Boards of the imported.json documents under ``runs_dir``: one per (source, track, tokenizer), ranked by
    val_bpb; records without val_bpb follow, unranked. A malformed document is skipped with a warning."""
    from golfbench.harness import pg_import, schema

    groups: dict[tuple, list[ImportedEntry]] = {}
    for path in sorted(runs_dir.rglob("imported.json")):
        try:
            doc = read_json(path, "imported entry")
        except Exception as exc:  # noqa: BLE001 - skipped, never fatal
            warnings.append(f"skipped {path}: {exc}")
            continue
        problems = schema.errors("imported", doc)
        if problems:
            warnings.append(f"skipped {path}: malformed imported entry ({problems[0]})")
            continue
        label = pg_import.track_label(doc["track"])
        if track and track not in (doc["track"], label):
            continue
        key = tuple(pg_import.cohort(doc).values())
        groups.setdefault(key, []).append(ImportedEntry(doc, str(path.parent)))
    boards = []
    for key, entries in sorted(groups.items()):
        source, trk, tok = key
        ranked = sorted((e for e in entries if e.mean is not None), key=lambda e: (e.mean, e.label))
        for above, entry in zip(ranked, ranked[1:]):
            entry.p_vs_above = welch_one_sided(above.bpbs, entry.bpbs)
        unranked = sorted((e for e in entries if e.mean is None), key=lambda e: e.label)
        board = Board(
            pg_import.track_label(trk),
            tok,
            "self-reported",
            ranked + unranked,
            dict(zip(("source", "track", "tokenizer"), key)),
            True,
        )
        boards.append(board)
    return boards


HISTORY = {("wallclock-10min", "official"): ("parameter-golf", "10min_16mb", "sp1024")}
"""golfbench (track, scale) -> the imported cohort (source, track, tokenizer) played under the same rules: FineWeb
sp1024 val, the 16,000,000-byte cap, 600 s of training on 8×H100. A board there is shown against that history
(`standing`); the two are never pooled or ranked together (the records are self-reported, their eval policies
vary)."""


def standing(board: Board, collected: Collected) -> tuple[Board, list[dict]] | None:
    """Where each entry of a golfbench ``board`` would place among the imported records of its `HISTORY` cohort:
    (that imported board, [{"entry", "mean_val_bpb", "place", "of", "above", "below"}]) where place = 1 + the
    records with a lower val_bpb, of = ranked records + 1, above/below = the neighbouring records' names (None at
    an end). None when the board has no history or none was imported."""
    want = HISTORY.get((board.track, board.scale))
    if board.imported or want is None:
        return None
    hist = next((b for b in collected.boards if b.imported and tuple(b.cohort.values()) == want), None)
    if hist is None:
        return None
    records = [e for e in hist.entries if e.mean is not None]
    rows = []
    for e in board.entries:
        better = [r for r in records if r.mean < e.mean]
        worse = [r for r in records if r.mean >= e.mean]
        rows.append(
            {
                "entry": _label(e).replace(f"{e.model}/{e.preset}", f"{e.model}/{e.preset}@{e.backend}", 1),
                "mean_val_bpb": e.mean,
                "place": len(better) + 1,
                "of": len(records) + 1,
                "above": better[-1].label if better else None,
                "below": worse[0].label if worse else None,
            }
        )
    return hist, rows


def _dash(value, fmt: str = "{}") -> str:
    """``fmt`` of ``value``, or "—" for a value the record does not give."""
    return "—" if value is None else fmt.format(value)


def _label(e: Entry) -> str:
    return (
        f"{e.model}/{e.preset}"
        + (f" + TTT {e.adapt}" if e.adapt != "none" else "")
        + (f" [{e.codec}]" if e.codec != "int8_per_row" else "")
        + (f" [{e.compressor}]" if e.compressor != "zstd-22" else "")
        + (
            f" (unofficial, budget {e.budget_limit:g})"
            if e.unofficial and e.budget_limit
            else " (unofficial)"
            if e.unofficial
            else ""
        )
    )


def _p(p: float | None) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def to_markdown(collected: Collected) -> str:
    """The boards as Markdown tables, one section per cohort (a line saying none is eligible when empty)."""
    lines = []
    for b in collected.boards:
        if b.imported:
            lines += _imported_markdown(b)
            continue
        lines += [
            f"## {b.track} · {b.scale} · {b.hardware}",
            "",
            f"cohort: {b.label}",
            "",
            "| Rank | Model | Backend | Score (val_bpb) | Std | Seeds | Bytes | p vs above | Verified |",
            "|---:|---|---|---:|---:|---:|---:|---:|:---:|",
        ]
        for i, e in enumerate(b.entries, 1):
            lines.append(
                f"| {i} | {_label(e)} | {e.backend} | {e.mean:.4f} | {e.std:.4f} | {len(e.runs)} |"
                f" {e.artifact_bytes:,} | {_p(e.p_vs_above)} | {'✓' if e.verified else 'files'} |"
            )
        hist = standing(b, collected)
        if hist:
            lines.append("")
            lines.append(f"Against the record history ({hist[0].title}, imported, self-reported; not pooled):")
            for r in hist[1]:
                lines.append(f"- {r['entry']}: {r['mean_val_bpb']:.4f} would place {r['place']} of {r['of']}")
        lines.append("")
    if not collected.boards:
        lines.append("_no eligible runs (status ok, official budget, files verified)_")
    return "\n".join(lines).rstrip() + "\n"


def _imported_markdown(b: Board) -> list[str]:
    lines = [
        f"## {b.title} (imported, self-reported)",
        "",
        f"cohort: {b.label}",
        "",
        "| Rank | Submission | Author | Date | Score (val_bpb) | Std | Seeds | Bytes | p vs above | Verified |",
        "|---:|---|---|---|---:|---:|---:|---:|---:|:---:|",
    ]
    rank = 0
    for e in b.entries:
        rank += e.mean is not None
        name = e.label.replace("|", "\\|")
        lines.append(
            f"| {rank if e.mean is not None else '—'} | {name} | {_dash(e.doc.get('author'))} |"
            f" {_dash(e.doc.get('date'))} | {_dash(e.mean, '{:.4f}')} | {_dash(e.std, '{:.4f}')} | {_dash(e.n)} |"
            f" {_dash(e.artifact_bytes, '{:,}')} | {_p(e.p_vs_above)} | imported, self-reported |"
        )
    return lines + [""]


def _board_json(b: Board, collected: Collected) -> dict:
    if b.imported:
        rank = 0
        rows = []
        for e in b.entries:
            rank += e.mean is not None
            rows.append(e.to_dict(rank if e.mean is not None else None))
        return {"track": b.track, "tokenizer": b.scale, "imported": True, "cohort": b.cohort, "entries": rows}
    hist = standing(b, collected)
    return {
        "track": b.track,
        "scale": b.scale,
        "hardware": b.hardware,
        "cohort": b.cohort,
        "entries": [e.to_dict(i) for i, e in enumerate(b.entries, 1)],
        **({"history": {"board": hist[0].title, "standing": hist[1]}} if hist else {}),
    }


def to_json(collected: Collected) -> str:
    """The boards and warnings as indented JSON (entries as `Entry.to_dict`)."""
    return json.dumps(
        {
            "boards": [_board_json(b, collected) for b in collected.boards],
            "warnings": collected.warnings,
        },
        indent=2,
    )


_CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:980px;color:#1d2330}
h1{font-size:1.5rem}h2{font-size:1.1rem;margin-top:2rem}table{border-collapse:collapse;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #dde2ea;text-align:left}td.n,th.n{text-align:right;
font-variant-numeric:tabular-nums}tr:first-child td{font-weight:600}.w{color:#8a5a00}"""


def to_html(collected: Collected) -> str:
    """The boards as one self-contained HTML page (inline CSS; every string from records escaped), warnings last."""
    esc = html.escape
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>golfbench leaderboard</title>",
        f"<style>{_CSS}</style></head><body><h1>golfbench leaderboard</h1>",
    ]
    for b in collected.boards:
        if b.imported:
            parts.append(f"<h2>{esc(b.title)}</h2><p>cohort: {esc(b.label)}</p>{imported_table_html(b)}")
            continue
        parts.append(
            f"<h2>{esc(b.track)} · {esc(b.scale)} · {esc(b.hardware)}</h2><p>cohort: {esc(b.label)}</p>"
            "<table><tr><th class=n>Rank</th>"
            "<th>Model</th><th>Backend</th><th class=n>val_bpb</th><th class=n>Std</th><th class=n>Seeds</th>"
            "<th class=n>Bytes</th><th class=n>p vs above</th><th>Verified</th></tr>"
        )
        for i, e in enumerate(b.entries, 1):
            parts.append(
                f"<tr><td class=n>{i}</td><td>{esc(_label(e))}</td><td>{esc(e.backend)}</td>"
                f"<td class=n>{e.mean:.4f}</td><td class=n>{e.std:.4f}</td><td class=n>{len(e.runs)}</td>"
                f"<td class=n>{e.artifact_bytes:,}</td><td class=n>{_p(e.p_vs_above)}</td>"
                f"<td>{'✓ rescored' if e.verified else 'files'}</td></tr>"
            )
        parts.append("</table>")
    if not collected.boards:
        parts.append("<p>No eligible runs.</p>")
    for w in collected.warnings:
        parts.append(f"<p class=w>{esc(w)}</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def imported_table_html(b: Board, link=None) -> str:
    """An imported board's rows as an HTML table (every string escaped; "—" where the record gives nothing).
    ``link``: optional function entry -> relative href of the entry's page."""
    esc = html.escape
    parts = [
        "<table class=board><thead><tr><th class=n>Rank</th><th>Submission</th><th>Author</th><th>Date</th>"
        "<th class=n>val_bpb</th><th class=n>Std</th><th class=n>Seeds</th><th class=n>Bytes</th>"
        "<th class=n>p vs above</th><th>Verified</th></tr></thead><tbody>"
    ]
    rank = 0
    for e in b.entries:
        rank += e.mean is not None
        name = esc(e.label)
        if link:
            name = f"<a href='{esc(link(e))}'>{name}</a>"
        parts.append(
            f"<tr class=entry><td class=n>{rank if e.mean is not None else '—'}</td><td>{name}</td>"
            f"<td>{esc(_dash(e.doc.get('author')))}</td><td>{esc(_dash(e.doc.get('date')))}</td>"
            f"<td class=n>{_dash(e.mean, '{:.4f}')}</td><td class=n>{_dash(e.std, '{:.4f}')}</td>"
            f"<td class=n>{_dash(e.n)}</td><td class=n>{_dash(e.artifact_bytes, '{:,}')}</td>"
            f"<td class=n>{_p(e.p_vs_above)}</td><td class=imp>imported, self-reported</td></tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


FORMATS = {"md": to_markdown, "json": to_json, "html": to_html}
