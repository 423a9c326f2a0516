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

from ._problem import FitProblem, evaluate_at
from ._profile import profile_at
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


def _gauss_newton_terms(z, problem: FitProblem, transform: BoxTransform, z_scale, reference):
    theta = z * z_scale
    x = transform.to_bounded(theta)
    if reference is None:  # z covers the whole fit vector
        evaluation = evaluate_at(problem, x)
        gram, gradient, ssr = evaluation.gram, evaluation.gradient, evaluation.ssr
    else:  # z covers the physics; the scaling coefficients are profiled (`_profile`)
        gram, gradient, ssr = profile_at(problem, x, reference)[1:]
    derivative = transform.derivative(theta) * z_scale
    gram = derivative[:, None] * gram * derivative[None, :]
    gradient = derivative * gradient
    return square_root_factor(gram, gradient, ssr)


@eqx.filter_custom_jvp
def compressed_residual(z: Float[Array, " p"], args) -> Float[Array, " p1"]:
    """ρ of the module docstring at θ = z ⊙ z_scale: ‖ρ‖² is the weighted sum of squared
    residuals. `args = (problem, transform, z_scale, reference)`; the solver works in the scaled
    coordinates z, in which JᵀJ has a unit diagonal at the start (so the solver's initial damping
    is meaningful), and x = transform.to_bounded(z ⊙ z_scale).

    With `reference` None, x is the whole fit vector. Given reference scaling coefficients, x
    is the free physics alone and ρ is that of the profiled problem (`_profile`: the best
    contrast/offset for these physics, with Kaufman's Gauss–Newton model), which has the
    same minimum.
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
