"""Variable projection: the contrast/offset coefficients profiled out of the least squares.

c2 is linear in the scaling coefficients α (contrast and offset of every map through the bases),
so for given physics θ the best α is a small box-constrained linear least-squares problem:

    α*(θ) = argmin_{l ≤ α ≤ u} ‖r(θ, α)‖²,

and the fit minimises the profiled χ²(θ) = ‖r(θ, α*(θ))‖² over the physics alone (Golub &
Pereyra 1973). Its minimum is the joint minimum over (θ, α): the objective is unchanged, only
the search is. Levenberg–Marquardt then works with Kaufman's (1975) Gauss–Newton model of the
profiled residual: with J = [J_θ, J_α] at (θ, α*) and F the coefficients strictly inside their
bounds,

    G_θ = J_θᵀJ_θ − J_θᵀJ_F (J_FᵀJ_F)⁻¹ J_FᵀJ_θ,      b_θ = J_θᵀr − J_θᵀJ_F (J_FᵀJ_F)⁻¹ J_Fᵀr

(the Schur complement; J_Fᵀr = 0 at α*, so b_θ is the exact gradient of ½χ²(θ)). Coefficients
at a bound are held there (their derivative in θ is 0), and coefficients no used entry
depends on (a map dropped from a screening problem) keep their reference value.

Why: each map's contrast trades off against the physics that sets the amplitude of its
fringes (the fraction, the decays), one such ridge per map. LM on the joint vector crawls along
them (on a 42-map file it used 256 steps without converging); on the profiled problem the
ridges are gone and the same fit converges in about 40 (`benchmarks/bench_whole_file.py`).
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._problem import FitProblem, Moments, coefficient_system, moments_at


# Rounds of the active-set iteration of `box_least_squares` (each one linear solve). Per-map
# scaling needs one or two; more only matter when many coefficients sit at bounds at once.
_ACTIVE_SET_ROUNDS = 6
# Coefficients whose diagonal of JᵀJ is below this fraction of the largest are undetermined.
_UNDETERMINED = 1e-14
# Ridge on the unit diagonal of Jacobi-scaled coefficient systems.
_RIDGE = 1e-12


def _jacobi_solve(matrix, right):
    """matrix⁻¹ · right for a symmetric positive semidefinite matrix: Jacobi-scaled, with a tiny
    ridge (undetermined directions get a bounded solution instead of an infinite one), by
    Cholesky (a much smaller compiled program than an LU solve)."""
    diagonal = jnp.diagonal(matrix)
    scale = jnp.where(diagonal > 0, 1 / jnp.sqrt(jnp.where(diagonal > 0, diagonal, 1.0)), 1.0)
    scaled = scale[:, None] * matrix * scale[None, :]
    factor = jnp.linalg.cholesky(scaled + _RIDGE * jnp.eye(matrix.shape[0], dtype=matrix.dtype))
    columns = right.reshape(right.shape[0], -1) * scale[:, None]
    half = jax.lax.linalg.triangular_solve(factor, columns, left_side=True, lower=True)
    solution = jax.lax.linalg.triangular_solve(
        factor, half, left_side=True, lower=True, transpose_a=True
    )
    return (scale[:, None] * solution).reshape(right.shape)


def box_least_squares(hessian, target, lower, upper):
    """argmin ½ δᵀHδ − fᵀδ over lower ≤ δ ≤ upper (H positive semidefinite), by an active-set
    iteration: solve with the active coordinates at their bounds, then activate the free ones
    that left the box and release the active ones whose gradient Hδ − f points inside (the
    KKT conditions). Coordinates H does not determine stay at 0 (clipped into the box).

    **Returns:** `(δ, free)`: the solution and which coordinates are strictly inside their
    bounds and determined (those whose value follows the data).
    """
    diagonal = jnp.diagonal(hessian)
    determined = diagonal > _UNDETERMINED * jnp.max(diagonal, initial=0.0)
    # Undetermined coordinates: a unit row with zero right-hand side, so δ = 0 there.
    hessian = jnp.where(determined[:, None] & determined[None, :], hessian, 0.0)
    hessian = hessian + jnp.diag(jnp.where(determined, 0.0, 1.0))
    target = jnp.where(determined, target, 0.0)
    zero = jnp.zeros_like(target)

    def solve(low, high):
        fixed = jnp.where(low, lower, jnp.where(high, upper, zero))
        free = ~(low | high)
        matrix = jnp.where(free[:, None] & free[None, :], hessian, jnp.eye(target.shape[0]))
        right = jnp.where(free, target - hessian @ fixed, fixed)
        return jnp.where(free, _jacobi_solve(matrix, right), fixed)

    def round_(_, active):
        low, high = active
        delta = solve(low, high)
        gradient = hessian @ delta - target
        free = ~(low | high)
        low = (low & (gradient > 0)) | (free & (delta < lower))
        high = (high & (gradient < 0)) | (free & (delta > upper))
        return low, high

    none = jnp.zeros(target.shape, bool)
    low, high = jax.lax.fori_loop(0, _ACTIVE_SET_ROUNDS, round_, (none, none))
    delta = jnp.clip(solve(low, high), lower, upper)
    free = determined & (delta > lower) & (delta < upper)
    return delta, free


class Profile(NamedTuple):
    """The profiled problem at given physics: the best `coefficients` α*, and the Gauss–Newton
    terms of the profiled residual, `gram` G_θ (k, k), `gradient` b_θ (k,) and `ssr` ‖r‖²."""

    coefficients: Float[Array, " c"]
    gram: Float[Array, "k k"]
    gradient: Float[Array, " k"]
    ssr: Float[Array, ""]


def profile_at(
    problem: FitProblem, physics: Float[Array, " k"], reference: Float[Array, " c"]
) -> Profile:
    """The profiled problem (module doc) at `physics`, one pass over the maps (`moments_at`,
    centred on each map's own best contrast and offset) and a small compiled assembly.

    `reference` are coefficients inside their bounds, the value kept by coefficients the data
    do not determine.
    """
    return profile_of(problem, jnp.concatenate([physics, reference]))


def profile_of(problem: FitProblem, x: Float[ArrayLike, " p"]) -> Profile:
    """`profile_at` at x = [physics; reference] (the whole fit vector)."""
    return profiled_terms(problem, moments_at(problem, x, jnp.asarray(True)), x)


@eqx.filter_jit
def profiled_terms(problem: FitProblem, moments: Moments, x) -> Profile:
    k = problem.n_free_physics
    physics, reference = x[:k], x[k:]
    if x.shape[0] == k:  # no free scaling coefficient: nothing to profile
        evaluation = moments.evaluation(problem, x)
        return Profile(reference, evaluation.gram, evaluation.gradient, evaluation.ssr)
    hessian, target = coefficient_system(problem, moments.scaling_sums(problem))
    lower, upper = problem.transform.lower[k:], problem.transform.upper[k:]
    delta, free = box_least_squares(
        hessian, target - hessian @ reference, lower - reference, upper - reference
    )
    coefficients = reference + delta
    evaluation = moments.evaluation(problem, jnp.concatenate([physics, coefficients]))
    gram, gradient = evaluation.gram, evaluation.gradient
    both = free[:, None] & free[None, :]
    coupled = jnp.where(both, gram[k:, k:], jnp.eye(free.shape[0], dtype=gram.dtype))
    cross = jnp.where(free[None, :], gram[:k, k:], 0.0)
    right = jnp.concatenate([cross.T, jnp.where(free, gradient[k:], 0.0)[:, None]], axis=1)
    solved = _jacobi_solve(coupled, right)
    reduced_gram = gram[:k, :k] - cross @ solved[:, :k]
    reduced_gradient = gradient[:k] - cross @ solved[:, k]
    symmetric = 0.5 * (reduced_gram + reduced_gram.T)
    return Profile(coefficients, symmetric, reduced_gradient, evaluation.ssr)


def physics_transform(problem: FitProblem):
    """The box transform of the free physics parameters alone."""
    return problem.transform.take(problem.n_free_physics)


def full_vectors(
    problem: FitProblem, physics: ArrayLike, references: ArrayLike, known: dict | None = None
) -> np.ndarray:
    """Rows [physics, α*(physics)] from rows of physics and reference coefficients; α* read
    from `known` (keyed by the bytes of [physics, reference]) where a pass there left it,
    otherwise one pass over the data each."""
    physics, references = np.asarray(physics), np.asarray(references)
    rows = np.concatenate([physics, references], axis=1)
    known = {} if known is None else known

    def coefficients(row):
        found = known.get(row.tobytes())
        return profile_of(problem, row).coefficients if found is None else found

    return np.stack(
        [np.concatenate([theta, coefficients(row)]) for theta, row in zip(physics, rows)]
    )
