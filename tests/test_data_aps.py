"""load_aps / save_aps: round trips in both layouts and the traps of real APS files.

Files for the traps are written here by hand with h5py, following
/work/shared/reference/aps-hdf5-layout.md, independently of heterojax's writer.
"""

import os
import warnings

import h5py
import numpy as np
import pytest

import heterojax as hj


def symmetric_maps(n_maps: int, n_frames: int, seed: int = 0) -> np.ndarray:
    """Random exactly symmetric maps with a distinct level per map (to identify them)."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n_maps, n_frames, n_frames))
    sym = np.triu(raw) + np.swapaxes(np.triu(raw, 1), 1, 2)
    return 1.0 + 0.1 * sym + np.arange(n_maps)[:, None, None]


def make_data(q, phi, n_frames=12, first_frame=1, dt=0.01, seed=0, diagonal="none"):
    q = np.asarray(q, float)
    phi = np.asarray(phi, float)
    t = dt * np.arange(first_frame, first_frame + n_frames)
    return hj.XPCSData(
        symmetric_maps(q.size, n_frames, seed), t, q=q, phi=phi, dt=dt, diagonal=diagonal
    )


def write_nexus_by_hand(
    path,
    maps,
    *,
    q_grid,
    phi_grid,
    mapping,
    processed_bins,
    frame_time=1e-3,
    stride=1,
    average=1,
    begin=0,
    triangle="upper",
):
    """A boost-corr-like file: float32 half matrices (lzf), compressed labels, subset bins."""
    cut = np.triu if triangle == "upper" else np.tril
    with h5py.File(path, "w") as h5:
        h5["/entry/instrument/detector_1/frame_time"] = frame_time
        h5["/xpcs/qmap/dynamic_v_list_dim0"] = np.asarray(q_grid, float)
        h5["/xpcs/qmap/dynamic_v_list_dim1"] = np.asarray(phi_grid, float)
        h5["/xpcs/qmap/dynamic_num_pts"] = np.array([len(q_grid), len(phi_grid)])
        h5["/xpcs/qmap/dynamic_index_mapping"] = np.asarray(mapping, np.int64)
        h5["/xpcs/twotime/processed_bins"] = np.asarray(processed_bins, np.int32)
        h5["/xpcs/twotime/config/stride_frame"] = stride
        h5["/xpcs/twotime/config/avg_frame"] = average
        h5["/xpcs/twotime/config/begin_frame"] = begin
        h5["/xpcs/twotime/config/end_frame"] = -1
        for i, full in enumerate(maps, start=1):
            h5.create_dataset(
                f"/xpcs/twotime/correlation_map/c2_{i:05d}",
                data=cut(full).astype(np.float32),
                chunks=full.shape,
                compression="lzf",
            )


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("layout", ["nexus", "legacy"])
@pytest.mark.parametrize("triangle", ["upper", "lower"])
def test_round_trip_is_exact_with_empty_bin_and_multi_q(tmp_path, layout, triangle):
    # Grid 2 q × 3 φ; (0.02, 0°) holds no map, so labels are compressed around it.
    q = [0.01, 0.01, 0.01, 0.02, 0.02]
    phi = [-60.0, 0.0, 60.0, -60.0, 60.0]
    data = make_data(q, phi, n_frames=9, first_frame=4, dt=0.005)
    path = tmp_path / "round.hdf"
    hj.save_aps(path, data, layout=layout, triangle=triangle)
    back = hj.load_aps(path, diagonal="none")
    np.testing.assert_array_equal(np.asarray(back.c2), np.asarray(data.c2))
    np.testing.assert_array_equal(np.asarray(back.t), np.asarray(data.t))
    np.testing.assert_array_equal(np.asarray(back.q), q)
    np.testing.assert_array_equal(np.asarray(back.phi), phi)
    assert float(back.dt) == 0.005
    assert back.metadata["layout"] == layout
    assert back.metadata["frames"] == (4, 12)
    assert set(back.metadata["triangles"]) == {triangle}
    if layout == "nexus":
        with h5py.File(path, "r") as h5:
            mapping = h5["/xpcs/qmap/dynamic_index_mapping"][()]
            assert mapping.tolist() == [0, 1, 2, 3, 5]  # natural index 4 = (0.02, 0°) is empty
            roi = h5["/xpcs/qmap/dynamic_roi_map"][()]
            assert sorted(np.unique(roi).tolist()) == [0, 1, 2, 3, 4, 5]


def test_round_trip_of_simulated_data_in_both_layouts(tmp_path, key):
    model = hj.HeterodyneModel().replace(D0_ref=2e3, D0_sample=5e3, v0=3e3)
    t = 0.002 * np.arange(1, 21)
    data = hj.simulate(
        model,
        t,
        q=np.array([0.01, 0.01, 0.02]),
        phi=np.array([0.0, 90.0, 45.0]),
        noise=0.02,
        key=key,
    )
    for layout in ("nexus", "legacy"):
        path = tmp_path / f"sim_{layout}.h5"
        hj.save_aps(path, data, layout=layout)
        back = hj.load_aps(path, diagonal="none")
        # Bin order is (q, φ): (0.01, 0), (0.01, 90), (0.02, 45), as simulated.
        np.testing.assert_array_equal(np.asarray(back.c2), np.asarray(data.c2))
        np.testing.assert_array_equal(np.asarray(back.t), t)
        assert back.sigma is None  # APS files have no place for σ


def test_float32_storage_round_trips_to_float32_precision(tmp_path):
    data = make_data([0.01, 0.01], [0.0, 90.0])
    path = tmp_path / "f32.hdf"
    hj.save_aps(path, data, dtype="float32")
    back = hj.load_aps(path, diagonal="none")
    assert back.c2.dtype == np.float64
    expected = np.asarray(data.c2).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(np.asarray(back.c2), expected)
    assert not np.array_equal(np.asarray(back.c2), np.asarray(data.c2))


def test_maps_are_returned_in_bin_order(tmp_path):
    data = make_data([0.02, 0.01], [0.0, 0.0])
    path = tmp_path / "order.hdf"
    hj.save_aps(path, data)
    back = hj.load_aps(path, diagonal="none")
    np.testing.assert_array_equal(np.asarray(back.q), [0.01, 0.02])
    np.testing.assert_array_equal(np.asarray(back.c2[0]), np.asarray(data.c2[1]))


# ----------------------------------------------------------------------------- the bin traps


def test_empty_bin_before_a_map_gives_the_right_phi(tmp_path):
    # Grid 2 q × 4 φ; bin (q0, -45°) is empty (beamstop), so labels 1..7 are compressed over the
    # natural indices [0, 2, 3, 4, 5, 6, 7]; only labels 2, 3, 5, 7 were processed.
    q_grid, phi_grid = [0.01, 0.02], [-135.0, -45.0, 45.0, 135.0]
    mapping = [0, 2, 3, 4, 5, 6, 7]
    processed = [2, 3, 5, 7]
    maps = symmetric_maps(4, 10)
    path = tmp_path / "gap_results.hdf"
    write_nexus_by_hand(
        path, maps, q_grid=q_grid, phi_grid=phi_grid, mapping=mapping, processed_bins=processed
    )
    data = hj.load_aps(path, diagonal="none")
    expected_natural = [mapping[label - 1] for label in processed]  # [2, 3, 5, 7]
    expected_q = [q_grid[n // 4] for n in expected_natural]
    expected_phi = [phi_grid[n % 4] for n in expected_natural]
    np.testing.assert_array_equal(np.asarray(data.q), expected_q)
    np.testing.assert_array_equal(np.asarray(data.phi), expected_phi)
    # The predecessor's divmod(label - 1, n_phi) would say otherwise for every map here.
    naive_phi = [phi_grid[(label - 1) % 4] for label in processed]
    assert all(a != b for a, b in zip(naive_phi, expected_phi))
    # Selecting φ = 45° at q = 0.01 returns the map stored for label 2 (c2_00001).
    picked = hj.load_aps(path, q=0.01, phi=45.0, diagonal="none")
    assert picked.metadata["maps"] == ("c2_00001",)
    np.testing.assert_allclose(np.asarray(picked.c2[0]), maps[0], rtol=1e-6)
    # Asking for the empty bin's angle finds nothing near at that q.
    with pytest.raises(ValueError, match="no map within 45° of φ = -45°"):
        hj.load_aps(path, q=0.01, phi=-45.0)


def test_missing_index_mapping_falls_back_with_a_warning(tmp_path):
    path = tmp_path / "nomap.hdf"
    write_nexus_by_hand(
        path,
        symmetric_maps(2, 6),
        q_grid=[0.01],
        phi_grid=[0.0, 90.0],
        mapping=[0, 1],
        processed_bins=[1, 2],
    )
    with h5py.File(path, "a") as h5:
        del h5["/xpcs/qmap/dynamic_index_mapping"]
    with pytest.warns(UserWarning, match="dynamic_index_mapping"):
        data = hj.load_aps(path)
    np.testing.assert_array_equal(np.asarray(data.phi), [0.0, 90.0])


def write_legacy_by_hand(path, maps, names, *, dqlist, dphilist, qphi=None, lower=False):
    with h5py.File(path, "w") as h5:
        h5["/xpcs/dqlist"] = np.asarray(dqlist, float)[None, :]
        h5["/xpcs/dphilist"] = np.asarray(dphilist, float)[None, :]
        h5["/measurement/instrument/detector/exposure_period"] = np.array([[0.002]])
        if qphi is not None:
            h5["/xpcs/qphi_bin_to_process"] = np.asarray(qphi, float)[None, :]
        for name, full in zip(names, maps):
            h5[f"/exchange/C2T_all/{name}"] = np.tril(full) if lower else np.triu(full)


def test_legacy_sequential_names_are_ordered_as_integers(tmp_path):
    # 12 maps named g2_1 … g2_12 without zero padding: as strings "g2_10" < "g2_2".
    n = 12
    dqlist = 0.001 * np.arange(1, 31)  # 30 dq bins
    dphilist = np.linspace(-170, 170, 30)
    qphi = np.arange(30, 30 - n, -1)  # labels 30, 29, …, 19: map k belongs to label 31 − k
    maps = symmetric_maps(n, 5)
    path = tmp_path / "legacy_seq.hdf"
    write_legacy_by_hand(
        path,
        maps,
        [f"g2_{k}" for k in range(1, n + 1)],
        dqlist=dqlist,
        dphilist=dphilist,
        qphi=qphi,
    )
    data = hj.load_aps(path, diagonal="none")
    assert data.metadata["maps"] == tuple(f"g2_{k}" for k in range(1, n + 1))
    np.testing.assert_array_equal(np.asarray(data.q), dqlist[qphi - 1])
    np.testing.assert_array_equal(np.asarray(data.phi), dphilist[qphi - 1])
    np.testing.assert_array_equal(np.asarray(data.c2), maps)
    assert float(data.dt) == 0.002


def test_legacy_label_names_g2_00010_after_g2_00009(tmp_path):
    # Numbers are dq labels (no qphi_bin_to_process): g2_00009 → dq bin 9, g2_00010 → bin 10.
    dqlist = 0.001 * np.arange(1, 13)
    dphilist = 10.0 * np.arange(12)
    maps = symmetric_maps(3, 4)
    path = tmp_path / "legacy_label.hdf"
    write_legacy_by_hand(
        path,
        maps,
        ["g2_00010", "g2_00009", "g2_00002"],
        dqlist=dqlist,
        dphilist=dphilist,
        lower=True,
    )
    data = hj.load_aps(path, diagonal="none")
    assert data.metadata["maps"] == ("g2_00002", "g2_00009", "g2_00010")
    assert data.metadata["bins"] == (2, 9, 10)
    np.testing.assert_array_equal(np.asarray(data.phi), [10.0, 80.0, 90.0])
    np.testing.assert_array_equal(np.asarray(data.c2), maps[[2, 1, 0]])
    assert set(data.metadata["triangles"]) == {"lower"}


def test_legacy_label_names_written_by_save_aps(tmp_path):
    data = make_data([0.01, 0.01, 0.02], [0.0, 90.0, 0.0])
    path = tmp_path / "labels.hdf"
    hj.save_aps(path, data, layout="legacy", legacy_names="label", triangle="lower")
    with h5py.File(path, "r") as h5:
        assert sorted(h5["/exchange/C2T_all"]) == ["g2_00001", "g2_00002", "g2_00003"]
        assert "/xpcs/qphi_bin_to_process" not in h5
    back = hj.load_aps(path, diagonal="none")
    np.testing.assert_array_equal(np.asarray(back.c2), np.asarray(data.c2))
    assert back.metadata["pairing"] == "number is the dq label"


# ----------------------------------------------------------------------------- selection


def test_multi_q_selection(tmp_path):
    q = np.repeat([0.010, 0.020, 0.030], 2)
    phi = np.tile([0.0, 90.0], 3)
    path = tmp_path / "multiq.hdf"
    hj.save_aps(path, make_data(q, phi))
    nearest = hj.load_aps(path, q=0.0212)
    np.testing.assert_array_equal(np.asarray(nearest.q), [0.02, 0.02])
    np.testing.assert_array_equal(np.asarray(nearest.phi), [0.0, 90.0])
    two = hj.load_aps(path, q=[0.0099, 0.031], phi=90.0)
    np.testing.assert_array_equal(np.asarray(two.q), [0.01, 0.03])
    np.testing.assert_array_equal(np.asarray(two.phi), [90.0, 90.0])
    wide = hj.load_aps(path, q=0.02, q_tolerance=0.0101)
    assert wide.n_angles == 6
    narrow = hj.load_aps(path, q=0.02, q_tolerance=0.001)
    assert narrow.n_angles == 2
    # Just beyond half a bin spacing above the last bin: nothing near.
    with pytest.raises(
        ValueError, match=r"nothing near q = 0\.0351.*available q: \[0\.01, 0\.02, 0\.03\]"
    ):
        hj.load_aps(path, q=0.0351)


def test_phi_selection_lists_nearest_and_wrapping_ranges(tmp_path):
    phi = np.array([-170.0, -90.0, 0.0, 90.0, 175.0])
    path = tmp_path / "phi.hdf"
    data = make_data(np.full(5, 0.01), phi)
    hj.save_aps(path, data)
    assert np.asarray(hj.load_aps(path, phi=[92.0, -3.0]).phi).tolist() == [0.0, 90.0]
    # 185° is -175° on the circle: nearest to -170 (5° away), not to 175 (10° away).
    assert np.asarray(hj.load_aps(path, phi=185.0, phi_tolerance=20).phi).tolist() == [-170.0]
    across = hj.load_aps(path, phi=[(170.0, -160.0)])
    assert np.asarray(across.phi).tolist() == [-170.0, 175.0]
    around_zero = hj.load_aps(path, phi=[(-100.0, 10.0)])
    assert np.asarray(around_zero.phi).tolist() == [-90.0, 0.0]
    mixed = hj.load_aps(path, phi=[90.0, (170.0, 180.0)])
    assert np.asarray(mixed.phi).tolist() == [90.0, 175.0]


def test_frames_window_gives_absolute_times_and_the_right_block(tmp_path):
    data = make_data([0.01], [0.0], n_frames=30, first_frame=11, dt=0.004)
    path = tmp_path / "frames.hdf"
    hj.save_aps(path, data)
    window = hj.load_aps(path, frames=(15, 22), diagonal="none")
    np.testing.assert_allclose(np.asarray(window.t), 0.004 * np.arange(15, 23), rtol=1e-15)
    np.testing.assert_array_equal(np.asarray(window.c2[0]), np.asarray(data.c2[0, 4:12, 4:12]))
    assert window.metadata["frames"] == (15, 22)
    assert window.metadata["frames_in_file"] == (11, 40)
    with h5py.File(path, "r") as h5:
        assert h5["/xpcs/twotime/config/begin_frame"][()] == 10  # 0-based raw frame of row 0


def test_interpolated_diagonal_uses_the_window_only(tmp_path):
    data = make_data([0.01], [0.0], n_frames=20)
    path = tmp_path / "diag.hdf"
    hj.save_aps(path, data)
    raw = np.asarray(data.c2[0, 4:12, 4:12])
    got = np.asarray(hj.load_aps(path, frames=(5, 12)).c2[0])
    expected = raw.copy()
    for i in range(8):
        neighbours = (
            [raw[i, i + 1]]
            if i == 0
            else [raw[i - 1, i]]
            if i == 7
            else [raw[i, i + 1], raw[i - 1, i]]
        )
        expected[i, i] = np.mean(neighbours)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    assert got[0, 0] == raw[0, 1]  # the row before the window does not enter
    masked = hj.load_aps(path, frames=(5, 12), diagonal="mask")
    np.testing.assert_array_equal(np.asarray(masked.c2[0]), raw)
    assert masked.diagonal == "mask" and not bool(np.any(np.diagonal(masked.mask[0])))
    assert masked.n_points == 8 * 7 // 2
    kept = hj.load_aps(path, frames=(5, 12), diagonal="none")
    assert bool(np.all(np.diagonal(kept.mask[0]))) and kept.n_points == 8 * 9 // 2


def test_binning_and_begin_frame_set_dt_and_the_time_origin(tmp_path):
    path = tmp_path / "binned.hdf"
    write_nexus_by_hand(
        path,
        symmetric_maps(1, 6),
        q_grid=[0.01],
        phi_grid=[0.0],
        mapping=[0],
        processed_bins=[1],
        frame_time=1e-3,
        stride=2,
        average=3,
        begin=12,
    )
    data = hj.load_aps(path)
    assert float(data.dt) == pytest.approx(6e-3, rel=1e-15)
    # begin_frame 12 (0-based raw) = 2 binned frames before row 0, so row 0 is frame 3.
    np.testing.assert_allclose(np.asarray(data.t), 6e-3 * np.arange(3, 9), rtol=1e-15)
    assert data.metadata["frames"] == (3, 8)
    overridden = hj.load_aps(path, dt=0.5)
    np.testing.assert_array_equal(np.asarray(overridden.t), 0.5 * np.arange(3, 9))
    assert overridden.metadata["dt_source"] == "argument"


def test_begin_frame_not_a_multiple_of_the_binning_warns(tmp_path):
    path = tmp_path / "offgrid.hdf"
    write_nexus_by_hand(
        path,
        symmetric_maps(1, 4),
        q_grid=[0.01],
        phi_grid=[0.0],
        mapping=[0],
        processed_bins=[1],
        stride=1,
        average=4,
        begin=6,
    )
    with pytest.warns(UserWarning, match="not a multiple of the frame binning 4"):
        data = hj.load_aps(path)
    assert data.metadata["frames"] == (2, 5)


def test_config_absent_means_row_n_is_frame_n_plus_one(tmp_path):
    path = tmp_path / "noconfig.hdf"
    write_nexus_by_hand(
        path,
        symmetric_maps(1, 5),
        q_grid=[0.01],
        phi_grid=[0.0],
        mapping=[0],
        processed_bins=[1],
        frame_time=0.25,
    )
    with h5py.File(path, "a") as h5:
        del h5["/xpcs/twotime/config"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = hj.load_aps(path)
    np.testing.assert_array_equal(np.asarray(data.t), 0.25 * np.arange(1, 6))


def test_lower_triangle_float32_file_is_rebuilt(tmp_path):
    maps = symmetric_maps(2, 7)
    path = tmp_path / "lower.hdf"
    write_nexus_by_hand(
        path,
        maps,
        q_grid=[0.01],
        phi_grid=[0.0, 90.0],
        mapping=[0, 1],
        processed_bins=[1, 2],
        triangle="lower",
    )
    data = hj.load_aps(path, diagonal="none")
    np.testing.assert_array_equal(np.asarray(data.c2), maps.astype(np.float32).astype(np.float64))
    assert data.metadata["triangles"] == ("lower", "lower")


def test_loading_reads_only_and_writes_nothing(tmp_path):
    path = tmp_path / "ro.hdf"
    hj.save_aps(path, make_data([0.01], [0.0]))
    os.chmod(path, 0o444)
    before = (sorted(os.listdir(tmp_path)), os.stat(path).st_mtime_ns, path.read_bytes())
    hj.load_aps(path, frames=(2, 6))
    hj.load(path, phi=0.0)
    after = (sorted(os.listdir(tmp_path)), os.stat(path).st_mtime_ns, path.read_bytes())
    assert before == after


def test_unselected_maps_are_never_read(tmp_path):
    # Map c2_00002 keeps its data in an external raw file, which is then deleted: any read of it
    # fails, while its shape (metadata) stays known. Loading the other maps must not touch it.
    maps = symmetric_maps(3, 6)
    path = tmp_path / "external.hdf"
    write_nexus_by_hand(
        path,
        maps,
        q_grid=[0.01, 0.02, 0.03],
        phi_grid=[0.0],
        mapping=[0, 1, 2],
        processed_bins=[1, 2, 3],
    )
    raw = tmp_path / "map2.raw"
    np.triu(maps[1]).astype("<f4").tofile(raw)
    with h5py.File(path, "a") as h5:
        del h5["/xpcs/twotime/correlation_map/c2_00002"]
        h5.create_dataset(
            "/xpcs/twotime/correlation_map/c2_00002",
            shape=(6, 6),
            dtype="<f4",
            external=[(str(raw), 0, raw.stat().st_size)],
        )
    assert hj.load_aps(path, q=0.02).metadata["maps"] == ("c2_00002",)  # readable while it exists
    raw.unlink()
    with pytest.raises(
        ValueError, match="'external.hdf' is damaged"
    ):  # a read error names the file
        hj.load_aps(path, q=0.02)
    data = hj.load_aps(path, q=[0.01, 0.03], diagonal="none")
    assert data.metadata["maps"] == ("c2_00001", "c2_00003")
    np.testing.assert_array_equal(np.asarray(data.c2), maps[[0, 2]].astype(np.float32))
