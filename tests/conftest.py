"""Test configuration: float64 on, a compilation cache shared by the run's processes, a PRNG
key fixture, hypothesis profiles."""

import os
import tempfile
from pathlib import Path

import jax


jax.config.update("jax_enable_x64", True)


def _run_cache_directory() -> Path:
    """One fresh directory per test run, shared by its xdist workers and the CLI subprocesses
    they start (`HETEROJAX_CACHE_DIR`), so a program compiled by one is loaded by the others;
    never the user's own cache."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
    return Path(tempfile.gettempdir()) / "heterojax-test-xla" / run


if "HETEROJAX_CACHE_DIR" not in os.environ:
    os.environ["HETEROJAX_CACHE_DIR"] = str(_run_cache_directory())

import jax.random as jr  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402


settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.register_profile("thorough", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _shared_compilation_cache():
    # Imported here, not at the top: heterojax must be first imported after the jaxtyping
    # import hook (pytest's `--jaxtyping-packages`) is in place, so that it is type-checked.
    import heterojax

    heterojax.enable_compilation_cache(os.environ["HETEROJAX_CACHE_DIR"])


@pytest.fixture
def key():
    return jr.key(20240601)
