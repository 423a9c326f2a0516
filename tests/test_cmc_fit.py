"""End-to-end `fit_cmc` on tiny simulated data: posterior near the truth, result API, export."""

import os
import subprocess
import sys
import textwrap

import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._export import group_names


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 0.0, "D0_sample": 1e3, "v0": 100.0, "f0": 0.5})
FREE = ("D0_sample", "v0", "f0")
FIXED = [n for n in hj.PARAMETER_NAMES if n not in FREE]
SETTINGS = dict(shards=2, chains=4, warmup=150, samples=200, progress=False)


@pytest.fixture(scope="module")
def data():
    t = 0.5 * np.arange(1, 41)
    return hj.simulate(
        TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.4, offset=1.0, noise=0.01, key=jr.key(1)
    )


@pytest.fixture(scope="module")
def nlsq(data):
    start = TRUTH.replace(D0_sample=1.2e3, v0=97.0, f0=0.45)
    # `simulate`'s noise is independent with known σ: formal errors are exact, so
    # adjustment="auto" samples the likelihood unadjusted (`NoAdjustment`), as it should.
    return hj.fit_nlsq(start, data, fixed=FIXED, scaling="constant", starts=1, errors="formal")


@pytest.fixture(scope="module")
def result(data, nlsq):
    return hj.fit_cmc(TRUTH, data, nlsq=nlsq, key=jr.key(0), **SETTINGS)


def test_posterior_covers_the_truth(result):
    truth = {**TRUTH.to_dict(), "contrast": 0.4, "offset": 1.0}
    table = result.table()
    for name in result.names:
        row = table[name]
        # Simulated data: the truth lies within 4 posterior sd of the mean (a failure rate of
        # 6e-5 per parameter for a calibrated posterior).
        assert abs(row["mean"] - float(truth[name])) < 4 * row["sd"], name
        assert row["2.5%"] < row["50%"] < row["97.5%"]
    assert result.verdict.passed, str(result.verdict)


def test_result_layout(result, data):
    assert result.names == ("D0_sample", "v0", "f0", "contrast", "offset")
    assert result.draws.shape == (4, 200, 5)
    assert result.shard_draws.shape == (2, 4, 200, 5)
    for name in FREE:
        assert result.samples[name].shape == (4, 200)
        assert result.shard_samples[name].shape == (2, 4, 200)
    # Contrast/offset per map, derived from the (constant-mode) coefficient draw by draw.
    assert result.samples["contrast"].shape == (4, 200, 2)
    np.testing.assert_allclose(result.samples["contrast"][..., 1], result.draws[..., 3])
    assert result.shard_samples["offset"].shape == (2, 4, 200, 2)
    assert set(result.diagnostics) == {"r_hat", "ess_bulk", "ess_tail", "bfmi", "divergences"}
    assert set(result.diagnostics["r_hat"]) == set(result.names)
    assert result.diagnostics["bfmi"].shape == (2,)
    assert result.shard_diagnostics["r_hat"].shape == (2, 5)
    assert result.shard_sizes.sum() == data.n_points
    assert result.noise == "data" and result.n_devices == 1
    assert result.sample_stats["energy"].shape == (2, 4, 200)
    # The posterior-mean model carries the sampled physics, the fixed values unchanged.
    assert float(result.model.to_dict()["v0"]) == pytest.approx(result.table()["v0"]["mean"])
    assert float(result.model.to_dict()["D0_ref"]) == 0.0


def test_summary_text(result):
    text = result.summary()
    for word in ("D0_sample", "2.5%", "97.5%", "R̂", "ESS bulk", "consensus", "PASSED"):
        assert word in text


def test_arviz_export_round_trip(result, tmp_path):
    az = pytest.importorskip("arviz")
    exported = result.to_arviz()
    assert {"posterior", "sample_stats", "shard_posterior"} <= group_names(exported)
    path = tmp_path / "cmc.nc"
    result.save_netcdf(path)
    loaded = az.from_netcdf(path)
    np.testing.assert_allclose(loaded.posterior["v0"].values, result.samples["v0"])
    assert loaded.posterior["contrast"].shape == (4, 200, 2)
    assert loaded.shard_posterior["v0"].shape == (4, 200, 2)


@pytest.mark.slow
def test_sequential_chains_reproduce_vectorized_draws(result, data, nlsq):
    sequential = hj.fit_cmc(
        TRUTH, data, nlsq=nlsq, key=jr.key(0), chain_method="sequential", **SETTINGS
    )
    # Same random numbers per (step, shard, chain): the same chains, up to rounding that may
    # flip a rare accept/reject decision, so compare the posterior summaries.
    for name in result.names:
        a, b = result.table()[name], sequential.table()[name]
        assert abs(a["mean"] - b["mean"]) < 0.3 * a["sd"], name
    assert sequential.chain_method == "sequential"


@pytest.mark.slow
def test_a_short_ess_draws_more_up_to_max_samples(data, nlsq, result, capfd):
    # 4 chains × 200 draws cannot reach an ESS of 1 500: the run continues its chains, as many
    # draws as the verdict would ask for, but no more than max_samples per chain.
    thresholds = hj.Thresholds(ess_bulk=1500.0, ess_tail=1500.0)
    settings = {**SETTINGS, "progress": True}
    extended = hj.fit_cmc(
        TRUTH, data, nlsq=nlsq, key=jr.key(0), thresholds=thresholds, max_samples=300, **settings
    )
    assert "100 more draws per chain (300 in all)" in capfd.readouterr().err
    assert extended.n_samples == 300
    assert extended.shard_draws.shape == (2, 4, 300, 5)
    # The first 200 draws are the run without extension, draw for draw (physics; the
    # contrast/offset are drawn afresh from their conditional).
    np.testing.assert_allclose(extended.shard_draws[:, :, :200, :3], result.shard_draws[..., :3])
    assert extended.sample_stats["energy"].shape == (2, 4, 300)
    # Still short: the verdict asks for more than was drawn.
    assert "draw more samples (samples=" in str(extended.verdict)
    assert "samples=300)" not in str(extended.verdict)


def test_auto_shards_are_one_where_few_would_run_side_by_side(data, nlsq, monkeypatch):
    import heterojax._cmc._fit as cmc_fit
    import heterojax._cmc._shards as cmc_shards

    # By size "auto" would take K = 2 (1 560 pairs over 700); on 12 cores with 4 chains a shard
    # only 3 shards run side by side, too few to repay the tiles' cost: one shard.
    monkeypatch.setattr(cmc_shards, "AUTO_POINTS_PER_SHARD", 700)
    monkeypatch.setattr(cmc_fit, "available_cores", lambda: 12)
    small = 8 * 3 * 60**2 * 13  # bytes of one shard's Jacobian over the whole maps
    assert cmc_fit._side_by_side_shards(None, 4, small) == 3
    assert cmc_fit._side_by_side_shards(True, 4, small) == 3
    assert cmc_fit._side_by_side_shards("tcp://scheduler:8786", 4, small) is None
    # A whole file (42 maps × 400², 4 physics + 84 coefficients): one shard's Jacobian would
    # take 4.7 GB, so the size rule's shards are kept.
    assert cmc_fit._side_by_side_shards(None, 4, 8 * 42 * 400**2 * 88) is None
    made = []

    class Made(Exception):
        pass

    def record(*args, **kwargs):  # fit_cmc's shards, and no more of the run
        made.append(cmc_shards.make_shards(*args, **kwargs))
        raise Made

    monkeypatch.setattr(cmc_fit, "make_shards", record)
    for cores, expected in [(12, 1), (32, 2)]:  # 32 cores: 8 side by side, K = 2 by size
        monkeypatch.setattr(cmc_fit, "available_cores", lambda cores=cores: cores)
        with pytest.raises(Made):
            hj.fit_cmc(TRUTH, data, nlsq=nlsq, key=jr.key(0), **{**SETTINGS, "shards": "auto"})
        assert made[-1].n_shards == expected


def test_one_shard_samples_whole_maps_only_with_the_roi_model():
    from heterojax._cmc._fit import _sampling_layout

    # The ROI model's node sum is cheaper as a rank-k product over whole maps; the centre
    # model's entries are cheaper gathered (whole maps evaluate both triangles).
    assert _sampling_layout(1, roi=True) == "maps"
    assert _sampling_layout(1, roi=False) == "tiles"
    assert _sampling_layout(2, roi=True) == _sampling_layout(2, roi=False) == "tiles"


@pytest.mark.slow
def test_auto_shards_halve_while_the_draws_are_not_gaussian(data, nlsq, monkeypatch, capfd):
    import heterojax._cmc._fit as cmc_fit
    import heterojax._cmc._shards as cmc_shards

    # Smaller shards, so that "auto" starts at K = 2 (1 560 pairs), and draws whose shards read
    # as not Gaussian while K > 1: K is halved (here to 1, which has no consensus product).
    monkeypatch.setattr(cmc_shards, "AUTO_POINTS_PER_SHARD", 700)
    monkeypatch.setattr(cmc_fit, "_side_by_side_shards", lambda *_: None)
    seen = []

    def not_gaussian(names, diagnostics, agreement, thresholds):
        seen.append(agreement.shape[0])
        return "v0: shard 1 mean 5.0 sd from the combined mean (> 4)"

    monkeypatch.setattr(cmc_fit, "shards_not_gaussian", not_gaussian)
    settings = {**SETTINGS, "shards": "auto", "progress": True}
    result = hj.fit_cmc(TRUTH, data, nlsq=nlsq, key=jr.key(0), **settings)
    assert seen == [2]
    assert result.n_shards == 1 and result.shard_draws.shape[0] == 1
    err = capfd.readouterr().err
    assert "K = 2 shards are not Gaussian (v0: shard 1 mean 5.0 sd" in err
    assert "sampling again with K = 1" in err
    assert "shards=" not in str(result.verdict)  # one shard: no consensus product to doubt


def test_without_nlsq_and_with_mixture(data):
    start = TRUTH.replace(D0_sample=1.1e3, v0=99.0, f0=0.48)
    mixed = hj.fit_cmc(
        start,
        data,
        fixed=FIXED,
        scaling="constant",
        combine="mixture",
        key=jr.key(2),
        **SETTINGS,
    )
    assert mixed.combine == "mixture"
    table = mixed.table()
    # A mixture of two half-data posteriors is about √2 wider than the full posterior, still
    # centred on the truth.
    assert abs(table["v0"]["mean"] - 100.0) < 5 * table["v0"]["sd"]
    assert mixed.priors == "uniform" and mixed.noise == "data"


def test_informed_priors_narrow_the_posterior(data, nlsq, result):
    informed = hj.fit_cmc(
        TRUTH, data, nlsq=nlsq, priors="informed", prior_width=0.5, key=jr.key(0), **SETTINGS
    )
    # Prior sd = 0.5 × NLSQ stderr ⇒ posterior sd ≈ stderr / √(1 + 4) ≈ 0.45 of the flat one.
    ratio = informed.table()["v0"]["sd"] / result.table()["v0"]["sd"]
    assert 0.3 < ratio < 0.65


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"combine": "average"}, ValueError, "combine"),
        ({"chains": 0}, ValueError, "chains"),
        ({"max_samples": 100}, ValueError, "max_samples"),
        ({"priors": "informed"}, ValueError, "nlsq"),
        ({"target_accept": 1.5}, ValueError, "target_accept"),
        ({"chain_method": "parallel"}, ValueError, "chain_method"),
        ({"shard_strategy": "contiguous"}, ValueError, "shard_strategy"),
        ({"shards": 0}, ValueError, "shards"),
        ({"fixed": ["nonsense"]}, ValueError, "nonsense"),
    ],
)
def test_bad_arguments(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        hj.fit_cmc(TRUTH, data, key=jr.key(0), **{**SETTINGS, **kwargs})


def test_bad_types(data):
    with pytest.raises(TypeError, match="XPCSData"):
        hj.fit_cmc(TRUTH, np.zeros((2, 4, 4)), key=jr.key(0))  # pyright: ignore
    with pytest.raises(TypeError, match="NLSQResult"):
        hj.fit_cmc(TRUTH, data, nlsq="fit", key=jr.key(0))  # pyright: ignore


_DEVICES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, jax.random as jr, equinox as eqx
    jax.config.update("jax_enable_x64", True)
    from heterojax._cmc._posterior import ShardData
    from heterojax._cmc._sampler import run_nuts

    class Gaussian(eqx.Module):
        def __call__(self, z, shard):
            # Shard k: a unit Gaussian centred at the shard's first observed value.
            return -0.5 * jnp.sum((z - shard.observed[0, 0, 0]) ** 2)

    observed = jnp.arange(2.0)[:, None, None, None] * jnp.ones((2, 3, 8, 8))
    zeros = jnp.zeros((2, 3), jnp.int32)
    data = ShardData(zeros, zeros, zeros, observed, jnp.ones((2, 3, 8, 8)))
    run, n_devices = run_nuts(Gaussian(), data, jnp.zeros((2, 2, 3)), jr.key(0),
                              warmup=100, samples=200, progress=False)
    means = run.position.mean(axis=(1, 2))
    assert jax.local_device_count() == 2 and n_devices == 2, n_devices
    assert abs(float(means[0].mean())) < 0.3 and abs(float(means[1].mean()) - 1) < 0.3, means
    print("ok", n_devices)
    """
)


@pytest.mark.slow  # a fresh process compiles the whole CMC again (~20 s)
def test_chains_are_split_across_local_devices():
    environment = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    completed = subprocess.run(
        [sys.executable, "-c", _DEVICES],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ok 2" in completed.stdout


def test_a_free_angle_is_sampled_on_the_period_centred_on_its_start():
    from heterojax._cmc._fit import _angle_windows

    start = TRUTH.replace(phi0=89.0)
    free_phi0 = [n for n in hj.PARAMETER_NAMES if n not in ("D0_sample", "v0", "phi0")]
    # The box of φ0 is one period: moved to [89° − 90°, 89° + 90°], no edge next to the mode.
    assert _angle_windows(start, free_phi0, None) == {"phi0": (-1.0, 179.0)}
    # A user's box of one period elsewhere is moved too; others are left as they are.
    windows = _angle_windows(start, free_phi0, {"phi0": (0.0, 180.0), "v0": (0.0, 500.0)})
    assert windows == {"phi0": (-1.0, 179.0), "v0": (0.0, 500.0)}
    assert _angle_windows(start, free_phi0, {"phi0": (60.0, 100.0)}) == {"phi0": (60.0, 100.0)}
    assert _angle_windows(start, FIXED, None) == {}  # φ0 fixed


@pytest.mark.slow  # its own compilation of the whole CMC (~30–50 s); the windows are tested above
def test_a_flow_near_the_wrap_of_phi0_is_sampled_whole():
    """φ0 = 89°: its posterior (sd of a few degrees) straddles ±90°. Sampled on the period
    centred on the NLSQ value, no box edge cuts it: the draws run past 90° and their mean
    lies near the truth (modulo 180°), where a box ending at 90° would truncate them."""
    truth = TRUTH.replace(phi0=89.0, v0=30.0)
    free = ("D0_sample", "v0", "phi0")
    fixed = [n for n in hj.PARAMETER_NAMES if n not in free]
    t = 0.5 * np.arange(1, 31)
    data = hj.simulate(
        truth, t, q=0.01, phi=[0.0, 60.0], contrast=0.4, offset=1.0, noise=0.01, key=jr.key(2)
    )
    start = truth.replace(D0_sample=1.2e3, v0=28.0, phi0=-88.0)
    nlsq = hj.fit_nlsq(start, data, fixed=fixed, scaling="constant", starts=1, errors="formal")
    assert "phi0" not in nlsq.quality.at_bounds
    phi0 = float(nlsq.parameters()["phi0"])
    settings = dict(shards=1, chains=2, warmup=150, samples=150, progress=False)
    result = hj.fit_cmc(truth, data, nlsq=nlsq, key=jr.key(0), **settings)
    draws = np.asarray(result.samples["phi0"])
    assert phi0 - 90.0 <= draws.min() and draws.max() <= phi0 + 90.0
    row = result.table()["phi0"]
    assert 1.0 < row["sd"] < 30.0
    assert abs((row["mean"] - 89.0 + 90.0) % 180.0 - 90.0) < 4 * row["sd"]
    assert np.mean(np.abs(draws) > 90.0) > 0.05  # the part beyond ±90° is sampled too
    # Two angles: the mirrored flow fits exactly alike, a mode these chains do not visit.
    assert any(line.startswith("phi0, v0: two angles") for line in result.verdict.failures)
