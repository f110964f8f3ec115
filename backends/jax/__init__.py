"""JAX backend (Flax NNX + Optax) implementing the llama and megalodon specs; entry point ``backend.BACKEND``."""
