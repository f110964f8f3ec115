"""golfbench: a framework-neutral benchmark harness for parameter golf (docs/architecture.md).

One installed package: ``golfbench.harness`` (framework-free: data, evaluator, artifact, tracks, records),
``golfbench.backends.torch`` and ``golfbench.backends.jax`` (model implementations and training), and
``golfbench.tracks`` (the track rules, TOML package data). The repository keeps them in ``harness/``,
``backends/`` and ``tracks/``; pyproject.toml maps the folders into this namespace.
"""

__version__ = "0.2.0"
