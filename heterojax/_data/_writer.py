"""`save_aps`: write c2 maps as an APS 8-ID-I result file (NeXus layout, or the legacy one).

The files are what the beamline software writes, reduced to what a two-time reader needs, so
that synthetic data exercise the same reading path as measured data: half matrices, a (q, φ)
partition with labels compressed over the non-empty bins (a non-trivial `dynamic_index_mapping`
as soon as one bin of the grid holds no map), and the frame period.
"""

import contextlib
import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np
from jaxtyping import Float, Int, UInt

from .._io._atomic import new_temporary
from .._model._bins import BinGeometry
from .._version import __version__
from ._catalog import MAPS_FROM
from ._qmap import INCIDENT_ENERGY, synthetic_detector
from ._xpcs_data import XPCSData


_LAYOUTS = ("nexus", "legacy")
_TRIANGLES = ("upper", "lower")
_LEGACY_NAMES = ("sequential", "label")
_DTYPES = {"float32": np.float32, "float64": np.float64}
_SYMMETRY_RTOL = 1e-12
_PIXELS_PER_BIN = 4  # side of each bin's block in the synthetic detector image
_COMPACT_BYTES = 16 * 1024  # the largest dataset stored inside its (checksummed) object header
MapReader = Callable[[int], Float[np.ndarray, "t t"]]


def _grid(
    values: Float[np.ndarray, " map"], grid: Any, *, argument: str
) -> tuple[Float[np.ndarray, " bin"], Int[np.ndarray, " map"]]:
    """The bin centres and the bin of every map; the data's distinct values by default."""
    if grid is None:
        centres = np.unique(values)
    else:
        centres = np.unique(np.asarray(grid, dtype=np.float64).ravel())
        if centres.size == 0 or not np.all(np.isfinite(centres)):
            raise ValueError(f"`{argument}` must be a non-empty list of finite bin centres.")
    index = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
    missing = ~np.isclose(values, centres[index], rtol=1e-12, atol=1e-12)
    if np.any(missing):
        raise ValueError(
            f"`{argument}` = {centres.tolist()} has no bin at {values[missing].tolist()}, the "
            "value(s) of some maps; include them (the default uses the data's own values)."
        )
    return centres, index


def frame_numbers(t: Float[np.ndarray, " t"], dt: float) -> int:
    """The frame number of the first time, checking that t = k·dt on consecutive frames k ≥ 1.

    APS files record only the frame period, so the times must be on that grid to be written.
    """
    first = int(np.rint(t[0] / dt))
    expected = (first + np.arange(t.size)) * dt
    if first < 1 or not np.allclose(t, expected, rtol=1e-9, atol=0.0):
        raise ValueError(
            "`data.t` must be t = k·dt on consecutive 1-based frames k to be written as "
            f"an APS file, which records only the frame period; got t[0] = {t[0]:.6g} s, "
            f"dt = {dt:.6g} s. Build t as dt·arange(first, last + 1)."
        )
    return first


def _roi_map(n_q: int, n_phi: int, labels: Int[np.ndarray, " bin"]) -> UInt[np.ndarray, "y x"]:
    """A synthetic detector image: each (q, φ) bin is a square block holding its label."""
    block = np.ones((_PIXELS_PER_BIN, _PIXELS_PER_BIN), np.uint32)
    return np.kron(labels.reshape(n_q, n_phi).astype(np.uint32), block)


def _put(group: h5py.Group, name: str, value: Any) -> None:
    """Writes the dataset `group[name]` so that a damaged byte is detected when it is read.

    The file uses the HDF5 1.8 object format, whose metadata carry checksums; a small dataset is
    stored inside its object header (compact layout), so the checksum covers its values too, and
    a larger one in chunks with a Fletcher-32 checksum. Text is stored as fixed-length bytes
    (variable-length strings live in the unchecksummed global heap).
    """
    parent, _, name = name.rpartition("/")
    if parent:
        group = group.require_group(parent)
    if isinstance(value, str):
        value = np.bytes_(value)
    value = np.asarray(value)
    if value.ndim:  # (ascontiguousarray would turn a scalar into shape (1,))
        value = np.ascontiguousarray(value)
    if value.nbytes > _COMPACT_BYTES:
        group.create_dataset(name, data=value, chunks=True, fletcher32=True)
        return
    # h5py's high-level call stores scalars contiguously whatever the layout asked for.
    layout = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    layout.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(value.shape) if value.shape else h5py.h5s.create(h5py.h5s.SCALAR)
    kind = h5py.h5t.py_create(value.dtype, logical=True)
    dataset = h5py.h5d.create(group.id, name.encode(), kind, space, dcpl=layout)
    dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, value)


def _record_origin(h5: h5py.File, maps_from: str | None) -> None:
    """Where heterojax made the maps (`heterojax.simulate`, `heterojax.simulate_speckle`,
    `heterojax.two_time`), as the root attribute `MAPS_FROM`: the noise model of
    `fit_nlsq(errors="auto")` depends on it, and a file does not show it."""
    if isinstance(maps_from, str) and maps_from.startswith("heterojax."):
        h5.attrs[MAPS_FROM] = maps_from


def _write_atomically(path: str, overwrite: bool, write: Callable[[h5py.File], None]) -> None:
    if os.path.isdir(path):
        raise ValueError(f"`path` must be a file name; {path!r} is a directory.")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path!r} exists; pass overwrite=True to replace it, or choose another name."
        )
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"`path`: the folder {directory!r} does not exist.")
    temporary = new_temporary(path)
    try:
        with h5py.File(temporary, "w", libver=("v110", "latest")) as h5:
            write(h5)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _diagonal_means(full: Float[np.ndarray, "t t"]) -> Float[np.ndarray, " t"]:
    return np.array([np.diagonal(full, lag).mean() for lag in range(full.shape[0])])


def write_result_file(
    path: str,
    read_map: MapReader,
    *,
    q: Float[np.ndarray, " map"],
    phi: Float[np.ndarray, " map"],
    n_frames: int,
    dt: float,
    first_frame: int = 1,
    layout: str = "nexus",
    dtype: str = "float64",
    triangle: str = "upper",
    legacy_names: str = "sequential",
    q_grid: Any = None,
    phi_grid: Any = None,
    compression: str | None = None,
    overwrite: bool = False,
    bins: BinGeometry | None = None,
    maps_from: str | None = None,
) -> None:
    """Writes maps supplied one at a time as an APS result file (the engine of `save_aps`).

    Maps are requested one by one, so files larger than memory can be written.

    **Arguments:**

    - `path`: the file to write.
    - `read_map`: `read_map(i)` returns the full symmetric map i, shape `(n_frames, n_frames)`.
    - `q`, `phi`: q (Å⁻¹) and φ (deg) of every map.
    - `n_frames`: rows per map.
    - `dt`: the frame period in seconds (written with stride = average = 1).
    - `first_frame`: the 1-based frame number of row 0.
    - `bins`: the maps' bin geometry, drawn on a synthetic detector (NeXus layout), or `None`.
    - `maps_from`: where heterojax made the maps (`XPCSData.metadata["source"]`), recorded
        in the file when it is one of heterojax's own (`load_aps` reads it as `maps_from`).
    - the rest as in `save_aps`.
    """
    if layout not in _LAYOUTS:
        raise ValueError(f"`layout` must be one of {_LAYOUTS}; got {layout!r}.")
    if triangle not in _TRIANGLES:
        raise ValueError(f"`triangle` must be one of {_TRIANGLES}; got {triangle!r}.")
    if legacy_names not in _LEGACY_NAMES:
        raise ValueError(f"`legacy_names` must be one of {_LEGACY_NAMES}; got {legacy_names!r}.")
    if dtype not in _DTYPES:
        raise ValueError(f"`dtype` must be one of {tuple(_DTYPES)}; got {dtype!r}.")
    if compression not in (None, "lzf", "gzip"):
        raise ValueError(f"`compression` must be None, 'lzf' or 'gzip'; got {compression!r}.")
    q_centres, q_index = _grid(q, q_grid, argument="q_grid")
    phi_centres, phi_index = _grid(phi, phi_grid, argument="phi_grid")
    n_q, n_phi = q_centres.size, phi_centres.size
    natural = q_index * n_phi + phi_index
    if np.unique(natural).size != natural.size:
        values, counts = np.unique(natural, return_counts=True)
        shared = values[counts > 1][0]
        raise ValueError(
            f"two maps share the (q, φ) bin ({q_centres[shared // n_phi]:.6g} Å⁻¹, "
            f"{phi_centres[shared % n_phi]:.6g}°); an APS file holds one map per bin."
        )
    order = np.argsort(natural)  # processed bins are written in ascending label order
    labels_by_bin = np.zeros(n_q * n_phi, np.int64)
    labels_by_bin[natural[order]] = np.arange(1, natural.size + 1)
    stored = _DTYPES[dtype]
    cut = np.triu if triangle == "upper" else np.tril
    chunks = (n_frames, n_frames)

    def write_maps(group: h5py.Group, names: list[str]) -> Float[np.ndarray, "t map"]:
        g2 = np.empty((n_frames, len(names)))
        for position, (name, index) in enumerate(zip(names, order)):
            full = np.asarray(read_map(int(index)), dtype=np.float64)
            if full.shape != (n_frames, n_frames):
                raise ValueError(
                    f"map {int(index)} has shape {full.shape}; expected ({n_frames}, {n_frames})."
                )
            group.create_dataset(
                name,
                data=cut(full).astype(stored),
                chunks=chunks,
                compression=compression,
                fletcher32=True,
            )
            g2[:, position] = _diagonal_means(full)
        return g2

    def write_nexus(h5: h5py.File) -> None:
        h5.attrs["creator"] = f"heterojax {__version__} save_aps"
        _record_origin(h5, maps_from)
        _put(h5.require_group("/entry"), "schema_version", "heterojax-synthetic")
        detector = h5.require_group("/entry/instrument/detector_1")
        _put(detector, "frame_time", np.float64(dt))
        _put(detector, "count_time", np.float64(dt))
        qmap = h5.require_group("/xpcs/qmap")
        detector_image = None
        if bins is not None:
            detector_image = synthetic_detector(bins, labels_by_bin[natural])
        if detector_image is None:
            _put(qmap, "dynamic_roi_map", _roi_map(n_q, n_phi, labels_by_bin))
        else:
            for name, value in detector_image.items():
                _put(qmap, name, value)
            _put(h5, INCIDENT_ENERGY, np.float64(detector_image["energy"]))
        _put(qmap, "dynamic_index_mapping", natural[order].astype(np.int64))
        _put(qmap, "dynamic_num_pts", np.array([n_q, n_phi], np.int64))
        _put(qmap, "dynamic_v_list_dim0", q_centres)
        _put(qmap, "dynamic_v_list_dim1", phi_centres)
        _put(qmap, "map_names", np.array([b"q", b"phi"]))
        _put(qmap, "map_units", np.array([b"1/A", b"deg"]))
        twotime = h5.require_group("/xpcs/twotime")
        config = twotime.require_group("config")
        _put(config, "stride_frame", np.int64(1))
        _put(config, "avg_frame", np.int64(1))
        _put(config, "begin_frame", np.int64(first_frame - 1))  # 0-based raw frame of row 0
        _put(config, "end_frame", np.int64(first_frame - 1 + n_frames))  # 0-based, exclusive
        _put(config, "analysis_type", "Twotime")
        _put(twotime, "processed_bins", np.arange(1, natural.size + 1, dtype=np.int32))
        names = [f"c2_{k:05d}" for k in range(1, natural.size + 1)]
        g2 = write_maps(twotime.require_group("correlation_map"), names)
        _put(twotime, "normalized_g2", g2.astype(np.float32))

    def write_legacy(h5: h5py.File) -> None:
        h5.attrs["creator"] = f"heterojax {__version__} save_aps (legacy layout)"
        _record_origin(h5, maps_from)
        dq_labels = natural[order] + 1  # labels of the flattened (q, φ) grid
        grid_q = np.repeat(q_centres, n_phi)
        grid_phi = np.tile(phi_centres, n_q)
        xpcs = h5.require_group("/xpcs")
        _put(xpcs, "dqlist", grid_q[None, :])
        _put(xpcs, "dphilist", grid_phi[None, :])
        _put(xpcs, "dnoq", np.array([[n_q]], np.float64))
        _put(xpcs, "dnophi", np.array([[n_phi]], np.float64))
        _put(xpcs, "dqmap", _roi_map(n_q, n_phi, np.arange(1, n_q * n_phi + 1)))
        _put(xpcs, "analysis_type", "Twotime")
        _put(xpcs, "output_data", "/exchange")
        _put(xpcs, "stride_frames", np.array([[1.0]]))
        _put(xpcs, "avg_frames", np.array([[1.0]]))
        _put(xpcs, "data_begin", np.array([[float(first_frame)]]))  # 1-based raw frame of row 0
        _put(xpcs, "data_end", np.array([[float(first_frame + n_frames - 1)]]))
        detector = h5.require_group("/measurement/instrument/detector")
        _put(detector, "exposure_period", np.array([[dt]]))
        _put(detector, "exposure_time", np.array([[dt]]))
        if legacy_names == "sequential":
            _put(xpcs, "qphi_bin_to_process", dq_labels[None, :].astype(np.float64))
            names = [f"g2_{k:05d}" for k in range(1, natural.size + 1)]
        else:
            names = [f"g2_{int(label):05d}" for label in dq_labels]
        g2 = write_maps(h5.require_group("/exchange/C2T_all"), names)
        _put(h5.require_group("/exchange"), "g2full", g2)

    _write_atomically(path, overwrite, write_nexus if layout == "nexus" else write_legacy)


def save_aps(
    path: str | os.PathLike,
    data: XPCSData,
    *,
    layout: str = "nexus",
    dtype: str = "float64",
    triangle: str = "upper",
    legacy_names: str = "sequential",
    q_grid: Any = None,
    phi_grid: Any = None,
    compression: str | None = None,
    overwrite: bool = False,
) -> str:
    """Writes an `XPCSData` as an APS 8-ID-I two-time result file that `load_aps` reads back.

    NeXus layout (default): `/xpcs/twotime/correlation_map/c2_00001…` (half matrices, one chunk
    each), `processed_bins`, `config/{stride_frame, avg_frame, begin_frame, end_frame}`,
    `normalized_g2`; `/xpcs/qmap/{dynamic_roi_map, dynamic_index_mapping, dynamic_num_pts,
    dynamic_v_list_dim0, dynamic_v_list_dim1, map_names}` for a (q, φ) grid whose labels are
    compressed over the bins that hold a map; `/entry/instrument/detector_1/frame_time`.
    Legacy layout: `/exchange/C2T_all/g2_NNNNN`, `/xpcs/{dqlist, dphilist}` (1, N_bins),
    `qphi_bin_to_process`, `data_begin`, and `/measurement/instrument/detector/exposure_period`.

    The grid is the data's distinct q values × distinct φ values unless given; grid cells with no
    map are empty bins. Maps are stored in bin order (q, then φ), which is the order `load_aps`
    returns. With the default float64 storage `load_aps(path, diagonal="none")` returns exactly
    `data.c2`, `t`, `q`, `phi` and `dt` (reordered by bin); float32 is what the beamline writes.
    `sigma` and `metadata` are not stored (the layout has no place for them), except where
    heterojax made the maps (`metadata["source"]`, e.g. `heterojax.simulate`), kept as the root
    attribute `heterojax_maps_from` and read back as `metadata["maps_from"]`: maps of
    independent noise then keep their noise model (`fit_nlsq(errors="auto")`). The detector image
    (`dynamic_roi_map`) is a synthetic block pattern, one square per bin, unless the data carry
    a bin geometry (`data.bins`): then, in the NeXus layout, each bin's (q, φ) box is drawn on a
    synthetic detector (10 keV, 0.075 mm pixels, the distance chosen so that the narrowest bin
    spans about 24 pixels) whose geometry (`beam_center_x/y`, `pixel_size`,
    `detector_distance`, `energy`) is written too, so `load_aps` rebuilds the geometry from the
    pixels.

    The file is written to a temporary name in the same folder and renamed when complete.

    **Arguments:**

    - `path`: the file to create.
    - `data`: the maps; `data.t` must be t = k·dt on consecutive frames k ≥ 1.
    - `layout`: `"nexus"` or `"legacy"`.
    - `dtype`: `"float64"` (exact round trip) or `"float32"` (as the beamline writes).
    - `triangle`: `"upper"` (boost-corr) or `"lower"` (how h5py sees a Matlab-written `triu`).
    - `legacy_names`: legacy layout only: `"sequential"` (`g2_00001…` with
        `qphi_bin_to_process`, old boost-corr) or `"label"` (the number is the dq label).
    - `q_grid`, `phi_grid`: bin centres of the partition (must contain every map's value);
        extra centres become empty bins.
    - `compression`: `None`, `"lzf"` (as boost-corr) or `"gzip"`.
    - `overwrite`: replace an existing file; otherwise `FileExistsError`.

    **Returns:**

    The path written, as a string.
    """
    if not isinstance(data, XPCSData):
        raise TypeError(f"`data` must be a heterojax.XPCSData; got {type(data).__name__}.")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path; got {type(path).__name__}.")
    path = os.fspath(path)
    assert isinstance(path, str)
    t = np.asarray(data.t, dtype=np.float64)
    dt = float(data.dt)
    first = frame_numbers(t, dt)
    c2 = np.asarray(data.c2)

    def read_map(index: int) -> Float[np.ndarray, "t t"]:
        full = c2[index]
        scale = float(np.max(np.abs(full)))
        if float(np.max(np.abs(full - full.T))) > _SYMMETRY_RTOL * scale:
            raise ValueError(
                f"`data.c2[{index}]` is not symmetric; APS files store one triangle of a symmetric "
                "map, so the other would be lost. Symmetrise it, e.g. (c2 + c2ᵀ) / 2."
            )
        return full

    write_result_file(
        path,
        read_map,
        q=np.asarray(data.q, dtype=np.float64),
        phi=np.asarray(data.phi, dtype=np.float64),
        n_frames=data.n_times,
        dt=dt,
        first_frame=first,
        layout=layout,
        dtype=dtype,
        triangle=triangle,
        legacy_names=legacy_names,
        q_grid=q_grid,
        phi_grid=phi_grid,
        compression=compression,
        overwrite=overwrite,
        bins=data.bins if layout == "nexus" else None,
        maps_from=data.metadata.get("maps_from", data.metadata.get("source")),
    )
    return path
