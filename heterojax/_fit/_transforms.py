"""Smooth maps between box-bounded parameters and unconstrained coordinates.

Both fits work in unconstrained coordinates θ ∈ ℝᵖ so that no parameter can leave its box:

    two-sided  [l, u]:   x = l + (u − l) · σ(θ),       σ(θ) = 1 / (1 + e^{−θ})
    lower only [l, ∞):   x = l + e^{θ}
    upper only (−∞, u]:  x = u − e^{−θ}
    none:                x = θ
    periodic [l, l + P): x = l + ((θ − l) mod P)

A periodic parameter (a box of exactly one period of the model, `ParameterSpec.wraps`: φ0 on
[−90°, 90°)) is an angle: c2 is the same smooth function of θ on either side of a wrap, so a
fit whose optimum lies near ±90° passes through it instead of creeping towards a bound that
the sigmoid only reaches at θ → ±∞ (which LM cannot finish: measured on the 8-map problem of
`bench_roi_fit.py`, a rival start crept 256 steps at φ0 → −90° without a change in χ²).

Near a finite bound the map is exponential (x − l ≈ (u − l) e^{θ}), so parameters that span
decades (D0, v0) are effectively fitted on a log scale there.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float


def shorter_way_round(difference: ArrayLike, periods: ArrayLike) -> np.ndarray:
    """A difference of parameter values taken the shorter way round for the coordinates with
    a period (> 0; `BoxTransform.periods`), in [−P/2, P/2); unchanged for the others (0)."""
    difference, periods = np.asarray(difference, float), np.asarray(periods, float)
    safe = np.where(periods > 0, periods, 1.0)
    return np.where(periods > 0, (difference + safe / 2) % safe - safe / 2, difference)


# Starting points are pulled this far (as a fraction of the range) inside a two-sided box, so
# that the transform's derivative is not vanishingly small at the start.
_INTERIOR = 1e-6


class BoxTransform(eqx.Module):
    """Elementwise bijection between ℝᵖ and the box [lower, upper] (module docstring).

    **Fields:** `lower`, `upper` — arrays of shape `(p,)`, ±inf for an open side; `periodic`
    (optional, shape `(p,)`): True where the box [lower, upper) is one period of the model.
    """

    lower: Float[Array, " p"]
    upper: Float[Array, " p"]
    periodic: Bool[Array, " p"] | None = None

    def _wraps(self):
        if self.periodic is None:
            return jnp.zeros(jnp.shape(self.lower), bool)
        return self.periodic

    def _kinds(self):
        lower_finite = jnp.isfinite(self.lower)
        upper_finite = jnp.isfinite(self.upper)
        boxed = ~self._wraps()
        return (
            lower_finite & upper_finite & boxed,
            lower_finite & ~upper_finite,
            ~lower_finite & upper_finite,
        )

    def periods(self) -> Float[Array, " p"]:
        """The period of each coordinate fitted as an angle, 0 for the others."""
        lower, upper = self._safe()
        return jnp.where(self._wraps(), upper - lower, 0.0)

    def take(self, count: int) -> "BoxTransform":
        """The transform of the first `count` coordinates."""
        periodic = None if self.periodic is None else self.periodic[:count]
        return BoxTransform(self.lower[:count], self.upper[:count], periodic)

    def _wrapped(self, theta):
        lower, upper = self._safe()
        return lower + jnp.mod(theta - lower, jnp.where(self._wraps(), upper - lower, 1.0))

    def _safe(self):
        lower = jnp.where(jnp.isfinite(self.lower), self.lower, 0.0)
        upper = jnp.where(jnp.isfinite(self.upper), self.upper, 0.0)
        return lower, upper

    def to_bounded(self, theta: Float[Array, "*batch p"]) -> Float[Array, "*batch p"]:
        """x(θ): unconstrained → bounded."""
        both, lower_only, upper_only = self._kinds()
        lower, upper = self._safe()
        x = jnp.where(
            both,
            lower + (upper - lower) * jax.nn.sigmoid(theta),
            jnp.where(
                lower_only,
                lower + jnp.exp(jnp.where(lower_only, theta, 0.0)),
                jnp.where(upper_only, upper - jnp.exp(-jnp.where(upper_only, theta, 0.0)), theta),
            ),
        )
        return jnp.where(self._wraps(), self._wrapped(theta), x)

    def to_unconstrained(self, x: Float[Array, "*batch p"]) -> Float[Array, "*batch p"]:
        """θ(x): bounded → unconstrained; values on or outside a bound move just inside first."""
        both, lower_only, upper_only = self._kinds()
        lower, upper = self._safe()
        span = jnp.where(both, upper - lower, 1.0)
        fraction = jnp.clip((x - lower) / span, _INTERIOR, 1 - _INTERIOR)
        tiny = jnp.finfo(jnp.result_type(float)).tiny
        above = jnp.maximum(x - lower, jnp.maximum(_INTERIOR * jnp.abs(lower), tiny))
        below = jnp.maximum(upper - x, jnp.maximum(_INTERIOR * jnp.abs(upper), tiny))
        theta = jnp.where(
            both,
            jnp.log(fraction) - jnp.log1p(-fraction),
            jnp.where(lower_only, jnp.log(above), jnp.where(upper_only, -jnp.log(below), x)),
        )
        return jnp.where(self._wraps(), self._wrapped(x), theta)

    def derivative(self, theta: Float[Array, "*batch p"]) -> Float[Array, "*batch p"]:
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

    def at_bound(
        self, x: Float[Array, "*batch p"], *, tolerance: float = 1e-6
    ) -> Bool[Array, "*batch p"]:
        """True where x lies within `tolerance` (relative to the range, or to |bound|+1 for a
        one-sided box) of a finite bound."""
        both, _, _ = self._kinds()
        lower, upper = self._safe()
        scale_lower = jnp.where(both, upper - lower, jnp.abs(lower) + 1)
        scale_upper = jnp.where(both, upper - lower, jnp.abs(upper) + 1)
        near_lower = jnp.isfinite(self.lower) & (x - lower <= tolerance * scale_lower)
        near_upper = jnp.isfinite(self.upper) & (upper - x <= tolerance * scale_upper)
        return (near_lower | near_upper) & ~self._wraps()
