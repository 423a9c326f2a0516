"""fit_nlsq recovery (issue 12): the global basin from a plain start, and a saturating truth kept.

The cases and the criterion are those of the recovery benchmark (`benchmarks/bench_recovery.py`),
both in `_recovery_cases` (its docstring states them). The recovery tests are slow.
"""

import math

import numpy as np
import pytest
from _recovery_cases import (
    CATEGORIES,
    basin_verdict,
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
