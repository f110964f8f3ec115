"""`golf budget`: what a config costs and what each track's budget buys, before any training.

Everything here is computed from the model spec (parameters, analytic FLOPs per token, canonical shapes), the
artifact codecs and the track rules; nothing trains. The one estimate is the artifact's compressed size: the
bytes an artifact takes depend on the trained weights, which do not exist yet. It is estimated by packing
*prior weights* with the real codec and compressor (harness/artifact.py, the same code a run uses): the
canonical initial weights with every 2-D matrix redrawn as a Gaussian at its trained scale (see ``prior_weights``)
and every other tensor perturbed off its initial constant. Two exact bounds come with it: an exact bound comes with it: ``upper`` is the
container before compression plus the compressor's worst-case overhead (a trained artifact can never be larger).
Measured on trained dev runs: within 2% for llama/tiny and megalodon/tiny (tests/test_budget.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golfbench.harness.artifact import KEEP_FLOAT_MAX_NUMEL, _decompress, pack, pack_tokenizer
from golfbench.harness.errors import GolfError
from golfbench.harness.init import init_weights
from golfbench.harness.models import ModelSpec, get_spec

# The prior's scales (fp32 values; see prior_weights). Measured on dev runs of llama/tiny and megalodon/tiny
# (fixed-data dev, 262,144 tokens): trained matrices sit 1.4-1.8x above max(init std, 1/sqrt(fan_in)); trained
# embedding tables at std 0.09-0.29; trained gains, norms and biases move ~0.02-0.3 off their initial constants.
# Matrices big enough to be quantized (more than KEEP_FLOAT_MAX_NUMEL entries) are drawn scale-free (std 1, every
# row's int8 scale above the 1/127 floor): parameter-golf's trained baseline (17.06M parameters, 9x512) packs to
# ~15.8 MB with int8 per row + zlib-9, ~7.4 bits per weight, which only rows past the floor give.
MATRIX_GROWTH = 1.5
QUANTIZED_MATRIX_STD = 1.0
EMBEDDING_STD = 0.15
SMALL_TENSOR_STD = 0.05
PRIOR_SEED = 1234


def prior_weights(spec: ModelSpec, config: dict) -> dict[str, np.ndarray]:
    """Weights shaped like ``spec``/``config``'s, standing in for trained ones: {canonical name: float32 array}.

    Every 2-D tensor with at least 4,096 entries is N(0, σ²): embedding tables (names containing "emb")
    σ = max(init std, EMBEDDING_STD); other matrices the artifact quantizes σ = QUANTIZED_MATRIX_STD; the rest
    σ = MATRIX_GROWTH · max(init std, 1/sqrt(fan_in)). Every other tensor is its canonical initial value (seed 0)
    plus N(0, SMALL_TENSOR_STD²). Deterministic (fixed seed).
    """
    init = init_weights(spec, config, 0)
    rng = np.random.default_rng(PRIOR_SEED)
    out = {}
    for name in sorted(init):
        w = init[name].astype(np.float64)
        if w.ndim == 2 and w.size >= 4096:
            base = float(w.std())
            if "emb" in name:
                std = max(base, EMBEDDING_STD)
            elif w.size > KEEP_FLOAT_MAX_NUMEL:
                std = QUANTIZED_MATRIX_STD
            else:
                std = MATRIX_GROWTH * max(base, 1.0 / math.sqrt(w.shape[1]))
            out[name] = rng.normal(0.0, std, size=w.shape)
        else:
            out[name] = w + rng.normal(0.0, SMALL_TENSOR_STD, size=w.shape)
    return {k: v.astype(np.float32) for k, v in out.items()}


@dataclass
class ArtifactEstimate:
    """Estimated model bytes of one codec (compressed artifact without code): ``estimate`` from the trained prior,
    ``upper`` the uncompressed container plus the compressor's worst-case frame overhead (no trained artifact of
    this config can be larger). Bytes, decimal."""

    codec: str
    estimate: int
    upper: int


def _meta(spec: ModelSpec, preset: str, config: dict, backend: str) -> dict:
    # the same metadata block a run writes (runner._score), so its bytes are counted too
    return {
        "model": spec.name,
        "preset": preset,
        "config": spec.model_part(config),
        "backend": backend,
        "run_id": "x" * 40,
    }


def estimate_artifact(
    spec: ModelSpec, preset: str, config: dict, codec: str = "int8_per_row", compressor: str = "zstd-22"
) -> ArtifactEstimate:
    """The model bytes ``codec`` + ``compressor`` would produce for ``spec``/``config`` (see the module docstring):
    one quantization and one compression of the prior weights, with the metadata block a run writes. A codec that
    needs Hessians (GPTQ) is estimated without them: its storage (bit-packed int6) is the same, only which values
    are stored differs. Raises GolfError for an unknown codec or compressor."""
    meta = _meta(spec, preset, config, "torch")
    blob = pack(prior_weights(spec, config), spec.is_control, meta, codec=codec, compressor=compressor, hessians={})
    container, compressed = len(_decompress(blob)), len(blob)
    # worst case on incompressible input, for every compressor here: stored blocks cost at most 3 bytes per 64 KiB
    # (zstd 3 per 128 KiB, xz 3 per 64 KiB, brotli less), plus frame headers, index and golfbench's 4-byte header
    upper = container + 3 * (container // (64 * 1024) + 1) + 128
    return ArtifactEstimate(codec, compressed, max(upper, compressed))


def tokens_bought(
    budget_kind: str, budget: float, flops_per_token: float, tokens_per_second: float | None
) -> float | None:
    """Training tokens a budget buys: tokens as given; FLOPs / analytic FLOPs per token; seconds × a measured
    throughput (None when none is given: a wallclock budget cannot be turned into tokens before a run)."""
    if budget_kind == "tokens":
        return float(budget)
    if budget_kind == "flops":
        return float(budget) / flops_per_token
    return float(budget) * tokens_per_second if tokens_per_second else None


def report(
    model: str,
    preset: str,
    overrides: dict,
    scale: str,
    code_bytes: dict[str, int],
    tokens_per_second: float | None = None,
    codecs: list[str] | None = None,
    compressor: str = "zstd-22",
    data: str | None = None,
) -> dict:
    """The `golf budget` report as a dict: model, preset, config, param_count, flops_per_token (dict), batch,
    artifact (per codec, with ``compressor``: estimate/upper model bytes), code_bytes (per backend), and per track
    (``tracks``): budget kind and value at ``scale``, tokens and steps it buys (None for a wallclock budget
    without ``tokens_per_second``), and per codec and backend the estimated total and whether it fits the cap
    (``fits``: "yes" when even the upper bound fits, "likely" when the estimate fits, "no" otherwise). Where a
    track counts the tokenizer (``count_tokenizer_bytes``), its counted bytes (artifact.pack_tokenizer) are added:
    the tokenizer of ``data`` (a dataset folder), else of the track's dataset at data/<name>; ``tokenizer_bytes``
    is None (and not added) when neither exists.

    Raises GolfError for an unknown model, preset, config key or scale, or a tokens_per_second <= 0.
    """
    from golfbench.harness.artifact import CODECS
    from golfbench.harness.tracks import SCALES, list_tracks

    if scale not in SCALES:
        raise GolfError(f"unknown scale '{scale}': choose official or dev")
    if tokens_per_second is not None and not tokens_per_second > 0:
        raise GolfError(f"--tokens-per-second must be positive, got {tokens_per_second}")
    spec = get_spec(model)
    config = spec.config(preset, overrides)
    fpt = spec.flops_per_token(config)
    seq_len = int(config["seq_len"])
    batch_tokens = max(1, int(config["train_batch_tokens"]) // seq_len) * seq_len
    codecs = codecs or list(CODECS)
    artifact = {c: estimate_artifact(spec, preset, config, c, compressor) for c in codecs}
    tracks = []
    for track in list_tracks():
        if scale not in track.scales:
            continue
        rules = track.scale(scale)
        bought = tokens_bought(track.budget_kind, rules["budget"], fpt["total"], tokens_per_second)
        if bought is not None:
            bought = math.floor(bought / seq_len) * seq_len  # whole sequences, as the runner consumes them
        tokenizer = 0
        if rules.get("count_tokenizer_bytes"):
            folder = Path(data) if data else Path("data") / str(rules["dataset"])
            model_file = folder / "tokenizer.model"
            tokenizer = len(pack_tokenizer(model_file.read_bytes())) if model_file.is_file() else None
        fits = {}
        for c, a in artifact.items():
            for b, code in code_bytes.items():
                total, upper = a.estimate + code + (tokenizer or 0), a.upper + code + (tokenizer or 0)
                cap = track.artifact_cap_bytes
                fits[f"{c}@{b}"] = {
                    "total_bytes": total,
                    "upper_bytes": upper,
                    "cap_bytes": cap,
                    "fits": "yes" if upper <= cap else "likely" if total <= cap else "no",
                }
        tracks.append(
            {
                "track": track.name,
                "budget_kind": track.budget_kind,
                "budget": rules["budget"],
                "tokens": bought,
                "steps": None if bought is None else math.ceil(bought / batch_tokens),
                "train_flops": None if bought is None else bought * fpt["total"],
                "tokenizer_bytes": tokenizer,
                "artifact": fits,
            }
        )
    return {
        "model": model,
        "preset": preset,
        "scale": scale,
        "overrides": overrides,
        "config": config,
        "param_count": spec.param_count(config),
        "flops_per_token": fpt,
        "batch_tokens": batch_tokens,
        "tokens_per_second": tokens_per_second,
        "compressor": compressor,
        "artifact": {c: a.__dict__ for c, a in artifact.items()},
        "code_bytes": code_bytes,
        "tracks": tracks,
    }
