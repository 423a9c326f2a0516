"""From a catalog and a reader of stored windows to an `XPCSData`: the shared loading path.

Every loader (NeXus, legacy, flat) describes its maps in a `MapCatalog` and hands over a function
that reads the window `[a:b, a:b]` of one stored map. This module selects maps and frames, reads
only those windows, rebuilds full symmetric float64 maps into one preallocated array, checks them,
treats the diagonal, and builds the `XPCSData`. The output buffer is 64-byte aligned so that JAX
adopts it without a copy on CPU: peak memory stays near the size of the selected data.
"""

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jaxtyping import Array, Float, Int, Shaped

from ._catalog import MapCatalog
from ._diagonal import apply_diagonal_mode, check_diagonal_mode
from ._half_matrix import rebuild_into
from ._selection import frame_window, select_maps
from ._xpcs_data import XPCSData


BlockReader = Callable[[int, int, int], Shaped[np.ndarray, "w w"]]

_ALIGNMENT = 64


def aligned_empty(shape: tuple[int, ...]) -> Float[np.ndarray, "..."]:
    """An uninitialised float64 array whose data start on a 64-byte boundary."""
    n_bytes = int(np.prod(shape, dtype=np.int64)) * 8
    raw = np.empty(n_bytes + _ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % _ALIGNMENT
    return raw[start : start + n_bytes].view(np.float64).reshape(shape)


def adopt(array: Float[np.ndarray, "..."]) -> Float[Array, "..."]:
    """A JAX array holding `array`; on CPU it shares the (aligned) memory instead of copying.

    The NumPy array must not be modified afterwards.
    """
    return jax.device_put(array)


def check_dt(dt: Any, *, argument: str = "dt") -> float | None:
    """Validates a frame period given by the user: `None`, or a finite positive number (s)."""
    if dt is None:
        return None
    if isinstance(dt, np.ndarray) and dt.size == 1:
        dt = dt.reshape(()).item()
    if isinstance(dt, bool) or not isinstance(dt, numbers.Real):
        raise TypeError(f"`{argument}` must be a number of seconds; got {dt!r}.")
    value = float(dt)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{argument}` must be a positive frame period in seconds; got {value}.")
    return value


def plain(value: Any) -> Any:
    """`value` with arrays, lists and NumPy scalars turned into tuples and Python scalars, so
    that `XPCSData.metadata` holds only hashable plain values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, jax.Array)):
        value = np.asarray(value)
        return value.item() if value.ndim == 0 else tuple(plain(v) for v in value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def assemble_maps(
    read_block: BlockReader,
    indices: Int[np.ndarray, " selected"],
    names: Sequence[str],
    row_start: int,
    row_stop: int,
    *,
    what: str = "c2",
    source: str | None = None,
) -> tuple[Float[np.ndarray, "selected w w"], tuple[str, ...]]:
    """Reads the window of every selected map and rebuilds the full symmetric maps.

    **Arguments:**

    - `read_block`: `read_block(i, a, b)` returns rows and columns `a:b` of stored map `i`.
    - `indices`: the maps to read.
    - `names`: a name for every map (all maps, not only the selected), for error messages.
    - `row_start`, `row_stop`: the window.
    - `what`: what the maps hold, for error messages.
    - `source`: where the maps come from (a file name), for error messages.

    **Returns:**

    `(maps, triangles)`: a 64-byte aligned float64 array of shape `(len(indices), w, w)` and
    the triangle found in each stored map. Raises `ValueError` for NaN/Inf in a selected window.
    """
    width = row_stop - row_start
    where = "" if source is None else f"{source}: "
    out = aligned_empty((len(indices), width, width))
    triangles = []
    for position, index in enumerate(indices):
        block = np.asarray(read_block(int(index), row_start, row_stop))
        if block.dtype.kind not in "fiub":
            raise ValueError(
                f"{where}{what} map {names[index]!r} holds {block.dtype} values; two-time maps "
                "are real numbers."
            )
        if block.shape != (width, width):
            raise ValueError(
                f"{where}{what} map {names[index]!r}: expected a ({width}, {width}) window, read "
                f"{block.shape}; the stored map is not square or is smaller than the others."
            )
        finite = np.isfinite(block)
        if not finite.all():
            bad = int(block.size - np.count_nonzero(finite))
            raise ValueError(
                f"{where}{what} map {names[index]!r} holds {bad} NaN/Inf values in the selected "
                "frames; choose other maps (q=, phi=) or another frame window (frames=), or "
                "repair the file."
            )
        del finite
        triangles.append(
            rebuild_into(block, out[position], name=f"{where}{what} map {names[index]!r}")
        )
    return out, tuple(triangles)


def load_catalog(
    catalog: MapCatalog,
    read_block: BlockReader,
    *,
    source: str,
    q: Any = None,
    phi: Any = None,
    frames: Any = None,
    dt: Any = None,
    diagonal: str = "interpolate",
    q_tolerance: Any = None,
    phi_tolerance: Any = None,
    times: Float[np.ndarray, " t"] | None = None,
    read_sigma: BlockReader | None = None,
    bins: bool = True,
) -> XPCSData:
    """Selects maps and frames from `catalog`, reads them, and returns the `XPCSData`.

    Times: with `times` (explicit, flat sources) the selected rows of `times`; otherwise
    t = k·dt for the selected 1-based frames k, dt being `dt` when given, else the
    catalog's frame period.

    **Arguments:**

    - `catalog`: the maps of the source.
    - `read_block`: reads the window of one stored map (see `assemble_maps`).
    - `source`: a description of the source (file path) for the metadata.
    - `q`, `phi`, `q_tolerance`, `phi_tolerance`: the selection (see `select_maps`).
    - `frames`: `(first, last)` 1-based inclusive frame numbers, or `None`.
    - `dt`: the frame period in seconds overriding the catalog's, or `None`.
    - `diagonal`: `"interpolate"`, `"mask"` or `"none"`.
    - `times`: explicit times of the stored rows, or `None`.
    - `read_sigma`: reads the window of one stored σ map, or `None`.
    - `bins`: read the selected maps' bin geometry when the catalog describes one.

    **Returns:**

    The `XPCSData` of the selection.
    """
    diagonal = check_diagonal_mode(diagonal)
    dt_value = check_dt(dt)
    dt_source = "argument"
    if dt_value is None:
        dt_value, dt_source = catalog.frame_period, "file"
    if dt_value is None:
        key = catalog.metadata.get("frame_period_key")
        recorded = None if key is None else catalog.metadata.get(key.rsplit("/", 1)[-1])
        found = "is missing" if recorded is None else f"= {recorded}, not a positive number"
        raise ValueError(
            f"{source!r} records no frame period ({catalog.layout} layout: "
            f"{key or 'no time information'} {found}); pass dt= (the time between map rows, in "
            "seconds)."
        )
    indices = select_maps(
        catalog.q,
        catalog.phi,
        q=q,
        phi=phi,
        q_tolerance=q_tolerance,
        phi_tolerance=phi_tolerance,
        q_grid=catalog.q_grid,
        phi_grid=catalog.phi_grid,
    )
    if catalog.first_frame is None:
        if frames is not None:
            raise ValueError(
                f"`frames` = {frames!r} needs frame numbers, but the times of {source!r} are not "
                "on a grid t = k·dt; select rows by slicing the arrays instead."
            )
        row_start, row_stop, first, last = 0, catalog.n_frames, None, None
    else:
        row_start, row_stop, first, last = frame_window(
            frames, first_frame=catalog.first_frame, n_frames=catalog.n_frames
        )
    geometry = catalog.bins(indices) if bins and catalog.bins is not None else None
    c2, triangles = assemble_maps(
        read_block, indices, catalog.keys, row_start, row_stop, source=source
    )
    apply_diagonal_mode(c2, diagonal)
    sigma = None
    if read_sigma is not None:
        sigma_maps, _ = assemble_maps(
            read_sigma, indices, catalog.keys, row_start, row_stop, what="sigma", source=source
        )
        sigma = adopt(sigma_maps)
    if times is not None:
        t = np.array(times[row_start:row_stop], dtype=np.float64)
    else:
        assert first is not None and last is not None
        t = np.arange(first, last + 1, dtype=np.float64) * dt_value
    metadata = dict(catalog.metadata)
    metadata.pop("frame_period_key", None)
    metadata.update(
        source=source,
        layout=catalog.layout,
        maps=tuple(catalog.keys[i] for i in indices),
        bins=tuple(int(label) for label in catalog.labels[indices]),
        selection={
            "q": q,
            "phi": phi,
            "q_tolerance": q_tolerance,
            "phi_tolerance": phi_tolerance,
            "frames": frames,
        },
        frames=None if first is None else (first, last),
        frames_in_file=(
            None
            if catalog.first_frame is None
            else (catalog.first_frame, catalog.first_frame + catalog.n_frames - 1)
        ),
        dt_source=dt_source,
        triangles=triangles,
        diagonal=diagonal,
        bin_geometry=None if geometry is None else geometry.source,
    )
    return XPCSData(
        adopt(c2),
        t,
        q=catalog.q[indices],
        phi=catalog.phi[indices],
        dt=dt_value,
        sigma=sigma,
        diagonal=diagonal,  # pyright: ignore[reportArgumentType]
        metadata=plain(metadata),
        bins=geometry,
    )
