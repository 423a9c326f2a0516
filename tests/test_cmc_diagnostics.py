"""R̂, ESS and E-BFMI on cases with known answers, against ArviZ, and the verdict's advice."""

import numpy as np
import pytest

from heterojax._cmc._diagnostics import bfmi, ess_bulk, ess_tail, rhat
from heterojax._cmc._verdict import RunSettings, Thresholds, make_verdict


def _ar1(rng, rho, shape):
    x = np.empty(shape)
    x[..., 0] = rng.normal(size=shape[:-1]) / np.sqrt(1 - rho**2)
    for s in range(1, shape[-1]):
        x[..., s] = rho * x[..., s - 1] + rng.normal(size=shape[:-1])
    return x


def test_iid_draws_have_unit_rhat_and_full_ess():
    draws = np.random.default_rng(0).normal(size=(4, 1000))
    assert abs(rhat(draws) - 1) < 0.01
    # ESS of iid draws is n up to sampling error (~10 % for the tail indicators).
    assert ess_bulk(draws) == pytest.approx(4000, rel=0.15)
    assert ess_tail(draws) == pytest.approx(4000, rel=0.25)


def test_chains_with_different_means_have_large_rhat():
    draws = np.random.default_rng(1).normal(size=(4, 500)) + np.arange(4)[:, None]
    assert rhat(draws) > 1.5
    assert ess_bulk(draws) < 100


def test_chains_with_different_scales_are_caught_by_the_folded_rhat():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(4, 1000)) * np.array([1.0, 1.0, 1.0, 4.0])[:, None]
    assert rhat(draws) > 1.05


def test_ess_of_an_ar1_process():
    rho = 0.9
    draws = _ar1(np.random.default_rng(3), rho, (4, 4000))
    expected = draws.size * (1 - rho) / (1 + rho)
    assert ess_bulk(draws) == pytest.approx(expected, rel=0.3)


def test_constant_draws():
    draws = np.ones((4, 100))
    assert np.isnan(rhat(draws))
    assert ess_bulk(draws) == 400


def test_bfmi_of_iid_and_random_walk_energies():
    rng = np.random.default_rng(4)
    # iid energies: E[(ΔE)²] = 2 var(E).
    assert np.allclose(bfmi(rng.normal(size=(3, 20_000))), 2.0, rtol=0.05)
    assert np.all(bfmi(np.cumsum(rng.normal(size=(3, 2000)), axis=1)) < 0.05)


@pytest.mark.parametrize("case", ["iid", "ar", "shifted", "cauchy", "short"])
def test_agrees_with_arviz(case):
    az = pytest.importorskip("arviz")
    rng = np.random.default_rng(5)
    draws = {
        "iid": rng.normal(size=(4, 400)),
        "ar": _ar1(rng, 0.7, (4, 400)),
        "shifted": rng.normal(size=(4, 400)) + 0.2 * np.arange(4)[:, None],
        "cauchy": rng.standard_cauchy(size=(4, 400)),
        "short": rng.normal(size=(2, 37)),
    }[case]
    np.testing.assert_allclose(rhat(draws), az.rhat(draws), rtol=1e-10)
    np.testing.assert_allclose(ess_bulk(draws), az.ess(draws, method="bulk"), rtol=1e-10)
    np.testing.assert_allclose(ess_tail(draws), az.ess(draws, method="tail"), rtol=1e-10)
    energy = np.cumsum(rng.normal(size=(4, 300)), axis=1) + rng.normal(size=(4, 300))
    np.testing.assert_allclose(bfmi(energy), az.bfmi(energy), rtol=1e-10)


def _diagnostics(n_shards=2, n_parameters=2):
    return {
        "r_hat": np.ones((n_shards, n_parameters)),
        "ess_bulk": np.full((n_shards, n_parameters), 1000.0),
        "ess_tail": np.full((n_shards, n_parameters), 1000.0),
        "bfmi": np.ones((n_shards, 4)),
        "divergences": np.zeros(n_shards, int),
        "tree_depth_saturation": np.zeros(n_shards),
        "width_ratio": np.ones((n_shards, n_parameters)),
        "skewness": np.zeros((n_shards, n_parameters)),
    }


def _settings(**changes):
    settings = dict(
        warmup=500,
        samples=1000,
        chains=4,
        n_shards=2,
        shards_auto=False,
        reduced_from=None,
        target_accept=0.8,
        max_tree_depth=10,
        dense_mass=False,
        nlsq=True,
        shard_strategy="random",
    )
    return RunSettings(**{**settings, **changes})


def _verdict(diagnostics, agreement=None, **settings):
    n_shards = settings.get("n_shards", 2)
    return make_verdict(
        names=("v0", "f0"),
        shard_diagnostics=diagnostics,
        agreement=np.zeros((n_shards, 2)) if agreement is None else agreement,
        thresholds=Thresholds(),
        settings=_settings(**settings),
    )


def test_verdict_passes_a_clean_run():
    verdict = _verdict(_diagnostics())
    assert verdict.passed and not verdict.failures
    assert "PASSED" in str(verdict)


def test_verdict_fails_when_the_likelihood_adjustment_was_replaced():
    review = "the likelihood is not Gaussian on the scale of the NLSQ honest errors (…)"
    verdict = make_verdict(
        names=("v0", "f0"),
        shard_diagnostics=_diagnostics(),
        agreement=np.zeros((2, 2)),
        thresholds=Thresholds(),
        settings=_settings(),
        adjustment_review=review,
    )
    assert not verdict.passed
    assert verdict.failures == (
        f"adjustment: {review} → fix a parameter the data cannot determine, or measure more "
        "frames or pixels; the intervals are approximate.",
    )


def test_verdict_fails_when_two_angles_leave_a_second_flow():
    """A two-angle twin is a second posterior mode as high as the first that no chain visits:
    the verdict fails and names it, with advice that settles it."""
    verdict = make_verdict(
        names=("v0", "f0", "phi0"),
        shard_diagnostics=_diagnostics(n_parameters=3),
        agreement=np.zeros((2, 3)),
        thresholds=Thresholds(),
        settings=_settings(),
        twin={"phi0": -62.62, "v0": 19.36},
    )
    assert not verdict.passed
    (line,) = verdict.failures
    assert line.startswith("phi0, v0: two angles fit a second flow exactly alike")
    assert "phi0 = -62.62, v0 = 19.36" in line and "third angle" in line


@pytest.mark.parametrize(
    "change, words",
    [
        (("r_hat", (1, 0), 1.05), ["v0:", "R̂ 1.050 in shard 1", "shards=1"]),
        (("ess_bulk", (0, 1), 120.0), ["f0:", "bulk ESS 120 in shard 0", "samples=4000"]),
        (("ess_tail", (0, 1), 120.0), ["f0:", "tail ESS 120 in shard 0", "samples=4000"]),
        (("bfmi", (1, 2), 0.1), ["E-BFMI", "shard 1, chain 2", "warmup=1000"]),
        (("divergences", (0,), 3), ["divergences: 3", "in shard 0", "target_accept=0.95"]),
        (("tree_depth_saturation", (1,), 0.2), ["20.0 %", "shard 1", "dense_mass=True"]),
        (("width_ratio", (1, 1), 2.4), ["f0:", "shard 1 2.4× as wide", "shards=1"]),
        (("skewness", (0, 0), -0.8), ["v0:", "skewness 0.80 in shard 0", "shards=1"]),
    ],
)
def test_verdict_gives_advice_per_failure(change, words):
    diagnostics = _diagnostics()
    key, index, value = change
    diagnostics[key][index] = value
    verdict = _verdict(diagnostics)
    assert not verdict.passed
    # One line per failing parameter or run-level check, one piece of advice each.
    assert len(verdict.failures) == 1
    for word in words:
        assert word in verdict.failures[0]
    assert verdict.failures[0].count("→") == 1
    assert "FAILED" in str(verdict)


def test_verdict_names_each_failing_parameter_once():
    diagnostics = _diagnostics()
    diagnostics["r_hat"][1, 0] = 1.05
    diagnostics["ess_bulk"][0, 0] = 50.0
    diagnostics["ess_tail"][1, 1] = 90.0
    verdict = _verdict(diagnostics)
    assert len(verdict.failures) == 2
    v0, f0 = verdict.failures
    assert v0.startswith("v0:") and "R̂ 1.050" in v0 and "bulk ESS 50" in v0
    assert f0.startswith("f0:") and "tail ESS 90" in f0


@pytest.mark.parametrize(
    "change, settings, advised, not_advised",
    [
        # Chains disagree: a start from NLSQ first, unless the run had one.
        (("r_hat", (0, 0), 1.2), dict(nlsq=False), "nlsq=", None),
        (("r_hat", (0, 0), 1.2), dict(n_shards=1), "dense_mass=True", "nlsq="),
        (("r_hat", (0, 0), 1.2), dict(n_shards=1, dense_mass=True), "warmup=1000", "dense_mass"),
        # Divergences: a higher target acceptance unless it is already high.
        (("divergences", (0,), 5), dict(target_accept=0.99), "shards=1", "target_accept"),
        (("divergences", (0,), 5), dict(target_accept=0.99, n_shards=1), "fix a", "shards="),
        # Saturated trees: a dense metric unless it was used.
        (("tree_depth_saturation", (0,), 0.3), dict(dense_mass=True), "max_tree_depth=12", "dense"),
    ],
)
def test_verdict_never_advises_what_was_already_done(change, settings, advised, not_advised):
    n_shards = settings.get("n_shards", 2)
    diagnostics = _diagnostics(n_shards=n_shards)
    key, index, value = change
    diagnostics[key][index] = value
    verdict = _verdict(diagnostics, **settings)
    assert len(verdict.failures) == 1
    advice = verdict.failures[0].split("→")[1]
    assert advised in advice
    if not_advised is not None:
        assert not_advised not in advice


def test_verdict_flags_disagreeing_shards():
    verdict = _verdict(_diagnostics(), agreement=np.array([[0.5, 6.0], [0.2, 0.1]]))
    assert not verdict.passed
    assert len(verdict.failures) == 1
    line = verdict.failures[0]
    assert line.startswith("f0:") and "shard 0 mean 6.0 sd from the combined mean" in line
    assert "shards=1" in line


def test_gaussian_shard_checks_ignore_narrow_shards_and_single_shards():
    diagnostics = _diagnostics()
    # Narrower than the Laplace approximation (an informed prior does that): no failure.
    diagnostics["width_ratio"][0, 0] = 0.4
    assert _verdict(diagnostics).passed
    diagnostics["width_ratio"][0, 0] = 3.0
    diagnostics["skewness"][0, 1] = 2.0
    assert not _verdict(diagnostics).passed
    single = _verdict({k: v[:1] for k, v in diagnostics.items()}, n_shards=1)
    # One shard is the full posterior: nothing is combined, so Gaussianity is not needed.
    assert single.passed
