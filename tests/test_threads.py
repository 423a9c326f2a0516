"""Independent work on parallel threads (`heterojax._threads`): same results as in turn."""

import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest
from _fit_problems import fit_problem

from heterojax import _threads
from heterojax._fit import _problem as problem_module
from heterojax._fit._solve import LocalSolver


def test_in_parallel_keeps_the_order_and_uses_several_threads():
    seen = set()

    def slow_square(value):
        seen.add(threading.get_ident())
        time.sleep(0.02)
        return value * value

    assert _threads.in_parallel(slow_square, range(8), threads=3) == [v * v for v in range(8)]
    assert len(seen) >= 2
    seen.clear()
    assert _threads.in_parallel(slow_square, range(4), threads=1) == [0, 1, 4, 9]
    assert seen == {threading.get_ident()}


def test_nested_calls_run_in_turn_on_the_worker_and_errors_propagate():
    def inner(value):
        threads = set()
        result = _threads.in_parallel(
            lambda v: threads.add(threading.get_ident()) or v + value, range(3), threads=4
        )
        return result, threads

    results = _threads.in_parallel(inner, range(3), threads=2)
    assert [r for r, _ in results] == [[v + i for v in range(3)] for i in range(3)]
    assert all(len(threads) == 1 for _, threads in results[1:])  # workers: nothing nested

    def fails(value):
        if value == 2:
            raise ValueError("item 2")
        return value

    with pytest.raises(ValueError, match="item 2"):
        _threads.in_parallel(fails, range(4), threads=2)


def test_compile_ahead_runs_its_calls_and_drops_failures(monkeypatch):
    done = []
    monkeypatch.setattr(_threads, "default_threads", lambda: 2)
    ahead = _threads.compile_ahead(
        [lambda: 1 / 0, lambda: done.append(jnp.ones(3).sum()) or jnp.zeros(())]
    )
    ahead.join()
    assert len(done) == 1 and float(done[0]) == 3.0
    monkeypatch.setattr(_threads, "default_threads", lambda: 1)
    assert _threads.compile_ahead([lambda: jnp.zeros(())]) is None


@pytest.mark.parametrize("profile_scaling", [True, False])
def test_starts_fitted_on_two_threads_equal_starts_fitted_in_turn(profile_scaling):
    """Each start's fit is exactly the fit it gets alone: bit for bit, whatever the threads."""
    problem, x0 = fit_problem()
    factors = np.ones((4, x0.size))
    factors[:, :4] = [
        [1.0, 1.0, 1.0, 1.0],
        [1.3, 0.8, 1.1, 0.9],
        [0.7, 1.2, 0.9, 1.1],
        [1, 1, 1.4, 0.7],
    ]
    rows = x0 * factors
    fits = [
        LocalSolver(threads=threads, profile_scaling=profile_scaling)(problem, rows)
        for threads in (1, 2)
    ]
    for field_alone, field_threaded in zip(*fits):
        np.testing.assert_array_equal(field_threaded, field_alone)
    assert np.all(fits[0].steps > 0)


def test_a_pass_map_by_map_on_two_threads_equals_the_pass_in_turn(monkeypatch):
    problem, x0 = fit_problem(frames=problem_module._PER_MAP_FRAMES)
    assert problem_module.passes_by_map(problem)
    passes = []
    for threads in (1, 2):
        monkeypatch.setattr(problem_module, "default_threads", lambda threads=threads: threads)
        passes.append(problem_module.moments_at(problem, x0, True))
    np.testing.assert_array_equal(passes[1].second, passes[0].second)
    for g_threaded, g_alone in zip(passes[1].g, passes[0].g):
        np.testing.assert_array_equal(g_threaded, g_alone)
    np.testing.assert_array_equal(passes[1].contrast, passes[0].contrast)


def test_frame_clustered_terms_on_two_threads_equal_the_terms_in_turn(monkeypatch):
    from heterojax._fit import _uncertainty

    problem, x0 = fit_problem(frames=problem_module._PER_MAP_FRAMES)
    grids = _uncertainty.FrameClusteredErrors(block=16).block_grids(problem, x0)
    terms = []
    for threads in (1, 2):
        monkeypatch.setattr(problem_module, "default_threads", lambda threads=threads: threads)
        terms.append(_uncertainty.clustered_terms_at(problem, x0, grids))
    for threaded, alone in zip(terms[1], terms[0]):
        np.testing.assert_array_equal(threaded, alone)
    assert np.all(np.isfinite(terms[0][0])) and np.any(terms[0][0] != 0)


def test_the_thread_count_follows_the_environment(monkeypatch):
    monkeypatch.setenv("HETEROJAX_THREADS", "3")
    assert _threads.default_threads() == 3
    monkeypatch.setenv("HETEROJAX_THREADS", "0")
    with pytest.raises(ValueError, match="HETEROJAX_THREADS"):
        _threads.default_threads()
    monkeypatch.delenv("HETEROJAX_THREADS")
    assert _threads.default_threads() >= 1


def test_batch_workers_get_their_share_of_the_cores(monkeypatch):
    import os

    from heterojax._batch._cluster import HeterojaxSetup

    environment = {k: v for k, v in os.environ.items() if k != "HETEROJAX_THREADS"}
    monkeypatch.setattr(os, "environ", environment)  # restored after the test
    HeterojaxSetup(threads=1).setup(worker=None)
    assert _threads.default_threads() == 1
    environment["HETEROJAX_THREADS"] = "2"  # the worker's own setting wins
    HeterojaxSetup(threads=1).setup(worker=None)
    assert _threads.default_threads() == 2
