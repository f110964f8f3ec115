"""The track rules (``*.toml``), installed as package data of ``golfbench.tracks`` (read with importlib.resources)."""
