"""`SpeckleErrors`: the sandwich with the speckle model's own covariance of the c2 noise.

A measured map is c2_ij = ⟨x_i x_j⟩_p / (⟨x_i⟩_p ⟨x_j⟩_p), a ratio of means over the bin's P
pixels of the frame intensities x_p(t_i). Every pixel's intensities are correlated over as long
as its field is (with a static reference: the whole map), so the noise of c2 is correlated
between entries that share no frame. The frame-clustered sandwich (`FrameClusteredErrors`)
sees correlation within a block of frames, and across a whole map only through the few maps
(`whole_maps`): on speckle data its 90 % intervals held 82.1 % of the truths, 70–75 % for D0
and alpha (77.5 % and 60–65 % with blocks alone; `benchmarks/bench_calibration.py`). Here
the covariance of the noise comes from the fitted model itself.
"""

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .._data._speckle import MIN_CONTRAST, mode_weights, speckle_frames
from ._problem import FitProblem, over_maps
from ._uncertainty import AbstractErrors, leverage_corrected_covariance, residual_maps_at


@jax.jit
def pixel_scores(
    intensities: Float[Array, "pixel t"],
    columns: Float[Array, "k t t"],
    c2: Float[Array, "t t"],
) -> Float[Array, "pixel k"]:
    """The score of every pixel's influence on c2 along every column V_k.

    To first order in the fluctuations of the pixel means (E x = 1, C = E[x xᵀ]),

        δc2_ij = (1/P) Σ_p ψ_p,ij,   ψ_p,ij = x_pi x_pj − C_ij (x_pi + x_pj)  (+ a constant),

    so Σ_ij V_k,ij δc2_ij = (1/P) Σ_p s_pk with

        s_pk = x_pᵀ V_k x_p − x_pᵀ [(V_k ⊙ C) 1 + (V_k ⊙ C)ᵀ 1],

    one matrix product per column for all pixels.
    """
    scaled = columns * c2[None]
    linear = jnp.sum(scaled, axis=2) + jnp.sum(scaled, axis=1)
    products = jnp.einsum("kij,pj->kpi", columns, intensities)
    quadratic = jnp.einsum("kpi,pi->pk", products, intensities)
    return quadratic - intensities @ linear.T


@jax.jit
def influence_variance(
    intensities: Float[Array, "pixel t"], weights: Float[Array, "t t"], c2: Float[Array, "t t"]
) -> Float[Array, ""]:
    """Σ_ij w_ij² Var_p(ψ_p,ij) (`pixel_scores`' ψ): the expected Σ ε² of a map of one pixel.

    From the pixel sums of x, x², x x, x² x and x² x², with m1_i = Σ_p x_pi, m2_i = Σ_p x_pi²:

        Σ_p ψ_ij = Σ_p x_pi x_pj − C_ij (m1_i + m1_j),
        Σ_p ψ_ij² = Σ_p x_pi² x_pj² − 2 C_ij Σ_p x_pi x_pj (x_pi + x_pj)
                    + C_ij² (m2_i + m2_j + 2 Σ_p x_pi x_pj).
    """
    n = intensities.shape[0]
    squares = intensities**2
    cross = intensities.T @ intensities
    mixed = squares.T @ intensities
    first, second = jnp.sum(intensities, axis=0), jnp.sum(squares, axis=0)
    total = cross - c2 * (first[:, None] + first[None, :])
    total_squares = (
        squares.T @ squares
        - 2.0 * c2 * (mixed + mixed.T)
        + c2**2 * (second[:, None] + second[None, :] + 2.0 * cross)
    )
    variance = total_squares / n - (total / n) ** 2
    return jnp.sum(weights**2 * variance)


@functools.partial(jax.jit, static_argnames="k_physics")
def _map_covariance(intensities, vectors, weight, contrast_a, c2, k_physics: int):
    """One map's Cov_p of the pixel scores from its weighted vectors
    U = w ⊙ [∂g; g; 1; y] (`FitProblem.map_vectors`): the columns of the weighted Jacobian are
    [contrast_a U_∂g; U_g; U_1], and the noise is weighted by w once more (ε = w ⊙ δc2)."""
    columns = jnp.concatenate([contrast_a * vectors[:k_physics], vectors[k_physics:-1]])
    scores = pixel_scores(intensities, columns * weight[None], c2)
    centred = scores - jnp.mean(scores, axis=0)
    return centred.T @ centred / (scores.shape[0] - 1)


class SpeckleNoise(NamedTuple):
    """`SpeckleErrors.noise`, per map: `intensities` (maps, samples, t) of simulated pixels
    (mean 1), `c2` (maps, t, t) = E[x xᵀ], `pixels` (maps,) P_a and `scores` (maps, k + 2,
    k + 2), Cov_p of the pixel scores over the map's own columns (physics, contrast,
    offset)."""

    intensities: np.ndarray
    c2: np.ndarray
    pixels: np.ndarray
    scores: np.ndarray


_last_noise: dict = {}


def _same_but_scale(cached: dict, rest: list, weights: np.ndarray, norm: float) -> bool:
    """Whether a problem (its leaves but the weights, and its weights of Frobenius norm
    `norm`) is the cached one with the weights multiplied by one common factor."""
    if len(cached["rest"]) != len(rest) or any(a is not b for a, b in zip(cached["rest"], rest)):
        return False
    old = cached["weights"]
    if old.shape != weights.shape:
        return False
    return bool(np.allclose(weights, norm / cached["norm"] * old, rtol=1e-10, atol=0.0))


# Simulated pixels: 1 024 a map (standard errors move by 3–6 % between seeds), and beyond 16
# maps this total shared out, at least 256 a map.
SAMPLES_PER_MAP, SAMPLES_TOTAL, MIN_SAMPLES = 1024, 16384, 256


def default_samples(n_maps: int) -> int:
    """Simulated pixels a map: min(1 024, max(256, ⌈16 384 / maps⌉))."""
    return int(min(SAMPLES_PER_MAP, max(MIN_SAMPLES, math.ceil(SAMPLES_TOTAL / max(n_maps, 1)))))


def mode_bucket(weights: np.ndarray) -> int:
    """The mode count a map's simulation runs with: its occupied modes rounded up to the next
    of 1, 2, 3, 4, 6, 8, 12, 16, … (powers of two and 1.5 times them: a few compiled programs
    serve every contrast, and a map of high contrast does not carry the zero-weight modes of
    the file's lowest)."""
    occupied = int(np.max(np.flatnonzero(weights > 0), initial=0)) + 1
    power = 1 << max(occupied - 1, 0).bit_length()
    return power * 3 // 4 if power >= 4 and power * 3 // 4 >= occupied else power


class SpeckleErrors(AbstractErrors):
    """The sandwich C = A⁺ M A⁺ whose middle term is the speckle model's covariance of the
    c2 noise, simulated from the fitted model (A = JᵀJ of the weighted Jacobian J).

    **Noise model.** Pixel p of map a has intensities x_p(t) = I_p(t)/⟨I⟩ with the statistics
    of `simulate_speckle` at the *fitted* model: reference and sample fields with the fitted
    transport, flow and fraction, at the map's wavevectors (its bin's pixels with the ROI
    model), ⌈1/β⌉ coherent modes for the fitted speckle contrast β = contrast/offset, and
    Poisson counts when `counts` is known. The measured c2 is a ratio of pixel means, and to
    first order in 1/P its noise is the mean of the P pixels' independent influences ψ_p
    (`pixel_scores`). So the score Jᵀε of the noise ε = w ⊙ δc2 has covariance

        M = Σ_a (1/P_a) Cov_p(s_p),   s_pk = Σ_ij w_ij J_ij,k ψ_p,ij,

    estimated from `samples` simulated pixels a map (the standard errors move by 3–6 %
    between seeds at 1 024, measured on a 2 × 60² problem; on the 42-map × 400² benchmark
    file, D0_ref's by 3.7 % at the default 391 a map and 1.8 % at 1 024, five seeds). It
    holds every correlation the model implies: along rows and columns, over the fields'
    correlation times, and over the whole map for a static reference. At the truth it
    matches the scatter of c2 over simulated datasets to 5 % (entries and sums of them, 300
    datasets).

    **Pixels.** With `pixels` (one count or one per map) M uses P_a. Without it P_a is read
    from the residuals: E[Σ ε²] = (1/P_a) Σ_ij w_ij² Var(ψ_ij) (`influence_variance`), so
    P_a = Σ w² Var(ψ) / Σ r² · (n − p)/n, the variance left after the fit's p parameters
    (the σ of the formal errors is estimated in the same way). Reading P off the residuals
    also absorbs what the fit cannot tell apart but the noise depends on: with a static
    reference the reference's share, the contrast and the offset trade along a ridge
    (calibration case 06: fitted β 0.4–0.5 against 0.13), and the simulated noise at a
    fitted β is then too strong by that factor, while the residuals are the data's own.

    **Assumptions.** The maps are plain multi-pixel correlations of the pixel intensities
    (`two_time`; the APS 8-ID-I correlator) of a Gaussian field, the fitted model is close to
    the truth, pixels of different maps are independent, and P is large enough for the first
    order in 1/P. Without `counts` the simulated intensities carry no shot noise, so all of
    the noise has the speckle's correlation (photon noise is correlated only between
    entries that share a frame). The errors do not depend on a common σ (it cancels), and
    the seed fixes them (`seed`).

    **Measured** (`benchmarks/bench_calibration.py`, `simulate_speckle` data with 100–2000
    pixels and 1–50 counts, fits from the truth): the 90 % intervals held 86.7 % of the 240
    truths of seed 0 (68 %: 69 %, median |z| 0.60; D0_ref 75 %, D0_sample 77.5 %, the rest
    82.5–97.5 %) and 91.7 % of the 242 of the held-out seed 1 (68 %: 76 %, median |z| 0.53;
    86–95 % per parameter); the frame-clustered sandwich held 82.1 % on seed 0 (77.5 % with
    blocks alone). Offline on the seed-0 fits, with the true `pixels` and `counts` 83.7 %
    (median 0.75), with the true `counts` and P read off the residuals 76.0 % (0.93).

    **Where photon noise dominates it is too wide.** Without `counts` every share of the
    noise is taken for speckle noise, correlated over the map, while photon noise is
    correlated only along a frame's row and column. On 2-map × 100-frame datasets at 0.1 and
    1 photon a pixel and frame its errors were 3–6 times too wide (median |z| 0.11–0.16;
    formal errors 0.77 at 1 photon, with the true `counts` 0.24–0.40). Reading P off the
    residuals also assumes that the fit absorbs p/n of the noise, while under map-wide
    correlation it absorbs more (tr(G·C) ≈ n/2 on the demo's maps): with the true counts
    that reading put P at 11 000–13 800 for a true 8 000. So it is not the default.

    **Arguments:**

    - `pixels`: pixels per map, an integer or one per map; `None` (default): from the
        residuals (above).
    - `counts`: mean photons per pixel and frame; `None` (default): no shot noise.
    - `samples`: simulated pixels a map; `None` (default): `default_samples`, 1 024 a map up
        to 16 maps, then a total of 16 384 shared by the maps (at least 256 a map). The
        physics' errors pool every map's pixels (above: 3.7 % at 391 a map on 42 maps); a
        single map's contrast and offset errors rest on its own pixels alone.
    - `seed`: the key of the simulation.
    """

    pixels: tuple[int, ...] | int | None = None
    counts: float | None = None
    samples: int | None = None
    seed: int = 0

    def __check_init__(self):
        if self.pixels is not None and np.any(np.asarray(self.pixels) < 1):
            raise ValueError(f"`pixels` must be at least 1 per map; got {self.pixels!r}.")
        if self.counts is not None and not (
            math.isfinite(float(self.counts)) and float(self.counts) > 0
        ):
            raise ValueError(f"`counts` must be a positive number of photons; got {self.counts}.")
        if self.samples is not None and int(self.samples) < 16:
            raise ValueError(f"`samples` must be at least 16 simulated pixels; got {self.samples}.")

    def samples_per_map(self, n_maps: int) -> int:
        """`samples`, or with `samples=None` `default_samples(n_maps)`."""
        return default_samples(n_maps) if self.samples is None else int(self.samples)

    def _pixel_counts(self, n_maps: int) -> np.ndarray | None:
        if self.pixels is None:
            return None
        values = np.atleast_1d(np.asarray(self.pixels, float))
        if values.shape[0] not in (1, n_maps):
            raise ValueError(
                f"`pixels` gives {values.shape[0]} counts for {n_maps} maps; give one count or "
                "one per map."
            )
        return np.broadcast_to(values, (n_maps,))

    def noise(self, problem: FitProblem, x, residual_maps=None) -> SpeckleNoise:
        """The noise model at the solution x: `samples` simulated pixels' normalised
        intensities at the fitted model, C = E[x xᵀ] of every map, and P_a (`pixels`, or from
        the residuals at x, computed unless given). The last one is kept: the covariance and
        the quality report's χ² differences at the same solution share one simulation, also
        after σ is rescaled by a common factor c (`fit_nlsq`'s estimated noise): P_a does not
        change and the score covariances scale by c⁴."""
        weights = np.asarray(problem.weights)
        norm = float(np.sqrt(np.sum(np.square(weights))))
        rest = jax.tree_util.tree_leaves(eqx.tree_at(lambda p: p.weights, problem, None))
        key = (self, np.asarray(x, float).tobytes())
        cached = _last_noise.get("entry")
        if (
            cached is not None
            and cached["key"] == key
            and _same_but_scale(cached, rest, weights, norm)
        ):
            scale = (norm / cached["norm"]) ** 4
            return cached["noise"]._replace(scores=cached["noise"].scores * scale)
        noise = self._simulated_noise(problem, x, residual_maps)
        # Held, not copied: the leaves keep their ids, the weights their values.
        _last_noise["entry"] = dict(key=key, rest=rest, weights=weights, norm=norm, noise=noise)
        return noise

    def _simulated_noise(self, problem: FitProblem, x, residual_maps) -> SpeckleNoise:
        """One pass over the maps (`over_maps`, on every core): each map's pixels simulated
        at the fitted model, their score covariance over the map's columns, and Σ w² Var ψ."""
        known_pixels = self._pixel_counts(int(problem.data.shape[0]))  # checked before the pass
        model, contrast, offset = problem.unpack(jnp.asarray(x))
        contrast, offset = np.asarray(contrast), np.asarray(offset)
        ratio = np.where(offset > 0, contrast / np.where(offset > 0, offset, 1.0), contrast)
        beta = np.clip(np.nan_to_num(ratio, nan=MIN_CONTRAST), MIN_CONTRAST, 1.0)
        weights = np.asarray(problem.weights)
        shot = 0.0 if self.counts is None else 1.0 / float(self.counts)
        key, k = jr.key(int(self.seed)), problem.n_free_physics
        modes = mode_weights(beta)  # padded with zero weights; cut to each map's bucket below
        samples = self.samples_per_map(int(problem.data.shape[0]))

        def use(index, vectors, g, contrast_a, offset_a):
            del offset_a
            bins = problem.bins
            if bins is not None:
                bins = jax.tree_util.tree_map(lambda leaf: leaf[index : index + 1], bins)
            frames = speckle_frames(
                model,
                np.asarray(problem.t),
                q=np.asarray(problem.q)[index : index + 1],
                phi=np.asarray(problem.phi)[index : index + 1],
                key=jr.fold_in(key, index),
                bins=bins,
                pixels=np.array([samples]),
                photons=self.counts,
                weights=modes[index : index + 1, : mode_bucket(modes[index])],
            )
            intensities = frames[0] / (1.0 if self.counts is None else float(self.counts))
            c2 = 1.0 + beta[index] * g + shot * jnp.eye(g.shape[0], dtype=g.dtype)
            weight = jnp.asarray(weights[index])
            return (
                intensities,
                c2,
                _map_covariance(intensities, vectors, weight, contrast_a, c2, k),
                influence_variance(intensities, weight, c2),
            )

        parts = [jax.device_get(part) for part in over_maps(problem, x, use)]
        intensities, c2, scores, variances = (np.stack(part) for part in zip(*parts))
        if known_pixels is None:
            known_pixels = self._pixels_from_residuals(problem, x, variances, residual_maps)
        return SpeckleNoise(intensities, c2, np.asarray(known_pixels, float), scores)

    @staticmethod
    def _pixels_from_residuals(problem: FitProblem, x, variances, residual_maps) -> np.ndarray:
        """P_a read off the residuals at x (the class docstring)."""
        if residual_maps is None:
            residual_maps = residual_maps_at(problem, jnp.asarray(x))
        squares = np.sum(np.square(np.asarray(residual_maps)), axis=(1, 2))
        n_points, n_parameters = problem.n_points, problem.n_parameters
        kept = max(n_points - n_parameters, 1) / max(n_points, 1)
        return np.where(squares > 0, variances * kept / np.where(squares > 0, squares, 1.0), 1.0)

    def meat(self, problem: FitProblem, x, residual_maps=None) -> np.ndarray:
        """M = Σ_a E_aᵀ Cov_p(s_p) E_a / P_a (the class docstring), E_a the expansion of map
        a's columns (physics, contrast, offset) onto the fit vector."""
        noise = self.noise(problem, x, residual_maps)
        k = problem.n_free_physics
        contrast_basis = np.asarray(problem.contrast_basis)
        offset_basis = np.asarray(problem.offset_basis)
        expand = np.stack(
            [
                jax.scipy.linalg.block_diag(
                    np.eye(k), contrast_basis[a][None], offset_basis[a][None]
                )
                for a in range(contrast_basis.shape[0])
            ]
        )
        per_map = np.einsum("akp,akl,alq->apq", expand, noise.scores, expand)
        return np.einsum("a,apq->pq", 1.0 / noise.pixels, per_map)

    def covariance(self, problem, x, pseudo_inverse, variance_scale, *, residual_maps=None):
        meat = self.meat(problem, x, residual_maps)
        return leverage_corrected_covariance(meat, np.zeros_like(meat), pseudo_inverse)

    def difference_variance(self, problem, x, difference_maps, residual_maps):
        """Var(Σ d ε) = Σ_a (1/P_a) Var_p(Σ_ij d_ij w_ij ψ_p,ij) under this noise model, never
        below the independent-noise value Σ d² (as `FrameClusteredErrors`)."""
        noise = self.noise(problem, x, residual_maps)
        columns = jnp.asarray(np.asarray(difference_maps) * np.asarray(problem.weights))
        total = 0.0
        for a in range(columns.shape[0]):
            scores = pixel_scores(jnp.asarray(noise.intensities[a]), columns[a][None], noise.c2[a])
            total += float(jnp.var(scores[:, 0], ddof=1)) / noise.pixels[a]
        return max(total, float(np.sum(np.square(difference_maps))))
