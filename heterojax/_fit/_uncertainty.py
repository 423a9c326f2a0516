"""Covariance and standard errors of a least-squares solution (lineax pseudo-inverse)."""

import abc
import functools
import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np

from ._compressed import NULL_EIGENVALUE_FRACTION
from ._problem import (
    ClusteredTerms,
    FitProblem,
    block_cells,
    block_ids,
    clustered_sum,
    over_maps,
    passes_by_map,
)


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


def _assemble(problem: FitProblem, covariance, undetermined, singular, terms) -> Uncertainty:
    """Standard errors, correlations and per-map contrast/offset errors from a covariance."""
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


class AbstractErrors(eqx.Module):
    """An error estimator: the covariance of the least-squares solution (a strategy passed to
    `fit_nlsq(..., errors=...)`)."""

    @abc.abstractmethod
    def covariance(
        self,
        problem: FitProblem,
        x,
        pseudo_inverse: np.ndarray,
        variance_scale: float,
        *,
        residual_maps: np.ndarray | None = None,
    ) -> np.ndarray:
        """The covariance over the fit vector at the solution x, given (JᵀJ)⁺ (with σ as used
        in the weights), s² (the reduced χ² when σ was estimated, else 1) and, when the caller
        has them, the weighted residual maps at x (`FitProblem.residual_maps`)."""

    def difference_variance(
        self, problem: FitProblem, x, difference_maps: np.ndarray, residual_maps: np.ndarray
    ) -> float:
        """Var(Σ_e d_e ε_e): the variance, under this estimator's noise model, of the weighted
        noise ε projected on a fixed weighted map d (σ as calibrated in the weights, so that
        ε has unit variance).

        It sets the noise of a χ² difference between two fixed solutions a and b: with
        d = w ⊙ (model_b − model_a), χ²_b − χ²_a = Σ d² + 2 Σ d·r_a, whose random part
        2 Σ d ε has variance 4·Var(Σ d ε) (the quality report compares other starts' minima
        on this scale). This default treats entries as independent: Σ d².
        """
        del problem, x, residual_maps
        return float(np.sum(np.square(difference_maps)))


class FormalErrors(AbstractErrors):
    """C = s² (JᵀJ)⁺: exact when the c2 entries carry independent noise of the assumed σ."""

    def covariance(self, problem, x, pseudo_inverse, variance_scale, *, residual_maps=None):
        return variance_scale * pseudo_inverse


@eqx.filter_jit
def _map_clustered_terms(problem: FitProblem, x, index, vectors, grids: dict, inverse):
    """`FitProblem.map_clustered_terms` of map `index` from its vectors (`vectors_at`)."""
    ids = block_ids(problem.t.shape[0], grids["block"], grids["shifts"])
    return problem.map_clustered_terms(
        x,
        problem.map_inputs_at(index),
        vectors,
        ids,
        grids["shift_weights"],
        grids["n_cells"],
        inverse,
    )


_clustered_scanned = eqx.filter_jit(FitProblem.frame_clustered_terms)


def clustered_terms_at(problem: FitProblem, x, grids: dict, inverse=None) -> ClusteredTerms:
    """`FitProblem.frame_clustered_terms`, compiled (as NumPy arrays): map by map from the
    maps' vectors (`vectors_at`: the model's Jacobian in the program the fit's steps use, not
    compiled again here), or in one scan for short maps (`passes_by_map`). `grids` are those
    of `FrameClusteredErrors.block_grids`."""
    x = jnp.asarray(x)
    if not passes_by_map(problem):
        terms = _clustered_scanned(problem, x, inverse=inverse, **grids)
        return ClusteredTerms(*(np.asarray(term) for term in terms))
    terms = over_maps(
        problem,
        x,
        lambda index, vectors, *_: _map_clustered_terms(
            problem, x, np.asarray(index), vectors, grids, inverse
        ),
    )
    return ClusteredTerms(*(np.sum(part, axis=0) for part in zip(*jax.device_get(terms))))


@functools.partial(jax.jit, static_argnames="n_cells")
def _clustered_products(products, block, shifts, shift_weights, n_cells: int):
    """Σ over maps of the clustered sum of products (one score column a map, `clustered_sum`)."""
    n = products.shape[-1]
    ids = block_ids(n, block, shifts)
    per_map = jax.vmap(lambda product: clustered_sum(product, ids, shift_weights, n_cells))
    return jnp.sum(per_map(products[:, None]))


residual_maps_at = eqx.filter_jit(FitProblem.residual_maps)


def frame_autocorrelation(residual_maps: np.ndarray) -> np.ndarray:
    """ρ(k): the autocorrelation over frames of the per-frame mean residual, pooled over maps.

    The mean residual of frame t, m_t = mean_j r(t, j) over the map's used entries involving
    t (either index), carries the noise that frame t shares with its neighbours; with the
    per-map demeaned m,

        ρ(k) = Σ_a Σ_t m_at m_a,t+k / Σ_a Σ_t m_at².

    `residual_maps` (maps, t, t) hold zeros on unused entries.
    """
    residual = np.asarray(residual_maps, float)
    symmetric = residual + np.swapaxes(residual, 1, 2)
    used = (residual != 0) | (np.swapaxes(residual, 1, 2) != 0)
    counts = used.sum(axis=2)
    means = np.where(counts > 0, symmetric.sum(axis=2) / np.maximum(counts, 1), 0.0)
    means = means - means.mean(axis=1, keepdims=True)
    n = means.shape[1]
    covariance = np.array([np.sum(means[:, : n - k] * means[:, k:]) for k in range(n)])
    return covariance / covariance[0] if covariance[0] > 0 else np.eye(1, n)[0]


def correlation_frames(autocorrelation: np.ndarray) -> float:
    """The integrated correlation time τ = 1 + 2 Σ_{k ≥ 1} ρ(k) in frames, summed while ρ stays
    positive (the noise beyond the first non-positive lag is taken as uncorrelated)."""
    rho = np.asarray(autocorrelation, float)[1:]
    stop = np.flatnonzero(rho <= 0)
    positive = rho[: stop[0]] if stop.size else rho
    return float(1.0 + 2.0 * positive.sum())


MIN_KEPT_SHARE = 0.1


def diagonal_roots(matrix: np.ndarray) -> np.ndarray:
    """√|diag(M)|, with 1 where the diagonal is 0: the Jacobi scale d of a symmetric matrix, so
    that M / (d dᵀ) has a unit diagonal wherever M's is non-zero."""
    root = np.sqrt(np.abs(np.diagonal(matrix)))
    return np.where(root > 0, root, 1.0)


def _nonnegative(matrix: np.ndarray) -> np.ndarray:
    """The symmetric part of a matrix with its negative eigenvalues set to 0."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.maximum(eigenvalues, 0.0)) @ vectors.T


def _pseudo_inverse_factor(pseudo_inverse: np.ndarray) -> np.ndarray:
    """R with R Rᵀ = A⁺ (from the eigen-decomposition of the Jacobi-scaled A⁺)."""
    roots = diagonal_roots(pseudo_inverse)
    eigenvalues, vectors = np.linalg.eigh(pseudo_inverse / np.outer(roots, roots))
    return roots[:, None] * vectors * np.sqrt(np.maximum(eigenvalues, 0.0))


def _whitened_meat(meat: np.ndarray, absorbed: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """[D^{−1/2} (Rᵀ M R) D^{−1/2}]₊ with D = I − Rᵀ B R (`leverage_corrected_covariance`)."""
    kept = np.eye(factor.shape[1]) - factor.T @ absorbed @ factor
    eigenvalues, vectors = np.linalg.eigh((kept + kept.T) / 2)
    root = (vectors / np.sqrt(np.maximum(eigenvalues, MIN_KEPT_SHARE))) @ vectors.T
    return _nonnegative(root @ (factor.T @ meat @ factor) @ root)


def leverage_corrected_covariance(
    meat: np.ndarray,
    absorbed: np.ndarray,
    pseudo_inverse: np.ndarray,
    map_terms: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """C = R W Rᵀ with R Rᵀ = A⁺ and W = [D^{−1/2} (Rᵀ M R) D^{−1/2}]₊, D = I − Rᵀ B R (its
    eigenvalues floored at `MIN_KEPT_SHARE`) and [·]₊ the negative eigenvalues set to 0
    (`FrameClusteredErrors`, leverage correction; B = 0 gives the plain sandwich A⁺ M A⁺,
    clipped the same way).

    With `map_terms` = (M_map, B_map), the meat and absorbed part with each whole map one
    cluster (`ClusteredTerms`), W_map is formed the same way and W ← W + [W_map − W]₊: the
    covariance that the scores share across a map's blocks, wherever it exceeds what the
    blocks hold (`FrameClusteredErrors.whole_maps`).

    The clip acts in A-whitened coordinates, where the matrix has expectation I under
    independent noise: its eigenvalues are those of A⁻¹M (corrected), which do not depend on
    how the model is parametrised, so C → T⁻¹ C T⁻ᵀ for θ → T⁻¹θ, whatever T. Clipping the raw
    meat instead rounds every direction at ε × its largest eigenvalue (recovery case 44: meat
    entries spanning 10¹⁶, D0_ref's honest error 26–119 along an exactly flat direction of χ²
    against 91.7), and clipping it in any fixed scaling makes the error depend on the units
    (calibration case 01: up to 2.1× the unclipped sandwich with raw units, 1.2× with Jacobi
    scaling, 1.01× whitened).
    """
    factor = _pseudo_inverse_factor(pseudo_inverse)
    whitened = _whitened_meat(meat, absorbed, factor)
    if map_terms is not None:
        whole = _whitened_meat(*map_terms, factor)
        whitened = whitened + _nonnegative(whole - whitened)
    return factor @ whitened @ factor.T


class FrameClusteredErrors(AbstractErrors):
    """The frame-clustered sandwich C = (JᵀJ)⁺ M (JᵀJ)⁺ (`FitProblem.frame_clustered_meat`).

    Every entry (i, j) of a measured map is built from the pixel intensities of frames i and j,
    and on speckle data those intensities are themselves correlated over the time the sample
    (and a slowly moving reference) takes to decorrelate: the noise of an entry is shared with
    every entry whose frames lie within that time. Independent-noise errors are then 3–15×
    too small. The sandwich lets the residuals measure that covariance: scores are clustered
    by blocks of consecutive frames (two entries are correlated when a frame of each falls in
    the same block; maps are independent), averaged over `overlaps` shifted block grids.

    **Block length.** `block=None` (default) takes it from the data: twice the integrated
    correlation time τ of the per-frame mean residual (`frame_autocorrelation`,
    `correlation_frames`), at most a quarter of the frames (so that a map has ≥ 4 blocks).
    For independent noise τ ≈ 1 and the estimate is the clustered-by-frame one, which then
    agrees with the formal error.

    **Leverage correction** (`leverage_correction=True`, default). The residuals at the fit
    are smaller than the noise: the fit absorbs the noise along its own directions, and with
    a few blocks a map it absorbs a large share of each block's score sum (for a map's own
    contrast and offset, about half of it at 4 blocks a map). Under independent unit noise,
    E[M] = A − B with A = JᵀJ and B the absorbed part (`block_leverage`, exact for this
    clustering and a model linear near the solution). With R a factor of
    A⁺ (R Rᵀ = A⁺) and D = I − Rᵀ B R (the share kept, in A-whitened coordinates),

        C = R D^{−1/2} (Rᵀ M R) D^{−1/2} Rᵀ,

    which equals A⁺ in expectation under independent noise, whatever the number of blocks —
    the working-independence bias correction of clustered sandwiches (Kauermann & Carroll
    2001; Bell & McCaffrey 2002, "CR2") carried to parameter space, so that it costs p × p
    matrices per block, not the n × n hat matrix. D's eigenvalues are floored at
    `MIN_KEPT_SHARE` (at most a 1/√0.1 ≈ 3.2× wider error along a direction whose block sums
    the fit absorbs almost entirely). `leverage_correction=False` gives the plain sandwich.

    **Whole maps** (`whole_maps=True`, default). Some of the noise is shared by a whole map,
    across all its blocks: a static reference keeps one speckle pattern for the whole run, so
    each map's finite set of pixels gives it its own share of reference light (its own
    fraction, in effect), and a sample that decays little over the window keeps much of its
    own pattern too. Blocks cannot see that; the maps can, as they are independent. With
    s_a = J_aᵀ r_a the score of map a and A_a = J_aᵀJ_a, the map-clustered meat Σ_a s_a s_aᵀ has
    expectation A − Σ_a A_a A⁻¹ A_a under independent noise (`ClusteredTerms`), and is
    whitened and corrected the same way (W_map). The covariance takes W + [W_map − W]₊
    (`leverage_corrected_covariance`): the blocks' estimate, plus whatever the maps show
    beyond it, direction by direction. A few maps give a noisy W_map, and its positive part
    only widens, so this errs on the wide side. Measured (`benchmarks/bench_calibration.py`,
    seed 0, 40 datasets each, 240 truths): on speckle data the 90 % intervals held 82.1 % of
    the truths (77.5 % without the term), median |z| 0.71 (0.95; 0.67 is right); where photon
    noise dominates (`--detector photon-starved`) 90.4 % (84.6 %), median |z| 0.49 (0.62):
    wide there in the bulk, by about a third.

    **Assumptions.** Entries whose frames are further apart than a block are uncorrelated
    within a map (beyond what `whole_maps` adds), and there are several blocks (clusters) in
    all: with few frames per correlation time the meat is a noisy average, and coverage
    degrades gently (measured in `benchmarks/bench_calibration.py`). It needs no σ (σ
    cancels), costs one Jacobian pass over the data. Negative eigenvalues of the meat
    (possible for a finite sample: the pair terms are subtracted) are set to 0 in A-whitened
    coordinates (`leverage_corrected_covariance`), so that the covariance changes with the
    parametrisation as a covariance must and is the same at every point of a flat set of
    solutions.
    """

    block: int | None = None
    overlaps: int = 4
    leverage_correction: bool = True
    whole_maps: bool = True

    def block_frames(self, problem: FitProblem, x, residual_maps=None) -> int:
        """The block length in frames (`block`, or the data's choice described above; the
        residual maps at x are computed unless given)."""
        n_frames = int(problem.t.shape[0])
        if self.block is not None:
            return int(min(max(self.block, 1), n_frames))
        if residual_maps is None:
            residual_maps = residual_maps_at(problem, jnp.asarray(x))
        residual = np.asarray(residual_maps)
        tau = correlation_frames(frame_autocorrelation(residual))
        return int(min(max(math.ceil(2.0 * tau), 1), max(n_frames // 4, 1)))

    def block_grids(self, problem: FitProblem, x, residual_maps=None) -> dict:
        """The block grids as the compiled passes take them: the block length, `overlaps`
        shifts (repeats weighted 0) and their weights as arrays (traced: one program for every
        block length), and the static cell count (`block_cells`)."""
        block = self.block_frames(problem, x, residual_maps)
        overlaps = max(self.overlaps, 1)
        unique = sorted({(k * block) // overlaps for k in range(overlaps)})
        shifts = unique + [unique[0]] * (overlaps - len(unique))
        weights = [1.0 / len(unique)] * len(unique) + [0.0] * (overlaps - len(unique))
        return dict(
            block=np.asarray(block),
            shifts=np.asarray(shifts),
            shift_weights=np.asarray(weights, float),
            n_cells=block_cells(int(problem.t.shape[0]), block, unique),
        )

    def covariance(self, problem, x, pseudo_inverse, variance_scale, *, residual_maps=None):
        grids = self.block_grids(problem, x, residual_maps)
        inverse = jnp.asarray(pseudo_inverse) if self.leverage_correction else None
        terms = clustered_terms_at(problem, x, grids, inverse)
        map_terms = (terms.map_meat, terms.map_absorbed) if self.whole_maps else None
        return leverage_corrected_covariance(terms.meat, terms.absorbed, pseudo_inverse, map_terms)

    def difference_variance(self, problem, x, difference_maps, residual_maps):
        """Var(Σ d ε) clustered as the scores of the sandwich: the products d ⊙ r (r the
        residuals at x) summed over the same frame blocks, never below the independent-noise
        value Σ d² (correlation does not make a difference more certain)."""
        grids = self.block_grids(problem, x, residual_maps)
        products = jnp.asarray(np.asarray(difference_maps) * np.asarray(residual_maps))
        clustered = float(_clustered_products(products, **grids))
        independent = float(np.sum(np.square(difference_maps)))
        return max(clustered, independent)


def solution_uncertainty(
    problem: FitProblem,
    x,
    gram,
    variance_scale: float,
    errors: AbstractErrors,
    *,
    residual_maps: np.ndarray | None = None,
) -> tuple[Uncertainty, Uncertainty]:
    """(the chosen estimator's uncertainty, the formal one) at the solution x.

    The pseudo-inverse of JᵀJ (`solution_terms`) is shared; parameters along null directions of
    JᵀJ get infinite errors in both. `residual_maps` (w ⊙ (model − data) at x), when the caller
    has evaluated the model there, spares the estimator another pass.
    """
    terms = solution_terms(problem, x, gram)
    inverse, scale = np.asarray(terms["inverse"]), np.asarray(terms["scale"])
    eigenvalues, vectors = np.asarray(terms["eigenvalues"]), np.asarray(terms["vectors"])
    pseudo_inverse = scale[:, None] * inverse * scale[None, :]
    null = eigenvalues <= NULL_EIGENVALUE_FRACTION * np.max(eigenvalues)
    singular = bool(np.any(null)) or bool(np.any(scale == 0))
    undetermined = (scale == 0) | np.any(np.abs(vectors[:, null]) > 1e-3, axis=1)
    formal = _assemble(
        problem,
        FormalErrors().covariance(problem, x, pseudo_inverse, variance_scale),
        undetermined,
        singular,
        terms,
    )
    if isinstance(errors, FormalErrors):
        return formal, formal
    covariance = errors.covariance(
        problem, x, pseudo_inverse, variance_scale, residual_maps=residual_maps
    )
    return _assemble(problem, covariance, undetermined, singular, terms), formal
