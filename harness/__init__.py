"""golfbench harness: framework-neutral data, evaluation, artifact, tracks and records.

Nothing under this package imports torch, jax, flax or optax (tests/test_layering.py enforces it).
"""

__version__ = "0.1.0"
