"""Damaged files are bad input: every loader answers a truncated, corrupted or malformed file
with one `ValueError` naming the file, never a crash, another exception or a silent result.

A case passes when the loader raises `ValueError` whose message names the file, or returns
exactly what the intact file gives (the damage hit bytes that hold nothing the loader uses).
Files written by `save_aps` carry checksums (HDF5 1.8+ object headers, compact small
datasets, Fletcher-32 on the maps), so a flipped byte anywhere is one of the two.
"""

import os
import warnings

import h5py
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import heterojax as hj


def symmetric_maps(n_maps: int, n_frames: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(n_maps, n_frames, n_frames))
    return 1.0 + 0.1 * (np.triu(raw) + np.swapaxes(np.triu(raw, 1), 1, 2))


def small_data(bins: bool = False) -> hj.XPCSData:
    # Wide bins: a small synthetic detector (about 150² pixels) keeps the file small.
    geometry = hj.BinGeometry.from_widths(
        np.array([0.01, 0.01, 0.02, 0.02]), np.array([0.0, 90.0, 0.0, 90.0]), 0.008, 80.0
    )
    return hj.XPCSData(
        symmetric_maps(4, 8),
        0.01 * np.arange(1, 9),
        q=np.array([0.01, 0.01, 0.02, 0.02]),
        phi=np.array([0.0, 90.0, 0.0, 90.0]),
        dt=0.01,
        bins=geometry if bins else None,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("intact")
    data = small_data()
    paths = {
        "nexus": hj.save_aps(folder / "nexus.h5", data),
        "legacy": hj.save_aps(folder / "legacy.h5", data, layout="legacy"),
        "geometry": hj.save_aps(folder / "geometry.h5", small_data(bins=True)),
    }
    flat = folder / "flat.h5"
    with h5py.File(flat, "w") as h5:
        for key in ("c2", "t", "q", "phi"):
            h5[key] = np.asarray(getattr(data, key))
        h5["dt"] = 0.01
    paths["flat"] = str(flat)
    npz = folder / "arrays.npz"
    np.savez(npz, c2=np.asarray(data.c2), t=np.asarray(data.t), q=data.q, phi=data.phi)
    paths["npz"] = str(npz)
    return paths


def summary(data: hj.XPCSData) -> tuple:
    bins = data.bins
    geometry = (
        None
        if bins is None
        else tuple(
            np.asarray(leaf).tobytes() for leaf in (bins.q_nodes, bins.phi_nodes, bins.weights)
        )
    )
    return (
        np.asarray(data.c2).tobytes(),
        np.asarray(data.t).tobytes(),
        np.asarray(data.q).tobytes(),
        np.asarray(data.phi).tobytes(),
        float(data.dt),
        data.metadata.get("frames"),
        geometry,
    )


def outcome(path: str, intact: tuple | None) -> str:
    """'error' (a clear ValueError), 'same' (identical data), or a failure description."""
    name = os.path.basename(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data = hj.load(path)
        except ValueError as error:
            message = str(error)
            if name not in message:
                return f"ValueError not naming the file: {message}"
            if "\n" in message.strip():
                return f"more than one line: {message}"
            return "error"
        except Exception as error:  # anything else is what this file exists to rule out
            return f"{type(error).__name__}: {error}"
    if intact is not None and summary(data) == intact:
        return "same"
    return "silent result"


def damaged_copy(path: str, tmp_path, content: bytes, name: str = "damaged.h5") -> str:
    target = os.path.join(tmp_path, name)
    with open(target, "wb") as handle:
        handle.write(content)
    return target


@pytest.mark.parametrize("kind", ["nexus", "legacy", "geometry", "flat", "npz"])
def test_truncated_files_are_a_clear_error(files, kind, tmp_path):
    content = open(files[kind], "rb").read()
    suffix = ".npz" if kind == "npz" else ".h5"
    failures = {}
    for length in np.unique(np.linspace(0, len(content) - 1, 41).astype(int)):
        path = damaged_copy(tmp_path, tmp_path, content[:length], f"cut{suffix}")
        result = outcome(path, None)
        if result != "error":
            failures[int(length)] = result
    assert not failures, failures


def test_truncated_file_message_says_truncated(files, tmp_path):
    content = open(files["nexus"], "rb").read()
    path = damaged_copy(tmp_path, tmp_path, content[:5000], "bad.h5")
    for loader in (hj.load, hj.load_aps):
        with pytest.raises(ValueError, match=r"'bad\.h5' is truncated: it ends at byte 5,000 of"):
            loader(path)


@pytest.mark.parametrize("kind, positions", [("nexus", 150), ("legacy", 150), ("geometry", 40)])
def test_flipped_bytes_are_an_error_or_harmless(files, kind, positions, tmp_path):
    intact = summary(hj.load(files[kind]))
    content = bytearray(open(files[kind], "rb").read())
    failures = {}
    # Positions spread evenly over the file: headers, heaps, indices and data alike.
    for position in np.unique(np.linspace(0, len(content) - 1, positions).astype(int)):
        damaged = bytearray(content)
        damaged[position] ^= 0x5A
        path = damaged_copy(tmp_path, tmp_path, bytes(damaged))
        result = outcome(path, intact)
        if result not in ("error", "same"):
            failures[int(position)] = result
    assert not failures, failures


# ------------------------------------------------------------------ malformed datasets

NEXUS_DATASETS = [
    "/xpcs/twotime/correlation_map/c2_00001",
    "/xpcs/twotime/processed_bins",
    "/xpcs/qmap/dynamic_v_list_dim0",
    "/xpcs/qmap/dynamic_v_list_dim1",
    "/xpcs/qmap/dynamic_index_mapping",
    "/xpcs/qmap/dynamic_num_pts",
    "/xpcs/qmap/map_names",
    "/xpcs/qmap/dynamic_roi_map",
    "/xpcs/qmap/beam_center_x",
    "/xpcs/qmap/pixel_size",
    "/xpcs/qmap/energy",
    "/entry/instrument/detector_1/frame_time",
    "/xpcs/twotime/config/stride_frame",
    "/xpcs/twotime/config/avg_frame",
    "/xpcs/twotime/config/begin_frame",
    "/xpcs/twotime/config/end_frame",
]
LEGACY_DATASETS = [
    "/exchange/C2T_all/g2_00001",
    "/xpcs/dqlist",
    "/xpcs/dphilist",
    "/xpcs/qphi_bin_to_process",
    "/xpcs/output_data",
    "/xpcs/stride_frames",
    "/xpcs/avg_frames",
    "/xpcs/data_begin",
    "/xpcs/dnoq",
    "/xpcs/dnophi",
    "/measurement/instrument/detector/exposure_period",
]
FLAT_DATASETS = ["/c2", "/t", "/q", "/phi", "/dt"]


def replacements(original: np.ndarray) -> dict[str, np.ndarray]:
    """Wrong dtypes and shapes for a dataset that held `original`."""
    cases = {
        "text": np.array(b"not a number"),
        "text array": np.array([b"a", b"b", b"c"]),
        "empty": np.zeros((0,)),
        "wrong shape": np.arange(1.5, 13.5).reshape(3, 4),
        "3-d": np.ones((2, 2, 2)),
    }
    if original.dtype.kind in "fiu":
        cases["complex"] = np.asarray(original, dtype=np.complex128) + 1j
        values = np.array(original, dtype=np.float64)
        for label, bad in (("NaN", np.nan), ("Inf", np.inf), ("-Inf", -np.inf)):
            broken = values.copy()
            broken.flat[0] = bad
            cases[label] = broken
    return cases


def malformed_cases(files, kind, keys):
    with h5py.File(files[kind], "r") as h5:
        originals = {key: np.asarray(h5[key][()]) for key in keys if key in h5}
    assert set(originals) == set(keys), set(keys) - set(originals)
    return [(key, label) for key in keys for label in replacements(originals[key])]


@pytest.mark.parametrize(
    "kind, keys",
    [("nexus", NEXUS_DATASETS[:8] + NEXUS_DATASETS[11:]), ("geometry", NEXUS_DATASETS)]
    + [("legacy", LEGACY_DATASETS), ("flat", FLAT_DATASETS)],
)
def test_malformed_datasets_are_a_clear_error(files, kind, keys, tmp_path):
    intact = summary(hj.load(files[kind]))
    failures = {}
    for key, label in malformed_cases(files, kind, keys):
        path = os.path.join(tmp_path, f"{kind}-malformed.h5")
        with open(files[kind], "rb") as source, open(path, "wb") as target:
            target.write(source.read())
        with h5py.File(path, "a") as h5:
            original = np.asarray(h5[key][()])
            del h5[key]
            h5[key] = replacements(original)[label]
        result = outcome(path, intact)
        if result not in ("error", "same"):
            failures[(key, label)] = result
    assert not failures, failures


@pytest.mark.parametrize(
    "kind, group",
    [
        ("nexus", "/xpcs/twotime/correlation_map"),
        ("nexus", "/xpcs/qmap"),
        ("nexus", "/xpcs/twotime"),
        ("legacy", "/exchange/C2T_all"),
        ("legacy", "/xpcs"),
    ],
)
def test_empty_groups_are_a_clear_error(files, kind, group, tmp_path):
    path = os.path.join(tmp_path, "empty-group.h5")
    with open(files[kind], "rb") as source, open(path, "wb") as target:
        target.write(source.read())
    with h5py.File(path, "a") as h5:
        for name in list(h5[group]):
            del h5[group][name]
    assert outcome(path, None) == "error"


@settings(max_examples=40, deadline=None)
@given(
    key=st.sampled_from(
        ["/xpcs/qmap/dynamic_v_list_dim0", "/xpcs/qmap/dynamic_v_list_dim1", "/xpcs/qmap/energy"]
        + ["/xpcs/qmap/detector_distance", "/entry/instrument/detector_1/frame_time"]
    ),
    bad=st.sampled_from([np.nan, np.inf, -np.inf]),
    where=st.integers(0, 1),
)
def test_nan_and_inf_in_the_qmap_and_frame_time(files, key, bad, where, tmp_path_factory):
    """NaN or Inf anywhere in the q map or the frame time is an error, never NaN in the data."""
    path = os.path.join(tmp_path_factory.mktemp("nan"), "nan.h5")
    with open(files["geometry"], "rb") as source, open(path, "wb") as target:
        target.write(source.read())
    with h5py.File(path, "a") as h5:
        values = np.array(h5[key][()], dtype=np.float64)
        values.flat[min(where, values.size - 1)] = bad
        del h5[key]
        h5[key] = values
    assert outcome(path, None) == "error"


def test_npy_damaged(tmp_path):
    path = tmp_path / "maps.npy"
    np.save(path, symmetric_maps(2, 6))
    content = path.read_bytes()
    for length in (10, 60, 128, len(content) - 8):
        cut = damaged_copy(tmp_path, tmp_path, content[:length], "cut.npy")
        with pytest.raises(ValueError, match=r"cut\.npy"):
            hj.load(cut, q=0.01, phi=[0.0, 90.0], dt=0.01)
