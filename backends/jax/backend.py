"""The JAX backend (Flax NNX + Optax): the contract of harness/backend.py for the ``llama`` and ``megalodon`` specs.

Every model starts from ``golfbench.harness.init.init_weights`` (so torch and JAX start identically), trains with one
jitted step over a data-parallel mesh of ``jax.devices()``, and exports fp32 numpy under the canonical names.

Several processes (`golf run --backend jax --nproc-per-node N [--nnodes K]`): each joins ``jax.distributed``
(``join_processes``, from torchrun's environment) before touching a device; the training mesh spans every
process's devices, each process passes the same global batch and keeps its devices' rows; params stay
replicated, so export and the loss read the local copy; process 0 alone writes checkpoints; scoring is
local to each process (the evaluator gives each process its own windows).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from golfbench.backends.jax.runtime import (
    PRECISIONS,
    Placement,
    Trainer,
    host_value,
    input_hessians,
    make_apply,
    make_trainer,
    score_fns,
    token_nll,
)
from golfbench.harness.code import CodeLayout
from golfbench.harness.distributed import SINGLE, as_f64, env_rank, env_world_size
from golfbench.harness.errors import GolfError
from golfbench.harness.init import init_weights
from golfbench.harness.models import check_tokens, check_weights, get_spec

HERE = Path(__file__).resolve().parent


def set_flag(name: str, value: Any) -> bool:
    """``jax.config.update(name, value)`` where this jax has the flag; returns whether it was set. The backend's
    flags exist in every jax it accepts (>= 0.5); the guard keeps a renamed or retired one from stopping a run."""
    if name not in getattr(jax.config, "values", {}) and not hasattr(jax.config, name):
        return False
    jax.config.update(name, value)
    return True


def _enable_compilation_cache() -> None:
    """Reuse XLA executables across processes: every `golf run` recompiles the same step otherwise (tens of
    seconds on a CPU). Keyed by the HLO itself, so a changed model never hits a stale entry. GOLF_JAX_CACHE=0
    turns it off."""
    where = os.environ.get("GOLF_JAX_CACHE", str(Path.home() / ".cache" / "golfbench" / "jax"))
    if where == "0":
        return
    set_flag("jax_compilation_cache_dir", where)
    set_flag("jax_persistent_cache_min_compile_time_secs", 1.0)


_enable_compilation_cache()
# Everything a JAX run executes is shared (step, optimizers, mesh, scorer, layers); each model adds its own.
CODE_LAYOUT = CodeLayout(
    root=HERE,
    shared=("__init__.py", "backend.py", "runtime.py", "optim.py", "layers.py"),
    models={"llama": ("llama.py",), "megalodon": ("megalodon.py", "cema.py", "timestep_norm.py")},
)
CHECKPOINT_FORMAT = "golfbench-jax-checkpoint-1"


@dataclasses.dataclass
class JaxState:
    """Opaque to the harness: the trainer (compiled step, mesh), params, optimizer state and step count."""

    trainer: Trainer
    params: dict[str, jax.Array]
    opt_state: Any
    step: int
    seed: int
    batch_rows: int = 0  # the full global batch's rows (the largest seen): shorter batches are padded to it


@dataclasses.dataclass(frozen=True)
class JaxBatch:
    """A global batch on the mesh (runtime.Trainer.device_batch): ``tokens`` int32 (k, R, T+1) micro-batches with
    ``weight`` float32 (k, R) row weights (0 for padding rows)."""

    tokens: jax.Array
    weight: jax.Array


class JaxLoss:
    """A step's loss still on the device (a replicated fp32 scalar): ``float()`` reads it (blocking)."""

    def __init__(self, value: jax.Array):
        self.value = value

    def __float__(self) -> float:
        return float(host_value(self.value))


def _host(tree: Any) -> Any:
    return jax.tree.map(host_value, tree)


_JOINED = False


def join_processes() -> None:
    """Join the run's ``jax.distributed`` group once, before any device is touched, when the launcher started
    this process as one of several (torchrun's environment: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT; harness/launch.py sets it). Process 0 hosts the coordinator at MASTER_ADDR:PORT.
    With several processes on one machine each takes one local accelerator (LOCAL_RANK); CPU processes
    exchange data over gloo. A no-op for a single process. Raises GolfError when WORLD_SIZE > 1 but
    MASTER_PORT is not set."""
    global _JOINED
    if _JOINED or env_world_size() <= 1:
        return
    if "MASTER_PORT" not in os.environ:
        raise GolfError(
            "WORLD_SIZE > 1 but MASTER_PORT is not set: start several JAX processes with `golf run --nproc-per-node N`"
        )
    set_flag("jax_cpu_collectives_implementation", "gloo")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    jax.distributed.initialize(
        coordinator_address=f"{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{os.environ['MASTER_PORT']}",
        num_processes=env_world_size(),
        process_id=env_rank(),
        local_device_ids=[int(os.environ.get("LOCAL_RANK", "0"))] if local > 1 else None,
    )
    _JOINED = True


class JaxCollective:
    """golfbench.harness.distributed.Collective over ``jax.distributed`` processes (multihost_utils).

    float64 values travel as uint32 pairs, so they keep every bit even with ``jax_enable_x64`` off; a sum is
    an all-gather followed by a sum in process order, identical on every process.
    """

    def __init__(self) -> None:
        self.rank, self.world_size = jax.process_index(), jax.process_count()

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """float64 (n,) -> float64 (n,), the same on every process."""
        from jax.experimental import multihost_utils

        words = as_f64(values).view(np.uint32)
        gathered = np.ascontiguousarray(np.asarray(multihost_utils.process_allgather(words))).view(np.float64)
        # added row by row from process 0: np.sum would start from +0.0 and turn a sum of -0.0s into +0.0
        return functools.reduce(np.add, list(gathered))

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Process 0's float64 (n,) on every process."""
        from jax.experimental import multihost_utils

        words = as_f64(values).view(np.uint32)
        return np.ascontiguousarray(np.asarray(multihost_utils.broadcast_one_to_all(words))).view(np.float64)

    def step_sync(self, control: np.ndarray, loss) -> tuple[np.ndarray, float]:
        """Process 0's ``control`` float64 (k,) on every process (one broadcast) and the step's loss. The jitted
        step already made the loss global (replicated over the mesh), so it does not travel; it is read on this
        process after the broadcast (on a CPU this is two host waits per step, not one: the loss read and the
        broadcast's result; a single JAX process, the usual GPU layout, has only the loss read)."""
        values = self.broadcast(control)
        return values, float(loss)


class JaxBackend:
    """The harness's Backend for JAX (golfbench.harness.backend.Backend): train, export, score and checkpoint."""

    name = "jax"

    def collective(self):
        """The jax.distributed processes as a harness Collective (joined on first call), or SINGLE for one process."""
        join_processes()
        if jax.process_count() <= 1:
            return SINGLE
        return JaxCollective()

    def models(self) -> list[str]:
        """The built-ins, then every installed plugin model with a JAX implementation (harness/plugins.py)."""
        from golfbench.harness.plugins import discover

        return ["llama", "megalodon", *(name for name, p in discover().items() if "jax" in p.implementations)]

    def devices(self) -> dict[str, Any]:
        """The devices the run uses, for its hardware class: the training mesh's (every process's local devices,
        ``jax.devices()``: one per process when several share a machine, ``join_processes``), their names
        (``device_kind``, "NVIDIA H100 80GB HBM3" as torch reports it) and the number of processes."""
        join_processes()
        devs = jax.devices()
        # device_kind ("NVIDIA H100 80GB HBM3") matches torch's device names, so both land on one leaderboard
        return {
            "kind": jax.default_backend(),
            "count": len(devs),
            "names": [getattr(d, "device_kind", str(d)) for d in devs],
            "world_size": jax.process_count(),
        }

    # -- training -------------------------------------------------------------------------------------------

    def init(self, spec_name: str, config: dict, seed: int, devices=None) -> JaxState:
        """Params and optimizer state from the canonical initial weights of ``seed``; the batch is always
        sharded over ``devices`` (default: all of ``jax.devices()``). Raises GolfError for a model this backend
        does not implement."""
        spec = get_spec(spec_name)
        if spec_name not in self.models():
            raise GolfError(f"the jax backend does not implement model '{spec_name}'")
        weights = init_weights(spec, config, seed)
        return self._state_from(spec_name, config, weights, None, 0, seed, devices)

    def _state_from(self, spec_name, config, weights, opt_leaves, step, seed, devices) -> JaxState:
        check_weights(get_spec(spec_name), config, weights)
        join_processes()
        trainer = make_trainer(spec_name, config, sorted(weights), devices)
        place = trainer.placement
        params = place.replicate({k: jnp.asarray(v, jnp.float32) for k, v in weights.items()})
        opt_state = place.replicate(trainer.recipe.init(params))
        if opt_leaves is not None:
            treedef = jax.tree.structure(opt_state)
            template = jax.tree.leaves(opt_state)
            if len(opt_leaves) != len(template) or any(a.shape != b.shape for a, b in zip(opt_leaves, template)):
                raise GolfError(
                    "checkpoint optimizer state does not match this model/config; was it saved for another preset?"
                )
            opt_state = place.replicate(jax.tree.unflatten(treedef, [np.asarray(a) for a in opt_leaves]))
        return JaxState(trainer, params, opt_state, step, seed)

    def warmup(self, state: JaxState, batch: np.ndarray) -> JaxState:
        """Compile the step on ``batch``, then restore the exact params/optimizer state from before."""
        saved = _host((state.params, state.opt_state))
        self.train_step(state, batch, 1.0)
        params, opt_state = state.trainer.placement.replicate(saved)
        return dataclasses.replace(state, params=params, opt_state=opt_state, step=state.step)

    def prepare_batch(self, state: JaxState, batch: np.ndarray) -> JaxBatch:
        """The global ``batch`` int32 (B, T+1) (token ids already checked: a BatchStream checks each shard when it
        loads it) placed on the mesh as micro-batches, padded with zero-weight rows to the full batch's rows
        (``state.batch_rows``) so a short last fixed-data batch reuses the compiled step. Asynchronous: the runner
        prepares step k+1's batch while step k runs."""
        state.batch_rows = max(state.batch_rows, int(batch.shape[0]))
        tokens, weight = state.trainer.device_batch(batch, rows=state.batch_rows)
        return JaxBatch(tokens, weight)

    def train_step(self, state: JaxState, batch, lr_scale: float) -> tuple[JaxState, dict]:
        """One jitted step on ``batch`` (a JaxBatch from `prepare_batch`, or a global int32 (B, T+1) array, checked
        and prepared here). On accelerators the old params/optimizer buffers are donated to the new ones, so only
        the returned state is valid afterwards (on the CPU the old one stays readable). Returns (state, {"loss":
        JaxLoss}): the mean NLL over the real rows, still on the device (dispatch is asynchronous)."""
        tr = state.trainer
        if not isinstance(batch, JaxBatch):
            batch = self.prepare_batch(state, check_tokens(batch, tr.config["vocab_size"]))
        lr = np.float32(lr_scale)
        params, opt_state, loss = tr.step_fn(state.params, state.opt_state, batch.tokens, batch.weight, lr)
        new = dataclasses.replace(state, params=params, opt_state=opt_state, step=state.step + 1)
        return new, {"loss": JaxLoss(loss)}

    def export(self, state: JaxState) -> dict[str, np.ndarray]:
        """The params as writable fp32 numpy copies under the canonical names and shapes (this process's replica)."""
        return {k: np.array(v, dtype=np.float32) for k, v in _host(state.params).items()}  # writable copies

    def compiler_flops(self, state: JaxState, batch: np.ndarray) -> float | None:
        """XLA's own count for one train step (pre-optimization HLO; best effort, loops counted once)."""
        try:
            tr = state.trainer
            tokens, weight = tr.device_batch(check_tokens(batch, tr.config["vocab_size"]))
            cost = tr.step_fn.lower(state.params, state.opt_state, tokens, weight, np.float32(1.0)).cost_analysis()
            if isinstance(cost, (list, tuple)):
                cost = cost[0] if cost else None
            flops = float(cost["flops"]) if cost and "flops" in cost else None
            return flops if flops and flops > 0 else None
        except Exception:  # the count is a cross-check; never let it stop a run
            return None

    def input_hessians(self, state: JaxState, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
        """GPTQ's per-layer input Hessians (Backend.input_hessians): {canonical weight name: float64 (in, in)}
        H = Σ x xᵀ over the inputs of every Linear, from this process's params (runtime.input_hessians)."""
        tr = state.trainer
        return input_hessians(tr.spec_name, tr.config, self.export(state), batches)

    # -- scoring --------------------------------------------------------------------------------------------

    def scorer(
        self, spec_name: str, config: dict, weights: dict[str, np.ndarray], devices=None, precision: str = "fp32"
    ) -> "JaxScorer":
        """A JaxScorer over ``devices`` (default: this process's devices) at ``precision`` (fp32 | bf16)."""
        return JaxScorer(spec_name, config, weights, devices, precision)

    def adapter(
        self, spec_name: str, config: dict, weights: dict[str, np.ndarray], precision: str = "fp32", recipe=None
    ) -> "JaxAdapter":
        """A JaxAdapter (score-first TTT, golfbench.harness.adapt) for ``weights`` at ``precision`` with the harness's
        ``recipe`` (an AdaptRecipe), over this process's devices. Works for every model (it trains on the model's
        own NLL). Raises GolfError as `scorer`."""
        return JaxAdapter(spec_name, config, weights, precision, recipe)

    # -- checkpoints ----------------------------------------------------------------------------------------

    def save_checkpoint(self, state: JaxState, path: Path) -> None:
        """One .npz (no pickle): params under ``param/<name>``, optimizer leaves ``opt/<i>``, step, metadata.

        Across processes the state is replicated: process 0 writes it, the others do nothing."""
        if jax.process_index() != 0:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        params, opt_leaves = _host(state.params), jax.tree.leaves(_host(state.opt_state))
        tr = state.trainer
        meta = {"format": CHECKPOINT_FORMAT, "spec": tr.spec_name, "config": tr.config, "seed": state.seed}
        arrays = {f"param/{k}": v for k, v in params.items()}
        arrays.update({f"opt/{i:05d}": np.asarray(a) for i, a in enumerate(opt_leaves)})
        arrays["step"] = np.asarray(state.step, np.int64)
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), np.uint8)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path, spec_name: str, config: dict, devices=None) -> JaxState:
        """The state saved at ``path`` (an .npz read with ``allow_pickle=False``), placed on ``devices`` (default:
        all of ``jax.devices()``). Raises GolfError for an unreadable file, one not written by this backend, one
        for another model, or weights or optimizer state whose names or shapes do not fit ``config``.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise GolfError(f"cannot read JAX checkpoint {path}: {exc}") from None
        meta = json.loads(bytes(data.get("meta", np.zeros(0, np.uint8))).decode("utf-8") or "{}")
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise GolfError(f"{path} is not a golfbench JAX checkpoint")
        if meta.get("spec") != spec_name:
            raise GolfError(f"checkpoint {path} holds model '{meta.get('spec')}', not '{spec_name}'")
        weights = {k[len("param/") :]: v for k, v in data.items() if k.startswith("param/")}
        opt_leaves = [data[k] for k in sorted(k for k in data if k.startswith("opt/"))]
        return self._state_from(
            spec_name, config, weights, opt_leaves, int(data["step"]), int(meta.get("seed", 0)), devices
        )

    def code_layout(self) -> CodeLayout:
        """This package's source files under the harness's one code-bytes rule (harness/code.py)."""
        return CODE_LAYOUT

    def code_files(self, spec_name: str) -> list[Path]:
        """Shared files + the model's own: the bytes that count toward the cap for ``spec_name``. A plugin
        model's own files are its declared JAX ``code_files`` (harness/plugins.py), counted by the same rule."""
        if spec_name in CODE_LAYOUT.models:
            return CODE_LAYOUT.files(spec_name)
        from golfbench.harness.plugins import get_plugin

        plugin = get_plugin(spec_name)
        if plugin is None or "jax" not in plugin.implementations:
            raise GolfError(f"the jax backend does not implement model '{spec_name}'")
        own = plugin.files("jax")
        if not own:
            raise GolfError(f"model '{spec_name}' (package {plugin.source}) declares no JAX code_files to count")
        clash = sorted({f.name for f in own} & set(CODE_LAYOUT.shared))
        if clash:
            raise GolfError(
                f"model '{spec_name}' (package {plugin.source}): code file '{clash[0]}' has the name of a shared"
                " jax backend file; rename it (runs snapshot code files by name)"
            )
        missing = [f for f in own if not f.is_file()]
        if missing:
            raise GolfError(f"model '{spec_name}' (package {plugin.source}): code file {missing[0]} does not exist")
        if len({f.name for f in own}) != len(own):
            raise GolfError(f"model '{spec_name}' (package {plugin.source}): two code files share a file name")
        return [*(CODE_LAYOUT.root / n for n in CODE_LAYOUT.shared), *own]


class JaxScorer:
    """score(tokens (B, T+1)) -> NLL (B, T) float32; logprobs(tokens, positions (n, 2)) -> (n, V) float32.

    One jitted forward per window shape (shorter windows simply compile once more). Rows are sharded over
    ``devices`` like training batches (padded to a multiple of the device count, padding dropped after); the
    default is every device of this process (``jax.local_devices()``, all of ``jax.devices()`` in a
    single-process run): with several processes the evaluator already gives each process its own windows.

    ``precision`` (a track rule, the same meaning as the torch scorer's; runtime.score_fns): "fp32" = fp32
    everywhere; "bf16" = matmuls take bf16 inputs with fp32 accumulation, projection and attention outputs
    rounded to bf16; residual stream, norms, RoPE, attention scores/softmax, CEMA, logits and log-sum-exp in fp32.
    Raises GolfError for bad weights or an unknown precision.
    """

    def __init__(
        self, spec_name: str, config: dict, weights: dict[str, np.ndarray], devices=None, precision: str = "fp32"
    ):
        check_weights(get_spec(spec_name), config, weights)
        self.vocab_size = config["vocab_size"]
        self.precision = precision
        self._nll, self._logprobs = score_fns(spec_name, config, precision)
        self.place = Placement(devices if devices is not None else jax.local_devices())
        self.params = self.place.replicate({k: jnp.asarray(v, jnp.float32) for k, v in weights.items()})

    def _rows(self, tokens: np.ndarray) -> tuple[jax.Array, int]:
        padded, n = self.place.pad_rows(tokens)
        return self.place.put_rows(padded), n

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        device_tokens, n = self._rows(check_tokens(tokens, self.vocab_size))
        return np.asarray(self._nll(self.params, device_tokens), dtype=np.float32)[:n]

    def logprobs(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Log-distribution of the token after position t of row b, for each (b, t) in ``positions``, from the
        same forward over ``tokens[:, :-1]`` as ``__call__`` (so the two agree to the bit): float32 (n, V) for
        ``positions`` int (n, 2). Raises ValueError for a position outside the batch, GolfError for a token id
        outside the vocab."""
        tokens = check_tokens(tokens, self.vocab_size)
        pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
        B, T = tokens.shape[0], tokens.shape[1] - 1
        if len(pos) and (pos.min() < 0 or pos[:, 0].max() >= B or pos[:, 1].max() >= T):
            raise ValueError(f"positions must be (row, t) with row < {B} and t < {T}")
        device_inputs, _ = self._rows(tokens[:, :-1])
        out = self._logprobs(self.params, device_inputs, jnp.asarray(pos[:, 0]), jnp.asarray(pos[:, 1]))
        return np.asarray(out, dtype=np.float32)


_ADAPT_STEPS: dict[tuple, object] = {}


def _adapt_step(spec_name: str, config: dict, precision: str, recipe):
    """Jitted step(params, buf, rows (R, T+1), weight (R,)) -> (params, buf): one SGD step of ``recipe`` on the mean
    NLL of the rows with weight 1 (padding rows weigh 0); cached per (spec, config, precision, recipe)."""
    key = (spec_name, json.dumps(config, sort_keys=True), precision, recipe)
    if key not in _ADAPT_STEPS:
        apply = make_apply(spec_name, config, PRECISIONS[precision])

        def loss(params, rows, weight):
            nll = token_nll(apply(params, rows[:, :-1]), rows[:, 1:])
            return (nll * weight[:, None]).sum() / (weight.sum() * nll.shape[1])

        def step(params, buf, rows, weight):
            with jax.default_matmul_precision("highest"):
                grads = jax.grad(loss)(params, rows, weight)
            if recipe.grad_clip > 0:
                norm = jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in jax.tree.leaves(grads)))
                scale = jnp.minimum(1.0, recipe.grad_clip / (norm + 1e-6))
                grads = jax.tree.map(lambda g: g * scale, grads)
            buf = jax.tree.map(lambda b, g: recipe.momentum * b + g, buf, grads)
            params = jax.tree.map(lambda p, b: p - recipe.lr * b, params, buf)
            return params, buf

        _ADAPT_STEPS[key] = jax.jit(step)
    return _ADAPT_STEPS[key]


class JaxAdapter(JaxScorer):
    """A JaxScorer that also adapts (golfbench.harness.adapt.Adapter), the same update as the torch TorchAdapter:
    ``adapt(tokens int32 (n,))`` takes ``recipe.steps`` SGD steps on the mean NLL (nats) of
    ``adapt_rows(tokens, seq_len)`` (rows sharded over the devices, padding rows weighted 0), each: gradient
    clipped to global L2 norm ``recipe.grad_clip``, buf <- momentum * buf + g, w <- w - lr * buf (buffer kept
    across chunks); ``reset()`` restores the given weights and zeroes the buffer. Scoring never changes the weights.
    """

    def __init__(self, spec_name: str, config: dict, weights: dict[str, np.ndarray], precision: str, recipe):
        super().__init__(spec_name, config, weights, None, precision)
        self.recipe, self.seq_len = recipe, int(config["seq_len"])
        self.initial = self.params
        self.buf = jax.tree.map(jnp.zeros_like, self.params)
        self._step = _adapt_step(spec_name, config, precision, recipe)

    def _device_rows(self, tokens: np.ndarray) -> tuple[jax.Array, jax.Array]:
        """`adapt_rows` of ``tokens`` padded to the devices and placed: (rows int32 (R, T+1), weight float32 (R,))."""
        from golfbench.harness.adapt import adapt_rows

        rows = check_tokens(adapt_rows(tokens, self.seq_len), self.vocab_size)
        padded, n = self.place.pad_rows(rows)
        weight = (np.arange(len(padded)) < n).astype(np.float32)
        return self.place.put_rows(padded), self.place.put_rows(weight)

    def adapt(self, tokens: np.ndarray) -> None:
        """``recipe.steps`` SGD steps on ``tokens`` int (n >= 2,) (already scored: the evaluator guarantees it)."""
        device_rows, device_weight = self._device_rows(tokens)
        for _ in range(self.recipe.steps):
            self.params, self.buf = self._step(self.params, self.buf, device_rows, device_weight)

    def warm_adapt(self, lengths) -> None:
        """Compile the update for adapt() on token arrays of each of ``lengths`` (ints >= 2): two steps on all-zero
        tokens of that length (the second from the first's outputs, as adapt() chains them), results dropped, so
        the weights and the momentum do not change (called by the evaluator before its clock starts)."""
        shapes = set()
        for n in lengths:
            device_rows, device_weight = self._device_rows(np.zeros(int(n), dtype=np.int32))
            if device_rows.shape in shapes:
                continue
            shapes.add(device_rows.shape)
            out = self._step(self.params, self.buf, device_rows, device_weight)
            jax.block_until_ready(self._step(*out, device_rows, device_weight))

    def reset(self) -> None:
        """Back to the weights it was built with; momentum buffer zeroed."""
        self.params = self.initial
        self.buf = jax.tree.map(jnp.zeros_like, self.params)


BACKEND = JaxBackend()
