"""Numerical primitives shared by every law and by the two-time model."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import TimeGrid


def as_parameter(value: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
    """Converts a parameter value to a floating JAX array of the default float dtype."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(float)
    return array


def power_of_time(
    t: Float[Array, "*shape"], exponent: Float[ArrayLike, ""]
) -> Float[Array, "*shape"]:
    """`t**exponent` for t ≥ 0, with t^a := 0 at t = 0 for every a.

    The base is replaced by 1 where t = 0 *before* the power is taken, so neither the value nor
    the gradient with respect to `exponent` (which carries `log t`) can become inf or nan.
    """
    positive = t > 0
    safe_t = jnp.where(positive, t, 1.0)
    return jnp.where(positive, safe_t**exponent, 0.0)


def cumulative_trapezoid(values: Float[Array, " t"], t: TimeGrid) -> Float[Array, " t"]:
    """Cumulative trapezoid integral on a (possibly non-uniform) grid.

    C[0] = 0,  C[k] = Σ_{i<k} (t_{i+1} − t_i)·(g_i + g_{i+1})/2,  so ∫_{t_i}^{t_j} g ≈ C[j] − C[i].

    Exact for piecewise-linear integrands (in particular for constant and linear rates).
    """
    increments = jnp.diff(t) * (values[1:] + values[:-1]) / 2
    return jnp.concatenate([jnp.zeros((1,), increments.dtype), jnp.cumsum(increments)])


def materialised(x: Float[Array, "k ..."]) -> Float[Array, "k ..."]:
    """x, evaluated once into its own buffer.

    XLA:CPU counts cos, sin and products as cheap and fuses them into every consumer, so factors
    that are broadcast over an N² map would be re-evaluated for each of its values. A contraction
    with the identity along the (short) leading axis is never fused into its consumers; it costs
    len(x) multiply-adds per value of x, which is far less.
    """
    return jnp.einsum("kl,l...->k...", jnp.eye(x.shape[0], dtype=x.dtype), x)


@jax.custom_jvp
def cos_sin(x: Float[Array, "..."]) -> Float[Array, "2 ..."]:
    """[cos x, sin x], evaluated once into one buffer (`materialised`).

    Its derivative reuses that buffer, d[cos x, sin x] = [−sin x, cos x] · dx: under forward
    mode XLA would otherwise evaluate sin and cos again inside every tangent's fusion (on
    XLA:CPU a float64 sine costs tens of multiply-adds, and a Jacobian has several tangents).
    """
    return materialised(jnp.stack([jnp.cos(x), jnp.sin(x)]))


@cos_sin.defjvp
def _cos_sin_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    both = cos_sin(x)
    return both, jnp.stack([-both[1], both[0]]) * dx
