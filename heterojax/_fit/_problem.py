"""The least-squares problem shared by the fits: parameter packing, residuals, normal equations.

The fit vector is x = [free physics parameters, contrast coefficients, offset coefficients]
(see `_scaling`). For map a with normalised model g_a = num/f² (SI Eq. S-77 family),

    r_a = w_a ⊙ (offset_a + contrast_a · g_a(physics) − c2_a),   w_a = mask_a / σ_a,

where the mask keeps the pairs t1 < t2 (and the diagonal only when the data say so).
The Jacobian is never formed for all maps at once: `normal_equations` accumulates
G = Σ_a J_aᵀ J_a and b = Σ_a J_aᵀ r_a map by map, so memory is one map's Jacobian
(n_physics × N²) whatever the number of maps.
"""

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._data._xpcs_data import XPCSData
from .._model._bins import BinGeometry
from .._model._heterodyne import HeterodyneModel
from .._parameters import ParameterSpec
from .._threads import default_threads, in_parallel
from ._scaling import Scaling
from ._transforms import BoxTransform


# Above this many blocks a map, the pair term of `block_leverage` (relative size O(1/n_blocks²)
# against the block term's O(1/n_blocks)) is left out: its cells would take n_blocks² Gram
# matrices of memory for a correction below 2.5e-4 of the meat.
_MAX_PAIR_BLOCKS = 64


def block_cells(n_frames: int, block: int, shifts) -> int:
    """A static number of cells per axis that holds the frame blocks of every grid in `shifts`:
    the largest ⌈(n + shift)/block⌉ rounded up to a power of two, so that one compiled program
    serves every block length in a range (the block length and shifts themselves are traced).
    Rounding keeps the `_MAX_PAIR_BLOCKS` test exact: a count ≤ 64 rounds to ≤ 64."""
    needed = max(-(-(n_frames + int(shift)) // int(block)) for shift in shifts)
    return 1 << max(needed - 1, 0).bit_length()


def block_ids(n: int, block, shifts) -> Int[Array, "grid t"]:
    """The block ⌊(i + shift)/block⌋ of every frame i, one row per grid of `shifts` (`block`
    and `shifts` may be traced)."""
    return (jnp.arange(n)[None, :] + jnp.atleast_1d(shifts)[:, None]) // block


def _cells(x: Float[Array, "*batch t t"], ids: Int[Array, " t"], n_cells: int):
    """Σ over the cells of frame blocks: (*batch, K, K) with [K, L] the sum of x[i, j] over
    frames i in block K and j in block L (two segment sums, one per axis: O(size of x))."""

    def by_block(y):  # sums the leading (frame) axis into blocks
        return jax.ops.segment_sum(y, ids, n_cells, indices_are_sorted=True)

    over_columns = by_block(jnp.moveaxis(x, -1, 0))  # (L, *batch, i)
    both = by_block(jnp.moveaxis(over_columns, -1, 0))  # (K, L, *batch)
    return jnp.moveaxis(both, (0, 1), (-2, -1))


def _clustered_cells(cells: Float[Array, "p K K"]) -> Float[Array, "p p"]:
    """Σ_K g_K g_Kᵀ − Σ_{K<L} h_{KL} h_{KL}ᵀ of the block cells (`clustered_sum`)."""
    p = cells.shape[0]
    diagonal = jnp.diagonal(cells, axis1=1, axis2=2)
    per_block = cells.sum(axis=2) + cells.sum(axis=1) - diagonal
    off_diagonal = cells - jax.vmap(jnp.diag)(diagonal)
    pairs = (off_diagonal + jnp.swapaxes(off_diagonal, 1, 2)).reshape(p, -1)
    return per_block @ per_block.T - 0.5 * pairs @ pairs.T


def clustered_sum(
    scores: Float[Array, "p t t"],
    ids: Int[Array, "grid t"],
    grid_weights: Float[Array, " grid"],
    n_cells: int,
) -> Float[Array, "p p"]:
    """Σ_K g_K g_Kᵀ − Σ_{K<L} h_{KL} h_{KL}ᵀ for one map's scores s (one (t, t) map per
    column), averaged over block grids with `grid_weights`: in grid g frame i is in block
    `ids[g, i]`, g_K sums the entries with a frame in block K, h_{KL} those with one frame in K
    and the other in L (`frame_clustered_meat`). The cells are segment sums over the traced
    ids; `n_cells` (static) is at least the number of blocks of every grid (`block_cells`)."""
    p = scores.shape[0]

    def grid_term(g):  # a repeated grid (weight 0) is skipped at run time
        return jax.lax.cond(
            grid_weights[g] > 0,
            lambda: grid_weights[g] * _clustered_cells(_cells(scores, ids[g], n_cells)),
            lambda: jnp.zeros((p, p), scores.dtype),
        )

    # A loop over the few grids: segment sums vmapped over their ids are ~8× slower on CPU.
    return sum(grid_term(g) for g in range(ids.shape[0]))


def _longest_block(n: int, n_cells: int) -> int:
    """An upper bound on the block length of any grid whose cell count `block_cells` rounded to
    `n_cells`: more than n_cells/2 blocks are needed, so (n + block − 1)/block > n_cells/2."""
    half = n_cells // 2
    if half < 2:
        return n
    return min(n, -(-(n - 1) // (half - 1)))


def _cell_grams(columns, ids, n_cells: int, pairs: bool):
    """Per block grid (frame blocks `ids` (grid, t)), the Gram matrices A_S = Σ_{e ∈ S} J_e J_eᵀ
    of one map's columns: per cell (grid, K, K, p, p) when `pairs`, else per block only,
    A_{S_K} = rows + columns − the diagonal cell, (grid, K, p, p).

    Row by row of A (a `lax.map` over the p columns), so memory is p maps of products, never
    p². With `pairs`, the products are summed once into the cells of the grids' common
    refinement (a frame's fine cell Σ_g ids_g: it changes exactly where some grid's block
    does), and each grid's cells are sums of those; without, a frame's row and column sums
    serve every grid, and only the diagonal cell is taken per grid."""
    n_grids = ids.shape[0]

    def by_block(y, segments, count):
        return jax.ops.segment_sum(y, segments, count, indices_are_sorted=True)

    if pairs:
        fine = jnp.sum(ids, axis=0)  # non-decreasing; each grid's block is constant on it
        n_fine = n_grids * (n_cells - 1) + 1
        # The block of each fine cell in every grid (empty fine cells hold no products).
        coarse = [
            jnp.clip(jax.ops.segment_max(ids[g], fine, n_fine), 0, n_cells - 1)
            for g in range(n_grids)
        ]

        def one_row(column):
            fine_cells = _cells(column[None] * columns, fine, n_fine)  # (q, F, F)
            return jnp.stack([_cells(fine_cells, grid, n_cells) for grid in coarse])

    else:
        # A diagonal cell spans at most `width` + 1 frames: its entries lie in a band around
        # the diagonal, taken once per row of A (the same-block test is per grid).
        n = columns.shape[-1]
        width = _longest_block(n, n_cells) - 1
        partner = jnp.arange(n)[:, None] + jnp.arange(-width, width + 1)[None, :]  # (t, band)
        inside = (partner >= 0) & (partner < n)
        partner = jnp.clip(partner, 0, n - 1)

        def one_row(column):
            products = column[None] * columns  # (q, t, t)
            rows, by_column = jnp.sum(products, axis=-1).T, jnp.sum(products, axis=-2).T
            band = jnp.take_along_axis(products, partner[None], axis=-1)  # (q, t, band)

            def per_grid(grid):
                same = inside & (grid[partner] == grid[:, None])
                diagonal = jnp.sum(jnp.where(same, band, 0.0), axis=-1).T
                return by_block(rows + by_column - diagonal, grid, n_cells).T  # (q, K)

            return jnp.stack([per_grid(ids[g]) for g in range(n_grids)])

    grams = jax.lax.map(one_row, columns)  # (p, grid, q, K[, K])
    return jnp.moveaxis(grams, (0, 2), (-2, -1))


def block_leverage(
    columns: Float[Array, "p t t"],
    inverse: Float[Array, "p p"],
    ids: Int[Array, "grid t"],
    grid_weights: Float[Array, " grid"],
    n_cells: int,
) -> Float[Array, "p p"]:
    """How much of one map's clustered meat the fit itself absorbs, under independent noise
    (the weighted average over the block grids, as the meat).

    With J the weighted Jacobian (columns), A = JᵀJ over all maps, H = J A⁻¹ Jᵀ and residuals
    r = (I − H) ε of unit-variance independent noise ε, a cluster sum u_S = Σ_{e ∈ S} J_e r_e
    has E[u_S u_Sᵀ] = A_S − A_S A⁻¹ A_S (A_S = Σ_{e ∈ S} J_e J_eᵀ). So the meat of
    `clustered_sum` has expectation A − B, summed over maps, with this map's

        B = Σ_K A_{S_K} A⁻¹ A_{S_K} − Σ_{K<L} A_{KL} A⁻¹ A_{KL},

    S_K the entries with a frame in block K and A_{KL} the Gram matrix of the entries with one
    frame in K and the other in L. `inverse` is A⁻¹ in this map's columns; `ids` the block of
    every frame in each grid (`block_ids`), `n_cells` ≥ the blocks a grid. Up to
    `_MAX_PAIR_BLOCKS` cells a grid, every cell's Gram matrix is formed; above, the pair
    term (O(1/n_blocks²) of the meat) is left out.
    """
    pairs = n_cells <= _MAX_PAIR_BLOCKS
    grams = _cell_grams(columns, ids, n_cells, pairs)
    if pairs:
        diagonal = jnp.diagonal(grams, axis1=1, axis2=2)  # (grid, p, q, K)
        diagonal = jnp.moveaxis(diagonal, -1, 1)  # (grid, K, p, q)
        per_block = grams.sum(axis=2) + grams.sum(axis=1) - diagonal
        both = grams + jnp.swapaxes(grams, 1, 2)
        n_cells = grams.shape[1]
        upper = jnp.triu(jnp.ones((n_cells, n_cells), both.dtype), 1)[None, :, :, None, None]
        pair_term = jnp.einsum("gKLpq,qr,gKLrs->gps", upper * both, inverse, both)
    else:
        per_block, pair_term = grams, 0.0
    block_term = jnp.einsum("gKpq,qr,gKrs->gps", per_block, inverse, per_block)
    return jnp.einsum("g,gps->ps", grid_weights, block_term - pair_term)


def _map_scaling(g, data, weight, contrast, offset):
    """The contrast and offset minimising Σ w² (offset + contrast·g − data)² over one map (the
    given ones where g does not determine them)."""
    w2 = weight * weight
    s_gg, s_g1, s_11 = jnp.sum(w2 * g * g), jnp.sum(w2 * g), jnp.sum(w2)
    s_gy, s_1y = jnp.sum(w2 * g * data), jnp.sum(w2 * data)
    determinant = s_gg * s_11 - s_g1 * s_g1
    determined = determinant > 1e-12 * s_gg * s_11
    safe = jnp.where(determined, determinant, 1.0)
    best_contrast = (s_11 * s_gy - s_g1 * s_1y) / safe
    best_offset = (s_gg * s_1y - s_g1 * s_gy) / safe
    return jnp.where(determined, best_contrast, contrast), jnp.where(
        determined, best_offset, offset
    )


def second_moment(vectors: Float[Array, "u t t"]) -> Float[Array, "u u"]:
    """M = Σ_entries u uᵀ of one map's vectors (`FitProblem.moments`)."""
    flat = vectors.reshape(vectors.shape[0], -1)
    return flat @ flat.T


class ClusteredTerms(NamedTuple):
    """The sums the clustered sandwiches need, over the maps (`FitProblem.frame_clustered_terms`).

    - `meat`, `absorbed`: the frame-block meat M and its part B absorbed by the fit under
      independent noise (`block_leverage`; zeros without the inverse).
    - `map_meat` = Σ_a s_a s_aᵀ with s_a = J_aᵀ r_a, the score of the whole map a (each map one
      cluster), and `map_absorbed` = Σ_a A_a A⁻¹ A_a with A_a = J_aᵀ J_a, its absorbed part
      (E[s_a s_aᵀ] = A_a − A_a A⁻¹ A_a under independent unit noise; zeros without the inverse).
    """

    meat: Float[Array, "p p"]
    absorbed: Float[Array, "p p"]
    map_meat: Float[Array, "p p"]
    map_absorbed: Float[Array, "p p"]


class FitProblem(eqx.Module):
    """A model template, data and the choice of free parameters, bounds and scaling.

    Build it with `build_problem`. Fixed parameters keep the template model's values.
    """

    model: HeterodyneModel
    t: Float[Array, " t"]
    q: Float[Array, " phi"]
    phi: Float[Array, " phi"]
    data: Float[Array, "phi t t"]
    weights: Float[Array, "phi t t"]
    contrast_basis: Float[Array, "phi a"]
    offset_basis: Float[Array, "phi b"]
    fixed_contrast: Float[Array, " phi"]
    fixed_offset: Float[Array, " phi"]
    transform: BoxTransform
    free_physics: tuple[int, ...] = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)
    scaling_mode: str = eqx.field(static=True)
    bins: BinGeometry | None = None  # evaluate bin averages (ROI model) when given

    @property
    def n_free_physics(self) -> int:
        return len(self.free_physics)

    @property
    def n_contrast(self) -> int:
        return self.contrast_basis.shape[1]

    @property
    def n_parameters(self) -> int:
        return len(self.names)

    def subsampled(self, stride: int) -> "FitProblem":
        """The same problem on every `stride`-th frame: the exact model on a sub-grid of times
        (its integrals are trapezoids on the coarser grid), the data and weights at those pairs.
        A cheap stand-in for screening starts, as long as the fringes and decays stay resolved.
        """
        if stride <= 1:
            return self
        rows = slice(None, None, int(stride))
        return eqx.tree_at(
            lambda p: (p.t, p.data, p.weights),
            self,
            (self.t[rows], self.data[:, rows, rows], self.weights[:, rows, rows]),
        )

    def with_maps(self, indices) -> "FitProblem":
        """The same problem on a subset of its maps, with the same fit vector (the scaling
        coefficients that only dropped maps use then have no effect). A cheap stand-in for
        screening starts when there are many maps: the physics is shared by all of them.
        """
        index = np.asarray(indices, int)
        take = lambda array: array[index]  # noqa: E731
        fields = lambda p: (  # noqa: E731
            p.q,
            p.phi,
            p.data,
            p.weights,
            p.contrast_basis,
            p.offset_basis,
            p.fixed_contrast,
            p.fixed_offset,
        )
        subset = eqx.tree_at(fields, self, tuple(take(a) for a in fields(self)))
        if self.bins is not None:
            subset = eqx.tree_at(lambda p: p.bins, subset, jax.tree_util.tree_map(take, self.bins))
        return subset

    @property
    def n_points(self) -> int:
        """The number of used entries (nonzero weights)."""
        return int(np.count_nonzero(np.asarray(self.weights)))

    def split(self, x: Float[Array, " p"]):
        """(free physics, contrast coefficients, offset coefficients) of a fit vector."""
        n_phys, n_con = self.n_free_physics, self.n_contrast
        return x[:n_phys], x[n_phys : n_phys + n_con], x[n_phys + n_con :]

    def model_at(self, physics_free: Float[Array, " k"]) -> HeterodyneModel:
        """The template model with its free physics parameters replaced."""
        vector = self.model.to_vector()
        if self.free_physics:
            vector = vector.at[jnp.asarray(self.free_physics)].set(physics_free)
        return self.model.with_vector(vector)

    def unpack(self, x: Float[Array, " p"]):
        """(model, contrast per map, offset per map) of a fit vector."""
        physics, contrast_coefficients, offset_coefficients = self.split(x)
        return (
            self.model_at(physics),
            self.fixed_contrast + self.contrast_basis @ contrast_coefficients,
            self.fixed_offset + self.offset_basis @ offset_coefficients,
        )

    def model_maps(self, x: Float[Array, " p"]) -> Float[Array, "phi t t"]:
        """The model c2 maps for every angle at the fit vector x."""
        model, contrast, offset = self.unpack(x)
        return model.c2(
            self.t, q=self.q, phi=self.phi, contrast=contrast, offset=offset, bins=self.bins
        )

    def residual_maps(self, x: Float[Array, " p"]) -> Float[Array, "phi t t"]:
        """Weighted residuals w ⊙ (model − data), zero on unused entries."""
        return self.weights * (self.model_maps(x) - self.data)

    def _map_inputs(self):
        """What `lax.scan` slices map by map."""
        return (
            self.q,
            self.phi,
            self.data,
            self.weights,
            self.contrast_basis,
            self.offset_basis,
            self.fixed_contrast,
            self.fixed_offset,
            self.bins,
        )

    def map_inputs_at(self, index):
        """The inputs of map `index` alone (`_map_inputs` sliced; `index` may be traced)."""
        return jax.tree_util.tree_map(lambda leaf: leaf[index], self._map_inputs())

    def _normalised_jacobian(self, physics: Float[Array, " k"], inputs):
        """One map's g = num/f² (contrast 1, offset 0) and ∂g/∂(free physics), shape (k, t, t)."""
        q, phi, bins = inputs[0], inputs[1], inputs[-1]

        def normalised(physics_free):
            model = self.model_at(physics_free)
            c2 = model.c2(self.t, q=q, phi=phi, contrast=1.0, offset=0.0, bins=bins)[0]
            return c2, c2

        jacobian, g = jax.jacfwd(normalised, has_aux=True)(physics)
        return jnp.moveaxis(jacobian, -1, 0), g

    def _map_jacobian(self, x: Float[Array, " p"], inputs):
        """One map's weighted Jacobian and residual at x.

        **Returns:** `columns` (k + 2, t, t): ∂r/∂(free physics), ∂r/∂contrast, ∂r/∂offset of
        this map (per-map contrast and offset); `residual` w ⊙ (model − data); g = num/f²; the
        model map; and `expand` (k + 2, p), which maps per-map contrast/offset onto the
        coefficients through the bases.
        """
        physics, contrast_coefficients, offset_coefficients = self.split(x)
        n_phys = physics.shape[0]
        _, _, data, weight, contrast_row, offset_row, contrast0, offset0, _ = inputs
        physics_jacobian, g = self._normalised_jacobian(physics, inputs)
        contrast = contrast0 + contrast_row @ contrast_coefficients
        offset = offset0 + offset_row @ offset_coefficients
        fitted = offset + contrast * g
        residual = weight * (fitted - data)
        columns = jnp.concatenate(
            [(contrast * weight)[None] * physics_jacobian, (weight * g)[None], weight[None]],
            axis=0,
        )
        expand = jax.scipy.linalg.block_diag(
            jnp.eye(n_phys), contrast_row[None, :], offset_row[None, :]
        )
        return columns, residual, g, fitted, expand

    def frame_clustered_meat(
        self, x: Float[Array, " p"], block: int = 1, shifts: tuple[int, ...] = (0,)
    ) -> Float[Array, "p p"]:
        """The middle term of the frame-clustered sandwich covariance, one pass over the maps.

        Entry (i, j) of map a is built from the intensities of frames i and j, so its score
        s_e = J_eᵀ r_e (the entry's row of the weighted Jacobian times its residual) is
        correlated with every other entry that shares a frame — and, when the intensities
        themselves are correlated over several frames (slow dynamics, a static reference),
        with entries whose frames are close. Frames are grouped into consecutive blocks of
        `block` frames (frame i in block ⌊(i + shift)/block⌋); with the clusters (a, K) — map
        a, block K — and the block sums

            g_aK = Σ_{e of map a with a frame in K} s_e,
            h_a{KL} = Σ_{e of map a with one frame in K, the other in L} s_e   (K ≠ L),

            M = Σ_a [ Σ_K g_aK g_aKᵀ − Σ_{K<L} h_a{KL} h_a{KL}ᵀ ],

        which counts s_e s_e'ᵀ once for every pair of entries sharing a block (a pair whose
        entries both span the blocks K ≠ L sits in two clusters, hence the second sum).
        `block=1` is clustering by frame. With several `shifts` (block edges moved), M is the
        average of their M's (overlapping blocks: less variance, the same pass over the data).
        Maps are independent clusters (different pixels).
        """
        return self.frame_clustered_terms(x, block, shifts).meat

    def frame_clustered_terms(
        self,
        x: Float[Array, " p"],
        block=1,
        shifts=(0,),
        inverse: Float[Array, "p p"] | None = None,
        *,
        shift_weights: Float[Array, " grid"] | None = None,
        n_cells: int | None = None,
    ) -> ClusteredTerms:
        """`ClusteredTerms` in one pass over the maps: the meat M of `frame_clustered_meat`
        and, given `inverse` = (JᵀJ)⁻¹ (pseudo-inverse), the part B of it that the fit absorbs
        under independent noise (`block_leverage`: E[M] = JᵀJ − B; B = 0 without `inverse`);
        the same two sums with each whole map one cluster.

        The block sums are segment sums over traced block ids, so `block` and `shifts` may be
        traced arrays: one compiled program serves every block length whose block count
        fits `n_cells` (static; `block_cells`, needed when they are traced). The grids are
        averaged with `shift_weights` (default: equal; a weight 0 drops a repeated grid).
        """
        n = self.t.shape[0]
        if n_cells is None:
            block, shifts = int(block), tuple(int(shift) for shift in shifts)
            if block < 1 or not shifts or not all(0 <= shift < block for shift in shifts):
                raise ValueError(f"Need block ≥ 1 and 0 ≤ shifts < block; got {block}, {shifts}.")
            n_cells = block_cells(n, block, shifts)
        shifts = jnp.atleast_1d(jnp.asarray(shifts))
        if shift_weights is None:
            shift_weights = jnp.full(shifts.shape, 1.0 / shifts.shape[0], x.dtype)
        ids = block_ids(n, block, shifts)
        physics = self.split(x)[0]
        _, contrast, offset = self.unpack(x)

        def one_map(carry, inputs):
            map_inputs, contrast_a, offset_a = inputs
            vectors = self.map_vectors(physics, map_inputs, contrast_a, offset_a, False)[0]
            terms = self.map_clustered_terms(
                x, map_inputs, vectors, ids, shift_weights, n_cells, inverse
            )
            return jax.tree_util.tree_map(jnp.add, carry, terms), None

        p = x.shape[0]
        zeros = ClusteredTerms(*(jnp.zeros((p, p), x.dtype) for _ in range(4)))
        inputs = (self._map_inputs(), contrast, offset)
        terms, _ = jax.lax.scan(one_map, zeros, inputs)
        return terms

    def map_clustered_terms(
        self,
        x: Float[Array, " p"],
        inputs,
        vectors: Float[Array, "u t t"],
        ids: Int[Array, "grid t"],
        shift_weights: Float[Array, " grid"],
        n_cells: int,
        inverse: Float[Array, "p p"] | None = None,
    ) -> ClusteredTerms:
        """One map's share of `frame_clustered_terms`, from its weighted vectors
        U = w ⊙ [∂g; g; 1; y] at x's own contrast and offset (`map_vectors`, not centred):
        the weighted Jacobian columns are [contrast_a U_∂g; U_g; U_1] and the residual −U_y."""
        k = self.n_free_physics
        contrast_row, offset_row, contrast0 = inputs[4], inputs[5], inputs[6]
        contrast_a = contrast0 + contrast_row @ self.split(x)[1]
        columns = jnp.concatenate([contrast_a * vectors[:k], vectors[k : k + 2]])
        expand = jax.scipy.linalg.block_diag(
            jnp.eye(k, dtype=x.dtype), contrast_row[None, :], offset_row[None, :]
        )
        scores = columns * -vectors[k + 2][None]
        local = clustered_sum(scores, ids, shift_weights, n_cells)
        meat = expand.T @ local @ expand
        map_score = expand.T @ jnp.sum(scores, axis=(1, 2))
        map_meat = jnp.outer(map_score, map_score)
        if inverse is None:
            zeros = jnp.zeros_like(meat)
            return ClusteredTerms(meat, zeros, map_meat, zeros)
        local_inverse = expand @ inverse @ expand.T
        leverage = block_leverage(columns, local_inverse, ids, shift_weights, n_cells)
        gram = second_moment(columns)
        map_absorbed = expand.T @ gram @ local_inverse @ gram @ expand
        return ClusteredTerms(meat, expand.T @ leverage @ expand, map_meat, map_absorbed)

    def moments(self, x: Float[Array, " p"], centred: bool | Array = False) -> "Moments":
        """The weighted second moments of every map, in one pass over the maps.

        For map a, with g = num/f² of the physics of x, ∂g its derivatives with respect to the
        k free physics parameters and y = c2 − (offset_a + contrast_a · g) the data residual
        at a contrast and offset per map, the moments of u = [∂g; g; 1; y] are

            M_a = Σ_entries w² u uᵀ        ((k + 3) × (k + 3)).

        Every least-squares quantity at the same physics and *any* contrast/offset follows
        from them without another pass (`Moments.evaluation`, and the profiled problem of
        `_profile`): the residual at contrast_a + δc, offset_a + δo is w ⊙ (δc g + δo − y), and
        the Jacobian columns are w ⊙ [(contrast_a + δc) ∂g, g, 1]. y is measured from the
        model at x's contrast and offset, or (`centred`) at the map's own least-squares
        contrast and offset for these physics; either way M_a[y, y] is a residual-sized sum
        of squares, so that χ² near any nearby contrast/offset carries no cancellation.

        **Returns:** `Moments` (also the g maps, which callers that need no maps let XLA drop).
        """
        physics = self.split(x)[0]
        _, contrast, offset = self.unpack(x)

        def one_map(_, inputs):
            vectors, g, contrast_a, offset_a = self.map_vectors(physics, *inputs, centred)
            return None, (second_moment(vectors), g, contrast_a, offset_a)

        inputs = (self._map_inputs(), contrast, offset)
        _, (second, g, contrast, offset) = jax.lax.scan(one_map, None, inputs)
        return Moments(second, g, contrast, offset)

    def map_vectors(
        self, physics: Float[Array, " k"], inputs, contrast_a, offset_a, centred: bool | Array
    ):
        """One map's weighted vectors U = w ⊙ [∂g; g; 1; y] ((k + 3, t, t); `moments`), the
        pass of the model and its Jacobian that every least-squares quantity is built from.

        **Returns:** `(U, g, contrast, offset)`, the last two those y was measured at.
        """
        jacobian, g = self._normalised_jacobian(physics, inputs)
        data, weight = inputs[2], inputs[3]
        best_contrast, best_offset = _map_scaling(g, data, weight, contrast_a, offset_a)
        contrast_a = jnp.where(centred, best_contrast, contrast_a)
        offset_a = jnp.where(centred, best_offset, offset_a)
        residual = data - (offset_a + contrast_a * g)
        u = jnp.concatenate([jacobian, g[None], jnp.ones_like(g)[None], residual[None]])
        return weight[None] * u, g, contrast_a, offset_a

    def evaluate(self, x: Float[Array, " p"]) -> "Evaluation":
        """Everything a fit needs at x, from one pass over the maps (`moments`).

        - G = JᵀJ and b = Jᵀr (J with respect to x) and ‖r‖² of the data residuals;
        - per map, the sums that fix the best scaling for these physics (`best_scaling`):
          S_a = Σ w² [g², g, 1, g·y, y] with g = num/f² and y = c2 − fixed offset − fixed
          contrast · g;
        - the model maps offset + contrast · g.

        Nothing is added to the data residuals: the solver minimises exactly this χ² (a
        saturated fraction law, whose χ² is flat in the fraction parameters, is a legitimate
        solution, not something to steer away from).

        **Returns:** an `Evaluation`.
        """
        return self.moments(x).evaluation(self, x)

    def normal_equations(self, x: Float[Array, " p"]):
        """G = JᵀJ, b = Jᵀr and Σr² at x (see `evaluate`).

        **Returns:** `(G, b, ssr)` with shapes `(p, p)`, `(p,)`, `()`.
        """
        evaluation = self.evaluate(x)
        return evaluation.gram, evaluation.gradient, evaluation.ssr


class Evaluation(NamedTuple):
    """What `FitProblem.evaluate` returns (NumPy or JAX arrays).

    **Fields:** `gram` (p, p), `gradient` (p,), `ssr` () of the data residuals;
    `scaling_sums` (phi, 5) — per map Σw²·[g², g, 1, g·y, y]; `maps` (phi, t, t), the model.
    """

    gram: Any
    gradient: Any
    ssr: Any
    scaling_sums: Any
    maps: Any


class Moments(NamedTuple):
    """What `FitProblem.moments` returns: `second` (phi, k + 3, k + 3), the moments M_a of
    u = [∂g; g; 1; y]; `g` (phi, t, t), or a tuple of the maps' (t, t); the `contrast` and
    `offset` per map at which y was measured."""

    second: Any
    g: Any
    contrast: Any
    offset: Any

    def lifts(self, problem: "FitProblem", x: Float[Array, " p"]):
        """(L, e) per map at the fit vector x (same physics as the moments): the Jacobian of
        map a is W·U_aᵀ L_a and its residual W·U_aᵀ e_a, so that

            G = Σ_a L_aᵀ M_a L_a,   b = Σ_a L_aᵀ M_a e_a,   ‖r‖² = Σ_a e_aᵀ M_a e_a.

        L_a (k + 3, p) puts contrast_a on the physics columns and the bases' rows on the
        coefficient columns; e_a = [0; contrast_a − contrast_a⁰; offset_a − offset_a⁰; −1]
        (⁰: where the moments were taken)."""
        physics, _, _ = problem.split(x)
        _, contrast, offset = problem.unpack(x)
        k, n_maps = physics.shape[0], contrast.shape[0]
        n_contrast, n_offset = problem.contrast_basis.shape[1], problem.offset_basis.shape[1]
        dtype = x.dtype

        def zeros(*shape):
            return jnp.zeros((n_maps, *shape), dtype)

        physics_rows = contrast[:, None, None] * jnp.eye(k, dtype=dtype)[None]
        lifts = jnp.concatenate(
            [
                jnp.concatenate([physics_rows, zeros(k, n_contrast + n_offset)], axis=2),
                jnp.concatenate(
                    [zeros(1, k), problem.contrast_basis[:, None, :], zeros(1, n_offset)], axis=2
                ),
                jnp.concatenate(
                    [zeros(1, k + n_contrast), problem.offset_basis[:, None, :]], axis=2
                ),
                zeros(1, k + n_contrast + n_offset),
            ],
            axis=1,
        )
        shifts = jnp.stack(
            [contrast - self.contrast, offset - self.offset, -jnp.ones_like(contrast)], axis=1
        )
        residual_rows = jnp.concatenate([zeros(k), shifts], axis=1)
        return lifts, residual_rows

    def evaluation(self, problem: "FitProblem", x: Float[Array, " p"]) -> "Evaluation":
        """The `Evaluation` at x (the physics of x must be those of the moments)."""
        lifts, residual_rows = self.lifts(problem, x)
        second = self.second
        gram = jnp.einsum("aip,aij,ajq->pq", lifts, second, lifts)
        gradient = jnp.einsum("aip,aij,aj->p", lifts, second, residual_rows)
        ssr = jnp.einsum("ai,aij,aj->", residual_rows, second, residual_rows)
        _, contrast, offset = problem.unpack(x)
        maps = offset[:, None, None] + contrast[:, None, None] * jnp.asarray(self.g)
        return Evaluation(gram, gradient, ssr, self.scaling_sums(problem), maps)

    def scaling_sums(self, problem: "FitProblem") -> Float[Array, "phi 5"]:
        """Per map Σ w² [g², g, 1, g·y, y] with y = c2 − fixed offset − fixed contrast · g
        (`best_scaling`), from the moments (y = moments' y + δc·g + δo)."""
        second, k = self.second, problem.n_free_physics
        gg, g1, ones = second[:, k, k], second[:, k, k + 1], second[:, k + 1, k + 1]
        dc = self.contrast - problem.fixed_contrast
        do = self.offset - problem.fixed_offset
        gy = second[:, k, k + 2] + dc * gg + do * g1
        y1 = second[:, k + 1, k + 2] + dc * g1 + do * ones
        return jnp.stack([gg, g1, ones, gy, y1], axis=1)


@eqx.filter_jit
def _vectors_at(problem: FitProblem, x, index, centred):
    """`FitProblem.map_vectors` of map `index` (traced: one program serves every map)."""
    _, contrast, offset = problem.unpack(x)
    physics, inputs = problem.split(x)[0], problem.map_inputs_at(index)
    return problem.map_vectors(physics, inputs, contrast[index], offset[index], centred)


# U Uᵀ in a program of its own: fused into the vectors' program the pass was slower (8 maps ×
# 400², ROI and centre models: 15–50 % more time a pass).
_second_moment_at = jax.jit(second_moment)
_stacked = jax.jit(lambda *rows: tuple(jnp.stack(row) for row in rows))
# Maps whose vectors are computed ahead of their use: at most this many bytes of them.
_BYTES_AHEAD = 1 << 28


# Maps of at least this many frames are passed one program call each (`vectors_at`); smaller
# ones in one scanned program, as the call costs ~0.5 ms a map (measured: 24 maps × 16 frames,
# 17 ms a step map by map against 3 ms scanned), more than such a map's pass.
_PER_MAP_FRAMES = 256


def passes_by_map(problem: FitProblem) -> bool:
    """Whether the compiled passes over this problem's data go map by map (`vectors_at`)."""
    return problem.t.shape[0] >= _PER_MAP_FRAMES


def vectors_at(problem: FitProblem, x: Float[ArrayLike, " p"], centred: ArrayLike = False):
    """`FitProblem.map_vectors` at x, compiled, map by map (a generator).

    The model's Jacobian is the largest computation of the package and the slowest to
    compile (1–4 s on a CPU). It is compiled here once, for one map, and every pass over the
    data of a fit takes it from this program: the Levenberg–Marquardt steps and every other
    evaluation (`moments_at`) and the frame-clustered errors (`_uncertainty`), for maps of
    `_PER_MAP_FRAMES` or more (`passes_by_map`; shorter ones are scanned). Memory is a
    few maps' vectors (`_BYTES_AHEAD`). Call it with concrete arrays only (inside a trace,
    use the methods of `FitProblem`, which scan over the maps).
    """
    x, centred = jnp.asarray(x), jnp.asarray(centred)
    n_maps, n_frames = problem.data.shape[0], problem.t.shape[0]
    size = (problem.n_free_physics + 3) * n_frames**2 * x.dtype.itemsize
    ahead = max(1, _BYTES_AHEAD // size)
    for index in range(n_maps):
        result = _vectors_at(problem, x, np.asarray(index), centred)
        yield result
        if (index + 1) % ahead == 0:
            jax.block_until_ready(result)


def over_maps(problem: FitProblem, x: Float[ArrayLike, " p"], use, centred: ArrayLike = False):
    """[use(index, vectors, g, contrast, offset) for every map], the arguments those of
    `vectors_at`, for passes that go map by map: on every core (`heterojax._threads`), each
    thread holding one map's vectors until its `use` is computed; on one core in turn, one
    map ahead."""
    x, centred = jnp.asarray(x), jnp.asarray(centred)
    threads = default_threads()
    if threads > 1:

        def one_map(index):
            parts = _vectors_at(problem, x, np.asarray(index), centred)
            return jax.block_until_ready(use(index, *parts))

        return in_parallel(one_map, range(int(problem.data.shape[0])), threads)
    results = []
    for index, parts in enumerate(vectors_at(problem, x, centred)):
        results.append(use(index, *parts))
        jax.block_until_ready(results[-2:-1])  # the vectors of two maps in memory at most
    return results


def moments_at(problem: FitProblem, x: Float[ArrayLike, " p"], centred: ArrayLike = False):
    """`FitProblem.moments`, compiled: map by map (`vectors_at`; `Moments.g` is then the tuple
    of the maps' g, stacked only where maps are asked for), or in one scan for short maps
    (`passes_by_map`)."""
    if not passes_by_map(problem):
        return _moments_scanned(problem, jnp.asarray(x), jnp.asarray(centred))
    maps = over_maps(
        problem,
        x,
        lambda index, vectors, g, contrast, offset: (
            _second_moment_at(vectors),
            g,
            contrast,
            offset,
        ),
        centred,
    )
    seconds, gs, contrasts, offsets = (list(part) for part in zip(*maps))
    second, contrast, offset = _stacked(seconds, contrasts, offsets)
    return Moments(second, tuple(gs), contrast, offset)


_moments_scanned = eqx.filter_jit(FitProblem.moments)
_evaluation_of = eqx.filter_jit(Moments.evaluation)


def evaluate_at(problem: FitProblem, x: Float[ArrayLike, " p"]) -> Evaluation:
    """`FitProblem.evaluate`, compiled: the shared pass `moments_at` and a small assembly."""
    return _evaluation_of(moments_at(problem, x, jnp.asarray(False)), problem, x)


def coefficient_system(problem: FitProblem, sums: Float[Array, "phi 5"]):
    """(H, f) of the scaling coefficients' normal equations H α = f.

    With per-map sums S_a = Σ w² [g², g, 1, g·y, y] (y the data less what the rest of the model
    explains) and the bases B_c, B_o,

        H = [B_cᵀ diag(Σw²g²) B_c   B_cᵀ diag(Σw²g) B_o]     f = [B_cᵀ Σw²g·y]
            [B_oᵀ diag(Σw²g) B_c    B_oᵀ diag(Σw²) B_o ],        [B_oᵀ Σw²y  ].
    """
    gg, g1, ones, gy, y1 = (sums[:, k] for k in range(5))
    bc, bo = problem.contrast_basis, problem.offset_basis
    hessian = jnp.block(
        [
            [bc.T @ (gg[:, None] * bc), bc.T @ (g1[:, None] * bo)],
            [bo.T @ (g1[:, None] * bc), bo.T @ (ones[:, None] * bo)],
        ]
    )
    return hessian, jnp.concatenate([bc.T @ gy, bo.T @ y1])


def best_scaling(problem: FitProblem, scaling_sums: Float[ArrayLike, "phi 5"]) -> np.ndarray:
    """The scaling coefficients that minimise χ² for given physics (linear least squares).

    c2 is linear in the coefficients: with g_a = num/f² of the physics, the residual is
    A·[a; b] − y with columns w ⊙ g_a B_c[a, k] and w ⊙ B_o[a, k]. The normal equations

        [B_cᵀ diag(Σw²g²) B_c   B_cᵀ diag(Σw²g) B_o] [a]   [B_cᵀ Σw²g·y]
        [B_oᵀ diag(Σw²g) B_c    B_oᵀ diag(Σw²) B_o ] [b] = [B_oᵀ Σw²y  ]

    are assembled from the per-map sums of `FitProblem.evaluate` (no N² × m matrix) and solved
    by least squares on the host; the result is clipped into the coefficient bounds. Used to
    start every local fit from the best contrast/offset for its physics.
    """
    normal, right = (np.asarray(a) for a in coefficient_system(problem, jnp.asarray(scaling_sums)))
    coefficients = np.linalg.lstsq(normal, right, rcond=None)[0]
    n_phys = problem.n_free_physics
    lower = np.asarray(problem.transform.lower)[n_phys:]
    upper = np.asarray(problem.transform.upper)[n_phys:]
    return np.clip(coefficients, lower, upper)


def estimate_noise(c2: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-map noise level σ̂ from second differences along the age direction.

    At fixed lag k, c2[i, i+k] varies slowly with the age i (ageing is slow next to the frame
    period), so the second difference d_i = c2[i+1, i+1+k] − 2 c2[i, i+k] + c2[i−1, i−1+k] is
    dominated by noise with variance 6σ². A robust scale gives

        σ̂ = 1.4826 · median|d − median d| / √6.

    **Arguments:** `c2` `(phi, t, t)` and the boolean `mask` of used entries.

    **Returns:** σ̂ for each map (NumPy array).
    """
    c2 = np.asarray(c2, float)
    mask = np.asarray(mask, bool)
    second = c2[:, 2:, 2:] - 2 * c2[:, 1:-1, 1:-1] + c2[:, :-2, :-2]
    used = mask[:, 2:, 2:] & mask[:, 1:-1, 1:-1] & mask[:, :-2, :-2]
    sigma = []
    for values, keep in zip(second, used):
        d = values[keep]
        if d.size < 10:
            sigma.append(np.nan)
            continue
        mad = np.median(np.abs(d - np.median(d)))
        sigma.append(1.4826 * mad / np.sqrt(6.0))
    sigma = np.array(sigma)
    finite = np.isfinite(sigma) & (sigma > 0)
    if not np.any(finite):
        raise ValueError(
            "Cannot estimate the noise level from these maps (too few points or noiseless data); "
            "pass `sigma` with the data."
        )
    return np.where(finite, sigma, np.median(sigma[finite]))


def _sigma_per_entry(sigma, shape: tuple[int, ...]) -> np.ndarray:
    """σ as one value per entry of maps of `shape` (maps, t, t): a scalar, one value per map
    (shape `(maps,)`, as `NLSQResult.sigma` reports it), or anything broadcastable to the
    maps."""
    values = np.asarray(sigma, float)
    if values.ndim == 1 and values.shape[0] == shape[0]:
        values = values[:, None, None]
    try:
        return np.broadcast_to(values, shape)
    except ValueError:
        raise ValueError(
            f"`sigma` must be a scalar, one value per map (shape ({shape[0]},)) or an array "
            f"broadcastable to the maps {shape}; got shape {values.shape}."
        ) from None


def build_problem(
    model: HeterodyneModel,
    data: XPCSData,
    *,
    fixed,
    bounds,
    scaling: Scaling,
    contrast: np.ndarray,
    offset: np.ndarray,
    sigma: np.ndarray | None = None,
    bins: BinGeometry | None = None,
    periodic: bool = True,
) -> tuple[FitProblem, Float[Array, " p"], np.ndarray]:
    """Assembles a `FitProblem` and its start vector, validating the user's choices.

    **Arguments:**

    - `model`: the template; its values are the start and the values of fixed parameters.
    - `data`: the `XPCSData` to fit.
    - `fixed`: names of parameters to hold fixed (physics names, or `"contrast"`/`"offset"`
        to hold the per-map contrast/offset at their start values).
    - `bounds`: mapping name → (lower, upper) overriding the defaults; `"contrast"` and
        `"offset"` apply to every coefficient of the zeroth order.
    - `scaling`: the resolved `Scaling`.
    - `contrast`, `offset`: start values per map.
    - `sigma`: σ per entry, per map or one (`_sigma_per_entry`); `None` means `data.sigma`,
      else a noise estimate.
    - `bins`: the bin geometry to evaluate with (ROI model; see `_roi.fit_bins`), or `None`.
    - `periodic`: whether parameters whose box is one period of the model (`phi0` on its
        default box) are fitted as angles (`BoxTransform`); `False` keeps every box bounded
        (a posterior needs a bounded window to be proper: `fit_cmc`).

    **Returns:** `(problem, x0, sigma_per_entry)`.
    """
    physics_specs = model.parameter_specs
    physics_names = tuple(s.name for s in physics_specs)
    fixed = tuple(fixed)
    known = set(physics_names) | {"contrast", "offset"}
    unknown = sorted(set(fixed) - known)
    if unknown:
        raise ValueError(f"Unknown name(s) in `fixed`: {unknown}. Valid names: {sorted(known)}.")
    bounds = dict(bounds or {})
    scale_names = {s.name for s in scaling.specs} | {"contrast", "offset"}
    unknown = sorted(set(bounds) - set(physics_names) - scale_names)
    if unknown:
        raise ValueError(
            f"Unknown name(s) in `bounds`: {unknown}. Valid names: {sorted(physics_names)} and "
            "'contrast', 'offset' (or a coefficient name of the scaling mode)."
        )

    def bounded(spec: ParameterSpec, generic: str | None = None) -> ParameterSpec:
        for name in (spec.name, generic):
            if name is not None and name in bounds:
                lower, upper = bounds[name]
                return spec.with_bounds(float(lower), float(upper))
        return spec

    free_physics = tuple(k for k, name in enumerate(physics_names) if name not in fixed)
    values = np.asarray(model.to_vector())
    specs = []
    for k in free_physics:
        spec = bounded(physics_specs[k])
        if not spec.lower <= values[k] <= spec.upper:
            raise ValueError(
                f"Start value of {spec.name} = {values[k]:g} lies outside its bounds "
                f"[{spec.lower:g}, {spec.upper:g}]; change the model or the bounds."
            )
        specs.append(spec)
    start = [values[k] for k in free_physics]
    n_angles = data.n_angles
    bases, fixed_values = {}, {}
    coefficients = scaling.coefficients_from_values(contrast, offset)
    n_contrast = scaling.contrast_basis.shape[1]
    for kind, basis, kind_specs, kind_coefficients, kind_start in (
        (
            "contrast",
            scaling.contrast_basis,
            scaling.contrast_specs,
            coefficients[:n_contrast],
            contrast,
        ),
        ("offset", scaling.offset_basis, scaling.offset_specs, coefficients[n_contrast:], offset),
    ):
        if kind in fixed:
            bases[kind] = np.zeros((n_angles, 0))
            fixed_values[kind] = np.asarray(kind_start, float)
            continue
        bases[kind] = np.asarray(basis, float)
        fixed_values[kind] = np.zeros(n_angles)
        kind_specs = [
            bounded(s, kind if s.name.endswith(("]", "_0")) or s.name == kind else None)
            for s in kind_specs
        ]
        specs += kind_specs
        start += [
            float(np.clip(c, s.lower, s.upper)) for c, s in zip(kind_coefficients, kind_specs)
        ]

    mask = np.asarray(data.mask, bool)
    if sigma is None and data.sigma is not None:
        sigma = np.asarray(data.sigma)
    if sigma is None:
        sigma = estimate_noise(np.asarray(data.c2), mask)[:, None, None]
    sigma = _sigma_per_entry(sigma, data.c2.shape)
    if not np.all(np.isfinite(sigma)) or not np.all(sigma > 0):
        raise ValueError("`sigma` must be finite and positive.")
    weights = np.where(mask, 1.0 / sigma, 0.0)

    lower = np.array([s.lower for s in specs])
    upper = np.array([s.upper for s in specs])
    periodic = np.array([s.wraps and periodic for s in specs], bool)
    problem = FitProblem(
        model=model,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        data=jnp.asarray(data.c2),
        weights=jnp.asarray(weights),
        contrast_basis=jnp.asarray(bases["contrast"]),
        offset_basis=jnp.asarray(bases["offset"]),
        fixed_contrast=jnp.asarray(fixed_values["contrast"]),
        fixed_offset=jnp.asarray(fixed_values["offset"]),
        transform=BoxTransform(jnp.asarray(lower), jnp.asarray(upper), jnp.asarray(periodic)),
        free_physics=free_physics,
        names=tuple(s.name for s in specs),
        scaling_mode=scaling.mode,
        bins=bins,
    )
    return problem, jnp.asarray(np.array(start, float)), sigma
