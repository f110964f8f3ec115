"""Framework backends: each subpackage implements harness.backend.Backend for its framework."""
