"""An exact, compressed form of the least-squares problem for Levenberg–Marquardt.

A Gauss–Newton-type step at θ needs only G = JᵀJ, b = Jᵀr and ‖r‖² (the linear model is
‖r + Jδ‖² = ‖r‖² + 2bᵀδ + δᵀGδ). With the Jacobi scaling S = diag(G)^{−1/2} and the Cholesky
factorisation S G S + εI = L Lᵀ, put R = Lᵀ S⁻¹ (so RᵀR = G + εS⁻²). Then the (p + 1)-vector

    ρ(θ) = [ L⁻¹ S b ;  √(‖r‖² − ‖L⁻¹ S b‖²) ]

with the tangent map δ ↦ [R δ; 0] has ‖ρ‖² = ‖r‖² and reproduces the linear model (up to the
damping ε‖S⁻¹δ‖², ε = 1e-10, which only matters along directions the data do not determine).
`optimistix.LevenbergMarquardt` run on ρ therefore takes the steps it would take on the full
residual, while the solver only ever sees a (p + 1) × p Jacobian; G and b are accumulated map
by map (`FitProblem.evaluate`). The Cholesky factor is unique and continuous in θ, so
successive ρ are comparable component by component, as the solver's convergence test needs
(near the minimum b → 0 and ρ → [0; √χ²_min]).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._transforms import BoxTransform


# Eigenvalues of the Jacobi-scaled Gram matrix below this fraction of the largest are treated
# as exactly zero (directions the data do not determine) when reporting covariances.
NULL_EIGENVALUE_FRACTION = 1e-12
# Ridge added to the Jacobi-scaled Gram matrix (unit diagonal) before its Cholesky factorisation.
_RIDGE = 1e-10


def square_root_factor(gram: Float[Array, "p p"], gradient: Float[Array, " p"], ssr):
    """(ρ, R) of the module docstring from G, b and ‖r‖²."""
    diagonal = jnp.diagonal(gram)
    scale = jnp.where(diagonal > 0, 1 / jnp.sqrt(jnp.where(diagonal > 0, diagonal, 1.0)), 1.0)
    scaled = scale[:, None] * gram * scale[None, :]
    lower = jnp.linalg.cholesky(scaled + _RIDGE * jnp.eye(gram.shape[0], dtype=gram.dtype))
    factor = lower.T / scale[None, :]
    projected = jax.scipy.linalg.solve_triangular(lower, scale * gradient, lower=True)
    rest = jnp.sqrt(jnp.maximum(ssr - jnp.sum(projected**2), 0.0))
    return jnp.concatenate([projected, rest[None]]), factor


def _gauss_newton_terms(z, transform: BoxTransform, z_scale, gram, gradient, ssr):
    """(ρ, R) at z from G, b (with respect to the bounded x = transform.to_bounded(z ⊙ z_scale))
    and ‖r‖²: the chain rule to z, then `square_root_factor`."""
    derivative = transform.derivative(z * z_scale) * z_scale
    gram = derivative[:, None] * gram * derivative[None, :]
    return square_root_factor(gram, derivative * gradient, ssr)


@eqx.filter_custom_jvp
def compressed_residual(z: Float[Array, " p"], args) -> Float[Array, " p1"]:
    """ρ of the module docstring at z: ‖ρ‖² is the weighted sum of squared residuals.

    `args = (transform, z_scale, G, b, ‖r‖²)`, the data terms taken at x =
    transform.to_bounded(z ⊙ z_scale) by the caller (`_stepping`: the data pass is its own
    program). The solver works in the scaled coordinates z, in which JᵀJ has a unit diagonal
    at the start (so the solver's initial damping is meaningful). x is the whole fit vector, or
    the free physics alone when the caller profiles the scaling coefficients (`_profile`: G, b
    and ‖r‖² are then those of the profiled problem, which has the same minimum).
    """
    residual, _ = _gauss_newton_terms(z, *args)
    return residual


@compressed_residual.def_jvp
def _compressed_residual_jvp(primals, tangents):
    z, args = primals
    z_tangent, _ = tangents
    residual, factor = _gauss_newton_terms(z, *args)
    if z_tangent is None:
        return residual, jnp.zeros_like(residual)
    return residual, jnp.concatenate([factor @ z_tangent, jnp.zeros((1,), residual.dtype)])


def coordinate_scale(gram: ArrayLike, derivative: ArrayLike) -> np.ndarray:
    """min(1, 1 / √diag(J_θᵀ J_θ)), with J_θ = J_x · diag(dx/dθ), from G = J_xᵀJ_x and dx/dθ.

    θ = z ⊙ scale gives unit curvature, except that a unit step in z never moves θ by more than
    1 (a parameter starting where the transform is flat, e.g. at a bound, would otherwise be
    thrown across its whole box by the first step). NumPy, on the host.
    """
    curvature = np.asarray(derivative) ** 2 * np.diagonal(np.asarray(gram))
    return np.minimum(1 / np.sqrt(np.where(curvature > 0, curvature, 1.0)), 1.0)
