"""The target density of one shard, in unconstrained coordinates.

Parameters are the free entries x of a `FitProblem` (free physics, then contrast and offset
coefficients), sampled as θ with x = x(θ) the problem's `BoxTransform`. With shard k's entries
S_k (a K-th of the data), the shard's target is (Scott et al. 2016)

    log p_k(θ) = (1/K) · [log p(x(θ)) + log |dx/dθ|] + log L_k(x(θ)),

    log L_k(x) = −½ Σ_{(a,i,j) ∈ S_k} (c2_a(t_i, t_j; x) − y_aij)² / σ_aij²   (+ const.),

so that Π_k p_k(θ) ∝ p(θ | all data) exactly. The prior is tempered *in θ*, Jacobian included,
because θ is the space in which the shard posteriors are multiplied (combined); tempering only
p(x) would count the Jacobian K times.

Priors p(x), independent per parameter and truncated to the box:

- default: uniform on the box (log p(x) is constant; in θ only the log-Jacobian remains);
- informed: Gaussian around the NLSQ values with sd = `width_factor` × NLSQ standard error
  (a parameter without a finite standard error keeps the uniform prior).

The model is evaluated only at the shard's pairs (as `HeterodyneModel.c2_pairs` does: cumulative
integrals on the whole time grid, then a gather), tile by tile (see `_shards`), never on the
N × N map. A tile above the diagonal (rows i before columns j) is split at the first frame p of
its columns. The transport integrals are non-decreasing (J ≥ 0), so with d_n(i) = C_n[p] − C_n[i]
and d_n(j) = C_n[j] − C_n[p], both ≥ 0, and θ(i) = q cos(φ + φ0) (C_v[p] − C_v[i]),
θ(j) = q cos(φ + φ0) (C_v[j] − C_v[p]),

    num / f² = R_i R_j + S_i S_j + 2 (X_i cos θ_i · X_j cos θ_j − X_i sin θ_i · X_j sin θ_j),

    R_k = f_r,k² e^{−q² d_r(k)} / n_k,   S_k = f_s,k² e^{−q² d_s(k)} / n_k,
    X_k = f_r,k f_s,k e^{−½ q² (d_r(k) + d_s(k))} / n_k,   n_k = f_s,k² + f_r,k²,

exactly the formula of `_model._two_time` (h_n² = e^{−q² (d_n(i) + d_n(j))}, Φ = θ_i + θ_j), with
every exponential ≤ 1 and phases measured from a nearby pivot.

The pivot split goes one step further, through the end e of the row block and the start s of
the column block: d_n(i) = (C_n[e] − C_n[i]) + Δ_n and d_n(j) = C_n[j] − C_n[s] with the gap
Δ_n = C_n[s] − C_n[e] ≥ 0 (and θ likewise, the gap's phase by the angle-addition rule). The
factors of a frame measured to its block's end or from its start are then the same for every
tile (`_frame_tables`: once per map and frame), and a tile only adds its gap's couplings:
b² multiply-adds and a handful of transcendental functions a tile. Diagonal tiles take the
decays pair by pair and the phases by the angle-addition rule from the same per-frame tables.

With the ROI model (bin averages, `_model._two_time_roi`) every term is a weighted sum over the
bin's nodes: R and S per q node, the cosine and sine per node. A tile above the diagonal is then
one product of rows (b × r) and columns (r × b) factors, r = 2·(q nodes) + 2·(nodes), with the
weights and the gap's couplings folded into the columns. On 8 maps × 150² with 2 × 3 nodes
(one shard of 1 520 tiles) a marginal log-density with its gradient costs 18.6 ms (7.1 ms the
value alone); per tile pivots cost 21.1 ms, pair by pair 109 ms.

**Whole maps** (`ShardData.layout == "maps"`). A shard may instead be held as the full maps
with its precision zero outside its entries; the model is then evaluated by
`HeterodyneModel.c2` itself (the structured rank-k kernel over all N² pairs of every map). That
costs the full data's pass whatever the shard holds, but its shapes do not depend on K, and
for one shard it is the cheaper pass inside NUTS (8 maps × 150², ROI 2 × 3 nodes, one chain:
24 ms a leapfrog step against 62 ms tile by tile; the gathers of the tile path and their
transposes are what the sampler's loop pays for). `_fit` uses it for one shard, and for the
Laplace fits of up to four.

**Scaling coefficients integrated out** (`marginal_scaling`, the default of `fit_cmc`). c2 is
linear in the contrast/offset coefficients α: c2 = o(α) + c(α)·g(θ). For given physics θ,
log L_k + (1/K) log p(α) is therefore a quadratic form −½(αᵀQα − 2rᵀα + c) in α
(`scaling_quadratic`), and

    log p_k(θ) = (1/K) log p(θ) + w · log ∫ L_k(θ, α) p(α)^{1/K} dα
               = (1/K) log p(θ) + w · [−½ (c − rᵀQ⁻¹r) − ½ log det Q] + const.

(w, the magnitude adjustment's weight, acts on this integrated likelihood:
`ShardPosterior.weighted_log_likelihood`), so NUTS samples the free physics alone;
α | θ ~ N(Q_w⁻¹r_w, Q_w⁻¹), the quadratic form of w·log L_k + (1/K) log p(α), is drawn afterwards
(`_marginal.complete_scaling`). The uniform box prior of α is replaced by the Gaussian of the
same mean and variance (`scaling_prior`), which keeps the integral bounded where the data
leave α undetermined.

Sampling runs in a second, affine coordinate z with θ = m_k + L_k z per shard
(`AffinePreconditioner`, built in `_coordinates`: m_k the shard's mode, L_k a square root of its
Laplace covariance). An identity mass matrix in z is then the preconditioned metric in θ.
The map has a constant Jacobian, so the density in z is the density in θ.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._fit._problem import FitProblem, coefficient_system
from .._fit._profile import _jacobi_solve, physics_transform
from .._model._two_time import GridIntegrals
from ._shards import Shards


class ShardData(eqx.Module):
    """The data of one shard (or, with a leading axis, of all shards), tile by tile.

    **Fields:**

    - `angle_index`, `t1_start`, `t2_start`: map and first frames of every tile `(*shard, tile)`.
    - `observed`: c2 at the tiles' entries, `(*shard, tile, b, b)`.
    - `precision`: weight / σ² at the entries (0 for unused entries and padding).
    - `n_diagonal`: tiles `[:n_diagonal]` may touch the diagonal, the others lie above it
        (`Shards.n_diagonal`); None: any tile may touch it (every tile pair by pair).
    - `layout`: `"tiles"` (default) as above, or `"maps"`: every "tile" is a whole map, in
        order (b = N, both starts 0, `angle_index` = 0, 1, …), its precision zero outside the
        shard's entries. The model is then evaluated on the whole maps by its own structured kernel
        (`HeterodyneModel.c2`), whatever K: the same shapes for every shard count, and for
        one shard of the ROI model a cheaper pass than tile by tile (module docstring).
    """

    angle_index: Int[Array, "*shard tile"]
    t1_start: Int[Array, "*shard tile"]
    t2_start: Int[Array, "*shard tile"]
    observed: Float[Array, "*shard tile b b"]
    precision: Float[Array, "*shard tile b b"]
    n_diagonal: int | None = eqx.field(static=True, default=None)
    layout: str = eqx.field(static=True, default="tiles")


def _tile_frames(start: Int[Array, "*shard tile"], b: int, n_times: int):
    """The frames of every tile, clipped into the grid (clipped ones have weight 0)."""
    return jnp.minimum(start[..., None] + jnp.arange(b), n_times - 1)


LAYOUTS = ("tiles", "maps")


def gather_shard_data(
    shards: Shards,
    c2: Float[np.ndarray, "phi t t"],
    sigma: Float[np.ndarray, "phi t t"],
    layout: str = "tiles",
) -> ShardData:
    """Picks the observed c2 and weight/σ² of every shard entry out of the full maps (once).

    **Arguments:** `shards`; `c2` and `sigma` (σ per entry, positive), both `(phi, t, t)`;
    `layout`: `"tiles"` (the shards' tiles) or `"maps"` (whole maps, zero precision outside
    each shard's entries; `ShardData`).

    **Returns:** a `ShardData` with a leading shard axis.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"`layout` must be one of {LAYOUTS}; got {layout!r}.")
    c2 = np.asarray(c2, float)
    sigma = np.broadcast_to(np.asarray(sigma, float), c2.shape)
    if layout == "maps":
        return _shard_maps(shards, c2, sigma)
    n_times, b = c2.shape[-1], shards.tile
    starts = np.concatenate([np.ravel(shards.t1_start), np.ravel(shards.t2_start)])
    if np.any(starts % b):
        raise ValueError(
            f"Every tile must start at a multiple of its side b = {b} (the likelihood's "
            "per-frame factors are tabulated per block of b frames); use `make_shards`."
        )
    angle = np.asarray(shards.angle_index)[..., None, None]
    rows = np.asarray(_tile_frames(shards.t1_start, b, n_times))[..., :, None]
    columns = np.asarray(_tile_frames(shards.t2_start, b, n_times))[..., None, :]
    weight = np.asarray(shards.weight)
    return ShardData(
        angle_index=shards.angle_index,
        t1_start=shards.t1_start,
        t2_start=shards.t2_start,
        observed=jnp.asarray(np.where(weight > 0, c2[angle, rows, columns], 0.0)),
        precision=jnp.asarray(weight / sigma[angle, rows, columns] ** 2),
        n_diagonal=shards.n_diagonal,
    )


def _shard_maps(shards: Shards, c2: np.ndarray, sigma: np.ndarray) -> ShardData:
    """The `"maps"` layout of `gather_shard_data`: each shard's tile weights put back into
    whole maps (tiles are disjoint; padding tiles carry weight 0)."""
    n_shards, (n_angles, n_times) = shards.n_shards, c2.shape[:2]
    b = shards.tile
    side = -(-n_times // b) * b
    weight = np.zeros((n_shards, n_angles, side, side))
    shard = np.arange(n_shards)[:, None, None, None]
    angle = np.asarray(shards.angle_index)[..., None, None]
    rows = (np.asarray(shards.t1_start)[..., None] + np.arange(b))[..., :, None]
    columns = (np.asarray(shards.t2_start)[..., None] + np.arange(b))[..., None, :]
    np.add.at(weight, (shard, angle, rows, columns), np.asarray(shards.weight))
    weight = weight[:, :, :n_times, :n_times]
    starts = np.zeros((n_shards, n_angles), np.int32)
    return ShardData(
        angle_index=jnp.asarray(np.broadcast_to(np.arange(n_angles, dtype=np.int32), starts.shape)),
        t1_start=jnp.asarray(starts),
        t2_start=jnp.asarray(starts),
        observed=jnp.asarray(np.where(weight > 0, c2[None], 0.0)),
        precision=jnp.asarray(weight / sigma[None] ** 2),
        layout="maps",
    )


class _FrameTables(NamedTuple):
    """Per-frame factors of every map, on the grid cut into blocks of b frames (`_frame_tables`).

    Shapes `(phi, block, b, …)`; r = 2a + 2an factors (a q nodes, n angles a q node).
    """

    to_end: Float[Array, "phi block b r"]  # rows: measured to the end e of their block
    from_start: Float[Array, "phi block b r"]  # columns: measured from the start s
    amplitude: Float[Array, "3 block b"]  # R⁰, S⁰, X⁰ = f_r², f_s², f_r f_s over f_s² + f_r²
    phase: Float[Array, "2 phi block b an"]  # cos, sin of κ (C_v − C_v[s])
    end: Float[Array, "3 block"]  # C_r, C_s, C_v at e
    start: Float[Array, "3 block"]  # … and at s
    blocked: Float[Array, "2 block b"]  # C_r, C_s on the blocked grid


def _frame_tables(grid: GridIntegrals, q, cosine, b: int) -> _FrameTables:
    """The per-frame factors of the module docstring's tile products, once per map and frame.

    The grid (padded with its end values to whole blocks) is cut into blocks of b frames; with
    the block's last frame e and first frame s, d_n(i) = C_n[e] − C_n[i] ≥ 0 (rows) and
    d_n(j) = C_n[j] − C_n[s] ≥ 0 (columns), the factors of a frame are, per q node a,
    R⁰ e^{−q_a² d_r}, S⁰ e^{−q_a² d_s}, and per node (a, n) X⁰ e^{−½ q_a² (d_r + d_s)} times
    cos and sin of κ_an (C_v[e] − C_v[i]) (rows) or κ_an (C_v[j] − C_v[s]) (columns),
    κ_an = q_a cos(φ_an + φ0).
    """
    n = grid.sample_fraction.shape[0]
    n_blocks = -(-n // b)

    def blocks(x):
        return jnp.pad(x, (0, n_blocks * b - n), mode="edge").reshape(n_blocks, b)

    fs = blocks(grid.sample_fraction)
    fr = 1 - fs
    norm = fs**2 + fr**2
    amplitude = jnp.stack([fr**2 / norm, fs**2 / norm, fr * fs / norm])
    reference, sample, velocity = (blocks(x) for x in (grid.reference, grid.sample, grid.velocity))
    q2 = (q * q)[:, :, None, None]  # (phi, a, 1, 1)
    wave = (q[..., None] * cosine).reshape(q.shape[0], -1)[:, :, None, None]  # (phi, an, 1, 1)
    n_per_q = cosine.shape[-1]

    def factors(d_ref, d_sample, travel):
        cross = amplitude[2] * jnp.exp(-0.5 * q2 * (d_ref + d_sample))  # (phi, a, block, b)
        cross = jnp.repeat(cross, n_per_q, axis=1)  # (phi, an, block, b)
        phase = wave * travel
        parts = [
            amplitude[0] * jnp.exp(-q2 * d_ref),
            amplitude[1] * jnp.exp(-q2 * d_sample),
            cross * jnp.cos(phase),
            cross * jnp.sin(phase),
        ]
        return jnp.moveaxis(jnp.concatenate(parts, axis=1), 1, -1)  # (phi, block, b, r)

    end = jnp.stack([reference[:, -1], sample[:, -1], velocity[:, -1]])
    start = jnp.stack([reference[:, 0], sample[:, 0], velocity[:, 0]])
    to_end = factors(
        end[0, :, None] - reference, end[1, :, None] - sample, end[2, :, None] - velocity
    )
    travel = velocity - start[2, :, None]
    from_start = factors(reference - start[0, :, None], sample - start[1, :, None], travel)
    phase = jnp.moveaxis(wave * travel, 1, -1)  # (phi, block, b, an)
    return _FrameTables(
        to_end,
        from_start,
        amplitude,
        jnp.stack([jnp.cos(phase), jnp.sin(phase)]),
        end,
        start,
        jnp.stack([reference, sample]),
    )


def _split_correlation(
    tables: _FrameTables,
    angle: Int[Array, " tile"],
    row_block: Int[Array, " tile"],
    column_block: Int[Array, " tile"],
    q: Float[Array, "phi a"],
    cosine: Float[Array, "phi a n"],
    weights: Float[Array, "phi a n"],
) -> Float[Array, "tile b b"]:
    """Σ_k w_k num(q_k, φ_k) / f² on tiles above the diagonal (row block I < column block J), by
    the pivot split of the module docstring through the end e of block I and the start s of J.

    Row i's factors are measured to e and column j's from s (`_frame_tables`, once per frame);
    what couples them is the gap e → s of the tile: per q node e^{−q² Δ_r}, e^{−q² Δ_s} and
    e^{−½ q² (Δ_r + Δ_s)} (Δ_n = C_n[s] − C_n[e] ≥ 0), per node the rotation by δ = κ Δ_v, by
    the angle-addition rule cos(α_i + δ + β_j) = cos α_i cos(δ + β_j) − sin α_i sin(δ + β_j).
    Folded with the weights into the columns, a tile is one product of rows (b × r) and columns
    (r × b), r = 2a + 2an, and costs 3a + 2an transcendental functions (its gap) besides.
    """
    n_per_q = cosine.shape[-1]
    gap = tables.start[:, column_block] - tables.end[:, row_block]  # (3, tile)
    q2 = (q * q)[angle]  # (tile, a)
    wave = (q[..., None] * cosine)[angle].reshape(angle.shape[0], -1)  # (tile, an)
    per_q = jnp.sum(weights, axis=-1)[angle]  # (tile, a)
    per_node = weights[angle].reshape(angle.shape[0], -1)
    ref_gap = per_q * jnp.exp(-q2 * gap[0][:, None])
    sample_gap = per_q * jnp.exp(-q2 * gap[1][:, None])
    cross_gap = jnp.repeat(jnp.exp(-0.5 * q2 * (gap[0] + gap[1])[:, None]), n_per_q, axis=1)
    cross_gap = 2 * per_node * cross_gap
    delta = wave * gap[2][:, None]
    cos_gap, sin_gap = cross_gap * jnp.cos(delta), cross_gap * jnp.sin(delta)
    rows = tables.to_end[angle, row_block]  # (tile, b, r)
    columns = tables.from_start[angle, column_block]
    n_q = q.shape[-1]
    ref_j, sample_j = columns[..., :n_q], columns[..., n_q : 2 * n_q]
    cos_j, sin_j = jnp.split(columns[..., 2 * n_q :], 2, axis=-1)
    column_factor = jnp.concatenate(
        [
            ref_gap[:, None] * ref_j,
            sample_gap[:, None] * sample_j,
            cos_gap[:, None] * cos_j - sin_gap[:, None] * sin_j,
            -(sin_gap[:, None] * cos_j + cos_gap[:, None] * sin_j),
        ],
        axis=-1,
    )
    return jnp.einsum("tir,tjr->tij", rows, column_factor)


def _near_correlation(
    tables: _FrameTables,
    angle: Int[Array, " tile"],
    row_block: Int[Array, " tile"],
    column_block: Int[Array, " tile"],
    q: Float[Array, "phi a"],
    cosine: Float[Array, "phi a n"],
    weights: Float[Array, "phi a n"],
) -> Float[Array, "tile b b"]:
    """Σ_k w_k num(q_k, φ_k) / f² pair by pair on tiles that may touch the diagonal (any row
    and column blocks): the decays e^{−½ q_a² |C_n[j] − C_n[i]|} per pair and q node, the
    phase κ (C_v[j] − C_v[i]) = β_j + δ − β_i (β from each frame's block start, δ = κ (C_v[s_J]
    − C_v[s_I]), 0 on the diagonal) by the angle-addition rule from the per-frame cos β, sin β
    of `_frame_tables`, summed over a q node's angles by a contraction."""
    n_tiles, n_q, n_per_q = angle.shape[0], q.shape[-1], cosine.shape[-1]
    q2 = (q * q)[angle][:, :, None, None]  # (tile, a, 1, 1)
    ref, sample = tables.blocked[0], tables.blocked[1]
    half_ref = jnp.exp(
        -0.5 * q2 * jnp.abs(ref[column_block][:, None, None, :] - ref[row_block][:, None, :, None])
    )
    half_sample = jnp.exp(
        -0.5
        * q2
        * jnp.abs(sample[column_block][:, None, None, :] - sample[row_block][:, None, :, None])
    )  # (tile, a, b, b)
    cos_i, sin_i = tables.phase[0][angle, row_block], tables.phase[1][angle, row_block]
    cos_j, sin_j = tables.phase[0][angle, column_block], tables.phase[1][angle, column_block]
    wave = (q[..., None] * cosine)[angle].reshape(n_tiles, -1)
    delta = wave * (tables.start[2, column_block] - tables.start[2, row_block])[:, None]
    cos_d, sin_d = jnp.cos(delta)[:, None], jnp.sin(delta)[:, None]
    cos_u, sin_u = cos_j * cos_d - sin_j * sin_d, sin_j * cos_d + cos_j * sin_d  # β_j + δ
    per_node = weights[angle].reshape(n_tiles, 1, -1)  # (tile, 1, an)

    def by_q(x):  # (tile, b, an) -> (tile, b, a, n)
        return x.reshape(n_tiles, x.shape[1], n_q, n_per_q)

    phases = jnp.einsum("tian,tjan->taij", by_q(cos_i * per_node), by_q(cos_u)) + jnp.einsum(
        "tian,tjan->taij", by_q(sin_i * per_node), by_q(sin_u)
    )  # Σ_n w_an cos(κ_an (C_v[j] − C_v[i])), (tile, a, b, b)
    per_q = jnp.sum(weights, axis=-1)[angle][:, :, None, None]
    amplitude_i = tables.amplitude[:, row_block][..., :, None]  # (3, tile, b, 1)
    amplitude_j = tables.amplitude[:, column_block][..., None, :]
    ref_pair, sample_pair, cross_pair = amplitude_i * amplitude_j
    decays = per_q * (ref_pair[:, None] * half_ref**2 + sample_pair[:, None] * half_sample**2)
    cross = 2 * cross_pair[:, None] * half_ref * half_sample * phases
    return jnp.sum(decays + cross, axis=1)


class ShardPosterior(eqx.Module):
    """log p_k(θ) of the module docstring, for any shard's `ShardData`.

    **Fields:**

    - `problem`: the `FitProblem` (model template, free parameters, bounds, scaling bases).
    - `t`, `q`, `phi`: the time grid (s), and the wavevector (Å⁻¹) and angle (deg) of each map.
    - `tempering`: 1/K, the power of the prior.
    - `prior_mean`, `prior_precision`: the informed Gaussian prior in x per parameter; a
        precision of 0 means the uniform prior on the box.
    - `likelihood_weight`: w in log p_k = (1/K) log p + w · log L_k, the magnitude adjustment
        of a composite likelihood (1: entries independent, the default; set by an
        `AbstractLikelihoodAdjustment`, see `_adjustment`).
    - `likelihood_center`, `likelihood_map`: θ̂ and A of the curvature adjustment: the
        likelihood (the model values) is evaluated at θ* = θ̂ + A (θ − θ̂), the prior at θ.
        None (default): at θ.
    - `marginal_scaling`: θ are the free physics alone, and the scaling coefficients are
        integrated out of the shard's likelihood in closed form (`conditional_scaling`; drawn
        afterwards from their conditional, `_marginal.complete_scaling`). False (default): θ
        are all free parameters.
    - `scaling_stretch`, `scaling_slope`: with `marginal_scaling` and a curvature adjustment,
        T and D of the coefficients' adjustment (`_adjustment.scaling_map`): a draw m(θ*) + ε
        of their conditional given θ* becomes m(θ*) + T ε + D (θ − θ̂). None (default): as
        drawn.
    """

    problem: FitProblem
    t: Float[Array, " t"]
    q: Float[Array, " phi"]
    phi: Float[Array, " phi"]
    tempering: Float[Array, ""]
    prior_mean: Float[Array, " p"]
    prior_precision: Float[Array, " p"]
    likelihood_weight: float | Float[Array, ""] = 1.0
    likelihood_center: Float[Array, " s"] | None = None
    likelihood_map: Float[Array, "s s"] | None = None
    marginal_scaling: bool = eqx.field(static=True, default=False)
    scaling_stretch: Float[Array, "c c"] | None = None
    scaling_slope: Float[Array, "c s"] | None = None

    def likelihood_theta(self, theta: Float[Array, " p"]) -> Float[Array, " p"]:
        """θ* at which the likelihood is evaluated: θ̂ + A (θ − θ̂), or θ without adjustment."""
        if self.likelihood_map is None or self.likelihood_center is None:
            return theta
        return self.likelihood_center + self.likelihood_map @ (theta - self.likelihood_center)

    @property
    def n_sampled(self) -> int:
        """The number of sampled coordinates: the free physics alone with `marginal_scaling`,
        every free parameter otherwise."""
        if self.marginal_scaling:
            return self.problem.n_free_physics
        return self.problem.n_parameters

    @property
    def sampled_names(self) -> tuple[str, ...]:
        """The names of the sampled coordinates (`n_sampled`)."""
        return self.problem.names[: self.n_sampled]

    def sampled_transform(self):
        """The box transform x(θ) of the sampled coordinates."""
        if self.marginal_scaling:
            return physics_transform(self.problem)
        return self.problem.transform

    def normalised_values(
        self, physics: Float[Array, " k"], shard: ShardData
    ) -> Float[Array, "tile b b"]:
        """g = num/f² of the model at one shard's tiles, for the free physics `physics`
        (bounded values): c2 = offset + contrast · g.

        The rates are integrated once on the whole grid (`HeterodyneModel.grid_integrals`); each
        tile then gathers 2b grid values. Diagonal tiles evaluate their b² pairs by the direct
        formula (`_near_correlation`), tiles above the diagonal by the pivot split of the module
        docstring (`_split_correlation`), both summed over the model's nodes (`_nodes`: the
        bin's with the ROI model, the bin centre without).
        """
        model = self.problem.model_at(physics)
        if shard.layout == "maps":
            # Tile a is map a (`ShardData`): no gather, whose transpose the gradient pays.
            return model.c2(
                self.t, q=self.q, phi=self.phi, contrast=1.0, offset=0.0, bins=self.problem.bins
            )
        b = shard.observed.shape[-1]
        n_tiles = shard.observed.shape[-3]
        split = n_tiles if shard.n_diagonal is None else shard.n_diagonal
        nodes = self._nodes(model.phi0)
        tables = _frame_tables(model.grid_integrals(self.t), nodes[0], nodes[1], b)
        angle, row_block, column_block = shard.angle_index, shard.t1_start // b, shard.t2_start // b
        parts = []
        for kernel, part in (
            (_near_correlation, slice(0, split)),
            (_split_correlation, slice(split, n_tiles)),
        ):
            if part.stop > part.start:
                blocks = (angle[part], row_block[part], column_block[part])
                parts.append(kernel(tables, *blocks, *nodes))
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    def scaled_values(
        self, physics: Float[Array, " k"], coefficients: Float[Array, " c"], shard: ShardData
    ) -> Float[Array, "tile b b"]:
        """c2 = offset + contrast · g at one shard's tiles for bounded free physics and scaling
        coefficients."""
        problem = self.problem
        x = jnp.concatenate([physics, coefficients])
        _, contrast, offset = problem.unpack(x)
        angle = shard.angle_index
        normalised = self.normalised_values(physics, shard)
        return offset[angle][:, None, None] + contrast[angle][:, None, None] * normalised

    def model_values(self, theta: Float[Array, " p"], shard: ShardData) -> Float[Array, "tile b b"]:
        """The model c2 at one shard's tiles for parameters θ (all free parameters; with
        `marginal_scaling` the physics θ and the shard's conditional mean α* of the scaling
        coefficients). With a curvature adjustment they are those of θ* (`likelihood_theta`).
        """
        theta = self.likelihood_theta(theta)
        k = self.problem.n_free_physics
        if self.marginal_scaling:
            physics = self.sampled_transform().to_bounded(theta)
            coefficients = conditional_scaling(self, theta, shard).mean
            return self.scaled_values(physics, coefficients, shard)
        x = self.problem.transform.to_bounded(theta)
        return self.scaled_values(x[:k], x[k:], shard)

    def _nodes(self, phi0):
        """Per map, the nodes of the model: q nodes `(phi, a)`, cos(φ_an + φ0) and weights
        `(phi, a, n)` (`BinGeometry.tensor_nodes` with the ROI model; the bin centre, one node of
        weight 1, without)."""
        bins = self.problem.bins
        if bins is None:
            cosine = jnp.cos(jnp.deg2rad(self.phi + phi0))
            return self.q[:, None], cosine[:, None, None], jnp.ones((self.q.shape[0], 1, 1))
        q_nodes, phi_nodes, weights = bins.tensor_nodes()
        return q_nodes, jnp.cos(jnp.deg2rad(phi_nodes + phi0)), weights

    def log_likelihood(self, theta: Float[Array, " p"], shard: ShardData) -> Float[Array, ""]:
        """log L_k(x(θ)) = −½ Σ precision · (model − observed)², dropping constants (all free
        parameters; with `marginal_scaling` the scaling coefficients at their conditional mean
        α*, i.e. the profile likelihood)."""
        residual = self.model_values(theta, shard) - shard.observed
        return -0.5 * jnp.sum(shard.precision * residual**2)

    def weighted_log_likelihood(
        self, theta: Float[Array, " p"], shard: ShardData
    ) -> Float[Array, ""]:
        """What the likelihood adds to log p_k: w · log L_k, or with `marginal_scaling` w times
        the logarithm of the integrated likelihood ∫ L_k p(α)^{1/K} dα
        (`ScalingConditional.log_marginal` at w = 1).

        The magnitude adjustment w acts on the integrated likelihood of the physics, not inside
        the integral: ∫ L_k^w dα carries a volume term −½ log det(w H_α(θ)) whose dependence on
        θ does not shrink with w, and where w is small against the number of coefficients it
        outweighs the flattened likelihood (measured on seed 2 of `bench_cmc_roi.py --v0 100`,
        w = 0.0039 and 16 coefficients: it moved f0's posterior from the NLSQ value 0.29 to
        0.35 with an sd of 0.03, the truth 0.45 outside its 90 % interval). Both are the same at
        w = 1; the coefficients are still drawn from their widened conditional given θ
        (`conditional_scaling`, `_marginal.complete_scaling`)."""
        return self._weighted_log_likelihood_and_conditional(theta, shard)[0]

    def _weighted_log_likelihood_and_conditional(self, theta, shard: ShardData):
        """`weighted_log_likelihood` and, with `marginal_scaling`, the `ScalingConditional` at
        w = 1 it was computed from (None otherwise)."""
        if self.marginal_scaling:
            integrated = conditional_scaling(self, self.likelihood_theta(theta), shard, weight=1.0)
            return self.likelihood_weight * integrated.log_marginal, integrated
        return self.likelihood_weight * self.log_likelihood(theta, shard), None

    def log_prior(self, theta: Float[Array, " p"]) -> Float[Array, ""]:
        """log p(x(θ)) + log |dx/dθ|, the untempered prior density of the sampled coordinates in
        θ (up to a constant)."""
        transform = self.sampled_transform()
        n = self.n_sampled
        x = transform.to_bounded(theta)
        gaussian = -0.5 * jnp.sum(self.prior_precision[:n] * (x - self.prior_mean[:n]) ** 2)
        return gaussian + transform.log_abs_det_jacobian(theta)

    def __call__(self, theta: Float[Array, " p"], shard: ShardData) -> Float[Array, ""]:
        """log p_k(θ) = (1/K) log p(θ) + w · log L_k (module docstring)."""
        return self.density_and_conditional(theta, shard)[0]

    def density_and_conditional(
        self, theta: Float[Array, " p"], shard: ShardData
    ) -> tuple[Float[Array, ""], "ScalingConditional | None"]:
        """log p_k(θ) and, with `marginal_scaling`, the scaling conditional at w = 1 that its
        integrated likelihood came from (None otherwise): one evaluation serves both where a
        caller needs the two (`jax.grad(..., has_aux=True)` in the Laplace step)."""
        likelihood, conditional = self._weighted_log_likelihood_and_conditional(theta, shard)
        value = self.tempering * self.log_prior(theta) + likelihood
        return jnp.where(jnp.isnan(value), -jnp.inf, value), conditional


class ScalingConditional(NamedTuple):
    """The scaling coefficients α given the physics, in one shard (`conditional_scaling`).

    **Fields:** `precision` Q and `mean` Q⁻¹r of α | θ ~ N(Q⁻¹r, Q⁻¹); `factor`, the lower
    Cholesky factor of D⁻¹QD⁻¹ with `scale` D = √diag(Q); `log_marginal` = log ∫ e^{−½(αᵀQα −
    2rᵀα + c)} dα up to a constant, = −½ (c − rᵀQ⁻¹r) − ½ log det Q.
    """

    precision: Float[Array, "c c"]
    mean: Float[Array, " c"]
    factor: Float[Array, "c c"]
    scale: Float[Array, " c"]
    log_marginal: Float[Array, ""]


def scaling_sums(
    posterior: ShardPosterior, physics: Float[Array, " k"], shard: ShardData
) -> Float[Array, "phi 6"]:
    """Per map the precision-weighted sums Σ P [g², g, 1, g·y, y, y²] over one shard's entries,
    y = c2 − fixed offset − fixed contrast · g (`_problem.coefficient_system` takes the first
    five)."""
    problem = posterior.problem
    normalised = posterior.normalised_values(physics, shard)
    angle = shard.angle_index
    fixed_offset = problem.fixed_offset[angle][:, None, None]
    fixed_contrast = problem.fixed_contrast[angle][:, None, None]
    y = shard.observed - fixed_offset - fixed_contrast * normalised
    precision = shard.precision
    weighted = precision * normalised
    per_tile = jnp.stack(
        [
            weighted * normalised,
            weighted,
            precision,
            weighted * y,
            precision * y,
            precision * y * y,
        ],
        axis=-1,
    ).sum(axis=(-3, -2))
    return jax.ops.segment_sum(per_tile, angle, num_segments=problem.q.shape[0])


def scaling_prior(posterior: ShardPosterior) -> tuple[Float[Array, " c"], Float[Array, " c"]]:
    """(Λ/K, μ): the tempered Gaussian prior of the scaling coefficients when they are
    integrated out.

    The box prior of a coefficient (uniform on [l, u]) is replaced by the Gaussian of the same
    mean and variance, μ = (l + u)/2 and 1/Λ = (u − l)²/12 (none for an open side); an
    informed prior (`priors="informed"`) multiplies it. Where the data determine the
    coefficients (w H ≫ Λ) this changes nothing; where they do not (a map whose model is flat
    over the frames, so that its contrast and offset trade off freely), the integral stays
    bounded, as the box keeps it for the sampled coefficients, instead of growing without
    limit as det(w H) → 0. (Measured: without it, the shard mode search ran off to D0 → 0 on
    the 8-map ROI problem of `bench_cmc_roi.py`.)
    """
    k = posterior.problem.n_free_physics
    lower, upper = posterior.problem.transform.lower[k:], posterior.problem.transform.upper[k:]
    finite = jnp.isfinite(lower) & jnp.isfinite(upper)
    width = jnp.where(finite, upper - lower, 1.0)
    box_precision = jnp.where(finite, 12.0 / width**2, 0.0)
    box_mean = jnp.where(finite, 0.5 * (lower + upper), 0.0)
    informed, informed_mean = posterior.prior_precision[k:], posterior.prior_mean[k:]
    precision = box_precision + informed
    mean = (box_precision * box_mean + informed * informed_mean) / jnp.where(
        precision > 0, precision, 1.0
    )
    return posterior.tempering * precision, mean


def scaling_quadratic(posterior: ShardPosterior, sums: Float[Array, "phi 6"], weight=None):
    """(Q, r, c) of w · log L_k + (1/K) log p(α) = −½ (αᵀQα − 2rᵀα + c) in the scaling
    coefficients α (bounded values), from the sums of `scaling_sums` (summed over shards for
    the full data):

        Q = w H + Λ/K,   r = w f + (Λ/K) μ,   c = w Σ P y² + Σ (Λ/K) μ²,

    (H, f) the coefficients' normal equations (`coefficient_system`), w the likelihood weight,
    Λ and μ the prior's precision and mean (`scaling_prior`); `weight` replaces w when given."""
    hessian, right = coefficient_system(posterior.problem, sums[:, :5])
    weight = posterior.likelihood_weight if weight is None else weight
    prior_precision, prior_mean = scaling_prior(posterior)
    precision = weight * hessian + jnp.diag(prior_precision)
    target = weight * right + prior_precision * prior_mean
    constant = weight * jnp.sum(sums[:, 5]) + jnp.sum(prior_precision * prior_mean**2)
    return precision, target, constant


def conditional_of(precision, target, constant) -> ScalingConditional:
    """The `ScalingConditional` of the quadratic form (Q, r, c), by a Jacobi-scaled Cholesky
    factorisation."""
    scale = jnp.sqrt(jnp.diagonal(precision))
    factor = jnp.linalg.cholesky(precision / (scale[:, None] * scale[None, :]))
    whitened = jax.scipy.linalg.solve_triangular(factor, target / scale, lower=True)
    mean = jax.scipy.linalg.solve_triangular(factor.T, whitened, lower=False) / scale
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(factor))) + 2.0 * jnp.sum(jnp.log(scale))
    log_marginal = -0.5 * (constant - whitened @ whitened) - 0.5 * log_det
    return ScalingConditional(precision, mean, factor, scale, log_marginal)


def conditional_scaling(
    posterior: ShardPosterior, theta: Float[Array, " k"], shard: ShardData, weight=None
) -> ScalingConditional:
    """α | θ in one shard (the module docstring's marginalisation): c2 is linear in the scaling
    coefficients α, so with a flat (or Gaussian) prior on them the shard's exponent is a
    quadratic form in α (`scaling_quadratic`), integrated in closed form:

        ∫ L_k(θ, α)^w p(α)^{1/K} dα ∝ exp(−½ (c − rᵀQ⁻¹r)) · det(Q)^{−½}

    the box of α replaced by a Gaussian of its mean and variance (`scaling_prior`). `theta` is the
    physics θ at which the likelihood is evaluated (θ* with a curvature adjustment); `weight`
    replaces w when given.
    """
    physics = posterior.sampled_transform().to_bounded(theta)
    sums = scaling_sums(posterior, physics, shard)
    return conditional_of(*scaling_quadratic(posterior, sums, weight))


class AffinePreconditioner(eqx.Module):
    """θ = center + factor · z, the coordinates in which the sampler runs.

    **Fields:** `center` θ̂ `(*shard, p)`; `factor` L `(*shard, p, p)` (lower triangular), one
    per shard when they carry a leading shard axis.
    """

    center: Float[Array, "*shard p"]
    factor: Float[Array, "*shard p p"]

    def to_theta(self, z: Float[Array, "*batch p"]) -> Float[Array, "*batch p"]:
        """θ of z for one map (any leading batch shape of z)."""
        return self.center + z @ jnp.swapaxes(self.factor, -1, -2)

    def shards_to_theta(self, z: Float[Array, "shard *batch p"]) -> Float[Array, "shard *batch p"]:
        """θ of z with one map per shard (leading shard axis on z and on the fields)."""
        flat = z.reshape(z.shape[0], -1, z.shape[-1])
        theta = self.center[:, None, :] + jnp.einsum("kij,knj->kni", self.factor, flat)
        return theta.reshape(z.shape)


class WhitenedShard(eqx.Module):
    """A shard's data together with its own coordinates θ = m_k + L_k z (see `_coordinates`).

    **Fields:** `data` (`ShardData`), `preconditioner` (`AffinePreconditioner`), both with the
    same leading shard axis, or none for a single shard.
    """

    data: ShardData
    preconditioner: AffinePreconditioner


class PreconditionedPosterior(eqx.Module):
    """The shard density as a function of z: log p_k(m_k + L_k z), for a `WhitenedShard`.

    **Fields:** `posterior`, `(θ, ShardData) ↦ log p_k(θ)` (a `ShardPosterior`, or one seen
    through a change of coordinates such as `_coordinates.ShearedPosterior`).
    """

    posterior: Callable[..., Any]

    def __call__(self, z: Float[Array, " p"], shard: WhitenedShard) -> Float[Array, ""]:
        return self.posterior(shard.preconditioner.to_theta(z), shard.data)


def joint_gram(
    posterior: ShardPosterior,
    theta: Float[Array, " k"],
    coefficients: Float[Array, " c"],
    shard: ShardData,
) -> Float[Array, "k+c k+c"]:
    """Jᵀ P J of one shard with J = ∂c2/∂(θ, α): the physics θ in the sampler's coordinates
    (through θ* of a curvature adjustment), the scaling coefficients α as bounded values (c2
    is linear in them). Forward mode: one Jacobian, no reverse pass."""
    k = theta.shape[0]
    transform = posterior.sampled_transform()

    def values(v):
        physics = transform.to_bounded(posterior.likelihood_theta(v[:k]))
        return posterior.scaled_values(physics, v[k:], shard)

    jacobian = jax.jacfwd(values)(jnp.concatenate([theta, coefficients]))
    jacobian = jacobian.reshape(-1, jacobian.shape[-1])
    return jacobian.T @ (shard.precision.reshape(-1)[:, None] * jacobian)


def schur_physics(gram: Float[Array, "n n"], k: int) -> Float[Array, "k k"]:
    """G_θθ − G_θα G_αα⁻¹ G_αθ: the information about the first k coordinates with the others
    integrated out (for a Gaussian, exactly; the Gauss–Newton information of the marginal)."""
    reduced = gram[:k, :k] - gram[:k, k:] @ _jacobi_solve(gram[k:, k:], gram[k:, :k])
    return 0.5 * (reduced + reduced.T)


@eqx.filter_jit
def gauss_newton_information(
    posterior: ShardPosterior, theta: Float[Array, " p"], shards: ShardData
) -> Float[Array, "p p"]:
    """Σ over all shards of Jᵀ P J at θ (J = ∂c2/∂θ at each entry, P the precisions).

    The Fisher information of the full-data likelihood in θ; computed shard by shard
    (`lax.map`), so memory is one shard's Jacobian (L × p). With `marginal_scaling`, that of the
    full-data likelihood with the scaling coefficients integrated out: the Schur complement
    (`schur_physics`) of the joint information at the full-data best coefficients α*(θ*).
    """
    if posterior.marginal_scaling:
        return _marginal_information(posterior, theta, shards)

    def one(shard: ShardData) -> Float[Array, "p p"]:
        jacobian = jax.jacfwd(posterior.model_values)(theta, shard)
        jacobian = jacobian.reshape(-1, theta.shape[0])
        return jacobian.T @ (shard.precision.reshape(-1)[:, None] * jacobian)

    return jnp.sum(jax.lax.map(one, shards), axis=0)


@eqx.filter_jit
def joint_information(
    posterior: ShardPosterior, theta: Float[Array, " k"], shards: ShardData
) -> Float[Array, "n n"]:
    """Of a marginalised posterior: the full-data joint information Σ_shards Jᵀ P J over the
    physics θ and the scaling coefficients α (`joint_gram`), at θ and the full-data best
    coefficients α*(θ*) (unweighted, no prior)."""
    physics = posterior.sampled_transform().to_bounded(posterior.likelihood_theta(theta))
    sums = jnp.sum(jax.lax.map(lambda shard: scaling_sums(posterior, physics, shard), shards), 0)
    hessian, right = coefficient_system(posterior.problem, sums[:, :5])
    coefficients = _jacobi_solve(hessian, right)
    grams = jax.lax.map(lambda shard: joint_gram(posterior, theta, coefficients, shard), shards)
    return jnp.sum(grams, axis=0)


def _marginal_information(posterior: ShardPosterior, theta, shards: ShardData):
    return schur_physics(joint_information(posterior, theta, shards), theta.shape[0])
