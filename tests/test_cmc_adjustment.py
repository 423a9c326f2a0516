"""Issue 14 point 2: the likelihood adjustment of `fit_cmc` (composite likelihood → honest
width)."""

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._adjustment import (
    box_narrowing,
    curvature_map,
    honest_covariance,
    interior_parameters,
    laplace_mismatch,
    magnitude_weight,
    map_stretch,
    resolve_adjustment,
)
from heterojax._cmc._posterior import (
    ShardPosterior,
    gather_shard_data,
    gauss_newton_information,
    joint_information,
)
from heterojax._cmc._shards import make_shards


def _spd(rng, p, spread):
    """A random symmetric positive-definite matrix with eigenvalues over `spread` decades."""
    vectors, _ = np.linalg.qr(rng.normal(size=(p, p)))
    return (vectors * np.logspace(0, spread, p)) @ vectors.T


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curvature_map_gives_the_honest_curvature_of_a_quadratic(seed):
    rng = np.random.default_rng(seed)
    p = 5
    information = _spd(rng, p, 4)  # H, correlated and badly scaled as heterodyne fits are
    # C_H = L⁻ᵀ S L⁻¹ (H = L Lᵀ), inflated by 1–100 along other axes than H's
    inverse_factor = np.linalg.inv(np.linalg.cholesky(information))
    honest = inverse_factor.T @ _spd(rng, p, 2) @ inverse_factor
    center = rng.normal(size=p)  # θ̂
    mode = center + 0.1 * rng.normal(size=p)  # ℓ's own maximum need not be θ̂
    linear_map = jnp.asarray(curvature_map(information, honest))

    def log_likelihood(theta):
        return -0.5 * (theta - mode) @ jnp.asarray(information) @ (theta - mode)

    def adjusted(theta):
        return log_likelihood(center + linear_map @ (theta - center))

    # A quadratic has one curvature everywhere: −∇²ℓ_A = C_H⁻¹ exactly (rounding only, which
    # the condition numbers, 1e4 and 1e3, leave well below 1e-8).
    curvature = -np.asarray(jax.hessian(adjusted)(jnp.asarray(rng.normal(size=p))))
    np.testing.assert_allclose(curvature, np.linalg.inv(honest), rtol=1e-8, atol=0)
    np.testing.assert_allclose(np.linalg.inv(curvature), honest, rtol=1e-8)
    # Not positive definite: no map.
    assert curvature_map(-information, honest) is None


def test_curvature_map_floors_a_degenerate_sandwich():
    rng = np.random.default_rng(3)
    p = 4
    information = _spd(rng, p, 3)
    lower = np.linalg.cholesky(information)
    vectors, _ = np.linalg.qr(rng.normal(size=(p, p)))
    # Inflations 1e-9 (a rank-deficient meat), 0.5, 10, 100 along the whitened axes `vectors`.
    inflations = np.array([1e-9, 0.5, 10.0, 100.0])
    inverse_lower = np.linalg.inv(lower)
    honest = inverse_lower.T @ (vectors * inflations) @ vectors.T @ inverse_lower
    linear_map = curvature_map(information, honest)
    adjusted = linear_map.T @ information @ linear_map  # H_A = Aᵀ H A
    # Whitened by H, the adjusted covariance has the inflations floored at 1.
    whitened = lower.T @ np.linalg.inv(adjusted) @ lower
    expected = (vectors * np.maximum(inflations, 1.0)) @ vectors.T
    np.testing.assert_allclose(whitened, expected, atol=1e-8)
    # Another floor: the inflations above it are kept.
    linear_map = curvature_map(information, honest, min_inflation=0.1)
    adjusted = linear_map.T @ information @ linear_map
    np.testing.assert_allclose(
        np.linalg.eigvalsh(lower.T @ np.linalg.inv(adjusted) @ lower),
        np.maximum(inflations, 0.1),
        rtol=1e-6,
    )


# A small problem with an NLSQ warm start whose errors are the frame-clustered sandwich.
TRUTH = hj.HeterodyneModel.from_dict(
    {"D0_ref": 0.0, "D0_sample": 2e3, "alpha_sample": 0.0, "v0": 60.0, "f0": 0.4}
)
FREE = ("D0_sample", "v0", "f0")


@pytest.fixture(scope="module")
def warm_start():
    t = 0.25 * np.arange(1, 41)
    data = hj.simulate(
        TRUTH, t, q=0.012, phi=[0.0, 50.0], contrast=0.3, offset=1.0, noise=0.01, key=jr.key(5)
    )
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    nlsq = hj.fit_nlsq(
        TRUTH, data, fixed=fixed, scaling="constant", starts=1, errors="frame-clustered"
    )
    return data, nlsq


def _posterior_and_shards(nlsq, data, n_shards):
    """The unadjusted `ShardPosterior` of the NLSQ problem, its shards and θ̂."""
    from heterojax._cmc._fit import _problem_setup

    setup = _problem_setup(
        nlsq.model, data, nlsq, fixed=None, bounds=None, scaling=None, fourier_order=None,
        contrast=None, offset=None, sigma=None, priors="uniform", prior_width=2.0, roi=None,
    )  # fmt: skip
    shards = make_shards(np.asarray(data.mask), n_shards, strategy="random", seed=0)
    shard_data = gather_shard_data(shards, np.asarray(data.c2), setup.sigma)
    p = len(setup.problem.names)
    posterior = ShardPosterior(
        problem=setup.problem,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        tempering=jnp.asarray(1.0 / n_shards),
        prior_mean=jnp.zeros(p),
        prior_precision=jnp.zeros(p),
    )
    center = setup.problem.transform.to_unconstrained(jnp.asarray(setup.center_x))
    return posterior, shard_data, center


@pytest.mark.slow
def test_curvature_adjustment_gives_the_nlsq_covariance_in_the_shard_posterior(warm_start):
    data, nlsq = warm_start
    posterior, shard_data, center = _posterior_and_shards(nlsq, data, n_shards=2)
    assert posterior.problem.names == nlsq.names
    # No floor: on independent noise the sandwich is ≈ C_F, narrower along some directions.
    adjusted = hj.CurvatureAdjustment(min_inflation=0.0).adjust(
        posterior, shard_data=shard_data, nlsq=nlsq, center=center
    )
    assert adjusted.likelihood_map is not None
    # The Gauss–Newton information of the adjusted likelihood at θ̂, mapped back to x, is the
    # inverse of the NLSQ fit's (honest) covariance: J_A = J·A, so J_Aᵀ P J_A = Aᵀ H A = H_A.
    information = np.asarray(gauss_newton_information(adjusted, center, shard_data))
    derivative = np.asarray(posterior.problem.transform.derivative(center))
    covariance_x = np.linalg.inv(information) * np.outer(derivative, derivative)
    np.testing.assert_allclose(covariance_x, np.asarray(nlsq.covariance), rtol=1e-6)
    # At θ̂ the likelihood is unchanged; the prior is not adjusted.
    first = jax.tree.map(lambda x: x[0], shard_data)
    np.testing.assert_allclose(
        adjusted.log_likelihood(center, first), posterior.log_likelihood(center, first)
    )
    assert adjusted.log_prior(center + 0.1) == posterior.log_prior(center + 0.1)
    # With the default floor the adjusted covariance is never below the formal one.
    floored = hj.CurvatureAdjustment().adjust(
        posterior, shard_data=shard_data, nlsq=nlsq, center=center
    )
    information_floored = np.asarray(gauss_newton_information(floored, center, shard_data))
    raw_information = np.asarray(gauss_newton_information(posterior, center, shard_data))
    difference = np.linalg.inv(information_floored) - np.linalg.inv(raw_information)
    assert np.min(np.linalg.eigvalsh(difference)) > -1e-8 * np.max(np.abs(difference))


def test_magnitude_adjustment_matches_the_trace(warm_start):
    data, nlsq = warm_start
    posterior, shard_data, center = _posterior_and_shards(nlsq, data, n_shards=1)
    adjusted = hj.MagnitudeAdjustment().adjust(
        posterior, shard_data=shard_data, nlsq=nlsq, center=center
    )
    # k = p / tr(C_H H), invariant under x ↔ θ; H here is the sampled likelihood's curvature,
    # which on this problem (σ from the NLSQ fit) is C_F⁻¹ up to the NLSQ noise scale s².
    information = np.asarray(gauss_newton_information(posterior, center, shard_data))
    derivative = np.asarray(posterior.problem.transform.derivative(center))
    honest = np.asarray(nlsq.covariance) / np.outer(derivative, derivative)
    expected = len(nlsq.names) / np.trace(honest @ information)
    np.testing.assert_allclose(float(adjusted.likelihood_weight), expected, rtol=1e-8)
    np.testing.assert_allclose(expected, magnitude_weight(nlsq), rtol=0.1)
    fixed = hj.MagnitudeAdjustment(weight=0.25).adjust(
        posterior, shard_data=shard_data, nlsq=None, center=center
    )
    assert fixed.likelihood_weight == 0.25
    with pytest.raises(ValueError, match="weight"):
        hj.MagnitudeAdjustment(weight=0.0)


def test_honest_covariance_of_a_subset_is_the_sub_model_sandwich(warm_start):
    _, nlsq = warm_start
    rng = np.random.default_rng(0)
    p = len(nlsq.names)
    bread, meat = _spd(rng, p, 4), _spd(rng, p, 2)  # G = JᵀJ and M, over nlsq.names
    inverse = np.linalg.inv(bread)
    fake = dataclasses.replace(
        nlsq, covariance=inverse @ meat @ inverse, formal_covariance=3.0 * inverse
    )
    np.testing.assert_allclose(honest_covariance(fake, fake.names), fake.covariance, rtol=1e-8)
    subset = [0, 2, 3]
    names = tuple(fake.names[i] for i in subset)
    sub_inverse = np.linalg.inv(bread[np.ix_(subset, subset)])
    expected = sub_inverse @ meat[np.ix_(subset, subset)] @ sub_inverse
    np.testing.assert_allclose(honest_covariance(fake, names), expected, rtol=1e-8)
    assert honest_covariance(fake, ("not_a_parameter",)) is None


def test_honest_covariance_is_equivariant_under_a_change_of_units(warm_start):
    """The same sandwich with parameters in units 10¹⁶ apart (C → S⁻¹ C S⁻¹) gives the same
    sub-model covariance in those units: the bread is inverted in Jacobi scaling, not at the
    rounding of its largest entry."""
    _, nlsq = warm_start
    rng = np.random.default_rng(1)
    p = len(nlsq.names)
    bread, meat = _spd(rng, p, 4), _spd(rng, p, 2)
    inverse = np.linalg.inv(bread)
    units = 10.0 ** rng.uniform(-8, 8, p)
    units[:2] = 1e-8, 1e8
    per_unit = 1.0 / np.outer(units, units)
    near = dataclasses.replace(
        nlsq, covariance=inverse @ meat @ inverse, formal_covariance=3.0 * inverse
    )
    far = dataclasses.replace(
        nlsq,
        covariance=near.covariance * per_unit,
        formal_covariance=near.formal_covariance * per_unit,
    )
    subset = [0, 1, 3]
    names = tuple(nlsq.names[i] for i in subset)
    expected = honest_covariance(near, names) * per_unit[np.ix_(subset, subset)]
    np.testing.assert_allclose(honest_covariance(far, names), expected, rtol=1e-6)


def test_auto_adjusts_only_with_honest_errors(warm_start):
    _, nlsq = warm_start
    assert isinstance(resolve_adjustment("auto", nlsq), hj.CheckedCurvatureAdjustment)
    formal = dataclasses.replace(nlsq, errors="FormalErrors")
    assert isinstance(resolve_adjustment("auto", formal), hj.NoAdjustment)
    assert isinstance(resolve_adjustment("auto", None), hj.NoAdjustment)
    assert isinstance(resolve_adjustment("magnitude", nlsq), hj.MagnitudeAdjustment)
    with pytest.raises(ValueError, match="adjustment"):
        resolve_adjustment("sandwich", nlsq)
    with pytest.raises(TypeError, match="adjustment"):
        resolve_adjustment(3, nlsq)
    with pytest.raises(ValueError, match="nlsq="):
        hj.CurvatureAdjustment().adjust(None, shard_data=None, nlsq=None, center=None)
    with pytest.raises(ValueError, match="min_inflation"):
        hj.CurvatureAdjustment(min_inflation=-1.0)


def test_curvature_falls_back_to_magnitude_when_names_do_not_match(warm_start):
    data, nlsq = warm_start
    posterior, shard_data, center = _posterior_and_shards(nlsq, data, n_shards=1)
    renamed = dataclasses.replace(nlsq, names=tuple(f"other_{n}" for n in nlsq.names))
    with pytest.warns(UserWarning, match="MagnitudeAdjustment"):
        adjusted = hj.CurvatureAdjustment().adjust(
            posterior, shard_data=shard_data, nlsq=renamed, center=center
        )
    assert adjusted.likelihood_map is None
    np.testing.assert_allclose(float(adjusted.likelihood_weight), magnitude_weight(nlsq))


def test_curvature_map_leaves_a_parameter_at_a_bound_alone(warm_start):
    data, nlsq = warm_start
    posterior, shard_data, center = _posterior_and_shards(nlsq, data, n_shards=1)
    names = posterior.problem.names
    assert interior_parameters(posterior, nlsq) == list(range(len(names)))
    # The NLSQ fit reports f0 at a bound (its own flag), D0_sample on one (its value).
    at_bound = dataclasses.replace(
        nlsq,
        quality=dataclasses.replace(nlsq.quality, at_bounds=("f0",)),
        values=np.where(np.asarray(nlsq.names) == "D0_sample", 0.0, np.asarray(nlsq.values)),
    )
    outside = [names.index("f0"), names.index("D0_sample")]
    interior = interior_parameters(posterior, at_bound)
    assert sorted(interior + outside) == list(range(len(names)))
    adjusted = hj.CurvatureAdjustment().adjust(
        posterior, shard_data=shard_data, nlsq=at_bound, center=center
    )
    linear_map = np.asarray(adjusted.likelihood_map)
    # Identity in the boundary directions, no cross terms: the flat direction of a boundary
    # maximum is not turned into shifts of the others.
    for k in outside:
        expected = np.zeros(len(names))
        expected[k] = 1.0
        np.testing.assert_array_equal(linear_map[k], expected)
        np.testing.assert_array_equal(linear_map[:, k], expected)
    # The interior block is the map of the sub-model with the boundary parameters held.
    block = np.ix_(interior, interior)
    information = np.asarray(gauss_newton_information(posterior, center, shard_data))[block]
    derivative = np.asarray(posterior.problem.transform.derivative(center))[interior]
    honest = honest_covariance(nlsq, tuple(names[i] for i in interior))
    expected = curvature_map(information, honest / np.outer(derivative, derivative))
    np.testing.assert_allclose(linear_map[block], expected, rtol=1e-8, atol=1e-12)


def test_an_unconverged_warm_start_is_named_before_the_adjustment_is_built(warm_start):
    from heterojax._cmc._fit import _adjusted

    data, nlsq = warm_start
    posterior, shard_data, center = _posterior_and_shards(nlsq, data, n_shards=1)
    stalled = dataclasses.replace(nlsq, success=False, message="max_steps reached")
    with pytest.warns(UserWarning, match="did not converge .max_steps reached"):
        _adjusted(hj.MagnitudeAdjustment(), posterior, shard_data, stalled, center)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _adjusted(hj.MagnitudeAdjustment(), posterior, shard_data, nlsq, center)
        _adjusted(hj.NoAdjustment(), posterior, shard_data, stalled, center)
        # A researcher's adjustment that does not build on the NLSQ maximum is not warned about.
        _adjusted(_FixedWeight(), posterior, shard_data, stalled, center)


class _FixedWeight(hj.AbstractLikelihoodAdjustment):
    """A researcher's own adjustment: a fixed weight, whatever the warm start."""

    def adjust(self, posterior, *, shard_data, nlsq, center):
        return eqx.tree_at(lambda p: p.likelihood_weight, posterior, 0.25)


def _never_called(*args):
    raise AssertionError("not called")


@pytest.mark.slow
def test_checked_adjustment_keeps_the_map_where_the_likelihood_is_quadratic(
    warm_start, monkeypatch
):
    data, nlsq = warm_start
    # Honest errors 3× the formal ones in every direction, as correlated noise makes them.
    inflated = dataclasses.replace(nlsq, covariance=9.0 * np.asarray(nlsq.formal_covariance))
    posterior, shard_data, center = _posterior_and_shards(inflated, data, n_shards=2)
    checked = hj.CheckedCurvatureAdjustment()
    adjusted = checked.adjust(posterior, shard_data=shard_data, nlsq=inflated, center=center)
    assert adjusted.likelihood_map is not None  # the curvature map itself
    information = np.asarray(gauss_newton_information(adjusted, center, shard_data))
    np.testing.assert_allclose(map_stretch(adjusted.likelihood_map, information), 3.0, rtol=0.1)
    # Gaussian noise, a converged fit: the adjusted posterior's Laplace approximation is the
    # intended N(θ̂, C_H) up to the curvature change between θ̂ and its mode.
    factor, direction = laplace_mismatch(adjusted, shard_data, center, information)
    assert 1.0 <= factor < 1.6
    np.testing.assert_allclose(np.linalg.norm(direction), 1.0)
    review = dict(shard_data=shard_data, nlsq=inflated, center=center)
    # The honest Gaussian lies inside the box: the box hardly narrows it.
    assert box_narrowing(adjusted, center, information)[0] < 1.2
    assert checked.review(adjusted, **review) is None
    # Where the Laplace approximation is 3× off in some direction (case 2 of the speckle
    # benchmark: the slow test below), the fallback is chosen, with the reason.
    import heterojax._cmc._adjustment as adjustment_module

    off = np.zeros(len(posterior.problem.names))
    off[posterior.problem.names.index("f0")] = 1.0
    monkeypatch.setattr(adjustment_module, "laplace_mismatch", lambda *args: (3.0, off))
    replacement, reason = checked.review(adjusted, **review)
    assert isinstance(replacement, hj.MagnitudeAdjustment)
    assert "not Gaussian on the scale of the NLSQ honest errors" in reason
    assert "f0 +1.00" in reason and "3×" in reason
    monkeypatch.undo()
    # An honest error of f0 twice its range [0, 1] (case 2 of the speckle benchmark): the box
    # cuts the intended Gaussian, and the fallback is chosen before any Laplace fit.
    f0 = nlsq.names.index("f0")
    wide_covariance = 9.0 * np.asarray(nlsq.formal_covariance)
    wide_covariance[f0, f0] += 2.0**2
    wide = dataclasses.replace(nlsq, covariance=wide_covariance)
    wide_adjusted = checked.adjust(posterior, shard_data=shard_data, nlsq=wide, center=center)
    wide_information = np.asarray(gauss_newton_information(wide_adjusted, center, shard_data))
    factor, direction = box_narrowing(wide_adjusted, center, wide_information)
    assert factor > 2 and np.argmax(np.abs(direction)) == posterior.problem.names.index("f0")
    monkeypatch.setattr(adjustment_module, "laplace_mismatch", _never_called)
    replacement, reason = checked.review(wide_adjusted, **{**review, "nlsq": wide})
    assert isinstance(replacement, hj.MagnitudeAdjustment)
    assert "reach beyond the parameter box" in reason and "f0 " in reason
    # A mild map (honest errors = the formal ones: no stretch) is kept whatever the check says.
    formal = dataclasses.replace(nlsq, covariance=np.asarray(nlsq.formal_covariance))
    mild = checked.adjust(posterior, shard_data=shard_data, nlsq=formal, center=center)
    mild_information = np.asarray(gauss_newton_information(mild, center, shard_data))
    assert map_stretch(mild.likelihood_map, mild_information) < 1.1
    assert checked.review(mild, **review) is None
    with pytest.raises(ValueError, match="max_sd_ratio"):
        hj.CheckedCurvatureAdjustment(max_sd_ratio=1.0)


@pytest.mark.slow
def test_adjusted_posteriors_have_the_honest_width_on_speckle_data():
    """Three `simulate_speckle` cases of `benchmarks/bench_cmc_calibration.py`: unadjusted, the
    posterior sds are the formal ones (3–15× too small); adjusted, they are the NLSQ fit's
    honest errors (within the spread that 2 × 300 draws and the floor of `curvature_map` leave),
    and the 90 % intervals cover the truth. Case 2 (242 pixels, 16× inflation, f0's honest error
    2.9 on [0, 1]) is not Gaussian on the scale of the honest errors: the check of
    `CheckedCurvatureAdjustment` replaces the curvature map there, and the verdict says so."""
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
    from bench_cmc_calibration import FREE as SPECKLE_FREE, make_case, score_cmc

    ratios = {"none": [], "auto": []}
    covered = []
    for index in (0, 2, 4):  # the 2-angle × 100-frame cases
        case = make_case(0, index)
        truth_model = case["truth"]
        truth = {n: float(v) for n, v in truth_model.to_dict().items()}
        data = hj.simulate_speckle(
            truth_model, case["t"], q=case["q"], phi=case["phi"], key=jr.key(case["data_seed"]),
            pixels=case["pixels"], counts=case["counts"], contrast=case["contrast"],
            correlate=True,
        )  # fmt: skip
        fixed = [n for n in hj.PARAMETER_NAMES if n not in SPECKLE_FREE]
        nlsq = hj.fit_nlsq(truth_model, data, fixed=fixed, scaling="constant", starts=1)
        for adjustment in ("none", "auto"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fit = hj.fit_cmc(
                    nlsq.model, data, key=jr.key(index), nlsq=nlsq, shards=1, chains=2,
                    warmup=200, samples=300, adjustment=adjustment, progress=False,
                )  # fmt: skip
            if adjustment == "none":
                ratios["none"] += list(score_cmc(fit, truth, nlsq)["sd_over_nlsq_stderr"].values())
            elif index == 2:
                assert fit.adjustment.startswith("magnitude")
                assert any("not Gaussian" in str(w.message) for w in caught)
                assert not fit.verdict.passed
                assert any(line.startswith("adjustment:") for line in fit.verdict.failures)
            else:
                assert fit.adjustment == "curvature"
                score = score_cmc(fit, truth, nlsq)
                ratios["auto"] += list(score["sd_over_nlsq_stderr"].values())
                covered += list(score["covered"].values())
    assert np.median(ratios["none"]) < 0.5
    assert 0.7 < np.median(ratios["auto"]) < 1.6
    assert np.all(np.asarray(ratios["auto"]) > 0.5)
    assert sum(covered) >= 7  # of 8 intervals (≥ 6 expected at 90 % with 2 sd to spare)


@pytest.mark.slow
def test_curvature_adjustment_gives_the_coefficients_their_honest_conditional(warm_start):
    """With the scaling coefficients integrated out, the curvature adjustment maps their draws
    too: given the physics, the completed coefficients have the honest conditional of the NLSQ
    fit's covariance (mean slope C_αθ C_θθ⁻¹, covariance C_αα − C_αθ C_θθ⁻¹ C_θα), not the
    unadjusted conditional's (formal) one."""
    from heterojax._cmc._marginal import complete_scaling

    data, nlsq = warm_start
    posterior, shard_data, center = _posterior_and_shards(nlsq, data, n_shards=1)
    marginal = dataclasses.replace(posterior, marginal_scaling=True)
    k = marginal.n_sampled
    center = center[:k]
    # An honest covariance inflated 3–100× over the formal one, along random directions.
    rng = np.random.default_rng(4)
    p = len(nlsq.names)
    lower = np.linalg.cholesky(np.asarray(nlsq.formal_covariance))
    vectors, _ = np.linalg.qr(rng.normal(size=(p, p)))
    honest = lower @ ((vectors * np.logspace(0.5, 2.0, p)) @ vectors.T) @ lower.T
    fake = dataclasses.replace(nlsq, covariance=honest)
    adjusted = hj.CurvatureAdjustment().adjust(
        marginal, shard_data=shard_data, nlsq=fake, center=center
    )
    assert adjusted.scaling_stretch is not None
    derivative = np.asarray(marginal.sampled_transform().derivative(center))
    scale = np.concatenate([derivative, np.ones(p - k)])
    honest = honest / np.outer(scale, scale)  # physics in θ, coefficients bounded
    slope = honest[k:, :k] @ np.linalg.inv(honest[:k, :k])
    conditional = honest[k:, k:] - slope @ honest[:k, k:]

    def completed(physics):
        """1 000 coefficient draws completing `physics`, with the same random numbers."""
        theta = jnp.broadcast_to(jnp.asarray(physics), (1000, k))[None]
        full, _ = complete_scaling(adjusted, theta, shard_data, jr.key(3))
        return np.asarray(marginal.problem.transform.to_bounded(full[0]))[:, k:]

    # The conditional covariance at θ̂ (sampling sd of a whitened entry √(2/1000) ≈ 0.045).
    whitener = np.linalg.inv(np.linalg.cholesky(conditional))
    np.testing.assert_allclose(
        whitener @ np.cov(completed(center).T) @ whitener.T, np.eye(p - k), atol=0.15
    )
    # The mean slope, by central differences of 0.1 honest sd along each physics direction.
    for j in range(k):
        step = 0.1 * np.sqrt(honest[j, j])
        plus, minus = completed(center.at[j].add(step)), completed(center.at[j].add(-step))
        np.testing.assert_allclose(
            (plus - minus).mean(axis=0) / (2 * step),
            slope[:, j],
            rtol=0.05,
            atol=0.05 * np.max(np.abs(slope)),
        )
    # The unadjusted conditional (the physics map alone), H_αα⁻¹ of the full-data information,
    # is far narrower: what the coefficients got before.
    gram = joint_information(marginal, center, shard_data)
    coefficient_information = np.asarray(gram)[k:, k:]
    narrow = whitener @ np.linalg.inv(coefficient_information) @ whitener.T
    assert np.max(np.diag(narrow)) < 0.5, np.diag(narrow)
