"""Kernels of the two-time correlation c2(t1, t2) (SPEC §2, SI Eqs. S-77–S-98).

With cumulative integrals C_r, C_s, C_v of J_ref, J_sample, v on the grid and f_r = 1 − f_s,

    h_n  = exp(−½ q² |C_n[j] − C_n[i]|)
    Φ    = q · cos(φ + φ0) · (C_v[j] − C_v[i])
    num  = (f_r,i f_r,j)² h_r² + (f_s,i f_s,j)² h_s² + 2 (f_r f_s)_i (f_r f_s)_j h_r h_s cos Φ
    c2   = offset + contrast · num / [(f_s,i² + f_r,i²)(f_s,j² + f_r,j²)].

`pair_correlation` evaluates this literally at index pairs (the *direct* formula).

`structured_correlation` evaluates whole maps at the cost of little more than writing them.
C_n is non-decreasing (J ≥ 0), so for i in block I and j in a later block J the exponentials
split at the end e_I of block I and the start s_J of block J,

    exp(−a (C[j] − C[i])) = exp(−a (C[e_I] − C[i])) · exp(−a (C[s_J] − C[e_I])) · exp(−a (C[j] − C[s_J])),

every factor ≤ 1 (no overflow), and the phase splits the same way,
cos(θ_j + δ_IJ − θ_i) = [cos θ_i, sin θ_i] · R(δ_IJ) · [cos θ_j, sin θ_j]ᵀ with θ measured from the
pivots (no loss of precision at large phases). Off the diagonal blocks c2 is therefore a rank-4
form per side (rank 8 for both sides of the diagonal, plus one for the offset) with a small
block-to-block coupling: only O(N + (N/b)²) transcendental functions, and each row block of the
output is one matrix product. The b × b diagonal blocks use the direct formula.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._custom_types import Scalar


class GridIntegrals(eqx.Module):
    """The angle-independent quantities on the time grid that every c2 kernel needs.

    **Fields:**

    - `reference`, `sample`: cumulative integrals C_r, C_s of the (floored) transport rates.
    - `velocity`: cumulative integral C_v of the signed velocity.
    - `sample_fraction`: f_s on the grid, already in [0, 1].
    """

    reference: Float[Array, " t"]
    sample: Float[Array, " t"]
    velocity: Float[Array, " t"]
    sample_fraction: Float[Array, " t"]


def pair_correlation(
    grid: GridIntegrals,
    i: Int[Array, "*pairs"],
    j: Int[Array, "*pairs"],
    q: Scalar,
    cosine: Scalar,
) -> Float[Array, "*pairs"]:
    """num / f² at index pairs (i, j) (broadcastable), by the direct formula of the module doc.

    Returns the normalised correlation without contrast and offset: c2 = offset + contrast · result.
    """
    fs_i, fs_j = grid.sample_fraction[i], grid.sample_fraction[j]
    fr_i, fr_j = 1 - fs_i, 1 - fs_j
    q2 = q * q
    half_ref = jnp.exp(-0.5 * q2 * jnp.abs(grid.reference[j] - grid.reference[i]))
    half_sample = jnp.exp(-0.5 * q2 * jnp.abs(grid.sample[j] - grid.sample[i]))
    phase = q * cosine * (grid.velocity[j] - grid.velocity[i])
    numerator = (
        (fr_i * fr_j * half_ref) ** 2
        + (fs_i * fs_j * half_sample) ** 2
        + 2 * (fr_i * fs_i) * (fr_j * fs_j) * half_ref * half_sample * jnp.cos(phase)
    )
    normalisation = (fs_i**2 + fr_i**2) * (fs_j**2 + fr_j**2)
    return numerator / normalisation


def direct_correlation(grid: GridIntegrals, q: Scalar, cosine: Scalar) -> Float[Array, "t t"]:
    """The full normalised map num / f² by the direct formula (O(N²) transcendental functions)."""
    index = jnp.arange(grid.sample_fraction.shape[0])
    return pair_correlation(grid, index[:, None], index[None, :], q, cosine)


def _point_factors(grid, ref_distance, sample_distance, phase, q):
    """The four rank-1 factors (ref, sample, cross·cos, cross·sin) of each grid point."""
    fs = grid.sample_fraction
    fr = 1 - fs
    weight = 1 / (fs**2 + fr**2)
    q2 = q * q
    cross = jnp.sqrt(2.0) * fr * fs * weight * jnp.exp(-0.5 * q2 * (ref_distance + sample_distance))
    return jnp.stack(
        [
            fr**2 * weight * jnp.exp(-q2 * ref_distance),
            fs**2 * weight * jnp.exp(-q2 * sample_distance),
            cross * jnp.cos(phase),
            cross * jnp.sin(phase),
        ],
        axis=-1,
    )


def _block_coupling(ref_gap, sample_gap, phase_gap, q):
    """The 4 × 4 coupling between the factors of two blocks separated by the given gaps."""
    q2 = q * q
    zero = jnp.zeros_like(ref_gap)
    cross = jnp.exp(-0.5 * q2 * (ref_gap + sample_gap))
    cos, sin = cross * jnp.cos(phase_gap), cross * jnp.sin(phase_gap)
    rows = [
        [jnp.exp(-q2 * ref_gap), zero, zero, zero],
        [zero, jnp.exp(-q2 * sample_gap), zero, zero],
        [zero, zero, cos, -sin],
        [zero, zero, sin, cos],
    ]
    return jnp.stack([jnp.stack(row, axis=-1) for row in rows], axis=-2)


def _off_diagonal_strips(
    grid: GridIntegrals, q: Scalar, cosine: Scalar, contrast: Scalar, offset: Scalar, block: int
) -> Float[Array, "blocks block t"]:
    """offset + contrast · num/f² for every pair outside the diagonal blocks (offset inside them).

    The grid length must be a multiple of `block`; row block I of the map is strip I.
    """
    n = grid.sample_fraction.shape[0]
    n_blocks = n // block
    index = jnp.arange(n)
    start = (index // block) * block
    end = start + block - 1
    wavevector_phase = q * cosine
    ref, sample, velocity = grid.reference, grid.sample, grid.velocity

    # Factors of every point measured from its own block's start (to be used after the pivot)
    # and towards its own block's end (before the pivot); distances are ≥ 0 by monotonicity.
    after_start = _point_factors(
        grid, ref - ref[start], sample - sample[start], wavevector_phase * (velocity - velocity[start]), q
    ).reshape(n_blocks, block, 4)
    before_end = _point_factors(
        grid, ref[end] - ref, sample[end] - sample, wavevector_phase * (velocity - velocity[end]), q
    ).reshape(n_blocks, block, 4)

    block_start = jnp.arange(n_blocks) * block
    block_end = block_start + block - 1
    # coupling[I, J] links the end of block I to the start of block J (used for J > I).
    coupling = _block_coupling(
        jnp.maximum(ref[block_start][None, :] - ref[block_end][:, None], 0.0),
        jnp.maximum(sample[block_start][None, :] - sample[block_end][:, None], 0.0),
        wavevector_phase * (velocity[block_start][None, :] - velocity[block_end][:, None]),
        q,
    )
    later = (jnp.arange(n_blocks)[None, :] > jnp.arange(n_blocks)[:, None])[:, :, None, None]
    upper = jnp.where(later, coupling, 0.0)
    # Below the diagonal c2[i, j] = c2[j, i]: the transposed coupling with the roles swapped.
    lower = jnp.swapaxes(jnp.swapaxes(upper, 0, 1), -1, -2)
    zero = jnp.zeros_like(upper)
    coupling8 = jnp.concatenate(
        [jnp.concatenate([upper, zero], -1), jnp.concatenate([zero, lower], -1)], -2
    )
    row_factors = contrast * jnp.concatenate([before_end, after_start], axis=-1)
    column_factors = jnp.concatenate([after_start, before_end], axis=-1)
    # column_factors seen from row block I, then one rank-9 product per row block.
    coupled = jnp.einsum("IJkl,Jjl->IkJj", coupling8, column_factors).reshape(n_blocks, 8, n)
    ones = jnp.ones((n_blocks, block, 1), row_factors.dtype)
    offsets = jnp.broadcast_to(offset, (n_blocks, 1, n))
    return jnp.einsum(
        "Iik,IkN->IiN",
        jnp.concatenate([row_factors, ones], axis=-1),
        jnp.concatenate([coupled, offsets], axis=1),
    )


def structured_correlation(
    grid: GridIntegrals,
    q: Float[Array, " phi"],
    cosine: Float[Array, " phi"],
    contrast: Float[Array, " phi"],
    offset: Float[Array, " phi"],
    *,
    block: int,
) -> Float[Array, "phi t t"]:
    """offset + contrast · num / f² for whole maps, equal to the direct formula (module doc).

    **Arguments:** the grid integrals, and per-angle `q`, `cosine` = cos(φ + φ0), `contrast`,
    `offset`; `block` is the diagonal block size (the grid is padded to a multiple of it).

    **Returns:** the maps, shape `(phi, t, t)`.
    """
    n = grid.sample_fraction.shape[0]
    n_blocks = -(-n // block)
    padded = n_blocks * block
    grid = jax.tree.map(lambda x: jnp.pad(x, (0, padded - n), mode="edge"), grid)
    strips = jax.vmap(_off_diagonal_strips, in_axes=(None, 0, 0, 0, 0, None))(
        grid, q, cosine, contrast, offset, block
    )
    rows = jnp.arange(padded).reshape(n_blocks, block)
    diagonal_blocks = jax.vmap(
        lambda q_k, cosine_k, contrast_k, offset_k: offset_k
        + contrast_k * pair_correlation(grid, rows[:, :, None], rows[:, None, :], q_k, cosine_k)
    )(q, cosine, contrast, offset)

    def insert(k, maps):
        return jax.lax.dynamic_update_slice(
            maps, diagonal_blocks[:, k][:, None], (0, k, 0, k * block)
        )

    maps = jax.lax.fori_loop(0, n_blocks, insert, strips)
    maps = maps.reshape(q.shape[0], padded, padded)
    return maps if padded == n else maps[:, :n, :n]


def block_size(n: int, preferred: int = 64) -> int:
    """A diagonal block size near `preferred` that divides n when one exists (no padding)."""
    for candidate in range(preferred, preferred // 2, -1):
        if n % candidate == 0:
            return candidate
    for candidate in range(preferred + 1, 2 * preferred):
        if n % candidate == 0:
            return candidate
    return preferred
