"""The PyTorch backend: implements golfbench.harness.backend.Backend for every model family registered in FAMILIES.

A family is a torch module whose ``state_dict()`` is the canonical weight dict (``forward(idx)`` -> logits,
``forward(idx, targets)`` -> mean cross-entropy) plus its optimizer recipe. To add one (e.g. megalodon), write
``backends/torch/<name>.py`` and one loader + one FAMILIES entry below; everything else here is shared.

CPU: fp32, deterministic (same seed + same batches -> bit-identical losses), eager unless ``GOLF_TORCH_COMPILE``
says otherwise (`compiled`). CUDA: bf16 autocast, compiled model, SDPA flash attention. Under torchrun the model
is wrapped in DDP and each rank trains on its rows of the global batch.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import datetime
import functools
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from golfbench.backends.torch import step
from golfbench.backends.torch.step import SummedNLL, TorchBatch
from golfbench.harness.code import CodeLayout
from golfbench.harness.distributed import SINGLE, as_f64, env_world_size
from golfbench.harness.errors import GolfError
from golfbench.harness.init import init_weights
from golfbench.harness.models import check_tokens, check_weights, get_spec

HERE = Path(__file__).resolve().parent
CHECKPOINT_FORMAT = "golfbench-torch-1"


@dataclass(frozen=True)
class Family:
    """A model family. ``build(config)`` runs on the meta device and is then filled by ``load_state_dict``:
    keep everything it needs in parameters (no buffers initialized in the constructor)."""

    build: Callable[[dict], nn.Module]
    optimizers: Callable[[nn.Module, dict], list[torch.optim.Optimizer]]
    before_update: Callable[[nn.Module, list, dict, int], None]  # after backward: schedules, clipping


def _llama() -> Family:
    from golfbench.backends.torch import llama, optim

    return Family(llama.GPT, optim.llama_optimizers, optim.llama_before_update)


def _megalodon() -> Family:
    from golfbench.backends.torch import megalodon, megalodon_optim

    return Family(megalodon.Megalodon, megalodon_optim.megalodon_optimizers, megalodon_optim.megalodon_before_update)


# Loaders, imported on first use, so one family's import error never blocks another.
FAMILIES: dict[str, Callable[[], Family]] = {"llama": _llama, "megalodon": _megalodon}


@cache
def family(spec_name: str) -> Family:
    """The Family of ``spec_name``, loaded (imported) on first use and cached. Raises GolfError for a model not in
    FAMILIES."""
    if spec_name not in FAMILIES:
        from golfbench.harness.plugins import get_plugin

        plugin = get_plugin(spec_name)
        if plugin is not None:  # plugin models run in torch only once this backend loads plugin families
            raise GolfError(
                f"model '{spec_name}' (package {plugin.source}) is not implemented in torch:"
                f" the torch backend runs only its built-in models ({', '.join(FAMILIES)})"
            )
        raise GolfError(f"the torch backend has no model '{spec_name}': choose one of {', '.join(FAMILIES)}")
    return FAMILIES[spec_name]()


@dataclass
class TorchState:
    """The opaque training state the harness holds for a torch run: the plain ``model`` (canonical state_dict),
    ``train_model`` (compiled where `compiled` says and/or DDP-wrapped: what a step calls), the family's
    ``optimizers``, the ``device``, this process's ``rank`` in a group of ``world`` and ``step``, the optimizer
    steps taken.
    """

    spec_name: str
    config: dict
    model: nn.Module  # the plain module: canonical state_dict, export, checkpoints
    train_model: Callable  # what the step calls: compiled and/or DDP-wrapped model
    optimizers: list[torch.optim.Optimizer]
    device: torch.device
    family: Family
    rank: int = 0
    world: int = 1
    step: int = 0
    compiled: bool = False  # train_model is torch.compile'd: batches keep one shape (step.prepare_batch pads)
    batch_rows: int = 0  # the full global batch's rows (the largest seen: warm-up runs a full batch)


def _world() -> tuple[int, int]:
    """(rank, world size): joins the launcher's process group on first use when WORLD_SIZE > 1, else (0, 1).

    On GPUs the group is bound to this process's device (`_device`, made current first): NCCL then never guesses
    a device, and every collective of the group runs on cuda:LOCAL_RANK.
    """
    if env_world_size() <= 1 or not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        device = _device()
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(_leave_group)
    return dist.get_rank(), dist.get_world_size()


def _leave_group() -> None:
    """At exit, leave the group in order: otherwise a rank can die of SIGABRT in C++ teardown ("terminate called
    without an active exception", gloo's store thread; about 1 exit in 7 on CPU) after finishing its work, and
    the launcher would report a failed process; NCCL would warn."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:  # every rank done with every collective before any rank closes its sockets (bounded: a dead peer
        # must not hang the exit; torchrun ends the group anyway)
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(seconds=30))
        else:
            dist.barrier()
    except Exception:  # noqa: BLE001 - leaving anyway
        pass
    dist.destroy_process_group()


class TorchCollective:
    """golfbench.harness.distributed.Collective over torch.distributed (gloo on CPU, NCCL on CUDA).

    A sum is an all-gather followed by a sum in rank order, so every rank gets the same bits whatever the
    transport's reduction order.
    """

    def __init__(self) -> None:
        self.rank, self.world_size = _world()
        self.device = _device()  # the group's device: float64 control values travel on cuda:LOCAL_RANK under NCCL

    def all_reduce_sum(self, values: np.ndarray) -> np.ndarray:
        """float64 (n,) -> float64 (n,), the same on every rank."""
        mine = torch.from_numpy(as_f64(values)).to(self.device)
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        # added row by row from rank 0: np.sum would start from +0.0 and turn a sum of -0.0s into +0.0
        return functools.reduce(np.add, [p.cpu().numpy() for p in parts])

    def broadcast(self, values: np.ndarray) -> np.ndarray:
        """Rank 0's float64 (n,) on every rank."""
        t = torch.from_numpy(as_f64(values).copy()).to(self.device)
        dist.broadcast(t, src=0)
        return t.cpu().numpy()

    def step_sync(self, control: np.ndarray, loss) -> tuple[np.ndarray, float]:
        """Rank 0's ``control`` float64 (k,) and the step's global loss in one all-gather and one device-to-host
        read (the step's only host sync). ``loss`` is the step's PendingLoss (this rank's share, on the device)
        or a float; the shares are summed in float32 in rank order. Returns (control float64 (k,), loss)."""
        values = as_f64(control)
        k = len(values)
        ctrl = torch.from_numpy(values if self.rank == 0 else np.zeros(k))
        if self.device.type == "cuda":  # pinned + non_blocking: the copy waits for nothing on the host
            ctrl = ctrl.pin_memory()
        share = getattr(loss, "share", None)
        share = share.detach() if share is not None else torch.tensor(float(loss))
        mine = torch.cat([ctrl.to(self.device, non_blocking=True), share.reshape(1).to(self.device, torch.float64)])
        parts = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(parts, mine)
        rows = torch.stack(parts).cpu().numpy()
        total = functools.reduce(np.add, [np.float32(r[k]) for r in rows])
        return rows[0, :k].copy(), float(total)


def _device() -> torch.device:
    """This process's device, the one place that chooses it: cuda:LOCAL_RANK on GPUs (made current with
    ``torch.cuda.set_device``; torchrun leaves every GPU of the node visible to every process, so nothing may use
    ``current_device()`` before this runs), else the CPU (with deterministic kernels). The process group, the
    harness collective, models, batches and scorers all take their device from here. Idempotent. Raises GolfError
    when LOCAL_RANK names a GPU that is not visible.
    """
    if torch.cuda.is_available():
        local_rank, visible = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if not 0 <= local_rank < visible:
            raise GolfError(
                f"process LOCAL_RANK={local_rank} has no GPU: {visible} visible; use --nproc-per-node {visible} or fewer"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device
    # CPU runs must reproduce bit for bit; the deterministic kernels cost little on CPU. Deterministic mode also
    # fills every new tensor with NaN (a debugging aid that changes no result of a correct kernel); on the CPU that
    # fill was ~15% of a megalodon scoring pass (bench/devloop.py), so it is off.
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    return torch.device("cpu")


COMPILE_ENV = "GOLF_TORCH_COMPILE"


def compiled(fn: Callable, device: torch.device, **options) -> Callable:
    """``fn`` under ``torch.compile(fn, backend=..., **options)`` where ``GOLF_TORCH_COMPILE`` asks for it, else ``fn``.

    Unset: compiled on CUDA only (CPU runs stay eager and bit-reproducible); "0": never; "1": on any device
    (inductor); another value: on any device with that torch.compile backend ("eager"/"aot_eager": dynamo traces
    and recompiles as inductor would, without code generation). Raises GolfError for an unknown backend name.
    """
    mode = compile_setting()
    if mode == "0" or (mode == "" and device.type != "cuda"):
        return fn
    backend = "inductor" if mode in ("", "1") else mode
    return torch.compile(fn, backend=backend, **options)


def compile_setting() -> str:
    """``GOLF_TORCH_COMPILE`` as set ("" when unset), checked: GolfError for a value that is neither 0, 1 nor a
    torch.compile backend name."""
    mode = os.environ.get(COMPILE_ENV, "")
    if mode not in ("", "0", "1") and mode not in torch._dynamo.list_backends(exclude_tags=()):
        raise GolfError(f"{COMPILE_ENV}={mode} is no torch.compile backend: use 0, 1, eager, aot_eager or inductor")
    return mode


@contextlib.contextmanager
def _autocast(device: torch.device, enabled: bool = True):
    if device.type != "cuda" or not enabled:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # flash first (parameter-golf disables cuDNN attention); the others only where flash cannot run
    with (
        sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]),
        torch.autocast("cuda", dtype=torch.bfloat16),
    ):
        yield


def _score_autocast(device: torch.device, bf16: bool):
    """The scorer's bf16 mode on any device: CUDA as in training (_autocast), elsewhere torch.autocast on the
    CPU (bf16 matmul inputs, fp32 accumulation); a no-op for fp32."""
    if not bf16:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return _autocast(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _build_model(spec_name: str, config: dict, weights: dict, device: torch.device) -> nn.Module:
    """Built on the meta device (no wasted random init) and filled with the given canonical weights."""
    with torch.device("meta"):
        model = family(spec_name).build(config)
    model = model.to_empty(device=device)
    tensors = {
        k: torch.as_tensor(np.asarray(v, dtype=np.float32)) if isinstance(v, np.ndarray) else v
        for k, v in weights.items()
    }
    with torch.no_grad():
        model.load_state_dict(tensors, strict=True)
    return model


def _tokens(batch: np.ndarray, vocab_size: int, device: torch.device) -> torch.Tensor:
    batch = check_tokens(batch, vocab_size)
    t = torch.from_numpy(batch.astype(np.int64))
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


class TorchScorer:
    """Per-token NLL (nats) and full next-token log-distributions from a model in eval mode.

    ``precision`` is a track rule (``eval_precision``) with the same meaning as the JAX scorer's:
    "fp32" (default) = fp32 everywhere (no TF32); "bf16" = the forward under ``torch.autocast(bfloat16)`` on
    any device (CPU included): every matmul takes bf16 inputs and accumulates in fp32, projection and attention
    outputs are rounded to bf16, the residual stream stays fp32, the attention softmax is fp32 inside SDPA,
    the LM head gives fp32 logits from bf16 inputs (``exact_logits``), and softcap, log-softmax and
    log-sum-exp run in fp32. (Elementwise ops on bf16 activations, e.g. llama's q/k RMS norm and RoPE, stay
    in bf16 under autocast where JAX computes them in fp32 and rounds once; tests/test_eval_precision.py
    measures the effect.) Rows are scored in chunks of at most ``max_tokens`` tokens so memory stays
    bounded whatever batch the evaluator sends (default: 65,536 on CUDA, 4,096 on the CPU). Raises GolfError for
    an unknown precision.
    """

    def __init__(
        self,
        model: nn.Module,
        vocab_size: int,
        device: torch.device,
        precision: str = "fp32",
        max_tokens: int | None = None,
    ):
        if precision not in ("fp32", "bf16"):
            raise GolfError(f"unknown scorer precision '{precision}': use fp32 or bf16")
        self.model, self.vocab_size, self.device = model.eval(), vocab_size, device
        self.amp = precision == "bf16"
        self.precision = precision
        model.exact_logits = True  # fp32 logits from bf16 inputs under autocast (the models' lm_head)
        # Rows are independent (the same bits whatever the chunk), so the chunk is a speed knob only. On the CPU
        # 4,096 tokens (16 windows of 256) keep the (rows, T, V) logits in cache: llama/tiny scored ~25% faster
        # per window than at 8,192+ (bench/devloop.py); on GPUs bigger batches win.
        self.max_tokens = max_tokens or (1 << 16 if device.type == "cuda" else 1 << 12)
        self._forward = compiled(model, device)

    def _logprobs(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _score_autocast(self.device, self.amp):
            return torch.log_softmax(self._forward(inputs).float(), dim=-1)

    def _chunks(self, n_rows: int, seq_len: int):
        step = max(1, self.max_tokens // seq_len)
        return (slice(i, min(i + step, n_rows)) for i in range(0, n_rows, step))

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        t = _tokens(tokens, self.vocab_size, self.device)
        out = np.empty((t.size(0), t.size(1) - 1), dtype=np.float32)
        for rows in self._chunks(t.size(0), t.size(1) - 1):
            lp = self._logprobs(t[rows, :-1])
            out[rows] = (-lp.gather(-1, t[rows, 1:, None]).squeeze(-1)).cpu().numpy()
        return out

    def logprobs(self, tokens: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Log-probabilities float32 (n, V) of the token after each (row, t) of ``positions`` int (n, 2), for tokens
        int (B, T+1). Raises ValueError for a position outside the batch and GolfError for a token id outside the
        vocab.
        """
        t = _tokens(tokens, self.vocab_size, self.device)
        pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
        if len(pos) and (pos.min() < 0 or pos[:, 0].max() >= t.size(0) or pos[:, 1].max() >= t.size(1) - 1):
            raise ValueError(f"positions must be (row, t) with row < {t.size(0)} and t < {t.size(1) - 1}")
        out = np.empty((len(pos), self.vocab_size), dtype=np.float32)
        rows = np.unique(pos[:, 0])
        for chunk in self._chunks(len(rows), t.size(1) - 1):
            lp = self._logprobs(t[torch.from_numpy(rows[chunk]).to(self.device), :-1]).cpu().numpy()
            for k, row in enumerate(rows[chunk]):
                hit = pos[:, 0] == row
                out[hit] = lp[k, pos[hit, 1]]
        return out


class TorchAdapter(TorchScorer):
    """A TorchScorer that also adapts (golfbench.harness.adapt.Adapter): ``adapt(tokens int32 (n,))`` takes
    ``recipe.steps`` SGD steps on the mean NLL (nats) of ``adapt_rows(tokens, seq_len)``, each step: gradient
    over all rows (summed over micro-batches of at most ``max_tokens``), clipped to global L2 norm
    ``recipe.grad_clip``, then buf <- momentum * buf + g and w <- w - lr * buf (torch.optim.SGD's momentum rule,
    buffer kept across chunks); ``reset()`` restores the given weights and zeroes the buffer. Scoring never
    changes the weights. The forward runs under the scorer's precision (bf16 autocast for "bf16"). The recipe is
    the harness's (golfbench.harness.adapt.AdaptRecipe), the same update as the JAX backend's JaxAdapter.
    """

    def __init__(self, model: nn.Module, config: dict, device: torch.device, precision: str, recipe):
        super().__init__(model, config["vocab_size"], device, precision)
        self.recipe, self.seq_len = recipe, int(config["seq_len"])
        self.params = [p for p in model.parameters()]
        self.initial = [p.detach().clone() for p in self.params]
        self.buf = [torch.zeros_like(p) for p in self.params]

    def adapt(self, tokens: np.ndarray) -> None:
        """``recipe.steps`` SGD steps on ``tokens`` int (n >= 2,) (already scored: the evaluator guarantees it)."""
        from golfbench.harness.adapt import adapt_rows

        rows = _tokens(adapt_rows(tokens, self.seq_len), self.vocab_size, self.device)
        n_targets = rows.size(0) * (rows.size(1) - 1)
        r = self.recipe
        for _ in range(r.steps):
            for p in self.params:
                p.grad = None
            for part in self._chunks(rows.size(0), rows.size(1) - 1):
                chunk = rows[part]
                with _score_autocast(self.device, self.amp):
                    loss = self.model(chunk[:, :-1], chunk[:, 1:])
                (loss * (chunk.size(0) * (chunk.size(1) - 1) / n_targets)).backward()
            with torch.no_grad():
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
                if r.grad_clip > 0:
                    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).float()
                    scale = torch.clamp(r.grad_clip / (norm + 1e-6), max=1.0)
                    grads = [g * scale for g in grads]
                for p, g, b in zip(self.params, grads, self.buf):
                    b.mul_(r.momentum).add_(g)
                    p.sub_(r.lr * b)
        for p in self.params:
            p.grad = None

    def reset(self) -> None:
        """Back to the weights it was built with; momentum buffer zeroed."""
        with torch.no_grad():
            for p, w, b in zip(self.params, self.initial, self.buf):
                p.copy_(w)
                b.zero_()


class TorchBackend:
    """The harness's Backend for PyTorch (golfbench.harness.backend.Backend): train, export, score and checkpoint."""

    name = "torch"

    def models(self) -> list[str]:
        """Spec names this backend implements (the FAMILIES keys)."""
        return list(FAMILIES)

    def devices(self) -> dict[str, Any]:
        """What this run uses, for its hardware class: one device per process, so ``count`` is the world size
        (WORLD_SIZE, 1 without a launcher), never the GPUs the node makes visible. {"kind": "cuda", "count",
        "names": [this process's device name], "world_size"} on GPUs (the processes of a group are assumed alike),
        or {"kind": "cpu", "count", "names", "threads", "world_size"} (CPU results are bit-reproducible for a given
        thread count, so it is recorded).
        """
        world = env_world_size()
        if torch.cuda.is_available():
            return {
                "kind": "cuda",
                "count": world,
                "names": [torch.cuda.get_device_name(_device())],
                "world_size": world,
            }
        return {
            "kind": "cpu",
            "count": world,
            "names": [platform.processor() or platform.machine()],
            "threads": torch.get_num_threads(),
            "world_size": world,
        }

    # -- training ------------------------------------------------------------------------------------------

    def check_settings(self) -> dict[str, str]:
        """The environment settings that change a torch run's numbers, checked before anything is written:
        {"GOLF_TORCH_COMPILE": value} when set. Raises GolfError for an unknown value (`compile_setting`)."""
        mode = compile_setting()
        return {COMPILE_ENV: mode} if mode else {}

    def collective(self):
        """The torchrun process group as a harness Collective (joined on first call), or SINGLE."""
        if env_world_size() <= 1:
            return SINGLE
        return TorchCollective()

    def init(self, spec_name: str, config: dict, seed: int) -> TorchState:
        """Model + optimizers from the canonical initial weights of ``seed``; DDP-wrapped when the process is
        one of a process group (WORLD_SIZE > 1)."""
        torch.manual_seed(seed)
        return self._new_state(spec_name, config, init_weights(get_spec(spec_name), config, seed))

    def _new_state(self, spec_name: str, config: dict, weights: dict) -> TorchState:
        fam = family(spec_name)
        rank, world = _world()
        device = _device()
        model = _build_model(spec_name, config, weights, device)
        # what a step calls: model + softcap + cross-entropy in one module, so the loss is in the compiled graph
        wrapper = SummedNLL(model)
        train_model: Callable = compiled(wrapper, device, dynamic=False)
        is_compiled = train_model is not wrapper
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(train_model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizers = fam.optimizers(model, config)
        return TorchState(
            spec_name, dict(config), model, train_model, optimizers, device, fam, rank, world, compiled=is_compiled
        )

    def prepare_batch(self, state: TorchState, batch: np.ndarray) -> TorchBatch:
        """This rank's device tensors for the global ``batch`` int32 (B, T+1) (token ids already checked: a
        BatchStream checks each shard when it loads it); backends/torch/step.py prepare_batch. The runner prepares
        step k+1's batch while step k runs."""
        return step.prepare_batch(state, batch)

    def train_step(self, state: TorchState, batch, lr_scale: float) -> tuple[TorchState, dict]:
        """One optimizer step on ``batch`` (a TorchBatch from `prepare_batch`, or a global int32 (B, T+1) array);
        this rank trains on its share of rows (backends/torch/step.py train_step). Returns (state, {"loss":
        PendingLoss}): the mean NLL over the real rows of the global batch, still on the device (``float()`` reads
        it; the runner reads it in ``TorchCollective.step_sync``)."""
        return step.train_step(state, batch, lr_scale, _autocast)

    def warmup(self, state: TorchState, batch: np.ndarray, steps: int = 2) -> TorchState:
        """Primes compilation and allocator with real steps, then puts back the exact pre-warmup state."""
        model_state = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
        opt_states = [copy.deepcopy(opt.state_dict()) for opt in state.optimizers]
        step = state.step
        for _ in range(steps):
            self.train_step(state, batch, 1.0)
        with torch.no_grad():
            state.model.load_state_dict(model_state, strict=True)
        for opt, saved in zip(state.optimizers, opt_states, strict=True):
            opt.load_state_dict(saved)
        state.step = step
        return state

    def export(self, state: TorchState) -> dict[str, np.ndarray]:
        """The model's weights as fp32 numpy arrays under the spec's canonical names and shapes (copies)."""
        sd = state.model.state_dict()
        return {
            name: sd[name].detach().float().cpu().numpy().copy()
            for name in get_spec(state.spec_name).shapes(state.config)
        }

    def input_hessians(self, state: TorchState, batches: list[np.ndarray]) -> dict[str, np.ndarray]:
        """GPTQ's per-layer input Hessians (Backend.input_hessians): for every ``nn.Linear`` whose weight is a
        canonical tensor, H = Σ x xᵀ (float64 (in, in)) over every input row x that reaches it while the plain
        model runs forward, in fp32 with no autocast, on ``batches`` (int32 (B, T+1) each; the inputs are
        ``[:, :-1]``). Forward pre-hooks on those modules; weights used outside an ``nn.Linear`` (a tied LM head,
        an embedding) get none. Each product is taken in fp32 per micro-batch and summed in float64.
        """
        canonical = set(get_spec(state.spec_name).shapes(state.config))
        sums: dict[str, torch.Tensor] = {}
        handles = []

        def hook_for(name: str):
            def hook(module, args):
                x = args[0].detach().float().reshape(-1, args[0].shape[-1])
                part = (x.T @ x).double()
                sums[name] = sums[name] + part if name in sums else part

            return hook

        for prefix, module in state.model.named_modules():
            if isinstance(module, nn.Linear) and f"{prefix}.weight" in canonical:
                handles.append(module.register_forward_pre_hook(hook_for(f"{prefix}.weight")))
        try:
            with torch.no_grad():
                for batch in batches:
                    tokens = _tokens(batch, state.config["vocab_size"], state.device)
                    rows = step.micro_rows(state, tokens.shape)
                    for r0 in range(0, tokens.shape[0], rows):
                        state.model(tokens[r0 : r0 + rows, :-1])
        finally:
            for h in handles:
                h.remove()
        return {name: h.cpu().numpy() for name, h in sorted(sums.items())}

    # -- evaluation ----------------------------------------------------------------------------------------

    def scorer(
        self, spec_name: str, config: dict, weights: dict[str, np.ndarray], precision: str = "fp32"
    ) -> TorchScorer:
        """A TorchScorer for ``weights`` (canonical names, fp32) at ``precision`` ("fp32" or "bf16", the track's
        eval_precision), on this process's device. Raises GolfError for weights whose names or shapes differ from
        the spec's, an unknown model or an unknown precision.
        """
        check_weights(get_spec(spec_name), config, weights)
        device = _device()
        model = _build_model(spec_name, config, weights, device)
        return TorchScorer(model, config["vocab_size"], device, precision)

    def adapter(
        self, spec_name: str, config: dict, weights: dict[str, np.ndarray], precision: str = "fp32", recipe=None
    ) -> TorchAdapter:
        """A TorchAdapter (score-first TTT, golfbench.harness.adapt) for ``weights`` at ``precision`` with the
        harness's ``recipe`` (an AdaptRecipe). Works for every family (it trains on the model's own loss).
        Raises GolfError as `scorer`."""
        check_weights(get_spec(spec_name), config, weights)
        device = _device()
        model = _build_model(spec_name, config, weights, device)
        return TorchAdapter(model, config, device, precision, recipe)

    def compiler_flops(self, state: TorchState, batch: np.ndarray) -> float:
        """FlopCounterMode's count for one training step of the global ``batch`` int32 (B, T+1), in FLOPs.

        Counts one forward+backward of a single row on an eager copy of the model and scales by B (every
        counted op is linear in the rows), so the cross-check never holds more than one sequence's
        activations: llama/baseline at 524,288 tokens/step peaks well under 4 GB on a CPU (tests/test_flops.py).
        The copy keeps the live state untouched and sees no compiled graphs or DDP hooks. torch counts SDPA
        as full (non-causal) attention.
        """
        from torch.utils import flop_counter

        # torch registers the CUDA attention kernels only; give the CPU flash kernels the same formulas
        aten = torch.ops.aten
        cpu_sdpa = {
            "_scaled_dot_product_flash_attention_for_cpu": lambda q, k, v, *_, **__: flop_counter.sdpa_flop_count(
                q, k, v
            ),
            "_scaled_dot_product_flash_attention_for_cpu_backward": lambda g, q, k, v, *_, **__: (
                flop_counter.sdpa_backward_flop_count(g, q, k, v)
            ),
        }
        mapping = {getattr(aten, op): fn for op, fn in cpu_sdpa.items() if hasattr(aten, op)}
        model = copy.deepcopy(state.model)
        tokens = _tokens(np.asarray(batch)[:1], state.config["vocab_size"], state.device)
        with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter, _autocast(state.device):
            model(tokens[:, :-1], tokens[:, 1:]).backward()
        return float(counter.get_total_flops()) * int(np.asarray(batch).shape[0])

    # -- checkpoints ---------------------------------------------------------------------------------------

    def save_checkpoint(self, state: TorchState, path: Path) -> None:
        """Write model, optimizer states, step, spec and config to ``path`` with torch.save, atomically (temp file,
        rename), on rank 0 only; every rank then waits at a barrier. Under torch.distributed every rank must call
        it: Muon's momenta are spread over the ranks and gathered first (``Muon.full_state_dict``), so the file is
        complete and loads on any world size.
        """
        from golfbench.backends.torch.muon import Muon

        path = Path(path)
        # a collective on every rank; model and Adam states are replicated
        optimizers = [opt.full_state_dict() if isinstance(opt, Muon) else opt.state_dict() for opt in state.optimizers]
        if state.rank == 0:
            payload = {
                "format": CHECKPOINT_FORMAT,
                "spec": state.spec_name,
                "config": state.config,
                "step": state.step,
                "model": state.model.state_dict(),
                "optimizers": optimizers,
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
            try:
                torch.save(payload, tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        if state.world > 1:
            dist.barrier()

    def load_checkpoint(self, path: Path, spec_name: str, config: dict) -> TorchState:
        """The state saved at ``path`` (loaded with ``weights_only=True``: no arbitrary unpickling), rebuilt for this
        process (device, compilation, DDP); each rank keeps the Muon momenta of its own matrices. Raises GolfError
        for a missing or unreadable file, one not written by this backend, or one made for another spec or config
        (naming the differing keys).
        """
        try:
            payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise GolfError(f"checkpoint {path} does not exist") from None
        except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
            raise GolfError(f"checkpoint {path} is not a readable torch checkpoint ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise GolfError(f"checkpoint {path} was not written by the golfbench torch backend")
        if payload["spec"] != spec_name or payload["config"] != dict(config):
            changed = sorted(
                k for k in set(payload["config"]) | set(config) if payload["config"].get(k) != config.get(k)
            )
            raise GolfError(
                f"checkpoint {path} is for {payload['spec']} with another config (differs in {changed[:5]}): "
                "resume with the run's original model and preset"
            )
        state = self._new_state(spec_name, config, payload["model"])
        for opt, saved in zip(state.optimizers, payload["optimizers"], strict=True):
            opt.load_state_dict(saved)
        state.step = int(payload["step"])
        return state

    def code_layout(self) -> CodeLayout:
        """This package's source files under the harness's one code-bytes rule (harness/code.py)."""
        return CODE_LAYOUT

    def code_files(self, spec_name: str) -> list[Path]:
        """Shared files + the model's own: the bytes that count toward the cap for ``spec_name``."""
        family(spec_name)  # an unknown model is refused with the backend's own message
        return CODE_LAYOUT.files(spec_name)


# Everything a torch run executes is shared (step, optimizers, Muon, scorer, launcher); each model adds its own.
CODE_LAYOUT = CodeLayout(
    root=HERE,
    shared=("__init__.py", "backend.py", "launcher.py", "muon.py", "optim.py", "step.py"),
    models={"llama": ("llama.py",), "megalodon": ("megalodon.py", "megalodon_optim.py")},
)

BACKEND = TorchBackend()
