"""A small parameter-golf clone written field by field, in the shapes the real records/*/*/submission.json use
(openai/parameter-golf, March–April 2026): no ``track`` at all, three spellings of the non-record track,
``seeds`` as a list or as a dict of per-seed results, ``seed_results`` with ``mean_val_bpb``, a ``tokenizer``
string, ``vocab_size``, ``val_loss: null``, a score only in the train logs, and an untrusted name with markup.

Every expected value below is written here by hand, so the import is checked against numbers it did not make.
"""

from __future__ import annotations

import json
from pathlib import Path

HOSTILE = "<script>alert('x')</script> & <b>bold</b> cost $\\frac{$ x"  # markup, and a broken matplotlib formula


def _log(final_loss: float, final_bpb: float, total_bytes: int, losses=(6.9, 4.2, 3.1)) -> str:
    """A train log in the baseline's format: step lines, the two size lines, the final exact line."""
    lines = ["tokenizer_path: ./data/tokenizers/fineweb_1024_bpe.model", "vocab_size: 1024"]
    for i, loss in enumerate(losses):
        lines.append(f"step:{(i + 1) * 100}/20000 train_loss:{loss:.4f} train_time:{i * 4000}ms step_avg:43.5ms")
    lines.append("step:300/20000 val_loss:2.1000 val_bpb:1.2500 train_time:12000ms step_avg:43.5ms")
    lines += [
        "Total submission size: 67272625 bytes",
        f"Total submission size int8+zlib: {total_bytes} bytes",
        f"final_int8_zlib_roundtrip val_loss:{final_loss:.4f} val_bpb:{final_bpb:.4f} eval_time:1401ms",
        f"final_int8_zlib_roundtrip_exact val_loss:{final_loss:.8f} val_bpb:{final_bpb:.8f}",
    ]
    return "\n".join(lines) + "\n"


RECORDS = {
    # the baseline's shape: core fields only, no track, one train.log
    "track_10min_16mb/2026-03-17_NaiveBaseline": {
        "submission": {
            "author": "Baseline",
            "github_id": "openai",
            "name": "Naive Baseline",
            "blurb": "9x512 SP-1024",
            "date": "2026-03-18T14:56:29Z",
            "val_loss": 2.07269931,
            "val_bpb": 1.2243657,
            "bytes_total": 15863489,
            "bytes_code": 47642,
        },
        "logs": {"train.log": _log(2.07269931, 1.2243657, 15863489)},
    },
    # score only in the logs (val_loss mislabelled in the JSON is taken as stated), seeds from log names
    "track_10min_16mb/2026-03-20_10L_Int5MLP": {
        "submission": {
            "name": "10L Int5-MLP",
            "val_loss": 1.14276,
            "bytes_total": 15900000,
            "author": "thwu1",
            "github_id": "thwu1",
            "date": "2026-03-20",
        },  # fmt: skip
        "logs": {
            "train_seed1337.log": _log(1.93, 1.1429, 15965978),
            "train_seed42.log": _log(1.92, 1.1427, 15961000),
            "train_seed2024.log": _log(1.925, 1.1426, 15950000),
        },
    },
    # seeds as a dict of per-seed results, tokenizer named in words, bytes only per seed
    "track_10min_16mb/2026-04-06_QK5_LegalTTT": {
        "submission": {
            "name": "SP8192 + QK-Gain 5",
            "val_bpb": 1.08279384,
            "author": "dexhunter",
            "date": "2026-04-06",
            "seeds": {
                "0": {"val_bpb": 1.08209788, "val_loss": 2.79517119, "bytes_total": 15991018},
                "42": {"val_bpb": 1.08314800, "val_loss": 2.79788378, "bytes_total": 15992546},
                "1234": {"val_bpb": 1.08313564, "val_loss": 2.79785185, "bytes_total": 15989058},
            },
            "tokenizer": "SentencePiece BPE 8192",
        },
        "logs": {},
    },
    # track given, seeds list, SP8192 only in the folder name, no val_loss, no bytes (and no logs)
    "track_10min_16mb/2026-04-08_SP8192_ParallelResid": {
        "submission": {
            "date": "2026-04-08",
            "track": "10min_16mb",
            "val_bpb": 1.08217956,
            "seeds": [42, 314, 999],
            "name": "SP8192 + Parallel Residuals",
            "author": "aryanbhosale",
            "val_bpb_std": 0.0005,
        },  # fmt: skip
        "logs": {},
    },
    # seed_results + mean_val_bpb + artifact_bytes, vocab_size field
    "track_10min_16mb/2026-03-19_SlidingWindow_10L": {
        "submission": {
            "track": "10min_16mb",
            "date": "2026-03-19",
            "name": HOSTILE,
            "author": "notapplica",
            "vocab_size": 1024,
            "seed_results": {
                "1337": {"val_loss": 1.98492632, "val_bpb": 1.17558517, "steps": 10424},
                "42": {"val_loss": 1.98265459, "val_bpb": 1.17423973, "steps": 10710},
                "7": {"val_loss": 1.98298356, "val_bpb": 1.17443456, "steps": 10498},
            },
            "mean_val_loss": 1.98352149,
            "mean_val_bpb": 1.17475315,
            "artifact_bytes": 15374243,
        },
        "logs": {"train_seed1337.log": _log(1.98492632, 1.17558517, 15374243)},
    },
    # three spellings of non-record; val_loss null; no tokenizer anywhere
    "track_non_record_16mb/2026-03-18_Quasi10B_SP1024_4h": {
        "submission": {
            "date": "2026-03-18T11:53:00Z",
            "track": "non-record-unlimited-compute-16mb",
            "val_loss": 2.03860961,
            "val_bpb": 1.20737944,
            "bytes_total": 15810161,
            "author": "Will DePue",
            "name": "4-Hour Quasi-10B SP1024",
            "wallclock_seconds": 14400,
        },  # fmt: skip
        "logs": {},
    },
    "track_non_record_16mb/2026-03-19_SwiGLU_1x5090": {
        "submission": {
            "date": "2026-03-19T00:00:00Z",
            "track": "non-record-16mb",
            "val_loss": None,
            "val_bpb": 1.32814313,
            "bytes_total": 15327112,
            "author": "someone",
            "name": "SwiGLU",
        },  # fmt: skip
        "logs": {},
    },
    "track_non_record_16mb/2026-03-29_Diffusion": {
        "submission": {
            "date": "2026-03-29",
            "track": "non_record_16mb",
            "val_bpb": 1.1465,
            "seeds": [42],
            "author": "x",
            "name": "LLaDA MDLM Diffusion",
        },  # fmt: skip
        "logs": {},
    },
    # no track, no val_bpb, nothing in a log: listed, unranked, every gap named
    "track_non_record_16mb/2026-04-01_NoScore": {
        "submission": {"name": "Only a loss", "val_loss": 2.5},
        "logs": {},
    },
}


def write_clone(root: Path) -> Path:
    """Write RECORDS as ``root/records/<track folder>/<record>/{submission.json, logs}``; returns ``root``."""
    for rel, rec in RECORDS.items():
        d = root / "records" / rel
        d.mkdir(parents=True)
        (d / "submission.json").write_text(json.dumps(rec["submission"], indent=2))
        for name, text in rec["logs"].items():
            (d / name).write_text(text)
        (d / "README.md").write_text("# record\n")
        (d / "train_gpt.py").write_text("print('hi')\n")
    return root
