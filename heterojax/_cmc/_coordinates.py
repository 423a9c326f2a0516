"""The coordinates NUTS samples in: each shard's posterior whitened by its own Laplace fit.

NUTS with a fixed (or slowly adapted) metric mixes well only when the target looks like a unit
Gaussian in the sampler's coordinates. The shard posteriors of a heterodyne fit do not, in θ:
contrast, offset, fraction and a slowly decaying reference trade off along narrow, strongly
correlated ridges whose widths differ by orders of magnitude, and each shard's posterior sits
where *its* data put it, not at the full-data optimum.

So every shard k gets its own affine map θ = m_k + L_k z:

1. m_k, the mode of log p_k(θ) (tempered prior included), by damped Gauss–Newton steps from the
   full-data centre θ̂ (the NLSQ solution when given): at each step the information
   H = Jᵀ P J + (1/K)·(−∇² log p(θ)) (J = ∂c2/∂θ at the shard's entries, P their precisions;
   the prior curvature is clipped at 0 so H stays positive semi-definite), the step
   (H + λ I)⁻¹ ∇ log p_k, and the best of a few step lengths (backtracking) is kept.
2. L_k, the Cholesky factor of the Laplace covariance H(m_k)⁻¹, its spread capped along every
   eigen-direction (sd ≤ `MAX_THETA_SD` in θ; a floor of 1e-10 of the largest variance), so
   that a direction the shard's data do not determine cannot blow up the trajectory length.

In z each shard's target is then close to N(0, I) wherever its Laplace approximation holds, and
an identity metric (or the adapted one, which corrects what the approximation misses) suits it.
The affine map has a constant Jacobian, so the density in z is the density in θ.

**Gaussian probe.** The consensus product is exact only for Gaussian shard posteriors. Before
sampling, `gaussian_defect` measures how far each shard's log density departs from its Laplace
approximation: along ± every whitened axis and ± the diagonals of every pair of axes, at radius
r = 2 (two shard sds), it compares log p_k(m_k + L_k z) − log p_k(m_k) with −r²/2 and returns
the largest absolute difference in nats. A Gaussian gives 0; a curved ridge or a boundary within
two sds gives a defect of order one or more.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._posterior import (
    AffinePreconditioner,
    ShardData,
    ShardPosterior,
    joint_gram,
    scaling_prior,
    schur_physics,
)


# In θ a sigmoid-bounded parameter already spans its whole box at ~3 units: no shard sd above.
MAX_THETA_SD = 3.0
_NEWTON_STEPS = 12
_STEP_LENGTHS = (1.0, 0.5, 0.25, 0.1, 0.03)
_PROBE_RADIUS = 2.0


def _information_and_gradient(posterior: ShardPosterior, theta, shard: ShardData, extra_precision):
    """H(θ) = Jᵀ P J + (1/K) max(−∇² log p(θ), 0) + `extra_precision` and the gradient
    ∇ log p_k(θ) = w Jᵀ P (y − c2(θ)) + (1/K) ∇ log p(θ) (one shard), from one forward-mode
    Jacobian of the model values: no reverse pass through the model (which would double the
    compiled program). With `marginal_scaling` the likelihood part is the Schur complement of
    the joint information at the shard's conditional mean of the scaling coefficients (with
    their tempered prior), and the gradient that of the marginal density (reverse mode)."""
    if posterior.marginal_scaling:
        return _marginal_information_and_gradient(posterior, theta, shard, extra_precision)
    values_of = lambda t: (posterior.model_values(t, shard),) * 2  # noqa: E731
    jacobian, values = jax.jacfwd(values_of, has_aux=True)(theta)
    jacobian = jacobian.reshape(-1, theta.shape[0])
    precision = shard.precision.reshape(-1)
    weight = posterior.likelihood_weight
    likelihood = weight * (jacobian.T @ (precision[:, None] * jacobian))
    residual = (shard.observed - values).reshape(-1)
    gradient = weight * (jacobian.T @ (precision * residual))
    gradient = gradient + posterior.tempering * jax.grad(posterior.log_prior)(theta)
    return likelihood + _prior_information(posterior, theta) + extra_precision, gradient


def _prior_information(posterior: ShardPosterior, theta):
    """(1/K) max(−∇² log p(θ), 0): the tempered prior's curvature, negative part dropped."""
    prior = -jax.hessian(posterior.log_prior)(theta)
    eigenvalues, vectors = jnp.linalg.eigh(0.5 * (prior + prior.T))
    return posterior.tempering * (vectors * jnp.clip(eigenvalues, 0.0, None)) @ vectors.T


def _marginal_information_and_gradient(posterior: ShardPosterior, theta, shard, extra_precision):
    k = theta.shape[0]
    # The integrated likelihood at w = 1, times w (`ShardPosterior.weighted_log_likelihood`).
    # One evaluation gives the gradient and the conditional at θ* (the mean the Gram needs).
    gradient, conditional = jax.grad(posterior.density_and_conditional, has_aux=True)(theta, shard)
    gram = joint_gram(posterior, theta, conditional.mean, shard)
    prior_scaling = scaling_prior(posterior)[0]
    gram = gram + jnp.diag(jnp.concatenate([jnp.zeros(k), prior_scaling]))
    likelihood = posterior.likelihood_weight * schur_physics(gram, k)
    return likelihood + _prior_information(posterior, theta) + extra_precision, gradient


def _shard_mode(posterior: ShardPosterior, start, shard: ShardData, extra_precision, steps: int):
    """m_k by damped Gauss–Newton with backtracking (module docstring), one shard, and H(m_k).

    The loop runs `steps` + 1 times and takes no step in the last pass, whose information is
    then the one at the mode: one evaluation of H in the compiled program, not two.
    """
    density = lambda theta: posterior(theta, shard)  # noqa: E731
    n = start.shape[0]

    def step_from(theta, value, information, gradient):
        scale = jnp.sqrt(jnp.clip(jnp.diagonal(information), 1e-12, None))
        scaled = information / (scale[:, None] * scale[None, :]) + 1e-6 * jnp.eye(n)
        step = jnp.linalg.solve(scaled, gradient / scale) / scale
        trials = theta + jnp.asarray(_STEP_LENGTHS)[:, None] * step
        values = jax.vmap(density)(trials)
        values = jnp.where(jnp.isfinite(values), values, -jnp.inf)
        best = jnp.argmax(values)
        better = values[best] > value
        return jnp.where(better, trials[best], theta), jnp.where(better, values[best], value)

    def body(index, carry):
        theta, value, _ = carry
        information, gradient = _information_and_gradient(posterior, theta, shard, extra_precision)
        # The last pass only measures H at the mode: its trial steps are not evaluated.
        theta, value = jax.lax.cond(
            index < steps,
            step_from,
            lambda theta, value, *_: (theta, value),
            theta,
            value,
            information,
            gradient,
        )
        return theta, value, information

    carry = (start, density(start), jnp.zeros((n, n), start.dtype))
    theta, _, information = jax.lax.fori_loop(0, steps + 1, body, carry)
    return theta, information


def _capped_factor(covariance: Float[Array, "p p"]) -> Float[Array, "p p"]:
    """Cholesky factor of `covariance` with its eigenvalues capped (module docstring).

    The cap acts on eigenvalues, not on marginal sds: rescaling one coordinate of a strongly
    correlated pair would misplace its narrow direction, which sets the step size.
    """
    covariance = 0.5 * (covariance + covariance.T)
    values, vectors = jnp.linalg.eigh(covariance)
    values = jnp.clip(values, 0.0, MAX_THETA_SD**2)
    values = jnp.clip(values, 1e-10 * jnp.max(values), None)
    return jnp.linalg.cholesky((vectors * values) @ vectors.T)


def _by_shard(program, shard_data: ShardData, *per_shard):
    """`program(shard, *rows)` for every shard, one compiled call each, results stacked.

    A shard's shapes do not depend on K in the `"maps"` layout, so `shards="auto"` trying
    K = 4, 2, 1 compiles each program once (measured on 8 maps × 150², ROI model: about 20 s of
    compilation a K with a program over all shards)."""
    n_shards = shard_data.observed.shape[0]
    results = [
        program(jax.tree.map(lambda leaf: leaf[k], shard_data), *(a[k] for a in per_shard))
        for k in range(n_shards)
    ]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *results)


@eqx.filter_jit
def _laplace_of_shard(posterior: ShardPosterior, center, shard: ShardData, find_mode: bool):
    n = center.shape[0]
    # A weak ridge regulariser (sd `MAX_THETA_SD` in θ) keeps H invertible along directions the
    # shard's data and the prior leave flat; it is what the cap of the covariance amounts to.
    ridge = jnp.eye(n) / MAX_THETA_SD**2
    steps = _NEWTON_STEPS if find_mode else 0
    mode, information = _shard_mode(posterior, center, shard, ridge, steps)
    scale = jnp.sqrt(jnp.diagonal(information))
    scaled = information / (scale[:, None] * scale[None, :])
    covariance = jnp.linalg.inv(scaled) / (scale[:, None] * scale[None, :])
    values, vectors = jnp.linalg.eigh(0.5 * (covariance + covariance.T))
    values = jnp.clip(values, 1e-10 * jnp.max(values), MAX_THETA_SD**2)
    return mode, (vectors * values) @ vectors.T


def shard_laplace(
    posterior: ShardPosterior,
    center: Float[Array, " p"],
    shard_data: ShardData,
    *,
    find_mode: bool = True,
) -> tuple[Float[Array, "shard p"], Float[Array, "shard p p"]]:
    """Mode and Laplace covariance of every shard posterior (module docstring, steps 1–2),
    shard by shard (`_by_shard`).

    **Arguments:** the `posterior`; `center`, the full-data centre θ̂; `shard_data` with a
    leading shard axis; `find_mode`: False keeps θ̂ as every shard's centre (the curvature is then
    taken there).

    **Returns:** `(modes, covariances)`, shapes `(shard, p)` and `(shard, p, p)`, the covariances
    with their eigenvalues capped.
    """
    center = jnp.asarray(center)
    return _by_shard(
        lambda shard: _laplace_of_shard(posterior, center, shard, find_mode), shard_data
    )


def shard_preconditioners(
    modes: Float[Array, "shard p"], covariances: Float[Array, "shard p p"]
) -> AffinePreconditioner:
    """θ = m_k + L_k z for every shard (a leading shard axis on both fields)."""
    factors = jax.vmap(_capped_factor)(jnp.asarray(covariances))
    return AffinePreconditioner(center=jnp.asarray(modes), factor=factors)


def _probe_directions(n: int) -> np.ndarray:
    """± every axis and ± the (normalised) sums and differences of every pair of axes."""
    directions = [np.eye(n)]
    if n > 1:
        i, j = np.triu_indices(n, 1)
        pairs = np.zeros((len(i), n))
        pairs[np.arange(len(i)), i] = 1.0
        plus, minus = pairs.copy(), pairs.copy()
        plus[np.arange(len(i)), j] = 1.0
        minus[np.arange(len(i)), j] = -1.0
        directions += [plus / np.sqrt(2), minus / np.sqrt(2)]
    directions = np.concatenate(directions)
    return np.concatenate([directions, -directions])


@eqx.filter_jit
def _defect_of_shard(posterior: Callable[..., Any], shard: ShardData, center, factor):
    n = center.shape[-1]
    points = _PROBE_RADIUS * jnp.asarray(_probe_directions(n))
    density = lambda z: posterior(center + factor @ z, shard)  # noqa: E731
    values = jax.vmap(density)(points) - density(jnp.zeros(n))
    defect = jnp.abs(values + 0.5 * _PROBE_RADIUS**2)
    return jnp.max(jnp.where(jnp.isfinite(defect), defect, jnp.inf))


def gaussian_defect(
    posterior: Callable[..., Any], preconditioner: AffinePreconditioner, shard_data: ShardData
) -> Float[Array, " shard"]:
    """The largest |log p_k(m_k + L_k z) − log p_k(m_k) + r²/2| over the probe points of each
    shard, in nats (module docstring); +inf where the density is not finite at a probe. Shard
    by shard (`_by_shard`)."""
    return _by_shard(
        lambda shard, center, factor: _defect_of_shard(posterior, shard, center, factor),
        shard_data,
        jnp.asarray(preconditioner.center),
        jnp.asarray(preconditioner.factor),
    )


def whitened_starts(
    key, preconditioner: AffinePreconditioner, n_chains: int, jitter: float
) -> Array:
    """Chain starts z ~ N(0, jitter² I) per shard × chain, `(shard, chain, p)`."""
    n_shards, n = preconditioner.center.shape
    return jitter * jax.random.normal(key, (n_shards, n_chains, n))


__all__ = [
    "MAX_THETA_SD",
    "gaussian_defect",
    "shard_laplace",
    "shard_preconditioners",
    "whitened_starts",
]


class OffsetShear(eqx.Module):
    """A volume-preserving shear of θ that straightens the offset/contrast/physics ridge.

    Each map's c2 is offset_a + contrast_a · g_a(t₁, t₂; physics). The data fix the mean level
    offset_a + contrast_a · ḡ_a (ḡ_a the mean of g_a over the map's pairs) far better than
    offset, contrast and the physics separately, and that level is a curved function of them:
    a banana that straight NUTS trajectories leave within a fraction of a shard sd (a
    slowly decaying reference makes it worse: its term is nearly a constant). So the sampler's
    coordinate v replaces each offset coordinate by its deviation from the ridge,

        θ_offset,k = v_offset,k + s_k(θ_other),   s_k = T_k(L̂_k − mean_{a∈k} contrast_a ḡ_a),

    with T_k the offset's box transform (bounded → unconstrained), L̂_k the level at the centre
    and the other coordinates unchanged. s depends only on the other coordinates, so the map is
    triangular with unit diagonal: |det| = 1 and the density in v is the density in θ, exactly.
    ḡ_a is taken on a coarse grid of about 12 frames (the model evaluated there, its integrals
    on that grid), so s costs a small fraction of a likelihood evaluation; any s is exact, a
    better one only straightens more.

    Applies to `"constant"` and `"individual"` scaling (each map's offset one coefficient);
    `applies` is False otherwise and the map is the identity.
    """

    problem: Any
    t: Float[Array, " t"]
    q: Float[Array, " phi"]
    phi: Float[Array, " phi"]
    rows: Array
    columns: Array
    level: Float[Array, " b"]
    members: Float[Array, "phi b"]  # map a → offset coefficient k (0/1)
    offset_start: int = eqx.field(static=True)
    applies: bool = eqx.field(static=True)

    def _contrast_level(self, x) -> Float[Array, " b"]:
        """mean_{a∈k} contrast_a · ḡ_a for every offset coefficient k."""
        model, contrast, _ = self.problem.unpack(x)
        maps = model.c2(self.t, q=self.q, phi=self.phi, contrast=1.0, offset=0.0)  # coarse grid
        mean = maps[:, self.rows, self.columns].mean(axis=-1)
        weighted = (contrast * mean) @ self.members
        return weighted / jnp.clip(self.members.sum(axis=0), 1.0, None)

    def shift(self, theta: Float[Array, " p"]) -> Float[Array, " b"]:
        """s(θ_other) (θ's own offset coordinates do not enter)."""
        transform = self.problem.transform
        x = transform.to_bounded(theta)
        target = self.level - self._contrast_level(x)
        b = self.level.shape[0]
        full = x.at[self.offset_start : self.offset_start + b].set(target)
        return transform.to_unconstrained(full)[self.offset_start : self.offset_start + b]

    def to_theta(self, v: Float[Array, " p"]) -> Float[Array, " p"]:
        if not self.applies:
            return v
        b = self.level.shape[0]
        piece = slice(self.offset_start, self.offset_start + b)
        return v.at[piece].add(self.shift(v))

    def from_theta(self, theta: Float[Array, " p"]) -> Float[Array, " p"]:
        if not self.applies:
            return theta
        b = self.level.shape[0]
        piece = slice(self.offset_start, self.offset_start + b)
        return theta.at[piece].add(-self.shift(theta))


def offset_shear(
    problem, t, q, phi, center_theta, *, frames: int = 12, enabled: bool = True
) -> OffsetShear:
    """The `OffsetShear` of `problem` with its level L̂ at `center_theta` (θ); the identity when
    `enabled` is False or the scaling has no one-offset-per-map form."""
    basis = np.asarray(problem.offset_basis)
    n_offset = basis.shape[1]
    one_per_map = basis.size > 0 and np.all((basis == 0) | (basis == 1))
    one_per_map = bool(one_per_map and np.all(basis.sum(axis=1) == 1))
    one_per_map = one_per_map and np.all(np.asarray(problem.fixed_offset) == 0)
    t = np.asarray(t)
    coarse = t[:: max(1, t.shape[0] // frames)]
    rows, columns = np.triu_indices(coarse.shape[0], 1)
    start = len(problem.names) - n_offset
    applies = bool(enabled and one_per_map and n_offset > 0 and len(rows) > 0)
    shear = OffsetShear(
        problem=problem,
        t=jnp.asarray(coarse),
        q=jnp.asarray(q),
        phi=jnp.asarray(phi),
        rows=jnp.asarray(rows),
        columns=jnp.asarray(columns),
        level=jnp.zeros(n_offset),
        members=jnp.asarray(basis, float),
        offset_start=start,
        applies=applies,
    )
    if not applies:
        return shear
    x = problem.transform.to_bounded(center_theta)
    level = x[start:] + shear._contrast_level(x)
    return eqx.tree_at(lambda s: s.level, shear, level)


class ShearedPosterior(eqx.Module):
    """The shard density as a function of the sheared coordinate v: log p_k(θ(v))."""

    posterior: ShardPosterior
    shear: OffsetShear

    def __call__(self, v: Float[Array, " p"], shard) -> Float[Array, ""]:
        return self.posterior(self.shear.to_theta(v), shard)


@eqx.filter_jit
def sheared_laplace(shear: OffsetShear, modes, covariances):
    """Modes and Laplace covariances of θ carried to v: v = v(m), J C Jᵀ (J = ∂v/∂θ)."""

    def one(mode, covariance):
        jacobian = jax.jacfwd(shear.from_theta)(mode)
        return shear.from_theta(mode), jacobian @ covariance @ jacobian.T

    return jax.vmap(one)(modes, covariances)


@eqx.filter_jit
def sheared_to_theta(shear: OffsetShear, v):
    """θ of sampled v, any leading batch shape."""
    flat = v.reshape(-1, v.shape[-1])
    return jax.vmap(shear.to_theta)(flat).reshape(v.shape)
