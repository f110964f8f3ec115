"""golf-deltanet: a golfbench model plugin (docs/plugins.md). Importing this package imports no framework:
``golf_deltanet.spec`` is the framework-free spec, ``golf_deltanet.deltanet_jax`` the JAX implementation."""
