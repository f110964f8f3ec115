"""Per-cohort leaderboards from run records: one board per cohort (harness/cohort.py: track and version, scale,
dataset content, eval stride/context/precision, hardware class), so runs scored on other data, another
tokenizer or another eval policy are never averaged or ranked together.

Entries group runs with the same (model, preset, backend, config hash, TTT recipe) across seeds; they rank by mean
val_bpb; each row shows the one-sided Welch p-value that it is worse than the entry above. Only runs whose
files pass the verifier's file checks, with status ok and not unofficial (unless asked), are counted;
malformed or partial results are skipped with a warning.
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
        """The largest total artifact size over the runs: compressed model + code bytes (what the cap limits)."""
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
class Board:
    """One cohort's ranked entries. ``cohort``: the COHORT_FIELDS values every run on the board shares."""

    track: str
    scale: str
    hardware: str
    entries: list[Entry]
    cohort: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The cohort in words (`cohort_label`)."""
        return cohort_label(self.cohort)


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
        )
        entries = groups.setdefault(board_key, {})
        entries.setdefault(entry_key, Entry(*entry_key)).runs.append(result)
    boards = []
    for key, entries in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        cohort = dict(zip(COHORT_FIELDS, key))
        ranked = sorted(entries.values(), key=lambda e: e.mean)
        for above, entry in zip(ranked, ranked[1:]):
            entry.p_vs_above = welch_one_sided(above.bpbs, entry.bpbs)
        boards.append(Board(cohort["track"], cohort["scale"], cohort["hardware_class"] or "unknown", ranked, cohort))
    return Collected(boards, warnings, skipped)


def _label(e: Entry) -> str:
    return (
        f"{e.model}/{e.preset}"
        + (f" + TTT {e.adapt}" if e.adapt != "none" else "")
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
        lines.append("")
    if not collected.boards:
        lines.append("_no eligible runs (status ok, official budget, files verified)_")
    return "\n".join(lines).rstrip() + "\n"


def to_json(collected: Collected) -> str:
    """The boards and warnings as indented JSON (entries as `Entry.to_dict`)."""
    return json.dumps(
        {
            "boards": [
                {
                    "track": b.track,
                    "scale": b.scale,
                    "hardware": b.hardware,
                    "cohort": b.cohort,
                    "entries": [e.to_dict(i) for i, e in enumerate(b.entries, 1)],
                }
                for b in collected.boards
            ],
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


FORMATS = {"md": to_markdown, "json": to_json, "html": to_html}
