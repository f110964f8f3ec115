"""`python -m golfbench.backends.torch.launcher TORCHRUN_ARGS...`: torchrun, quiet, for `golf run --nproc-per-node N`.

The same arguments and the same launch as ``torchrun`` (``torch.distributed.run``), but its logs and its
ChildFailedError report never reach the user: the harness's children report their own failures in one line
(harness/launch.py). When processes fail, this writes which ones and their exit codes to
``$GOLF_ERROR_DIR/launcher.json``, so the parent can name a process that died without a report (killed by a
signal, for example).
``GOLF_DEBUG=1`` keeps torchrun's own logs and traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from golfbench.harness.launch import ERROR_DIR_ENV, LAUNCHER_REPORT

QUIET = ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")


def _silence() -> None:
    """Stop torchrun's loggers (they set their own levels, so they are cut off from their handlers instead)."""
    for name in QUIET:
        log = logging.getLogger(name)
        log.addHandler(logging.NullHandler())
        log.propagate = False


def _report(body: dict) -> None:
    where = os.environ.get(ERROR_DIR_ENV)
    if where:
        (Path(where) / LAUNCHER_REPORT).write_text(json.dumps(body), encoding="utf-8")
    else:
        print(f"error: {body.get('message') or body}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run torchrun (torch.distributed.run) with ``argv`` (default: sys.argv[1:]), quietly. Returns the exit code:
    0 when every process succeeded, 1 when some failed (their global rank, local rank and exit code go to
    ``$GOLF_ERROR_DIR/launcher.json``) or torchrun itself failed (its message goes there, or to stderr without
    GOLF_ERROR_DIR), 130 on Ctrl-C. With GOLF_DEBUG set, torchrun's logs stay on and its own errors propagate.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if not os.environ.get("GOLF_DEBUG"):
        _silence()
    args = get_args_parser().parse_args(argv)
    try:
        run(args)
    except ChildFailedError as exc:  # which processes failed and how; the parent words it (golfbench.harness.launch)
        _report(
            {"failures": [[int(rank), int(f.local_rank), int(f.exitcode)] for rank, f in sorted(exc.failures.items())]}
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a rendezvous that never completes, a bad endpoint...
        if os.environ.get("GOLF_DEBUG"):
            raise
        _report({"message": f"torchrun failed: {exc.__class__.__name__}: {exc}".strip()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
