"""Combination of shard posteriors (consensus, mixture) on toy Gaussians with known answers."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from heterojax._cmc._combine import (
    consensus_combine,
    consensus_gaussian,
    mixture_combine,
    mixture_gaussian,
    shard_agreement,
    shard_moments,
)


def _exact_draws(rng, mean, covariance, n):
    """n draws whose sample mean and (unbiased) covariance equal `mean`, `covariance` exactly."""
    z = rng.normal(size=(n, mean.shape[0]))
    z -= z.mean(axis=0)
    whitening = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(whitening, z.T).T
    return mean + z @ np.linalg.cholesky(covariance).T


def _random_covariance(rng, p, scale):
    a = rng.normal(size=(p, p))
    return scale * (a @ a.T / p + 0.5 * np.eye(p))


@pytest.fixture
def shards():
    rng = np.random.default_rng(7)
    p, k = 3, 4
    means = rng.normal(size=(k, p)) * np.array([1.0, 10.0, 0.01])
    scales = np.array([1.0, 10.0, 0.01])
    covariances = np.stack(
        [_random_covariance(rng, p, 1.0) * np.outer(scales, scales) for _ in range(k)]
    )
    return rng, means, covariances


def _analytic_product(means, covariances):
    precisions = np.linalg.inv(covariances)
    covariance = np.linalg.inv(precisions.sum(axis=0))
    return covariance @ np.einsum("kij,kj->i", precisions, means), covariance


def test_consensus_gaussian_is_the_product_of_gaussians(shards):
    _, means, covariances = shards
    mean, covariance = consensus_gaussian(means, covariances)
    expected_mean, expected_covariance = _analytic_product(means, covariances)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(covariance, expected_covariance, rtol=1e-9, atol=1e-18)


def test_consensus_draws_have_the_product_moments(shards):
    rng, means, covariances = shards
    n = 20_000
    draws = np.stack([_exact_draws(rng, m, c, n) for m, c in zip(means, covariances)])
    estimated_means, estimated_covariances = shard_moments(draws.reshape(4, 4, n // 4, 3))
    # The shard moments are exactly the prescribed ones (up to rounding).
    np.testing.assert_allclose(estimated_means, means, atol=1e-9 * np.abs(means).max())
    np.testing.assert_allclose(estimated_covariances, covariances, rtol=1e-8, atol=1e-16)
    combined = np.asarray(consensus_combine(draws.reshape(4, 4, n // 4, 3)))
    assert combined.shape == (4, n // 4, 3)
    expected_mean, expected_covariance = _analytic_product(means, covariances)
    flat = combined.reshape(-1, 3)
    # The combined mean is a linear function of the shard means: exact.
    np.testing.assert_allclose(flat.mean(axis=0), expected_mean, rtol=1e-9, atol=1e-12)
    # The covariance is exact in expectation; 20 000 draws give ~1.5 % relative error per entry.
    sd = np.sqrt(np.diag(expected_covariance))
    correlation_error = (np.cov(flat, rowvar=False) - expected_covariance) / np.outer(sd, sd)
    assert np.max(np.abs(correlation_error)) < 0.05


def test_consensus_of_one_shard_is_the_identity():
    draws = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 50, 3)))
    np.testing.assert_array_equal(consensus_combine(draws), draws[0])


def test_consensus_of_identical_shards_shrinks_the_covariance_by_k(shards):
    rng, means, covariances = shards
    draws = _exact_draws(rng, means[0], covariances[0], 4000)
    mean, covariance = consensus_gaussian(np.stack([means[0]] * 3), np.stack([covariances[0]] * 3))
    np.testing.assert_allclose(mean, means[0], rtol=1e-10)
    np.testing.assert_allclose(covariance, covariances[0] / 3, rtol=1e-9)
    combined = np.asarray(consensus_combine(np.stack([draws] * 3)))
    np.testing.assert_allclose(combined, draws, rtol=1e-9, atol=1e-12)


def test_mixture_gaussian_formula(shards):
    _, means, covariances = shards
    mean, covariance = mixture_gaussian(means, covariances)
    centred = means - means.mean(axis=0)
    np.testing.assert_allclose(mean, means.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        covariance, covariances.mean(axis=0) + centred.T @ centred / 4, rtol=1e-12
    )


def test_mixture_draws_pool_the_shards(shards):
    rng, means, covariances = shards
    n = 8000
    draws = np.stack([_exact_draws(rng, m, c, n) for m, c in zip(means, covariances)])
    mixed = np.asarray(mixture_combine(draws.reshape(4, 2, n // 2, 3), jr.key(3)))
    assert mixed.shape == (2, n // 2, 3)
    flat = mixed.reshape(-1, 3)
    # Every mixed draw is one of the shard draws.
    pool = {tuple(row) for row in draws.reshape(-1, 3)}
    assert all(tuple(row) in pool for row in flat[:200])
    # Each shard contributes about n/4 draws (binomial sd ≈ 39): within 5 sd.
    origin = np.array([np.argmin(np.abs(draws[:, :, 0] - v).min(axis=1)) for v in flat[:, 0]])
    assert np.all(np.abs(np.bincount(origin, minlength=4) - n / 4) < 5 * np.sqrt(n * 3 / 16))
    mean, covariance = mixture_gaussian(means, covariances)
    sd = np.sqrt(np.diag(covariance))
    # Sampling without replacement from the pool: the mean is within a few standard errors.
    assert np.all(np.abs(flat.mean(axis=0) - mean) < 5 * sd / np.sqrt(n))
    np.testing.assert_allclose(np.sqrt(np.diag(np.cov(flat, rowvar=False))), sd, rtol=0.05)


def test_combination_rejects_draws_without_a_sample_axis():
    with pytest.raises(ValueError, match="shape"):
        consensus_combine(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="shape"):
        mixture_combine(np.zeros((4, 3)), jr.key(0))


def test_shard_agreement_measures_each_shard_against_the_consensus():
    # Precisions 1 and 1/4: the consensus mean is (0 · 1 + 3 / 4) / (5 / 4) = 0.6.
    agreement = shard_agreement(np.array([[0.0], [3.0]]), np.array([[[1.0]], [[4.0]]]))
    np.testing.assert_allclose(agreement, [[0.6], [1.2]])
    # Identical shards agree exactly.
    np.testing.assert_allclose(shard_agreement(np.ones((3, 2)), np.tile(np.eye(2), (3, 1, 1))), 0)
