"""The shard posterior with the scaling coefficients integrated out (`NUTS(scaling="marginal")`):
the closed form against the joint density, the conditional draws, the marginal information,
and fit_cmc's posterior against the one that samples the coefficients."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._marginal import _draw_coefficients, complete_scaling
from heterojax._cmc._posterior import (
    ShardPosterior,
    conditional_scaling,
    gather_shard_data,
    gauss_newton_information,
    scaling_prior,
    scaling_sums,
    schur_physics,
)
from heterojax._cmc._shards import make_shards
from heterojax._fit._problem import build_problem, coefficient_system
from heterojax._fit._profile import physics_transform
from heterojax._fit._scaling import resolve_scaling


TRUTH = hj.HeterodyneModel.from_dict(
    {"D0_ref": 300.0, "D0_sample": 2e3, "v0": 40.0, "f0": 0.3, "phi0": 8.0}
)
FREE = ("D0_sample", "v0", "f0", "phi0")


@pytest.fixture(scope="module")
def setup():
    t = 0.4 * np.arange(1, 31)
    data = hj.simulate(
        TRUTH, t, q=[0.012, 0.015, 0.012], phi=[0.0, 50.0, 120.0],
        contrast=[0.3, 0.35, 0.4], offset=1.0, noise=0.02, key=jr.key(4),
    )  # fmt: skip
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    problem, x0, sigma = build_problem(
        TRUTH, data, fixed=fixed, bounds=None,
        scaling=resolve_scaling("individual", np.asarray(data.phi)),
        contrast=np.array([0.32, 0.33, 0.38]), offset=np.array([1.01, 0.99, 1.0]),
    )  # fmt: skip
    shards = make_shards(np.asarray(data.mask), 2, strategy="random", seed=0)
    shard_data = gather_shard_data(shards, np.asarray(data.c2), np.asarray(sigma))
    return data, problem, np.asarray(x0), shard_data


def _posterior(problem, data, marginal, *, weight=1.0, prior_precision=None, prior_mean=None):
    p = len(problem.names)
    return ShardPosterior(
        problem=problem,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        tempering=jnp.asarray(0.5),
        prior_mean=jnp.zeros(p) if prior_mean is None else prior_mean,
        prior_precision=jnp.zeros(p) if prior_precision is None else prior_precision,
        likelihood_weight=weight,
        marginal_scaling=marginal,
    )


def _shard(shard_data, k):
    return jax.tree.map(lambda leaf: leaf[k], shard_data)


def _joint_exponent(posterior, physics_theta, coefficients, shard):
    """w · log L_k + (1/K) log p(α) of the joint posterior at bounded coefficients α."""
    joint = dataclasses.replace(posterior, marginal_scaling=False)
    k = physics_theta.shape[0]
    x_physics = joint.problem.transform.to_bounded(
        jnp.concatenate([physics_theta, jnp.zeros(coefficients.shape)])
    )[:k]
    residual = joint.scaled_values(x_physics, coefficients, shard) - shard.observed
    log_likelihood = -0.5 * jnp.sum(shard.precision * residual**2)
    prior, mean = scaling_prior(posterior)
    prior_term = -0.5 * jnp.sum(prior * (coefficients - mean) ** 2)
    return posterior.likelihood_weight * log_likelihood + prior_term


_conditional = eqx.filter_jit(conditional_scaling)


@eqx.filter_jit
def _exponent_terms(posterior, theta, coefficients, shard):
    """The joint exponent at α, its gradient and Hessian in α."""
    exponent = lambda a: _joint_exponent(posterior, theta, a, shard)  # noqa: E731
    return (
        exponent(coefficients),
        jax.grad(exponent)(coefficients),
        jax.hessian(exponent)(coefficients),
    )


@pytest.mark.parametrize("weight,informed", [(1.0, False), (0.3, True)])
def test_closed_form_is_the_gaussian_integral_of_the_joint(setup, weight, informed):
    """At the conditional mean the joint exponent is −½(c − rᵀQ⁻¹r), its gradient in α is 0
    and its Hessian −Q: with a quadratic exponent, exactly the integral's ingredients."""
    data, problem, x0, shard_data = setup
    p, k = len(problem.names), problem.n_free_physics
    prior_precision = prior_mean = None
    if informed:
        prior_precision = jnp.concatenate([jnp.zeros(k), jnp.full(p - k, 400.0)])
        prior_mean = jnp.asarray(x0)
    posterior = _posterior(
        problem, data, True, weight=weight, prior_precision=prior_precision, prior_mean=prior_mean
    )
    theta = problem.transform.to_unconstrained(jnp.asarray(x0))[:k] + 0.05
    shard = _shard(shard_data, 1)
    conditional = _conditional(posterior, theta, shard)
    value, gradient, hessian = _exponent_terms(posterior, theta, conditional.mean, shard)
    log_det = jnp.linalg.slogdet(conditional.precision)[1]
    np.testing.assert_allclose(conditional.log_marginal + 0.5 * log_det, value, rtol=1e-9)
    scale = jnp.sqrt(jnp.diagonal(conditional.precision))
    assert float(jnp.max(jnp.abs(gradient / scale))) < 1e-6
    np.testing.assert_allclose(-hessian, conditional.precision, rtol=1e-8, atol=1e-6)


def test_log_density_is_the_physics_marginal(setup):
    """log p_k(θ) = (1/K) log p(θ) + log_marginal, its prior over the physics alone."""
    data, problem, x0, shard_data = setup
    k = problem.n_free_physics
    posterior = _posterior(problem, data, True)
    theta = problem.transform.to_unconstrained(jnp.asarray(x0))[:k]
    shard = _shard(shard_data, 0)
    expected = posterior.tempering * posterior.log_prior(theta) + (
        _conditional(posterior, theta, shard).log_marginal
    )
    np.testing.assert_allclose(eqx.filter_jit(posterior)(theta, shard), expected, rtol=1e-12)
    assert posterior.n_sampled == k and posterior.sampled_names == problem.names[:k]


@pytest.mark.slow
def test_a_magnitude_weight_scales_the_integrated_likelihood(setup):
    """With weight w the physics see w · log ∫ L p(α) dα, not log ∫ L^w p(α) dα: the volume
    term −½ log det Q is weighted too (its θ-dependence would otherwise outweigh a small w),
    while α | θ keeps the widened conditional of w · log L."""
    data, problem, x0, shard_data = setup
    k = problem.n_free_physics
    theta = problem.transform.to_unconstrained(jnp.asarray(x0))[:k] + 0.05
    shard = _shard(shard_data, 0)
    full = _posterior(problem, data, True)
    weighted = _posterior(problem, data, True, weight=0.01)
    integrated = _conditional(full, theta, shard).log_marginal
    np.testing.assert_allclose(
        weighted.weighted_log_likelihood(theta, shard), 0.01 * integrated, rtol=1e-10
    )
    widened = _conditional(weighted, theta, shard)
    ratio = np.diagonal(_conditional(full, theta, shard).precision) / np.diagonal(widened.precision)
    assert np.all(ratio > 10)  # the data's precision of α scaled by w (the prior's is not)


def test_conditional_draws_have_the_conditional_moments(setup):
    data, problem, x0, shard_data = setup
    k = problem.n_free_physics
    posterior = _posterior(problem, data, True, weight=0.2)
    theta = problem.transform.to_unconstrained(jnp.asarray(x0))[:k]
    n = 1000  # the tolerances below are in standard errors of n draws
    draws = jnp.broadcast_to(theta, (2, n, k))
    full, outside = complete_scaling(posterior, draws, shard_data, jr.key(0))
    assert full.shape == (2, n, len(problem.names))
    np.testing.assert_array_equal(np.asarray(full[..., :k]), np.asarray(draws))
    assert int(outside) == 0
    coefficients = np.asarray(jax.vmap(jax.vmap(problem.transform.to_bounded))(full))[..., k:]
    # Each draw keeps its own key, also in the last, partial batch of draws (n = 15·64 + 40).
    keys = jr.split(jr.key(0), (2, n))
    for s, i in [(0, 0), (1, n - 1)]:
        one = eqx.filter_jit(_draw_coefficients)(
            posterior, theta, _shard(shard_data, s), keys[s, i]
        )
        np.testing.assert_allclose(coefficients[s, i], one, rtol=1e-9)
    for s in range(2):
        conditional = eqx.filter_jit(conditional_scaling)(posterior, theta, _shard(shard_data, s))
        covariance = np.linalg.inv(np.asarray(conditional.precision))
        sd = np.sqrt(np.diagonal(covariance))
        z = (coefficients[s].mean(0) - np.asarray(conditional.mean)) / (sd / np.sqrt(n))
        assert np.max(np.abs(z)) < 4.5
        difference = (np.cov(coefficients[s].T) - covariance) / np.outer(sd, sd)
        assert np.max(np.abs(difference)) < 5 / np.sqrt(n)  # a few standard errors


@pytest.mark.slow
def test_marginal_information_is_the_schur_complement(setup):
    """The Gauss–Newton information of the marginal: the joint one at α*, coefficients
    integrated out (invariant to how α is parametrised)."""
    data, problem, x0, shard_data = setup
    k = problem.n_free_physics
    marginal = _posterior(problem, data, True)
    joint = _posterior(problem, data, False)
    theta = problem.transform.to_unconstrained(jnp.asarray(x0))[:k]
    x_physics = physics_transform(problem).to_bounded(theta)
    sums = sum(
        eqx.filter_jit(scaling_sums)(marginal, x_physics, _shard(shard_data, s)) for s in range(2)
    )
    best = jnp.linalg.solve(*coefficient_system(problem, sums[:, :5]))  # α* of the likelihood
    full_theta = problem.transform.to_unconstrained(jnp.concatenate([x_physics, best]))
    expected = schur_physics(gauss_newton_information(joint, full_theta, shard_data), k)
    found = gauss_newton_information(marginal, theta, shard_data)
    np.testing.assert_allclose(found, expected, rtol=1e-7)


@pytest.mark.slow
def test_fit_cmc_marginal_matches_sampled():
    """The posterior of the physics is the same whether NUTS samples the coefficients or they
    are integrated out and drawn afterwards (means within 0.35 sd, sds within 25 %)."""
    t = 0.5 * np.arange(1, 41)
    data = hj.simulate(
        TRUTH, t, q=[0.012, 0.015, 0.013], phi=[10.0, 70.0, 130.0], contrast=[0.3, 0.35, 0.32],
        offset=1.0, noise=0.03, key=jr.key(7),
    )  # fmt: skip
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    nlsq = hj.fit_nlsq(TRUTH, data, fixed=fixed, scaling="individual", starts=1)
    tables = {}
    for scaling in ("marginal", "sampled"):
        result = hj.fit_cmc(
            nlsq.model, data, nlsq=nlsq, key=jr.key(1), shards=1, chains=2, warmup=300,
            samples=600, sampler=hj.NUTS(scaling=scaling), adjustment="none", progress=False,
        )  # fmt: skip
        tables[scaling] = result.table()
        assert max(result.diagnostics["r_hat"].values()) < 1.05
    assert set(tables["marginal"]) == set(tables["sampled"])
    for name, a in tables["marginal"].items():
        b = tables["sampled"][name]
        assert abs(a["mean"] - b["mean"]) < 0.35 * b["sd"], (name, a, b)
        assert 0.75 < a["sd"] / b["sd"] < 1.33, (name, a, b)


def test_nuts_scaling_setting():
    assert hj.NUTS().scaling == "marginal"
    with pytest.raises((TypeError, ValueError)):  # the annotation's Literal, or the check
        hj.NUTS(scaling="profiled")
    with pytest.raises(ValueError, match="shear_offset"):
        hj.NUTS(shear_offset=True)
    assert hj.NUTS(shear_offset=True, scaling="sampled").shear_offset
