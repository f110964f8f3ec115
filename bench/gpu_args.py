"""bench/gpu.py's command line: every flag checked up front, each bad one a single `error: ...` line and exit code 2.

The checks (nothing is written before they pass): --steps and --warmup whole numbers >= 1; --budget-s a finite
number of seconds > 1 (the run starts no measurement with 1 s or less left; nan/inf would mean no deadline);
--peak-tflops and --pg-step-ms finite numbers > 0; --eval-tokens a whole number >= 2 (gpu.py then asks for more
than the eval context); --out a file path in an existing, writable folder (the folder is never created).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse whose every usage error is one line on stderr, `error: ...`, and exit code 2 (the harness CLI's
    style), instead of argparse's usage block."""

    def error(self, message):
        """Print ``message`` as `error: MESSAGE (see ... --help)` and exit with code 2."""
        print(f"error: {message} (see python {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def number(kind: type, low: float, above: bool, what: str):
    """An argparse ``type``: ``kind`` (int or float) parsed from the text, finite and >= ``low`` (> ``low`` with
    ``above``); otherwise argparse.ArgumentTypeError naming the value and ``what`` to give instead."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}:"
                                             f" give {what}") from None  # fmt: skip
        if not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"{text} is out of range: give {what}")
        return value

    return parse


def out_path(text: str) -> str:
    """An argparse ``type`` for --out: a file path (not a folder) whose folder exists and is writable; raises
    argparse.ArgumentTypeError otherwise. Nothing is created."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give a file path such as {path / 'gpu.json'}")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"folder {folder} does not exist: create it first or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"folder {folder} is not writable: choose a path in a writable folder")
    return text


def parser(description: str) -> OneLineParser:
    """The parser of bench/gpu.py's measurement flags (--out, --steps, --warmup, --budget-s, --only, --peak-tflops,
    --pg-step-ms, --eval-tokens), each checked as the module docstring says; gpu.py adds its own switches."""
    ap = OneLineParser(prog="bench/gpu.py", description=description)
    ap.add_argument("--out", required=True, type=out_path, help="the JSON written after every measurement")
    count = "a whole number >= 1"
    ap.add_argument("--steps", type=number(int, 1, False, count), default=10, help="timed training steps")
    warm = number(int, 1, False, count + " (the compiling warm-up step included)")
    ap.add_argument("--warmup", type=warm, default=3, help="untimed steps, the compiling warm-up included")
    budget = number(float, 1, True, "a finite number of seconds > 1, e.g. 480")
    ap.add_argument("--budget-s", type=budget, default=480.0, help="stop cleanly after this many seconds")
    ap.add_argument("--only", action="append", default=None, help="measure only this name (repeatable)")
    peak = number(float, 0, True, "the device's bf16 dense peak in TFLOP/s, a number > 0, e.g. 989.4")
    ap.add_argument("--peak-tflops", type=peak, default=None, help="bf16 peak for MFU (default: the part table)")
    pg = number(float, 0, True, "parameter-golf's step time in milliseconds, a number > 0, e.g. 43.5")
    ap.add_argument("--pg-step-ms", type=pg, default=None, help="parameter-golf train_gpt.py step, same GPU/batch")
    tokens = number(int, 2, False, "a whole number of tokens larger than the eval context")
    ap.add_argument("--eval-tokens", type=tokens, default=1 << 20, help="synthetic val tokens to score (timed)")
    return ap
