"""Framework backends: each subpackage implements golfbench.harness.backend.Backend for its framework."""
