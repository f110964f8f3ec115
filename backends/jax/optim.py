"""The training recipes of docs/models.md as Optax transformations over the flat {canonical name: array} params.

Which tensor goes to Muon or Adam, at which learning-rate key, and the Muon momentum schedule are declared once,
by canonical name, in harness/models.py (``ModelSpec.optimizer_groups`` / ``momentum_schedule``); this module
builds the Optax transformation from that declaration, mirroring backends/torch exactly:
- Muon momentum is torch-style Nesterov (buf = m buf + g; step direction g + m buf), without the EMA damping
  and bias correction of ``optax.contrib.scale_by_muon``, whose early steps would differ from torch's. The
  momentum m is a function of the step (llama warms it 0.85 -> 0.95), which a fixed optax ``beta`` cannot be.
- ``optax.contrib.muon`` has one Adam learning rate and turns its Adam into NAdam when Muon is Nesterov;
  llama needs two Adam rates (embedding vs scalars) and plain Adam. So the labelling is ours
  (``optax.partition`` by the spec's groups; the embedding and head are never Muon's), Adam is
  ``optax.scale_by_adam``, and each leaf's rate is applied last, times the harness's traced ``lr_scale``.
- Newton-Schulz: 5 quintic steps, coefficients (3.4445, -4.7750, 2.0315), bf16 on GPUs and fp32 on CPU (so
  CPU runs are exact), update scaled by sqrt(max(1, rows/cols)) of the (out, in) weight. Same-shape matrices
  are stacked and, over several devices, each stack is sharded over the data mesh, so every device
  orthogonalizes only its share (`scale_by_muon`); momentum and Adam stay replicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from golfbench.harness.errors import GolfError
from golfbench.harness.models import MomentumSchedule, get_spec

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: jax.Array, steps: int, dtype, eps: float = 1e-7) -> jax.Array:
    """The nearest semi-orthogonal matrix to g, approximately (quintic Newton-Schulz), returned in fp32."""
    a, b, c = NS_COEFFS
    x = g.astype(jnp.float32)
    x = (x / (jnp.linalg.norm(x) + eps)).astype(dtype)  # the iteration converges for singular values <= 1
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.T

    def iterate(_, x):
        gram = x @ x.T
        return a * x + (b * gram + c * (gram @ gram)) @ x

    # A rolled loop: XLA compiles the body once instead of `steps` copies (CPU compile time was dominated by
    # the unrolled iterations); at a handful of iterations the loop overhead is negligible.
    x = jax.lax.fori_loop(0, steps, iterate, x)
    return (x.T if tall else x).astype(jnp.float32)


class MuonState(NamedTuple):
    """Muon's optimizer state: ``count`` (int32 scalar, steps taken) and ``buf`` (fp32 momentum buffers, one per
    matrix, shaped like it)."""

    count: jax.Array  # steps taken; drives the momentum schedule
    buf: Any  # torch-style momentum buffer, one per matrix


def scale_by_muon(
    momentum_at: Callable[[jax.Array], jax.Array], ns_steps: int, ns_dtype, mesh: Mesh | None = None
) -> optax.GradientTransformation:
    """Nesterov momentum, then orthogonalization, then the sqrt(max(1, rows/cols)) shape scale.

    Matrices of the same shape (the same projection in every layer) are stacked and orthogonalized by one
    vmapped Newton-Schulz: a few batched matmuls instead of one small chain per matrix, which keeps the
    compiled step small (compile time on CPU) and the accelerator busy. With a ``mesh`` whose ``data`` axis
    has d > 1 devices (runtime.Placement's), each stack is padded with zero matrices to a multiple of d and
    sharded over ``data`` along its matrix axis for the Newton-Schulz, so each device orthogonalizes only
    its len/d matrices; the results are then replicated again (XLA all-gathers them). Without a mesh or on
    one device the computation is exactly the unsharded one.
    """
    shards = mesh.shape["data"] if mesh is not None else 1

    def init(params):
        return MuonState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        m = momentum_at(state.count)
        buf = jax.tree.map(lambda b, g: m * b + g, state.buf, updates)
        leaves, treedef = jax.tree.flatten(jax.tree.map(lambda g, b: g + m * b, updates, buf))
        by_shape: dict[tuple, list[int]] = {}
        for i, leaf in enumerate(leaves):
            by_shape.setdefault(tuple(leaf.shape), []).append(i)
        out: list[Any] = [None] * len(leaves)
        for (rows, cols), idx in by_shape.items():
            stack = jnp.stack([leaves[i] for i in idx])
            if shards > 1:
                if len(idx) % shards:  # zero matrices stay zero (x / (0 + eps) = 0) and are dropped below
                    stack = jnp.pad(stack, ((0, -len(idx) % shards), (0, 0), (0, 0)))
                stack = jax.lax.with_sharding_constraint(stack, NamedSharding(mesh, P("data")))
            ortho = jax.vmap(lambda g: orthogonalize(g, ns_steps, ns_dtype))(stack)
            if shards > 1:
                ortho = jax.lax.with_sharding_constraint(ortho, NamedSharding(mesh, P()))[: len(idx)]
            ortho = ortho * math.sqrt(max(1.0, rows / cols))
            for j, i in enumerate(idx):
                out[i] = ortho[j]
        return jax.tree.unflatten(treedef, out), MuonState(state.count + 1, buf)

    return optax.GradientTransformation(init, update)


@dataclass(frozen=True)
class Recipe:
    """An optax transformation plus the base learning rate of every leaf (applied times lr_scale)."""

    tx: optax.GradientTransformation
    lrs: dict[str, float]
    labels: dict[str, str]

    def init(self, params: dict) -> Any:
        """The optimizer state for ``params`` ({canonical name: fp32 array})."""
        return self.tx.init(params)

    def update(self, grads: dict, state: Any, params: dict, lr_scale: jax.Array) -> tuple[dict, Any]:
        """(parameter updates, new state) for ``grads``: the transformation's direction times -lr × ``lr_scale`` per
        leaf (lr: the leaf's group rate from the config; lr_scale: the harness's schedule, traced). Add the updates
        to the params (optax.apply_updates).
        """
        updates, state = self.tx.update(grads, state, params)
        return {k: u * (-self.lrs[k] * lr_scale) for k, u in updates.items()}, state


def _ns_dtype():
    return jnp.bfloat16 if jax.default_backend() == "gpu" else jnp.float32


def _build(spec_name: str, names: list[str], config: dict, clip: float, mesh: Mesh | None) -> Recipe:
    """Muon / Adam over ``names`` as the spec's optimizer groups say, each leaf at its group's ``config[lr_key]``;
    optionally after a global-norm clip; Muon's Newton-Schulz sharded over ``mesh``'s data axis (scale_by_muon).
    GolfError if ``names`` are not exactly the spec's canonical names."""
    spec = get_spec(spec_name)
    groups = spec.optimizer_groups(config)
    owner = {n: g for g in groups for n in g.tensors}
    if set(owner) != set(names):
        odd = sorted(set(owner) ^ set(names))
        raise GolfError(f"{spec_name}: the JAX model's parameters differ from the spec's canonical names ({odd[:3]})")
    unknown = sorted({g.optimizer for g in groups} - {"muon", "adam"})
    if unknown:
        raise GolfError(f"{spec_name}: optimizer group names unknown optimizer '{unknown[0]}' (muon | adam)")
    labels = {n: owner[n].optimizer for n in names}
    momentum_at = momentum_fn(spec.momentum_schedule(config))
    parts = optax.partition(
        {
            "muon": scale_by_muon(momentum_at, config["muon_backend_steps"], _ns_dtype(), mesh),
            "adam": optax.scale_by_adam(b1=config["beta1"], b2=config["beta2"], eps=config["adam_eps"]),
        },
        labels,
    )
    tx = optax.chain(optax.clip_by_global_norm(clip), parts) if clip > 0 else parts
    return Recipe(tx, {n: float(config[owner[n].lr_key]) for n in names}, labels)


def momentum_fn(schedule: MomentumSchedule) -> Callable[[jax.Array], jax.Array]:
    """The spec's Muon momentum at a (traced) step counted from 0: linear from ``start`` to ``end`` over
    ``warmup_steps`` (fp32 arithmetic), then ``end``; a plain python float when there is no warm-up."""
    start, end, warm = schedule.start, schedule.end, schedule.warmup_steps

    def momentum_at(step):
        frac = jnp.minimum(jnp.asarray(step, jnp.float32) / warm, 1.0) if warm > 0 else 1.0
        return (1.0 - frac) * start + frac * end

    return momentum_at


def llama_momentum(config: dict) -> Callable[[jax.Array], jax.Array]:
    """llama's Muon momentum at a step (counted from 0): linear from the warm-up start to ``muon_momentum``."""
    return momentum_fn(get_spec("llama").momentum_schedule(config))


def llama_recipe(names: list[str], config: dict, mesh: Mesh | None = None) -> Recipe:
    """The llama groups of harness/models.py (tied embedding, block matrices, control tensors); no clip.
    ``mesh``: the data mesh Muon's Newton-Schulz is sharded over (None: unsharded)."""
    return _build("llama", names, config, clip=0.0, mesh=mesh)


def megalodon_recipe(names: list[str], config: dict, mesh: Mesh | None = None) -> Recipe:
    """The megalodon groups of harness/models.py, after the global-norm clip ``grad_clip``; no weight decay
    (GolfError when ``weight_decay`` is set). ``mesh`` as in `llama_recipe`."""
    if config["weight_decay"]:
        # docs/models.md's recipe has no weight decay (and the torch backend refuses it too)
        raise GolfError("megalodon: weight_decay is not part of the recipe in docs/models.md; leave it at 0")
    return _build("megalodon", names, config, clip=float(config["grad_clip"]), mesh=mesh)


def plugin_recipe(spec_name: str, names: list[str], config: dict, mesh: Mesh | None = None) -> Recipe:
    """A plugin model's recipe (docs/plugins.md): its spec's optimizer groups, after a global-norm clip at
    ``config["grad_clip"]`` when its recipe declares that key (0 or absent = no clip). ``mesh`` as in
    `llama_recipe`."""
    return _build(spec_name, names, config, clip=float(config.get("grad_clip", 0.0)), mesh=mesh)


RECIPES = {"llama": llama_recipe, "megalodon": megalodon_recipe}
