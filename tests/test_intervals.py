"""`NLSQResult.intervals`: central intervals from the errors, on the log scale for a power law's
prefactor whose exponent is free (its estimate is log-normal, not normal)."""

import math

import equinox as eqx
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from test_cli_helpers import tiny_fit

import heterojax as hj
from heterojax._fit._intervals import normal_quantile, parameter_intervals


BOUNDS = {"D0_sample": (0.0, 1e6), "alpha_sample": (-2.0, 2.0), "f0": (0.0, 1.0)}


def test_linear_interval_unless_the_exponent_is_free():
    values, errors = {"D0_sample": 100.0, "f0": 0.5}, {"D0_sample": 30.0, "f0": 0.1}
    z = normal_quantile(0.9)
    assert z == pytest.approx(1.6448536, rel=1e-7)
    fixed_exponent = parameter_intervals(values, errors, BOUNDS, ("D0_sample", "f0"), 0.9)
    assert fixed_exponent["D0_sample"] == pytest.approx((100 - 30 * z, 100 + 30 * z))
    assert fixed_exponent["f0"] == pytest.approx((0.5 - 0.1 * z, 0.5 + 0.1 * z))
    free = ("D0_sample", "alpha_sample", "f0")
    log_normal = parameter_intervals(values, errors, BOUNDS, free, 0.9)
    # The union of the normal and log-normal intervals: the normal lower end, the log-normal
    # upper end.
    assert log_normal["D0_sample"] == pytest.approx((100 - 30 * z, 100 * math.exp(z * 0.3)))
    assert log_normal["f0"] == fixed_exponent["f0"]
    chosen = parameter_intervals(values, errors, BOUNDS, free, 0.9, log_scale=("f0",))
    assert chosen["D0_sample"] == fixed_exponent["D0_sample"]
    assert chosen["f0"] == pytest.approx((0.5 - 0.1 * z, 0.5 * math.exp(z * 0.2)))


def test_intervals_are_clipped_to_the_bounds_and_infinite_errors_give_the_range():
    values = {"D0_sample": 10.0, "f0": 0.95, "alpha_sample": 0.1}
    errors = {"D0_sample": 20.0, "f0": 0.2, "alpha_sample": math.inf}
    intervals = parameter_intervals(values, errors, BOUNDS, ("D0_sample", "f0", "alpha_sample"))
    assert intervals["f0"][1] == 1.0
    assert intervals["alpha_sample"] == (-2.0, 2.0)
    linear = parameter_intervals(values, errors, BOUNDS, ("D0_sample", "f0"))
    assert linear["D0_sample"][0] == 0.0  # 10 − 1.645·20 < 0: the bound


@pytest.mark.parametrize("level", [0.0, 1.0, -0.5, 1.5, math.nan])
def test_level_must_be_a_probability(level):
    with pytest.raises(ValueError, match="level"):
        normal_quantile(level)


@settings(max_examples=50, deadline=None)
@given(
    value=st.floats(1e-3, 1e5),
    relative=st.floats(1e-3, 10.0),
    levels=st.tuples(st.floats(0.05, 0.95), st.floats(0.05, 0.95)),
    exponent_free=st.booleans(),
)
def test_intervals_hold_the_estimate_and_nest_with_the_level(
    value, relative, levels, exponent_free
):
    free = ("D0_sample", "alpha_sample") if exponent_free else ("D0_sample",)
    errors = {"D0_sample": relative * value}
    narrow, wide = (
        parameter_intervals({"D0_sample": value}, errors, BOUNDS, free, level)["D0_sample"]
        for level in sorted(levels)
    )
    assert narrow[0] <= value <= narrow[1]
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]
    assert 0.0 <= wide[0] and wide[1] <= 1e6


def _coverage(estimates, errors, truth, free=("D0_sample", "alpha_sample"), level=0.9):
    hits = 0
    for value, error in zip(estimates, errors):
        low, high = parameter_intervals(
            {"D0_sample": value}, {"D0_sample": error}, BOUNDS, free, level
        )["D0_sample"]
        hits += low <= truth <= high
    return hits / len(estimates)


@pytest.mark.parametrize("sd_alpha", [0.05, 0.5])
def test_intervals_cover_a_prefactor_carried_by_an_uncertain_exponent(sd_alpha):
    """D0 = D(t*)·t*^(−α): the data fix ln D(t*) and α (normal), the prefactor at t = 1 s far
    before t* is log-normal. Its linear error (the delta method at the estimate) then misses
    large truths (σ_ln ≈ 2); the interval holds at least its level, and about it where the
    two models agree (σ_ln ≈ 0.2)."""
    rng = np.random.default_rng(0)
    n, t_star, alpha, rate = 20_000, 60.0, 0.1, 50.0
    sd_log_rate = 0.05
    log_rate = np.log(rate) + sd_log_rate * rng.standard_normal(n)
    alphas = alpha + sd_alpha * rng.standard_normal(n)
    d0 = np.exp(log_rate - alphas * np.log(t_star))
    d0_true = rate * t_star**-alpha
    stderr = d0 * math.hypot(sd_log_rate, sd_alpha * math.log(t_star))
    covered = _coverage(d0, stderr, d0_true)
    linear = np.mean(np.abs(d0 - d0_true) <= normal_quantile(0.9) * stderr)
    assert covered >= 0.89
    if sd_alpha < 0.1:
        assert covered <= 0.93
    else:
        assert linear < 0.8  # the symmetric interval misses the upper tail


def test_a_static_reference_stays_inside_its_interval():
    """D0_ref = 0 (at its bound) with alpha_ref free: the estimate is not log-normal (the rate
    is not determined away from 0), and a log-normal interval can never hold 0; the union's
    normal lower end does."""
    rng = np.random.default_rng(1)
    error = 20.0
    estimates = np.abs(error * rng.standard_normal(4000))  # an estimate at a lower bound 0
    assert _coverage(estimates, np.full(4000, error), 0.0) >= 0.89
    log_only_lows = estimates * np.exp(-normal_quantile(0.9) * error / estimates)
    assert np.mean(log_only_lows <= 0.0) < 0.01  # 0 only where exp underflows


def test_result_intervals_the_summary_column_and_the_record(tmp_path):
    data, result, _ = tiny_fit()
    intervals = result.intervals(0.9)
    physics = result.parameters()
    free_physics = [name for name in result.names if name in physics]
    assert sorted(intervals) == sorted(free_physics)
    for name in free_physics:
        low, high = intervals[name]
        assert low <= physics[name] <= high
    assert "90 % interval" in result.summary()
    wider = eqx.tree_at(
        lambda r: r.stderr, result, {k: 2 * np.asarray(v) for k, v in result.stderr.items()}
    ).intervals(0.9)
    for name in free_physics:
        assert wider[name][0] <= intervals[name][0] and intervals[name][1] <= wider[name][1]
    hj.save_result(result, data, tmp_path)
    record = hj.load_result(tmp_path).info["intervals_90"]
    assert sorted(record) == sorted(intervals)
    for name, ends in record.items():
        assert ends == pytest.approx(list(intervals[name]))


def test_an_angle_interval_is_read_modulo_its_period():
    values, stderr = {"phi0": 88.0}, {"phi0": 5.0}
    bounds = {"phi0": (-90.0, 90.0)}
    periods = {"phi0": 180.0}
    low, high = parameter_intervals(values, stderr, bounds, ("phi0",), 0.9, periods=periods)["phi0"]
    assert (low, high) == pytest.approx((88.0 - 1.6448536 * 5.0, 88.0 + 1.6448536 * 5.0))
    clipped = parameter_intervals(values, stderr, bounds, ("phi0",), 0.9)["phi0"]
    assert clipped[1] == 90.0  # a bounded parameter's interval stops at its bound
    # An error that spans the period gives the whole box.
    whole = parameter_intervals(values, {"phi0": 60.0}, bounds, ("phi0",), 0.9, periods=periods)
    assert whole["phi0"] == (-90.0, 90.0)
