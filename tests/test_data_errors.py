"""Bad input gets a clear error, never a silent wrong answer: one test per failure mode."""

import os

import h5py
import numpy as np
import pytest

import heterojax as hj


def symmetric_maps(n_maps: int, n_frames: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    raw = rng.normal(size=(n_maps, n_frames, n_frames))
    return 1.0 + 0.1 * (np.triu(raw) + np.swapaxes(np.triu(raw, 1), 1, 2))


@pytest.fixture
def nexus_file(tmp_path):
    data = hj.XPCSData(
        symmetric_maps(4, 8),
        0.01 * np.arange(1, 9),
        q=np.array([0.01, 0.01, 0.02, 0.02]),
        phi=np.array([0.0, 90.0, 0.0, 90.0]),
        dt=0.01,
    )
    path = tmp_path / "good.hdf"
    hj.save_aps(path, data)
    return path


@pytest.fixture
def legacy_file(tmp_path):
    data = hj.XPCSData(
        symmetric_maps(2, 6), 0.01 * np.arange(1, 7), q=0.01, phi=np.array([0.0, 90.0]), dt=0.01
    )
    path = tmp_path / "legacy.hdf"
    hj.save_aps(path, data, layout="legacy")
    return path


def edit(path, action):
    with h5py.File(path, "a") as h5:
        action(h5)


# ----------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        hj.load_aps(tmp_path / "absent.hdf")
    with pytest.raises(FileNotFoundError, match="no such file"):
        hj.load(tmp_path / "absent.npz")


def test_not_a_path():
    # Under the test suite's runtime type checking the annotation catches it first; both name it.
    with pytest.raises(TypeError, match="path"):
        hj.load_aps(42)  # pyright: ignore[reportArgumentType]


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        hj.load_aps(tmp_path)


def test_not_hdf5(tmp_path):
    path = tmp_path / "notes.hdf"
    path.write_text("these are not correlation maps")
    with pytest.raises(ValueError, match="is not an HDF5 file"):
        hj.load_aps(path)
    with pytest.raises(ValueError, match="neither HDF5 nor a NumPy"):
        hj.load(path)


def test_unknown_layout_lists_the_groups(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["/measurement/detector/counts"] = np.zeros(3)
        h5["/processed/g2"] = np.zeros(3)
    with pytest.raises(
        ValueError, match=r"not an APS 8-ID-I.*/measurement/ \(group\).*/processed/g2"
    ):
        hj.load_aps(path)
    with pytest.raises(ValueError, match=r"no known layout.*/processed/ \(group\)"):
        hj.load(path)


@pytest.mark.parametrize(
    "key",
    [
        "/xpcs/twotime/processed_bins",
        "/xpcs/qmap/dynamic_v_list_dim0",
        "/xpcs/qmap/dynamic_v_list_dim1",
    ],
)
def test_nexus_missing_keys(nexus_file, key):
    edit(nexus_file, lambda h5: h5.__delitem__(key))
    with pytest.raises(ValueError, match=f"has no dataset '{key}'"):
        hj.load_aps(nexus_file)


@pytest.mark.parametrize("key", ["/xpcs/dqlist", "/xpcs/dphilist"])
def test_legacy_missing_keys(legacy_file, key):
    edit(legacy_file, lambda h5: h5.__delitem__(key))
    with pytest.raises(ValueError, match=f"legacy Data-Exchange layout but has no dataset '{key}'"):
        hj.load_aps(legacy_file)


def test_missing_frame_period_needs_dt(nexus_file):
    edit(nexus_file, lambda h5: h5.__delitem__("/entry/instrument/detector_1/frame_time"))
    with pytest.raises(ValueError, match=r"records no frame period.*pass dt="):
        hj.load_aps(nexus_file)
    data = hj.load_aps(nexus_file, dt=0.2)
    np.testing.assert_allclose(np.asarray(data.t), 0.2 * np.arange(1, 9), rtol=1e-15)


def test_legacy_missing_exposure_period_needs_dt(legacy_file):
    edit(legacy_file, lambda h5: h5.__delitem__("/measurement/instrument/detector/exposure_period"))
    with pytest.raises(ValueError, match=r"records no frame period.*exposure_period"):
        hj.load_aps(legacy_file)
    assert float(hj.load_aps(legacy_file, dt=1.5).dt) == 1.5


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_dt(nexus_file, bad):
    with pytest.raises(ValueError, match="`dt` must be a positive frame period"):
        hj.load_aps(nexus_file, dt=bad)


def test_bad_diagonal_mode(nexus_file):
    with pytest.raises(ValueError, match=r"`diagonal` must be one of .*got 'interp'"):
        hj.load_aps(nexus_file, diagonal="interp")


# ----------------------------------------------------------------------------- maps


def test_non_square_map(nexus_file):
    def replace(h5):
        del h5["/xpcs/twotime/correlation_map/c2_00002"]
        h5["/xpcs/twotime/correlation_map/c2_00002"] = np.zeros((8, 9))

    edit(nexus_file, replace)
    with pytest.raises(ValueError, match=r"'c2_00002' has shape \(8, 9\); .* must be square"):
        hj.load_aps(nexus_file)


def test_mismatched_maps(nexus_file):
    def replace(h5):
        del h5["/xpcs/twotime/correlation_map/c2_00003"]
        h5["/xpcs/twotime/correlation_map/c2_00003"] = np.triu(np.ones((6, 6)))

    edit(nexus_file, replace)
    with pytest.raises(ValueError, match=r"different sizes \[6, 8\]"):
        hj.load_aps(nexus_file)


def test_nan_in_the_selected_data(nexus_file):
    def poison(h5):
        h5["/xpcs/twotime/correlation_map/c2_00002"][1, 6] = np.nan

    edit(nexus_file, poison)
    with pytest.raises(ValueError, match=r"'c2_00002' holds 1 NaN/Inf values in the selected"):
        hj.load_aps(nexus_file)
    # Outside the selection the NaN does not matter: other maps, or frames before it.
    assert hj.load_aps(nexus_file, q=0.02).n_angles == 2
    assert hj.load_aps(nexus_file, phi=90.0, frames=(3, 8)).n_times == 6


def test_inf_in_the_selected_data(legacy_file):
    def poison(h5):
        h5["/exchange/C2T_all/g2_00001"][0, 0] = np.inf

    edit(legacy_file, poison)
    with pytest.raises(ValueError, match="'g2_00001' holds 1 NaN/Inf"):
        hj.load_aps(legacy_file)


def test_asymmetric_full_map_is_refused(nexus_file):
    def replace(h5):
        del h5["/xpcs/twotime/correlation_map/c2_00001"]
        h5["/xpcs/twotime/correlation_map/c2_00001"] = np.arange(64.0).reshape(8, 8)

    edit(nexus_file, replace)
    with pytest.raises(ValueError, match="full map that is not symmetric"):
        hj.load_aps(nexus_file)


def test_processed_bins_count_mismatch(nexus_file):
    def replace(h5):
        del h5["/xpcs/twotime/processed_bins"]
        h5["/xpcs/twotime/processed_bins"] = np.array([1, 2, 3], np.int32)

    edit(nexus_file, replace)
    with pytest.raises(ValueError, match="holds 4 maps .* has 3 entries"):
        hj.load_aps(nexus_file)


def test_index_mapping_outside_the_grid(nexus_file):
    def replace(h5):
        del h5["/xpcs/qmap/dynamic_index_mapping"]
        h5["/xpcs/qmap/dynamic_index_mapping"] = np.array([0, 1, 2, 9])

    edit(nexus_file, replace)
    with pytest.raises(ValueError, match=r"outside the 2×2 \(q, φ\) grid"):
        hj.load_aps(nexus_file)


def test_real_space_partition_is_refused(nexus_file):
    def replace(h5):
        del h5["/xpcs/qmap/map_names"]
        h5["/xpcs/qmap/map_names"] = np.array([b"x", b"y"])

    edit(nexus_file, replace)
    with pytest.raises(ValueError, match="real-space ROI"):
        hj.load_aps(nexus_file)


def test_legacy_maps_that_cannot_be_paired(tmp_path):
    path = tmp_path / "unpaired.hdf"
    with h5py.File(path, "w") as h5:
        h5["/xpcs/dqlist"] = np.array([[0.01, 0.02, 0.03]])
        h5["/xpcs/dphilist"] = np.array([[0.0, 0.0, 0.0]])
        h5["/xpcs/qphi_bin_to_process"] = np.array([[1.0, 2.0]])
        h5["/exchange/C2T_all/g2_00002"] = np.triu(np.ones((4, 4)))
        h5["/exchange/C2T_all/g2_00005"] = np.triu(np.ones((4, 4)))
    with pytest.raises(ValueError, match="cannot pair maps with bins"):
        hj.load_aps(path)


def test_unnumbered_map_name(legacy_file):
    edit(legacy_file, lambda h5: h5.__setitem__("/exchange/C2T_all/extra", np.ones((6, 6))))
    with pytest.raises(ValueError, match="'extra', which is not named <prefix>_<integer>"):
        hj.load_aps(legacy_file)


# ----------------------------------------------------------------------------- selection


def test_q_with_nothing_near_lists_what_is_available(nexus_file):
    with pytest.raises(ValueError, match=r"nothing near q = 0\.5 .*available q: \[0\.01, 0\.02\]"):
        hj.load_aps(nexus_file, q=0.5)
    with pytest.raises(ValueError, match=r"no map within q_tolerance = 0\.001 of q = 0\.015"):
        hj.load_aps(nexus_file, q=0.015, q_tolerance=0.001)


def test_q_of_the_wrong_type(nexus_file):
    with pytest.raises(TypeError, match="`q` entries must be finite numbers"):
        hj.load_aps(nexus_file, q="0.01")


def test_phi_with_nothing_near_lists_what_is_available(nexus_file):
    with pytest.raises(ValueError, match=r"no map within 45° of φ = 180°.*available φ: \[0, 90\]"):
        hj.load_aps(nexus_file, phi=180.0)
    with pytest.raises(ValueError, match=r"no map in the range \(100\.0, 170\.0\)"):
        hj.load_aps(nexus_file, phi=[(100.0, 170.0)])
    with pytest.raises(ValueError, match="ranges are pairs"):
        hj.load_aps(nexus_file, phi=[(1.0, 2.0, 3.0)])


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ((6, 3), "empty frame window"),
        ((0, 4), "outside the frames in the file, 1..8"),
        ((3, 9), "outside the frames in the file, 1..8"),
        ((4, 4), "a two-time map needs at least two frames"),
    ],
)
def test_bad_frame_windows(nexus_file, frames, message):
    with pytest.raises(ValueError, match=message):
        hj.load_aps(nexus_file, frames=frames)


def test_frames_must_be_a_pair_of_integers(nexus_file):
    with pytest.raises(TypeError, match="`frames` must be a pair of integers"):
        hj.load_aps(nexus_file, frames=(3,))


# ----------------------------------------------------------------------------- flat sources


def test_flat_non_increasing_t():
    c2 = symmetric_maps(1, 4)
    with pytest.raises(
        ValueError, match=r"strictly increasing; t\[1\] = 2 is followed by t\[2\] = 2"
    ):
        hj.load({"c2": c2, "t": np.array([1.0, 2.0, 2.0, 3.0]), "q": 0.01, "phi": 0.0})


def test_flat_missing_q_says_how_to_fix():
    with pytest.raises(ValueError, match=r"has no `q` .*pass q= with the value"):
        hj.load({"c2": symmetric_maps(1, 4), "phi": 0.0}, dt=1.0)


def test_flat_missing_c2():
    with pytest.raises(ValueError, match=r"has no `c2` \(it holds \['q', 't'\]\)"):
        hj.load({"q": 0.01, "t": np.arange(3.0)})


def test_flat_without_time_information():
    with pytest.raises(ValueError, match="neither `t` nor `dt`"):
        hj.load(symmetric_maps(1, 4), q=0.01, phi=0.0)


def test_flat_dt_disagreeing_with_t():
    arrays = {"c2": symmetric_maps(1, 4), "t": 0.1 * np.arange(1, 5), "q": 0.01, "phi": 0.0}
    with pytest.raises(ValueError, match="disagrees with the spacing of `t`"):
        hj.load(arrays, dt=0.3)


def test_flat_nan(tmp_path):
    c2 = symmetric_maps(2, 5)
    c2[1, 2, 3] = np.nan
    path = tmp_path / "flat.npz"
    np.savez(path, c2=c2, q=[0.01, 0.01], phi=[0.0, 90.0], dt=0.1)
    with pytest.raises(ValueError, match=r"'c2\[1\]' holds 1 NaN/Inf"):
        hj.load(path)


def test_flat_values_of_the_wrong_length():
    with pytest.raises(ValueError, match="`q` has 3 values for 2 c2 maps"):
        hj.load({"c2": symmetric_maps(2, 4), "q": [0.01, 0.02, 0.03], "phi": 0.0}, dt=1.0)


def test_flat_non_square():
    with pytest.raises(ValueError, match="maps must be square"):
        hj.load({"c2": np.ones((2, 4, 5)), "q": 0.01, "phi": 0.0}, dt=1.0)


def test_frames_refused_for_times_off_the_frame_grid():
    arrays = {
        "c2": symmetric_maps(1, 4),
        "t": np.array([0.1, 0.2, 0.4, 0.8]),
        "q": 0.01,
        "phi": 0.0,
    }
    assert hj.load(arrays, dt=0.1).n_times == 4
    with pytest.raises(ValueError, match="not on a grid t = k·dt"):
        hj.load(arrays, dt=0.1, frames=(1, 2))


# ----------------------------------------------------------------------------- writing


def test_save_refuses_to_overwrite_and_leaves_no_temporary(tmp_path):
    data = hj.XPCSData(symmetric_maps(1, 4), 0.5 * np.arange(1, 5), q=0.01, phi=0.0, dt=0.5)
    path = tmp_path / "out.hdf"
    hj.save_aps(path, data)
    stamp = os.stat(path).st_mtime_ns
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        hj.save_aps(path, data)
    assert os.stat(path).st_mtime_ns == stamp
    hj.save_aps(path, data, overwrite=True, layout="legacy")
    assert hj.load_aps(path).metadata["layout"] == "legacy"
    assert os.listdir(tmp_path) == ["out.hdf"]


def test_save_needs_times_on_the_frame_grid(tmp_path):
    data = hj.XPCSData(symmetric_maps(1, 4), 0.5 * np.arange(1, 5) + 0.1, q=0.01, phi=0.0, dt=0.5)
    with pytest.raises(ValueError, match="must be t = k·dt on consecutive 1-based frames"):
        hj.save_aps(tmp_path / "x.hdf", data)
    assert os.listdir(tmp_path) == []


def test_save_refuses_asymmetric_maps_and_shared_bins(tmp_path):
    c2 = symmetric_maps(2, 4)
    c2[0, 0, 1] += 1.0
    asymmetric = hj.XPCSData(c2, np.arange(1.0, 5.0), q=0.01, phi=np.array([0.0, 90.0]), dt=1.0)
    with pytest.raises(ValueError, match=r"`data.c2\[0\]` is not symmetric"):
        hj.save_aps(tmp_path / "a.hdf", asymmetric)
    shared = hj.XPCSData(symmetric_maps(2, 4), np.arange(1.0, 5.0), q=0.01, phi=0.0, dt=1.0)
    with pytest.raises(ValueError, match="two maps share the"):
        hj.save_aps(tmp_path / "b.hdf", shared)
    assert os.listdir(tmp_path) == []


def test_save_argument_checks(tmp_path):
    data = hj.XPCSData(symmetric_maps(1, 4), np.arange(1.0, 5.0), q=0.01, phi=0.0, dt=1.0)
    with pytest.raises(TypeError, match="data"):  # (or the runtime type check, naming `data`)
        hj.save_aps(tmp_path / "x.hdf", np.ones((4, 4)))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="`layout` must be one of"):
        hj.save_aps(tmp_path / "x.hdf", data, layout="nxs")
    with pytest.raises(ValueError, match=r"`phi_grid` = \[10.0, 20.0\] has no bin at \[0.0\]"):
        hj.save_aps(tmp_path / "x.hdf", data, phi_grid=[10.0, 20.0])
