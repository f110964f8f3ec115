"""Render the leaderboard site of a runs folder and screenshot its pages in headless Chromium.

    python bench/site_screenshot.py --runs runs --out bench/results/site-demo

writes DIR=<out>-site/ (the site, via `golf leaderboard --format html --out`) and <out>-index.png,
<out>-board.png (the first golfbench board), <out>-entry.png (its best entry) and, when the runs folder holds
imported parameter-golf records (`golf import parameter-golf`), <out>-imported.png (the largest imported
board). Needs Debian's `chromium` (`make browser`).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def shoot(chromium: str, page: Path, png: Path, height: int) -> None:
    """Screenshot ``page`` (a local HTML file) at 1200×``height`` CSS pixels into ``png``."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size=1200,{height}", f"--screenshot={png}", page.as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    print(f"wrote {png}")


def main() -> int:
    """Parse arguments, render the site, take the screenshots; 1 when chromium is missing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path, default=Path("bench/results/site-demo"))
    args = ap.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("error: chromium is not installed (make browser)", file=sys.stderr)
        return 1
    site = args.out.parent / f"{args.out.name}-site"
    golf = [sys.executable, "-m", "golfbench.harness.cli"]
    subprocess.run([*golf, "leaderboard", "--runs", str(args.runs), "--format", "html", "--out", str(site)], check=True)
    shoot(chromium, site / "index.html", args.out.parent / f"{args.out.name}-index.png", 700)
    boards = sorted(site.glob("board-*.html"))
    ours = [b for b in boards if not b.name.startswith("board-parameter-golf")]
    if ours:
        shoot(chromium, ours[0], args.out.parent / f"{args.out.name}-board.png", 1000)
        entry = re.search(r"href='(entry-[^']+\.html)'", ours[0].read_text(encoding="utf-8"))
        if entry:
            shoot(chromium, site / entry.group(1), args.out.parent / f"{args.out.name}-entry.png", 900)
    imported = [b for b in boards if b.name.startswith("board-parameter-golf")]
    if imported:
        biggest = max(imported, key=lambda b: b.read_text(encoding="utf-8").count("<tr class=entry>"))
        shoot(chromium, biggest, args.out.parent / f"{args.out.name}-imported.png", 1600)
    return 0


if __name__ == "__main__":
    sys.exit(main())
