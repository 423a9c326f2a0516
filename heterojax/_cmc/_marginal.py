"""The scaling coefficients of a marginalised shard posterior, drawn after sampling.

With `NUTS(scaling="marginal")` (the default) NUTS samples the free physics θ alone: c2 is
linear in the contrast/offset coefficients α, so each shard's likelihood is integrated over
them in closed form (`_posterior.conditional_scaling`). The ridge that every map's contrast
and offset form with the fraction and the decays (the one that made the joint posterior hard
to sample: hundreds of leapfrog steps a draw) is then gone from the sampled space.

The joint draws are recovered exactly: given a draw θ of shard k's marginal, α is drawn from
its conditional in the same shard,

    α | θ ~ N(Q_k⁻¹ r_k, Q_k⁻¹)      (Q_k, r_k at θ*, `ScalingConditional`),

so (θ, α) is a draw of shard k's joint posterior p_k(θ, α). Everything downstream (the
canonical labelling, the consensus combination, the diagnostics) sees the same full vectors as
without the marginalisation.

**With a curvature adjustment** the likelihood is evaluated at θ* = θ̂ + A (θ − θ̂), which
gives the physics the honest covariance, but α | θ ~ N(m(θ*), Q⁻¹) above (m = Q⁻¹r) keeps the
unadjusted (formal) width. The coefficients are adjusted too (`_adjustment.scaling_map`):

    α = m(θ*) + T ε + D (θ − θ̂),      ε ~ N(0, Q⁻¹),

with T Q⁻¹ Tᵀ the honest conditional covariance C_αα − C_αθ C_θθ⁻¹ C_θα of the NLSQ fit's
covariance C (times K in a shard) and D the shift that makes the mean's slope in θ at θ̂ the
honest one, C_αθ C_θθ⁻¹. Like the physics map, this keeps the likelihood's own shape away
from θ̂ (the exact, nonlinear m(θ*)) and corrects only the widths. It is a curvature
adjustment of the joint likelihood: α ↦ α* = m(θ*) + T⁻¹ (α − m(θ*) − D (θ − θ̂)) has a
constant Jacobian, so the physics marginal is unchanged.

**Assumption.** In the integral and in the conditional the box prior of α is a Gaussian of
the box's mean and variance (`_posterior.scaling_prior`): the conditional's mass outside the
box must be negligible. `complete_scaling` counts the draws that fall outside
(moved just inside by the box transform), and `fit_cmc` warns when there are any.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._posterior import ShardData, ShardPosterior, conditional_scaling


# Draws evaluated together when the coefficients are drawn (memory: this many shard passes).
_DRAW_BATCH = 64


def _draw_coefficients(posterior: ShardPosterior, theta, shard: ShardData, key):
    """One draw of α | θ in one shard (module docstring), bounded values; with a curvature
    adjustment of the coefficients (`ShardPosterior.scaling_stretch`), mapped by it."""
    conditional = conditional_scaling(posterior, posterior.likelihood_theta(theta), shard)
    noise = jr.normal(key, conditional.mean.shape, dtype=conditional.mean.dtype)
    deviation = jax.scipy.linalg.solve_triangular(conditional.factor.T, noise, lower=False)
    deviation = deviation / conditional.scale
    stretch, slope = posterior.scaling_stretch, posterior.scaling_slope
    if stretch is None or slope is None or posterior.likelihood_center is None:
        return conditional.mean + deviation
    shift = slope @ (theta - posterior.likelihood_center)
    return conditional.mean + stretch @ deviation + shift


@eqx.filter_jit
def complete_scaling(
    posterior: ShardPosterior,
    theta: Float[Array, "shard *batch k"],
    shard_data: ShardData,
    key: PRNGKeyArray,
) -> tuple[Float[Array, "shard *batch p"], Int[Array, ""]]:
    """Joint draws (θ, α) from draws θ of each shard's marginal posterior.

    **Arguments:** the marginalised `posterior`; `theta`, the physics draws in θ with a leading
    shard axis; `shard_data` with the same leading axis; a `key`.

    **Returns:** the full vectors in the sampler's unconstrained coordinates `(shard, *batch,
    p)` (α mapped by the box transform), and the number of coefficient draws that fell outside
    their box.
    """
    problem = posterior.problem
    k = problem.n_free_physics
    transform = problem.transform
    n_shards = theta.shape[0]
    flat = theta.reshape(n_shards, -1, k)
    n_draws = flat.shape[1]
    keys = jr.split(key, flat.shape[:2])
    # Draws padded (with copies of the last one) to whole batches: `lax.map` compiles its
    # body once, not again for a remainder batch.
    batch = min(_DRAW_BATCH, n_draws)
    padding = ((0, 0), (0, -n_draws % batch))
    padded = jnp.pad(flat, padding + ((0, 0),), mode="edge")
    padded_keys = jnp.pad(keys, padding, mode="edge")

    def per_shard(args):
        shard, thetas, shard_keys = args
        draw = lambda pair: _draw_coefficients(posterior, pair[0], shard, pair[1])  # noqa: E731
        return jax.lax.map(draw, (thetas, shard_keys), batch_size=batch)

    coefficients = jax.lax.map(per_shard, (shard_data, padded, padded_keys))[:, :n_draws]
    lower, upper = transform.lower[k:], transform.upper[k:]
    outside = jnp.sum((coefficients < lower) | (coefficients > upper))
    physics_x = posterior.sampled_transform().to_bounded(flat)
    full = transform.to_unconstrained(jnp.concatenate([physics_x, coefficients], axis=-1))
    full = jnp.concatenate([flat, full[..., k:]], axis=-1)
    return full.reshape(*theta.shape[:-1], full.shape[-1]), outside


__all__ = ["complete_scaling"]
