"""The JAX backend sets a config flag only where this jax has it (pyproject accepts jax>=0.5; a flag renamed or
retired in a later release must not stop every run), and every flag it sets exists in the installed jax."""

import re
from pathlib import Path

import pytest

jax = pytest.importorskip("jax")
from golfbench.backends.jax import backend  # noqa: E402

SOURCE = Path(backend.__file__).read_text(encoding="utf-8")
JAX_FILES = [*Path(backend.__file__).parent.glob("*.py"), *Path(__file__).parent.parent.glob("examples/*/*/*.py")]


def test_unknown_flag_is_skipped_not_raised():
    with pytest.raises(AttributeError):  # what an unguarded update does with a retired flag
        jax.config.update("jax_golfbench_no_such_flag", 1)
    assert backend.set_flag("jax_golfbench_no_such_flag", 1) is False


def test_known_flag_is_set():
    before = jax.config.values["jax_persistent_cache_min_compile_time_secs"]
    try:
        assert backend.set_flag("jax_persistent_cache_min_compile_time_secs", 7.5) is True
        assert jax.config.values["jax_persistent_cache_min_compile_time_secs"] == 7.5
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


def test_every_flag_the_backend_sets_goes_through_the_guard_and_exists_here():
    calls = [
        (f.name, line.strip())
        for f in JAX_FILES
        for line in f.read_text(encoding="utf-8").splitlines()
        if re.match(r"\s*jax\.config\.update\(", line)
    ]
    assert calls == [("backend.py", "jax.config.update(name, value)")]  # the guard's own, nothing unguarded
    flags = re.findall(r'set_flag\("([a-z0-9_]+)"', SOURCE)
    assert set(flags) == {
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_cpu_collectives_implementation",
    }
    # a typo would be skipped silently by the guard: each must be a real flag of the installed jax
    assert all(f in jax.config.values for f in flags), [f for f in flags if f not in jax.config.values]
    assert not [f for f in JAX_FILES if "XLA_FLAGS" in f.read_text(encoding="utf-8")]  # none set by the backend
