"""The hardware class is what ran: devices used × part name, the way tracks write it (harness/hardware.py), and
the torch backend reports the devices its processes use, not the GPUs the node makes visible."""

from __future__ import annotations

import pytest

from golfbench.harness.errors import GolfError
from golfbench.harness.hardware import PARTS, hardware_class, part_name
from golfbench.harness.records import hardware
from golfbench.harness.tracks import load_track

# Device names as torch.cuda.get_device_name (and JAX's device_kind) report them -> the class, written by hand.
CLASSES = [
    ("cuda", 8, "NVIDIA H100 80GB HBM3", "8xH100-SXM"),
    ("cuda", 1, "NVIDIA H100 80GB HBM3", "1xH100-SXM"),
    ("cuda", 4, "NVIDIA H100 PCIe", "4xH100-PCIe"),
    ("cuda", 2, "NVIDIA H100 NVL", "2xH100-NVL"),
    ("cuda", 8, "NVIDIA H200", "8xH200-SXM"),
    ("cuda", 1, "NVIDIA H200 NVL", "1xH200-NVL"),
    ("cuda", 8, "NVIDIA A100-SXM4-80GB", "8xA100-SXM-80GB"),
    ("cuda", 8, "NVIDIA A100-SXM4-40GB", "8xA100-SXM-40GB"),
    ("cuda", 2, "NVIDIA A100 80GB PCIe", "2xA100-PCIe-80GB"),
    ("cuda", 1, "NVIDIA A100-PCIE-40GB", "1xA100-PCIe-40GB"),
    # unknown names pass through cleaned
    ("cuda", 1, "NVIDIA GeForce RTX 4090", "1xGeForce-RTX-4090"),
    ("cuda", 4, "Tesla V100-SXM2-16GB", "4xTesla-V100-SXM2-16GB"),
    ("tpu", 8, "TPU v4", "8xTPU-v4"),
    ("cuda", 1, "  NVIDIA  L4 ", "1xL4"),
    ("gpu", 2, None, "2xgpu"),
    ("cpu", 2, "x86_64", "cpu"),
]


@pytest.mark.parametrize("kind, count, name, expected", CLASSES)
def test_hardware_class_of_device_names(kind, count, name, expected):
    assert hardware_class(kind, count, name) == expected
    assert hardware({"kind": kind, "count": count, "names": [name] if name else []})["class"] == expected


def test_every_part_in_the_table_is_a_clean_name():
    assert len(PARTS) == 9 and all(" " not in p and not p.startswith("NVIDIA") for p in PARTS.values())
    assert part_name("NVIDIA H100 80GB HBM3") == "H100-SXM" and part_name("") == "unknown"
    with pytest.raises(ValueError, match="at least one device"):
        hardware_class("cuda", 0, "NVIDIA H200")


def test_eight_h100_sxm_processes_are_the_wallclock_tracks_hardware():
    track = load_track("wallclock-10min").scale("official")["hardware"]
    assert track == "8xH100-SXM"
    assert hardware({"kind": "cuda", "count": 8, "names": ["NVIDIA H100 80GB HBM3"], "world_size": 8})["class"] == track


@pytest.fixture
def eight_gpus(monkeypatch):
    """torch.cuda as on an 8-GPU node (torch only: nothing runs on them); returns the set_device calls."""
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: f"NVIDIA H100 80GB HBM3 #{torch.device(d).index}")
    monkeypatch.setattr(
        "golfbench.harness.hardware.PARTS", {f"NVIDIA H100 80GB HBM3 #{i}": "H100-SXM" for i in range(8)}
    )
    return calls


@pytest.mark.parametrize("world, local_rank, expected", [(None, None, "1xH100-SXM"), ("8", "3", "8xH100-SXM")])
def test_torch_devices_are_the_processes_not_the_visible_gpus(eight_gpus, monkeypatch, world, local_rank, expected):
    import torch

    from golfbench.backends.torch.backend import BACKEND

    for key, value in (("WORLD_SIZE", world), ("LOCAL_RANK", local_rank)):
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    devices = BACKEND.devices()
    mine = int(local_rank or 0)
    assert devices == {
        "kind": "cuda",
        "count": int(world or 1),
        "names": [f"NVIDIA H100 80GB HBM3 #{mine}"],  # this process's own device, made current first
        "world_size": int(world or 1),
    }
    assert eight_gpus == [torch.device("cuda", mine)]
    assert hardware(devices)["class"] == expected


def test_a_local_rank_without_a_gpu_is_one_line(eight_gpus, monkeypatch):
    from golfbench.backends.torch.backend import BACKEND

    monkeypatch.setenv("WORLD_SIZE", "9")
    monkeypatch.setenv("LOCAL_RANK", "8")
    with pytest.raises(GolfError, match="LOCAL_RANK=8 has no GPU: 8 visible; use --nproc-per-node 8 or fewer"):
        BACKEND.devices()
    assert eight_gpus == []
