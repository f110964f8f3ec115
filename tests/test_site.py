"""`golf leaderboard --format html --out DIR`: the static site, checked as files and as Chromium renders it.

The runs are hand-written records (tests/test_leaderboard.write_run: two entries of two seeds, events with a
train loss per step) plus an imported parameter-golf clone (tests/pg_records.py), so every row, value and
plot expected on the pages is known in advance. Chromium is Debian's `chromium`; the `chromium` fixture
installs it with apt-get where it is missing, and skips (an allowed skip, see conftest.py) only where it
cannot be installed, saying why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from golf_helpers import golf, golf_ok, one_line_error
from pg_records import HOSTILE, write_clone
from test_leaderboard import write_run

from golfbench.harness.site import MARKER, pareto_front

CHROMIUM_SKIP = "headless chromium cannot be installed here"  # conftest.py allows skips with this reason only
LLAMA = [2.1200, 2.1450]  # llama/tiny@torch, seeds 0 and 1
MEGALODON = [2.1000, 2.1300]  # megalodon/tiny@torch


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium: found on PATH, else installed with apt-get (root only); else an explicit skip."""
    exe = _find_chromium()
    if exe:
        return exe
    if shutil.which("apt-get") is None:
        why = "no apt-get on this machine"
    elif os.geteuid() != 0:
        why = "apt-get needs root and this user is not root"
    else:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-qq", "chromium"]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        if res.returncode != 0:  # a stale package list: update once, then try again
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
        exe = _find_chromium()
        if exe:
            return exe
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        why = f"`apt-get install chromium` failed: {tail}"
    pytest.skip(f"{CHROMIUM_SKIP} ({why}); install Debian's chromium package to render the site")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    runs = root / "runs"
    for s, bpb in enumerate(LLAMA):
        write_run(runs, f"llama-tiny-torch-s{s}", seed=s, bpb=bpb)
    for s, bpb in enumerate(MEGALODON):
        write_run(runs, f"megalodon-tiny-torch-s{s}", model="megalodon", cfg="cfg-m1", seed=s, bpb=bpb)
    golf_ok("import", "parameter-golf", write_clone(root / "pg"), "--out", runs)
    out = root / "site"
    res = golf_ok("leaderboard", "--runs", runs, "--format", "html", "--out", out)
    assert "wrote site" in res.stdout and "5 board(s)" in res.stdout, res.stdout
    return out


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.rows = [], [], []
        self._row = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._row:
            self._row[-1] += data


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _board(site: Path, words: str) -> Path:
    (hit,) = [p for p in site.glob("board-*.html") if words in p.name]
    return hit


def test_pareto_front_by_hand():
    # (x, y): lower is better on both; (3, 1.0) is dominated by nothing; (2, 2.5) by (1, 2.0)
    pts = [(1, 2.0), (2, 2.5), (3, 1.0), (4, 1.0), (None, 0.5), (0.5, 3.0)]
    assert pareto_front(pts) == [5, 0, 2]


def test_site_pages_links_and_no_outside_urls(site):
    files = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    assert "index.html" in files and MARKER in files
    boards = sorted(f for f in files if f.startswith("board-"))
    entries = sorted(f for f in files if f.startswith("entry-"))
    assert len(boards) == 5 and len(entries) == 2 + 9  # two golfbench entries, nine imported records
    for name in [f for f in files if f.endswith((".html", ".svg"))]:
        text = (site / name).read_text(encoding="utf-8")
        for ref in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']|url\(([^)]*)\)""", text):
            ref = "".join(ref)
            assert not re.match(r"^[a-z]+:|^//", ref, re.I), (name, ref)  # nothing outside DIR
            if name.endswith(".html"):
                assert (site / ref.split("#")[0]).is_file(), (name, ref)
        if name.endswith(".html"):
            assert "http://" not in text and "https://" not in text and "@import" not in text
    index = parse(site / "index.html")
    assert sum(1 for t, a in index.tags if t == "a" and a.get("href", "").startswith("board-")) == 5


def test_board_page_has_the_ranked_table_and_pareto_plots(site):
    page = parse(_board(site, "fixed-data"))
    rows = [r for r in page.rows if r and r[0].strip().isdigit()]
    assert [r[1] for r in rows] == ["megalodon/tiny@torch", "llama/tiny@torch"]
    mean, std = np.mean(MEGALODON), np.std(MEGALODON, ddof=1)
    assert rows[0][2] == f"{mean:.4f} ± {std:.4f}" and rows[0][3] == "2" and rows[0][4] == "0, 1"
    assert rows[0][5] == "–" and rows[1][5] != "–"
    for row, model in zip(rows, ("megalodon", "llama")):
        results = [
            json.loads(p.read_text()) for p in (site.parent / "runs").glob(f"fixed-data/dev/{model}-*/result.json")
        ]
        assert int(row[6].replace(",", "")) == max(r["artifact_bytes"] for r in results)  # the largest seed's
        assert row[7] == f"{np.mean([r['train_flops'] for r in results]):.3g}" and row[8] == "2.0"  # 4 × 0.5 s
    imgs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(imgs) == 3 and all(s.startswith("plots/") and s.endswith(".svg") for s in imgs)
    for src in imgs:
        svg = (site / src).read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "Pareto front" in svg
        assert "#d9480f" in svg  # the front's colour


def test_imported_boards_are_marked_escaped_and_never_verified(site):
    page = _board(site, "10min-16mb-sp1024")
    text = page.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    parsed = parse(page)
    rows = [r for r in parsed.rows if len(r) == 10 and r[0] != "Rank"]
    assert [r[1] for r in rows] == ["10L Int5-MLP", HOSTILE, "Naive Baseline"]
    assert {r[9] for r in rows} == {"imported, self-reported"} and "rescored" not in text
    assert rows[2][6] == "—"  # the baseline names no seeds
    nr = parse(_board(site, "non-record-16mb-unknown"))
    last = [r for r in nr.rows if r and "Only a loss" in r[1]]
    assert last and last[0][0] == "—" and last[0][4] == "—"
    # FLOPs: no record reports them; the page says so instead of drawing an empty plot
    assert "no entry on this board reports training FLOPs" in "".join(nr.text)
    (entry,) = [p for p in site.glob("entry-*.html") if "Only a loss" in p.read_text()]
    body = "".join(parse(entry).text)
    assert "missing from the record: tokenizer, val_bpb, bytes_total, seeds, author, date" in body
    (entry,) = [p for p in site.glob("entry-*.html") if "alert(&#x27;x&#x27;)" in p.read_text()]
    (img,) = [a["src"] for t, a in parse(entry).tags if t == "img"]  # its name, "$" and all, titles the plot
    assert "cost $\\frac{$ x" in (site / img).read_text()
    (entry,) = [p for p in site.glob("entry-*.html") if "Naive Baseline" in p.read_text()]
    assert len([t for t, a in parse(entry).tags if t == "img"]) == 1  # the train.log curve


def test_entry_page_has_every_seeds_curve(site):
    (entry,) = [p for p in site.glob("entry-*.html") if "<h1>llama/tiny@torch</h1>" in p.read_text()]
    page = parse(entry)
    seeds = [r for r in page.rows if r and r[0] in ("0", "1")]
    assert [float(r[1]) for r in seeds] == LLAMA
    (img,) = [a["src"] for t, a in page.tags if t == "img"]
    svg = (site / img).read_text()
    assert "seed 0" in svg and "seed 1" in svg and "training tokens" in svg


def test_out_dir_rules_are_one_line_errors(site, tmp_path):
    runs = site.parent / "runs"
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    one_line_error(golf("leaderboard", "--runs", runs, "--format", "html", "--out", other), "not a golf site")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    one_line_error(golf("leaderboard", "--runs", runs, "--format", "html", "--out", a_file), "is a file")
    # a previous site is replaced whole; nothing else is left beside it (in-process: the CLI path is the fixture's)
    from golfbench.harness.leaderboard import collect
    from golfbench.harness.site import write_site

    again = tmp_path / "site"
    shutil.copytree(site, again)
    (again / "stale.html").write_text("old")
    counts = write_site(collect(runs), again)
    assert counts == {"boards": 5, "entries": 11, "pages": 17, "plots": counts["plots"]}
    assert not (again / "stale.html").exists() and (again / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "mine", "site"]
    # a .html name still gets the single page
    golf_ok("leaderboard", "--runs", runs, "--format", "html", "--out", tmp_path / "board.html")
    assert (tmp_path / "board.html").read_text().lower().startswith("<!doctype html>")


def _chrome(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [exe, "--headless", "--disable-gpu", "--no-sandbox", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_site_renders_in_headless_chromium(site, chromium, tmp_path):
    board = _board(site, "fixed-data")
    res = _chrome(chromium, tmp_path / "profile", "--dump-dom", board.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    assert dom.count('<tr class="entry">') == 2 and "megalodon/tiny@torch" in dom
    # each plot's <img> marks itself loaded from its onload handler: Chromium decoded the SVG files
    loaded = re.findall(r"<img class=\"plot\"[^>]*data-loaded=\"1\"", dom)
    assert len(loaded) == 3, dom[:3000]
    index = _chrome(chromium, tmp_path / "profile", "--dump-dom", (site / "index.html").as_uri()).stdout
    assert index.count('<tr class="board-row">') == 5
    imported = _chrome(chromium, tmp_path / "profile", "--dump-dom", _board(site, "10min-16mb-sp1024").as_uri())
    assert "&lt;script&gt;alert" in imported.stdout and "<script>alert" not in imported.stdout
    assert len(re.findall(r"data-loaded=\"1\"", imported.stdout)) == 1  # bytes; no FLOPs, no seconds reported

    shot = tmp_path / "board.png"
    res = _chrome(chromium, tmp_path / "profile", "--hide-scrollbars", "--window-size=1200,1100",
                  f"--screenshot={shot}", board.as_uri())  # fmt: skip
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    import matplotlib.image

    px = matplotlib.image.imread(shot)[..., :3]
    assert px.shape[:2] == (1100, 1200)
    # the Pareto front's orange (#d9480f) is on screen: the plots were drawn, not just linked
    orange = np.all(np.abs(px - np.array([0xD9, 0x48, 0x0F]) / 255) < 0.06, axis=-1).sum()
    assert orange > 200, orange
    if os.environ.get("GOLF_SITE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["GOLF_SITE_SCREENSHOT"])


def test_a_failed_render_leaves_the_previous_site_whole(site, tmp_path, monkeypatch):
    from golfbench.harness import site as site_mod
    from golfbench.harness.leaderboard import collect

    out = tmp_path / "site"
    shutil.copytree(site, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken(collected, root):
        (root / "index.html").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(site_mod, "render", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        site_mod.write_site(collect(site.parent / "runs"), out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]  # no temp folder left beside it


def test_bench_site_screenshot_script(site, chromium, tmp_path):
    res = subprocess.run(
        [sys.executable, "bench/site_screenshot.py", "--runs", site.parent / "runs", "--out", tmp_path / "demo"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    for kind in ("index", "board", "entry", "imported"):
        png = tmp_path / f"demo-{kind}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", kind
    assert (tmp_path / "demo-site" / "index.html").is_file()
