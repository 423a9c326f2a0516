"""Dropping compiled programs before a long run of fits reaches the kernel's memory-map limit."""

import jax
import jax.numpy as jnp

from heterojax import _cache


def test_release_only_when_crowded(monkeypatch):
    square = jax.jit(lambda x: x * x)
    square(jnp.ones(3))
    assert square._cache_size() == 1
    monkeypatch.setattr(_cache, "memory_map_count", lambda: 10)
    assert not _cache.release_compiled_programs_if_crowded(limit=100)
    assert square._cache_size() == 1
    monkeypatch.setattr(_cache, "memory_map_count", lambda: 1000)
    assert _cache.release_compiled_programs_if_crowded(limit=100)
    assert square._cache_size() == 0
    monkeypatch.setattr(_cache, "memory_map_count", lambda: None)  # not Linux
    assert not _cache.release_compiled_programs_if_crowded(limit=100)


def test_memory_map_count_is_read_on_linux():
    count = _cache.memory_map_count()
    assert count is None or count > 10
