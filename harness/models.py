"""Model specs: typed configs and presets, canonical parameter names and shapes, the optimizer recipe
declaration, parameter and FLOP formulas.

Each spec has a frozen ModelConfig (the architecture an artifact stores) and a frozen TrainRecipe (what only
training needs); presets are pairs of instances, overrides are parsed by field type. The recipe is declared
here once, by canonical tensor name: which tensors Muon and Adam update at which learning-rate key
(``ModelSpec.optimizer_groups``), which are control tensors kept fp32 (``is_control``), and the Muon momentum
schedule (``momentum_schedule``); both backends build their optimizers from it.

Every backend implements these specs with exactly these canonical weights (linear weights are (out, in)),
so an artifact trained in one framework is scored in another. The formulas here are the single source of
truth for parameter counts and for the FLOPs charged on the flop-budget track, whatever backend runs.

FLOP convention (stated once, applied to every spec): training FLOPs per token = 3 x forward FLOPs
(forward + backward); a matmul of an m-vector by an (m, n) matrix costs 2mn; the LM head is counted even
when tied; attention is causal, so a query at position t attends t+1 keys and the mean number of attended
keys is (W+1)/2 for a causal window of W (W = seq_len for llama, chunk_size for megalodon); elementwise
work (norms, activations, softmax, rotary) is not counted; the CEMA FFT convolution is counted as
10*log2(n_fft) + 6 real FLOPs per channel per token forward, n_fft = next power of two >= 2*seq_len.
Executed FLOPs: a layer applied k times is charged k times (``loops`` in the config).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
import numbers
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

from golfbench.harness.errors import GolfError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Names become path parts of run directories: refuse separators, '..' and odd characters."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise GolfError(f"invalid {kind} '{value}': use letters, digits, '_', '-' or '.' (no path separators or '..')")
    return value


# ----------------------------------------------------------------------------------------------------------
# Typed configs: a spec's architecture (ModelConfig) and its training recipe (TrainRecipe)


@dataclass(frozen=True)
class ModelConfig:
    """Base of a spec's architecture: every field an artifact needs to rebuild the model (dims, heads, seq_len,
    rope / softcap / init constants, loops). Subclasses are frozen dataclasses of int, float and bool fields;
    artifacts store exactly these fields (``ModelSpec.model_part``)."""


@dataclass(frozen=True)
class TrainRecipe:
    """Base of a spec's training recipe: learning rates (per optimizer group), ``train_batch_tokens``, Muon /
    Adam constants, momentum schedule and ``warmdown_frac``. Never stored in an artifact: scoring needs none."""


@dataclass(frozen=True)
class Preset:
    """A named preset: the architecture and the training recipe, as instances of the spec's two dataclasses."""

    model: ModelConfig
    recipe: TrainRecipe

    def replace(self, **changes) -> Preset:
        """A copy with some fields changed, each routed to the part that declares it; an unknown key raises
        GolfError (with the valid keys)."""
        model_keys, recipe_keys = _field_types(type(self.model)), _field_types(type(self.recipe))
        unknown = sorted(set(changes) - set(model_keys) - set(recipe_keys))
        if unknown:
            raise GolfError(
                f"unknown config key '{unknown[0]}': valid keys are {', '.join([*model_keys, *recipe_keys])}"
            )
        return Preset(
            dataclasses.replace(self.model, **{k: v for k, v in changes.items() if k in model_keys}),
            dataclasses.replace(self.recipe, **{k: v for k, v in changes.items() if k in recipe_keys}),
        )


@functools.cache
def _field_types(cls: type) -> dict[str, type]:
    """{field name: int | float | bool} of a config dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_INT_RE = re.compile(r"^[+-]?\d+$")


def parse_field(owner: str, key: str, kind: type, value):
    """``value`` as a field of type ``kind``, or a one-line GolfError.

    bool accepts True/False or the strings true/false (any case), nothing else (``--set swiglu=False`` is
    False, and 1 or "yes" are refused); int accepts integers and integer strings ("6"), never a float or a
    string like "2.5" (no silent truncation) or a bool; float accepts any finite number or numeric string
    ("1e-3", ".04"), never a bool.
    """
    bad = f"config key '{key}' of model '{owner}' must be"
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise GolfError(f"{bad} bool (true or false), got {value!r}")
    if kind is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and _INT_RE.match(value.strip()):
            return int(value.strip())
        raise GolfError(f"{bad} int, got {value!r}")
    if kind is float:
        number = None
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
        if number is None or not math.isfinite(number):
            raise GolfError(f"{bad} float (a finite number), got {value!r}")
        return number
    raise TypeError(f"config field '{key}' has unsupported type {kind!r}")  # a spec bug, not a user error


# ----------------------------------------------------------------------------------------------------------
# The recipe declaration: optimizer groups by canonical tensor name, the Muon momentum schedule


@dataclass(frozen=True)
class GroupRule:
    """Declares one optimizer group: the canonical tensors matching ``patterns`` (``fnmatch`` globs over the
    full name, ``*`` matches dots too) go to ``optimizer`` ("muon" | "adam") at the recipe's ``lr_key``."""

    name: str
    optimizer: str
    lr_key: str
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class ParamGroup:
    """One optimizer group of a concrete config: ``tensors`` (canonical names, in ``ModelSpec.shapes`` order)
    are updated by ``optimizer`` ("muon": 2-D matrices, Newton-Schulz orthogonalized; "adam") with base
    learning rate ``config[lr_key]`` (times the harness's lr scale each step)."""

    name: str
    optimizer: str
    lr_key: str
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class MomentumSchedule:
    """Muon momentum at a step (counted from 0): linear from ``start`` to ``end`` over ``warmup_steps``, then
    ``end``; ``warmup_steps`` 0 means ``end`` from the first step."""

    start: float
    end: float
    warmup_steps: int

    def at(self, step: int) -> float:
        """The momentum (python float, float64 arithmetic) used by the update of step ``step``."""
        frac = min(step / self.warmup_steps, 1.0) if self.warmup_steps > 0 else 1.0
        return (1 - frac) * self.start + frac * self.end


@functools.cache
def _glob_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """One compiled matcher per pattern tuple (is_control runs on every tensor of every artifact)."""
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns)) if patterns else None
    return lambda name: bool(regex and regex.match(name))


# ----------------------------------------------------------------------------------------------------------
# llama: the parameter-golf baseline GPT (reference/parameter-golf.md §5)


@dataclass(frozen=True)
class LlamaConfig(ModelConfig):
    """The llama architecture (docs/models.md): widths in elements, ``rope_base`` in radians' base, ``loops`` 1."""

    vocab_size: int = 1024
    num_layers: int = 9
    model_dim: int = 512
    num_heads: int = 8
    num_kv_heads: int = 4
    mlp_mult: int = 2
    seq_len: int = 1024
    rope_base: float = 10000.0
    logit_softcap: float = 30.0
    qk_gain_init: float = 1.5
    tied_embed_init_std: float = 0.005
    loops: int = 1


@dataclass(frozen=True)
class LlamaRecipe(TrainRecipe):
    """parameter-golf's recipe (reference/parameter-golf.md §5): Muon on the block matrices at ``matrix_lr``
    (momentum warming linearly from ``muon_momentum_warmup_start`` to ``muon_momentum``), Adam on the tied
    embedding at ``tied_embed_lr`` and on the control tensors at ``scalar_lr``; ``train_batch_tokens`` tokens
    per step; the last ``warmdown_frac`` of the budget decays the learning rates linearly to 0."""

    train_batch_tokens: int = 524_288
    matrix_lr: float = 0.04
    scalar_lr: float = 0.04
    tied_embed_lr: float = 0.05
    muon_momentum: float = 0.95
    muon_momentum_warmup_start: float = 0.85
    muon_momentum_warmup_steps: int = 500
    muon_backend_steps: int = 5
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    warmdown_frac: float = 0.2


LLAMA_PRESETS = {
    "baseline": Preset(LlamaConfig(), LlamaRecipe()),
    "tiny": Preset(
        LlamaConfig(num_layers=4, model_dim=128, num_heads=4, num_kv_heads=2, seq_len=256),
        LlamaRecipe(train_batch_tokens=4096, muon_momentum_warmup_steps=50),
    ),
}

# Control tensors: kept at fp32 in artifacts, never given to Muon (resid_mix is 2-D but a control tensor).
LLAMA_CONTROL = (
    "skip_weights",
    "blocks.*.attn_scale",
    "blocks.*.mlp_scale",
    "blocks.*.resid_mix",
    "blocks.*.attn.q_gain",
)

LLAMA_GROUPS = (
    GroupRule("embed", "adam", "tied_embed_lr", ("tok_emb.weight",)),
    GroupRule(
        "matrices",
        "muon",
        "matrix_lr",
        tuple(
            f"blocks.*.{m}"
            for m in (
                "attn.c_q.weight",
                "attn.c_k.weight",
                "attn.c_v.weight",
                "attn.proj.weight",
                "mlp.fc.weight",
                "mlp.proj.weight",
            )
        ),
    ),
    GroupRule("scalars", "adam", "scalar_lr", LLAMA_CONTROL),
)


def llama_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Canonical llama weight names -> shapes for config ``c`` (linear weights (out, in)): the tied embedding
    (V, D), the U-Net skip weights (min(L//2, L - L//2), D), then per block the control tensors (attn_scale,
    mlp_scale (D,); resid_mix (2, D); q_gain (H,)) and the attention and MLP matrices (GQA: c_k, c_v are
    (kv_heads·head_dim, D)).
    """
    d, v = c["model_dim"], c["vocab_size"]
    head_dim = d // c["num_heads"]
    kv_dim = c["num_kv_heads"] * head_dim
    hidden = c["mlp_mult"] * d
    n_enc = c["num_layers"] // 2
    n_dec = c["num_layers"] - n_enc
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (v, d), "skip_weights": (min(n_enc, n_dec), d)}
    for i in range(c["num_layers"]):
        p = f"blocks.{i}."
        shapes.update(
            {
                p + "attn_scale": (d,),
                p + "mlp_scale": (d,),
                p + "resid_mix": (2, d),
                p + "attn.q_gain": (c["num_heads"],),
                p + "attn.c_q.weight": (d, d),
                p + "attn.c_k.weight": (kv_dim, d),
                p + "attn.c_v.weight": (kv_dim, d),
                p + "attn.proj.weight": (d, d),
                p + "mlp.fc.weight": (hidden, d),
                p + "mlp.proj.weight": (d, hidden),
            }
        )
    return shapes


def llama_param_count(c: dict) -> int:
    """The number of llama parameters for ``c`` (equal to the sum over ``llama_shapes``; the tied head counted once)."""
    d, v, L = c["model_dim"], c["vocab_size"], c["num_layers"]
    kv_dim = c["num_kv_heads"] * (d // c["num_heads"])
    hidden = c["mlp_mult"] * d
    per_layer = 2 * d * d + 2 * kv_dim * d + 2 * d * hidden + 4 * d + c["num_heads"]
    return v * d + min(L // 2, L - L // 2) * d + L * per_layer


def llama_flops(c: dict) -> dict[str, float]:
    """Analytic llama training FLOPs per token (the module's FLOP convention): ``matmul`` = 6 × (block matrix
    parameters × loops + V·D for the tied head), ``attention`` = 6 · L · 2 · (T+1)/2 · D (QKᵀ and PV over a
    causal window of T = seq_len), ``cema`` = 0, and their ``total``.
    """
    d, v, L = c["model_dim"], c["vocab_size"], c["num_layers"] * c["loops"]
    kv_dim = c["num_kv_heads"] * (d // c["num_heads"])
    hidden = c["mlp_mult"] * d
    matmul_params = L * (2 * d * d + 2 * kv_dim * d + 2 * d * hidden) + v * d
    t_eff = (c["seq_len"] + 1) / 2
    matmul = 6.0 * matmul_params
    attention = 6.0 * L * 2 * t_eff * d
    return {"matmul": matmul, "attention": attention, "cema": 0.0, "total": matmul + attention}


def llama_validate(c: dict) -> None:
    """Raises GolfError when model_dim does not divide by num_heads or num_heads by num_kv_heads, when head_dim
    is odd (RoPE rotates pairs), or when loops != 1 (looping is not defined for the U-Net skips).
    """
    if c["model_dim"] % c["num_heads"] or c["num_heads"] % c["num_kv_heads"]:
        raise GolfError("llama config: model_dim must divide by num_heads and num_heads by num_kv_heads")
    if (c["model_dim"] // c["num_heads"]) % 2:
        raise GolfError("llama config: head_dim must be even for rotary embeddings")
    if c["loops"] != 1:
        raise GolfError(
            "llama config: loops must be 1 (looping is not defined for the U-Net skips); use megalodon for loops"
        )


# ----------------------------------------------------------------------------------------------------------
# megalodon: the released Megalodon block (reference/megalodon-and-backends.md §1)


@dataclass(frozen=True)
class MegalodonConfig(ModelConfig):
    """The Megalodon architecture (docs/models.md): D, H, Z, E, F, N, C, G of reference §1 and the flags."""

    vocab_size: int = 1024
    num_layers: int = 4
    model_dim: int = 512  # D
    num_heads: int = 2  # H
    z_dim: int = 128  # Z: shared Q/K width
    value_dim: int = 1024  # E
    ffn_hidden_dim: int = 1280  # F
    cema_ndim: int = 16  # N
    chunk_size: int = 256  # C
    norm_num_groups: int = 32  # G
    swiglu: bool = True
    tied_embeddings: bool = True
    seq_len: int = 1024
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    loops: int = 1


@dataclass(frozen=True)
class MegalodonRecipe(TrainRecipe):
    """docs/models.md's recipe: Muon on the block matrices at ``matrix_lr`` with constant ``muon_momentum``,
    Adam (``beta1``/``beta2``/``adam_eps``) on everything else at ``adam_lr``, the global gradient norm clipped
    to ``grad_clip`` (0 = off), no weight decay (``weight_decay`` must stay 0)."""

    train_batch_tokens: int = 524_288
    matrix_lr: float = 0.02
    adam_lr: float = 3e-3
    muon_momentum: float = 0.95
    muon_backend_steps: int = 5
    beta1: float = 0.9
    beta2: float = 0.98
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    warmdown_frac: float = 0.2


MEGALODON_PRESETS = {
    "golf16": Preset(MegalodonConfig(), MegalodonRecipe()),
    "tiny": Preset(
        MegalodonConfig(
            num_layers=2,
            model_dim=128,
            num_heads=2,
            z_dim=64,
            value_dim=128,
            ffn_hidden_dim=256,
            cema_ndim=8,
            chunk_size=64,
            norm_num_groups=8,
            seq_len=256,
        ),
        MegalodonRecipe(train_batch_tokens=4096),
    ),
}

# Kept at fp32 in artifacts and never given to Muon: CEMA coefficients, norm affines, Q/K affine.
MEGALODON_CONTROL = (
    "layers.*.cema.*",
    "layers.*.tsnorm.*",
    "layers.*.rmsnorm.*",
    "layers.*.ffn_norm.*",
    "final_norm.*",
    "layers.*.qk_gamma",
    "layers.*.qk_beta",
)

# Muon takes the 2-D block matrices; everything else (embed, lm_head, CEMA, norms, biases, Q/K affine) is Adam's.
MEGALODON_GROUPS = (
    GroupRule(
        "matrices",
        "muon",
        "matrix_lr",
        tuple(f"layers.*.{m}.weight" for m in ("wz", "wv", "wr", "wh1", "wh2", "ffn.w1", "ffn.w2", "ffn.w3")),
    ),
    GroupRule(
        "rest",
        "adam",
        "adam_lr",
        (
            "embed.weight",
            "lm_head.weight",
            *MEGALODON_CONTROL,
            *(f"layers.*.{m}.bias" for m in ("wz", "wv", "wr", "wh1")),
        ),
    ),
)


def megalodon_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Canonical megalodon weight names -> shapes for config ``c`` (linear weights (out, in)): the embedding
    (V, D), per layer the TimestepNorm, CEMA (alpha, delta (D, N); theta, omega (D,); gamma (D, N, 2) = real
    and imaginary parts), RMSNorm, the z/v/r/h projections with their biases, the Q/K affine (2, Z) and the FFN
    (w3 only with swiglu), then the final norm and, when embeddings are untied, lm_head (V, D).
    """
    D, Z, E, F, N, V = (
        c["model_dim"],
        c["z_dim"],
        c["value_dim"],
        c["ffn_hidden_dim"],
        c["cema_ndim"],
        c["vocab_size"],
    )
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (V, D)}
    for i in range(c["num_layers"]):
        p = f"layers.{i}."
        shapes.update(
            {
                p + "tsnorm.weight": (D,),
                p + "tsnorm.bias": (D,),
                p + "cema.alpha": (D, N),
                p + "cema.delta": (D, N),
                p + "cema.theta": (D,),
                p + "cema.gamma": (D, N, 2),
                p + "cema.omega": (D,),
                p + "rmsnorm.weight": (D,),
                p + "wz.weight": (Z, D),
                p + "wz.bias": (Z,),
                p + "qk_gamma": (2, Z),
                p + "qk_beta": (2, Z),
                p + "wv.weight": (E, D),
                p + "wv.bias": (E,),
                p + "wr.weight": (E, D),
                p + "wr.bias": (E,),
                p + "wh1.weight": (D, D),
                p + "wh1.bias": (D,),
                p + "wh2.weight": (D, E),
                p + "ffn_norm.weight": (D,),
                p + "ffn_norm.bias": (D,),
                p + "ffn.w1.weight": (F, D),
                p + "ffn.w2.weight": (D, F),
            }
        )
        if c["swiglu"]:
            shapes[p + "ffn.w3.weight"] = (F, D)
    shapes["final_norm.weight"] = (D,)
    shapes["final_norm.bias"] = (D,)
    if not c["tied_embeddings"]:
        shapes["lm_head.weight"] = (V, D)
    return shapes


def megalodon_param_count(c: dict) -> int:
    """reference §1.5: P_layer = 2D + D(4N+2) + D + (DZ+Z) + 2(DE+E) + (D^2+D) + ED + 4Z + 2D + {2|3}DF."""
    D, Z, E, F, N, V = (
        c["model_dim"],
        c["z_dim"],
        c["value_dim"],
        c["ffn_hidden_dim"],
        c["cema_ndim"],
        c["vocab_size"],
    )
    ffn = (3 if c["swiglu"] else 2) * D * F
    per_layer = 2 * D + D * (4 * N + 2) + D + (D * Z + Z) + 2 * (D * E + E) + (D * D + D) + E * D + 4 * Z + 2 * D + ffn
    return c["num_layers"] * per_layer + V * D * (1 if c["tied_embeddings"] else 2) + 2 * D


def megalodon_flops(c: dict) -> dict[str, float]:
    """Analytic megalodon training FLOPs per token (the module's FLOP convention): ``matmul`` = 6 × (layer
    matrix parameters × loops + V·D for the head, tied or not), ``attention`` = 6 · L · (C+1)/2 · (Z + E)
    with C = min(chunk_size, seq_len), ``cema`` = 3 · L · D · (10·log2(n_fft) + 6) with n_fft the next power of
    two >= 2·seq_len, and their ``total`` (reference/megalodon-and-backends.md §4.1).
    """
    D, Z, E, F, V = c["model_dim"], c["z_dim"], c["value_dim"], c["ffn_hidden_dim"], c["vocab_size"]
    L = c["num_layers"] * c["loops"]
    ffn = (3 if c["swiglu"] else 2) * D * F
    matmul_params = L * (D * Z + 2 * D * E + D * D + E * D + ffn) + V * D
    c_eff = (min(c["chunk_size"], c["seq_len"]) + 1) / 2
    n_fft = 1 << math.ceil(math.log2(2 * c["seq_len"]))
    matmul = 6.0 * matmul_params
    attention = 6.0 * L * c_eff * (Z + E)
    cema = 3.0 * L * D * (10 * math.log2(n_fft) + 6)
    return {"matmul": matmul, "attention": attention, "cema": cema, "total": matmul + attention + cema}


def megalodon_validate(c: dict) -> None:
    """Raises GolfError when z_dim or value_dim does not divide by num_heads, when the per-head z width is odd
    (RoPE rotates pairs), when model_dim does not divide by norm_num_groups, or when seq_len exceeds chunk_size
    without being a multiple of it (as the released Megalodon code asserts).
    """
    if c["z_dim"] % c["num_heads"] or c["value_dim"] % c["num_heads"]:
        raise GolfError("megalodon config: z_dim and value_dim must divide by num_heads")
    if (c["z_dim"] // c["num_heads"]) % 2:
        raise GolfError("megalodon config: z_dim / num_heads must be even for rotary embeddings")
    if c["model_dim"] % c["norm_num_groups"]:
        raise GolfError("megalodon config: model_dim must divide by norm_num_groups")
    if c["seq_len"] > c["chunk_size"] and c["seq_len"] % c["chunk_size"]:
        raise GolfError("megalodon config: seq_len must be a multiple of chunk_size")


# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One model family: its typed config and recipe, presets, canonical shapes, formulas and recipe declaration.

    ``config(preset, overrides)`` is the flat dict every backend consumes (ModelConfig fields, then TrainRecipe
    fields); ``model_config`` / ``recipe`` / ``model_part`` split it again. ``group_rules`` declare, by canonical
    tensor name, which tensors Muon and Adam update and at which learning-rate key; ``control_patterns`` which
    tensors stay fp32 in artifacts; ``momentum_keys`` the recipe keys (start, end, warm-up steps or None) of the
    Muon momentum schedule.
    """

    name: str
    model_cls: type[ModelConfig]
    recipe_cls: type[TrainRecipe]
    presets: dict[str, Preset]
    shapes_fn: Callable[[dict], dict[str, tuple[int, ...]]]
    param_count_fn: Callable[[dict], int]
    flops_fn: Callable[[dict], dict[str, float]]
    validate_fn: Callable[[dict], None]
    control_patterns: tuple[str, ...]
    group_rules: tuple[GroupRule, ...]
    momentum_keys: tuple[str, str, str | None]
    # (config, shapes, seed) -> {canonical name: fp32 array}; None for the built-ins (harness/init.py INITS).
    # A plugin spec must provide it (docs/plugins.md).
    init_fn: Callable[[dict, dict, int], dict] | None = None
    # True when the model scores windows longer than the seq_len it trained on (``--eval-context``): its
    # position handling is computed from the window (rotary tables, chunked attention), with no table sized by
    # seq_len. False refuses a longer eval context in one line.
    eval_context_extends: bool = False

    def check_eval_context(self, config: dict, context: int) -> int:
        """``context`` (tokens) if the model can be scored at it: 1 <= context, and context <= seq_len unless
        ``eval_context_extends``. Raises GolfError (one line) otherwise."""
        seq_len = int(config["seq_len"])
        if context < 1:
            raise GolfError(f"--eval-context must be a positive number of tokens, got {context}")
        if context > seq_len and not self.eval_context_extends:
            raise GolfError(
                f"model '{self.name}' cannot be evaluated at context {context}: it trained at {seq_len} and does not"
                " support a longer eval context"
            )
        return context

    @property
    def model_keys(self) -> tuple[str, ...]:
        """The ModelConfig field names, in declaration order."""
        return tuple(_field_types(self.model_cls))

    @property
    def recipe_keys(self) -> tuple[str, ...]:
        """The TrainRecipe field names, in declaration order."""
        return tuple(_field_types(self.recipe_cls))

    def preset(self, preset: str) -> Preset:
        """The named preset; GolfError for a bad or unknown name."""
        check_name("preset", preset)
        if preset not in self.presets:
            raise GolfError(
                f"unknown preset '{preset}' for model '{self.name}': choose one of {', '.join(sorted(self.presets))}"
            )
        return self.presets[preset]

    def _unknown_key(self, key) -> GolfError:
        return GolfError(
            f"unknown config key '{key}' for model '{self.name}': valid keys are {', '.join(self.model_keys + self.recipe_keys)}"
        )

    def config(self, preset: str, overrides: dict | None = None) -> dict:
        """The flat config dict (model fields then recipe fields) of ``preset`` with ``overrides`` applied.

        Each override is parsed by its field's type (``parse_field``: bools only true/false, ints never from
        2.5 or "2.5", floats from any finite number or numeric string). Raises a one-line GolfError for an
        unknown preset, an unknown key (listing the valid keys), a value of the wrong type, or an inconsistent
        architecture (the spec's validate function).
        """
        base = self.preset(preset)
        types = {**_field_types(self.model_cls), **_field_types(self.recipe_cls)}
        changes = {}
        for key, value in (overrides or {}).items():
            if key not in types:
                raise self._unknown_key(key)
            changes[key] = parse_field(self.name, key, types[key], value)
        chosen = base.replace(**changes)
        cfg = {**dataclasses.asdict(chosen.model), **dataclasses.asdict(chosen.recipe)}
        self.validate_fn(cfg)
        return cfg

    def _part(self, cls: type, config: dict):
        types = _field_types(cls)
        missing = [k for k in types if k not in config]
        if missing:
            raise GolfError(f"{self.name} config lacks '{missing[0]}'; build it with ModelSpec.config")
        return cls(**{k: parse_field(self.name, k, kind, config[k]) for k, kind in types.items()})

    def model_config(self, config: dict) -> ModelConfig:
        """The architecture part of a flat config dict, as the spec's ModelConfig (extra keys are ignored)."""
        return self._part(self.model_cls, config)

    def recipe(self, config: dict) -> TrainRecipe:
        """The training-recipe part of a flat config dict, as the spec's TrainRecipe (extra keys are ignored)."""
        return self._part(self.recipe_cls, config)

    def model_part(self, config: dict) -> dict:
        """The architecture fields of a flat config dict: what an artifact stores (JSON-ready)."""
        return dataclasses.asdict(self.model_config(config))

    def config_from_model_part(self, preset: str, stored: dict) -> dict:
        """A full flat config from an artifact's stored config: its model fields over ``preset``, the preset's
        own recipe (an artifact needs none to be scored). Recipe keys in ``stored`` (artifacts written before
        the split stored the whole config) are ignored; unknown keys and bad values raise GolfError."""
        recipe = set(self.recipe_keys)
        return self.config(preset, {k: v for k, v in stored.items() if k not in recipe})

    def shapes(self, config: dict) -> dict[str, tuple[int, ...]]:
        """Canonical tensor name -> shape (linear weights (out, in)), in the spec's canonical order."""
        return self.shapes_fn(config)

    def param_count(self, config: dict) -> int:
        """Number of trainable scalars (tied weights counted once)."""
        return self.param_count_fn(config)

    def flops_per_token(self, config: dict) -> dict[str, float]:
        """Analytic training FLOPs per token, split into matmul / attention / cema, and their total."""
        return self.flops_fn(config)

    def is_control(self, name: str) -> bool:
        """Whether the canonical tensor ``name`` is a control tensor (fp32 in artifacts, never Muon's)."""
        return _glob_matcher(self.control_patterns)(name)

    def control_tensors(self, config: dict) -> tuple[str, ...]:
        """The control tensors of ``config``, in canonical order."""
        return tuple(n for n in self.shapes(config) if self.is_control(n))

    def optimizer_groups(self, config: dict) -> list[ParamGroup]:
        """The optimizer groups of ``config``, in the order of ``group_rules`` (groups with no tensor are
        left out). Every canonical tensor is in exactly one group; a tensor matching no rule, or several, raises
        GolfError (a spec bug: fix the spec's group rules). Muon groups hold 2-D tensors only."""
        shapes = self.shapes(config)
        members: dict[str, list[str]] = {rule.name: [] for rule in self.group_rules}
        for name, shape in shapes.items():
            hits = [rule for rule in self.group_rules if _glob_matcher(rule.patterns)(name)]
            if len(hits) != 1:
                which = (
                    "no optimizer group"
                    if not hits
                    else f"several optimizer groups ({', '.join(r.name for r in hits)})"
                )
                raise GolfError(f"{self.name}: tensor '{name}' is in {which}; fix the spec's group rules")
            if hits[0].optimizer == "muon" and len(shape) != 2:
                raise GolfError(
                    f"{self.name}: Muon group '{hits[0].name}' holds '{name}' of shape {shape}; Muon takes 2-D matrices only"
                )
            members[hits[0].name].append(name)
        return [
            ParamGroup(rule.name, rule.optimizer, rule.lr_key, tuple(members[rule.name]))
            for rule in self.group_rules
            if members[rule.name]
        ]

    def momentum_schedule(self, config: dict) -> MomentumSchedule:
        """The Muon momentum schedule of ``config`` (constant when the spec declares no warm-up key)."""
        start, end, steps = self.momentum_keys
        return MomentumSchedule(float(config[start]), float(config[end]), int(config[steps]) if steps else 0)


BUILTIN_SPECS: dict[str, ModelSpec] = {
    "llama": ModelSpec(
        "llama",
        LlamaConfig,
        LlamaRecipe,
        LLAMA_PRESETS,
        llama_shapes,
        llama_param_count,
        llama_flops,
        llama_validate,
        LLAMA_CONTROL,
        LLAMA_GROUPS,
        ("muon_momentum_warmup_start", "muon_momentum", "muon_momentum_warmup_steps"),
        eval_context_extends=True,  # rotary tables are computed for each window's length
    ),
    "megalodon": ModelSpec(
        "megalodon",
        MegalodonConfig,
        MegalodonRecipe,
        MEGALODON_PRESETS,
        megalodon_shapes,
        megalodon_param_count,
        megalodon_flops,
        megalodon_validate,
        MEGALODON_CONTROL,
        MEGALODON_GROUPS,
        ("muon_momentum", "muon_momentum", None),
        # chunked attention (RoPE restarts per chunk) and CEMA / timestep norm run over any length; both backends
        # match the float64 reference past seq_len (tests/test_vocab_context.py)
        eval_context_extends=True,
    ),
}


class _SpecRegistry(Mapping):
    """Every model spec: the built-ins, then the installed plugins' (harness/plugins.py), discovered on first
    read so that importing this module never imports a plugin."""

    def _all(self) -> dict[str, ModelSpec]:
        from golfbench.harness.plugins import discover

        return {**BUILTIN_SPECS, **{name: p.spec for name, p in discover().items()}}

    def __getitem__(self, name: str) -> ModelSpec:
        if name in BUILTIN_SPECS:
            return BUILTIN_SPECS[name]
        return self._all()[name]

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


SPECS: Mapping[str, ModelSpec] = _SpecRegistry()


def get_spec(name: str) -> ModelSpec:
    """The spec named ``name`` (built-in or plugin); GolfError listing the known models otherwise."""
    check_name("model", name)
    if name not in SPECS:
        raise GolfError(f"unknown model '{name}': choose one of {', '.join(sorted(SPECS))}")
    return SPECS[name]


def check_tokens(batch, vocab_size: int):
    """A (B, T+1) integer batch inside the vocabulary, as contiguous int32. Both backends call this: an id out of
    range would silently clamp in a JAX gather and crash deep inside a torch embedding. Raises ValueError for
    an array that is not 2-D integers with T >= 1, GolfError for an id outside [0, vocab_size)."""
    import numpy as np

    batch = np.asarray(batch)
    if batch.ndim != 2 or batch.shape[1] < 2 or not np.issubdtype(batch.dtype, np.integer):
        raise ValueError(f"expected integer tokens of shape (B, T+1) with T >= 1, got {batch.dtype} {batch.shape}")
    lo, hi = int(batch.min()), int(batch.max())
    if lo < 0 or hi >= vocab_size:
        raise GolfError(
            f"token id {hi if hi >= vocab_size else lo} is outside the model's vocabulary [0, {vocab_size}): "
            "does the dataset's vocab_size match the model's?"
        )
    return np.ascontiguousarray(batch, dtype=np.int32)


def check_weights(spec: ModelSpec, config: dict, weights: dict) -> None:
    """Refuse weights whose names or shapes differ from the spec (before anything is built from them)."""
    expected = spec.shapes(config)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        what = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {extra[:3]}" if extra else "")
        raise GolfError(
            f"weights do not match {spec.name}: {what.strip()}; was the artifact built for another model/preset?"
        )
    for name, shape in expected.items():
        if tuple(weights[name].shape) != tuple(shape):
            raise GolfError(
                f"weight '{name}' has shape {tuple(weights[name].shape)}, {spec.name} expects {tuple(shape)};"
                " was the artifact built for another model/preset?"
            )
