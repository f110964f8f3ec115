"""Plots people would rather look at than read: a run's loss curve, a comparison's BPB curves."""

from __future__ import annotations

import io
from pathlib import Path

from golfbench.harness.records import atomic_write_bytes, read_events


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_loss(events_path: Path, out: Path, title: str = "") -> None:
    """Write a PNG of a run's train loss (nats/token) against training tokens from its events.jsonl to ``out``;
    writes nothing when no event carries a loss.
    """
    plt = _figure()
    events = [e for e in read_events(events_path) if "loss" in e and e.get("loss") is not None]
    if not events:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([e["tokens"] for e in events], [e["loss"] for e in events], lw=1.5)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("train loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save(fig, out)
    plt.close(fig)


def plot_compare(curves: dict[str, list[dict]], finals: dict[str, float], out: Path, title: str = "") -> None:
    """curves: label -> events (one seed's); finals: label -> mean val_bpb. Loss is converted to BPB with the
    dataset's tokens-per-byte so train curves and the final val point share one axis."""
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for label, events in curves.items():
        pts = [e for e in events if e.get("bpb") is not None]
        for ax, key in zip(axes, ("tokens", "time", "flops")):
            (line,) = ax.plot([e[key] for e in pts], [e["bpb"] for e in pts], lw=1.4, label=label)
            if pts and label in finals:
                ax.scatter([pts[-1][key]], [finals[label]], color=line.get_color(), marker="*", s=90, zorder=3)
    for ax, xlabel in zip(axes, ("training tokens", "training seconds", "model FLOPs")):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("train BPB (line), val BPB (star)")
    axes[0].legend()
    fig.suptitle(title)
    _save(fig, out)
    plt.close(fig)
