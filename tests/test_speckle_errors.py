"""`SpeckleErrors`: the sandwich whose middle term is the speckle model's own c2 noise."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._nlsq import _build
from heterojax._fit._problem import evaluate_at
from heterojax._fit._speckle_errors import (
    default_samples,
    influence_variance,
    mode_bucket,
    pixel_scores,
)


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 100.0, "D0_sample": 2000.0, "v0": 300.0, "f0": 0.4})
FREE = ("D0_ref", "D0_sample", "v0", "f0")
FIXED = [name for name in TRUTH.parameter_names if name not in FREE]
T = 0.2 * np.arange(1, 61)
PIXELS, COUNTS, CONTRAST = 300, 3.0, 0.3


def _speckle_data(seed, pixels=PIXELS):
    return hj.simulate_speckle(
        TRUTH,
        T,
        q=0.01,
        phi=[0.0, 60.0],
        pixels=pixels,
        counts=COUNTS,
        contrast=CONTRAST,
        key=jr.key(seed),
        correlate=True,
    )


def _problem(data, sigma=None):
    problem, _, _, _ = _build(
        TRUTH,
        data,
        fixed=FIXED,
        bounds=None,
        scaling="individual",
        fourier_order=None,
        contrast=None,
        offset=None,
        sigma=sigma,
        roi=None,
    )
    n_maps = problem.data.shape[0]
    truth = TRUTH.to_dict()
    x = [truth[name] for name in FREE] + [CONTRAST] * n_maps + [1.0] * n_maps
    return problem, jnp.asarray(x)


def _influences(intensities, c2):
    """ψ_p,ij = x_pi x_pj − C_ij (x_pi + x_pj) written out entry by entry."""
    x = intensities
    return x[:, :, None] * x[:, None, :] - c2[None] * (x[:, :, None] + x[:, None, :])


def test_pixel_scores_and_variance_match_the_influences_written_out():
    rng = np.random.default_rng(0)
    intensities = rng.gamma(3.0, 1 / 3.0, size=(50, 12))
    c2 = 1.0 + 0.3 * np.exp(-np.abs(np.subtract.outer(np.arange(12), np.arange(12))) / 4)
    columns = rng.normal(size=(3, 12, 12))
    weights = rng.uniform(0.5, 2.0, size=(12, 12))
    psi = _influences(intensities, c2)
    expected = np.einsum("kij,pij->pk", columns, psi)
    scores = pixel_scores(jnp.asarray(intensities), jnp.asarray(columns), jnp.asarray(c2))
    np.testing.assert_allclose(np.asarray(scores), expected, rtol=1e-10, atol=1e-10)
    variance = influence_variance(jnp.asarray(intensities), jnp.asarray(weights), jnp.asarray(c2))
    assert float(variance) == pytest.approx(np.sum(weights**2 * np.var(psi, axis=0)), rel=1e-10)


@pytest.mark.slow  # 80 simulated datasets (~30 s); the calibration bench scores the errors too
def test_the_meat_is_the_covariance_of_the_score_over_speckle_datasets():
    """The claim the estimator rests on: at the truth, Cov(Jᵀε) over independent speckle
    datasets equals the simulated M. 80 datasets: each direction's variance ratio has a
    sampling sd of about √(2/80) ≈ 0.16, so the mean over the four parameters is checked
    within ±0.3 and each within a factor 2."""
    first = _speckle_data(1000)
    problem, x = _problem(first)
    weights = np.asarray(problem.weights)
    sigma = np.array([1.0 / weights[a][weights[a] > 0].max() for a in range(weights.shape[0])])
    gradients = []
    for seed in range(80):
        problem_s, x = _problem(_speckle_data(seed), sigma=sigma)
        gradients.append(np.asarray(evaluate_at(problem_s, x).gradient))
    empirical = np.cov(np.array(gradients).T)
    problem, x = _problem(first, sigma=sigma)
    estimator = hj.SpeckleErrors(pixels=PIXELS, counts=COUNTS, samples=4096)
    meat = estimator.meat(problem, x)
    gram = np.asarray(evaluate_at(problem, x).gram)
    inverse = np.linalg.pinv(gram)
    ratios = []
    for i in range(len(FREE)):
        direction = inverse[:, i]
        ratios.append(direction @ empirical @ direction / (direction @ meat @ direction))
    assert abs(np.mean(ratios) - 1.0) < 0.3, ratios
    assert all(0.5 < ratio < 2.0 for ratio in ratios), ratios


@pytest.mark.slow
def test_errors_do_not_depend_on_sigma_and_read_pixels_from_the_residuals():
    data = _speckle_data(7)
    problem, x = _problem(data, sigma=np.array([0.01, 0.02]))
    scaled, _ = _problem(
        data, sigma=np.array([0.03, 0.06])
    )  # one factor: the estimator is the same
    for estimator in (hj.SpeckleErrors(pixels=PIXELS, counts=COUNTS), hj.SpeckleErrors()):
        inverse = np.linalg.pinv(np.asarray(evaluate_at(problem, x).gram))
        inverse_scaled = np.linalg.pinv(np.asarray(evaluate_at(scaled, x).gram))
        one = estimator.covariance(problem, x, inverse, 1.0)
        two = estimator.covariance(scaled, x, inverse_scaled, 1.0)
        k = len(FREE)
        np.testing.assert_allclose(np.diag(one)[:k], np.diag(two)[:k], rtol=1e-5)
    # At the truth the residuals are the noise: the pixels read off them are the true count
    # within the scatter of Σ ε² over one map of correlated entries.
    noise = hj.SpeckleErrors(counts=COUNTS, samples=4096).noise(problem, x)
    assert np.all((noise.pixels > 0.6 * PIXELS) & (noise.pixels < 1.6 * PIXELS)), noise.pixels


def test_fit_nlsq_takes_the_speckle_errors_by_name():
    """On speckle data the formal errors are too small for the flow (`test_nlsq_errors`); the
    speckle sandwich is wider there and reports itself."""
    ratios = []
    for seed in range(2):
        result = hj.fit_nlsq(
            TRUTH, _speckle_data(100 + seed), fixed=FIXED, starts=1, errors="speckle"
        )
        assert result.errors == "SpeckleErrors"
        assert all(np.isfinite(result.stderr[name]) for name in FREE)
        ratios.append(result.stderr["v0"] / result.formal_stderr["v0"])
    assert min(ratios) > 1.5, ratios


@pytest.mark.parametrize(
    "options, message",
    [
        ({"pixels": 0}, "pixels"),
        ({"counts": -1.0}, "counts"),
        ({"counts": float("nan")}, "counts"),
        ({"samples": 4}, "samples"),
    ],
)
def test_bad_settings_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        hj.SpeckleErrors(**options)


def test_pixels_for_other_maps_are_refused_with_the_counts():
    data = _speckle_data(5)
    problem, x = _problem(data)
    with pytest.raises(ValueError, match="one per map"):
        hj.SpeckleErrors(pixels=(100, 200, 300)).noise(problem, x)


def test_one_simulation_serves_the_fit_after_sigma_is_rescaled(monkeypatch):
    """`fit_nlsq` rescales σ by a common factor after the errors: the quality report's χ²
    differences reuse the simulation (same pixel counts, scores scaled by c⁴), and any other
    change of the weights simulates anew."""
    data = _speckle_data(3)
    problem, x = _problem(data)
    estimator = hj.SpeckleErrors(samples=256)
    calls = []
    simulate = hj.SpeckleErrors._simulated_noise
    monkeypatch.setattr(
        hj.SpeckleErrors,
        "_simulated_noise",
        lambda self, *args: calls.append(1) or simulate(self, *args),
    )
    first = estimator.noise(problem, x)
    rescaled = eqx.tree_at(lambda p: p.weights, problem, problem.weights / 3.0)
    again = estimator.noise(rescaled, x)
    assert len(calls) == 1
    np.testing.assert_allclose(again.pixels, first.pixels)
    np.testing.assert_allclose(again.scores, first.scores / 81.0, rtol=1e-12)
    reshaped = eqx.tree_at(
        lambda p: p.weights, problem, problem.weights * np.array([1.0, 2.0])[:, None, None]
    )
    estimator.noise(reshaped, x)
    assert len(calls) == 2


def test_default_samples_share_a_budget_over_many_maps_and_modes_come_in_buckets():
    assert [default_samples(n) for n in (1, 3, 16, 42, 1000)] == [1024, 1024, 1024, 391, 256]
    buckets = [mode_bucket(np.r_[np.ones(m), np.zeros(100 - m)]) for m in range(1, 101)]
    assert all(b >= m for m, b in enumerate(buckets, start=1))
    assert all(b <= max(2, 1.5 * m) for m, b in enumerate(buckets, start=1))
    assert len(set(buckets)) <= 14
