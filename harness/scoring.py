"""Score weights or an artifact on a dataset's full val split, through any backend's scorer.

Shared by `golf run` (pre-quant and round-tripped weights), `golf eval` and `golf verify`, so there is one
path from bytes to a BPB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from golfbench.harness import progress
from golfbench.harness.adapt import AdaptRecipe, AdaptStats, evaluate_adaptive
from golfbench.harness.artifact import unpack
from golfbench.harness.backend import get_backend
from golfbench.harness.data.dataset import Dataset
from golfbench.harness.distributed import SINGLE, Collective
from golfbench.harness.errors import GolfError
from golfbench.harness.evaluate import EvalResult, evaluate
from golfbench.harness.models import ModelSpec, check_weights, get_spec
from golfbench.harness.probes import probe_scorer


@dataclass
class ArtifactModel:
    """An artifact, loaded: ``model`` and ``preset`` (spec and preset names), the ``config`` rebuilt from the spec
    (never taken on trust from the file), the ``backend`` that trained it ("" when unrecorded), the dequantized
    float32 ``weights`` under canonical names, and the raw ``meta`` block.
    """

    model: str
    preset: str
    config: dict
    backend: str
    weights: dict[str, np.ndarray]
    meta: dict


def load_artifact_model(blob: bytes) -> ArtifactModel:
    """Unpack artifact bytes (`unpack`: executes nothing) and rebuild its config from the spec: the stored
    architecture over the preset, unknown keys refused. Raises GolfError for a corrupt or foreign artifact,
    metadata without model/preset/config or with a non-object config, an unknown model or preset, a bad config
    value, or weights whose names or shapes differ from the spec's (`check_weights`).
    """
    weights, meta = unpack(blob)
    try:
        model, preset, config = meta["model"], meta["preset"], meta["config"]
    except KeyError as exc:
        raise GolfError(f"artifact metadata lacks '{exc.args[0]}'; it was not written by `golf run`") from None
    if not isinstance(config, dict):
        raise GolfError("artifact metadata 'config' is not a JSON object; it was not written by `golf run`")
    spec = get_spec(model)
    # Rebuild the config from the spec so a tampered metadata block cannot smuggle in unknown keys: the stored
    # architecture over the preset, plus the preset's training recipe (scoring needs none; artifacts written
    # before the ModelConfig / TrainRecipe split stored recipe keys too, which are ignored).
    clean = spec.config_from_model_part(preset, config)
    check_weights(spec, clean, weights)
    return ArtifactModel(model, preset, clean, meta.get("backend", ""), weights, meta)


def score_weights(
    backend_name: str,
    model: str,
    config: dict,
    weights: dict[str, np.ndarray],
    dataset: Dataset,
    stride: int,
    label: str = "eval",
    batch_windows: int = 32,
    collective: Collective = SINGLE,
    precision: str = "fp32",
    context: int | None = None,
) -> EvalResult:
    """Probe and score ``weights`` on the full val split with ``backend_name``'s scorer.

    ``context``: the eval window in tokens (default: the config's seq_len); longer than seq_len only where the
    model spec allows it (``ModelSpec.eval_context_extends``; GolfError otherwise).

    With a multi-process ``collective`` every process must call this with the same arguments: each scores its
    share of the windows and all get the same result. Raises GolfError (vocab mismatch, bad weights, a probe
    failure, a non-finite NLL).
    """
    spec = _check_inputs(model, config, weights, dataset)
    backend = get_backend(backend_name)
    scorer = backend.scorer(model, config, weights, precision=precision)
    tokens = dataset.val_tokens()
    accounting = dataset.accounting()
    trained = int(config["seq_len"])
    context = spec.check_eval_context(config, int(context) if context is not None else trained)
    probes = probe_scorer(scorer, tokens, context, int(config["vocab_size"]), precision=precision)
    with progress.bar(label, total=1.0) as update:
        res = evaluate(
            scorer,
            tokens,
            accounting,
            context=context,
            stride=min(stride, context),
            batch_windows=batch_windows,
            progress=lambda done, total: update(done / max(total, 1)),
            collective=collective,
            train_context=trained,
        )
    res.policy += _probe_text(probes)
    return res


def _probe_text(probes: dict) -> str:
    return (
        f"; integrity probes passed at {probes['probe_positions']} positions (sum err"
        f" {probes['worst_sum_error']:.1e}, nll gap {probes['worst_nll_gap']:.1e},"
        f" causal change {probes['worst_causal_change']:.1e})"
    )


def _check_inputs(model: str, config: dict, weights: dict[str, np.ndarray], dataset: Dataset) -> ModelSpec:
    """The model's spec, once ``config``'s vocab matches ``dataset``'s and ``weights`` match the spec (GolfError)."""
    spec = get_spec(model)
    if config["vocab_size"] != dataset.vocab_size:
        raise GolfError(
            f"model vocab {config['vocab_size']} differs from dataset '{dataset.name}' vocab {dataset.vocab_size};"
            " use a dataset built with the same tokenizer"
        )
    check_weights(spec, config, weights)
    return spec


def score_weights_adaptive(
    backend_name: str,
    model: str,
    config: dict,
    weights: dict[str, np.ndarray],
    dataset: Dataset,
    stride: int,
    recipe: AdaptRecipe,
    label: str = "eval (adaptive)",
    batch_windows: int = 32,
    collective: Collective = SINGLE,
    precision: str = "fp32",
    context: int | None = None,
) -> tuple[EvalResult, AdaptStats]:
    """`score_weights` with score-first test-time adaptation (harness/adapt.py) by ``recipe``: the backend's
    adapter is probed before the first chunk and again after its first update, then evaluated chunk by chunk.
    ``context`` as in `score_weights` (the adapter then also trains on rows of that many tokens).
    Returns the result and what adaptation cost. Raises GolfError as `score_weights`, for a backend without
    an ``adapter`` hook. With several processes each runs the whole evaluation and returns process 0's result.
    """
    spec = _check_inputs(model, config, weights, dataset)
    backend = get_backend(backend_name)
    if not hasattr(backend, "adapter"):
        raise GolfError(f"backend '{backend_name}' has no test-time adaptation hook (adapter); run without --adapt")
    adapter = backend.adapter(model, config, weights, precision=precision, recipe=recipe)
    tokens = dataset.val_tokens()
    trained = int(config["seq_len"])
    context = spec.check_eval_context(config, int(context) if context is not None else trained)
    vocab = int(config["vocab_size"])
    probes = probe_scorer(adapter, tokens, context, vocab, precision=precision)
    after: list[dict] = []
    with progress.bar(label, total=1.0) as update:
        res, stats = evaluate_adaptive(
            adapter,
            tokens,
            dataset.accounting(),
            context=context,
            stride=min(stride, context),
            recipe=recipe,
            flops_per_token=spec.flops_per_token(config)["total"],
            bos_id=dataset.bos_id,
            batch_windows=batch_windows,
            probe=lambda a: after.append(probe_scorer(a, tokens, context, vocab, precision=precision)),
            progress=lambda done, total: update(done / max(total, 1)),
            collective=collective,
            train_context=trained,
        )
    res.policy += _probe_text(probes) + (" and again after the first adaptation" if after else "")
    return res, stats


def val_subset(dataset: Dataset, targets: int) -> np.ndarray:
    """The first ``targets`` + 1 val tokens (int32 (n,), fewer when the split is shorter): the fixed val subset
    the val curve scores, read from the head of the val shards (memory-mapped; the rest is never loaded)."""
    from golfbench.harness.data.shards import read_shard

    parts, have = [], 0
    for path in dataset.val_paths:
        if have >= targets + 1:
            break
        shard = read_shard(path)
        take = min(len(shard), targets + 1 - have)
        parts.append(np.asarray(shard[:take], dtype=np.int32))
        have += take
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def score_subset(
    backend_name: str,
    model: str,
    config: dict,
    weights: dict[str, np.ndarray],
    tokens: np.ndarray,
    accounting,
    collective: Collective = SINGLE,
    precision: str = "fp32",
    batch_windows: int = 32,
) -> EvalResult:
    """Score ``weights`` on a val subset (``tokens``: int32 (n,), from `val_subset`) for the val curve: the same
    evaluator and byte accounting as the final score, but non-overlapping windows of the model's context
    (stride = context, for speed), no integrity probes and no progress bar. ``accounting``: the dataset's
    ByteAccounting. With a multi-process ``collective`` every process must call it alike (windows are sharded,
    sums all-reduced). Raises GolfError as `evaluate` (bad weights, a non-finite NLL).
    """
    scorer = get_backend(backend_name).scorer(model, config, weights, precision=precision)
    context = int(config["seq_len"])
    return evaluate(
        scorer,
        tokens,
        accounting,
        context=context,
        stride=context,
        batch_windows=batch_windows,
        collective=collective,
    )
