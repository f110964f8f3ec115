"""The llama forward of docs/models.md in float64 numpy: an independent statement to test backends against.

Written from the document, not from any backend, and kept loop-simple (one sequence at a time, explicit
heads) so it is easy to audit. Shared by the torch and JAX test suites.
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float32).eps)  # what F.rms_norm uses by default for fp32 inputs


def rms(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + EPS)


def rope(x: np.ndarray, base: float) -> np.ndarray:
    """x: (T, heads, hd). Half-split rotation by angle pos * base^(-2i/hd)."""
    T, _, hd = x.shape
    angle = np.arange(T)[:, None] * base ** (-np.arange(0, hd, 2) / hd)[None, :]  # (T, hd/2)
    cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return np.concatenate([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], axis=-1)


def attention(w: dict, p: str, x: np.ndarray, c: dict) -> np.ndarray:
    T, d = x.shape
    H, KV = c["num_heads"], c["num_kv_heads"]
    hd = d // H
    q = (x @ w[p + "c_q.weight"].T).reshape(T, H, hd)
    k = (x @ w[p + "c_k.weight"].T).reshape(T, KV, hd)
    v = (x @ w[p + "c_v.weight"].T).reshape(T, KV, hd)
    q, k = rope(rms(q), c["rope_base"]), rope(rms(k), c["rope_base"])
    q = q * w[p + "q_gain"][None, :, None]
    out = np.empty((T, H, hd))
    causal = np.tril(np.ones((T, T), dtype=bool))
    for h in range(H):
        g = h // (H // KV)
        s = np.where(causal, q[:, h] @ k[:, g].T / np.sqrt(hd), -np.inf)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        out[:, h] = (s / s.sum(axis=-1, keepdims=True)) @ v[:, g]
    return out.reshape(T, d) @ w[p + "proj.weight"].T


def block(w: dict, i: int, x: np.ndarray, x0: np.ndarray, c: dict) -> np.ndarray:
    p = f"blocks.{i}."
    x = w[p + "resid_mix"][0] * x + w[p + "resid_mix"][1] * x0
    x = x + w[p + "attn_scale"] * attention(w, p + "attn.", rms(x), c)
    h = np.maximum(rms(x) @ w[p + "mlp.fc.weight"].T, 0.0) ** 2
    return x + w[p + "mlp_scale"] * (h @ w[p + "mlp.proj.weight"].T)


def logits(weights: dict, config: dict, tokens: np.ndarray) -> np.ndarray:
    """tokens int (B, T) -> softcapped logits float64 (B, T, V)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    L = config["num_layers"]
    n_enc = L // 2
    out = []
    for seq in np.asarray(tokens):
        x = x0 = rms(w["tok_emb.weight"][seq])
        skips = []
        for i in range(n_enc):
            x = block(w, i, x, x0, config)
            skips.append(x)
        for j in range(L - n_enc):
            if skips:
                x = x + w["skip_weights"][j] * skips.pop()
            x = block(w, n_enc + j, x, x0, config)
        z = rms(x) @ w["tok_emb.weight"].T
        out.append(config["logit_softcap"] * np.tanh(z / config["logit_softcap"]))
    return np.stack(out)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(weights: dict, config: dict, tokens: np.ndarray) -> np.ndarray:
    """tokens int (B, T+1) -> NLL in nats float64 (B, T) of tokens[:, 1:] given the prefix."""
    tokens = np.asarray(tokens)
    lp = log_softmax(logits(weights, config, tokens[:, :-1]))
    return -np.take_along_axis(lp, tokens[:, 1:, None], axis=-1)[..., 0]


def random_weights(shapes: dict, seed: int) -> dict[str, np.ndarray]:
    """Non-degenerate float32 weights (the canonical init zeroes the projections, which would hide bugs)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith(".weight"):
            w = rng.normal(0.0, 1.0 / np.sqrt(shape[-1]), size=shape)
        else:  # control tensors: around their init, but every entry different
            w = 1.0 + 0.3 * rng.standard_normal(shape)
        out[name] = w.astype(np.float32)
    return out
