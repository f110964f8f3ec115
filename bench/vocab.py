"""Vocab-size benchmark: Shakespeare built at sp1024 / sp4096 / sp8192, llama/tiny trained on each.

Usage: python bench/vocab.py --out bench/results/vocab.json [--data-dir data] [--runs runs/bench-vocab]
       [--budget 262144] [--vocab 1024 --vocab 4096 --vocab 8192]

For each vocab: `golf data build shakespeare --vocab V` (timed; an existing build is rebuilt), then `golf run
--track fixed-data --scale dev --model llama --preset tiny --data <it>` (the dev budget: the same number of
training *tokens* for every vocab, so a larger vocab trains on more text: tokens per byte differ, and the
record carries train and val bytes per token to say by how much). sp1024 is the track's own dataset (an
official dev run); sp4096 / sp8192 runs are unofficial by the dataset rule. Recorded per vocab: val_bpb, val
tokens and bytes, artifact / model / code / tokenizer bytes (fixed-data counts the tokenizer), build seconds,
train and eval seconds, parameter count. The record carries the machine, the versions and the date.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from golfbench.harness.data.dataset import Dataset
from golfbench.harness.data.shards import read_shard
from golfbench.harness.evaluate import count_val_bytes
from golfbench.harness.records import atomic_write_json, hardware, versions


def golf(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GOLF_NO_PROGRESS": "1"}
    res = subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *args], capture_output=True, text=True, env=env
    )
    if res.returncode != 0 and "--json" not in args:
        raise SystemExit(f"golf {' '.join(args)} failed:\n{res.stderr}")
    return res


def train_bytes(ds: Dataset, n_tokens: int) -> int:
    """UTF-8 bytes of the first ``n_tokens`` training targets (the byte rule of the evaluator, on the train split)."""
    tokens = np.concatenate([read_shard(p) for p in ds.train_paths])[: n_tokens + 1]
    return count_val_bytes(tokens, ds.accounting())


def one_vocab(vocab: int, data_dir: Path, runs: Path, budget: int | None, prequant: bool, reuse: bool) -> dict:
    data = data_dir / f"shakespeare_sp{vocab}"
    t0 = time.perf_counter()
    golf("data", "build", "shakespeare", "--vocab", str(vocab), "--out", str(data))
    build_seconds = time.perf_counter() - t0
    ds = Dataset.open(data)
    stats = ds.manifest["stats"]
    args = ["run", "--track", "fixed-data", "--scale", "dev", "--model", "llama", "--preset", "tiny"]
    args += ["--data", str(data), "--out", str(runs), "--run-id", f"llama-tiny-sp{vocab}", "--force", "--json"]
    if budget is not None:
        args += ["--budget", str(budget)]
    if not prequant:
        args.append("--no-prequant")
    run_dir = runs / "fixed-data" / "dev" / f"llama-tiny-sp{vocab}"
    if reuse and (run_dir / "result.json").is_file():  # a finished run of this script: read, not re-run
        r = json.loads((run_dir / "result.json").read_text())
    else:
        res = golf(*args)
        if res.returncode != 0 and not res.stdout.strip():
            raise SystemExit(f"golf run on sp{vocab} failed:\n{res.stderr}")
        r = json.loads(res.stdout)
    run_json = json.loads((run_dir / "run.json").read_text())
    if run_json["dataset"]["manifest_sha256"] != ds.manifest_sha256:
        raise SystemExit(f"{run_dir} ran on another build of sp{vocab}; drop --reuse")
    return {
        "vocab_size": vocab,
        "dataset_id": ds.id,
        "build_seconds": round(build_seconds, 2),
        "train_tokens_in_dataset": stats["tokens_train"],
        "val_tokens": r["val_tokens"],
        "val_bytes": r["val_bytes"],
        "val_bytes_per_token": r["val_bytes"] / r["val_tokens"] if r["val_tokens"] else None,
        "status": r["status"],
        "unofficial": r["unofficial"],
        "val_bpb": r["val_bpb"],
        "val_loss": r["val_loss"],
        "pre_quant_val_bpb": r["pre_quant_val_bpb"],
        "train_tokens": r["train_tokens"],
        "train_bytes": train_bytes(ds, int(r["train_tokens"])),
        "param_count": r["param_count"],
        "config_vocab_size": run_json["config"]["vocab_size"],
        "artifact_bytes": r["artifact_bytes"],
        "model_bytes": r["model_bytes"],
        "code_bytes": r["code_bytes"],
        "tokenizer_bytes": r["tokenizer_bytes"],
        "count_tokenizer_bytes": r["count_tokenizer_bytes"],
        "train_seconds": r["train_seconds"],
        "eval_seconds": r["eval_seconds"],
        "dataset_content_sha256": r["dataset_content_sha256"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/vocab.json"))
    ap.add_argument("--data-dir", type=Path, default=Path("data"))
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-vocab"))
    ap.add_argument("--budget", type=int, default=None, help="training tokens (default: the dev track's)")
    ap.add_argument("--vocab", type=int, action="append", default=None)
    ap.add_argument("--no-prequant", action="store_true", help="skip the pre-quantization score (saves one eval)")
    ap.add_argument("--reuse", action="store_true", help="read finished runs in --runs instead of re-running")
    a = ap.parse_args()
    rows = [
        one_vocab(v, a.data_dir, a.runs, a.budget, not a.no_prequant, a.reuse) for v in (a.vocab or [1024, 4096, 8192])
    ]
    for row in rows:
        print(
            f"sp{row['vocab_size']}: val_bpb {row['val_bpb']:.4f}  artifact {row['artifact_bytes']:,} B"
            f" (tokenizer {row['tokenizer_bytes']:,})  build {row['build_seconds']} s"
            f"  bytes/token {row['val_bytes_per_token']:.3f}  params {row['param_count']:,}"
            f"  train bytes {row['train_bytes']:,}"
        )
    atomic_write_json(
        a.out,
        {
            "bench": "vocab",
            "note": (
                "same token budget for every vocab (the fixed-data dev budget): a larger vocab covers more bytes per"
                " token, so it trains on more text; BPB is per byte, so the scores compare, the training data does not"
            ),
            "rows": rows,
            "machine": hardware({"kind": "cpu", "count": 1}),
            "versions": versions(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


if __name__ == "__main__":
    main()
