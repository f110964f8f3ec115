"""`golf`: the command line. Thin: it parses, delegates and turns every GolfError into one line + exit code."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from golfbench.harness.errors import GolfError

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="golfbench: parameter golf on any framework. Start with `golf data build shakespeare`.",
)
data_app = typer.Typer(no_args_is_help=True, help="Build, fetch and verify datasets.")
artifact_app = typer.Typer(no_args_is_help=True, help="Look inside artifacts.")
app.add_typer(data_app, name="data")
app.add_typer(artifact_app, name="artifact")

# Piped output (make demo, CI logs) gets a wide fixed width instead of rich's 80 columns, so tables stay whole.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _fail(kind: str, message: str, exit_code: int) -> None:
    """Print ``kind: message`` as one line on stderr, or, in a process started by `golf run --nproc-per-node`,
    leave it for the parent to print once (golfbench.harness.launch.report_failure)."""
    from golfbench.harness.distributed import env_rank
    from golfbench.harness.launch import report_failure

    if report_failure(kind, message, exit_code):
        return
    if env_rank() > 0:  # started by hand under torchrun: say which process
        message = f"(rank {env_rank()}) {message}"
    err.print(
        f"[bold red]{kind}:[/] {escape(message)}" if message else f"[bold red]{kind}[/]",
        highlight=False,
        soft_wrap=True,
    )


def handled(fn):
    """One line on stderr and a non-zero exit for every failure; a traceback only with GOLF_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GolfError as exc:
            _fail(getattr(exc, "kind", "error"), str(exc), exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _fail("interrupted", "", 130)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            message = f"{exc.__class__.__name__}: {exc} (rerun with GOLF_DEBUG=1 for a traceback)"
            if os.environ.get("GOLF_DEBUG"):
                from golfbench.harness.launch import report_failure

                report_failure("internal error", message, 1)  # a launched process still tells its parent
                raise
            _fail("internal error", message, 1)
            raise typer.Exit(1) from None

    return wrapper


def _print_json(obj) -> None:
    from golfbench.harness.records import dumps

    sys.stdout.write(dumps(obj) + "\n")


def _dataset_report(path: Path) -> dict:
    """What `golf data build/fetch --json` print: the dataset folder, its manifest's sha256 and the manifest."""
    from golfbench.harness.data.dataset import Dataset

    dataset = Dataset.open(Path(path))
    return {"path": str(path), "manifest_sha256": dataset.manifest_sha256, "manifest": dataset.manifest}


def _parse_sets(sets: list[str] | None) -> dict:
    """``--set key=value`` items -> {key: value}. A value that is JSON (6, 1e-3, true, "6") is decoded, any
    other is kept as text (False, .04); ModelSpec.config then parses each by its field's type (bools only
    true/false in any case, ints never from 2.5, floats from 1e-3) and refuses unknown keys, listing the valid
    ones. GolfError for an item without '=' or with an empty key."""
    overrides = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GolfError(f"--set '{item}' must look like key=value, e.g. --set num_layers=6")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return overrides


# ----------------------------------------------------------------------------------------------------------
# data


@data_app.command("build")
@handled
def data_build(
    name: str = typer.Argument(..., help="dataset to build: shakespeare"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="folder to create (default data/shakespeare_sp<vocab>)"),
    allow_lossy: bool = typer.Option(
        False, "--allow-lossy", help="accept a lossy tokenizer: the dataset is marked lossy, never official"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: the dataset's path and manifest"),
    vocab: int = typer.Option(1024, "--vocab", help="SentencePiece vocab size: 1024 (the dev tracks'), 4096 or 8192"),
):
    """Build an embedded dataset. Example: golf data build shakespeare --vocab 4096 (writes data/shakespeare_sp4096)"""
    if name != "shakespeare":
        raise GolfError(
            f"unknown dataset '{name}' to build: only 'shakespeare' is embedded; FineWeb uses `golf data fetch fineweb`"
        )
    from golfbench.harness import progress
    from golfbench.harness.data import shakespeare

    shakespeare.check_vocab(vocab)
    shakespeare.check_destination(out_dir or Path(f"data/shakespeare_sp{vocab}"), vocab)  # before the progress bar
    with progress.bar(f"build shakespeare_sp{vocab}", 4) as update:
        path = shakespeare.build(
            out_dir or Path(f"data/shakespeare_sp{vocab}"),
            allow_lossy=allow_lossy,
            vocab_size=vocab,
            progress=lambda done, total: update(done),
        )
    if as_json:
        _print_json(_dataset_report(path))
    else:
        out.print(f"built {path}")


@data_app.command("fetch")
@handled
def data_fetch(
    name: str = typer.Argument(..., help="dataset to fetch: fineweb"),
    variant: str = typer.Option("sp1024", help="tokenizer variant of the parameter-golf export"),
    train_shards: int = typer.Option(1, "--train-shards", help="number of 100M-token train shards"),
    source: Optional[Path] = typer.Option(
        None, help="copy from a local folder with the export's layout instead of downloading"
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="folder to create (default data/fineweb_<variant>)"),
    repo_id: str = typer.Option("willdepueoai/parameter-golf", help="Hugging Face dataset repo"),
    allow_lossy: bool = typer.Option(
        False, "--allow-lossy", help="accept a lossy tokenizer: the dataset is marked lossy, never official"
    ),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: the dataset's path and manifest"),
):
    """Fetch the parameter-golf FineWeb export. Example: golf data fetch fineweb --variant sp1024 --train-shards 2"""
    if name != "fineweb":
        raise GolfError(f"unknown dataset '{name}' to fetch: only 'fineweb' can be fetched")
    if train_shards < 0:
        raise GolfError("--train-shards must be >= 0")
    from golfbench.harness.data import fineweb

    path = fineweb.fetch(
        out_dir or Path(f"data/fineweb_{variant}"),
        variant=variant,
        train_shards=train_shards,
        source=source,
        repo_id=repo_id,
        allow_lossy=allow_lossy,
    )
    if as_json:
        _print_json(_dataset_report(path))
    else:
        out.print(f"fetched {path}")


@data_app.command("verify")
@handled
def data_verify(
    path: Path = typer.Argument(..., help="dataset folder"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    allow_lossy: bool = typer.Option(
        False, "--allow-lossy", help="accept a dataset marked lossy (it stays unofficial)"
    ),
):
    """Check a dataset: shard headers, sizes, hashes, token ids, tokenizer, splits, val bytes per document, losslessness. Example: golf data verify data/shakespeare_sp1024 --json"""
    from golfbench.harness.data.dataset import verify

    report = verify(path, allow_lossy=allow_lossy)
    if as_json:
        _print_json(report)
    else:
        table = Table(title=f"dataset {report.get('name')}")
        table.add_column("field")
        table.add_column("value", justify="right")
        for key in (
            "ok",
            "id",
            "lossy",
            "vocab_size",
            "train_shards",
            "train_tokens",
            "val_shards",
            "val_tokens",
            "val_bytes",
        ):
            table.add_row(
                key,
                f"{report.get(key):,}" if isinstance(report.get(key), int) and key != "ok" else str(report.get(key)),
            )
        out.print(table)
        for problem in report.get("problems", []):
            err.print(f"[red]problem:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if not report["ok"]:
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------------------------------
# tracks and models


@app.command("tracks")
@handled
def tracks_cmd(as_json: bool = typer.Option(False, "--json")):
    """List the tracks and their budgets at each scale. Example: golf tracks"""
    from golfbench.harness.tracks import list_tracks

    tracks = list_tracks()
    if as_json:
        _print_json(
            [
                {
                    "name": t.name,
                    "version": t.version,
                    "budget_kind": t.budget_kind,
                    "scales": t.scales,
                    "description": t.description,
                    "sha256": t.sha256,
                }
                for t in tracks
            ]
        )
        return
    table = Table(title="tracks")
    for col in ("track", "budget", "official", "dev", "rules"):
        table.add_column(col)
    for t in tracks:
        fmt = lambda s, t=t: f"{t.scales[s]['budget']:g} on {t.scales[s]['dataset']}" if s in t.scales else "-"  # noqa: E731
        table.add_row(t.name, t.budget_kind, fmt("official"), fmt("dev"), t.description)
    out.print(table)


@app.command("models")
@handled
def models_cmd(as_json: bool = typer.Option(False, "--json", help="print every preset's config and recipe as JSON")):
    """List model specs (built-in and plugins), the package each comes from, presets, parameter counts and
    FLOPs per token. Example: golf models"""
    from golfbench.harness.backend import backend_names
    from golfbench.harness.models import SPECS
    from golfbench.harness.plugins import get_plugin, source_of

    def frameworks(name: str) -> str:
        plugin = get_plugin(name)
        return ", ".join(sorted(plugin.implementations) if plugin else backend_names())

    if as_json:
        rows = []
        for spec in SPECS.values():
            for preset in spec.presets:
                cfg = spec.config(preset)
                rows.append(
                    {
                        "model": spec.name,
                        "preset": preset,
                        "package": source_of(spec.name),
                        "frameworks": frameworks(spec.name).split(", "),
                        "params": spec.param_count(cfg),
                        "train_flops_per_token": spec.flops_per_token(cfg)["total"],
                        "seq_len": cfg["seq_len"],
                        "config": spec.model_part(cfg),
                        "recipe": {k: cfg[k] for k in spec.recipe_keys},
                    }
                )
        _print_json(rows)
        return
    table = Table(title="models")
    for col in ("model", "preset", "package", "frameworks", "params", "train FLOPs/token", "seq_len"):
        table.add_column(col, justify="right" if col in ("params", "train FLOPs/token", "seq_len") else "left")
    for spec in SPECS.values():
        for preset in spec.presets:
            cfg = spec.config(preset)
            table.add_row(
                spec.name,
                preset,
                source_of(spec.name),
                frameworks(spec.name),
                f"{spec.param_count(cfg):,}",
                f"{spec.flops_per_token(cfg)['total']:.3g}",
                str(cfg["seq_len"]),
            )
    out.print(table)


@app.command("budget")
@handled
def budget_cmd(
    model: str = typer.Argument(..., help="llama | megalodon | a plugin model (see golf models)"),
    preset: Optional[str] = typer.Option(
        None, help="model preset (default: tiny at dev scale, the golf preset at official)"
    ),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="config override key=value"),
    scale: str = typer.Option("official", help="official | dev: whose budgets to show"),
    backends: Optional[List[str]] = typer.Option(
        None, "--backend", help="count this backend's code bytes (repeatable; default every installed one)"
    ),
    tokens_per_second: Optional[float] = typer.Option(
        None, "--tokens-per-second", help="measured throughput (a run's tokens_per_second) to price a wallclock budget"
    ),
    compressor: str = typer.Option("zstd-22", help="artifact compressor: zstd-22 | lzma | brotli"),
    data: Optional[Path] = typer.Option(
        None, help="dataset whose tokenizer counts where a track counts it (default data/<track's dataset>)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as one JSON object"),
):
    """Before training: parameters, FLOPs per token, estimated artifact bytes per codec, what each track's budget
    buys and whether the config fits the cap. Example: golf budget llama --preset baseline"""
    from golfbench.harness import budget
    from golfbench.harness.backend import backend_names, get_backend
    from golfbench.harness.models import get_spec
    from golfbench.harness.plugins import get_plugin
    from golfbench.harness.runner import default_preset
    from golfbench.harness.tracks import SCALES

    if scale not in SCALES:
        raise GolfError(f"unknown scale '{scale}': choose official or dev")
    preset = preset or default_preset(model, scale)
    overrides = _parse_sets(sets)
    if data is not None:  # a model takes its vocab from the dataset it trains on, as `golf run` does
        if not (data / "manifest.json").is_file():
            raise GolfError(f"no dataset at {data} (manifest.json missing): point --data at a dataset or drop it")
        from golfbench.harness.data.dataset import Dataset

        overrides.setdefault("vocab_size", Dataset.open(data).vocab_size)
    get_spec(model).config(preset, overrides)  # a bad model, preset or --set fails before any import
    plugin = get_plugin(model)
    names = backends or (sorted(plugin.implementations) if plugin else backend_names())
    code: dict[str, int] = {}
    missing = []
    for name in names:
        try:
            b = get_backend(name)
        except GolfError:
            if backends:  # asked for by name: say why it cannot be counted
                raise
            missing.append(name)
            continue
        if model not in b.models():
            if backends:
                raise GolfError(
                    f"backend '{name}' does not implement model '{model}' (it has: {', '.join(b.models())})"
                )
            continue
        from golfbench.harness.code import code_bytes

        code[name] = code_bytes(b.code_files(model))
    if not code:
        raise GolfError(f"no installed backend implements '{model}' ({', '.join(missing) or 'none'} not installed)")
    from golfbench.harness.artifact import check_compressor

    check_compressor(compressor)
    rep = budget.report(model, preset, overrides, scale, code, tokens_per_second, compressor=compressor, data=data)
    if as_json:
        _print_json(rep)
        return
    out.print(
        f"[bold]{model}/{preset}[/] ({scale} scale): {rep['param_count']:,} parameters,"
        f" {rep['flops_per_token']['total']:.4g} training FLOPs/token, batch {rep['batch_tokens']:,} tokens,"
        f" code {', '.join(f'{b} {n:,} B' for b, n in code.items())}"
    )
    at = Table(title=f"estimated model bytes (compressed with {compressor}, without code)")
    for col in ("codec", "estimate", "upper bound"):
        at.add_column(col, justify="left" if col == "codec" else "right")
    for c, a in rep["artifact"].items():
        at.add_row(c, f"{a['estimate']:,}", f"{a['upper']:,}")
    out.print(at)
    tt = Table(title="what each track buys")
    for col in ("track", "budget", "tokens", "steps", "train FLOPs", "tokenizer", "artifact (estimate)", "fits cap"):
        tt.add_column(col, justify="left" if col in ("track", "fits cap") else "right")
    for t in rep["tracks"]:
        unit = {"seconds": "s", "tokens": "tokens", "flops": "FLOPs"}[t["budget_kind"]]
        for key, f in t["artifact"].items():
            tt.add_row(
                t["track"],
                f"{t['budget']:,.4g} {unit}",
                "? (pass --tokens-per-second)" if t["tokens"] is None else f"{t['tokens']:,}",
                "?" if t["steps"] is None else f"{t['steps']:,}",
                "?" if t["train_flops"] is None else f"{t['train_flops']:.3g}",
                "—"
                if t["tokenizer_bytes"] == 0
                else "? (no dataset)"
                if t["tokenizer_bytes"] is None
                else f"{t['tokenizer_bytes']:,}",
                f"{key}: {f['total_bytes']:,} (≤ {f['upper_bytes']:,})",
                {"yes": "[green]yes[/]", "likely": "[yellow]likely[/]", "no": "[red]no[/]"}[f["fits"]],
            )
    out.print(tt)


# ----------------------------------------------------------------------------------------------------------
# run / eval


@app.command("run")
@handled
def run_cmd(
    ctx: typer.Context,
    track: str = typer.Option("fixed-data", help="wallclock-10min | fixed-data | flop-budget"),
    scale: str = typer.Option("dev", help="official | dev"),
    backend: str = typer.Option("torch", help="torch | jax"),
    model: str = typer.Option("llama", help="llama | megalodon | a plugin model (see golf models)"),
    preset: Optional[str] = typer.Option(
        None, help="model preset (default: tiny at dev scale, the golf preset at official)"
    ),
    seed: int = typer.Option(0),
    data: Optional[Path] = typer.Option(None, help="dataset folder (default data/<track's dataset>)"),
    budget: Optional[str] = typer.Option(
        None, help="override the track budget (seconds, tokens or FLOPs); marks the run unofficial"
    ),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="runs folder"),
    run_id: Optional[str] = typer.Option(None, "--run-id"),
    eval_stride: Optional[int] = typer.Option(None, help="override the eval stride (unofficial)"),
    eval_context: Optional[int] = typer.Option(
        None,
        "--eval-context",
        help="score at this context in tokens (default: the model's seq_len; longer only for models that support it,"
        " e.g. llama's rotary); recorded, not unofficial",
    ),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="config override key=value (unofficial)"),
    resume: Optional[Path] = typer.Option(None, help="continue an interrupted run directory from its checkpoint"),
    force: bool = typer.Option(False, help="replace an existing run directory"),
    prequant: Optional[bool] = typer.Option(
        None,
        "--prequant/--no-prequant",
        help="also score the weights before quantization (default: the track's eval_prequant)",
    ),
    nproc_per_node: int = typer.Option(
        1, "--nproc-per-node", help="processes on this machine (torch: torchrun + DDP; jax: jax.distributed)"
    ),
    nnodes: int = typer.Option(1, "--nnodes", help="machines in the run (run the same command on each)"),
    node_rank: int = typer.Option(
        0, "--node-rank", help="this machine's index, 0..nnodes-1 (jax; torch numbers nodes at the rendezvous)"
    ),
    rdzv_endpoint: Optional[str] = typer.Option(
        None, "--rdzv-endpoint", help="HOST:PORT on node 0 where the machines meet (--nnodes > 1)"
    ),
    checkpoint_every: int = typer.Option(
        0, "--checkpoint-every", hidden=True, help="checkpoint every N steps (default: by track)"
    ),
    log_every: int = typer.Option(10, "--log-every", hidden=True, help="log the loss every N steps"),
    adapt: str = typer.Option(
        "none",
        "--adapt",
        help="score-first test-time adaptation of the artifact's score: none | sgd (if the track allows)",
    ),
    codec: str = typer.Option(
        "int8_per_row",
        help="artifact codec: int8_per_row | int6_per_row | gptq_int6 (GPTQ calibrates on training data)",
    ),
    compressor: str = typer.Option("zstd-22", help="artifact compressor: zstd-22 | lzma | brotli"),
    val_points: int = typer.Option(
        10,  # runner.VAL_POINTS
        "--val-points",
        help="val-curve points: the fixed val subset scored at k/N of the budget, untimed (0: none)",
    ),
    log_to: Optional[List[str]] = typer.Option(
        None, "--log-to", help="also stream to wandb | tensorboard (repeatable; pip install 'golfbench[wandb]')"
    ),
    log_dir: Optional[Path] = typer.Option(
        None, "--log-dir", help="where --log-to trackers write (default: the run directory)"
    ),
    as_json: bool = typer.Option(False, "--json", help="stdout is only the result line (no table on stderr)"),
):
    """Train, export, score. Example: golf run --track fixed-data --scale dev --backend jax --model megalodon --seed 1

    Progress and the result table go to stderr; stdout's last line is always the result as one line of JSON."""
    from golfbench.harness import runner
    from golfbench.harness.launch import Layout, launch
    from golfbench.harness.tracks import parse_budget

    layout = Layout(nproc_per_node, nnodes, node_rank, rdzv_endpoint)
    layout.check()
    if checkpoint_every < 0 or log_every < 1:
        raise GolfError("--checkpoint-every must be >= 0 and --log-every >= 1")
    spec = None
    if resume is not None:  # a resumed run takes every setting from its run.json: refuse what would be ignored
        given = [
            "--" + name.replace("_", "-").replace("sets", "set").replace("out-dir", "out")
            for name in (
                "track",
                "scale",
                "backend",
                "model",
                "preset",
                "seed",
                "data",
                "budget",
                "out_dir",
                "run_id",
                "eval_stride",
                "eval_context",
                "sets",
                "force",
                "prequant",
                "checkpoint_every",
                "log_every",
                "adapt",
                "codec",
                "compressor",
                "val_points",
                "log_to",
                "log_dir",
            )  # fmt: skip
            if getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
        ]
        if given:
            raise GolfError(
                f"--resume continues a run with the settings in its run.json; {', '.join(given)} would be ignored:"
                " drop them (or start a new run)"
            )
    if resume is None:
        from golfbench.harness.artifact import check_codec, check_compressor

        codec = check_codec(codec)
        check_compressor(compressor)
        preset = preset or runner.default_preset(model, scale)
        spec = runner.RunSpec(
            track=track,
            scale=scale,
            backend=backend,
            model=model,
            preset=preset,
            seed=seed,
            data=str(data) if data else None,
            budget=parse_budget(budget),
            out=str(out_dir),
            run_id=run_id,
            eval_stride=eval_stride,
            eval_context=eval_context,
            overrides=_parse_sets(sets),
            force=force,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            prequant=prequant,
            adapt=adapt,
            codec=codec,
            compressor=compressor,
            val_points=val_points,
            log_to=list(log_to or []),
            log_dir=str(log_dir) if log_dir else None,
        )
    if layout.world_size > 1 or layout.rdzv_endpoint:  # checked here for every process, then started
        result = launch(spec or runner.resume_spec(resume), layout, resume_dir=resume)
    elif resume is not None:
        result = runner.resume(resume)
    else:
        result = runner.execute(spec)
    if _reports_result():
        if not as_json:
            print_result(result, console=err)
        _print_result_line(result)
    if result.get("status") != "ok":
        raise typer.Exit(1)


def _reports_result() -> bool:
    """Whether this `golf run` process reports the result: not a process started by a `golf run` launcher (its
    parent reports) and not a non-zero rank under a hand-started torchrun (process 0 reports)."""
    from golfbench.harness.distributed import env_rank
    from golfbench.harness.launch import ERROR_DIR_ENV

    return not os.environ.get(ERROR_DIR_ENV) and env_rank() == 0


def _print_result_line(result: dict) -> None:
    """The machine-readable end of `golf run`'s stdout: the result as one line of compact JSON (sorted keys,
    non-finite floats as null), flushed."""
    from golfbench.harness.records import dumps_line

    sys.stdout.write(dumps_line(result) + "\n")
    sys.stdout.flush()


def print_result(result: dict, console: Console | None = None) -> None:
    """A run's result.json as a table on ``console`` (default stdout): status, scores (bits per byte, nats per
    token), tokens, FLOPs, seconds, bytes."""
    table = Table(
        title=f"{result.get('model')}/{result.get('preset')}@{result.get('backend')} — {result.get('track')} ({result.get('scale')})"
    )
    table.add_column("field")
    table.add_column("value", justify="right")
    for key in (
        "status",
        "reason",
        "val_bpb",
        "pre_quant_val_bpb",
        "val_loss",
        "train_tokens",
        "train_flops",
        "train_seconds",
        "tokens_per_second",
        "steps",
        "artifact_bytes",
        "eval_seconds",
        "eval_stride",
        "eval_context",
        "eval_precision",
        "codec",
        "compressor",
        "calibration_seconds",
        "unofficial",
    ):
        value = result.get(key)
        if value is None and key == "reason":
            continue
        if isinstance(value, float):
            value = f"{value:.4f}" if key in ("val_bpb", "pre_quant_val_bpb", "val_loss") else f"{value:,.4g}"
        elif isinstance(value, int) and not isinstance(value, bool):
            value = f"{value:,}"
        table.add_row(key, str(value))
    (console or out).print(table)


@app.command("eval")
@handled
def eval_cmd(
    artifact: Path = typer.Argument(..., help="artifact.golf file"),
    data: Path = typer.Option(..., help="dataset folder"),
    backend: Optional[str] = typer.Option(None, help="torch | jax (default: the backend that trained it)"),
    stride: int = typer.Option(64, help="sliding-window stride"),
    eval_context: Optional[int] = typer.Option(
        None,
        "--eval-context",
        help="score at this context in tokens (default: the model's seq_len; longer only where the model supports it)",
    ),
    precision: str = typer.Option(
        "fp32", help="fp32 | bf16: how the scorer computes (a track's eval_precision; official tracks: bf16)"
    ),
    nproc_per_node: int = typer.Option(
        1,
        "--nproc-per-node",
        help="torch: score in N torchrun processes (gloo on CPU, NCCL on GPUs), windows split between them; jax uses every visible device of one process",
    ),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="also write the report to this JSON file"),
    adapt: str = typer.Option("none", "--adapt", help="score-first test-time adaptation: none | sgd (one process)"),
    as_json: bool = typer.Option(False, "--json"),
):
    """Re-score any artifact with either backend. Example: golf eval runs/.../artifact.golf --data data/shakespeare_sp1024 --backend jax --precision bf16 --json"""
    from golfbench.harness.adapt import get_recipe
    from golfbench.harness.artifact import naming, read_artifact
    from golfbench.harness.backend import get_backend
    from golfbench.harness.data.dataset import Dataset
    from golfbench.harness.records import atomic_write_json
    from golfbench.harness.scoring import load_artifact_model, score_weights, score_weights_adaptive
    from golfbench.harness.tracks import EVAL_PRECISIONS

    if precision not in EVAL_PRECISIONS:
        raise GolfError(f"unknown --precision '{precision}': choose {' or '.join(EVAL_PRECISIONS)}")
    if nproc_per_node < 1:
        raise GolfError(f"--nproc-per-node must be at least 1, got {nproc_per_node}")
    recipe = get_recipe(adapt)
    if recipe is not None and nproc_per_node > 1:
        raise GolfError(
            "--adapt evaluates on one process (score-first adaptation is sequential): drop --nproc-per-node"
        )
    blob = read_artifact(artifact)
    with naming(artifact):
        loaded = load_artifact_model(blob)
    dataset = Dataset.open(data)
    name = backend or loaded.backend or "torch"
    if nproc_per_node > 1:
        if name != "torch":
            raise GolfError(
                f"--nproc-per-node is for the torch backend; the {name} scorer already shards the windows"
                " over every visible device of one process: drop --nproc-per-node"
            )
        child = [
            "eval",
            str(artifact),
            "--data",
            str(data),
            "--backend",
            name,
            "--stride",
            str(stride),
            "--precision",
            precision,
        ]
        if eval_context is not None:
            child += ["--eval-context", str(eval_context)]
        report = _eval_in_processes(nproc_per_node, child)
    else:
        coll = get_backend(name).collective()  # SINGLE unless this process is one of a torchrun group
        adapted = {}
        if recipe is None:
            res = score_weights(
                name,
                loaded.model,
                loaded.config,
                loaded.weights,
                dataset,
                stride,
                collective=coll,
                precision=precision,
                context=eval_context,
            )
        else:
            res, stats = score_weights_adaptive(
                name,
                loaded.model,
                loaded.config,
                loaded.weights,
                dataset,
                stride,
                recipe,
                precision=precision,
                context=eval_context,
            )
            adapted = {"adapt_recipe": adapt, "adapt_params": recipe.to_dict(), **asdict(stats)}
        if coll.rank != 0:  # every process holds the same result; process 0 reports it
            return
        report = {
            "artifact": str(artifact),
            "backend": name,
            "model": loaded.model,
            "preset": loaded.preset,
            "trained_with": loaded.backend,
            "model_bytes": len(blob),
            "eval_precision": precision,
            "world_size": coll.world_size,
            "train_context": int(loaded.config["seq_len"]),
            **res.to_dict(),
            **adapted,
        }
    if json_out is not None:
        atomic_write_json(json_out, report)
    if as_json:
        _print_json(report)
    else:
        print_result({**report, "status": "ok"})


def _eval_in_processes(nproc: int, child_args: list[str]) -> dict:
    """`golf eval --nproc-per-node N` (torch): the same `golf eval` in N torchrun processes, started as
    `golf run` starts them (golfbench.harness.launch: quiet torchrun, one-line failures); returns process 0's report
    (a dict, read back from its --json-out file). Raises GolfError/LaunchError with the first failure."""
    import shutil
    import tempfile

    from golfbench.harness.launch import Layout, child_env, first_failure, run_torchrun

    layout = Layout(nproc_per_node=nproc)
    folder = Path(tempfile.mkdtemp(prefix="golf-eval-"))
    try:
        report = folder / "report.json"
        code, failures = run_torchrun(
            layout, [*child_args, "--json-out", str(report)], child_env(layout, folder), "golf-eval", folder
        )
        failure = first_failure(folder, failures, report.exists())
        if failure is not None:
            raise failure
        if not report.exists():
            raise GolfError(
                f"the {nproc} eval processes exited (code {code}) without a result; rerun with GOLF_DEBUG=1"
            )
        return json.loads(report.read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# artifacts


@artifact_app.command("inspect")
@handled
def artifact_inspect(
    artifact: Path = typer.Argument(..., help="artifact.golf file"),
    code: Optional[List[Path]] = typer.Option(None, help="code files to count (default: the training backend's)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: tensors, sizes and the cap verdict"),
):
    """Per-tensor table and totals against the 16,000,000-byte cap. Example: golf artifact inspect runs/.../artifact.golf"""
    from golfbench.harness import artifact as art
    from golfbench.harness.backend import get_backend

    blob = art.read_artifact(artifact)
    with art.naming(artifact):
        loaded_meta = art.unpack(blob)[1]
        rows = art.entries(blob)
        kind = art.describe(blob)
    files = code or get_backend(str(loaded_meta.get("backend") or "torch")).code_files(str(loaded_meta.get("model")))
    size = art.size_report(len(blob), art.code_bytes(files))
    raw = sum(e.stored_bytes for e in rows)
    if as_json:
        _print_json(
            {
                "artifact": str(artifact),
                "model": loaded_meta.get("model"),
                "preset": loaded_meta.get("preset"),
                "backend": loaded_meta.get("backend"),
                "codec": kind["codec"],
                "compressor": kind["compressor"],
                "tensors": [
                    {"name": e.name, "shape": list(e.shape), "codec": e.codec, "stored_bytes": e.stored_bytes}
                    for e in rows
                ],
                "stored_bytes": raw,
                **size,
            }
        )
        if not size["under_cap"]:
            raise typer.Exit(1)
        return
    table = Table(
        title=escape(
            f"{artifact} ({loaded_meta.get('model')}/{loaded_meta.get('preset')}, codec {kind['codec']},"
            f" compressor {kind['compressor']})"
        )
    )
    for col in ("tensor", "shape", "codec", "stored bytes"):
        table.add_column(col, justify="right" if col == "stored bytes" else "left")
    for e in rows:
        table.add_row(escape(e.name), "×".join(map(str, e.shape)), escape(e.codec), f"{e.stored_bytes:,}")
    out.print(table)
    out.print(
        f"stored (uncompressed) {raw:,} B → compressed model {size['model_bytes']:,} B + code {size['code_bytes']:,} B"
        f" = [bold]{size['total_bytes']:,} B[/] of {size['cap_bytes']:,} B cap "
        + ("[green]under the cap[/]" if size["under_cap"] else "[red]OVER THE CAP[/]")
    )
    if not size["under_cap"]:
        err.print(
            f"[bold red]error:[/] {escape(str(artifact))} totals {size['total_bytes']:,} bytes (model + code), over the"
            f" {size['cap_bytes']:,}-byte cap; shrink the model or the code",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@artifact_app.command("unpack")
@handled
def artifact_unpack(
    artifact: Path = typer.Argument(..., help="artifact.golf file"),
    out_path: Path = typer.Option(..., "--out", help="weights.safetensors to write"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: the file written and its tensors"),
):
    """Write the dequantized fp32 canonical weights. Example: golf artifact unpack runs/.../artifact.golf --out weights.safetensors"""
    from safetensors.numpy import save

    from golfbench.harness import artifact as art
    from golfbench.harness.records import atomic_write_bytes

    blob = art.read_artifact(artifact)
    with art.naming(artifact):
        weights, meta = art.unpack(blob)
    atomic_write_bytes(
        out_path,
        save(
            weights,
            metadata={
                "model": str(meta.get("model")),
                "preset": str(meta.get("preset")),
                "config": json.dumps(meta.get("config", {})),
            },
        ),
    )
    if as_json:
        _print_json(
            {
                "out": str(out_path),
                "model": meta.get("model"),
                "preset": meta.get("preset"),
                "tensors": {k: list(v.shape) for k, v in weights.items()},
            }
        )
    else:
        out.print(f"wrote {len(weights)} fp32 tensors to {out_path}")


# ----------------------------------------------------------------------------------------------------------
# compare / leaderboard / verify


@app.command("compare")
@handled
def compare_cmd(
    targets: List[str] = typer.Argument(..., help="model\\[/preset]@backend, e.g. megalodon@jax llama@torch"),
    track: str = typer.Option("fixed-data"),
    scale: str = typer.Option("dev"),
    seeds: int = typer.Option(3, help="seeds 0..N-1 per target"),
    data: Optional[Path] = typer.Option(None, help="dataset folder (default data/<track's dataset>)"),
    budget: Optional[str] = typer.Option(None, help="override the track budget (unofficial)"),
    eval_stride: Optional[int] = typer.Option(
        None, "--eval-stride", help="override the eval stride for every run (unofficial)"
    ),
    out_dir: Path = typer.Option(Path("runs"), "--out", help="runs folder; finished runs there are reused"),
    report: Optional[Path] = typer.Option(
        None, help="where compare.json/compare.png go (default <out>/<track>/<scale>)"
    ),
    as_json: bool = typer.Option(False, "--json"),
):
    """Same data, batches, evaluator and budget for each target. Example: golf compare megalodon@jax llama@torch --seeds 2"""
    from golfbench.harness import compare

    if seeds < 1:
        raise GolfError("--seeds must be at least 1")
    parsed = [compare.parse_target(t, scale) for t in targets]
    if len(set(parsed)) != len(parsed):
        raise GolfError("the same target is listed twice; list each model@backend once")
    # markup=False: "[compare]" is the log's prefix, not a rich style tag
    results = compare.run_all(
        parsed,
        seeds,
        track,
        scale,
        data,
        budget,
        out_dir,
        eval_stride=eval_stride,
        log=lambda m: err.print(m, highlight=False, markup=False),
    )
    summary = compare.summarize(results)
    report_dir = report or (out_dir / track / scale)
    compare.write_report(
        summary,
        results,
        report_dir,
        {
            "track": track,
            "scale": scale,
            "seeds": seeds,
            "budget": budget,
            "eval_stride": eval_stride,
            "targets": [t.label for t in parsed],
        },
    )
    if as_json:
        _print_json(summary)
        return
    table = Table(title=f"golf compare — {track} ({scale}), {seeds} seed(s)")
    for col in (
        "model",
        "val_bpb (mean ± std)",
        "train s",
        "tokens/s",
        "model FLOPs",
        "artifact bytes",
        "p (best better)",
    ):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in sorted(summary["rows"], key=lambda r: r["mean_val_bpb"] if r["n_ok"] else float("inf")):
        bpb = f"{r['mean_val_bpb']:.4f} ± {r['std_val_bpb']:.4f}" if r["n_ok"] else "/".join(r["statuses"])
        p = (
            "best"
            if r["label"] == summary["best"]
            else ("–" if r["p_best_better"] is None else f"{r['p_best_better']:.3g}")
        )
        table.add_row(
            r["label"],
            bpb,
            f"{r['train_seconds']:.1f}",
            f"{r['tokens_per_second']:,.0f}",
            f"{r['train_flops']:.3g}",
            f"{r['artifact_bytes']:,}" if r["artifact_bytes"] else "–",
            p,
        )
    out.print(table)
    for f in summary["framework_effect"]:
        out.print(
            f"framework effect, {f['model']}: torch/jax tokens/s = {f['torch_over_jax_tokens_per_s']:.2f}×,"
            f" BPB jax − torch = {f['bpb_jax_minus_torch']:+.4f}"
        )
    for m in summary["model_effect"]:
        p = "–" if m["p"] is None else f"{m['p']:.3g}"
        out.print(
            f"model effect, {m['backend']}: {m['better']} beats {m['worse']} by {m['bpb_difference']:.4f} BPB (p={p})"
        )
    out.print(f"wrote {report_dir / 'compare.json'} and {report_dir / 'compare.png'}")


@app.command("leaderboard")
@handled
def leaderboard_cmd(
    runs: Path = typer.Option(Path("runs"), help="runs folder to scan"),
    track: Optional[str] = typer.Option(None, help="only this track"),
    fmt: str = typer.Option("md", "--format", help="md | json | html"),
    out_file: Optional[Path] = typer.Option(
        None, "--out", help="write to a file instead of stdout; with html, a folder gets the whole site"
    ),
    include_unofficial: bool = typer.Option(
        False, "--include-unofficial", help="also rank runs with overridden budgets"
    ),
    as_json: bool = typer.Option(False, "--json", help="the same as --format json"),
):
    """Per-track boards from verified run records (and imports). Example: golf leaderboard --format html --out site"""
    from golfbench.harness import leaderboard
    from golfbench.harness.records import atomic_write_bytes

    if as_json:
        fmt = "json"
    if fmt not in leaderboard.FORMATS:
        raise GolfError(f"unknown --format '{fmt}': choose md, json or html")
    if not runs.is_dir():
        raise GolfError(f"runs folder {runs} does not exist; run `golf run` or `golf compare` first")
    collected = leaderboard.collect(runs, track, include_unofficial)
    for w in collected.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if fmt == "html" and out_file and out_file.suffix.lower() not in (".html", ".htm"):
        from golfbench.harness.site import write_site

        counts = write_site(collected, out_file)
        out.print(
            f"wrote site {out_file}: {counts['boards']} board(s), {counts['entries']} entries,"
            f" {counts['pages']} pages, {counts['plots']} plots; open {out_file / 'index.html'}"
        )
        return
    text = leaderboard.FORMATS[fmt](collected)
    if out_file:
        atomic_write_bytes(out_file, text.encode("utf-8"))
        out.print(f"wrote {out_file}")
    else:
        sys.stdout.write(text)


import_app = typer.Typer(no_args_is_help=True, help="Bring other benchmarks' results onto the boards.")
app.add_typer(import_app, name="import")


@import_app.command("parameter-golf")
@handled
def import_parameter_golf_cmd(
    path: Path = typer.Argument(..., help="a local clone of openai/parameter-golf (or its records/ folder)"),
    runs: Path = typer.Option(Path("runs"), "--out", help="runs folder; writes OUT/imported/parameter-golf/"),
):
    """Import records/*/*/submission.json as self-reported entries. Example: golf import parameter-golf ../parameter-golf"""
    from golfbench.harness import pg_import

    docs = pg_import.import_parameter_golf(path, runs)
    cohorts: dict[tuple, int] = {}
    for d in docs:
        key = (pg_import.track_label(d["track"]), d["tokenizer"])
        cohorts[key] = cohorts.get(key, 0) + 1
    incomplete = sum(1 for d in docs if d["missing"])
    out.print(
        f"imported {len(docs)} records into {escape(str(runs / pg_import.IMPORT_DIR))} (self-reported, never verified);"
        f" {incomplete} lack a value (shown as —):",
        highlight=False,
    )
    for (track, tok), n in sorted(cohorts.items()):
        out.print(f"  {escape(track)} · {escape(tok)}: {n}", highlight=False)
    for d in docs:
        if d["missing"]:
            out.print(f"  {escape(d['record'])}: missing {', '.join(d['missing'])}", highlight=False)


@app.command("verify")
@handled
def verify_cmd(
    run_dir: Path = typer.Argument(..., help="run directory"),
    data: Optional[Path] = typer.Option(None, help="dataset folder (default: the one in run.json)"),
    backend: Optional[str] = typer.Option(None, help="re-score with this backend (default: the run's)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: ok, checks, failures, recomputed BPB"),
):
    """Re-derive a run's result from its files alone. Example: golf verify runs/fixed-data/dev/llama-tiny-torch-s0"""
    from golfbench.harness.verify import verify_run

    if not run_dir.is_dir():
        raise GolfError(f"run directory {run_dir} does not exist")
    verdict = verify_run(run_dir, data, backend)
    if as_json:
        _print_json(
            {
                "run_dir": str(run_dir),
                "ok": verdict.ok,
                "checks": verdict.checks,
                "failures": verdict.failures,
                "recomputed_bpb": verdict.recomputed_bpb,
            }
        )
        if not verdict.ok:
            raise typer.Exit(1)
        return
    for line in verdict.failures:
        err.print(f"[red]FAIL[/] {escape(line)}", highlight=False, soft_wrap=True)
    if not verdict.ok:
        raise typer.Exit(1)
    out.print(
        f"[green]verified[/] {run_dir}: {len(verdict.checks)} checks passed, val_bpb {verdict.recomputed_bpb:.6f} recomputed"
    )


@app.command("export")
@handled
def export_cmd(
    run_dirs: List[Path] = typer.Argument(..., help="run directories: the seeds of one configuration"),
    fmt: str = typer.Option("parameter-golf", "--format", help="parameter-golf"),
    out_dir: Path = typer.Option(..., "--out", help="records folder to create"),
    author: str = typer.Option("anonymous", help="submission author"),
    github_id: str = typer.Option("anonymous", "--github-id"),
    name: Optional[str] = typer.Option(None, help="submission name (default: model/preset@backend)"),
    blurb: Optional[str] = typer.Option(None, help="one-paragraph description"),
    as_json: bool = typer.Option(False, "--json", help="print submission.json as written"),
):
    """Write a parameter-golf records folder. Example: golf export runs/fixed-data/dev/llama-tiny-torch-s* --out records/my-run"""
    from golfbench.harness import submission

    if fmt != "parameter-golf":
        raise GolfError(f"unknown --format '{fmt}': only parameter-golf is supported")
    sub = submission.export(
        run_dirs, out_dir, author, github_id, name or "golfbench run", blurb or "Exported by golfbench."
    )
    if as_json:
        _print_json({"out": str(out_dir), "submission": sub})
        return
    out.print(
        f"wrote {out_dir}: {len(sub['seeds'])} seed(s), val_bpb {sub['val_bpb']:.4f} ± {sub['val_bpb_std']:.4f},"
        f" {sub['bytes_total']:,} bytes"
    )


@app.command("validate-submission")
@handled
def validate_submission_cmd(
    folder: Path = typer.Argument(..., help="records folder with submission.json"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object: valid and the problems found"),
):
    """Check a records folder against the submission schema and the size rule. Example: golf validate-submission records/my-run"""
    from golfbench.harness import submission

    problems = submission.validate_folder(folder)
    if as_json:
        _print_json({"folder": str(folder), "valid": not problems, "problems": problems})
        if problems:
            raise typer.Exit(1)
        return
    for p in problems:
        err.print(f"[red]invalid:[/] {escape(p)}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    out.print(f"[green]valid[/] {folder}")


@app.command("rehearse")
@handled
def rehearse_cmd(
    data: Path = typer.Option(
        Path("data/shakespeare_sp1024"), help="a built Shakespeare dataset (golf data build shakespeare)"
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="keep the rehearsal's dataset, tracks and runs here (default: a temp folder, removed)"
    ),
    backends: List[str] = typer.Option(["torch", "jax"], "--backend", help="backends to rehearse (repeatable)"),
    processes: int = typer.Option(2, help="torch: gloo processes (torchrun)"),
    devices: int = typer.Option(2, help="JAX: forced host devices"),
    seconds: float = typer.Option(20.0, help="the wallclock track's rehearsal budget in seconds"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object per rehearsal"),
):
    """Play every track's official rules on the CPU (several processes/devices, official precision and eval
    policy, verify). Example: golf rehearse --data data/shakespeare_sp1024"""
    from golfbench.harness.rehearse import rehearse

    done = rehearse(
        data,
        out_dir,
        tuple(backends),
        processes,
        devices,
        seconds,
        log=lambda m: err.print(m, highlight=False, markup=False),
    )
    if as_json:
        _print_json(
            [
                {
                    "track": r.track,
                    "backend": r.backend,
                    "target": r.target,
                    "seconds": r.seconds,
                    "checks": r.checks,
                    "failures": r.failures,
                    "val_bpb": r.result.get("val_bpb"),
                }
                for r in done
            ]
        )
    else:
        table = Table(title="golf rehearse — official rules on this machine")
        for col in ("track", "target", "checks", "val_bpb", "seconds", "verdict"):
            table.add_column(col)
        for r in done:
            bpb = r.result.get("val_bpb")
            table.add_row(
                r.track,
                r.target,
                str(r.checks),
                f"{bpb:.4f}" if isinstance(bpb, float) else "–",
                f"{r.seconds:.0f}",
                "[green]ok[/]" if not r.failures else "[red]FAILED[/]",
            )
        out.print(table)
    failed = [r for r in done if r.failures]
    if failed:
        err.print(f"[bold red]error:[/] {len(failed)} of {len(done)} rehearsals broke an official rule (listed above)")
        raise typer.Exit(1)


@app.command("bundle")
@handled
def bundle_cmd(
    out_dir: Path = typer.Argument(..., help="a new (or empty) folder for the bundle"),
    data: Optional[List[Path]] = typer.Option(
        None, "--data", help="a built dataset to ship (repeatable; default: every dataset under data/)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print bundle.json (plus size and seconds) as JSON"),
):
    """Write an offline bundle for a GPU node without network: wheels (no torch/jax/CUDA: the node's own are
    used), datasets, the GPU bench, install.sh and gpu.sh. Needs network and a source checkout.
    Example: golf bundle ../golf-node && scp -r ../golf-node node: && ssh node bash golf-node/install.sh venv"""
    from golfbench.harness.bundle import bundle

    info = bundle(out_dir, data or None, log=lambda m: err.print(m, highlight=False, markup=False))
    if as_json:
        _print_json(info)
    else:
        out.print(
            f"bundle {out_dir}: {info['bytes'] / 1e6:.1f} MB ({len(info['wheels'])} wheels, datasets"
            f" {', '.join(info['datasets'])}, Python {info['python']}) in {info['seconds']:.0f} s;"
            f" on the node: bash {out_dir}/install.sh VENV && bash {out_dir}/gpu.sh VENV",
            highlight=False,
        )


def main() -> None:
    """The `golf` console entry point: runs the typer app (commands report failures in one line and exit non-zero).

    Usage errors (an unknown option, a missing argument) are one line too, with the command's --help to read,
    instead of click's boxed usage panel; exit code 2.
    """
    try:  # typer >= 0.16 vendors click as typer._click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on plain click
        from click.exceptions import NoArgsIsHelpError, UsageError

    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `golf` or `golf data` alone: the help is the answer
        exc.show()
        sys.exit(0)
    except UsageError as exc:
        names, ctx = [], exc.ctx
        while ctx is not None and ctx.parent is not None:  # the subcommands; the root is always `golf`
            names.insert(0, ctx.info_name)
            ctx = ctx.parent
        where = " ".join(["golf", *names])
        err.print(
            f"[bold red]error:[/] {escape(exc.format_message())} (see `{where} --help`)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err.print("[bold red]interrupted[/]")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
