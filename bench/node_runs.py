"""The offline bundle's gpu.sh helper (golf bundle): what to run officially on a node without FineWeb.

    python node_runs.py prepare DATA ROOT   # ROOT/data/<id>: a prefix of the Shakespeare DATA; ROOT/tracks:
                                            # every track's [official] rules pointed at it, as `golf rehearse` does
    python node_runs.py pairs               # one line per model x framework this environment can run:
                                            # "model framework preset" (preset: tiny, the rehearsal's size)

The rehearsal copies keep every official rule (eval precision, pre-quant policy, stride, time limit, cap) and change
only the dataset, the budget (a few steps) and the hardware class (harness/rehearse.py), so a short
`golf run --scale official` with GOLF_TRACKS_DIR=ROOT/tracks plays the official path on the node's GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from golfbench.harness.data.manifest import read_manifest
from golfbench.harness.rehearse import prefix_dataset, rehearsal_tracks


def prepare(data: Path, root: Path, seconds: float, val_tokens: int = 16_384) -> Path:
    """Write the rehearsal dataset (the first 120,000 train and ``val_tokens`` val tokens of ``data``) and tracks
    under ``root`` (a new folder); returns the dataset folder."""
    manifest, _ = read_manifest(data)
    dataset_id = str(manifest.get("id", manifest["name"]))
    dst = prefix_dataset(data, root / "data" / dataset_id, train_tokens=120_000, val_tokens=val_tokens)
    rehearsal_tracks(root / "tracks", dataset_id, seconds)
    return dst


def pairs() -> list[tuple[str, str, str]]:
    """(model, framework, preset) for every model (built-ins and plugins) in every framework it implements that
    is importable here; preset ``tiny`` where the model has one, else its official golf preset."""
    from golfbench.harness.backend import backend_names
    from golfbench.harness.models import SPECS
    from golfbench.harness.plugins import get_plugin
    from golfbench.harness.runner import default_preset

    out = []
    for model, spec in SPECS.items():
        plugin = get_plugin(model)
        for fw in sorted(plugin.implementations) if plugin else backend_names():
            if importlib.util.find_spec(fw) is not None:
                out.append((model, fw, "tiny" if "tiny" in spec.presets else default_preset(model, "official")))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("data", type=Path)
    p.add_argument("root", type=Path)
    p.add_argument("--seconds", type=float, default=20.0, help="the wallclock track's rehearsal budget")
    p.add_argument("--val-tokens", type=int, default=16_384, help="val tokens of the rehearsal dataset")
    sub.add_parser("pairs")
    args = ap.parse_args()
    if args.cmd == "prepare":
        print(prepare(args.data, args.root, args.seconds, args.val_tokens))
    else:
        for row in pairs():
            print(" ".join(row))


if __name__ == "__main__":
    main()
