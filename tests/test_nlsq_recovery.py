"""fit_nlsq recovery (issue 12): the global basin from a plain start, and a saturating truth kept.

The cases and the criterion are those of the recovery benchmark (`benchmarks/bench_recovery.py`),
both in `_recovery_cases` (its docstring states them). The recovery tests are slow.
"""

import math

import numpy as np
import pytest
from _recovery_cases import (
    CATEGORIES,
    RecoveryCase,
    _mirrored,
    _swapped,
    basin_verdict,
    chi2_tolerance,
    held_out_case_fringes_that_end_early,
    held_out_case_low_ranked_basin,
    held_out_case_slow_minor_component,
    held_out_case_static_reference,
    held_out_case_wrong_labelling,
    issue_case_saturating,
    model_chi2,
    recovery_cases,
    truth_chi2,
)

import heterojax as hj


# The first 8 cases: one of every category but `many_angles` (the costliest to fit).
N_SUBSET = 8
# At most one miss in 8: the issue's target is ≥ 95 % over the full suite.
MAX_SUBSET_MISSES = 1


def test_subset_covers_the_categories():
    cases = recovery_cases(N_SUBSET)
    assert [case.category for case in cases] == list(CATEGORIES[:N_SUBSET])
    assert [case.name for case in cases] == [case.name for case in recovery_cases(9)[:N_SUBSET]]


@pytest.mark.slow
def test_criterion_chi2_is_the_fit_objective():
    """The criterion's χ² (mask, σ) is `fit_nlsq`'s: recomputed at the fitted model, contrast
    and offset it equals `result.chi2`, whatever the fit found. A small case, one local fit."""
    case = next(c for c in recovery_cases(9) if c.category == "few_frames")
    data = case.data()
    result = hj.fit_nlsq(case.start(), data, fixed=case.fixed, starts=1)
    recomputed = model_chi2(result.model, result.contrast, result.offset, data)
    assert recomputed == pytest.approx(result.chi2, rel=1e-9)
    # The truth's χ² is a sum of n_points squared standard normals: within 5σ of its mean.
    chi2 = truth_chi2(case, data)
    assert abs(chi2 - data.n_points) < 5 * math.sqrt(2 * data.n_points)


def _two_angle_case() -> RecoveryCase:
    """A small case whose truth has every exact symmetry: two angles, v_offset = 0, f1 = 0."""
    truth = hj.HeterodyneModel().replace(
        D0_ref=300.0, D0_sample=3000.0, alpha_sample=0.3, v0=40.0, f0=0.2, f3=0.1, phi0=20.0
    )
    return RecoveryCase(
        name="two-angle",
        category="test",
        features=("test",),
        truth=truth,
        t=0.1 * np.arange(1, 41, dtype=np.float64),
        q=0.01,
        phi=np.array([10.0, 75.0]),
        contrast=np.array([0.3, 0.25]),
        offset=np.array([1.0, 1.01]),
        noise=0.003,
    )


class _FakeResult:
    """What `basin_verdict` reads from an `NLSQResult`: a fit at `values` with errors `stderr`."""

    def __init__(self, case, values, stderr, chi2):
        self.names = (*case.free, "contrast[a]", "contrast[b]", "offset[a]", "offset[b]")
        self.stderr = dict(stderr)
        self.chi2 = chi2
        self._values = values

    def parameters(self):
        return dict(self._values)


@pytest.mark.parametrize("transform", ["exchanged", "mirrored", "both"])
def test_criterion_symmetries_are_exact_and_accepted(transform):
    """Each labelling the criterion accepts gives the same maps as the truth (to rounding), and
    a fit there (phi0 shifted by 180° as well, f0/f3 split differently) counts as reached."""
    case = _two_angle_case()
    truth = case.truth_values()
    values = _swapped(truth) if transform in ("exchanged", "both") else dict(truth)
    if transform in ("mirrored", "both"):
        mirrored = _mirrored(values, case.phi)
        assert mirrored is not None
        values = mirrored
    kwargs = dict(q=case.q, phi=case.phi, contrast=case.contrast, offset=case.offset)
    np.testing.assert_allclose(
        hj.HeterodyneModel.from_dict(values).c2(case.t, **kwargs),
        case.truth.c2(case.t, **kwargs),
        rtol=0,
        atol=1e-12,
    )
    share = values["f0"] + values["f3"]
    fitted = {**values, "f0": 0.7 * share, "f3": 0.3 * share}
    fitted["phi0"] = fitted["phi0"] - 180.0 if fitted["phi0"] > 0 else fitted["phi0"] + 180.0
    stderr = {name: 1e-3 * (abs(truth[name]) + 1) for name in case.free}
    verdict = basin_verdict(case, _FakeResult(case, fitted, stderr, 100.0), chi2_truth=100.0)
    assert verdict.reached, verdict
    assert verdict.worst_z < 1e-6


def test_criterion_rejects_a_distinct_solution():
    case = _two_angle_case()
    truth = case.truth_values()
    stderr = {name: 1e-3 * (abs(truth[name]) + 1) for name in case.free}
    n_free = len(case.free) + 4

    def verdict(shift, delta_chi2=0.0):
        fitted = {**truth, "alpha_sample": truth["alpha_sample"] + shift * stderr["alpha_sample"]}
        result = _FakeResult(case, fitted, stderr, 100.0 + delta_chi2)
        return basin_verdict(case, result, chi2_truth=100.0)

    assert verdict(4.9).reached
    assert not verdict(5.1).reached
    assert verdict(5.1).worst == "alpha_sample"
    assert verdict(0.0, chi2_tolerance(n_free) - 0.01).reached
    assert not verdict(0.0, chi2_tolerance(n_free) + 0.01).reached
    # An undetermined parameter passes the z test but is listed.
    undetermined = basin_verdict(
        case,
        _FakeResult(case, {**truth, "beta": 1.0}, {**stderr, "beta": math.inf}, 100.0),
        chi2_truth=100.0,
    )
    assert undetermined.reached and undetermined.undetermined == ("beta",)


@pytest.mark.slow
def test_default_fit_reaches_the_global_basin_from_a_plain_start():
    """Default settings from the `HeterodyneModel()` defaults: at least 7 of 8 cases reach the
    global basin (χ² ≤ χ²_truth + 2√(2·n_free) + 1 and every free |z| ≤ 5)."""
    misses = []
    for case in recovery_cases(N_SUBSET):
        data = case.data()
        result = hj.fit_nlsq(case.start(), data, fixed=case.fixed)
        verdict = basin_verdict(case, result, truth_chi2(case, data))
        if not verdict.reached:
            misses.append(
                f"{case.name}: Δχ² = {verdict.delta_chi2:.4g} (tol {verdict.tolerance:.3g}), "
                f"worst {verdict.worst} |z| = {verdict.worst_z:.3g}, fitted {verdict.fitted}, "
                f"truth {verdict.truth}"
            )
    assert len(misses) <= MAX_SUBSET_MISSES, "\n".join(misses)


@pytest.mark.slow
def test_saturating_fraction_fit_stays_at_the_truth():
    """Issue 12's saturating case (f_s = f0·exp(f1·t) reaches 1 mid-window and stays clipped)
    at 23 angles × 300 frames, started at the truth: the objective is the likelihood, so the
    fit stays (every free |z| ≤ 4, reduced χ² within 2·√(2/dof) of the truth's)."""
    case = issue_case_saturating(frames=300)
    data = case.data()
    result = hj.fit_nlsq(case.start(), data, fixed=case.fixed)
    chi2_truth = truth_chi2(case, data)
    verdict = basin_verdict(case, result, chi2_truth, n_sigma=4.0)
    # Every parameter is determined here; an infinite error would make |z| ≤ 4 vacuous.
    assert verdict.undetermined == (), verdict.undetermined
    assert verdict.worst_z <= 4.0, (verdict.worst, verdict.z, verdict.fitted, verdict.truth)
    reduced_truth = chi2_truth / result.dof
    assert abs(result.reduced_chi2 - reduced_truth) <= 2 * math.sqrt(2 / result.dof), (
        result.reduced_chi2,
        reduced_truth,
    )
    assert np.isfinite(result.chi2)


# Held-out recovery cases where the default search once stopped in a false minimum, and what
# it missed there.
_HELD_OUT_FALSE_MINIMA = {
    # The screening ranks fits that have mostly not converged: the global basin ranks 6th
    # among the distinct basins within the margin (with at most 4 polished the fit stopped
    # 1 632 above the truth's χ²).
    "basin_ranked_low_by_the_screening": held_out_case_low_ranked_basin,
    # A reference with 16 % of the light decaying 10× slower than the flowing sample, the flow
    # a radian or two of phase over the window: the one-time cuts read only the dominant decay
    # and φ0 is a guess (without the minor-slow starts: 33 above the global χ², φ0 off by 90°).
    "minor_slow_component_under_a_slow_flow": held_out_case_slow_minor_component,
    # A static reference displaced by the sample by mid-window: the screening's best fit puts
    # the sample's decay on the reference, and only the hop to the exchanged labelling with a
    # saturating fraction and a slow vanishing reference reaches the global minimum (without
    # it: 90 680 above the truth's χ²).
    "decay_on_the_wrong_component": held_out_case_wrong_labelling,
    # A static reference with most of the light under a slow flow: the flow reads as extra
    # decay, and fits from the estimate settle on a slowly decaying reference and a faster flow
    # (without the static-reference starts: 47 above the global χ²).
    "static_reference_under_a_slow_flow": held_out_case_static_reference,
    # A fraction that saturates early, so two of the three age windows show no fringes (without
    # φ0 read from the window that shows the flow: φ0 off by 90°, 508 900 above the truth's χ²).
    "fringes_that_end_early": held_out_case_fringes_that_end_early,
}


@pytest.mark.slow
@pytest.mark.parametrize("held_out", _HELD_OUT_FALSE_MINIMA.values(), ids=_HELD_OUT_FALSE_MINIMA)
def test_the_default_search_reaches_the_global_basin_of_former_false_minima(held_out):
    case = held_out()
    data = case.data()
    result = hj.fit_nlsq(case.start(), data, fixed=case.fixed)
    verdict = basin_verdict(case, result, truth_chi2(case, data))
    assert verdict.reached, verdict.as_dict()
