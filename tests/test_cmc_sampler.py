"""The NUTS driver on toy Gaussians: adaptation, per-shard targets, chain methods, progress."""

import logging
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from heterojax._cmc._posterior import ShardData
from heterojax._cmc._sampler import resolve_chain_method, run_nuts


class _Gaussian(eqx.Module):
    """Shard k: N(μ_k, diag(s²)) with μ_k the shard's first observed value in every coordinate."""

    scale: jax.Array

    def __call__(self, z, shard):
        return -0.5 * jnp.sum(((z - shard.observed[0, 0, 0]) / self.scale) ** 2)


def _shards(centres):
    k = len(centres)
    observed = jnp.asarray(centres, float)[:, None, None, None] * jnp.ones((k, 2, 8, 8))
    zeros = jnp.zeros((k, 2), jnp.int32)
    return ShardData(zeros, zeros, zeros, observed, jnp.ones((k, 2, 8, 8)))


SCALE = jnp.array([1.0, 0.1, 3.0])


@pytest.fixture(scope="module")
def vectorized():
    run, n_devices = run_nuts(
        _Gaussian(SCALE),
        _shards([0.0, 2.0]),
        jnp.zeros((2, 3, 3)),
        jr.key(0),
        warmup=200,
        samples=400,
        progress=False,
    )
    return run, n_devices


def test_draws_follow_each_shard_target(vectorized):
    run, n_devices = vectorized
    assert n_devices == 1
    assert run.position.shape == (2, 3, 400, 3)
    draws = np.asarray(run.position).reshape(2, -1, 3)
    for shard, centre in enumerate([0.0, 2.0]):
        mean, sd = draws[shard].mean(axis=0), draws[shard].std(axis=0)
        # 1200 draws with ESS of several hundred: the mean within ~5 standard errors.
        assert np.all(np.abs(mean - centre) < 5 * np.asarray(SCALE) / np.sqrt(300))
        np.testing.assert_allclose(sd, SCALE, rtol=0.2)
    # Window adaptation learns the scales: the diagonal inverse metric ≈ s².
    metric = np.asarray(run.inverse_mass_matrix).reshape(-1, 3)
    np.testing.assert_allclose(np.median(metric, axis=0), np.asarray(SCALE) ** 2, rtol=0.5)
    assert not np.any(np.asarray(run.divergent))
    assert np.all(np.asarray(run.acceptance).mean(axis=2) > 0.6)


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
def test_a_continuation_draws_on_with_the_adapted_metric(vectorized, chain_method):
    run, _ = vectorized
    more, _ = run_nuts(
        _Gaussian(SCALE),
        _shards([0.0, 2.0]),
        run.position[:, :, -1],
        jr.key(7),
        warmup=0,
        samples=300,
        chain_method=chain_method,
        progress=False,
        adapted=run.adapted(),
    )
    # No warmup: the step size and metric are the first run's, unchanged.
    np.testing.assert_array_equal(more.step_size, run.step_size)
    np.testing.assert_array_equal(more.inverse_mass_matrix, run.inverse_mass_matrix)
    assert more.position.shape == (2, 3, 300, 3)
    assert int(np.sum(more.warmup_divergences)) == 0
    draws = np.asarray(more.position).reshape(2, -1, 3)
    for shard, centre in enumerate([0.0, 2.0]):
        mean, sd = draws[shard].mean(axis=0), draws[shard].std(axis=0)
        assert np.all(np.abs(mean - centre) < 5 * np.asarray(SCALE) / np.sqrt(200))
        np.testing.assert_allclose(sd, SCALE, rtol=0.25)
    joined = run.followed_by(more)
    assert joined.position.shape == (2, 3, 700, 3)
    np.testing.assert_array_equal(joined.position[:, :, :400], run.position)
    np.testing.assert_array_equal(joined.energy[:, :, 400:], more.energy)
    np.testing.assert_array_equal(joined.step_size, run.step_size)


@pytest.mark.parametrize("chain_method", ["vectorized", "sequential"])
def test_runs_of_any_length_share_one_compiled_program(chain_method, caplog):
    # Steps are run in chunks of CHUNK_STEPS with traced counts: a continuation, a run of
    # other warmup and draw counts (padded to whole chunks) and one with progress lines
    # compile nothing more than the first run did.
    def run(positions, key, **options):
        return run_nuts(
            _Gaussian(SCALE), _shards([0.0, 2.0]), positions, key, chain_method=chain_method,
            **options,
        )[0]  # fmt: skip

    first = run(jnp.zeros((2, 3, 3)), jr.key(0), warmup=60, samples=40, progress=False)
    previous = jax.config.jax_log_compiles
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            more = run(
                first.position[:, :, -1], jr.key(1), warmup=0, samples=130, progress=False,
                adapted=first.adapted(),
            )  # fmt: skip
            other = run(jnp.ones((2, 3, 3)), jr.key(2), warmup=30, samples=7, progress=True)
    finally:
        jax.config.update("jax_log_compiles", previous)
    compiled = [r.getMessage() for r in caplog.records if "_advance" in r.getMessage()]
    assert compiled == []
    assert more.position.shape == (2, 3, 130, 3) and other.position.shape == (2, 3, 7, 3)
    assert int(np.sum(more.warmup_divergences)) == 0
    # The draws' step size is exp(log(step size)) of the first run's: equal up to rounding.
    np.testing.assert_allclose(more.step_size, first.step_size, rtol=1e-12)


def test_draws_without_warmup_need_an_adapted_metric():
    with pytest.raises(ValueError, match="adapted"):
        run_nuts(
            _Gaussian(SCALE), _shards([0.0]), jnp.zeros((1, 2, 3)), jr.key(0), warmup=0, samples=10
        )


def test_sequential_chains_use_the_same_random_numbers():
    runs = [
        run_nuts(
            _Gaussian(SCALE),
            _shards([0.0, 2.0]),
            jnp.zeros((2, 2, 3)),
            jr.key(0),
            warmup=60,
            samples=20,
            chain_method=method,
            progress=False,
        )[0]
        for method in ("vectorized", "sequential")
    ]
    # Same random numbers per (step, shard, chain), so the same chains; vmapped and unbatched
    # arithmetic round differently (~1e-16), which NUTS amplifies to ~1e-6 over 80 steps (and
    # would, over long runs, eventually flip an accept/reject decision).
    np.testing.assert_allclose(runs[1].position, runs[0].position, atol=1e-4)
    np.testing.assert_allclose(runs[1].step_size, runs[0].step_size, rtol=1e-5)


def test_progress_is_reported_per_tenth(capfd):
    run_nuts(
        _Gaussian(SCALE),
        _shards([0.0]),
        jnp.zeros((1, 2, 3)),
        jr.key(1),
        warmup=20,
        samples=30,
        progress=True,
    )
    jax.effects_barrier()
    lines = [line for line in capfd.readouterr().err.splitlines() if "fit_cmc" in line]
    assert sum("warmup" in line for line in lines) == 10
    assert sum("sampling" in line for line in lines) == 10
    assert "30/30 (100 %)" in lines[-1]


def test_sequential_progress_is_reported_per_tenth_of_all_steps(capfd):
    run_nuts(
        _Gaussian(SCALE),
        _shards([0.0, 1.0]),
        jnp.zeros((2, 2, 3)),
        jr.key(1),
        warmup=20,
        samples=30,
        chain_method="sequential",
        progress=True,
    )
    jax.effects_barrier()
    lines = [line for line in capfd.readouterr().err.splitlines() if "fit_cmc" in line]
    # 4 chains × 50 steps, run side by side: a line every 20 steps of all chains together,
    # naming where each running chain is.
    assert len(lines) == 10
    # Which chain the first line names depends on the threads' order (seen both ways in CI).
    assert "chains: 20/200 steps ( 10 %)" in lines[0] and re.search(r"chain \d: warmup", lines[0])
    assert "chains: 200/200 steps (100 %)" in lines[-1]


def test_runs_side_by_side_keep_their_own_progress(capfd):
    """Two sequential runs in two threads of one process (as two fits in a threaded program):
    each counts its own chains' steps."""
    import concurrent.futures

    def run(n_chains):
        return run_nuts(
            _Gaussian(SCALE),
            _shards([0.0]),
            jnp.zeros((1, n_chains, 3)),
            jr.key(n_chains),
            warmup=20,
            samples=30,
            chain_method="sequential",
            progress=True,
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(run, (2, 4)))
    jax.effects_barrier()
    assert [r.position.shape[:2] for r, _ in runs] == [(1, 2), (1, 4)]
    lines = [line for line in capfd.readouterr().err.splitlines() if "fit_cmc" in line]
    assert sum("chains: 100/100 steps (100 %)" in line for line in lines) == 1
    assert sum("chains: 200/200 steps (100 %)" in line for line in lines) == 1
    assert len(lines) == 20


def test_auto_chain_method():
    small = _shards([0.0])
    assert resolve_chain_method("auto", small) == "vectorized"
    index = jnp.zeros((1, 64), jnp.int32)
    big = ShardData(index, index, index, jnp.zeros((1, 64, 8, 8)), jnp.ones((1, 64, 8, 8)))
    single_cpu = jax.local_device_count() == 1 and jax.default_backend() == "cpu"
    expected = "sequential" if single_cpu else "vectorized"
    assert resolve_chain_method("auto", big) == expected
    assert resolve_chain_method("vectorized", big) == "vectorized"


def test_bad_chain_method():
    with pytest.raises(ValueError, match="chain_method"):
        run_nuts(
            _Gaussian(SCALE),
            _shards([0.0]),
            jnp.zeros((1, 2, 3)),
            jr.key(0),
            warmup=10,
            samples=10,
            chain_method="threads",
        )
