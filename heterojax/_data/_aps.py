"""`load_aps`: read APS 8-ID-I two-time result files (NeXus and legacy layouts)."""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np
from jaxtyping import Shaped

from ._aps_legacy import is_legacy, read_legacy_catalog
from ._aps_nexus import is_nexus, read_nexus_catalog
from ._assemble import check_dt, load_catalog
from ._catalog import MAPS_FROM, MapCatalog
from ._diagonal import check_diagonal_mode
from ._hdf5 import check_path, describe_tree, open_hdf5, reading
from ._xpcs_data import XPCSData


def aps_layout(h5: h5py.File) -> str | None:
    """`"nexus"`, `"legacy"`, or `None` when the file has neither two-time layout."""
    if is_nexus(h5):
        return "nexus"
    if is_legacy(h5):
        return "legacy"
    return None


def read_aps_catalog(h5: h5py.File) -> MapCatalog:
    """The catalog of an APS result file; `ValueError` listing the groups for other layouts."""
    layout = aps_layout(h5)
    if layout in ("nexus", "legacy"):
        catalog = read_nexus_catalog(h5) if layout == "nexus" else read_legacy_catalog(h5)
        if MAPS_FROM in h5.attrs:  # written by `save_aps` from heterojax's own maps
            catalog.metadata["maps_from"] = str(h5.attrs[MAPS_FROM])
        return catalog
    raise ValueError(
        f"{os.path.basename(h5.filename)!r} is HDF5 but not an APS 8-ID-I two-time result file: "
        "expected /xpcs/twotime/correlation_map (NeXus layout) or /exchange/C2T_all (legacy "
        f"layout). Found: {describe_tree(h5)}. For other files use heterojax.load with a flat "
        "layout (root datasets c2, t, q, phi)."
    )


def load_aps(
    path: str | os.PathLike,
    *,
    q: Any = None,
    phi: Any = None,
    frames: Sequence[int] | None = None,
    dt: float | int | None = None,
    diagonal: str = "interpolate",
    q_tolerance: float | int | None = None,
    phi_tolerance: float | int | None = None,
    bins: bool = True,
) -> XPCSData:
    """Reads two-time correlation maps from an APS 8-ID-I result file.

    Both layouts are read: the current NeXus one (`/xpcs/twotime/correlation_map/c2_NNNNN`,
    `processed_bins`, `/xpcs/qmap/...`, `frame_time`) and the legacy Data-Exchange one
    (`/exchange/C2T_all/*`, `/xpcs/dqlist`, `dphilist`, `qphi_bin_to_process`,
    `exposure_period`). Stored half matrices (upper or lower triangle) are rebuilt into full
    symmetric float64 maps, h + hᵀ − diag(h).

    Each map's (q, φ) comes from its bin: through `dynamic_index_mapping` in NeXus files (the
    labels are compressed over non-empty bins, so the label alone gives the wrong φ after an empty
    bin), through `dqlist`/`dphilist` in legacy files, with maps paired to bins by their integer
    suffix or position (never by string order).

    Only the selected maps and frame window are read from disk (h5py slicing). The file is opened
    read-only and nothing is written anywhere.

    Times: 1-based frame k sits at t = k·dt. dt is the time between map rows:
    `frame_time × stride_frame × avg_frame` (NeXus) or `exposure_period × stride_frames ×
    avg_frames` (legacy). Row 0 is frame `begin_frame / (stride × avg) + 1` (NeXus,
    `begin_frame` 0-based; 1 when the config is absent) or `(data_begin − 1) / (stride × avg) + 1`
    (legacy, `data_begin` 1-based).

    Maps are returned in file order, i.e. ordered by (q, φ) bin.

    Bin geometry (`XPCSData.bins`, used by the ROI model): in NeXus files with a q map
    (`dynamic_roi_map` and the detector geometry `beam_center_x/y`, `pixel_size`,
    `detector_distance`, `energy` or the incident energy), the quadrature rule of each selected
    bin's pixels (`_qmap`); in legacy files with `dqspan`/`dphispan` bin edges, the boxes they
    span; otherwise `None` (bin centres only).

    **Arguments:**

    - `path`: the result file.
    - `q`: `None` (all q), a q value in Å⁻¹ (the nearest q bin, which must lie within half a bin
        spacing), or a list of them.
    - `phi`: `None` (all maps at the selected q), an angle in degrees (at each selected q the
        nearest map, compared modulo 360°), a `(start, stop)` range inside a list (swept
        counter-clockwise, so `[(170, -170)]` spans ±180°), or a list mixing angles and ranges.
    - `frames`: `(first, last)`, 1-based inclusive frame numbers (see above); `None` for all.
    - `dt`: the time between map rows in seconds, overriding the file's; required when the file
        records none.
    - `diagonal`: `"interpolate"` (c2[i, i] ← mean of c2[i, i+1] and c2[i−1, i], applied after the
        frame selection), `"mask"` (kept as measured, excluded from every fit and χ²) or
        `"none"` (kept and fitted). Recorded in `XPCSData.diagonal`.
    - `q_tolerance`: keep every map with |q_map − q| ≤ this (Å⁻¹) instead of the nearest bin.
    - `phi_tolerance`: the largest angular distance (degrees) accepted for a requested angle;
        default half the spacing of the file's φ partition.
    - `bins`: read the bin geometry when the file has one (`False` skips it).

    **Returns:**

    An `XPCSData` whose `metadata` records the source file, layout, maps and bins read, the
    selection, the frame window and where dt came from.

    Bad input raises at once: `FileNotFoundError` for a missing file; `ValueError` for a file
    that is not HDF5, an unknown layout (the groups found are listed), missing keys,
    non-square or mismatched maps, NaN/Inf in the selected data, a q or φ with nothing near
    (the available values are listed), an empty or out-of-range frame window, and a missing
    frame period.
    """
    path = check_path(path)
    diagonal = check_diagonal_mode(diagonal)
    check_dt(dt)
    with open_hdf5(path) as h5:
        with reading(path):
            catalog = read_aps_catalog(h5)
            group = h5[catalog.group]
        assert isinstance(group, h5py.Group)

        def read_block(index: int, start: int, stop: int) -> Shaped[np.ndarray, "w w"]:
            with reading(path):
                dataset = group[catalog.keys[index]]
                return dataset[start:stop, start:stop]  # pyright: ignore[reportIndexIssue]

        bin_reader = catalog.bins
        if bin_reader is not None:

            def read_bins(indices: np.ndarray) -> Any:
                with reading(path):
                    return bin_reader(indices)  # pyright: ignore[reportOptionalCall]

            catalog = dataclasses.replace(catalog, bins=read_bins)
        return load_catalog(
            catalog,
            read_block,
            source=os.path.abspath(path),
            q=q,
            phi=phi,
            frames=frames,
            dt=dt,
            diagonal=diagonal,
            q_tolerance=q_tolerance,
            phi_tolerance=phi_tolerance,
            bins=bins,
        )
