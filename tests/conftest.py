"""Test configuration: float64 on, a PRNG key fixture, hypothesis profiles."""

import os

import jax


jax.config.update("jax_enable_x64", True)

import jax.random as jr  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402


settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def key():
    return jr.key(20240601)
