"""Data shards for consensus Monte Carlo: the used (angle, t1, t2) entries split into K parts.

Every likelihood uses the entries of `XPCSData.mask` — the pairs t1 < t2 of every map, plus the
diagonal only when the data keep it (`diagonal == "none"`); entries below the diagonal (t1 > t2)
are the same pairs again and are not accepted. Sharding splits exactly those entries
into K disjoint groups: each used entry lands in exactly one shard, so no pair counts twice.

**Tiles.** Entries are grouped into b × b tiles of neighbouring frames, rows
[I·b, I·b + b) × columns [J·b, J·b + b) of one map with I ≤ J (b = `TILE` = 8). A tile's frames
are contiguous, so a likelihood gathers 2b grid values per tile and evaluates b² pairs by
broadcasting — vectorised arithmetic, about 8× faster on CPU than gathering every pair's
values one by one, for the same set of pairs. Each tile carries a weight per entry: 1 for a used
entry, 0 for the lower triangle of a diagonal tile, for entries past the last frame and for
padding tiles. Tiles without any used entry are dropped.

**Diagonal and off-diagonal tiles.** A tile with I < J lies wholly above the diagonal: every row
frame precedes every column frame, so the likelihood can split its pairs at one pivot frame and
evaluate b² pairs from 2b per-frame factors (`_posterior`). A diagonal tile (I = J) mixes orders and
uses the pair-by-pair formula. Every shard therefore stores its diagonal tiles first, then its
off-diagonal ones; both groups are padded to one common length over the shards (`n_diagonal` is
the length of the first group), so the split is a static slice.

**Shards** are sets of whole tiles, padded with zero-weight tiles to one common count, so that all
shards have the same shape and one compiled program serves them all (vmapped over shards).
The diagonal tiles are dealt to the shards in rounds of one tile per shard, then the off-diagonal
tiles (so that each group's tile counts differ by at most one). Order within each group:

- `"random"`: random order, fullest tiles first, each round of K tiles dealt fullest tile to
  emptiest shard (so that shard sizes differ by about one tile's points).
- `"stratified"`: by block lag J − I (ties in random order), so that in any range of lags the
  shards' tile counts differ by at most one: every shard sees the short lags (fast decays,
  fringes) and the long ones (baseline) alike.

`shards="auto"` picks

    K = clip(⌊n / 20 000⌋, 1, 64)    (n = number of used entries),

so every shard keeps at least ~20 000 data points — enough for each subposterior to be close to
Gaussian for the ≲ 30 parameters of a heterodyne fit (the Gaussian product of the consensus step
relies on it) — and small data (n < 40 000) are not split at all. Where only so many chains can
run side by side (`side_by_side` shards: this machine's cores over the chains a shard has, as
`fit_cmc` counts them), K is at most that many, and 1 when fewer than `MIN_SIDE_BY_SIDE` (4)
shards fit. Shards that wait for each other's cores save no time: the work of all shards is
that of one shard on the same tiles, and with the ROI model one shard is sampled on whole maps,
~2.6× cheaper per entry than tiles (measured inside NUTS, 8 maps × 150²: 62 ms a leapfrog step
for all the tiles, 24 ms on whole maps; `_fit._sampling_layout`) — and one shard's posterior is
exact, where a consensus product is exact only for Gaussian shards.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


SHARD_STRATEGIES = ("random", "stratified")
AUTO_POINTS_PER_SHARD = 20_000
AUTO_MAX_SHARDS = 64
MIN_SIDE_BY_SIDE = 4
TILE = 8


def auto_shard_count(n_points: int, side_by_side: int | None = None) -> int:
    """The number of shards chosen by `shards="auto"` (module docstring): K = clip(⌊n /
    20 000⌋, 1, 64), at most `side_by_side`, and 1 where `side_by_side` < `MIN_SIDE_BY_SIDE`.

    **Arguments:**

    - `n_points`: the number of used (angle, t1, t2) entries.
    - `side_by_side`: how many shards' chains can run at the same time; `None`: no bound.

    **Returns:** K, an integer in [1, 64].
    """
    k = int(np.clip(int(n_points) // AUTO_POINTS_PER_SHARD, 1, AUTO_MAX_SHARDS))
    if side_by_side is None:
        return k
    return min(k, int(side_by_side)) if int(side_by_side) >= MIN_SIDE_BY_SIDE else 1


class Shards(eqx.Module):
    """K equally shaped sets of b × b tiles of (angle, t1, t2) entries (module docstring).

    **Fields:**

    - `angle_index`: the map of each tile, shape `(shard, tile)`.
    - `t1_start`, `t2_start`: the first frame of each tile's rows (t1) and columns (t2).
    - `weight`: 1.0 for a used entry, 0.0 otherwise, shape `(shard, tile, b, b)`; entry
        (r, c) of a tile is the pair (t1_start + r, t2_start + c).
    - `n_times`: the number of frames N (tile frames past N − 1 have weight 0).
    - `strategy`: `"random"` or `"stratified"`.
    - `n_diagonal`: tiles `[:n_diagonal]` of every shard are diagonal tiles (t1_start =
        t2_start) or padding; the others lie above the diagonal (t2_start ≥ t1_start + b).
    """

    angle_index: Int[Array, "shard tile"]
    t1_start: Int[Array, "shard tile"]
    t2_start: Int[Array, "shard tile"]
    weight: Float[Array, "shard tile b b"]
    n_times: int = eqx.field(static=True)
    strategy: str = eqx.field(static=True)
    n_diagonal: int = eqx.field(static=True)

    @property
    def n_shards(self) -> int:
        """K, the number of shards."""
        return self.weight.shape[0]

    @property
    def tile(self) -> int:
        """b, the side of a tile."""
        return self.weight.shape[-1]

    def counts(self) -> np.ndarray:
        """The number of used entries in each shard."""
        return np.asarray(self.weight).sum(axis=(1, 2, 3)).astype(int)

    def entries(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(angle, t1, t2) index arrays of the used entries of one shard (for checks and plots)."""
        weight = np.asarray(self.weight[shard])
        tile, row, column = np.nonzero(weight > 0)
        angle = np.asarray(self.angle_index[shard])[tile]
        t1 = np.asarray(self.t1_start[shard])[tile] + row
        t2 = np.asarray(self.t2_start[shard])[tile] + column
        return angle, t1, t2


def _check_count(n_shards, n_tiles: int, n_points: int, side_by_side: int | None) -> int:
    if isinstance(n_shards, str):
        if n_shards != "auto":
            raise ValueError(f"`shards` must be 'auto' or a positive integer; got {n_shards!r}.")
        return min(auto_shard_count(n_points, side_by_side), n_tiles)
    if isinstance(n_shards, bool) or int(n_shards) != n_shards or int(n_shards) < 1:
        raise ValueError(f"`shards` must be 'auto' or a positive integer; got {n_shards!r}.")
    n_shards = int(n_shards)
    if n_shards > n_tiles:
        raise ValueError(
            f"`shards` = {n_shards} exceeds the number of {TILE}×{TILE} tiles of used data "
            f"({n_tiles}, holding {n_points} points); use fewer shards."
        )
    return n_shards


def make_shards(
    mask: np.ndarray,
    n_shards: int | str = "auto",
    *,
    strategy: str = "random",
    seed: int = 0,
    tile: int = TILE,
    side_by_side: int | None = None,
) -> Shards:
    """Splits the used entries of `mask` into K shards of tiles (module docstring).

    **Arguments:**

    - `mask`: boolean array `(phi, t, t)`, true for the entries every likelihood uses
        (`XPCSData.mask`).
    - `n_shards`: K, or `"auto"` for K = clip(⌊n / 20 000⌋, 1, 64) (`auto_shard_count`, with
        `side_by_side`).
    - `strategy`: `"random"` or `"stratified"` (by lag).
    - `seed`: seed of the NumPy generator that orders the tiles.
    - `tile`: b, the side of a tile.
    - `side_by_side`: with `"auto"`, how many shards' chains can run at the same time
        (`auto_shard_count`); `None` (default): no bound.

    **Returns:** a `Shards`.
    """
    mask = np.asarray(mask, bool)
    if mask.ndim != 3 or mask.shape[1] != mask.shape[2]:
        raise ValueError(f"`mask` must have shape (phi, t, t); got {mask.shape}.")
    if np.any(np.tril(mask, -1)):
        raise ValueError(
            "`mask` has entries below the diagonal (t1 > t2); a likelihood counts every pair "
            "once, so use the upper triangle (as `XPCSData.mask` does)."
        )
    if strategy not in SHARD_STRATEGIES:
        raise ValueError(f"`strategy` must be one of {SHARD_STRATEGIES}; got {strategy!r}.")
    if int(tile) < 1:
        raise ValueError(f"`tile` must be a positive integer; got {tile!r}.")
    n_angles, n_times = mask.shape[0], mask.shape[1]
    n_blocks = -(-n_times // tile)
    padded = np.zeros((n_angles, n_blocks * tile, n_blocks * tile), bool)
    padded[:, :n_times, :n_times] = mask
    # (angle, I, r, J, c) → (angle, I, J, r, c): the entries of every tile.
    tiles = padded.reshape(n_angles, n_blocks, tile, n_blocks, tile).transpose(0, 1, 3, 2, 4)
    angle, row_block, column_block = np.nonzero(tiles.any(axis=(3, 4)))
    n_tiles = angle.shape[0]
    if n_tiles == 0:
        raise ValueError("The data have no used entries to shard (the mask is empty).")
    n_points = int(mask.sum())
    k = _check_count(n_shards, n_tiles, n_points, side_by_side)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_tiles)
    points = tiles.sum(axis=(3, 4))[angle, row_block, column_block]
    if strategy == "random":
        # Fullest first (ties in random order): diagonal and edge tiles are partial.
        ordered = order[np.argsort(-points[order], kind="stable")]
    else:
        lag = column_block - row_block
        ordered = order[np.argsort(lag[order], kind="stable")]
    diagonal = row_block[ordered] == column_block[ordered]
    sections = []
    first_shard = 0
    held = np.zeros(k, dtype=np.int64)
    for group in (ordered[diagonal], ordered[~diagonal]):
        if strategy == "random":
            # Round by round, the fullest tiles of the round go to the emptiest shards.
            dealt = [[] for _ in range(k)]
            for start in range(0, group.shape[0], k):
                batch = group[start : start + k]
                for tile_index, s in zip(batch, np.argsort(held, kind="stable")):
                    dealt[s].append(tile_index)
                    held[s] += points[tile_index]
            dealt = [np.asarray(d, dtype=np.int64) for d in dealt]
        else:
            # In turn, continuing from the shard after the previous group's last one, so that
            # any range of lags is dealt evenly.
            dealt = [group[(s - first_shard) % k :: k] for s in range(k)]
            first_shard = (first_shard + group.shape[0]) % k
        length = max(g.shape[0] for g in dealt)
        chosen = np.zeros((k, length), dtype=np.int64)
        valid = np.zeros((k, length), bool)
        for s, part in enumerate(dealt):
            chosen[s, : part.shape[0]] = part
            chosen[s, part.shape[0] :] = group[0] if group.shape[0] else 0
            valid[s, : part.shape[0]] = True
        sections.append((chosen, valid))
    chosen = np.concatenate([c for c, _ in sections], axis=1)
    valid = np.concatenate([v for _, v in sections], axis=1)
    weight = tiles[angle[chosen], row_block[chosen], column_block[chosen]] & valid[..., None, None]
    return Shards(
        angle_index=jnp.asarray(angle[chosen], dtype=jnp.int32),
        t1_start=jnp.asarray(row_block[chosen] * tile, dtype=jnp.int32),
        t2_start=jnp.asarray(column_block[chosen] * tile, dtype=jnp.int32),
        weight=jnp.asarray(weight, dtype=float),
        n_times=n_times,
        strategy=strategy,
        n_diagonal=sections[0][0].shape[1],
    )
