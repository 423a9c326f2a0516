"""`load`: one entry point for APS files, flat HDF5 files, NPZ/NPY files and in-memory arrays.

The flat layout is a set of arrays with fixed names: `c2` (required; `(phi, t, t)` or one
`(t, t)` map; full or half matrices), `t` (s, optional), `q` (Å⁻¹), `phi` (deg), `dt` (s,
optional) and `sigma` (optional, like `c2` or a scalar). In an HDF5 file they are datasets at
the root; in an NPZ file, its members; in memory, a mapping of arrays.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import jax
import numpy as np
from jaxtyping import Shaped

from ._aps import aps_layout, load_aps
from ._assemble import BlockReader, check_dt, load_catalog
from ._catalog import MapCatalog
from ._diagonal import check_diagonal_mode
from ._hdf5 import check_path, describe_tree, lookup, reading
from ._xpcs_data import XPCSData


_KNOWN_KEYS = ("c2", "t", "q", "phi", "dt", "sigma")
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class _GuardedDataset:
    """An HDF5 dataset read window by window, whose read errors name the file (`reading`)."""

    def __init__(self, dataset: h5py.Dataset, path: str):
        self.dataset, self.path = dataset, path
        self.shape, self.ndim, self.dtype = dataset.shape, dataset.ndim, dataset.dtype

    def __getitem__(self, index: Any) -> np.ndarray:
        with reading(self.path):
            return np.asarray(self.dataset[index])


def _magic(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(8)


def _values_or_selection(
    stored: Any, request: Any, *, name: str, n_maps: int, source: str, keys: Sequence[str]
) -> tuple[np.ndarray, Any]:
    """The per-map values of `name` and the selection still to apply.

    When the source stores `name`, the request selects among its values. When it does not, the
    request *is* the value (one for all maps, or one per map) and selects nothing.
    """
    if stored is not None:
        values = np.asarray(stored, dtype=np.float64).ravel()
        if values.size == 1:
            values = np.full(n_maps, values[0])
        if values.size != n_maps:
            raise ValueError(
                f"{source}: `{name}` has {values.size} values for {n_maps} c2 maps; give one value "
                "per map (or one for all)."
            )
        return values, request
    if request is None:
        raise ValueError(
            f"{source} has no `{name}` (it holds {sorted(keys)}); pass {name}= with the value(s) "
            f"of the maps ({'Å⁻¹' if name == 'q' else 'degrees'}), one for all or one per map."
        )
    values = np.asarray(request, dtype=np.float64).ravel()
    if values.size == 1:
        values = np.full(n_maps, values[0])
    if values.size != n_maps or not np.all(np.isfinite(values)):
        raise ValueError(
            f"`{name}` gives the values of the maps here (the source stores none): one finite "
            f"number for all or one per map ({n_maps}); got {request!r}."
        )
    return values, None


def _time_axis(
    t: Any, dt: float | None, stored_dt: Any, n_frames: int, source: str
) -> tuple[np.ndarray | None, float, int | None]:
    """`(times, dt, first_frame)` of a flat source; see `load` for the rules."""
    if stored_dt is not None:
        stored_dt = check_dt(np.asarray(stored_dt), argument="dt (stored)")
    if t is None:
        period = dt if dt is not None else stored_dt
        if period is None:
            raise ValueError(
                f"{source} has neither `t` nor `dt`; pass dt= (the frame period in seconds): "
                "row n of the maps is then frame n + 1 at t = (n + 1)·dt."
            )
        return None, period, 1
    times = np.asarray(t, dtype=np.float64)
    if times.shape != (n_frames,):
        raise ValueError(
            f"{source}: `t` has shape {times.shape} but the c2 maps have {n_frames} rows; give one "
            "time per row."
        )
    if not np.all(np.isfinite(times)):
        raise ValueError(f"{source}: `t` holds NaN/Inf values.")
    steps = np.diff(times)
    if not np.all(steps > 0):
        where = int(np.argmin(steps > 0))
        raise ValueError(
            f"{source}: `t` must be strictly increasing; t[{where}] = {times[where]:.6g} is "
            f"followed by t[{where + 1}] = {times[where + 1]:.6g}."
        )
    uniform = bool(np.allclose(steps, steps[0], rtol=1e-9, atol=0.0))
    period = dt if dt is not None else stored_dt
    if period is None:
        if not uniform:
            raise ValueError(
                f"{source}: `t` is not evenly spaced and no dt is stored; pass dt= (s)."
            )
        period = float(steps[0])
    elif uniform and not np.isclose(period, steps[0], rtol=1e-9, atol=0.0):
        raise ValueError(
            f"dt = {period:.6g} s disagrees with the spacing of `t` ({steps[0]:.6g} s); leave dt "
            "out or correct it."
        )
    frames = times / period
    first = int(np.rint(frames[0]))
    on_grid = first >= 1 and np.allclose(frames, first + np.arange(n_frames), rtol=0.0, atol=1e-6)
    return times, period, first if on_grid else None


def _flat_values(value: Any, key: str, path: str) -> np.ndarray:
    """A small stored array (t, q, phi, dt, a scalar sigma) of a flat file: real finite
    numbers, or a `ValueError` naming the file and the dataset."""
    value = np.asarray(value)
    name = os.path.basename(path)
    if value.dtype.kind not in "fiu" or value.size == 0:
        raise ValueError(
            f"{name!r}: the dataset {key!r} should hold numbers; got {value.dtype} of shape "
            f"{value.shape}."
        )
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name!r}: the dataset {key!r} holds NaN/Inf values.")
    if key == "dt" and value.size != 1:
        raise ValueError(f"{name!r}: the dataset 'dt' should hold one number; got {value.shape}.")
    return value


def _read_arrays(arrays: Mapping[str, Any], source: str) -> dict[str, Any]:
    if "c2" not in arrays:
        raise ValueError(
            f"{source} has no `c2` (it holds {sorted(arrays)}); the flat layout needs c2 and "
            "optionally t, q, phi, dt, sigma."
        )
    return {key: arrays.get(key) for key in _KNOWN_KEYS}


def _stored_maps(c2: Any, source: str) -> tuple[Any, int, int]:
    shape = tuple(np.shape(c2))
    if len(shape) == 2:
        n_maps, side = 1, shape[0]
    elif len(shape) == 3:
        n_maps, side = shape[0], shape[1]
    else:
        raise ValueError(f"{source}: `c2` must have shape (phi, t, t) or (t, t); got {shape}.")
    if shape[-1] != shape[-2]:
        raise ValueError(f"{source}: `c2` maps must be square; got shape {shape}.")
    if n_maps < 1 or side < 2:
        raise ValueError(f"{source}: `c2` must hold at least one map of 2×2 or more; got {shape}.")
    if np.dtype(getattr(c2, "dtype", np.float64)).kind not in "fiu":
        raise ValueError(f"{source}: `c2` must be real numbers; got dtype {c2.dtype}.")
    return c2, n_maps, side


def _block_reader(array: Any, two_d: bool):
    def read_block(index: int, start: int, stop: int) -> Shaped[np.ndarray, "w w"]:
        if two_d:
            return np.asarray(array[start:stop, start:stop])
        return np.asarray(array[index, start:stop, start:stop])

    return read_block


def _load_arrays(
    arrays: dict[str, Any],
    *,
    source: str,
    layout: str,
    q: Any,
    phi: Any,
    frames: Any,
    dt: float | None,
    diagonal: str,
    q_tolerance: Any,
    phi_tolerance: Any,
    keys: Sequence[str],
) -> XPCSData:
    c2, n_maps, side = _stored_maps(arrays["c2"], source)
    q_values, q_request = _values_or_selection(
        arrays["q"], q, name="q", n_maps=n_maps, source=source, keys=keys
    )
    phi_values, phi_request = _values_or_selection(
        arrays["phi"], phi, name="phi", n_maps=n_maps, source=source, keys=keys
    )
    times, period, first_frame = _time_axis(arrays["t"], dt, arrays["dt"], side, source)
    two_d = np.ndim(c2) == 2
    read_sigma: BlockReader | None = None
    sigma = arrays["sigma"]
    if sigma is not None:
        if np.ndim(sigma) == 0:
            level = float(np.asarray(sigma))

            def read_constant(index: int, start: int, stop: int) -> Shaped[np.ndarray, "w w"]:
                return np.full((stop - start, stop - start), level)

            read_sigma = read_constant

        elif tuple(np.shape(sigma)) == tuple(np.shape(c2)):
            read_sigma = _block_reader(sigma, two_d)
        else:
            raise ValueError(
                f"{source}: `sigma` has shape {np.shape(sigma)}; give a scalar or the shape of "
                f"c2, {np.shape(c2)}."
            )
    catalog = MapCatalog(
        layout=layout,
        group="",
        keys=tuple(f"c2[{i}]" for i in range(n_maps)),
        labels=np.arange(1, n_maps + 1, dtype=np.int64),
        q=q_values,
        phi=phi_values,
        q_grid=None,
        phi_grid=None,
        n_frames=side,
        frame_period=period,
        first_frame=first_frame,
        metadata={},
    )
    return load_catalog(
        catalog,
        _block_reader(c2, two_d),
        source=source,
        q=q_request,
        phi=phi_request,
        frames=frames,
        dt=None,
        diagonal=diagonal,
        q_tolerance=q_tolerance,
        phi_tolerance=phi_tolerance,
        times=times,
        read_sigma=read_sigma,
    )


def load(
    source: str | os.PathLike | Mapping[str, Any] | np.ndarray | jax.Array | XPCSData,
    *,
    q: Any = None,
    phi: Any = None,
    frames: Sequence[int] | None = None,
    dt: float | int | None = None,
    diagonal: str = "interpolate",
    q_tolerance: float | int | None = None,
    phi_tolerance: float | int | None = None,
) -> XPCSData:
    """Loads two-time maps from a file or from arrays, with the selection rules of `load_aps`.

    Sources:

    - an APS 8-ID-I result file (NeXus or legacy layout): the same as `load_aps`;
    - a flat HDF5 file with root datasets `c2` and optionally `t`, `q`, `phi`, `dt`, `sigma`;
    - an NPZ file with those members, or an NPY file holding `c2` alone;
    - a mapping of those names to arrays, a bare `c2` array, or an `XPCSData`.

    `c2` is `(phi, t, t)` or a single `(t, t)` map; half matrices (either triangle) are rebuilt
    and full maps must be symmetric. Files are read lazily where the format allows (HDF5
    slicing, memory-mapped NPY), and opened read-only.

    When the source stores q (or φ), `q=` (`phi=`) selects maps as in `load_aps`. When it does
    not (an NPY file, a bare array), `q=` and `phi=` give the values: one for all maps or one
    per map.

    Times: a stored `t` is used as it is (strictly increasing); dt is `dt=`, else the stored
    `dt`, else the spacing of `t`. Without `t`, row n is frame n + 1 at t = (n + 1)·dt. Frame
    numbers for `frames=(first, last)` (1-based, inclusive) are t / dt, so a stored `t` must lie
    on a grid t = k·dt to select frames.

    **Arguments:**

    - `source`: a path, a mapping of arrays, an array, or an `XPCSData`.
    - `q`, `phi`, `frames`, `diagonal`, `q_tolerance`, `phi_tolerance`: as in `load_aps`.
    - `dt`: the frame period in seconds (see above).

    **Returns:**

    An `XPCSData`. Bad input raises `ValueError`/`TypeError` (`FileNotFoundError` for a missing
    file) saying what was received and how to fix it.
    """
    diagonal = check_diagonal_mode(diagonal)
    dt_value = check_dt(dt)
    options = dict(
        q=q,
        phi=phi,
        frames=frames,
        dt=dt_value,
        diagonal=diagonal,
        q_tolerance=q_tolerance,
        phi_tolerance=phi_tolerance,
    )
    if isinstance(source, XPCSData):
        arrays = {
            "c2": np.asarray(source.c2),
            "t": np.asarray(source.t),
            "q": np.asarray(source.q),
            "phi": np.asarray(source.phi),
            "dt": None if dt_value is not None else float(source.dt),
            "sigma": None if source.sigma is None else np.asarray(source.sigma),
        }
        return _load_arrays(
            arrays, source="XPCSData", layout="arrays", keys=list(arrays), **options
        )
    if isinstance(source, Mapping):
        keys = [str(key) for key in source]
        return _load_arrays(
            _read_arrays(source, "the arrays"),
            source="arrays",
            layout="arrays",
            keys=keys,
            **options,
        )
    if isinstance(source, (np.ndarray, jax.Array)):
        arrays = {"c2": source, "t": None, "q": None, "phi": None, "dt": None, "sigma": None}
        return _load_arrays(arrays, source="the c2 array", layout="arrays", keys=["c2"], **options)
    path = check_path(source, argument="source")
    magic = _magic(path)
    if magic.startswith(_NPY_MAGIC):
        with reading(path, "NPY"):
            c2 = np.load(path, mmap_mode="r", allow_pickle=False)
        arrays = {"c2": c2, "t": None, "q": None, "phi": None, "dt": None, "sigma": None}
        return _load_arrays(
            arrays, source=os.path.abspath(path), layout="npy", keys=["c2"], **options
        )
    if magic.startswith(_ZIP_MAGIC):
        with reading(path, "NPZ"), np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            arrays = _read_arrays({key: archive[key] for key in keys}, repr(path))
        return _load_arrays(
            arrays, source=os.path.abspath(path), layout="npz", keys=keys, **options
        )
    if not magic.startswith(_HDF5_MAGIC) and not h5py.is_hdf5(path):
        raise ValueError(
            f"{path!r} is neither HDF5 nor a NumPy .npz/.npy file; heterojax reads APS 8-ID-I "
            "result files, flat HDF5 files (c2, t, q, phi) and NumPy files."
        )
    with reading(path):
        h5 = h5py.File(path, "r")
    with h5:
        with reading(path):
            layout = aps_layout(h5)
            if layout is None:
                if not isinstance(lookup(h5, "c2"), h5py.Dataset):
                    raise ValueError(
                        f"{os.path.basename(path)!r} is HDF5 but has no known layout: neither an "
                        "APS two-time result (/xpcs/twotime/correlation_map or /exchange/C2T_all) "
                        f"nor a flat file with a root dataset 'c2'. Found: {describe_tree(h5)}."
                    )
                keys = list(h5.keys())
                arrays: dict[str, Any] = {}
                for key in _KNOWN_KEYS:
                    item = lookup(h5, key)
                    if not isinstance(item, h5py.Dataset):
                        arrays[key] = None
                    elif key == "c2" or (key == "sigma" and item.ndim > 0):
                        arrays[key] = _GuardedDataset(item, path)  # read one window at a time
                    else:
                        arrays[key] = _flat_values(item[()], key, path)
        if layout is None:
            return _load_arrays(
                arrays, source=os.path.abspath(path), layout="flat", keys=keys, **options
            )
    return load_aps(path, **options)  # pyright: ignore[reportArgumentType]
