"""Combining shard posteriors: pure functions of the shard draws.

Draws come as one array `(shard, *sample, p)`: K shards, any sample shape (e.g. `(chain, draw)`)
shared by the shards, p parameters. Shard k's draws approximate p_k(θ) ∝ p(θ)^{1/K} L_k(θ), so
that the full posterior is their product.

**Consensus** (Scott et al. 2016, "Bayes and big data: the consensus Monte Carlo algorithm").
With each p_k ≈ N(μ_k, Σ_k), the product is Gaussian with

    W_k = Σ_k⁻¹,   Σ* = (Σ_k W_k)⁻¹,   μ* = Σ* Σ_k W_k μ_k,

and draws of it are formed draw by draw from independent shard draws,

    θ*_s = (Σ_k W_k)⁻¹ Σ_k W_k θ_{k,s},

which have mean μ* and covariance Σ* (exactly, for Gaussian shards; Σ_k are the shards' sample
covariances, full matrices). Exact for Gaussian subposteriors, and accurate when each shard holds
enough data for its posterior to be near Gaussian — hence sampling in unconstrained coordinates.

**Mixture**: the equally weighted mixture of the shard posteriors, (1/K) Σ_k p_k, drawn by pooling
all shard draws and resampling. Its mean is the average of the μ_k and its covariance
(1/K) Σ_k Σ_k + the covariance of the μ_k. Each p_k sees 1/K of the data, so the mixture is about
√K wider than the full posterior: a conservative envelope, useful to see whether the shards
agree (distinct modes show up as distinct clusters), not a replacement for the consensus.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


def _flatten(draws) -> Float[Array, "shard n p"]:
    draws = jnp.asarray(draws)
    if draws.ndim < 3:
        raise ValueError(
            f"Shard draws must have shape (shard, *sample, p) with at least one sample axis; "
            f"got shape {draws.shape}."
        )
    return draws.reshape(draws.shape[0], -1, draws.shape[-1])


def shard_moments(
    draws: Float[ArrayLike, "shard *sample p"],
) -> tuple[Float[Array, "shard p"], Float[Array, "shard p p"]]:
    """Sample mean and covariance (full, unbiased) of each shard's draws.

    **Returns:** `(means, covariances)` with shapes `(shard, p)` and `(shard, p, p)`.
    """
    flat = _flatten(draws)
    n = flat.shape[1]
    if n < 2:
        raise ValueError("Each shard needs at least two draws to estimate its covariance.")
    means = flat.mean(axis=1)
    centred = flat - means[:, None, :]
    covariances = jnp.einsum("kni,knj->kij", centred, centred) / (n - 1)
    return means, covariances


def _precisions(covariances: Float[Array, "shard p p"]) -> Float[Array, "shard p p"]:
    """W_k = Σ_k⁻¹, computed after scaling every coordinate to unit average variance."""
    scale = jnp.sqrt(jnp.mean(jnp.diagonal(covariances, axis1=1, axis2=2), axis=0))
    scale = jnp.where(scale > 0, scale, 1.0)
    scaled = covariances / (scale[:, None] * scale[None, :])
    scaled = 0.5 * (scaled + jnp.swapaxes(scaled, 1, 2))
    identity = jnp.eye(scaled.shape[-1], dtype=scaled.dtype)
    inverse = jnp.linalg.solve(scaled, jnp.broadcast_to(identity, scaled.shape))
    return inverse / (scale[:, None] * scale[None, :])


@jax.jit  # one program, not a compilation for every operation of its first call
def consensus_gaussian(
    means: Float[ArrayLike, "shard p"], covariances: Float[ArrayLike, "shard p p"]
) -> tuple[Float[Array, " p"], Float[Array, "p p"]]:
    """The product of the Gaussians N(μ_k, Σ_k): (μ*, Σ*) of the module docstring.

    **Arguments:** `means` `(shard, p)`, `covariances` `(shard, p, p)` (positive definite).

    **Returns:** `(mean, covariance)`.
    """
    means = jnp.asarray(means)
    precisions = _precisions(jnp.asarray(covariances))
    total = jnp.sum(precisions, axis=0)
    covariance = jnp.linalg.inv(total)
    covariance = 0.5 * (covariance + covariance.T)
    mean = covariance @ jnp.einsum("kij,kj->i", precisions, means)
    return mean, covariance


def shard_agreement(
    means: Float[ArrayLike, "shard p"], covariances: Float[ArrayLike, "shard p p"]
) -> np.ndarray:
    """|μ_k − μ*| / sd_k, `(shard, p)`: each shard's mean against the consensus mean μ* of the
    Gaussians N(μ_k, Σ_k) (`consensus_gaussian`), in that shard's sds. For shards whose
    Gaussians describe them, μ_k − μ* has sd √((K − 1)/K) sd_k (independent shards), so a value
    above 4 says a shard is not what its Gaussian claims and the product is biased."""
    means, covariances = np.asarray(means), np.asarray(covariances)
    combined = np.asarray(consensus_gaussian(means, covariances)[0])
    sd = np.sqrt(np.diagonal(covariances, axis1=1, axis2=2))
    return np.abs(means - combined) / np.where(sd > 0, sd, np.inf)


@jax.jit
def consensus_combine(
    draws: Float[ArrayLike, "shard *sample p"],
) -> Float[Array, "*sample p"]:
    """Consensus Monte Carlo draws (Scott et al. 2016), full-covariance precision weights.

    θ*_s = (Σ_k W_k)⁻¹ Σ_k W_k θ_{k,s} with W_k the inverse sample covariance of shard k.
    A single shard is returned unchanged.

    **Arguments:** `draws` `(shard, *sample, p)`: every shard the same sample shape; draw s of
    each shard is paired with draw s of the others (the shards' chains are independent).

    **Returns:** the combined draws, shape `(*sample, p)`.
    """
    draws = jnp.asarray(draws)
    flat = _flatten(draws)
    if flat.shape[0] == 1:
        return draws[0]
    _, covariances = shard_moments(draws)
    precisions = _precisions(covariances)
    total = jnp.sum(precisions, axis=0)
    weighted = jnp.einsum("kij,knj->ni", precisions, flat)
    combined = jnp.linalg.solve(total, weighted.T).T
    return combined.reshape(draws.shape[1:])


def mixture_gaussian(
    means: Float[ArrayLike, "shard p"], covariances: Float[ArrayLike, "shard p p"]
) -> tuple[Float[Array, " p"], Float[Array, "p p"]]:
    """Mean and covariance of the equal-weight mixture of N(μ_k, Σ_k).

    **Returns:** `(mean, covariance)`: mean of the μ_k; mean of the Σ_k plus the (biased)
    covariance of the μ_k.
    """
    means = jnp.asarray(means)
    covariances = jnp.asarray(covariances)
    mean = means.mean(axis=0)
    spread = means - mean
    return mean, covariances.mean(axis=0) + spread.T @ spread / means.shape[0]


def mixture_combine(
    draws: Float[ArrayLike, "shard *sample p"], key: PRNGKeyArray
) -> Float[Array, "*sample p"]:
    """Draws of the equal-weight mixture of the shard posteriors (module docstring).

    All K·S shard draws are pooled and S of them are taken without replacement (a random
    permutation), so every shard contributes S/K draws on average.

    **Arguments:** `draws` `(shard, *sample, p)`; `key`, a `jax.random` key.

    **Returns:** draws of shape `(*sample, p)` (the sample shape of one shard).
    """
    draws = jnp.asarray(draws)
    flat = _flatten(draws)
    pooled = flat.reshape(-1, flat.shape[-1])
    chosen = jr.permutation(key, pooled.shape[0])[: flat.shape[1]]
    return pooled[chosen].reshape(draws.shape[1:])
