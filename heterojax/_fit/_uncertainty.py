"""Covariance and standard errors of a least-squares solution (lineax pseudo-inverse)."""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._compressed import NULL_EIGENVALUE_FRACTION
from ._problem import FitProblem


@eqx.filter_jit
def solution_terms(problem: FitProblem, x, gram):
    """Everything the result needs at the solution x besides `evaluate_at`, in one program.

    The covariance terms: with the Jacobi scaling S = diag(G)^{−1/2}, the pseudo-inverse of
    S G S (lineax SVD solves, singular values below `NULL_EIGENVALUE_FRACTION` of the largest
    dropped), S, and the eigen-decomposition of S G S (to flag undetermined directions). Also
    the fitted model, contrast and offset per map, max |v(t)| on the grid (aliasing check) and
    which parameters sit at a bound.
    """
    diagonal = jnp.diagonal(gram)
    scale = jnp.where(diagonal > 0, 1 / jnp.sqrt(jnp.where(diagonal > 0, diagonal, 1.0)), 0.0)
    scaled = scale[:, None] * gram * scale[None, :]
    operator = lx.MatrixLinearOperator(scaled, lx.symmetric_tag)
    solver = lx.SVD(rcond=NULL_EIGENVALUE_FRACTION)
    identity = jnp.eye(x.shape[0], dtype=x.dtype)
    # throw=False: no error callback, so that this program can be kept in the compilation cache.
    inverse = jax.vmap(lambda e: lx.linear_solve(operator, e, solver, throw=False).value)(identity)
    eigenvalues, vectors = jnp.linalg.eigh(scaled)
    model, contrast, offset = problem.unpack(x)
    speed = jnp.max(jnp.abs(model.velocity(problem.t)))
    return {
        "inverse": inverse,
        "scale": scale,
        "eigenvalues": eigenvalues,
        "vectors": vectors,
        "model": model,
        "contrast": contrast,
        "offset": offset,
        "speed": speed,
        "at_bound": problem.transform.at_bound(x),
    }


class Uncertainty(NamedTuple):
    """`covariance` and `correlation` over the fit vector, `stderr_vector`, `stderr` by name
    (per-map arrays for contrast/offset), `singular`, and the `terms` of `solution_terms`."""

    covariance: np.ndarray
    correlation: np.ndarray
    stderr_vector: np.ndarray
    stderr: dict[str, Any]
    singular: bool
    terms: dict[str, Any]


def curvature_uncertainty(problem: FitProblem, x, gram, variance_scale: float) -> Uncertainty:
    """C = s² (JᵀJ)⁺ at the solution, with s² = `variance_scale` (the reduced χ² when σ was
    estimated, else 1). Parameters along null directions of JᵀJ get infinite errors.
    """
    terms = solution_terms(problem, x, gram)
    inverse, scale = np.asarray(terms["inverse"]), np.asarray(terms["scale"])
    eigenvalues, vectors = np.asarray(terms["eigenvalues"]), np.asarray(terms["vectors"])
    covariance = variance_scale * scale[:, None] * inverse * scale[None, :]
    null = eigenvalues <= NULL_EIGENVALUE_FRACTION * np.max(eigenvalues)
    singular = bool(np.any(null)) or bool(np.any(scale == 0))
    undetermined = (scale == 0) | np.any(np.abs(vectors[:, null]) > 1e-3, axis=1)
    variances = np.where(undetermined, np.inf, np.diagonal(covariance))
    stderr_vector = np.sqrt(np.maximum(variances, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.outer(stderr_vector, stderr_vector)
    correlation = np.where(
        np.outer(undetermined, undetermined) | np.isinf(correlation), np.nan, correlation
    )
    np.fill_diagonal(correlation, np.where(undetermined, np.nan, 1.0))

    stderr: dict[str, Any] = {name: float(e) for name, e in zip(problem.names, stderr_vector)}
    n_phys, n_con, n_free = problem.n_free_physics, problem.n_contrast, problem.n_parameters
    for kind, basis, block in (
        ("contrast", np.asarray(problem.contrast_basis), slice(n_phys, n_phys + n_con)),
        ("offset", np.asarray(problem.offset_basis), slice(n_phys + n_con, n_free)),
    ):
        if basis.shape[1] == 0:
            continue
        sub = covariance[block, block]
        per_map = np.einsum("ak,kl,al->a", basis, sub, basis)
        if np.any(undetermined[block]):
            per_map = np.where(np.abs(basis[:, undetermined[block]]).sum(1) > 0, np.inf, per_map)
        stderr[kind] = np.sqrt(np.maximum(per_map, 0.0))
    return Uncertainty(covariance, correlation, stderr_vector, stderr, singular, terms)
