"""Shard construction: every used pair exactly once, padding weight 0, fixed shapes, lag strata."""

import numpy as np
import pytest

from heterojax._cmc._shards import TILE, auto_shard_count, make_shards


def _mask(n_angles, n_times, diagonal):
    k = 0 if diagonal else 1
    upper = np.triu(np.ones((n_times, n_times), bool), k)
    return np.broadcast_to(upper, (n_angles, n_times, n_times))


def _entries(shards):
    out = []
    for s in range(shards.n_shards):
        out.append(np.stack(shards.entries(s), axis=1))
    return out


@pytest.mark.parametrize("strategy", ["random", "stratified"])
@pytest.mark.parametrize("n_times, diagonal, k", [(37, False, 3), (40, True, 4), (21, False, 1)])
def test_every_used_entry_lands_in_exactly_one_shard(strategy, n_times, diagonal, k):
    mask = _mask(2, n_times, diagonal)
    shards = make_shards(mask, k, strategy=strategy, seed=1)
    assert shards.n_shards == k
    entries = np.concatenate(_entries(shards))
    # No duplicates, and the union is exactly the mask.
    assert len({tuple(e) for e in entries}) == entries.shape[0] == mask.sum()
    rebuilt = np.zeros_like(mask)
    rebuilt[entries[:, 0], entries[:, 1], entries[:, 2]] = True
    np.testing.assert_array_equal(rebuilt, mask)
    # Only used entries (t1 < t2, or ≤ with the diagonal) carry weight, none past the grid.
    assert np.all(entries[:, 1] <= entries[:, 2]) and np.all(entries[:, 2] < n_times)
    assert shards.counts().sum() == mask.sum()


def test_shards_have_fixed_shapes_and_zero_weight_padding():
    mask = _mask(3, 50, False)
    shards = make_shards(mask, 7, seed=0)
    n_tiles = shards.weight.shape[1]
    for field in (shards.angle_index, shards.t1_start, shards.t2_start):
        assert field.shape == (7, n_tiles)
    assert shards.weight.shape == (7, n_tiles, TILE, TILE)
    tile_counts = np.asarray(shards.weight).sum(axis=(2, 3))
    # Diagonal tiles first, then tiles wholly above the diagonal; in each group the real tiles
    # (with weight) come first and padding (a shard's surplus slots) has none.
    split = shards.n_diagonal
    t1, t2 = np.asarray(shards.t1_start), np.asarray(shards.t2_start)
    assert np.all(t1[:, :split] == t2[:, :split])
    assert np.all(t2[:, split:] >= t1[:, split:] + TILE)
    for group in (tile_counts[:, :split], tile_counts[:, split:]):
        n_real = (group > 0).sum(axis=1)
        assert np.all(n_real.max() - n_real <= 1)
        for s in range(7):
            assert np.all(group[s, n_real[s] :] == 0)
    # Sizes are balanced to within one tile of points.
    counts = shards.counts()
    assert counts.max() - counts.min() <= TILE * TILE


def test_stratified_shards_see_every_lag_range_alike():
    mask = _mask(2, 96, False)
    k = 4
    shards = make_shards(mask, k, strategy="stratified", seed=3)
    lags = [np.asarray(shards.t2_start[s] - shards.t1_start[s]) // TILE for s in range(k)]
    weights = np.asarray(shards.weight).sum(axis=(2, 3)) > 0
    for low in range(0, 12, 3):
        counts = [np.sum((lag >= low) & (lag < low + 3) & w) for lag, w in zip(lags, weights)]
        assert max(counts) - min(counts) <= 1
    entries = np.concatenate(_entries(shards))
    assert set(entries[:, 2] - entries[:, 1]) == set(range(1, 96))
    # Every shard holds both short lags and lags near the maximum.
    for shard_entries in _entries(shards):
        lag = shard_entries[:, 2] - shard_entries[:, 1]
        assert lag.min() < TILE and lag.max() > 96 - 3 * TILE


def test_random_shards_differ_with_the_seed():
    mask = _mask(1, 64, False)
    first = make_shards(mask, 2, seed=0)
    second = make_shards(mask, 2, seed=1)
    assert not np.array_equal(np.asarray(first.t1_start), np.asarray(second.t1_start))


@pytest.mark.parametrize(
    "n_points, expected", [(100, 1), (39_999, 1), (40_000, 2), (59_700, 2), (10**9, 64)]
)
def test_auto_shard_count(n_points, expected):
    assert auto_shard_count(n_points) == expected


@pytest.mark.parametrize("side_by_side, expected", [(None, 5), (64, 5), (4, 4), (3, 1), (1, 1)])
def test_auto_shard_count_runs_no_more_shards_than_run_side_by_side(side_by_side, expected):
    # 100 000 points give K = 5 by size; shards that would wait for each other's cores are
    # slower than one shard on whole maps, so fewer than 4 side by side means one shard.
    assert auto_shard_count(100_000, side_by_side) == expected
    mask = _mask(1, 600, False)  # 179 700 pairs: 8 shards by size
    assert make_shards(mask, "auto", side_by_side=side_by_side).n_shards == (
        8 if side_by_side is None else min(8, side_by_side) if side_by_side >= 4 else 1
    )


def test_auto_on_small_data_is_one_shard():
    assert make_shards(_mask(2, 40, False), "auto").n_shards == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_shards": 0}, "positive integer"),
        ({"n_shards": "many"}, "'auto'"),
        ({"n_shards": True}, "positive integer"),
        ({"n_shards": 10_000}, "fewer shards"),
        ({"strategy": "blocks"}, "strategy"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_shards(_mask(1, 20, False), **kwargs)


def test_entries_below_the_diagonal_are_an_error():
    mask = np.ones((1, 10, 10), bool)
    with pytest.raises(ValueError, match="below the diagonal"):
        make_shards(mask, 1)


def test_empty_mask_is_an_error():
    with pytest.raises(ValueError, match="no used entries"):
        make_shards(np.zeros((1, 10, 10), bool), 1)
