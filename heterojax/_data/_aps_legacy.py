"""The legacy APS 8-ID "Data-Exchange" result layout: catalog its two-time maps.

Maps live in `<group>/C2T_all/<prefix>_<number>` (group `/exchange`, or the one named by
`/xpcs/output_data`, or the Matlab pipeline's `/TwoTimeInfo`). Writers disagree on what the number
means: old boost-corr numbers maps 1..N sequentially and lists their dq labels in
`/xpcs/qphi_bin_to_process`; pyXpcsViewer and the Matlab pipeline use the dq label itself. So:

- when `qphi_bin_to_process` exists with one entry per map and the maps are numbered 1..N, map k
  is paired with entry k (by position);
- otherwise the number is the dq label.

Maps are always ordered by the integer (never as strings: "g2_00010" comes after "g2_00009").
`/xpcs/dqlist` and `/xpcs/dphilist`, shape (1, N_bins), give q and φ of every dq label.

Time: `dt = exposure_period × stride_frames × avg_frames`; `/xpcs/data_begin` is the 1-based raw
frame of map row 0 (Matlab convention; default 1), so row n is frame
`(data_begin − 1) / (stride × avg) + 1 + n` of the binned series.
"""

import os

import h5py
import numpy as np

from ._catalog import MapCatalog, check_square_maps, first_frame_number
from ._hdf5 import lookup, numbered_members, read_numbers, read_scalar, read_strings
from ._qmap import legacy_bin_reader


DQLIST = "/xpcs/dqlist"
DPHILIST = "/xpcs/dphilist"
QPHI_BINS = "/xpcs/qphi_bin_to_process"
EXPOSURE_PERIOD = "/measurement/instrument/detector/exposure_period"
_LAYOUT = "legacy Data-Exchange"


def maps_group(h5: h5py.File) -> h5py.Group | None:
    """The `C2T_all` group of a legacy file, or `None` when there is none."""
    candidates = ["/exchange"]
    output = read_strings(h5, "/xpcs/output_data")
    if output:
        candidates.insert(0, "/" + output[0].strip("/"))
    candidates.append("/TwoTimeInfo")
    for parent in candidates:
        group = lookup(h5, f"{parent}/C2T_all")
        if isinstance(group, h5py.Group):
            return group
    return None


def is_legacy(h5: h5py.File) -> bool:
    """Whether the file has a legacy `C2T_all` group."""
    return maps_group(h5) is not None


def _integer_values(h5: h5py.File, key: str, filename: str) -> np.ndarray:
    values = np.asarray(h5[key][()]).ravel()  # pyright: ignore[reportIndexIssue]
    if values.dtype.kind in "fiu" and values.size == 0:
        raise ValueError(f"{key!r} in {filename!r} is empty.")
    if (
        values.dtype.kind == "f"
        and np.all(np.isfinite(values))
        and np.all(values == np.round(values))
    ):
        return values.astype(np.int64)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    raise ValueError(f"{key!r} in {filename!r} should hold integer dq labels; got {values.dtype}.")


def _positive_integer(h5: h5py.File, key: str, filename: str, default: float = 1.0) -> int:
    value = read_scalar(h5, key, default)
    assert value is not None
    if not (value >= 1 and float(value).is_integer()):
        raise ValueError(f"{key!r} in {filename!r} should be a positive integer; got {value}.")
    return int(value)


def _bin_count(h5: h5py.File, key: str) -> int | None:
    value = read_scalar(h5, key)
    return int(value) if value is not None and value >= 1 and float(value).is_integer() else None


def read_legacy_catalog(h5: h5py.File) -> MapCatalog:
    """Lists the maps of a legacy-layout file with their (q, φ) bins and time axis.

    **Arguments:**

    - `h5`: the file, open read-only.

    **Returns:**

    The `MapCatalog`. Raises `ValueError` for missing keys or maps that cannot be paired with
    their bins.
    """
    filename = os.path.basename(h5.filename)
    group = maps_group(h5)
    assert group is not None
    keys, numbers = numbered_members(group, layout=_LAYOUT)
    q_list = read_numbers(h5, DQLIST, layout=_LAYOUT)
    phi_list = read_numbers(h5, DPHILIST, layout=_LAYOUT)
    if q_list.size != phi_list.size:
        raise ValueError(
            f"{filename!r}: {DQLIST} has {q_list.size} entries but {DPHILIST} has "
            f"{phi_list.size}; both list one value per dynamic bin."
        )
    n_maps = len(keys)
    labels, pairing = numbers, "number is the dq label"
    if QPHI_BINS in h5:
        to_process = _integer_values(h5, QPHI_BINS, filename)
        if to_process.size == n_maps:
            if np.array_equal(numbers, np.arange(1, n_maps + 1)):
                labels, pairing = to_process[numbers - 1], "by position in qphi_bin_to_process"
            elif set(numbers.tolist()) != set(to_process.tolist()):
                raise ValueError(
                    f"{filename!r}: the maps in {group.name} are numbered {numbers.tolist()[:20]}, "
                    f"neither 1..{n_maps} (sequential) nor the dq labels of {QPHI_BINS} "
                    f"({to_process.tolist()[:20]}); cannot pair maps with bins."
                )
    if np.any(labels < 1) or np.any(labels > q_list.size):
        raise ValueError(
            f"{filename!r}: the maps' dq labels {labels.tolist()[:20]} fall outside "
            f"1..{q_list.size} (the bins listed in {DQLIST})."
        )
    shapes = [tuple(group[key].shape) for key in keys]  # pyright: ignore[reportAttributeAccessIssue]
    n_frames = check_square_maps(shapes, keys)

    period = read_scalar(h5, EXPOSURE_PERIOD)
    stride = _positive_integer(h5, "/xpcs/stride_frames", filename)
    average = _positive_integer(h5, "/xpcs/avg_frames", filename)
    begin = _positive_integer(h5, "/xpcs/data_begin", filename)
    binning = stride * average
    usable = period is not None and np.isfinite(period) and period > 0
    return MapCatalog(
        layout="legacy",
        group=group.name or "",
        keys=keys,
        labels=labels,
        q=q_list[labels - 1],
        phi=phi_list[labels - 1],
        q_grid=np.unique(q_list),
        phi_grid=np.unique(phi_list),
        n_frames=n_frames,
        frame_period=period * binning if usable else None,  # pyright: ignore[reportOptionalOperand]
        first_frame=first_frame_number(begin - 1, binning, source="/xpcs/data_begin − 1"),
        metadata={
            "exposure_period": period,
            "stride_frames": stride,
            "avg_frames": average,
            "data_begin": begin,
            "pairing": pairing,
            "frame_period_key": EXPOSURE_PERIOD,
        },
        bins=legacy_bin_reader(h5, labels, _bin_count(h5, "/xpcs/dnophi")),
    )
