"""Kernels of the bin-averaged (ROI) two-time correlation.

For a bin with quadrature nodes (q_k, φ_k) and weights w_k (`BinGeometry`), and with the
notation of `_two_time` (κ_k = q_k cos(φ_k + φ0)),

    c2 = offset + contrast · Σ_k w_k [ R_i R_j e^{−q_k² |ΔC_r|} + S_i S_j e^{−q_k² |ΔC_s|}
                                      + X_i X_j e^{−½ q_k² (|ΔC_r| + |ΔC_s|)} cos(κ_k ΔC_v) ],

R = f_r² / (f_s² + f_r²), S = f_s² / (f_s² + f_r²), X = √2 f_r f_s / (f_s² + f_r²): the point
model's num / f² averaged over the nodes (f² does not depend on q or φ). Everything that
depends on q alone needs one evaluation per distinct q node (with a tensor rule the weights
are summed along φ), the phase one per (q, φ) node.

`direct_bin_correlation` and `pair_bin_correlation` evaluate this literally (full maps, and
index pairs for sharded likelihoods).

`structured_bin_correlation` evaluates whole maps in low rank, *adding rank per node*. The
grid (padded with its end values to N' = leaf · 2^L) is split recursively in halves. In each
diagonal block of a level, the rows i of the top half and the columns j of the bottom half are
coupled through the pivot e (last point of the top half): C[j] − C[i] =
(C[e] − C[i]) + (C[j] − C[e]), both ≥ 0 (C is non-decreasing), so every term factorises into a
row factor of i and a column factor of j, each ≤ 1 (no overflow, no cancellation); the cross
term by the angle-addition rule, cos(α_i + β_j) = cos α_i cos β_j − sin α_i sin β_j, with
α_i = κ(C_v[e] − C_v[i]), β_j = κ(C_v[j] − C_v[e]). Each q node adds 2 terms (ref, sample) and
each node 2 (cos, sin): the block's top-right quadrant is a matrix product
rows (N'/2^{l+1} × r) · columns (r × N'/2^{l+1}), r = 2 m + 2 k (m q nodes, k nodes), with the
weights and contrast folded into the columns; its transpose fills the bottom-left quadrant.
(The factors are built by broadcasting alone and then laid side by side along the rank
(`_side_by_side`), so that each quadrant is one matrix product rather than three and a sum:
a forward-mode Jacobian of 4 parameters, one map, took 1.37 → 1.04 ms at 150 frames with
2 × 3 nodes, 6.8 → 3.8 ms at 400 with 3 × 5 and 151 → 52 ms at 1000 with 4 × 8 (fastest of
150, with the q-node loop below unrolled). Per-point
inputs, per-node waves and cos/sin are evaluated once into buffers, `materialised` and
`cos_sin`, so that forward-mode tangents do not re-derive them inside every fusion.)
The leaves (diagonal squares of side `leaf`) use the direct formula summed over the nodes
(exponentials once per q node, the phase sums over a q node's angles as contractions). The
cost is about r N'² multiply-adds (the strictly upper triangle, once) plus O(k N leaf), and
O((m + k) N log(N / leaf) + m N leaf) transcendental functions: linear in the number of nodes.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._numerics import cos_sin, materialised
from ._two_time import GridIntegrals, _fields, _pair_values, direct_correlation


def _point_weights(grid: GridIntegrals):
    """R, S, X of the module doc on the grid."""
    fs = grid.sample_fraction
    fr = 1 - fs
    weight = 1 / (fs**2 + fr**2)
    cross = jnp.sqrt(2.0).astype(fs.dtype) * fr * fs * weight
    return fr**2 * weight, fs**2 * weight, cross


def direct_bin_correlation(
    grid: GridIntegrals,
    q: Float[Array, "phi k"],
    cosine: Float[Array, "phi k"],
    weights: Float[Array, "phi k"],
) -> Float[Array, "phi t t"]:
    """Σ_k w_k num(q_k, φ_k)/f² for whole maps by the direct formula, node by node.

    `cosine` is cos(φ_k + φ0). Memory stays at one set of maps (a scan over nodes).
    """
    n = grid.sample_fraction.shape[0]
    per_angle = jax.vmap(direct_correlation, in_axes=(None, 0, 0))

    def add(total, node):
        q_k, cosine_k, weight_k = node
        return total + weight_k[:, None, None] * per_angle(grid, q_k, cosine_k), None

    zero = jnp.zeros((q.shape[0], n, n), grid.sample_fraction.dtype)
    total, _ = jax.lax.scan(add, zero, (q.T, cosine.T, weights.T))
    return total


def pair_bin_correlation(
    grid: GridIntegrals,
    i: Int[Array, " pair"],
    j: Int[Array, " pair"],
    q: Float[Array, "pair k"],
    cosine: Float[Array, "pair k"],
    weights: Float[Array, "pair k"],
) -> Float[Array, " pair"]:
    """Σ_k w_k num/f² at index pairs (i, j) by the direct formula (one rule per pair, e.g.
    `bins.q_nodes[angle_index]`). Cost O(pairs · k)."""
    fields = _fields(grid)
    first = [x[i][:, None] for x in fields]
    second = [x[j][:, None] for x in fields]
    return jnp.sum(weights * _pair_values(first, second, q, cosine), axis=-1)


def _side_by_side(factors):
    """The ref, sample and cross factors of `factors` laid along one rank axis (last):
    (phi, blocks, half, 2a + 2ab)."""
    ref, sample, cross = factors
    cross = jnp.moveaxis(cross, 0, -1)  # (phi, blocks, half, a, b, cos/sin)
    return jnp.concatenate([ref, sample, cross.reshape(*cross.shape[:3], -1)], axis=-1)


# Quadrants of levels with at most this many blocks are written by dynamic_update_slice (fast
# for large windows); those of finer levels and the leaves by one scatter per level (one
# operation for many small windows, which keeps compilation short for long grids).
_FEW_BLOCKS = 8


def _write_blocks(maps, blocks, row_corners, column_corners):
    """maps (phi, t, t) with blocks[:, k] (phi, h, w) written at (row_corners[k],
    column_corners[k])."""
    if blocks.shape[1] <= _FEW_BLOCKS:
        for k, (row, column) in enumerate(zip(row_corners, column_corners)):
            maps = jax.lax.dynamic_update_slice(maps, blocks[:, k], (0, int(row), int(column)))
        return maps
    numbers = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(1, 2, 3), inserted_window_dims=(), scatter_dims_to_operand_dims=(1, 2)
    )
    return jax.lax.scatter(
        maps,
        jnp.asarray(np.stack([row_corners, column_corners], axis=1)),
        jnp.moveaxis(blocks, 1, 0),
        numbers,
        indices_are_sorted=False,
        unique_indices=True,
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )


def structured_bin_correlation(
    grid: GridIntegrals,
    q: Float[Array, "phi a"],
    cosine: Float[Array, "phi a b"],
    weights: Float[Array, "phi a b"],
    contrast: Float[Array, " phi"],
    offset: Float[Array, " phi"],
    *,
    block: int,
) -> Float[Array, "phi t t"]:
    """offset + contrast · (bin average of num/f²) for whole maps (module doc), equal to
    `direct_bin_correlation` up to rounding.

    The nodes come as a grid: q nodes q_a and, for each, angles with cos(φ_ab + φ0) and
    weights w_ab (a rule without that structure is one q node per node, b = 1). Everything
    that depends on q alone (the exponentials) is evaluated once per q node; the phases once
    per node and point, and their sums over b inside the diagonal squares are contractions.

    **Arguments:** the grid integrals; per map the q nodes `q` (a), `cosine` = cos(φ_ab + φ0)
    and `weights` (a, b), summing to 1; per-map `contrast` and `offset`; `block`, the largest
    side of the diagonal squares.

    **Returns:** the maps, shape `(phi, t, t)`.
    """
    n = grid.sample_fraction.shape[0]
    levels = max(0, math.ceil(math.log2(n / block))) if n > block else 0
    leaf = -(-n // 2**levels)
    size = leaf * 2**levels  # the grid padded (with its end values) to leaf · 2^levels
    dtype = grid.sample_fraction.dtype
    n_angles = weights.shape[0]

    def padded(x):
        return jnp.pad(x, (0, size - n), mode="edge")

    # Per-point inputs in one buffer: otherwise XLA re-derives the laws (and, in forward mode,
    # their tangents) inside every fusion that broadcasts them over nodes and blocks.
    ref, sample, velocity, ref_w, sample_w, cross_w = materialised(
        jnp.stack([padded(x) for x in (*_fields(grid)[1:], *_point_weights(grid))])
    )
    # The per-node quantities (and their tangents: cos(φ_ab + φ0) carries φ0's) in buffers of
    # their own too, or XLA evaluates the cosine again for every element they multiply.
    q2 = q * q
    wave, scale = materialised(
        jnp.stack([q[..., None] * cosine, contrast[:, None, None] * weights])
    )
    # The factors below carry the rank (q nodes a; nodes a, b) last, as the block products take
    # them, and are built by broadcasting alone (no repeats or concatenations, whose index
    # arithmetic XLA would evaluate for every element of every tangent).
    q2_last = q2[:, None, None, :]  # (phi, 1, 1, a)
    wave_last = wave[:, None, None]  # (phi, 1, 1, a, b)
    decay_last = jnp.sum(scale, axis=-1)[:, None, None, :]  # (phi, 1, 1, a)
    scale_last = scale[:, None, None]  # (phi, 1, 1, a, b)

    def factors(distances, weights_, decay_scale, cross_scale, sine_sign):
        """The factors of points at distances (ref, sample, velocity; the first two ≥ 0) from
        a pivot: ref and sample decays per q node, shape (phi, blocks, half, a) each, and
        cross·[cos, sin] per node, shape (2, phi, blocks, half, a, b)."""
        ref_distance, sample_distance, phase_distance = (d[None, :, :, None] for d in distances)
        ref_weight, sample_weight, cross_weight = (w[None, :, :, None] for w in weights_)
        half_ref, half_sample = materialised(
            jnp.stack(
                [
                    jnp.exp(-0.5 * q2_last * ref_distance),
                    jnp.exp(-0.5 * q2_last * sample_distance),
                ]
            )
        )  # (phi, blocks, half, a)
        cross = (half_ref * half_sample * cross_weight)[..., None] * cross_scale
        trig = cos_sin(wave_last * phase_distance[..., None])
        signs = jnp.array([1.0, sine_sign], dtype)[:, None, None, None, None, None]
        return (
            half_ref**2 * ref_weight * decay_scale,
            half_sample**2 * sample_weight * decay_scale,
            signs * cross * trig,
        )

    quadrants = []
    for level in range(levels):
        # Diagonal blocks of this level, each split in halves: the top-right quadrant couples
        # rows i of the top half with columns j of the bottom half through the pivot e (last
        # of the top half): products of rank r = 2a + 2ab in all per block (`factors`).
        count = 2**level
        span = size // count
        half = span // 2

        def split(x, count=count, span=span, half=half):
            x = x.reshape(count, span)
            return x[:, :half], x[:, half:]

        (ref_top, ref_bottom), (sample_top, sample_bottom) = split(ref), split(sample)
        velocity_top, velocity_bottom = split(velocity)
        ref_e, sample_e, velocity_e = ref_top[:, -1:], sample_top[:, -1:], velocity_top[:, -1:]
        (ref_w_top, ref_w_bottom), (sample_w_top, sample_w_bottom) = split(ref_w), split(sample_w)
        cross_w_top, cross_w_bottom = split(cross_w)
        rows = factors(
            (ref_e - ref_top, sample_e - sample_top, velocity_e - velocity_top),
            (ref_w_top, sample_w_top, cross_w_top),
            1.0,
            1.0,
            1.0,
        )
        # Columns measured from e (so across the gap e → s), times the weights and contrast.
        columns = factors(
            (ref_bottom - ref_e, sample_bottom - sample_e, velocity_bottom - velocity_e),
            (ref_w_bottom, sample_w_bottom, cross_w_bottom),
            decay_last,
            scale_last,
            -1.0,
        )
        quadrants.append(
            offset[:, None, None, None]
            + jnp.einsum("pkhr,pkgr->pkhg", _side_by_side(rows), _side_by_side(columns))
        )

    # Diagonal squares (the leaves): the direct formula, one scan step per q node; the phases
    # by the angle-addition rule, summed over the node's angles by a contraction.
    count = 2**levels

    def leaves(x):
        return x.reshape(count, leaf)

    ref_sq, sample_sq, velocity_sq = leaves(ref), leaves(sample), leaves(velocity)
    ref_pt, sample_pt, cross_pt = leaves(ref_w), leaves(sample_w), leaves(cross_w)
    ref_distance = jnp.abs(ref_sq[:, None, :] - ref_sq[:, :, None])
    sample_distance = jnp.abs(sample_sq[:, None, :] - sample_sq[:, :, None])
    ref_pair = ref_pt[:, :, None] * ref_pt[:, None, :]
    sample_pair = sample_pt[:, :, None] * sample_pt[:, None, :]
    cross_pair = cross_pt[:, :, None] * cross_pt[:, None, :]
    theta = velocity_sq - velocity_sq[:, :1]  # (squares, leaf): phase per unit wave

    def add_q_node(total, node):
        q2_a, wave_a, weights_a = node  # (phi,), (phi, b), (phi, b)
        half_ref, half_sample = materialised(
            jnp.stack(
                [
                    jnp.exp(-0.5 * q2_a[:, None, None, None] * ref_distance),
                    jnp.exp(-0.5 * q2_a[:, None, None, None] * sample_distance),
                ]
            )
        )
        angle = wave_a[:, None, None, :] * theta[None, :, :, None]  # (phi, squares, leaf, b)
        cos_i, sin_i = cos_sin(angle)
        weighted = weights_a[:, None, None, :]
        phases = jnp.einsum("psin,psjn->psij", cos_i * weighted, cos_i) + jnp.einsum(
            "psin,psjn->psij", sin_i * weighted, sin_i
        )
        decay = jnp.sum(weights_a, axis=-1)[:, None, None, None]
        term = (
            decay * (ref_pair * half_ref**2 + sample_pair * half_sample**2)
            + cross_pair * half_ref * half_sample * phases
        )
        return total + term, None

    zero = jnp.zeros((n_angles, *ref_distance.shape), dtype)
    nodes = (q2.T, jnp.moveaxis(wave, 1, 0), jnp.moveaxis(weights, 1, 0))
    # Unrolled (up to 4 q nodes a loop step): one loop step per q node would carry every
    # tangent through the loop (150 frames, 2 × 3 nodes: 1.11 → 0.94 ms for a Jacobian).
    normalised, _ = jax.lax.scan(add_q_node, zero, nodes, unroll=min(q.shape[1], 4))
    squares = offset[:, None, None, None] + contrast[:, None, None, None] * normalised

    # Assembly: every entry is written once (each level's quadrants and their transposes, and
    # the leaf squares, tile the map).
    maps = jnp.zeros((n_angles, size, size), dtype)
    for level, quadrant in enumerate(quadrants):
        span = size >> level
        corners = np.arange(2**level) * span
        half = span // 2
        maps = _write_blocks(maps, quadrant, corners, corners + half)
        maps = _write_blocks(maps, jnp.swapaxes(quadrant, -1, -2), corners + half, corners)
    corners = np.arange(count) * leaf
    maps = _write_blocks(maps, squares, corners, corners)
    return maps if size == n else maps[:, :n, :n]
