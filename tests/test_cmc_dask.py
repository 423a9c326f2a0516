"""`fit_cmc(client=...)`: shards sampled as Dask tasks on a real `LocalCluster` (2 worker
processes, one thread each; no mocks), and the same draws as in-process."""

import json

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._posterior import ShardData
from heterojax._cmc._sampler import run_nuts


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 0.0, "D0_sample": 1e3, "v0": 100.0, "f0": 0.5})
FIXED = [n for n in hj.PARAMETER_NAMES if n not in ("D0_sample", "v0", "f0")]
# Tiny and short: this checks where the shards run, not the posterior. Whitening by the
# Gauss–Newton covariance at the start compiles faster than a Laplace fit per shard. Sequential
# chains run the same program per chain whatever the number of shards, so a shard alone draws
# exactly what it draws among all shards (vectorized ones round differently, see `fit_cmc`).
SETTINGS = dict(
    fixed=FIXED,
    scaling="constant",
    shards=2,
    chains=2,
    warmup=40,
    samples=20,
    sampler=hj.NUTS(whitening="nlsq"),
    chain_method="sequential",
    key=jr.key(3),
)


@pytest.fixture(scope="module")
def data():
    t = 0.5 * np.arange(1, 17)
    return hj.simulate(
        TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.4, offset=1.0, noise=0.01, key=jr.key(1)
    )


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def in_process(data):
    return hj.fit_cmc(TRUTH, data, progress=False, **SETTINGS)


@pytest.fixture(scope="module")
def on_dask(data, cluster):
    from distributed import Client

    with Client(cluster) as client:
        return hj.fit_cmc(TRUTH, data, progress=False, client=client, **SETTINGS)


def _assert_same_run(a, b):
    np.testing.assert_array_equal(b.shard_draws, a.shard_draws)
    np.testing.assert_array_equal(b.draws, a.draws)
    for name in a.sample_stats:
        np.testing.assert_array_equal(b.sample_stats[name], a.sample_stats[name], err_msg=name)
    np.testing.assert_array_equal(
        b.shard_diagnostics["step_size"], a.shard_diagnostics["step_size"]
    )


@pytest.mark.slow
def test_shards_run_on_the_workers_and_draw_the_in_process_draws(in_process, on_dask, cluster):
    assert on_dask.n_shards == 2 and on_dask.shard_draws.shape == (2, 2, 20, 5)
    # One task per shard, each on a worker of this cluster (both workers, barring a race).
    assert len(on_dask.shard_workers) == 2
    assert set(on_dask.shard_workers) <= set(cluster.scheduler_info["workers"])
    assert in_process.shard_workers == ()
    assert on_dask.chain_method == in_process.chain_method == "sequential"
    # Shard k's chains draw the random numbers they draw in-process: the same draws, exactly.
    _assert_same_run(in_process, on_dask)
    assert on_dask.table() == in_process.table()
    assert "Dask worker" in on_dask.summary() and "Dask" not in in_process.summary()


@pytest.mark.slow
def test_the_saved_record_names_each_shards_worker(on_dask, tmp_path, data):
    hj.save_result(on_dask, data, tmp_path)
    saved = json.loads((tmp_path / "cmc.json").read_text())
    assert saved["settings"]["shard_workers"] == list(on_dask.shard_workers)


@pytest.mark.slow
def test_a_scheduler_address_and_progress_per_shard(data, cluster, in_process, on_dask, capfd):
    # Runs after the test above on the same workers, which reuse their compiled program.
    result = hj.fit_cmc(TRUTH, data, progress=True, client=cluster.scheduler_address, **SETTINGS)
    _assert_same_run(in_process, result)
    err = capfd.readouterr().err
    assert err.count("[heterojax.fit_cmc] shard ") == 2
    assert "(2/2 done)" in err
    # Workers print nothing: the client reports per shard, not per tenth of the steps.
    assert "warmup:" not in err and "sampling:" not in err


@pytest.mark.slow
def test_more_draws_on_dask_are_the_in_process_ones(data, cluster, in_process):
    from distributed import Client

    # 2 chains × 20 draws are far short of an ESS of 400: both runs draw 20 more per chain, as
    # a second round of tasks on Dask.
    settings = {**SETTINGS, "max_samples": 40}
    local = hj.fit_cmc(TRUTH, data, progress=False, **settings)
    with Client(cluster) as client:
        remote = hj.fit_cmc(TRUTH, data, progress=False, client=client, **settings)
    assert local.n_samples == remote.n_samples == 40
    _assert_same_run(local, remote)
    # The first 20 draws of the physics are those of the run without more draws.
    np.testing.assert_array_equal(local.shard_draws[:, :, :20, :3], in_process.shard_draws[..., :3])


def test_a_bad_client_is_refused_before_any_work(data):
    with pytest.raises(TypeError, match="client"):
        hj.fit_cmc(TRUTH, data, client=4, **SETTINGS)


@pytest.mark.slow
def test_a_run_split_by_shards_draws_the_whole_runs_numbers():
    """`run_nuts(key_shards=(k, K))` on shard k alone draws the random numbers of shard k in
    the K-shard vectorized run: on a density whose arithmetic does not depend on the batch
    size, the same draws exactly (sequential chains are checked above, through `fit_cmc`)."""

    def density(z, shard):
        return -0.5 * jnp.sum((z - shard.observed[0, 0, 0]) ** 2 / jnp.array([1.0, 0.1, 3.0]))

    k = 3
    observed = jnp.asarray([0.0, 2.0, 5.0])[:, None, None, None] * jnp.ones((k, 1, 4, 4))
    zeros = jnp.zeros((k, 1), jnp.int32)
    shards = ShardData(zeros, zeros, zeros, observed, jnp.ones((k, 1, 4, 4)))
    starts = 0.1 * jr.normal(jr.key(5), (k, 2, 3))
    options = dict(
        warmup=30, samples=10, progress=False, dense_mass=True, chain_method="vectorized"
    )
    whole, _ = run_nuts(density, shards, starts, jr.key(0), **options)
    for index in (0, 2):
        part, _ = run_nuts(
            density,
            jax.tree.map(lambda a, i=index: a[i : i + 1], shards),
            starts[index : index + 1],
            jr.key(0),
            key_shards=(index, k),
            **options,
        )
        for name in ("position", "step_size", "inverse_mass_matrix", "energy"):
            np.testing.assert_array_equal(
                np.asarray(getattr(part, name))[0],
                np.asarray(getattr(whole, name))[index],
                err_msg=f"{name} shard {index}",
            )
    with pytest.raises(ValueError, match="key_shards"):
        run_nuts(density, shards, starts, jr.key(0), key_shards=(1, 3), **options)
