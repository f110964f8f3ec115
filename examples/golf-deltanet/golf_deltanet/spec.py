"""The framework-free half of the ``deltanet`` model plugin: config, presets, canonical shapes, formulas,
optimizer groups, canonical init, and the ``ModelPlugin`` the entry point names.

The model is a Gated DeltaNet language model: Yang, Kautz, Hatamizadeh, "Gated Delta Networks: Improving
Mamba2 with Delta Rule" (arXiv:2412.06464, ICLR 2025). Per layer, a pre-norm residual block with the gated
delta rule token mixer, then a pre-norm SwiGLU MLP; tied embeddings, a final RMSNorm. Per head h and token t
(state S of shape (dv, dk)):

    q, k, v  = SiLU(causal depthwise conv_K(W_q x)), ... (width ``conv_size``); q, k L2-normalized, q * dk^-1/2
    g_t      = -exp(A_log) * softplus(W_a x_t + dt_bias)            (log decay, <= 0; alpha_t = exp(g_t))
    beta_t   = sigmoid(W_b x_t)
    S_t      = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T
    o_t      = RMSNorm_dv(S_t q_t) * SiLU(W_g x_t)                   (one norm weight (dv,) shared by the heads)
    out      = W_o [o_t of every head]

tests/reference_deltanet.py runs exactly this, token by token, in float64; the JAX implementation
(deltanet_jax.py) computes it chunk by chunk (the WY / UT-transform form of the paper's §3).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golfbench.harness.errors import GolfError
from golfbench.harness.models import GroupRule, ModelConfig, ModelSpec, Preset, TrainRecipe
from golfbench.harness.plugins import ModelPlugin


@dataclass(frozen=True)
class DeltaNetConfig(ModelConfig):
    vocab_size: int = 1024
    num_layers: int = 5
    model_dim: int = 512
    num_heads: int = 4
    head_k_dim: int = 128
    head_v_dim: int = 128
    ffn_hidden_dim: int = 1024
    conv_size: int = 4
    chunk_size: int = 64
    seq_len: int = 1024
    norm_eps: float = 1e-6
    embed_init_std: float = 0.02


@dataclass(frozen=True)
class DeltaNetRecipe(TrainRecipe):
    """Muon on the block matrices at ``matrix_lr`` (constant momentum), Adam on the rest at ``adam_lr``, the
    global gradient norm clipped at ``grad_clip`` (the JAX backend's generic plugin recipe reads this key)."""

    train_batch_tokens: int = 524_288
    matrix_lr: float = 0.02
    adam_lr: float = 3e-3
    muon_momentum: float = 0.95
    muon_backend_steps: int = 5
    beta1: float = 0.9
    beta2: float = 0.95
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    warmdown_frac: float = 0.2


PRESETS = {
    "golf16": Preset(DeltaNetConfig(), DeltaNetRecipe()),
    "tiny": Preset(
        DeltaNetConfig(
            num_layers=2, model_dim=128, num_heads=2, head_k_dim=64, head_v_dim=64, ffn_hidden_dim=256, seq_len=256
        ),
        DeltaNetRecipe(train_batch_tokens=4096),
    ),
}

# fp32 in artifacts, never Muon's: norms, the decay/gate parameters.
CONTROL = (
    "layers.*.attn_norm.weight",
    "layers.*.mlp_norm.weight",
    "layers.*.o_norm.weight",
    "layers.*.A_log",
    "layers.*.dt_bias",
    "layers.*.a_proj.weight",
    "layers.*.b_proj.weight",
    "final_norm.weight",
)
MATRICES = ("q_proj", "k_proj", "v_proj", "g_proj", "o_proj", "mlp.w1", "mlp.w2", "mlp.w3")
GROUPS = (
    GroupRule("matrices", "muon", "matrix_lr", tuple(f"layers.*.{m}.weight" for m in MATRICES)),
    GroupRule("rest", "adam", "adam_lr", ("embed.weight", "layers.*.*_conv.weight", *CONTROL)),
)


def shapes(c: dict) -> dict[str, tuple[int, ...]]:
    D, H, dk, dv, F, K = (
        c[k] for k in ("model_dim", "num_heads", "head_k_dim", "head_v_dim", "ffn_hidden_dim", "conv_size")
    )
    out: dict[str, tuple[int, ...]] = {"embed.weight": (c["vocab_size"], D)}
    for i in range(c["num_layers"]):
        p = f"layers.{i}."
        out.update(
            {
                p + "attn_norm.weight": (D,),
                p + "q_proj.weight": (H * dk, D),
                p + "k_proj.weight": (H * dk, D),
                p + "v_proj.weight": (H * dv, D),
                p + "q_conv.weight": (H * dk, K),
                p + "k_conv.weight": (H * dk, K),
                p + "v_conv.weight": (H * dv, K),
                p + "a_proj.weight": (H, D),
                p + "b_proj.weight": (H, D),
                p + "A_log": (H,),
                p + "dt_bias": (H,),
                p + "g_proj.weight": (H * dv, D),
                p + "o_norm.weight": (dv,),
                p + "o_proj.weight": (D, H * dv),
                p + "mlp_norm.weight": (D,),
                p + "mlp.w1.weight": (F, D),
                p + "mlp.w3.weight": (F, D),
                p + "mlp.w2.weight": (D, F),
            }
        )
    out["final_norm.weight"] = (D,)
    return out


def param_count(c: dict) -> int:
    """P = V D + D + L [2D + (2 H dk + 2 H dv) D + K (2 H dk + H dv) + 2 H D + 2 H + dv + H dv D + 3 D F]."""
    D, H, dk, dv, F, K = (
        c[k] for k in ("model_dim", "num_heads", "head_k_dim", "head_v_dim", "ffn_hidden_dim", "conv_size")
    )
    per_layer = 2 * D + (2 * H * dk + 2 * H * dv) * D + K * (2 * H * dk + H * dv) + 2 * H * D + 2 * H + dv
    per_layer += H * dv * D + 3 * D * F
    return c["vocab_size"] * D + D + c["num_layers"] * per_layer


def flops(c: dict) -> dict[str, float]:
    """Training FLOPs per token (golfbench's convention: 3 x forward, 2mn per matmul, LM head counted, the
    elementwise work and the short convolutions not counted). The chunked delta rule, per head and token,
    forward, chunk C, mean causal extent c = (min(C, T) + 1) / 2: Q K^T and K K^T 2 c dk each, the
    triangular transform applied to K and V 2 c (dk + dv), the masked scores times U 2 c dv, and the state
    terms K S^T, Q S^T, U^T K 2 dk dv each."""
    D, H, dk, dv, F, V = (
        c[k] for k in ("model_dim", "num_heads", "head_k_dim", "head_v_dim", "ffn_hidden_dim", "vocab_size")
    )
    L = c["num_layers"]
    matmul_params = L * ((2 * H * dk + 2 * H * dv) * D + 2 * H * D + H * dv * D + 3 * D * F) + V * D
    ce = (min(c["chunk_size"], c["seq_len"]) + 1) / 2
    per_head = 2 * ce * dk * 2 + 2 * ce * (dk + dv) + 2 * ce * dv + 3 * 2 * dk * dv
    matmul = 6.0 * matmul_params
    attention = 3.0 * L * H * per_head
    return {"matmul": matmul, "attention": attention, "cema": 0.0, "total": matmul + attention}


def validate(c: dict) -> None:
    if c["seq_len"] > c["chunk_size"] and c["seq_len"] % c["chunk_size"]:
        raise GolfError("deltanet config: seq_len must be a multiple of chunk_size")
    if min(c["num_layers"], c["model_dim"], c["num_heads"], c["head_k_dim"], c["head_v_dim"], c["conv_size"]) < 1:
        raise GolfError("deltanet config: layers, widths, heads and conv_size must be positive")


def _rng(seed: int, name: str) -> np.random.Generator:
    """One stream per tensor, keyed by name (as golfbench's own init)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype="<u4").tolist()])


def init(config: dict, shape_of: dict, seed: int) -> dict[str, np.ndarray]:
    """Canonical init: linears N(0, 1/fan_in) (output projections o_proj and mlp.w2 zero), embedding
    N(0, embed_init_std^2), short convs U(+-1/sqrt(K)), Mamba-2's A in U[1, 16] and dt in logU[1e-3, 1e-1]
    (dt_bias = softplus^-1(dt)), norm weights 1."""
    out = {}
    for name, shape in shape_of.items():
        rng = _rng(seed, name)
        leaf = name.split(".", 2)[-1] if name.startswith("layers.") else name
        if leaf == "embed.weight":
            w = rng.normal(0.0, config["embed_init_std"], size=shape)
        elif leaf in ("o_proj.weight", "mlp.w2.weight"):
            w = np.zeros(shape)
        elif leaf.endswith("_conv.weight"):
            bound = 1.0 / math.sqrt(shape[1])
            w = rng.uniform(-bound, bound, size=shape)
        elif leaf == "A_log":
            w = np.log(rng.uniform(1.0, 16.0, size=shape))
        elif leaf == "dt_bias":
            dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), size=shape))
            w = dt + np.log(-np.expm1(-dt))
        elif leaf.endswith("norm.weight"):
            w = np.ones(shape)
        else:  # q/k/v/g/a/b projections and the MLP's input matrices
            w = rng.normal(0.0, 1.0 / math.sqrt(shape[1]), size=shape)
        out[name] = w.astype(np.float32)
    return out


SPEC = ModelSpec(
    "deltanet",
    DeltaNetConfig,
    DeltaNetRecipe,
    PRESETS,
    shapes,
    param_count,
    flops,
    validate,
    CONTROL,
    GROUPS,
    ("muon_momentum", "muon_momentum", None),
    init,
)

PLUGIN = ModelPlugin(
    spec=SPEC,
    implementations={"jax": "golf_deltanet.deltanet_jax:DeltaNetLM"},
    # the spec (shapes, init, validation) defines the model as much as the forward does: both count
    code_files={"jax": ("spec.py", "deltanet_jax.py")},
    root=Path(__file__).resolve().parent,
)
