"""The hardware class of a run: how many devices ran it and which part, the way tracks name it (``8xH100-SXM``).

The one table from device names, as ``torch.cuda.get_device_name`` and JAX's ``device_kind`` report them, to the
part names tracks and leaderboards use lives here (no framework import). A backend reports the devices it used
(``Backend.devices()``: the world size × devices per process, never the devices merely visible), so a 1-GPU run on
an 8-GPU node is ``1x…``.
"""

from __future__ import annotations

# Device names as the frameworks report them -> part names. SXM parts report their memory rather than "SXM"
# (the H100 SXM5 is "NVIDIA H100 80GB HBM3"; the H200 SXM is "NVIDIA H200"); A100s name their form factor.
PARTS: dict[str, str] = {
    "NVIDIA H100 80GB HBM3": "H100-SXM",
    "NVIDIA H100 PCIe": "H100-PCIe",
    "NVIDIA H100 NVL": "H100-NVL",
    "NVIDIA H200": "H200-SXM",
    "NVIDIA H200 NVL": "H200-NVL",
    "NVIDIA A100-SXM4-80GB": "A100-SXM-80GB",
    "NVIDIA A100-SXM4-40GB": "A100-SXM-40GB",
    "NVIDIA A100 80GB PCIe": "A100-PCIe-80GB",
    "NVIDIA A100-PCIE-40GB": "A100-PCIe-40GB",
}


def part_name(device_name: str) -> str:
    """The part of a device name (``PARTS``); an unknown name passes through cleaned: surrounding space and a
    leading "NVIDIA " dropped, runs of spaces turned into one "-" ("Tesla V100-SXM2-16GB" -> "Tesla-V100-SXM2-16GB")."""
    name = " ".join(str(device_name).split())
    if name in PARTS:
        return PARTS[name]
    if name.startswith("NVIDIA "):
        name = name[len("NVIDIA ") :]
    return name.replace(" ", "-") or "unknown"


def hardware_class(kind: str, count: int, device_name: str | None) -> str:
    """ "cpu" for CPU runs, else f"{count}x{part}" with ``count`` the devices the run used (processes × devices per
    process) and ``device_name`` one of them as the framework reports it: (``"cuda"``, 8, "NVIDIA H100 80GB HBM3")
    -> "8xH100-SXM". Raises ValueError for a count below 1."""
    if kind == "cpu":
        return "cpu"
    if int(count) < 1:
        raise ValueError(f"a run uses at least one device, got count {count}")
    return f"{int(count)}x{part_name(device_name or kind)}"
