"""A stand-in for 8 CUDA devices on a CPU-only torch, injected into launched processes by a ``sitecustomize.py``.

tests/test_torch_devices.py writes ``sitecustomize.py`` (``import fake_cuda; fake_cuda.install()``) into a temp
folder and puts it and tests/ on PYTHONPATH, so every torchrun child of a `golf run|eval --nproc-per-node N`
loads this before the harness: no hook in production code. Only processes started by a launcher (LOCAL_RANK
set) with ``GOLF_FAKE_CUDA_LOG`` naming a folder are changed.

What it fakes:
- ``torch.cuda``: available, ``device_count()`` 8, ``set_device`` recorded, ``current_device()`` the last one set
  (0 before any, as CUDA), every device named ``FAKE_NAME``.
- Placement: a TorchFunctionMode turns every request for a cuda device (a ``device=`` argument, ``.to(...)``,
  ``.cuda()``, ``to_empty``) into CPU storage tagged with the device asked for; results of an op on tagged tensors
  carry the first input's tag; ``.device``, ``.is_cuda`` and ``get_device()`` report the tag. ``.cpu()`` drops it;
  ``.numpy()`` of a tagged tensor raises as CUDA does. ``pin_memory`` is a no-op.
- ``torch.compile``: the identity (compilation is not what is tested).
- ``torch.distributed``: ``init_process_group`` records its backend and ``device_id``, then joins over gloo;
  every collective records the device of every tensor it is given, then runs on gloo (CPU storage).
  ``DistributedDataParallel`` records its ``device_ids`` and its parameters' devices, then wraps with none
  (the CPU reducer).

Records: one JSON object per line in ``$GOLF_FAKE_CUDA_LOG/<RANK>-<pid>.jsonl``, in call order, each with
``event`` (``set_device`` | ``init_process_group`` | ``collective`` | ``ddp``, and at exit ``placements``: every cuda
device any tensor of the process claimed), ``rank`` and ``local_rank``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os

FAKE_NAME = "NVIDIA H100 80GB HBM3"
FAKE_COUNT = 8
LOG_ENV = "GOLF_FAKE_CUDA_LOG"
TAG = "_fake_cuda_device"

# Collectives of torch.distributed that take tensors (the public ones and those DDP calls itself).
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_to_all",
    "all_to_all_single",
    "broadcast",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "gather",
    "scatter",
    "send",
    "recv",
    "isend",
    "irecv",
    "barrier",
    "monitored_barrier",
    "all_gather_object",
    "broadcast_object_list",
    "gather_object",
    "scatter_object_list",
    "all_reduce_coalesced",
    "_broadcast_coalesced",
)


class _Log:
    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, f"{os.environ.get('RANK', '0')}-{os.getpid()}.jsonl")

    def write(self, **record) -> None:
        record.update(rank=int(os.environ.get("RANK", "0")), local_rank=int(os.environ.get("LOCAL_RANK", "0")))
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def install() -> None:
    """Patch torch in this process when it was started by a launcher and GOLF_FAKE_CUDA_LOG is set; else nothing."""
    folder = os.environ.get(LOG_ENV)
    if not folder or "LOCAL_RANK" not in os.environ:
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what the harness sets before torch loads
    _install(_Log(folder))


def _install(log: _Log) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.parallel
    from torch.overrides import TorchFunctionMode

    state = {"current": None}

    # -- torch.cuda ------------------------------------------------------------------------------------------
    def set_device(device) -> None:
        index = device.index if isinstance(device, torch.device) else int(str(device).rsplit(":", 1)[-1])
        state["current"] = index
        log.write(event="set_device", device=f"cuda:{index}")

    cuda = torch.cuda
    cuda.is_available = lambda: True
    cuda.device_count = lambda: FAKE_COUNT
    cuda.current_device = lambda: state["current"] or 0
    cuda.set_device = set_device
    cuda.get_device_name = lambda device=None: FAKE_NAME
    cuda.is_bf16_supported = lambda *a, **k: True
    cuda.synchronize = lambda device=None: None
    torch.compile = lambda model=None, **kw: model if model is not None else (lambda m: m)

    # -- placement ---------------------------------------------------------------------------------------------
    def as_device(value):
        """A cuda torch.device for a cuda request (index filled in), torch.device('cpu') for cpu, else None."""
        if isinstance(value, (str, torch.device)):
            d = torch.device(value)
            if d.type == "cuda":
                return torch.device("cuda", d.index if d.index is not None else cuda.current_device())
            return d
        return None

    def tag_of(t):
        return t.__dict__.get(TAG) if isinstance(t, torch.Tensor) else None

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, (list, tuple)):
            for o in obj:
                yield from tensors(o)
        elif isinstance(obj, dict):
            for o in obj.values():
                yield from tensors(o)

    getters = {"device": torch.Tensor.device, "is_cuda": torch.Tensor.is_cuda}

    class FakeCuda(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            name = getattr(func, "__name__", "")
            owner = getattr(func, "__self__", None)
            if name == "__get__" and owner is getters["device"]:
                return tag_of(args[0]) or func(*args, **kwargs)
            if name == "__get__" and owner is getters["is_cuda"]:
                return tag_of(args[0]) is not None or func(*args, **kwargs)
            if name == "__set__" and owner is torch.Tensor.data:
                func(*args, **kwargs)
                args[0].__dict__[TAG] = tag_of(args[1])
                return None
            if func is torch.Tensor.get_device:
                tag = tag_of(args[0])
                return tag.index if tag is not None else func(*args, **kwargs)
            if func in (torch.Tensor.pin_memory, torch.Tensor.is_pinned):
                return args[0] if func is torch.Tensor.pin_memory else False
            if func is torch.Tensor.numpy and tag_of(args[0]) is not None:
                raise TypeError(
                    f"can't convert {tag_of(args[0])} device type tensor to numpy. Use Tensor.cpu() to copy the"
                    " tensor to host memory first."
                )
            target = None  # the device this call asks for: cuda -> run on CPU and tag; cpu -> untag
            if "device" in kwargs:
                target = as_device(kwargs["device"])
                if target is not None:
                    kwargs["device"] = "cpu"
            if func is torch.Tensor.cuda:
                target = as_device(f"cuda:{args[1]}" if len(args) > 1 else "cuda")
                func, args = torch.Tensor.to, (args[0], "cpu")
            elif func is torch.Tensor.cpu:
                target = torch.device("cpu")
            elif func is torch.Tensor.to and len(args) > 1:
                d = as_device(args[1])
                if d is not None:
                    target, args = d, (args[0], "cpu", *args[2:])
                elif isinstance(args[1], torch.Tensor):
                    target = tag_of(args[1]) or torch.device("cpu")
            out = func(*args, **kwargs)
            if target is None and args and isinstance(args[0], torch.Tensor) and out is args[0]:
                return out  # in place (copy_, add_, ...): the tensor stays where it is
            if target is None:
                target = next((tag_of(t) for t in tensors((args, kwargs)) if tag_of(t) is not None), None)
            elif (
                func is torch.Tensor.to
                and out is args[0]
                and tag_of(out) != (target if target.type == "cuda" else None)
            ):
                out = out.clone()  # a move copies
            cuda_target = target if target is not None and target.type == "cuda" else None
            for t in tensors(out):
                t.__dict__[TAG] = cuda_target
            if cuda_target is not None:
                placed.add(str(cuda_target))
            return out

    placed: set[str] = set()  # every cuda device a tensor claimed, written at exit
    atexit.register(lambda: log.write(event="placements", devices=sorted(placed)))
    mode = FakeCuda()
    mode.__enter__()  # for the life of the process

    # -- torch.distributed ------------------------------------------------------------------------------------
    real_init = dist.init_process_group

    @functools.wraps(real_init)
    def init_process_group(backend=None, *args, device_id=None, **kwargs):
        log.write(event="init_process_group", backend=backend, device_id=None if device_id is None else str(device_id))
        return real_init("gloo", *args, **kwargs)

    dist.init_process_group = init_process_group

    def recording(name, real):
        @functools.wraps(real)
        def call(*args, **kwargs):
            found = [str(t.device) for t in tensors((args, kwargs))]
            log.write(event="collective", op=name, devices=found, **device_ids(kwargs))
            return real(*args, **kwargs)

        return call

    def device_ids(kwargs):
        return {"device_ids": list(kwargs["device_ids"])} if kwargs.get("device_ids") else {}

    for name in COLLECTIVES:
        if hasattr(dist, name):
            setattr(dist, name, recording(name, getattr(dist, name)))

    real_ddp = torch.nn.parallel.DistributedDataParallel

    class RecordingDDP(real_ddp):
        def __init__(self, module, device_ids=None, *args, **kwargs):
            params = sorted({str(p.device) for p in module.parameters()})
            log.write(event="ddp", device_ids=list(device_ids) if device_ids else None, param_devices=params)
            super().__init__(module, None, *args, **kwargs)

    torch.nn.parallel.DistributedDataParallel = RecordingDDP
