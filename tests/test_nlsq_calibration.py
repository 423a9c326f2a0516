"""Error calibration on speckle-level data (issue 13), on `bench_calibration`'s suite.

The per-parameter figures (≥ 40 datasets) come from `benchmarks/bench_calibration.py`. Both
tests are slow: one runs a few cases and checks what holds there with margin (the default,
frame-clustered errors are several times closer to the scatter than the formal ones; the
estimated σ gives a reduced χ² near 1 at the truth where the local estimate does not), the
other the benchmark's 40 held-out datasets against the issue's target band.
"""

import jax
import numpy as np
import pytest
from _calibration_cases import calibration_cases, coverage, interval_hits, z_scores

import heterojax as hj
from heterojax._fit._problem import estimate_noise


def _truth_reduced_chi2(case, data, sigma) -> float:
    clean = np.asarray(
        case.truth.c2(case.t, q=case.q, phi=case.phi, contrast=case.contrast, offset=1.0)
    )
    mask = np.asarray(data.mask)
    scaled = (np.asarray(data.c2) - clean) / np.reshape(np.asarray(sigma, float), (-1, 1, 1))
    return float(np.mean(scaled[mask] ** 2))


@pytest.mark.slow
def test_default_errors_cover_far_better_than_formal_errors_on_speckle_data():
    cases = [case for case in calibration_cases(12, seed=2) if case.n_frames <= 250][:6]
    z, z_formal, truth_chi2, local_chi2 = [], [], [], []
    for case in cases:
        data = case.data()
        result = hj.fit_nlsq(case.truth, data, fixed=list(case.fixed), starts=1)
        assert result.errors == "FrameClusteredErrors"
        scores = z_scores(case, result)
        z += list(scores.values())
        z_formal += [scores[n] * result.stderr[n] / result.formal_stderr[n] for n in scores]
        truth_chi2.append(_truth_reduced_chi2(case, data, result.sigma))
        local_chi2.append(
            _truth_reduced_chi2(
                case, data, estimate_noise(np.asarray(data.c2), np.asarray(data.mask))
            )
        )
    honest, formal = coverage(z), coverage(z_formal)
    assert formal["median_abs_z"] > 3.0  # the independent-noise errors are far too small
    assert honest["median_abs_z"] < formal["median_abs_z"] / 3
    assert honest["cover_90"] > formal["cover_90"] + 0.3
    assert abs(np.median(truth_chi2) - 1.0) < abs(np.median(local_chi2) - 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("errors", ["speckle", "frame-clustered"])
def test_forty_speckle_datasets_are_calibrated(errors):
    # Issue 13's target over the benchmark's suite (seed 1, the held-out draw): the 90 %
    # intervals cover 82–96 % of the truths, median |z| 0.5–0.85, and the σ estimated from
    # the data gives a reduced χ² near 1 at the truth. Measured: the speckle errors 91.7 %
    # (median 0.53); the default frame-clustered ones 91.7 % (median 0.60), with the
    # whole-map term (their blocks alone: 77.5 % on the seed-0 draw, median 0.95).
    # `result.intervals(0.9)` (log-scale for a power law's prefactor with its exponent free)
    # must hold the same band: measured 93.4 % with the default errors.
    z, truth_chi2, held = [], [], []
    for case in calibration_cases(40, seed=1):
        jax.clear_caches()  # 40 shapes: keep one case's programs in memory at a time
        data = case.data()
        result = hj.fit_nlsq(case.truth, data, fixed=list(case.fixed), starts=1, errors=errors)
        z += list(z_scores(case, result).values())
        held += list(interval_hits(case, result, 0.9).values())
        truth_chi2.append(_truth_reduced_chi2(case, data, result.sigma))
    figures = coverage(z)
    assert figures["n"] >= 160, figures
    assert 0.82 <= figures["cover_90"] <= 0.96, figures
    assert len(held) >= 160 and 0.82 <= np.mean(held) <= 0.96, np.mean(held)
    assert 0.5 <= figures["median_abs_z"] <= 0.85, figures
    assert abs(np.median(truth_chi2) - 1.0) < 0.15, np.median(truth_chi2)


def test_a_photon_starved_detector_changes_only_the_pixels_and_counts_of_a_case():
    """`detector="photon-starved"` draws the same physics, geometry and data seed as the
    speckle suite, with its own pixels and counts ranges (the bench's `--detector`)."""
    speckle = calibration_cases(8, seed=3)
    starved = calibration_cases(8, seed=3, detector="photon-starved")
    for one, other in zip(speckle, starved, strict=True):
        assert one.truth.to_dict() == other.truth.to_dict()
        np.testing.assert_array_equal(one.t, other.t)
        np.testing.assert_array_equal(one.phi, other.phi)
        assert (one.q, one.contrast, one.free, one.data_seed) == (
            other.q,
            other.contrast,
            other.free,
            other.data_seed,
        )
        assert 100 <= one.pixels <= 2000 and 1.0 <= one.counts <= 50.0
        assert 1000 <= other.pixels <= 10000 and 0.01 <= other.counts <= 1.0
    with pytest.raises(ValueError, match="detector"):
        calibration_cases(2, detector="bright")


def test_the_whole_period_of_phi0_changes_only_phi0():
    """`phi0_span=90` draws phi0 over its whole period and leaves every other draw of a case as
    it was (so a suite with the whole period compares case by case with the default one)."""
    default, whole = calibration_cases(12), calibration_cases(12, phi0_span=90.0)
    for a, b in zip(default, whole):
        first = {k: float(v) for k, v in a.truth.to_dict().items()}
        second = {k: float(v) for k, v in b.truth.to_dict().items()}
        assert second["phi0"] == pytest.approx(first["phi0"] * 1.5, rel=1e-12)
        assert {k: v for k, v in first.items() if k != "phi0"} == {
            k: v for k, v in second.items() if k != "phi0"
        }
        assert (a.q, a.pixels, a.counts, a.contrast, a.free, a.data_seed) == (
            b.q, b.pixels, b.counts, b.contrast, b.free, b.data_seed
        )  # fmt: skip
        np.testing.assert_array_equal(a.phi, b.phi)
        np.testing.assert_array_equal(a.t, b.t)
    assert max(abs(float(c.truth.to_dict()["phi0"])) for c in whole) > 60.0
