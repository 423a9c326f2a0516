"""Kernels of the two-time correlation c2(t1, t2) (SI Eqs. S-77–S-98).

With cumulative integrals C_r, C_s, C_v of J_ref, J_sample, v on the grid and f_r = 1 − f_s,

    h_n  = exp(−½ q² |C_n[j] − C_n[i]|)
    Φ    = q · cos(φ + φ0) · (C_v[j] − C_v[i])
    num  = (f_r,i f_r,j)² h_r² + (f_s,i f_s,j)² h_s² + 2 (f_r f_s)_i (f_r f_s)_j h_r h_s cos Φ
    c2   = offset + contrast · num / [(f_s,i² + f_r,i²)(f_s,j² + f_r,j²)].

`pair_correlation` evaluates this literally at index pairs (the *direct* formula).

`structured_correlation` evaluates whole maps at little more than the cost of writing them.
The grid is cut into blocks of b points. C_n is non-decreasing (J ≥ 0), so for i in block I and
j in a later block J the exponentials split at the end e_I of block I and the start s_J of J,

    exp(−a (C[j] − C[i]))
        = exp(−a (C[e_I] − C[i])) · exp(−a (C[s_J] − C[e_I])) · exp(−a (C[j] − C[s_J])),

every factor ≤ 1 (no overflow, and no cancellation), and the phase splits the same way,
cos(θ_j + δ_IJ − θ_i) = [cos θ_i, sin θ_i] · R(δ_IJ) · [cos θ_j, sin θ_j]ᵀ with θ measured from
the pivots (no loss of precision at large phases). Off the b × b diagonal squares, row i of the
map is therefore offset + Σ_k row_k(i) · column_k(I, j) with four terms (ref, sample, cross·cos,
cross·sin): the row factors are measured to the end of i's block for columns after it and from
its start for columns before it, and column_k(I, ·) holds the other point's factors already
multiplied by the 4 × 4 block coupling. Only O(N + N²/b) transcendental functions are evaluated;
the N² map is one elementwise pass of four multiply-adds per value. The diagonal squares use the
direct formula, with the phase difference taken by the angle-addition rule from per-point cos
and sin (on XLA:CPU a float64 cosine costs as much as ten multiply-adds), and are written over
the map by one scatter.

Derivatives: forward mode (jvp, jacfwd) costs two to three forward evaluations. Reverse mode is
correct but costs tens of forward evaluations (XLA:CPU materialises the N² products of the
transposed broadcasts), though still less than reverse mode through the direct formula; with
14 parameters, jacfwd is the cheaper way to a gradient through whole maps.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._custom_types import Scalar
from ._numerics import materialised


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


def _fields(grid: GridIntegrals) -> tuple[Float[Array, " t"], ...]:
    return (grid.sample_fraction, grid.reference, grid.sample, grid.velocity)


def _pair_values(first, second, q, cosine):
    """num / f² of the module doc from the `_fields` of the two times (broadcastable)."""
    fs_i, ref_i, sample_i, velocity_i = first
    fs_j, ref_j, sample_j, velocity_j = second
    fr_i, fr_j = 1 - fs_i, 1 - fs_j
    q2 = q * q
    half_ref = jnp.exp(-0.5 * q2 * jnp.abs(ref_j - ref_i))
    half_sample = jnp.exp(-0.5 * q2 * jnp.abs(sample_j - sample_i))
    phase = q * cosine * (velocity_j - velocity_i)
    numerator = (
        (fr_i * fr_j * half_ref) ** 2
        + (fs_i * fs_j * half_sample) ** 2
        + 2 * (fr_i * fs_i) * (fr_j * fs_j) * half_ref * half_sample * jnp.cos(phase)
    )
    normalisation = (fs_i**2 + fr_i**2) * (fs_j**2 + fr_j**2)
    return numerator / normalisation


def pair_correlation(
    grid: GridIntegrals,
    i: Int[Array, "*#pairs"],
    j: Int[Array, "*#pairs"],
    q: Float[Array, "*#pairs"],
    cosine: Float[Array, "*#pairs"],
) -> Float[Array, "..."]:
    """num / f² at index pairs (i, j), by the direct formula of the module doc.

    `i`, `j`, `q` and `cosine` broadcast against each other (one q and cos(φ + φ0) per pair, or
    scalars). Returns the normalised correlation without contrast and offset:
    c2 = offset + contrast · result.
    """
    fields = _fields(grid)
    return _pair_values([x[i] for x in fields], [x[j] for x in fields], q, cosine)


def direct_correlation(grid: GridIntegrals, q: Scalar, cosine: Scalar) -> Float[Array, "t t"]:
    """The full normalised map num / f² by the direct formula (O(N²) transcendental functions)."""
    fields = _fields(grid)
    return _pair_values([x[:, None] for x in fields], [x[None, :] for x in fields], q, cosine)


def _blocks(x: Float[Array, " t"], block: int) -> Float[Array, "blocks block"]:
    """x cut into consecutive blocks of `block` points, the last one padded with its end value."""
    n_blocks = -(-x.shape[0] // block)
    return jnp.pad(x, (0, n_blocks * block - x.shape[0]), mode="edge").reshape(n_blocks, block)


def _squares(x: Float[Array, " t"], block: int) -> Float[Array, "blocks block"]:
    """x on the points of each diagonal square: the blocks, the last one shifted to end at t[-1]
    (when it is shorter, its square is the trailing corner of the shifted one)."""
    n_blocks = -(-x.shape[0] // block)
    full = x[: (n_blocks - 1) * block].reshape(n_blocks - 1, block)
    return jnp.concatenate([full, x[None, x.shape[0] - block :]])


def _pivot_factors(ref_distance, sample_distance, phase, amplitudes, q2):
    """The four per-point factors (ref, sample, cross·cos, cross·sin) at the given distances
    (≥ 0) from a pivot and phase measured from it."""
    ref_amplitude, sample_amplitude, cross_amplitude = amplitudes
    cross = cross_amplitude * jnp.exp(-0.5 * q2 * (ref_distance + sample_distance))
    return [
        ref_amplitude * jnp.exp(-q2 * ref_distance),
        sample_amplitude * jnp.exp(-q2 * sample_distance),
        cross * jnp.cos(phase),
        cross * jnp.sin(phase),
    ]


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
    `offset`; `block` is the side of the diagonal squares (any grid length works; the last block
    may be shorter).

    **Returns:** the maps, shape `(phi, t, t)`.
    """
    n = grid.sample_fraction.shape[0]
    block = min(block, n)
    n_blocks = -(-n // block)
    n_angles = q.shape[0]
    dtype = grid.sample_fraction.dtype
    fs = grid.sample_fraction
    fr = 1 - fs
    weight = 1 / (fs**2 + fr**2)
    ref_weight, sample_weight = fr**2 * weight, fs**2 * weight
    cross_weight = jnp.sqrt(2.0).astype(dtype) * fr * fs * weight
    q2 = (q * q)[:, None, None]
    wave = (q * cosine)[:, None, None]

    # Per-point factors towards the end of their block (rows 0-3) and from its start (4-7).
    amplitudes = [_blocks(w, block) for w in (ref_weight, sample_weight, cross_weight)]
    ref, sample, velocity = (_blocks(x, block) for x in _fields(grid)[1:])
    to_end = (ref[:, -1:] - ref, sample[:, -1:] - sample, wave * (velocity - velocity[:, -1:]))
    from_start = (ref - ref[:, :1], sample - sample[:, :1], wave * (velocity - velocity[:, :1]))
    factors = materialised(
        jnp.stack(
            _pivot_factors(*to_end, amplitudes, q2) + _pivot_factors(*from_start, amplitudes, q2)
        )
    )  # (8, phi, blocks, block)

    # Coupling from the end of block I to the start of a later block J (zero unless J > I).
    later = jnp.arange(n_blocks)[None, :] > jnp.arange(n_blocks)[:, None]
    mask = later.astype(dtype)
    ref_gap = jnp.where(later, ref[None, :, 0] - ref[:, None, -1], 0.0)
    sample_gap = jnp.where(later, sample[None, :, 0] - sample[:, None, -1], 0.0)
    phase_gap = wave * (velocity[None, :, 0] - velocity[:, None, -1])
    cross_gap = mask * jnp.exp(-0.5 * q2 * (ref_gap + sample_gap))
    coupling = materialised(
        jnp.stack(
            [
                mask * jnp.exp(-q2 * ref_gap),
                mask * jnp.exp(-q2 * sample_gap),
                cross_gap * jnp.cos(phase_gap),
                cross_gap * jnp.sin(phase_gap),
            ]
        )
    )[..., None]  # (4, phi, I, J, 1)
    g_ref, g_sample, g_cos, g_sin = coupling
    t_ref, t_sample, t_cos, t_sin = jnp.swapaxes(coupling, 2, 3)  # coupling[J, I]
    scale = contrast[:, None, None, None]
    before = [scale * x[:, None] for x in factors[:4]]  # (phi, 1, J, j)
    after = [scale * x[:, None] for x in factors[4:]]
    # Row block I sees the columns after it through g[I, J] and those before it through g[J, I];
    # the two never overlap, so one set of four coupled column factors serves every row block.
    columns = materialised(
        jnp.stack(
            [
                g_ref * after[0] + t_ref * before[0],
                g_sample * after[1] + t_sample * before[1],
                g_cos * after[2] - g_sin * after[3] + t_cos * before[2] + t_sin * before[3],
                g_sin * after[2] + g_cos * after[3] + t_cos * before[3] - t_sin * before[2],
            ]
        ).reshape(4, n_angles, n_blocks, n_blocks * block)[..., :n]
    )  # (4, phi, I, t)
    rows = factors.reshape(8, n_angles, n_blocks * block)[..., :n]

    def per_row(x):  # (phi, I, t) -> (phi·t, t): the entry of each row's block
        spread = jnp.broadcast_to(x[:, :, None, :], (n_angles, n_blocks, block, n))
        return spread.reshape(n_angles, n_blocks * block, n)[:, :n].reshape(n_angles * n, n)

    # The maps are assembled as one (phi·t, t) array: XLA:CPU splits an elementwise loop across
    # threads along its leading axis only, which would be uneven for a handful of angles.
    first_after_block = np.tile((np.arange(n) // block + 1) * block, n_angles)
    after_row_block = jnp.arange(n)[None, :] >= first_after_block[:, None]
    maps = jnp.repeat(offset, n)[:, None] + sum(
        jnp.where(after_row_block, rows[k].reshape(-1, 1), rows[k + 4].reshape(-1, 1))
        * per_row(columns[k])
        for k in range(4)
    )

    # The diagonal squares by the direct formula, cos Φ by the angle-addition rule.
    fs_sq, ref_sq, sample_sq, velocity_sq = (_squares(x, block) for x in _fields(grid))
    ref_w, sample_w, cross_w = (
        _squares(w, block) for w in (ref_weight, sample_weight, cross_weight)
    )
    theta = wave * (velocity_sq - velocity_sq[:, :1])
    trig = materialised(jnp.stack([cross_w * jnp.cos(theta), cross_w * jnp.sin(theta)]))
    cos_i, sin_i = trig[..., :, None]
    cos_j, sin_j = trig[..., None, :]
    half_ref = jnp.exp(-0.5 * q2[..., None] * jnp.abs(ref_sq[:, None, :] - ref_sq[:, :, None]))
    half_sample = jnp.exp(
        -0.5 * q2[..., None] * jnp.abs(sample_sq[:, None, :] - sample_sq[:, :, None])
    )
    normalised = (
        ref_w[:, :, None] * ref_w[:, None, :] * half_ref**2
        + sample_w[:, :, None] * sample_w[:, None, :] * half_sample**2
        + half_ref * half_sample * (cos_i * cos_j + sin_i * sin_j)
    )
    squares = offset[:, None, None, None] + contrast[:, None, None, None] * normalised
    # Written by one windowed scatter per square size (its transpose is a gather, where a loop of
    # dynamic_update_slice would copy the whole cotangent once per square in reverse mode).
    full_blocks, remainder = divmod(n, block)
    corners = np.arange(full_blocks) * block
    maps = _write_squares(maps, squares[:, :full_blocks], corners, n)
    if remainder:
        corner = np.array([n - remainder])
        maps = _write_squares(maps, squares[:, -1:, -remainder:, -remainder:], corner, n)
    return maps.reshape(n_angles, n, n)


def _write_squares(maps, squares, corners, n):
    """maps (phi·t, t) with squares[a, k] written at rows a·t + corners[k], columns corners[k]."""
    n_angles, n_squares, size, _ = squares.shape
    rows = (np.arange(n_angles)[:, None] * n + corners[None, :]).ravel()
    columns = np.tile(corners, n_angles)
    numbers = jax.lax.ScatterDimensionNumbers(
        update_window_dims=(1, 2), inserted_window_dims=(), scatter_dims_to_operand_dims=(0, 1)
    )
    return jax.lax.scatter(
        maps,
        jnp.asarray(np.stack([rows, columns], axis=1)),
        squares.reshape(n_angles * n_squares, size, size),
        numbers,
        indices_are_sorted=True,
        unique_indices=True,
        mode=jax.lax.GatherScatterMode.PROMISE_IN_BOUNDS,
    )


def block_size(n: int, preferred: int = 64) -> int:
    """A diagonal block size near `preferred` that divides n when one exists (no padding)."""
    for candidate in range(preferred, preferred // 2, -1):
        if n % candidate == 0:
            return candidate
    for candidate in range(preferred + 1, 2 * preferred):
        if n % candidate == 0:
            return candidate
    return preferred
