"""`golf rehearse`: every track's official rules, played on a CPU in minutes.

The official path (many processes, the official precision, one scoring pass, `golf verify`) is the one that
matters and the one no laptop runs. A rehearsal keeps every rule of each track's ``[official]`` scale (budget
kind, eval precision, eval pre-quant policy, eval stride, eval time limit, artifact cap) and changes only
what a CPU cannot afford, written into a rehearsal copy of the track files: the dataset (a prefix of the
embedded Shakespeare build), the budget (a few steps' worth, same kind) and the hardware class. Then it runs
``golf run --scale official`` as a user would, in separate processes, for

- torch with several gloo processes (``--nproc-per-node``, default 2): llama/tiny;
- JAX with several forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count``): megalodon/tiny;

and checks what the official rules promise: status ok; budget of the track's kind honoured (fixed-data: exactly
the budget in whole sequences, with a remainder that does not split over the processes); the track's eval
precision recorded; one scoring pass when the track turns pre-quant off; the world size/devices used;
identical replicas; and `golf verify` passing on the run. Any mismatch is listed and the command exits 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from golfbench.harness.data.manifest import read_manifest, sha256_file, write_manifest
from golfbench.harness.data.shards import read_shard, write_shard
from golfbench.harness.errors import GolfError
from golfbench.harness.models import get_spec
from golfbench.harness.tracks import TRACKS_ENV, list_tracks

# llama/tiny and megalodon/tiny both train 256-token sequences in 16-row (4,096-token) steps
SEQ_LEN, BATCH_ROWS = 256, 16
TARGETS = {"torch": ("llama", "tiny"), "jax": ("megalodon", "tiny")}


@dataclass
class Rehearsal:
    """One track × backend rehearsal: what ran and every check's outcome."""

    track: str
    backend: str
    target: str
    seconds: float = 0.0
    result: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    checks: int = 0

    def check(self, ok: bool, what: str) -> None:
        """Count one check; record ``what`` as a failure when ``ok`` is false."""
        self.checks += 1
        if not ok:
            self.failures.append(what)


def prefix_dataset(src: Path, dst: Path, train_tokens: int, val_tokens: int) -> Path:
    """Write the first ``train_tokens``/``val_tokens`` of dataset ``src`` to ``dst`` as a complete dataset (own
    manifest: counts, sha256s, the documents that start inside the prefix). Same name, id and tokenizer."""
    src, dst = Path(src), Path(dst)
    manifest, _ = read_manifest(src)
    dst.mkdir(parents=True)
    shutil.copy(src / manifest["tokenizer"], dst / manifest["tokenizer"])
    keep = {"train": train_tokens, "val": val_tokens}
    shards = []
    for entry in manifest["shards"]:
        tokens = np.asarray(read_shard(src / entry["file"]))[: keep[entry["split"]]]
        write_shard(dst / entry["file"], tokens, manifest["vocab_size"])
        shards.append({**entry, "tokens": int(len(tokens)), "sha256": sha256_file(dst / entry["file"])})
    manifest["shards"] = shards
    docs = manifest.get("docs") or {}
    manifest["docs"] = {s: [d for d in docs.get(s, []) if d["offset"] < keep[s]] for s in ("train", "val")}
    write_manifest(dst, manifest)
    return dst


def _step_flops(backend: str) -> float:
    model, preset = TARGETS[backend]
    spec = get_spec(model)
    return spec.flops_per_token(spec.config(preset))["total"] * SEQ_LEN * BATCH_ROWS


def rehearsal_tracks(dst: Path, dataset_id: str, seconds: float) -> dict[str, dict]:
    """Copy every track file into ``dst`` with its [official] scale pointed at the rehearsal dataset and budget.

    Returns {track name: its official rules as rehearsed}. Every other rule is kept as the track states it.
    """
    dst.mkdir(parents=True, exist_ok=True)
    rules = {}
    for track in list_tracks():
        if "official" not in track.scales:
            continue
        doc = tomllib.loads(track.path.read_text(encoding="utf-8"))
        official = dict(doc["official"])
        # 8 full batches and one sequence more: 145 sequences leave a remainder on 2, 3, 4 or 8 processes
        # the FLOP budget: about 4.5 steps of the costlier rehearsal model
        flops = 4.5 * max(_step_flops(b) for b in TARGETS)
        budget = {"tokens": (8 * BATCH_ROWS + 17) * SEQ_LEN, "seconds": seconds, "flops": flops}[track.budget_kind]
        official.update(dataset=dataset_id, hardware="any", budget=budget, rehearsal_of=track.sha256)
        doc["official"] = official
        (dst / track.path.name).write_text(_toml(doc), encoding="utf-8")
        rules[track.name] = {**official, "budget_kind": track.budget_kind}
    return rules


def _toml(doc: dict) -> str:
    """A flat two-level TOML writer for track files (tomllib reads only; no writer ships with Python)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return json.dumps(str(v))

    lines = [f"{k} = {value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _golf(args: list, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "golfbench.harness.cli", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def rehearse_one(
    track: str,
    rules: dict,
    backend: str,
    data: Path,
    out: Path,
    env: dict,
    processes: int,
    devices: int,
    timeout: float = 900,
) -> Rehearsal:
    """Run one official-rules rehearsal in fresh processes and check it (see the module docstring)."""
    model, preset = TARGETS[backend]
    r = Rehearsal(track, backend, f"{model}/{preset}@{backend}")
    run_env = dict(env)
    args = [
        "run",
        "--track",
        track,
        "--scale",
        "official",
        "--backend",
        backend,
        "--model",
        model,
        "--preset",
        preset,
        "--seed",
        "0",
        "--data",
        data,
        "--out",
        out,
        "--run-id",
        f"{model}-{backend}",
        "--json",
    ]
    if backend == "torch":
        args += ["--nproc-per-node", str(processes)]
    else:
        run_env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    t0 = time.perf_counter()
    res = _golf(args, run_env, timeout)
    r.seconds = time.perf_counter() - t0
    r.result = _json_result(res.stdout)
    if not r.result:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        r.check(False, f"`golf run` exited {res.returncode} without a result: {last}")
        return r
    got = r.result
    r.check(got.get("status") == "ok", f"status {got.get('status')} ({got.get('reason')})")
    r.check(
        got.get("budget_kind") == rules["budget_kind"],
        f"budget kind {got.get('budget_kind')} != {rules['budget_kind']}",
    )
    spent = {"tokens": got.get("train_tokens"), "seconds": got.get("train_seconds"), "flops": got.get("train_flops")}
    limit = float(rules["budget"])
    run_dir = out / track / "official" / f"{model}-{backend}"
    used = spent[rules["budget_kind"]] or 0
    if rules["budget_kind"] == "seconds":  # the wallclock rule: the last step starts inside the limit, may end after
        last = ([e for e in _events(run_dir) if "step_seconds" in e and e.get("event") is None] or [{}])[-1]
        used -= float(last.get("step_seconds", 0.0))
    r.check(used <= limit * (1 + 1e-9), f"spent {spent[rules['budget_kind']]} over {limit:g}")
    if rules["budget_kind"] == "tokens":
        exact = int(limit) // SEQ_LEN * SEQ_LEN
        r.check(
            got.get("train_tokens") == exact,
            f"fixed-data trained {got.get('train_tokens')} tokens, not exactly {exact}",
        )
    precision = str(rules.get("eval_precision", "fp32"))
    r.check(
        got.get("eval_precision", "fp32") == precision,
        f"scored at {got.get('eval_precision')} not the track's {precision}",
    )
    r.check(got.get("eval_stride") == int(rules.get("eval_stride", 64)), f"eval stride {got.get('eval_stride')}")
    passes = [e for e in _events(run_dir) if e.get("event") == "eval"]
    want = 2 if rules.get("eval_prequant", True) else 1
    r.check(len(passes) == want, f"{len(passes)} scoring pass(es), the track's policy gives {want}")
    if got.get("eval_seconds") is not None and rules.get("eval_seconds_max"):
        r.check(got["eval_seconds"] <= float(rules["eval_seconds_max"]), f"eval took {got['eval_seconds']:.1f} s")
    if backend == "torch":
        r.check(got.get("world_size") == processes, f"world size {got.get('world_size')} != {processes}")
        r.check(got.get("replicas_identical") is True, "the replicas' weights differ (or were not compared)")
    else:
        check = next((e for e in _events(run_dir) if e.get("event") == "flops_check"), {})
        count = (check.get("devices") or {}).get("count")
        r.check(count == devices, f"JAX trained on {count} device(s), not {devices}")
    v = _golf(["verify", run_dir], env, timeout)
    r.check(v.returncode == 0, "golf verify failed: " + " | ".join(v.stderr.strip().splitlines()[:3]))
    return r


def _json_result(stdout: str) -> dict:
    """The result object `golf run --json` printed (the whole stdout, or its last line)."""
    for text in (stdout, (stdout.strip().splitlines() or [""])[-1]):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return {}


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rehearse(
    source: Path,
    out: Path | None = None,
    backends: tuple[str, ...] = ("torch", "jax"),
    processes: int = 2,
    devices: int = 2,
    seconds: float = 20.0,
    log=print,
) -> list[Rehearsal]:
    """Rehearse every track's official rules for each backend; returns the rehearsals (see `failures`).

    ``source``: a built Shakespeare dataset (`golf data build shakespeare`). ``out``: where the rehearsal
    dataset, tracks and runs go (default: a temporary folder, removed afterwards). Raises GolfError for a
    missing dataset, an unknown backend, or fewer than 2 processes/devices (a rehearsal of one is no rehearsal).
    """
    if not (Path(source) / "manifest.json").is_file():
        raise GolfError(f"no dataset at {source}: build it with `golf data build shakespeare --out {source}`")
    unknown = [b for b in backends if b not in TARGETS]
    if unknown:
        raise GolfError(f"unknown backend(s) {', '.join(unknown)} for the rehearsal: choose from torch, jax")
    if processes < 2 or devices < 2:
        raise GolfError(
            "a rehearsal needs at least 2 processes (torch) and 2 devices (JAX): --processes/--devices >= 2"
        )
    keep = out is not None
    root = Path(out) if keep else Path(tempfile.mkdtemp(prefix="golf-rehearse-"))
    try:
        if keep and root.exists() and any(root.iterdir()):
            raise GolfError(f"{root} is not empty: choose a new --out for the rehearsal")
        manifest, _ = read_manifest(Path(source))
        data = prefix_dataset(
            Path(source),
            root / "data" / str(manifest.get("id", manifest["name"])),
            train_tokens=120_000,
            val_tokens=16_384,
        )
        rules = rehearsal_tracks(root / "tracks", str(manifest.get("id", manifest["name"])), seconds)
        env = {**os.environ, TRACKS_ENV: str(root / "tracks"), "GOLF_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
        env.pop("GOLF_CLOCK_SKEW", None)
        done = []
        for track, track_rules in rules.items():
            for backend in backends:
                log(f"rehearsing {track} (official rules) with {TARGETS[backend][0]}@{backend} ...")
                r = rehearse_one(track, track_rules, backend, data, root / "runs", env, processes, devices)
                log(
                    f"  {'ok' if not r.failures else 'FAILED'} in {r.seconds:.0f} s ({r.checks} checks)"
                    + "".join(f"\n  - {f}" for f in r.failures)
                )
                done.append(r)
        return done
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
