"""The functional core: NNX model definitions applied to flat canonical params, the loss, the jitted step, sharding.

Params live as a flat dict {canonical name: array}: the optimizer labels leaves by name, export and
checkpoints are plain copies, and inside ``jit`` the dict becomes an ``nnx.State`` that ``nnx.merge`` turns
back into the module (trace-time only, so no Python graph traversal per step).

Devices: a 1-D ``data`` mesh over the devices; the batch rows are sharded over it (NamedSharding P('data')),
params and optimizer state replicated (P()). XLA inserts the gradient all-reduce. Only Muon's Newton-Schulz
is split: each device orthogonalizes its share of every same-shape stack of matrices (optim.scale_by_muon).
A batch whose rows do not divide by the device count is padded with zero-weight rows, so the loss is always
the mean over real rows.
On accelerators a big batch runs as micro-batches (gradient accumulation in a ``lax.scan``), each of them
sharded over every device.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from golfbench.backends.jax.layers import default_compute_dtype, param_paths, path_name
from golfbench.backends.jax.llama import GPT
from golfbench.backends.jax.megalodon import Megalodon
from golfbench.backends.jax.optim import RECIPES, Recipe, plugin_recipe
from golfbench.harness.errors import GolfError

MODELS: dict[str, Callable] = {"llama": GPT, "megalodon": Megalodon}


def model_class(spec_name: str) -> Callable:
    """The NNX module class of ``spec_name``: a built-in (``MODELS``) or a plugin's JAX implementation
    (harness/plugins.py, imported on first use). GolfError for a model with no JAX implementation."""
    if spec_name in MODELS:
        return MODELS[spec_name]
    from golfbench.harness.plugins import get_plugin

    plugin = get_plugin(spec_name)
    if plugin is None:
        raise GolfError(f"the jax backend does not implement model '{spec_name}'")
    return plugin.implementation("jax")


def abstract_model(spec_name: str, config: dict, dtype=None) -> nnx.Module:
    """The module with shape-only parameters (nothing allocated): its graphdef and canonical param shapes."""
    dtype = dtype or default_compute_dtype()
    cls = model_class(spec_name)
    return nnx.eval_shape(lambda: cls(config, dtype))


def model_shapes(model: nnx.Module) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape of every parameter, read from the NNX state paths."""
    return {path_name(path): tuple(v.shape) for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def make_apply(spec_name: str, config: dict, dtype=None) -> Callable[[dict, jax.Array], jax.Array]:
    """apply(params, idx (B, T)) -> fp32 logits (B, T, V), for flat canonical params."""
    graphdef = nnx.graphdef(abstract_model(spec_name, config, dtype))

    def apply(params: dict, idx: jax.Array) -> jax.Array:
        state = nnx.from_flat_state([(param_paths(name), params[name]) for name in sorted(params)])
        return nnx.merge(graphdef, state)(idx)

    return apply


def input_hessians(spec_name: str, config: dict, params: dict, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
    """GPTQ's per-layer input Hessians: for every ``layers.Linear`` of the model (canonical name ``<path>.weight``),
    H = Σ x xᵀ, float64 (in, in), over every input row x reaching it while the model runs forward in fp32 on the
    inputs ``[:, :-1]`` of ``batches`` (int32 (B, T+1) each). The model runs eagerly (op by op, no jit) with
    ``layers.INPUT_TAP`` set, so each Linear hands over its concrete input; weights used outside a Linear (a tied
    LM head, an embedding) get none. Raises GolfError when a Linear is called inside a traced transform (its input
    is not concrete), which a model used here must not do.
    """
    from golfbench.backends.jax import layers

    graphdef = nnx.graphdef(abstract_model(spec_name, config, jnp.float32))
    state = nnx.from_flat_state([(param_paths(n), jnp.asarray(params[n], jnp.float32)) for n in sorted(params)])
    model = nnx.merge(graphdef, state)
    names = {id(m): path_name(p) + ".weight" for p, m in nnx.iter_graph(model) if isinstance(m, layers.Linear)}
    sums: dict[str, np.ndarray] = {}

    def tap(module, x) -> None:
        if isinstance(x, jax.core.Tracer):
            raise GolfError(f"{spec_name}: a Linear runs inside a traced transform; its input Hessian cannot be taken")
        a = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
        name = names[id(module)]
        part = (a.T @ a).astype(np.float64)
        sums[name] = sums[name] + part if name in sums else part

    layers.INPUT_TAP = tap
    try:
        for batch in batches:
            model(jnp.asarray(np.asarray(batch)[:, :-1]))
    finally:
        layers.INPUT_TAP = None
    return dict(sorted(sums.items()))


_SCORE_FNS: dict[tuple, tuple] = {}
PRECISIONS = {"fp32": jnp.float32, "bf16": jnp.bfloat16}  # scoring precision (a track rule) -> compute dtype


def score_fns(spec_name: str, config: dict, precision: str = "fp32") -> tuple[Callable, Callable]:
    """Jitted (nll(params, tokens (B, T+1)), logprobs(params, idx, rows, ts)), cached per (spec, config, precision).

    ``precision`` is the scoring rule, the same on every device kind (unlike training's
    ``default_compute_dtype``): "fp32" = every matmul in full fp32; "bf16" = every matmul takes bf16 inputs and
    accumulates in fp32, projection and attention outputs are rounded to bf16, while the residual stream, norms, RoPE,
    attention scores and softmax, CEMA, the LM-head logits and the final log-sum-exp stay fp32. Both trace
    under ``jax.default_matmul_precision("highest")`` so an fp32 matmul is never silently TF32 on a GPU.
    Raises GolfError for another precision.
    """
    if precision not in PRECISIONS:
        raise GolfError(f"unknown scoring precision '{precision}': use fp32 or bf16")
    key = (spec_name, json.dumps(config, sort_keys=True), precision)
    if key not in _SCORE_FNS:
        apply = make_apply(spec_name, config, PRECISIONS[precision])

        def full_precision(fn):  # the matmul-precision setting is read while tracing: wrap the traced function
            def traced(*args):
                with jax.default_matmul_precision("highest"):
                    return fn(*args)

            return traced

        nll = jax.jit(full_precision(lambda p, tokens: token_nll(apply(p, tokens[:, :-1]), tokens[:, 1:])))
        logprobs = jax.jit(
            full_precision(lambda p, idx, rows, ts: jax.nn.log_softmax(apply(p, idx)[rows, ts], axis=-1))
        )
        _SCORE_FNS[key] = (nll, logprobs)
    return _SCORE_FNS[key]


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """-log softmax(logits)[target], fp32, same shape as targets."""
    logits = logits.astype(jnp.float32)
    logz = jax.nn.logsumexp(logits, axis=-1)
    return logz - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]


def host_value(x: Any) -> np.ndarray:
    """A jax.Array (or anything array-like) as numpy on this process.

    An array spread over several processes must be fully replicated (params, optimizer state, the loss): its
    local copy is the value. np.asarray cannot read an array that is not fully addressable. Raises ValueError
    for an array sharded (not replicated) over several processes.
    """
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if not x.sharding.is_fully_replicated:
            raise ValueError(f"an array sharded over several processes ({x.sharding}) has no local value")
        return np.asarray(x.addressable_data(0))
    return np.asarray(jax.device_get(x))


class Placement:
    """Where arrays go: rows sharded over a 1-D data mesh, everything else replicated.

    The mesh may span several processes (``jax.distributed``; default: every device of every process). Then
    each process holds the same global numpy value (the harness draws the same batch everywhere) and
    contributes the slices its own devices hold (``jax.make_array_from_callback``).
    """

    def __init__(self, devices=None):
        self.devices = list(devices) if devices is not None else jax.devices()
        self.mesh = Mesh(np.array(self.devices), ("data",))
        self.rows = NamedSharding(self.mesh, P("data"))  # (B, ...) arrays: rows split over the devices
        self.micro = NamedSharding(self.mesh, P(None, "data"))  # (k, B, ...) micro-batches: the same, per micro-batch
        self.replicated = NamedSharding(self.mesh, P())
        me = jax.process_index()
        self.multiprocess = any(d.process_index != me for d in self.devices)

    @property
    def count(self) -> int:
        """Devices in the data mesh (over every process)."""
        return len(self.devices)

    def put(self, a: Any, sharding: NamedSharding) -> jax.Array:
        """One array onto ``sharding``; across processes, from this process's copy of the global value."""
        if not self.multiprocess:
            return jax.device_put(a, sharding)
        if isinstance(a, jax.Array) and a.sharding.is_equivalent_to(sharding, a.ndim):
            return a
        value = host_value(a)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    def replicate(self, tree: Any) -> Any:
        """Every array of ``tree`` replicated on every device of the mesh (from this process's copy across
        processes)."""
        if not self.multiprocess:
            return jax.device_put(tree, self.replicated)
        return jax.tree.map(lambda a: self.put(a, self.replicated), tree)

    def pad_rows(self, a: np.ndarray) -> tuple[np.ndarray, int]:
        """Zero rows appended so the row count divides by the device count; returns (padded, real rows)."""
        n = a.shape[0]
        extra = (-n) % self.count
        if extra:
            a = np.concatenate([a, np.zeros((extra, *a.shape[1:]), a.dtype)])
        return a, n

    def put_rows(self, a: np.ndarray) -> jax.Array:
        """A (B, ...) array with its rows split over the mesh's devices; B must divide by ``count`` (see `pad_rows`)."""
        return self.put(a, self.rows)

    def put_micro(self, a: np.ndarray) -> jax.Array:
        """A (k, B, ...) stack of micro-batches with each micro-batch's rows split over the devices."""
        return self.put(a, self.micro)


def default_micro_batch_tokens() -> int | None:
    """Tokens per device per micro-batch: unlimited on CPU (dev batches are small, and one pass keeps CPU runs
    bit-identical), GOLF_MICRO_BATCH_TOKENS (default 65,536, as the torch backend) on accelerators, so a
    524,288-token step fits one device by gradient accumulation."""
    if jax.default_backend() == "cpu":
        return None
    return int(os.environ.get("GOLF_MICRO_BATCH_TOKENS", "65536"))


@dataclass(frozen=True)
class Trainer:
    """The compiled pieces of one (spec, config, devices): the recipe and the jitted train step."""

    spec_name: str
    config: dict
    placement: Placement
    recipe: Recipe
    step_fn: Any  # jitted (params, opt_state, batch (k, R, T+1), row_weight (k, R), lr_scale) -> (params, opt, loss)
    micro_tokens: int | None = None

    def device_batch(self, batch: np.ndarray, rows: int | None = None) -> tuple[jax.Array, jax.Array]:
        """(B, T+1) -> (k, R, T+1) micro-batches with (k, R) row weights, each micro-batch's rows sharded over
        the devices (of every process: each passes the same global batch and keeps its devices' rows). Rows
        added to make the split even carry weight 0; with ``rows`` > B the layout is that of a ``rows``-row batch
        (a short batch gets the full batch's shapes, so the jitted step is not traced again)."""
        batch = np.ascontiguousarray(batch, dtype=np.int32)
        T = batch.shape[1] - 1
        real = batch.shape[0]
        B = max(real, int(rows or 0))
        n = self.placement.count
        per_device = -(-B // n)
        k = 1
        if self.micro_tokens:
            k = -(-per_device // max(1, min(per_device, self.micro_tokens // T)))
        rows = -(-per_device // k) * n  # rows per micro-batch, a multiple of the device count
        padded = np.zeros((k * rows, T + 1), np.int32)
        padded[:real] = batch
        weight = (np.arange(k * rows) < real).astype(np.float32)
        return self.placement.put_micro(padded.reshape(k, rows, T + 1)), self.placement.put_micro(
            weight.reshape(k, rows)
        )


_TRAINERS: dict[tuple, Trainer] = {}


def make_trainer(spec_name: str, config: dict, names: list[str], devices=None) -> Trainer:
    """Cached per (spec, config, params, devices): a fresh init or a loaded checkpoint reuses the compiled step."""
    devices = list(devices) if devices is not None else jax.devices()
    key = (spec_name, json.dumps(config, sort_keys=True), tuple(names), tuple(d.id for d in devices))
    if key not in _TRAINERS:
        _TRAINERS[key] = _build_trainer(spec_name, dict(config), names, devices)
    return _TRAINERS[key]


def _build_trainer(spec_name: str, config: dict, names: list[str], devices) -> Trainer:
    placement = Placement(devices)
    mesh = placement.mesh  # Muon's Newton-Schulz is sharded over the data axis (optim.scale_by_muon)
    if spec_name in RECIPES:
        recipe = RECIPES[spec_name](names, config, mesh)
    else:
        recipe = plugin_recipe(spec_name, names, config, mesh)
    apply = make_apply(spec_name, config)

    def step(params, opt_state, batch, row_weight, lr_scale):
        # The loss is the mean NLL over the real rows of the whole batch, whatever the micro-batch split.
        denom = jnp.sum(row_weight) * (batch.shape[-1] - 1)

        def micro_loss(p, tokens, weight):
            nll = token_nll(apply(p, tokens[:, :-1]), tokens[:, 1:])
            return jnp.sum(nll * weight[:, None]) / denom

        grad_fn = jax.value_and_grad(micro_loss)
        if batch.shape[0] == 1:  # one pass: no loop in the graph
            loss, grads = grad_fn(params, batch[0], row_weight[0])
        else:  # gradient accumulation, one micro-batch at a time (the shape is static, so this is trace-time)

            def accumulate(carry, micro):
                loss, grads = carry
                part, g = grad_fn(params, *micro)
                return (loss + part, jax.tree.map(jnp.add, grads, g)), None

            zero = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
            (loss, grads), _ = jax.lax.scan(accumulate, zero, (batch, row_weight))
        updates, opt_state = recipe.update(grads, opt_state, params, lr_scale)
        return jax.tree.map(jnp.add, params, updates), opt_state, loss

    repl, micro = placement.replicated, placement.micro
    # Donating the old params/opt state lets XLA update them in place on accelerators; the CPU client
    # cannot use donated buffers and would only warn.
    donate = (0, 1) if jax.default_backend() != "cpu" else ()
    step_fn = jax.jit(
        step,
        in_shardings=(repl, repl, micro, micro, repl),
        out_shardings=(repl, repl, repl),
        donate_argnums=donate,
    )
    return Trainer(spec_name, config, placement, recipe, step_fn, default_micro_batch_tokens())
