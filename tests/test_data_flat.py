"""heterojax.load: NPZ, NPY, flat HDF5, mappings, arrays, XPCSData, and APS files."""

import h5py
import numpy as np
import pytest

import heterojax as hj


def symmetric_maps(n_maps: int, n_frames: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n_maps, n_frames, n_frames))
    return 1.0 + 0.1 * (np.triu(raw) + np.swapaxes(np.triu(raw, 1), 1, 2))


def test_npz_with_times_on_a_frame_grid(tmp_path):
    c2 = symmetric_maps(3, 10)
    t = 0.02 * np.arange(5, 15)  # frames 5..14
    path = tmp_path / "maps.npz"
    np.savez(path, c2=c2, t=t, q=[0.01, 0.01, 0.02], phi=[0.0, 90.0, 0.0])
    data = hj.load(path, diagonal="none")
    np.testing.assert_array_equal(np.asarray(data.c2), c2)
    np.testing.assert_array_equal(np.asarray(data.t), t)
    assert float(data.dt) == pytest.approx(0.02, rel=1e-12)
    assert data.metadata["frames"] == (5, 14) and data.metadata["layout"] == "npz"
    window = hj.load(path, q=0.01, phi=90.0, frames=(7, 11), diagonal="none")
    np.testing.assert_array_equal(np.asarray(window.c2[0]), c2[1, 2:7, 2:7])
    np.testing.assert_array_equal(np.asarray(window.t), t[2:7])


def test_npz_half_matrices_are_rebuilt(tmp_path):
    c2 = symmetric_maps(2, 6)
    path = tmp_path / "half.npz"
    np.savez(path, c2=np.triu(c2), q=0.01, phi=[10.0, 20.0], dt=0.5)
    data = hj.load(path, diagonal="none")
    np.testing.assert_array_equal(np.asarray(data.c2), c2)
    np.testing.assert_array_equal(np.asarray(data.t), 0.5 * np.arange(1, 7))  # row n = frame n+1
    np.testing.assert_array_equal(np.asarray(data.q), [0.01, 0.01])


def test_npy_holds_c2_and_the_arguments_give_q_and_phi(tmp_path):
    c2 = symmetric_maps(2, 5)
    path = tmp_path / "c2.npy"
    np.save(path, c2)
    data = hj.load(path, q=0.012, phi=[0.0, 45.0], dt=0.1, frames=(2, 5), diagonal="mask")
    np.testing.assert_array_equal(np.asarray(data.q), [0.012, 0.012])
    np.testing.assert_array_equal(np.asarray(data.phi), [0.0, 45.0])
    np.testing.assert_allclose(np.asarray(data.t), 0.1 * np.arange(2, 6), rtol=1e-15)
    np.testing.assert_array_equal(np.asarray(data.c2), c2[:, 1:, 1:])
    assert data.diagonal == "mask"


def test_flat_hdf5_with_sigma(tmp_path):
    c2 = symmetric_maps(3, 8)
    sigma = 0.01 * (1.0 + np.arange(3))[:, None, None] * np.ones((3, 8, 8))
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as h5:
        h5["c2"] = c2
        h5["t"] = 0.1 * np.arange(1, 9)
        h5["q"] = [0.01, 0.02, 0.03]
        h5["phi"] = [0.0, 0.0, 0.0]
        h5["sigma"] = sigma
    data = hj.load(path, q=[0.02, 0.03], frames=(2, 6))
    assert data.metadata["layout"] == "flat"
    assert data.sigma is not None
    np.testing.assert_array_equal(np.asarray(data.sigma), sigma[1:, 1:6, 1:6])
    expected = c2[1:, 1:6, 1:6].copy()
    for m in expected:  # interpolated diagonal, ends from their single neighbour
        side = np.diagonal(m, 1)
        np.fill_diagonal(m, np.r_[side[0], 0.5 * (side[1:] + side[:-1]), side[-1]])
    np.testing.assert_allclose(np.asarray(data.c2), expected, rtol=0, atol=1e-15)
    weights = np.asarray(data.weights)
    np.testing.assert_allclose(weights[0, 0, 1], 1 / 0.02**2, rtol=1e-12)
    assert weights[0, 1, 0] == 0.0 and weights[0, 2, 2] == 0.0  # lower triangle, diagonal


def test_mapping_single_map_and_stored_dt():
    c2 = symmetric_maps(1, 6)[0]
    data = hj.load({"c2": c2, "q": 0.01, "phi": 30.0, "dt": 0.25}, diagonal="none")
    assert data.n_angles == 1
    np.testing.assert_array_equal(np.asarray(data.t), 0.25 * np.arange(1, 7))
    assert data.metadata["source"] == "arrays"


def test_bare_array_values_and_phi_selection_when_stored():
    c2 = symmetric_maps(2, 4)
    data = hj.load(c2, q=[0.01, 0.02], phi=0.0, dt=1.0, diagonal="none")
    np.testing.assert_array_equal(np.asarray(data.q), [0.01, 0.02])
    stored = hj.load({"c2": c2, "q": [0.01, 0.02], "phi": [0.0, 0.0]}, q=0.02, dt=1.0)
    assert stored.n_angles == 1 and float(stored.q[0]) == 0.02


def test_xpcsdata_source_can_be_reselected():
    c2 = symmetric_maps(3, 9)
    data = hj.XPCSData(
        c2, 0.1 * np.arange(1, 10), q=0.01, phi=np.array([0.0, 120.0, -120.0]), dt=0.1
    )
    picked = hj.load(data, phi=[(100.0, -100.0)], frames=(3, 7), diagonal="none")
    np.testing.assert_array_equal(np.asarray(picked.phi), [120.0, -120.0])
    np.testing.assert_array_equal(np.asarray(picked.c2), c2[1:, 2:7, 2:7])
    np.testing.assert_allclose(np.asarray(picked.t), 0.1 * np.arange(3, 8), rtol=1e-12)


def test_load_dispatches_aps_files_to_load_aps(tmp_path):
    data = hj.XPCSData(
        symmetric_maps(2, 6), 0.1 * np.arange(1, 7), q=0.01, phi=np.array([0.0, 90.0]), dt=0.1
    )
    path = tmp_path / "run_results.hdf"
    hj.save_aps(path, data, layout="legacy")
    via_load = hj.load(path, phi=90.0, frames=(2, 5))
    via_aps = hj.load_aps(path, phi=90.0, frames=(2, 5))
    np.testing.assert_array_equal(np.asarray(via_load.c2), np.asarray(via_aps.c2))
    assert via_load.metadata == via_aps.metadata
