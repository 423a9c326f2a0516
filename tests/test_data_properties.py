"""Property tests: half-matrix rebuild, diagonal interpolation, selection rules, round trips."""

import os
import tempfile

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import heterojax as hj
from heterojax._data._diagonal import interpolate_diagonal
from heterojax._data._half_matrix import rebuild, which_triangle
from heterojax._data._selection import (
    circular_distance,
    frame_window,
    in_arc,
    select_maps,
    select_phi,
    select_q,
)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False)
angles = st.floats(-720.0, 720.0, allow_nan=False)


@st.composite
def symmetric_matrices(draw, min_side=2, max_side=12, dtype=np.float64):
    n = draw(st.integers(min_side, max_side))
    raw = draw(hnp.arrays(dtype, (n, n), elements=finite.map(lambda x: float(dtype(x)))))
    return np.triu(raw) + np.triu(raw, 1).T


# ----------------------------------------------------------------------------- half matrices


@settings(deadline=None)
@given(symmetric_matrices(), st.sampled_from(["upper", "lower"]), st.data())
def test_rebuild_of_any_window_of_a_half_matrix_is_exact(full, triangle, data):
    half = np.triu(full) if triangle == "upper" else np.tril(full)
    n = full.shape[0]
    start = data.draw(st.integers(0, n - 2))
    stop = data.draw(st.integers(start + 2, n))
    window = half[start:stop, start:stop]
    np.testing.assert_array_equal(rebuild(window), full[start:stop, start:stop])
    assert which_triangle(window) in (triangle, "diagonal")


@settings(deadline=None)
@given(symmetric_matrices(dtype=np.float32))
def test_float32_half_matrices_widen_exactly(full):
    rebuilt = rebuild(np.triu(full).astype(np.float32))
    assert rebuilt.dtype == np.float64
    np.testing.assert_array_equal(rebuilt, full.astype(np.float64))


@settings(deadline=None)
@given(symmetric_matrices(min_side=3))
def test_triangle_detection(full):
    upper_filled = np.any(np.triu(full, 1))
    assume(upper_filled)
    assert which_triangle(np.triu(full)) == "upper"
    assert which_triangle(np.tril(full)) == "lower"
    assert which_triangle(full) == "full"
    np.testing.assert_array_equal(rebuild(full), full)


@settings(deadline=None)
@given(symmetric_matrices(min_side=2))
def test_interpolated_diagonal_against_a_plain_loop(full):
    n = full.shape[0]
    expected = full.copy()
    for i in range(n):
        neighbours = []
        if i + 1 < n:
            neighbours.append(full[i, i + 1])
        if i > 0:
            neighbours.append(full[i - 1, i])
        expected[i, i] = sum(neighbours) / len(neighbours)
    got = full.copy()[None]
    interpolate_diagonal(got)
    np.testing.assert_allclose(got[0], expected, rtol=1e-15, atol=0)
    off = ~np.eye(n, dtype=bool)
    np.testing.assert_array_equal(got[0][off], full[off])  # only the diagonal changes
    again = got.copy()
    interpolate_diagonal(again)
    np.testing.assert_array_equal(again, got)  # idempotent: it reads off-diagonals only


# ----------------------------------------------------------------------------- angles


@given(angles, angles)
def test_circular_distance_is_a_distance_on_the_circle(a, b):
    d = float(circular_distance(np.array(a), b))
    assert 0.0 <= d <= 180.0
    assert d == pytest.approx(float(circular_distance(np.array(b), a)), abs=1e-9)
    assert d == pytest.approx(float(circular_distance(np.array(a + 360.0), b)), abs=1e-9)


@given(angles, st.floats(-180, 180), st.floats(0.5, 359.0))
def test_arcs_wrap_around(angle, start, width):
    stop = start + width
    inside = bool(in_arc(np.array([angle]), start, stop)[0])
    # The same arc written with the stop angle shifted by whole turns, or wrapped across ±180.
    assert inside == bool(in_arc(np.array([angle]), start, stop - 360.0)[0])
    assert inside == bool(in_arc(np.array([angle + 360.0]), start + 720.0, stop)[0])
    offset = (angle - start) % 360.0
    assume(1e-6 < offset < 360 - 1e-6 and abs(offset - width) > 1e-6)
    assert inside == (offset < width)
    # Away from the end points every angle lies on exactly one of the two complementary arcs.
    assert inside != bool(in_arc(np.array([angle]), stop, start)[0])


# ----------------------------------------------------------------------------- selection


@st.composite
def partitions(draw):
    """A (q, φ) grid with some bins empty, and the maps of the non-empty ones."""
    n_q = draw(st.integers(1, 4))
    n_phi = draw(st.integers(1, 8))
    q_grid = np.cumsum(draw(hnp.arrays(float, n_q, elements=st.floats(0.001, 0.01)))) + 0.001
    q_grid = np.round(q_grid, 6)
    assume(np.unique(q_grid).size == n_q)
    phi_grid = -180.0 + (np.arange(n_phi) + 0.5) * 360.0 / n_phi
    filled = draw(hnp.arrays(bool, n_q * n_phi, elements=st.booleans()))
    assume(filled.any())
    natural = np.flatnonzero(filled)
    return q_grid, phi_grid, q_grid[natural // n_phi], phi_grid[natural % n_phi]


@settings(deadline=None)
@given(partitions(), st.floats(-200.0, 200.0))
def test_nearest_angle_per_q_against_brute_force(partition, request):
    q_grid, phi_grid, q_map, phi_map = partition
    tolerance = 0.5 * (360.0 / phi_grid.size) if phi_grid.size > 1 else 180.0
    everything = np.ones(q_map.size, bool)
    expected = np.zeros(q_map.size, bool)
    for q_value in np.unique(q_map):
        group = np.flatnonzero(q_map == q_value)
        distances = np.abs((phi_map[group] - request + 180.0) % 360.0 - 180.0)
        best = group[np.argmin(distances)]
        if distances.min() <= tolerance + 1e-9:
            expected[best] = True
    if not expected.any():
        with pytest.raises(ValueError, match="available φ"):
            select_phi(q_map, phi_map, request, candidates=everything, grid=phi_grid)
        return
    got = select_phi(q_map, phi_map, request, candidates=everything, grid=phi_grid)
    np.testing.assert_array_equal(got, expected)
    # Whatever is chosen is the bin whose sector holds the request.
    chosen = phi_map[got]
    assert np.all(circular_distance(chosen, request) <= tolerance + 1e-9)


@settings(deadline=None)
@given(partitions(), st.data())
def test_q_inside_the_grid_selects_the_nearest_bin(partition, data):
    q_grid, _, q_map, _ = partition
    request = data.draw(st.floats(float(q_grid.min()), float(q_grid.max())))
    nearest = q_grid[np.argmin(np.abs(q_grid - request))]
    if not np.any(q_map == nearest):
        with pytest.raises(ValueError, match="holds no map"):
            select_q(q_map, request, grid=q_grid)
        return
    got = select_q(q_map, request, grid=q_grid)
    np.testing.assert_array_equal(got, q_map == nearest)


@settings(deadline=None)
@given(partitions(), st.floats(0.0, 0.01), st.floats(0.001, 0.05))
def test_q_tolerance_keeps_exactly_the_maps_within_it(partition, tolerance, request):
    _, _, q_map, phi_map = partition
    inside = np.abs(q_map - request) <= tolerance
    if not inside.any():
        with pytest.raises(ValueError, match="available q"):
            select_maps(q_map, phi_map, q=request, q_tolerance=tolerance)
        return
    got = select_maps(q_map, phi_map, q=request, q_tolerance=tolerance)
    np.testing.assert_array_equal(got, np.flatnonzero(inside))


@given(st.integers(1, 50), st.integers(2, 40), st.data())
def test_frame_windows(first_frame, n_frames, data):
    last_frame = first_frame + n_frames - 1
    first = data.draw(st.integers(first_frame, last_frame - 1))
    last = data.draw(st.integers(first + 1, last_frame))
    start, stop, got_first, got_last = frame_window(
        (first, last), first_frame=first_frame, n_frames=n_frames
    )
    assert (got_first, got_last) == (first, last)
    rows = np.arange(n_frames)[start:stop]
    np.testing.assert_array_equal(first_frame + rows, np.arange(first, last + 1))


# ----------------------------------------------------------------------------- round trips


@settings(deadline=None, max_examples=15)
@given(
    partitions(),
    st.integers(2, 7),
    st.integers(1, 30),
    st.sampled_from(["nexus", "legacy"]),
    st.sampled_from(["upper", "lower"]),
    st.data(),
)
def test_round_trip_any_partition(partition, n_frames, first_frame, layout, triangle, data):
    q_grid, phi_grid, q_map, phi_map = partition
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    raw = rng.normal(size=(q_map.size, n_frames, n_frames))
    c2 = 1.0 + np.triu(raw) + np.swapaxes(np.triu(raw, 1), 1, 2)
    dt = 0.003
    t = dt * np.arange(first_frame, first_frame + n_frames)
    original = hj.XPCSData(c2, t, q=q_map, phi=phi_map, dt=dt)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "prop.hdf")
        hj.save_aps(
            path, original, layout=layout, triangle=triangle, q_grid=q_grid, phi_grid=phi_grid
        )
        back = hj.load_aps(path, diagonal="none")
        np.testing.assert_array_equal(np.asarray(back.c2), c2)
        np.testing.assert_array_equal(np.asarray(back.q), q_map)
        np.testing.assert_array_equal(np.asarray(back.phi), phi_map)
        np.testing.assert_array_equal(np.asarray(back.t), t)
        # Selecting one angle by value finds exactly the maps at that angle.
        angle = float(phi_map[0])
        picked = hj.load_aps(path, phi=angle, diagonal="none")
        np.testing.assert_array_equal(np.asarray(picked.phi), np.full(picked.n_angles, angle))
        assert picked.n_angles == int(np.sum(phi_map == angle))
