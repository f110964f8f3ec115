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


AXES = (("tokens", "training tokens"), ("time", "training seconds"), ("flops", "model FLOPs"))


def split_events(events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(train events with a loss, val-curve events with a val_bpb) of a run's events.jsonl, in order."""
    train = [e for e in events if e.get("event") is None and e.get("loss") is not None]
    val = [e for e in events if e.get("event") == "val" and e.get("val_bpb") is not None]
    return train, val


def tokens_per_byte(val: list[dict]) -> float | None:
    """Tokens per byte of the val subset (subset_tokens / subset_bytes of the first val event), the factor that
    turns a loss in nats/token into approximate bits per byte (loss / ln 2 × tokens per byte); None without one."""
    for e in val:
        if e.get("subset_tokens") and e.get("subset_bytes"):
            return float(e["subset_tokens"]) / float(e["subset_bytes"])
    return None


def plot_loss(events_path: Path, out: Path, title: str = "") -> None:
    """Write a PNG of a run's curves from its events.jsonl to ``out``: three panels, against training tokens,
    training seconds and model FLOPs. With val-curve events: val BPB on the fixed val subset (dots) and the train
    loss converted to approximate BPB with that subset's tokens per byte (loss / ln 2 × tokens/byte; train
    tokens' own bytes differ a little), both in bits per byte. Without: the train loss in nats/token. Writes
    nothing when no event carries a loss.
    """
    import math

    plt = _figure()
    train, val = split_events(read_events(events_path))
    if not train and not val:
        return
    tpb = tokens_per_byte(val)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for ax, (key, xlabel) in zip(axes, AXES):
        if tpb is not None:
            ax.plot(
                [e[key] for e in train],
                [e["loss"] / math.log(2) * tpb for e in train],
                lw=1.3,
                label="train (loss → BPB via val-subset tokens/byte, approx.)",
            )
            ax.plot([e[key] for e in val], [e["val_bpb"] for e in val], "o-", ms=4, lw=1.3, label="val subset BPB")
        else:
            ax.plot([e[key] for e in train], [e["loss"] for e in train], lw=1.5, label="train loss")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("bits per byte" if tpb is not None else "train loss (nats/token)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)
    plt.close(fig)


def plot_compare(
    curves: dict[str, list[dict]],
    finals: dict[str, float],
    out: Path,
    title: str = "",
    val_curves: dict[str, list[list[dict]]] | None = None,
) -> None:
    """curves: label -> train events (one seed's), each with ``bpb`` (the loss in bits per byte, converted by the
    caller); finals: label -> mean final val_bpb (full val set, a star); val_curves: label -> per seed, its val
    events (val BPB on the fixed val subset, dots). Three panels: against tokens, seconds and FLOPs."""
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    for label, events in curves.items():
        pts = [e for e in events if e.get("bpb") is not None]
        for ax, (key, _) in zip(axes, AXES):
            (line,) = ax.plot([e[key] for e in pts], [e["bpb"] for e in pts], lw=1.4, label=label)
            for i, seed in enumerate((val_curves or {}).get(label, [])):
                ax.plot(
                    [e[key] for e in seed],
                    [e["val_bpb"] for e in seed],
                    "o--",
                    ms=3,
                    lw=0.9,
                    color=line.get_color(),
                    alpha=0.8,
                    label=f"{label} val subset" if i == 0 and key == "tokens" else None,
                )
            if pts and label in finals:
                ax.scatter([pts[-1][key]], [finals[label]], color=line.get_color(), marker="*", s=90, zorder=3)
    for ax, (_, xlabel) in zip(axes, AXES):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("BPB: train (line), val subset per seed (dots), final val (star)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)
    plt.close(fig)
