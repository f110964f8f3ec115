"""`golf leaderboard --format html --out DIR`: the leaderboards as a static site that opens offline.

Layout of DIR (every page plain HTML with inline CSS and a few lines of inline JS that sort a table by a
clicked column; every plot an SVG file written by matplotlib into ``plots/``; no URL outside DIR anywhere):

- ``index.html``: one row per board (track and cohort), its entry count and best val_bpb, linking to
- ``board-<slug>.html``: the ranked table (mean ± std val_bpb, n seeds, one-sided Welch p vs the row above,
  artifact bytes, verified) and three Pareto plots, val_bpb against artifact bytes, training FLOPs and
  training seconds; the Pareto front (no other entry is both smaller on the axis and lower in val_bpb) is
  drawn as a line and its points highlighted. Each row links to
- ``entry-<slug>.html``: one entry's seeds (val_bpb, bytes, seconds, FLOPs, steps, verified) and the train
  loss curve of every seed (events.jsonl: nats/token vs training tokens). Imported entries (harness/pg_import.py)
  show what the record reports with the source of each value, what it lacks, and the train-loss lines of its
  logs (vs step); they are marked "imported, self-reported" and are never verified.

The site is written into a temporary folder beside DIR and renamed into place, so DIR is always a whole old site
or a whole new one. DIR must be new, empty or a site written here before (it holds ``.golf-site``); anything
else is refused in one line, never overwritten. Every string taken from a record is escaped (html.escape):
imported submission names are untrusted.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from golfbench.harness.errors import GolfError
from golfbench.harness.leaderboard import Board, Collected, Entry, ImportedEntry, imported_table_html, standing
from golfbench.harness.records import read_events

MARKER = ".golf-site"
"""The file that marks a folder as a site written by `write_site` (which may then replace it)."""

AXES = (
    ("bytes", "artifact bytes (model + code + tokenizer where counted)"),
    ("flops", "training FLOPs (model)"),
    ("seconds", "training seconds"),
)
"""The Pareto plots' x axes: (key, axis label); y is always mean val_bpb."""

_CSS = """body{font:15px/1.45 system-ui,sans-serif;margin:1.5rem auto;max-width:1100px;padding:0 1rem;color:#1d2330}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}a{color:#1f5fbf}table{border-collapse:collapse;width:100%}
th,td{padding:.35rem .6rem;border-bottom:1px solid #dde2ea;text-align:left;vertical-align:top}
th{cursor:pointer;background:#f3f5f9;user-select:none}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.board tbody tr:first-child td{font-weight:600}.w{color:#8a5a00}.imp{color:#8a5a00;font-style:italic}
.ok{color:#137333}.plots{display:flex;flex-wrap:wrap;gap:.8rem}.plots figure{margin:0;flex:1 1 330px;max-width:760px}
.plots img{width:100%;height:auto;border:1px solid #dde2ea}figcaption,.note{color:#5b6472;font-size:.85rem}
nav{font-size:.9rem;margin-bottom:1rem}code{font-size:.85rem}"""

_SORT_JS = """document.querySelectorAll('table.sortable').forEach(function(t){t.querySelectorAll('th').forEach(
function(th,i){th.addEventListener('click',function(){var b=t.tBodies[0],r=[].slice.call(b.rows),
d=th.dataset.d=th.dataset.d==='a'?'d':'a';function k(x){return x.cells[i].textContent.replace(/,/g,'')}
r.sort(function(x,y){var a=parseFloat(k(x)),c=parseFloat(k(y)),o=(isNaN(a)||isNaN(c))?k(x).localeCompare(k(y)):a-c;
return d==='a'?o:-o});r.forEach(function(x){b.appendChild(x)})})})});"""

esc = html.escape


def _slug(words: str, *key) -> str:
    """A file-name-safe slug: up to 40 characters of ``words`` plus 8 hex digits of sha256 over ``key``."""
    text = re.sub(r"[^a-z0-9]+", "-", words.lower()).strip("-")[:40].strip("-")
    return f"{text}-{hashlib.sha256(repr((words, key)).encode()).hexdigest()[:8]}"


def _page(title: str, body: str, nav: str = "") -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<nav>{nav}</nav><h1>{esc(title)}</h1>{body}<script>{_SORT_JS}</script></body></html>\n"
    )


def _num(value, fmt: str = "{}") -> str:
    return "—" if value is None else fmt.format(value)


def _p(p: float | None) -> str:
    return "–" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}")


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the Pareto-optimal points of ``points`` [(x, y)], lower being better on both axes, in order of
    increasing x: a point is on the front when no other point has x <= its x and y < its y (ties in x keep the
    lower y only). Points with a None coordinate are never on it."""
    order = sorted((i for i, (x, y) in enumerate(points) if x is not None and y is not None), key=lambda i: points[i])
    front, best = [], float("inf")
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def _entry_axes(e) -> dict:
    """x values of an entry on the Pareto axes: bytes (max over seeds), mean FLOPs and mean seconds (None when
    unknown; imported records report no FLOPs)."""
    if isinstance(e, ImportedEntry):
        return {"bytes": e.artifact_bytes, "flops": None, "seconds": e.doc.get("train_seconds")}
    flops = [r.get("train_flops") for r in e.runs]
    secs = [r.get("train_seconds") for r in e.runs]
    return {
        "bytes": e.artifact_bytes,
        "flops": sum(flops) / len(flops) if all(f is not None for f in flops) else None,
        "seconds": sum(secs) / len(secs) if all(s is not None for s in secs) else None,
    }


class _Plotter:
    """matplotlib (Agg) writing deterministic SVG files (fixed hash salt, no date in the metadata)."""

    def __init__(self, root: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        plt.rcParams["svg.hashsalt"] = "golfbench"
        plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller files, selectable labels
        self.plt, self.root, self.count = plt, root, 0
        (root / "plots").mkdir()

    def save(self, fig, name: str) -> str:
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
        self.plt.close(fig)
        rel = f"plots/{name}.svg"
        (self.root / rel).write_text(buf.getvalue(), encoding="utf-8")
        self.count += 1
        return rel

    def pareto(self, name: str, xs: list, ys: list, ranks: list[str], xlabel: str, title: str) -> str | None:
        """val_bpb vs one axis, the front highlighted; None when no entry has a value on the axis."""
        pts = list(zip(xs, ys))
        have = [i for i, (x, y) in enumerate(pts) if x is not None and y is not None]
        if not have:
            return None
        front = pareto_front(pts)
        fig, ax = self.plt.subplots(figsize=(4.6, 3.4))
        ax.scatter([xs[i] for i in have], [ys[i] for i in have], s=28, color="#9aa5b5", zorder=2, label="entry")
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "-o", color="#d9480f", lw=1.6, ms=6, zorder=3,
                label="Pareto front")  # fmt: skip
        for i in have:
            ax.annotate(ranks[i], (xs[i], ys[i]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("val_bpb (mean)")
        ax.set_title(_plain(title), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return self.save(fig, name)

    def curves(self, name: str, curves: dict[str, list[tuple[float, float]]], xlabel: str, title: str) -> str | None:
        """Train loss of every seed (label -> [(x, loss)]); None when no curve has a point."""
        curves = {k: v for k, v in curves.items() if v}
        if not curves:
            return None
        fig, ax = self.plt.subplots(figsize=(7.5, 4))
        for label, pts in curves.items():
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.3, label=_plain(label))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("train loss (nats/token)")
        ax.set_title(_plain(title), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        return self.save(fig, name)


def _plain(text: str) -> str:
    """``text`` for matplotlib as literal text: a ``$`` would start mathtext (and a bad formula fails the draw)."""
    return str(text).replace("$", r"\$")


def _figure(src: str | None, caption: str, missing: str) -> str:
    if src is None:
        return f"<figure class=noplot><p class=note>{esc(missing)}</p><figcaption>{esc(caption)}</figcaption></figure>"
    return (
        f"<figure><img class=plot src='{esc(src)}' alt='{esc(caption)}' onload=\"this.dataset.loaded='1'\">"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _entry_name(e) -> str:
    if isinstance(e, ImportedEntry):
        return e.label
    name = f"{e.model}/{e.preset}@{e.backend}"
    if e.unofficial:
        name += f" (unofficial, budget {e.budget_limit:g})" if e.budget_limit else " (unofficial)"
    return name


def _board_table(b: Board, links: dict[int, str]) -> str:
    if b.imported:
        return imported_table_html(b, link=lambda e: links[id(e)]).replace(
            "<table class=board>", "<table class='board sortable'>", 1
        )
    rows = [
        "<table class='board sortable'><thead><tr><th class=n>Rank</th><th>Entry</th><th class=n>val_bpb (mean ± std)</th>"
        "<th class=n>n</th><th class=n>Seeds</th><th class=n>p vs above</th><th class=n>Bytes</th>"
        "<th class=n>Train FLOPs</th><th class=n>Train s</th><th>Verified</th></tr></thead><tbody>"
    ]
    for i, e in enumerate(b.entries, 1):
        ax = _entry_axes(e)
        verified = "<span class=ok>✓ rescored</span>" if e.verified else "files"
        rows.append(
            f"<tr class=entry><td class=n>{i}</td><td><a href='{esc(links[id(e)])}'>{esc(_entry_name(e))}</a></td>"
            f"<td class=n>{e.mean:.4f} ± {e.std:.4f}</td><td class=n>{len(e.runs)}</td>"
            f"<td class=n>{esc(', '.join(map(str, e.seeds)))}</td><td class=n>{_p(e.p_vs_above)}</td>"
            f"<td class=n>{e.artifact_bytes:,}</td><td class=n>{_num(ax['flops'], '{:.3g}')}</td>"
            f"<td class=n>{_num(ax['seconds'], '{:.1f}')}</td><td>{verified}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "".join(rows)


def _golf_entry_page(e: Entry, b: Board, plot: _Plotter, slug: str, nav: str) -> str:
    curves = {}
    for r in sorted(e.runs, key=lambda r: int(r["seed"])):
        try:
            events = read_events(Path(r["_dir"]) / "events.jsonl")
        except Exception:  # noqa: BLE001 - a missing log loses one curve, never the site
            events = []
        curves[f"seed {r['seed']}"] = [
            (ev["tokens"], ev["loss"]) for ev in events if ev.get("loss") is not None and "tokens" in ev
        ]
    src = plot.curves(f"{slug}-curves", curves, "training tokens", _entry_name(e))
    rows = [
        "<table class=sortable><thead><tr><th class=n>Seed</th><th class=n>val_bpb</th><th class=n>val_loss</th>"
        "<th class=n>Bytes</th><th class=n>Train FLOPs</th><th class=n>Train s</th><th class=n>Steps</th>"
        "<th>Verified</th><th>Run</th></tr></thead><tbody>"
    ]
    for r in sorted(e.runs, key=lambda r: int(r["seed"])):
        rows.append(
            f"<tr class=seed><td class=n>{int(r['seed'])}</td><td class=n>{float(r['val_bpb']):.4f}</td>"
            f"<td class=n>{float(r['val_loss']):.4f}</td><td class=n>{int(r['artifact_bytes']):,}</td>"
            f"<td class=n>{_num(r.get('train_flops'), '{:.3g}')}</td><td class=n>{_num(r.get('train_seconds'), '{:.1f}')}</td>"
            f"<td class=n>{_num(r.get('steps'))}</td><td>{'✓ rescored' if r.get('_rescored') else 'files'}</td>"
            f"<td><code>{esc(str(r['_dir']))}</code></td></tr>"
        )
    rows.append("</tbody></table>")
    body = (
        f"<p>cohort: {esc(b.label)}</p><p>config sha256 <code>{esc(e.config_sha256[:16])}</code> · "
        f"mean val_bpb {e.mean:.4f} ± {e.std:.4f} over {len(e.runs)} seed(s)</p>"
        f"<h2>Seeds</h2>{''.join(rows)}<h2>Train curves</h2><div class=plots>"
        + _figure(src, "train loss vs training tokens, every seed (events.jsonl)", "no seed logged a train loss")
        + "</div>"
    )
    return _page(_entry_name(e), body, nav)


def _imported_entry_page(e: ImportedEntry, b: Board, plot: _Plotter, slug: str, nav: str) -> str:
    d = e.doc
    curves = {name: [tuple(p) for p in pts] for name, pts in d.get("curves", {}).items()}
    src = plot.curves(f"{slug}-curves", curves, "step", e.label)
    src_of = d.get("sources", {})
    fields = [
        ("record", d["record"]),
        ("author", d.get("author")),
        ("github id", d.get("github_id")),
        ("date", d.get("date")),
        ("track (as spelled)", d.get("track_raw")),
        ("track (normalized)", d["track"]),
        ("tokenizer", d["tokenizer"]),
        ("val_bpb", _num(d.get("val_bpb"), "{:.8g}") if d.get("val_bpb") is not None else None),
        ("val_bpb std", _num(d.get("val_bpb_std"), "{:.4g}") if d.get("val_bpb_std") is not None else None),
        ("val_loss", _num(d.get("val_loss"), "{:.8g}") if d.get("val_loss") is not None else None),
        ("bytes_total", _num(d.get("bytes_total"), "{:,}") if d.get("bytes_total") is not None else None),
        ("train seconds", d.get("train_seconds")),
        ("seeds", ", ".join(d["seeds"]) if d.get("seeds") else None),
        ("hardware", d.get("hardware")),
        ("train logs", ", ".join(d.get("logs", [])) or None),
    ]
    key_of = {"val_bpb": "val_bpb", "val_bpb std": "val_bpb_std", "val_loss": "val_loss", "bytes_total": "bytes_total",
              "seeds": "seeds", "train seconds": "train_seconds", "tokenizer": "tokenizer",
              "track (normalized)": "track"}  # fmt: skip
    fixed = {"record": "the clone's records folder", "train logs": "files beside submission.json"}
    rows = ["<table class=fields><thead><tr><th>Field</th><th>Value</th><th>Source</th></tr></thead><tbody>"]
    for label, value in fields:
        source = fixed.get(label) or src_of.get(key_of.get(label, ""), "submission.json" if value is not None else "")
        rows.append(f"<tr><td>{esc(label)}</td><td>{esc(_num(value))}</td><td>{esc(source)}</td></tr>")
    rows.append("</tbody></table>")
    per_seed = d.get("seed_val_bpb") or {}
    seeds_html = ""
    if per_seed:
        seeds_html = "<h2>Per-seed val_bpb</h2><table class=sortable><thead><tr><th>Seed</th><th class=n>val_bpb</th></tr></thead><tbody>"
        seeds_html += "".join(
            f"<tr class=seed><td>{esc(s)}</td><td class=n>{v:.8g}</td></tr>" for s, v in per_seed.items()
        )
        seeds_html += f"</tbody></table><p class=note>source: {esc(src_of.get('seed_val_bpb', ''))}</p>"
    missing = ", ".join(d.get("missing", [])) or "nothing"
    body = (
        f"<p class=imp>imported, self-reported — not re-run or verified by golfbench</p><p>cohort: {esc(b.label)}</p>"
        f"<p>missing from the record: <b>{esc(missing)}</b></p>"
        + (f"<p>{esc(d['blurb'])}</p>" if d.get("blurb") else "")
        + "".join(rows)
        + seeds_html
        + "<h2>Train curves</h2><div class=plots>"
        + _figure(
            src, "train loss vs step, every train log beside the record", "no train log with step/train_loss lines"
        )
        + "</div>"
    )
    return _page(e.label, body, nav)


def _history_html(b: Board, collected: Collected) -> str:
    found = standing(b, collected)
    if not found:
        return ""
    hist, rows = found
    out = [
        f"<h2>Against the record history</h2><p class=imp>{esc(hist.title)}: imported, self-reported records under"
        " the same data, cap and budget; shown for reference, never pooled or ranked with this board.</p>"
        "<table class='history'><thead><tr><th>Entry</th><th class=n>val_bpb</th><th class=n>Would place</th>"
        "<th>Record above</th><th>Record below</th></tr></thead><tbody>"
    ]
    for r in rows:
        out.append(
            f"<tr class=standing><td>{esc(r['entry'])}</td><td class=n>{r['mean_val_bpb']:.4f}</td>"
            f"<td class=n>{r['place']} of {r['of']}</td><td>{esc(_num(r['above']))}</td>"
            f"<td>{esc(_num(r['below']))}</td></tr>"
        )
    return "".join(out) + "</tbody></table>"


def _board_page(b: Board, plot: _Plotter, slug: str, pages: dict, nav: str, collected: Collected) -> str:
    entry_nav = nav + f" · <a href='{slug}.html'>{esc(b.title)}</a>"
    links = {}
    for e in b.entries:
        eslug = "entry-" + _slug(_entry_name(e), slug, getattr(e, "config_sha256", ""), getattr(e, "path", ""))
        links[id(e)] = f"{eslug}.html"
        maker = _imported_entry_page if isinstance(e, ImportedEntry) else _golf_entry_page
        pages[f"{eslug}.html"] = maker(e, b, plot, eslug, entry_nav)
    ranks, ys, axes = [], [], {k: [] for k, _ in AXES}
    rank = 0
    for e in b.entries:
        rank += e.mean is not None
        ranks.append(str(rank) if e.mean is not None else "")
        ys.append(e.mean)
        for k, v in _entry_axes(e).items():
            axes[k].append(v)
    figures = []
    for key, xlabel in AXES:
        src = plot.pareto(f"{slug}-{key}", axes[key], ys, ranks, xlabel, f"{b.title}: val_bpb vs {key}")
        missing = f"no entry on this board reports {xlabel}"
        figures.append(_figure(src, f"val_bpb vs {xlabel}; points are labelled with their rank", missing))
    imported = "<p class=imp>imported, self-reported: never verified; ranks among imported records only</p>"
    body = (
        f"<p>cohort: {esc(b.label)}</p>{imported if b.imported else ''}"
        f"<h2>Ranking</h2>{_board_table(b, links)}"
        "<p class=note>p vs above: one-sided Welch t-test that the entry above has the lower mean (scipy), from the"
        " per-seed val_bpb; – with fewer than 2 seeds a side.</p>"
        f"<h2>Pareto plots</h2><div class=plots>{''.join(figures)}</div>" + _history_html(b, collected)
    )
    return _page(b.title, body, nav)


def render(collected: Collected, root: Path) -> dict:
    """Write the site's pages and plots into the existing, empty folder ``root``; returns counts
    {"boards", "entries", "pages", "plots"}."""
    plot = _Plotter(root)
    pages: dict[str, str] = {}
    nav = "<a href='index.html'>all boards</a>"
    index = ["<table class=sortable><thead><tr><th>Board</th><th>Cohort</th><th class=n>Entries</th>"
             "<th class=n>Best val_bpb</th></tr></thead><tbody>"]  # fmt: skip
    n_entries = 0
    for b in collected.boards:
        slug = "board-" + _slug(b.title, json.dumps(b.cohort, sort_keys=True, default=str))
        pages[f"{slug}.html"] = _board_page(b, plot, slug, pages, nav, collected)
        n_entries += len(b.entries)
        best = min((e.mean for e in b.entries if e.mean is not None), default=None)
        index.append(
            f"<tr class=board-row><td><a href='{slug}.html'>{esc(b.title)}</a></td><td>{esc(b.label)}</td>"
            f"<td class=n>{len(b.entries)}</td><td class=n>{_num(best, '{:.4f}')}</td></tr>"
        )
    index.append("</tbody></table>")
    if not collected.boards:
        index = ["<p>No eligible runs (status ok, official budget, files verified) and nothing imported.</p>"]
    warnings = "".join(f"<p class=w>{esc(w)}</p>" for w in collected.warnings)
    pages["index.html"] = _page(
        "golfbench leaderboard",
        "<p>One board per track and cohort: only results scored under the same rules are ranked together."
        " Imported records are self-reported and rank only among themselves.</p>" + "".join(index) + warnings,
    )
    for name, text in pages.items():
        (root / name).write_text(text, encoding="utf-8")
    (root / MARKER).write_text(json.dumps({"generator": "golf leaderboard --format html"}) + "\n", encoding="utf-8")
    return {"boards": len(collected.boards), "entries": n_entries, "pages": len(pages), "plots": plot.count}


def write_site(collected: Collected, out: Path) -> dict:
    """Render ``collected`` as a site into the folder ``out``, atomically (a temporary folder beside it, renamed
    into place; a previous site there is replaced whole). Returns `render`'s counts. Raises GolfError when
    ``out`` is a file, or a non-empty folder that is not a previous site (no ``.golf-site``); nothing is written
    then, and a failure while rendering leaves ``out`` as it was."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GolfError(f"--out {out} is a file; a site needs a folder (use a .html name for a single page)")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise GolfError(f"--out {out} is a non-empty folder that is not a golf site; choose a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old = None
    try:
        counts = render(collected, tmp)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rmdir(old)
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not out.exists():
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return counts
