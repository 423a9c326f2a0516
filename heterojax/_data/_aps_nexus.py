"""The current APS 8-ID-I result layout (boost-corr, "NeXus"): catalog its two-time maps.

`/xpcs/twotime/correlation_map/c2_{i:05d}` holds the i-th map, i = 1..N *sequentially*;
`processed_bins[i-1]` is that map's dynamic ROI label; labels are compressed over the non-empty
(q, φ) bins, so the bin is found through the q map:

    label = processed_bins[i-1];  natural = dynamic_index_mapping[label-1]
    q_index, phi_index = divmod(natural, n_phi)

Deriving the bin from the label alone (`divmod(label-1, n_phi)`) is wrong as soon as one (q, φ)
bin is empty, e.g. behind the beamstop or a module gap.

Time: `dt = frame_time × stride_frame × avg_frame`; `begin_frame` is the 0-based raw frame of
map row 0 (boost-corr's `--begin-frame`), so row n is frame `begin_frame / (stride × avg) + 1 + n`
of the binned series (see `first_frame_number`; begin_frame = 0 when the config is absent).
"""

import os
import warnings

import h5py
import numpy as np

from ._catalog import MapCatalog, check_square_maps, first_frame_number
from ._hdf5 import lookup, numbered_members, read_array, read_numbers, read_scalar, read_strings
from ._qmap import nexus_bin_reader


MAPS_GROUP = "/xpcs/twotime/correlation_map"
PROCESSED_BINS = "/xpcs/twotime/processed_bins"
CONFIG = "/xpcs/twotime/config"
QMAP = "/xpcs/qmap"
FRAME_TIME = "/entry/instrument/detector_1/frame_time"
_LAYOUT = "NeXus"


def is_nexus(h5: h5py.File) -> bool:
    """Whether the file has the NeXus two-time group."""
    return isinstance(lookup(h5, MAPS_GROUP), h5py.Group)


def _integers(values: np.ndarray, *, key: str, filename: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim > 2 or (values.ndim == 2 and 1 not in values.shape):
        raise ValueError(f"{key!r} in {filename!r} should be a list; got shape {values.shape}.")
    values = values.ravel()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if (
        values.dtype.kind == "f"
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    ):
        return values.astype(np.int64)
    raise ValueError(f"{key!r} in {filename!r} should hold integers; got {values.dtype} values.")


def _positive_integer(h5: h5py.File, key: str, filename: str) -> int:
    value = read_scalar(h5, key, 1.0)
    assert value is not None
    if not (value >= 1 and float(value).is_integer()):
        raise ValueError(f"{key!r} in {filename!r} should be a positive integer; got {value}.")
    return int(value)


def read_nexus_catalog(h5: h5py.File) -> MapCatalog:
    """Lists the maps of a NeXus-layout file with their (q, φ) bins and time axis.

    Only metadata and the small q-map arrays are read; the maps themselves are not.

    **Arguments:**

    - `h5`: the file, open read-only.

    **Returns:**

    The `MapCatalog`. Raises `ValueError` for missing keys or inconsistent bins.
    """
    filename = os.path.basename(h5.filename)
    group = h5[MAPS_GROUP]
    assert isinstance(group, h5py.Group)
    keys, numbers = numbered_members(group, layout=_LAYOUT)
    processed = _integers(
        read_array(h5, PROCESSED_BINS, layout=_LAYOUT), key=PROCESSED_BINS, filename=filename
    )
    if processed.size != len(keys) or not np.array_equal(numbers, np.arange(1, len(keys) + 1)):
        raise ValueError(
            f"{filename!r}: {MAPS_GROUP} holds {len(keys)} maps numbered {numbers.tolist()[:20]}, "
            f"but {PROCESSED_BINS} has {processed.size} entries; the maps must be numbered "
            "1..N, one per processed bin."
        )
    q_values = read_numbers(h5, f"{QMAP}/dynamic_v_list_dim0", layout=_LAYOUT)
    phi_values = read_numbers(h5, f"{QMAP}/dynamic_v_list_dim1", layout=_LAYOUT)
    names = read_strings(h5, f"{QMAP}/map_names")
    if names is not None and tuple(n.lower() for n in names[:2]) != ("q", "phi"):
        raise ValueError(
            f"{filename!r}: the q map partitions {names} instead of (q, phi) (a real-space ROI "
            "map); heterodyne analysis needs q and φ bins."
        )
    n_q, n_phi = q_values.size, phi_values.size
    if f"{QMAP}/dynamic_num_pts" in h5:
        num_pts = _integers(
            read_array(h5, f"{QMAP}/dynamic_num_pts", layout=_LAYOUT),
            key=f"{QMAP}/dynamic_num_pts",
            filename=filename,
        )
        if num_pts.size != 2 or tuple(num_pts) != (n_q, n_phi):
            raise ValueError(
                f"{filename!r}: {QMAP}/dynamic_num_pts = {num_pts.tolist()} disagrees with the "
                f"lengths of dynamic_v_list_dim0/1 ({n_q}, {n_phi})."
            )
    if f"{QMAP}/dynamic_index_mapping" in h5:
        mapping = _integers(
            read_array(h5, f"{QMAP}/dynamic_index_mapping", layout=_LAYOUT),
            key=f"{QMAP}/dynamic_index_mapping",
            filename=filename,
        )
        index_source = "dynamic_index_mapping"
    else:
        warnings.warn(
            f"{filename!r} has no {QMAP}/dynamic_index_mapping; labels are taken as natural "
            "(q, φ) bin indices, which is right only when no bin is empty.",
            stacklevel=3,
        )
        mapping = np.arange(n_q * n_phi, dtype=np.int64)
        index_source = "identity (dynamic_index_mapping absent)"
    if np.any(processed < 1) or np.any(processed > mapping.size):
        raise ValueError(
            f"{filename!r}: {PROCESSED_BINS} holds labels {processed.tolist()[:20]} outside "
            f"1..{mapping.size} (the labels of the q map)."
        )
    natural = mapping[processed - 1]
    if np.any(natural < 0) or np.any(natural >= n_q * n_phi):
        raise ValueError(
            f"{filename!r}: dynamic_index_mapping sends processed bins to {natural.tolist()[:20]}, "
            f"outside the {n_q}×{n_phi} (q, φ) grid."
        )
    if np.unique(natural).size != natural.size:
        raise ValueError(
            f"{filename!r}: dynamic_index_mapping sends two processed bins to the same (q, φ) "
            f"bin ({natural.tolist()[:20]}); each map has its own bin."
        )
    q_index, phi_index = np.divmod(natural, n_phi)

    shapes = [tuple(group[key].shape) for key in keys]  # pyright: ignore[reportAttributeAccessIssue]
    n_frames = check_square_maps(shapes, keys)

    frame_time = read_scalar(h5, FRAME_TIME)
    stride = _positive_integer(h5, f"{CONFIG}/stride_frame", filename)
    average = _positive_integer(h5, f"{CONFIG}/avg_frame", filename)
    begin = read_scalar(h5, f"{CONFIG}/begin_frame", 0.0)
    end = read_scalar(h5, f"{CONFIG}/end_frame")
    for key, value in (("begin_frame", begin), ("end_frame", end)):
        if value is not None and not float(value).is_integer():
            raise ValueError(f"'{CONFIG}/{key}' in {filename!r} should be an integer; got {value}.")
    assert begin is not None
    binning = stride * average
    usable = frame_time is not None and np.isfinite(frame_time) and frame_time > 0
    return MapCatalog(
        layout="nexus",
        group=MAPS_GROUP,
        keys=keys,
        labels=processed,
        q=q_values[q_index],
        phi=phi_values[phi_index],
        q_grid=q_values,
        phi_grid=phi_values,
        n_frames=n_frames,
        frame_period=frame_time * binning if usable else None,  # pyright: ignore[reportOptionalOperand]
        first_frame=first_frame_number(int(begin), binning, source=f"{CONFIG}/begin_frame"),
        metadata={
            "frame_time": frame_time,
            "stride_frame": stride,
            "avg_frame": average,
            "begin_frame": int(begin),
            "end_frame": None if end is None else int(end),
            "index_mapping": index_source,
            "frame_period_key": FRAME_TIME,
        },
        bins=nexus_bin_reader(h5, processed, phi_values[phi_index]),
    )
