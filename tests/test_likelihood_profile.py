"""Profile-likelihood intervals (`heterojax.profile_intervals`)."""

import jax.random as jr
import numpy as np
import pytest

import heterojax as hj


TRUTH = hj.HeterodyneModel().replace(D0_ref=200.0, D0_sample=2000.0, v0=30.0, f0=0.3, phi0=5.0)
FREE = ("D0_sample", "v0", "f0", "phi0")
T = 0.5 * np.arange(1, 33)


def _fit(truth, free, seed):
    data = hj.simulate(
        truth, T, q=0.01, phi=[0.0, 60.0, 120.0], contrast=0.3, offset=1.0, noise=0.01,
        key=jr.key(seed),
    )  # fmt: skip
    fixed = [name for name in hj.PARAMETER_NAMES if name not in free]
    return data, hj.fit_nlsq(truth, data, fixed=fixed, starts=1)


@pytest.fixture(scope="module")
def profiled():
    data, result = _fit(TRUTH, FREE, seed=1)
    return data, result, hj.profile_intervals(result, data, ["v0"], level=0.9)


def test_where_chi2_is_quadratic_the_profile_interval_is_the_standard_one(profiled):
    _, result, intervals = profiled
    wald = result.intervals(0.9)
    for name, interval in intervals.items():
        sigma = result.stderr[name]
        assert interval.closed == (True, True)
        assert not interval.lower_minimum
        # a nearly quadratic χ² (32 frames: v0's profile leans by ~0.1 σ)
        assert abs(interval.low - wald[name][0]) < 0.25 * sigma, (name, interval, wald[name])
        assert abs(interval.high - wald[name][1]) < 0.25 * sigma, (name, interval, wald[name])
        width, standard = interval.high - interval.low, wald[name][1] - wald[name][0]
        assert width == pytest.approx(standard, rel=0.05)
        # the statistic is 0 at the estimate and grows on both sides
        at_estimate = np.argmin(np.abs(interval.values - result.parameters()[name]))
        assert interval.statistic[at_estimate] == pytest.approx(0.0, abs=1e-6)
        assert interval.statistic[0] > interval.threshold < interval.statistic[-1]


def test_the_ends_are_where_the_adjusted_statistic_reaches_the_threshold(profiled):
    data, result, intervals = profiled
    interval = intervals["v0"]
    fixed = [name for name in hj.PARAMETER_NAMES if name not in FREE] + ["v0"]
    for end in (interval.low, interval.high):
        refit = hj.fit_nlsq(
            result.model.replace(v0=end), data, fixed=fixed, starts=1, sigma=result.sigma,
            errors="formal",
        )  # fmt: skip
        statistic = (refit.chi2 - result.chi2) / interval.adjustment  # σ known: s² = 1
        assert statistic == pytest.approx(interval.threshold, rel=0.05)
    assert interval.threshold == pytest.approx(1.6448536269514722**2)


@pytest.mark.slow
def test_a_profile_that_stays_low_up_to_a_bound_ends_there():
    static = TRUTH.replace(D0_ref=0.0)
    data, result = _fit(static, ("D0_ref", "D0_sample", "v0"), seed=2)
    interval = hj.profile_intervals(result, data, ["D0_ref"])["D0_ref"]
    assert interval.low == pytest.approx(result.bounds["D0_ref"][0])
    assert interval.closed[0] is False and interval.closed[1] is True
    assert interval.high > result.parameters()["D0_ref"]


def test_bad_requests_are_refused(profiled):
    data, result, _ = profiled
    with pytest.raises(ValueError, match="free physics parameters"):
        hj.profile_intervals(result, data, ["D0_ref"])
    with pytest.raises(ValueError, match="level"):
        hj.profile_intervals(result, data, ["v0"], level=1.5)
    with pytest.raises(TypeError, match="NLSQResult"):
        hj.profile_intervals(data, data)
