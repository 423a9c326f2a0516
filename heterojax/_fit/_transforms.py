"""Smooth maps between box-bounded parameters and unconstrained coordinates.

Both fits work in unconstrained coordinates θ ∈ ℝᵖ so that no parameter can leave its box:

    two-sided  [l, u]:   x = l + (u − l) · σ(θ),       σ(θ) = 1 / (1 + e^{−θ})
    lower only [l, ∞):   x = l + e^{θ}
    upper only (−∞, u]:  x = u − e^{−θ}
    none:                x = θ

Near a finite bound the map is exponential (x − l ≈ (u − l) e^{θ}), so parameters that span
decades (D0, v0) are effectively fitted on a log scale there.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


# Starting points are pulled this far (as a fraction of the range) inside a two-sided box, so
# that the transform's derivative is not vanishingly small at the start.
_INTERIOR = 1e-6


class BoxTransform(eqx.Module):
    """Elementwise bijection between ℝᵖ and the box [lower, upper] (module docstring).

    **Fields:** `lower`, `upper` — arrays of shape `(p,)`, ±inf for an open side.
    """

    lower: Float[Array, " p"]
    upper: Float[Array, " p"]

    def _kinds(self):
        lower_finite = jnp.isfinite(self.lower)
        upper_finite = jnp.isfinite(self.upper)
        return (
            lower_finite & upper_finite,
            lower_finite & ~upper_finite,
            ~lower_finite & upper_finite,
        )

    def _safe(self):
        lower = jnp.where(jnp.isfinite(self.lower), self.lower, 0.0)
        upper = jnp.where(jnp.isfinite(self.upper), self.upper, 0.0)
        return lower, upper

    def to_bounded(self, theta: Float[Array, " p"]) -> Float[Array, " p"]:
        """x(θ): unconstrained → bounded."""
        both, lower_only, upper_only = self._kinds()
        lower, upper = self._safe()
        return jnp.where(
            both,
            lower + (upper - lower) * jax.nn.sigmoid(theta),
            jnp.where(
                lower_only,
                lower + jnp.exp(jnp.where(lower_only, theta, 0.0)),
                jnp.where(upper_only, upper - jnp.exp(-jnp.where(upper_only, theta, 0.0)), theta),
            ),
        )

    def to_unconstrained(self, x: Float[Array, " p"]) -> Float[Array, " p"]:
        """θ(x): bounded → unconstrained; values on or outside a bound move just inside first."""
        both, lower_only, upper_only = self._kinds()
        lower, upper = self._safe()
        span = jnp.where(both, upper - lower, 1.0)
        fraction = jnp.clip((x - lower) / span, _INTERIOR, 1 - _INTERIOR)
        tiny = jnp.finfo(jnp.result_type(float)).tiny
        above = jnp.maximum(x - lower, jnp.maximum(_INTERIOR * jnp.abs(lower), tiny))
        below = jnp.maximum(upper - x, jnp.maximum(_INTERIOR * jnp.abs(upper), tiny))
        return jnp.where(
            both,
            jnp.log(fraction) - jnp.log1p(-fraction),
            jnp.where(lower_only, jnp.log(above), jnp.where(upper_only, -jnp.log(below), x)),
        )

    def derivative(self, theta: Float[Array, " p"]) -> Float[Array, " p"]:
        """dx/dθ, elementwise."""
        both, lower_only, upper_only = self._kinds()
        lower, upper = self._safe()
        s = jax.nn.sigmoid(theta)
        return jnp.where(
            both,
            (upper - lower) * s * (1 - s),
            jnp.where(
                lower_only,
                jnp.exp(jnp.where(lower_only, theta, 0.0)),
                jnp.where(upper_only, jnp.exp(-jnp.where(upper_only, theta, 0.0)), 1.0),
            ),
        )

    def log_abs_det_jacobian(self, theta: Float[Array, " p"]) -> Float[Array, ""]:
        """log |dx/dθ| summed over coordinates (the change-of-variables term for densities).

        Computed in log space (log σ(θ) + log σ(−θ) = −softplus(−θ) − softplus(θ)) so it stays
        finite far out in the tails.
        """
        both, lower_only, upper_only = self._kinds()
        lower, upper = self._safe()
        log_span = jnp.log(jnp.where(both, upper - lower, 1.0))
        per_coordinate = jnp.where(
            both,
            log_span - jax.nn.softplus(-theta) - jax.nn.softplus(theta),
            jnp.where(lower_only, theta, jnp.where(upper_only, -theta, 0.0)),
        )
        return jnp.sum(per_coordinate)

    def at_bound(self, x: Float[Array, " p"], *, tolerance: float = 1e-6) -> Float[Array, " p"]:
        """True where x lies within `tolerance` (relative to the range, or to |bound|+1 for a
        one-sided box) of a finite bound."""
        both, _, _ = self._kinds()
        lower, upper = self._safe()
        scale_lower = jnp.where(both, upper - lower, jnp.abs(lower) + 1)
        scale_upper = jnp.where(both, upper - lower, jnp.abs(upper) + 1)
        near_lower = jnp.isfinite(self.lower) & (x - lower <= tolerance * scale_lower)
        near_upper = jnp.isfinite(self.upper) & (upper - x <= tolerance * scale_upper)
        return near_lower | near_upper


class PeriodicBoxTransform(eqx.Module):
    """The bounded map used by the least-squares solver (as in MINUIT):

        two-sided  [l, u]:   x = l + (u − l) · (1 + sin θ) / 2
        lower only [l, ∞):   x = l − 1 + √(θ² + 1)
        upper only (−∞, u]:  x = u + 1 − √(θ² + 1)
        none:                x = θ

    Unlike the logistic map it has no flat tails: a parameter that reaches a bound can step
    back inside (θ moves on past the turning point), where a logistic coordinate would run off
    to ±∞ and stay there. It is not one-to-one, so samplers use `BoxTransform` instead.
    """

    lower: Float[Array, " p"]
    upper: Float[Array, " p"]

    def _parts(self):
        lower_finite = jnp.isfinite(self.lower)
        upper_finite = jnp.isfinite(self.upper)
        lower = jnp.where(lower_finite, self.lower, 0.0)
        upper = jnp.where(upper_finite, self.upper, 0.0)
        both = lower_finite & upper_finite
        return both, lower_finite & ~upper_finite, ~lower_finite & upper_finite, lower, upper

    def to_bounded(self, theta: Float[Array, " p"]) -> Float[Array, " p"]:
        """x(θ)."""
        both, lower_only, upper_only, lower, upper = self._parts()
        hyperbola = jnp.sqrt(theta**2 + 1)
        return jnp.where(
            both,
            lower + (upper - lower) * (1 + jnp.sin(theta)) / 2,
            jnp.where(
                lower_only,
                lower - 1 + hyperbola,
                jnp.where(upper_only, upper + 1 - hyperbola, theta),
            ),
        )

    def to_unconstrained(self, x: Float[Array, " p"]) -> Float[Array, " p"]:
        """A θ with x(θ) = x, moved just inside the box when x sits on a bound."""
        both, lower_only, upper_only, lower, upper = self._parts()
        span = jnp.where(both, upper - lower, 1.0)
        fraction = jnp.clip((x - lower) / span, _INTERIOR, 1 - _INTERIOR)
        above = jnp.maximum(x - lower + 1, 1 + _INTERIOR)
        below = jnp.maximum(upper - x + 1, 1 + _INTERIOR)
        return jnp.where(
            both,
            jnp.arcsin(2 * fraction - 1),
            jnp.where(
                lower_only,
                jnp.sqrt(above**2 - 1),
                jnp.where(upper_only, jnp.sqrt(below**2 - 1), x),
            ),
        )

    def derivative(self, theta: Float[Array, " p"]) -> Float[Array, " p"]:
        """dx/dθ, elementwise."""
        both, lower_only, upper_only, lower, upper = self._parts()
        slope = theta / jnp.sqrt(theta**2 + 1)
        return jnp.where(
            both,
            (upper - lower) * jnp.cos(theta) / 2,
            jnp.where(lower_only, slope, jnp.where(upper_only, -slope, 1.0)),
        )
