"""Bin geometry on data: loaders build it from the q map or bin spans, selection carries it,
`save_aps` writes it, `simulate` uses it, and the quality report asks for it (issue 7, items 1,
2, 4d, 5).

Files for the loaders are also written here by hand with h5py (independently of heterojax's
writer), with pixel q and φ computed here by the APS convention: φ = −atan2(row − bcy,
col − bcx), q = 4π/λ sin(½ atan(r·p/d)), λ = 12.398/E.
"""

import h5py
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._quality import build_quality_report


MODEL = hj.HeterodyneModel.from_dict(dict(D0_ref=50.0, D0_sample=2e3, v0=300.0, f0=0.3, phi0=20.0))
T = 0.01 * np.arange(1, 31)


def pixel_q_phi(shape, bcx, bcy, pixel, distance, energy):
    rows, cols = np.indices(shape, dtype=float)
    dy, dx = rows - bcy, cols - bcx
    q = 4 * np.pi / (12.398 / energy) * np.sin(0.5 * np.arctan(np.hypot(dx, dy) * pixel / distance))
    return q, -np.rad2deg(np.arctan2(dy, dx))


def simulated(q, phi, q_width, phi_width):
    return hj.simulate(MODEL, T, q=q, phi=phi, q_width=q_width, phi_width=phi_width)


def test_simulate_uses_and_carries_the_geometry():
    q, phi = np.array([0.02, 0.02]), np.array([0.0, 90.0])
    data = simulated(q, phi, 0.3 * q, 45.0)
    assert data.bins is not None and data.bins.adaptive and data.bins.n_maps == 2
    used = data.bins.for_model(MODEL, T)
    assert data.metadata["roi"] == {"source": "widths", "nodes": used.grid}
    expected = MODEL.c2(T, q=q, phi=phi, bins=used)
    np.testing.assert_allclose(data.c2, expected, atol=1e-15)
    centre = hj.simulate(MODEL, T, q=q, phi=phi)
    assert centre.bins is None and centre.metadata["roi"] is None
    assert np.max(np.abs(np.asarray(data.c2 - centre.c2))) > 3e-3
    with pytest.raises(ValueError, match="either"):
        hj.simulate(MODEL, T, q=q, phi=phi, q_width=0.001, bins=data.bins)
    with pytest.raises(ValueError, match="2 bins for 1 angles"):
        hj.simulate(MODEL, T, q=0.02, phi=0.0, bins=data.bins)


def test_with_bins_checks_and_replaces():
    data = simulated(np.array([0.02, 0.02]), np.array([0.0, 90.0]), 0.004, 30.0)
    bare = data.with_bins(None)
    assert bare.bins is None and np.array_equal(bare.c2, data.c2)
    assert bare.with_bins(data.bins).bins is data.bins
    with pytest.raises(ValueError, match="one bin per map"):
        data.with_bins(data.bins.take([0]))  # pyright: ignore[reportOptionalMemberAccess]
    with pytest.raises(TypeError, match="BinGeometry"):
        data.with_bins("wide")  # pyright: ignore[reportArgumentType]


def test_save_load_round_trip_rebuilds_the_geometry_from_pixels(tmp_path):
    # 2 q × 3 φ grid with one empty bin, 45° sectors and ±15 % rings.
    q = np.array([0.01, 0.01, 0.02, 0.02, 0.02])
    phi = np.array([-45.0, 45.0, -45.0, 0.0, 45.0])
    data = simulated(q, phi, 0.3 * q, 45.0)
    path = tmp_path / "roi.hdf"
    hj.save_aps(path, data)
    loaded = hj.load_aps(path, diagonal="none")
    assert loaded.bins is not None and loaded.bins.source == "pixels"
    assert loaded.metadata["bin_geometry"] == "pixels"
    np.testing.assert_allclose(loaded.c2, data.c2)

    # The geometry is the rule of the written pixels, computed independently here.
    with h5py.File(path, "r") as h5:
        qmap = h5["/xpcs/qmap"]
        roi_map = qmap["dynamic_roi_map"][()]
        geometry = [
            float(qmap[k][()])
            for k in ("beam_center_x", "beam_center_y", "pixel_size", "detector_distance")
        ]
        energy = float(h5["/entry/instrument/incident_beam/incident_energy"][()])
        labels = h5["/xpcs/twotime/processed_bins"][()]
    q_pix, phi_pix = pixel_q_phi(roi_map.shape, *geometry, energy)
    pixels = [roi_map == label for label in labels]
    assert min(p.sum() for p in pixels) > 200
    expected = hj.BinGeometry.from_pixels(
        [q_pix[p] for p in pixels], [phi_pix[p] for p in pixels], phi_centre=loaded.phi
    )
    for name in ("q_nodes", "phi_nodes", "weights", "q_width", "phi_width"):
        np.testing.assert_allclose(
            getattr(loaded.bins, name), getattr(expected, name), rtol=1e-12, atol=1e-12
        )

    # Drawn with ~24 pixels across the narrowest side: the spans match to a pixel or two, and
    # the ROI maps agree with those of the written widths to the pixelation.
    np.testing.assert_allclose(loaded.bins.q_width, data.bins.q_width, rtol=0.1)  # pyright: ignore[reportOptionalMemberAccess]
    np.testing.assert_allclose(loaded.bins.phi_width, data.bins.phi_width, atol=2.0)  # pyright: ignore[reportOptionalMemberAccess]
    from_file = MODEL.c2(T, q=loaded.q, phi=loaded.phi, bins=loaded.bins.for_model(MODEL, T))
    from_widths = MODEL.c2(T, q=q, phi=phi, bins=data.bins.for_model(MODEL, T))  # pyright: ignore[reportOptionalMemberAccess]
    assert np.max(np.abs(np.asarray(from_file - from_widths))) < 1e-3

    # Selection carries the geometry of the selected maps only; bins=False skips it.
    some = hj.load_aps(path, q=0.02, phi=[0.0, 45.0], diagonal="none")
    assert some.bins is not None and some.bins.n_maps == 2
    np.testing.assert_allclose(some.bins.q_nodes, loaded.bins.take([3, 4]).q_nodes)
    np.testing.assert_allclose(some.bins.weights, loaded.bins.take([3, 4]).weights)
    assert hj.load_aps(path, bins=False).bins is None


def test_hand_written_qmap_with_masked_pixels(tmp_path):
    # A boost-corr-like file: a 2 × 2 (q, φ) partition, one bin left out of processing, a
    # beamstop arm masking part of another; only the processed bins are maps.
    shape, bcx, bcy, pixel, distance, energy = (180, 200), 100.4, 90.3, 0.075, 3000.0, 10.9
    q_pix, phi_pix = pixel_q_phi(shape, bcx, bcy, pixel, distance, energy)
    q_edges, phi_edges = np.array([0.004, 0.008, 0.012]), np.array([-60.0, 0.0, 60.0])
    q_index = np.digitize(q_pix, q_edges) - 1
    phi_index = np.digitize(phi_pix, phi_edges) - 1
    valid = (q_index >= 0) & (q_index < 2) & (phi_index >= 0) & (phi_index < 2)
    arm = (np.abs(np.indices(shape)[1] - 130) < 4) & (np.indices(shape)[0] < 90)
    natural = np.where(valid & ~arm, q_index * 2 + phi_index, -1)
    roi_map = (natural + 1).astype(np.uint32)  # all 4 bins non-empty: labels = natural + 1
    processed = np.array([1, 2, 4])
    n = 12
    maps = 1.0 + 0.1 * np.tile(np.eye(n), (3, 1, 1)) + 0.01 * np.arange(3)[:, None, None]
    path = tmp_path / "hand.hdf"
    with h5py.File(path, "w") as h5:
        h5["/entry/instrument/detector_1/frame_time"] = 0.01
        h5["/entry/instrument/incident_beam/incident_energy"] = energy
        qmap = h5.create_group("/xpcs/qmap")
        qmap["dynamic_roi_map"] = roi_map
        qmap["dynamic_v_list_dim0"] = (q_edges[:-1] + q_edges[1:]) / 2
        qmap["dynamic_v_list_dim1"] = (phi_edges[:-1] + phi_edges[1:]) / 2
        qmap["dynamic_num_pts"] = np.array([2, 2])
        qmap["dynamic_index_mapping"] = np.arange(4)
        qmap["beam_center_x"], qmap["beam_center_y"] = bcx, bcy
        qmap["pixel_size"], qmap["detector_distance"] = pixel, distance
        h5["/xpcs/twotime/processed_bins"] = processed.astype(np.int32)
        for i, full in enumerate(maps, start=1):
            h5[f"/xpcs/twotime/correlation_map/c2_{i:05d}"] = np.triu(full)
    data = hj.load_aps(path, diagonal="none")
    assert data.bins is not None
    for a, label in enumerate(processed):
        inside = roi_map == label
        q_in, phi_in = q_pix[inside], phi_pix[inside]
        assert np.isclose(float(data.bins.q_width[a]), np.ptp(q_in))
        assert np.isclose(float(data.bins.phi_width[a]), np.ptp(phi_in))
        # The rule reproduces the pixel mean of smooth functions of q and φ.
        rule = np.asarray(data.bins.weights[a])
        qn, pn = np.asarray(data.bins.q_nodes[a]), np.asarray(data.bins.phi_nodes[a])
        for f in (lambda q, p: q, lambda q, p: np.cos(np.deg2rad(p)) * q**2):
            assert np.isclose(np.sum(rule * f(qn, pn)), np.mean(f(q_in, phi_in)), rtol=1e-10)


def test_legacy_spans_give_box_bins(tmp_path):
    n = 10
    path = tmp_path / "legacy.hdf"
    with h5py.File(path, "w") as h5:
        h5["/xpcs/dqlist"] = np.array([[0.01, 0.01, 0.02, 0.02]])
        h5["/xpcs/dphilist"] = np.array([[-30.0, 30.0, -30.0, 30.0]])
        h5["/xpcs/dnoq"], h5["/xpcs/dnophi"] = np.array([[2.0]]), np.array([[2.0]])
        h5["/xpcs/dqspan"] = np.array([[0.008, 0.012, 0.024]])
        h5["/xpcs/dphispan"] = np.array([[-60.0, 0.0, 60.0]])
        h5["/measurement/instrument/detector/exposure_period"] = np.array([[0.01]])
        for label in (2, 3):
            h5[f"/exchange/C2T_all/g2_{label:05d}"] = np.triu(1.0 + np.eye(n))
    data = hj.load_aps(path, diagonal="none")
    assert data.bins is not None and data.bins.source == "widths"
    np.testing.assert_allclose(data.bins.q_centre, [0.01, 0.018])
    np.testing.assert_allclose(data.bins.q_width, [0.004, 0.012])
    np.testing.assert_allclose(data.bins.phi_centre, [30.0, -30.0])
    np.testing.assert_allclose(data.bins.phi_width, [60.0, 60.0])


def test_files_without_geometry_have_no_bins(tmp_path):
    data = hj.simulate(MODEL, T, q=0.02, phi=0.0)
    path = tmp_path / "plain.hdf"
    hj.save_aps(path, data)
    assert hj.load_aps(path).bins is None


def quality(reduced_chi2, roi, widths):
    names = ("D0_sample",)
    return build_quality_report(
        names=names,
        values=np.array([1.0]),
        stderr=np.array([0.1]),
        correlation=np.eye(1),
        at_bound=np.array([False]),
        reduced_chi2=reduced_chi2,
        singular=False,
        aliasing_ratio=np.array([0.1]),
        phi=np.array([0.0]),
        start_chi2=np.array([1.0]),
        start_values=np.array([[1.0]]),
        best_index=0,
        n_physics=1,
        roi=roi,
        bin_widths=widths,
    )


def test_quality_report_suggests_the_roi_model_for_wide_bins_and_high_chi2():
    report = quality(2.5, False, (0.3, 45.0))
    assert report.roi_suggested
    assert any("roi=True" in w and "45" in w for w in report.warnings)
    assert not quality(1.1, False, (0.3, 45.0)).roi_suggested  # χ² fine
    assert not quality(2.5, False, (0.02, 3.0)).roi_suggested  # narrow bins
    used = quality(2.5, True, (0.3, 45.0))
    assert not used.roi_suggested
    assert any("bin-averaged model is in use" in w for w in used.warnings)
    assert not quality(2.5, None, None).roi_suggested


def test_plot_model_draws_the_bin_average_by_default():
    from heterojax._plot._maps import plot_model

    q, phi = np.array([0.02]), np.array([90.0])
    data = simulated(q, phi, 0.3 * q, 45.0)
    assert data.bins is not None
    roi = np.asarray(MODEL.c2(T, q=q, phi=phi, bins=data.bins.for_model(MODEL, T)))[0]
    centre = np.asarray(MODEL.c2(T, q=q, phi=phi))[0]

    def drawn(figure):
        return [np.asarray(image.get_array()) for ax in figure.axes for image in ax.images]

    def shows(figure, expected):
        return any(a.shape == expected.shape and np.allclose(a, expected) for a in drawn(figure))

    assert shows(plot_model(MODEL, data), roi) and not shows(plot_model(MODEL, data), centre)
    assert shows(plot_model(MODEL, data, roi=False), centre)
