"""Model specs: presets, canonical parameter names and shapes, parameter and FLOP formulas.

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

import math
import re
from dataclasses import dataclass, field
from typing import Callable

from harness.errors import GolfError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """Names become path parts of run directories: refuse separators, '..' and odd characters."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise GolfError(
            f"invalid {kind} '{value}': use letters, digits, '_', '-' or '.' (no path separators or '..')"
        )
    return value


# ----------------------------------------------------------------------------------------------------------
# llama: the parameter-golf baseline GPT (reference/parameter-golf.md §5)

LLAMA_DEFAULTS = dict(
    vocab_size=1024,
    num_layers=9,
    model_dim=512,
    num_heads=8,
    num_kv_heads=4,
    mlp_mult=2,
    seq_len=1024,
    rope_base=10000.0,
    logit_softcap=30.0,
    qk_gain_init=1.5,
    tied_embed_init_std=0.005,
    loops=1,
    # training recipe (Muon on block matrices, Adam on embeddings and scalars)
    train_batch_tokens=524_288,
    matrix_lr=0.04,
    scalar_lr=0.04,
    tied_embed_lr=0.05,
    muon_momentum=0.95,
    muon_momentum_warmup_start=0.85,
    muon_momentum_warmup_steps=500,
    muon_backend_steps=5,
    beta1=0.9,
    beta2=0.95,
    adam_eps=1e-8,
    warmdown_frac=0.2,
)

LLAMA_PRESETS = {
    "baseline": {},
    "tiny": dict(
        num_layers=4,
        model_dim=128,
        num_heads=4,
        num_kv_heads=2,
        seq_len=256,
        train_batch_tokens=4096,
        muon_momentum_warmup_steps=50,
    ),
}

LLAMA_CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")


def llama_shapes(c: dict) -> dict[str, tuple[int, ...]]:
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
    d, v, L = c["model_dim"], c["vocab_size"], c["num_layers"]
    kv_dim = c["num_kv_heads"] * (d // c["num_heads"])
    hidden = c["mlp_mult"] * d
    per_layer = 2 * d * d + 2 * kv_dim * d + 2 * d * hidden + 4 * d + c["num_heads"]
    return v * d + min(L // 2, L - L // 2) * d + L * per_layer


def llama_flops(c: dict) -> dict[str, float]:
    d, v, L = c["model_dim"], c["vocab_size"], c["num_layers"] * c["loops"]
    kv_dim = c["num_kv_heads"] * (d // c["num_heads"])
    hidden = c["mlp_mult"] * d
    matmul_params = L * (2 * d * d + 2 * kv_dim * d + 2 * d * hidden) + v * d
    t_eff = (c["seq_len"] + 1) / 2
    matmul = 6.0 * matmul_params
    attention = 6.0 * L * 2 * t_eff * d
    return {"matmul": matmul, "attention": attention, "cema": 0.0, "total": matmul + attention}


def llama_validate(c: dict) -> None:
    if c["model_dim"] % c["num_heads"] or c["num_heads"] % c["num_kv_heads"]:
        raise GolfError("llama config: model_dim must divide by num_heads and num_heads by num_kv_heads")
    if (c["model_dim"] // c["num_heads"]) % 2:
        raise GolfError("llama config: head_dim must be even for rotary embeddings")
    if c["loops"] != 1:
        raise GolfError("llama config: loops must be 1 (looping is not defined for the U-Net skips); use megalodon for loops")


# ----------------------------------------------------------------------------------------------------------
# megalodon: the released Megalodon block (reference/megalodon-and-backends.md §1)

MEGALODON_DEFAULTS = dict(
    vocab_size=1024,
    num_layers=4,
    model_dim=512,  # D
    num_heads=2,  # H
    z_dim=128,  # Z: shared Q/K width
    value_dim=1024,  # E
    ffn_hidden_dim=1280,  # F
    cema_ndim=16,  # N
    chunk_size=256,  # C
    norm_num_groups=32,  # G
    swiglu=True,
    tied_embeddings=True,
    seq_len=1024,
    rope_base=10000.0,
    norm_eps=1e-5,
    loops=1,
    train_batch_tokens=524_288,
    matrix_lr=0.02,
    adam_lr=3e-3,
    muon_momentum=0.95,
    muon_backend_steps=5,
    beta1=0.9,
    beta2=0.98,
    adam_eps=1e-8,
    weight_decay=0.0,
    grad_clip=1.0,
    warmdown_frac=0.2,
)

MEGALODON_PRESETS = {
    "golf16": {},
    "tiny": dict(
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
        train_batch_tokens=4096,
    ),
}

# Kept at fp32 in artifacts and never given to Muon: CEMA coefficients, norm affines, Q/K affine, biases.
MEGALODON_CONTROL = (
    "cema.",
    "tsnorm.",
    "rmsnorm.",
    "ffn_norm.",
    "final_norm.",
    "qk_gamma",
    "qk_beta",
)


def megalodon_shapes(c: dict) -> dict[str, tuple[int, ...]]:
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
    name: str
    defaults: dict
    presets: dict[str, dict]
    shapes_fn: Callable[[dict], dict[str, tuple[int, ...]]]
    param_count_fn: Callable[[dict], int]
    flops_fn: Callable[[dict], dict[str, float]]
    validate_fn: Callable[[dict], None]
    control_patterns: tuple[str, ...] = field(default=())

    def config(self, preset: str, overrides: dict | None = None) -> dict:
        check_name("preset", preset)
        if preset not in self.presets:
            raise GolfError(
                f"unknown preset '{preset}' for model '{self.name}': choose one of {', '.join(sorted(self.presets))}"
            )
        cfg = {**self.defaults, **self.presets[preset]}
        for key, value in (overrides or {}).items():
            if key not in cfg:
                raise GolfError(f"unknown config key '{key}' for model '{self.name}': see `golf models`")
            try:
                cfg[key] = type(cfg[key])(value) if not isinstance(cfg[key], bool) else bool(value)
            except (TypeError, ValueError):
                raise GolfError(
                    f"config key '{key}' of model '{self.name}' must be {type(cfg[key]).__name__}, got {value!r}"
                ) from None
        self.validate_fn(cfg)
        return cfg

    def shapes(self, config: dict) -> dict[str, tuple[int, ...]]:
        return self.shapes_fn(config)

    def param_count(self, config: dict) -> int:
        return self.param_count_fn(config)

    def flops_per_token(self, config: dict) -> dict[str, float]:
        """Analytic training FLOPs per token, split into matmul / attention / cema, and their total."""
        return self.flops_fn(config)

    def is_control(self, name: str) -> bool:
        return any(p in name for p in self.control_patterns)


SPECS: dict[str, ModelSpec] = {
    "llama": ModelSpec(
        "llama", LLAMA_DEFAULTS, LLAMA_PRESETS, llama_shapes, llama_param_count, llama_flops, llama_validate, LLAMA_CONTROL
    ),
    "megalodon": ModelSpec(
        "megalodon",
        MEGALODON_DEFAULTS,
        MEGALODON_PRESETS,
        megalodon_shapes,
        megalodon_param_count,
        megalodon_flops,
        megalodon_validate,
        MEGALODON_CONTROL,
    ),
}


def get_spec(name: str) -> ModelSpec:
    check_name("model", name)
    if name not in SPECS:
        raise GolfError(f"unknown model '{name}': choose one of {', '.join(sorted(SPECS))}")
    return SPECS[name]


def check_tokens(batch, vocab_size: int):
    """A (B, T+1) integer batch inside the vocabulary, as contiguous int32. Both backends call this: an id out of
    range would silently clamp in a JAX gather and crash deep inside a torch embedding."""
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
        raise GolfError(f"weights do not match {spec.name}: {what.strip()}; was the artifact built for another model/preset?")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != tuple(shape):
            raise GolfError(
                f"weight '{name}' has shape {tuple(weights[name].shape)}, {spec.name} expects {tuple(shape)};"
                " was the artifact built for another model/preset?"
            )
