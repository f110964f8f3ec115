"""Canonical initial weights, drawn in numpy from the seed.

Every backend starts from these arrays (loaded under the canonical names), so the same seed gives the same
initial model in torch and in JAX: a cross-framework comparison then differs only by the framework.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from golfbench.harness.models import ModelSpec


def _rng(seed: int, name: str) -> np.random.Generator:
    # One stream per tensor, keyed by name, so adding a tensor never shifts the others.
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype="<u4").tolist()])


def _trunc_normal(rng: np.random.Generator, shape, std: float, bound: float) -> np.ndarray:
    out = rng.normal(0.0, std, size=shape)
    bad = np.abs(out) > bound
    while bad.any():
        out[bad] = rng.normal(0.0, std, size=int(bad.sum()))
        bad = np.abs(out) > bound
    return out


def _kaiming_uniform(rng: np.random.Generator, shape) -> np.ndarray:
    # torch nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(shape[1])
    return rng.uniform(-bound, bound, size=shape)


def llama_init(config: dict, shapes: dict, seed: int) -> dict[str, np.ndarray]:
    """Initial llama weights as float32 numpy arrays of ``shapes`` (canonical name -> shape), parameter-golf's
    train_gpt.py scheme: tied embedding N(0, tied_embed_init_std), zero output projections (attn.proj,
    mlp.proj), other matrices torch nn.Linear's default U(±1/sqrt(fan_in)), q_gain = qk_gain_init,
    resid_mix = (1, 0) (keep x, none of x0), every other scale (attn_scale, mlp_scale, skip_weights) 1.
    One random stream per tensor, keyed by ``seed`` and the tensor's name.
    """
    out = {}
    for name, shape in shapes.items():
        rng = _rng(seed, name)
        if name == "tok_emb.weight":
            w = rng.normal(0.0, config["tied_embed_init_std"], size=shape)
        elif name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            w = np.zeros(shape)
        elif name.endswith(".weight"):
            w = _kaiming_uniform(rng, shape)
        elif name.endswith("q_gain"):
            w = np.full(shape, config["qk_gain_init"])
        elif name.endswith("resid_mix"):
            w = np.stack([np.ones(shape[1]), np.zeros(shape[1])])
        else:  # attn_scale, mlp_scale, skip_weights
            w = np.ones(shape)
        out[name] = w.astype(np.float32)
    return out


def megalodon_init(config: dict, shapes: dict, seed: int) -> dict[str, np.ndarray]:
    """Initial megalodon weights as float32 numpy arrays of ``shapes``, following the released Megalodon code
    (Ma et al. 2024; reference/megalodon-and-backends.md §1.2-1.3): embedding and head TruncNormal(0, D^-1/2)
    at ±3σ; CEMA alpha, delta ~ N(0, 0.2²), theta = logit(exp(-k·ln D / D)) for k = 1..D permuted across
    channels, gamma real part ~ N(0, 1) and imaginary part 0, omega TruncNormal(0, 0.25) at ±1; 2-D
    projections N(0, 1/sqrt(3·fan_in)) ("he" init); biases, norm offsets (stored as offsets from 1) and the
    Q/K affine 0. One random stream per tensor, keyed by ``seed`` and the tensor's name.
    """
    D = config["model_dim"]
    out = {}
    for name, shape in shapes.items():
        rng = _rng(seed, name)
        leaf = name.split(".", 2)[-1] if name.startswith("layers.") else name
        if leaf in ("embed.weight", "lm_head.weight"):
            w = _trunc_normal(rng, shape, D**-0.5, 3 * D**-0.5)
        elif leaf in ("cema.alpha", "cema.delta"):
            w = rng.normal(0.0, 0.2, size=shape)
        elif leaf == "cema.theta":
            f = np.exp(-np.arange(1, D + 1) * math.log(D) / D)
            w = np.log(f / (1 - f))[rng.permutation(D)]
        elif leaf == "cema.gamma":
            w = np.zeros(shape)
            w[..., 0] = rng.normal(0.0, 1.0, size=shape[:-1])
        elif leaf == "cema.omega":
            w = _trunc_normal(rng, shape, 0.25, 1.0)
        elif leaf.endswith(".weight") and len(shape) == 2:
            w = rng.normal(0.0, 1.0 / math.sqrt(3 * shape[1]), size=shape)
        else:  # biases, norm offsets, qk affine
            w = np.zeros(shape)
        out[name] = w.astype(np.float32)
    return out


INITS = {"llama": llama_init, "megalodon": megalodon_init}


def init_weights(spec: ModelSpec, config: dict, seed: int) -> dict[str, np.ndarray]:
    """The canonical initial weights of ``spec``/``config`` for ``seed`` (a plugin spec brings its own init_fn)."""
    fn = spec.init_fn or INITS[spec.name]
    return {k: np.asarray(v, dtype=np.float32) for k, v in fn(config, spec.shapes(config), seed).items()}
