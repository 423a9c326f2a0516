"""What a result file holds, before any map is read: one entry per map with its bin and axes."""

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float, Int


# Root attribute of files written by `save_aps`: where heterojax made the maps.
MAPS_FROM = "heterojax_maps_from"


@dataclasses.dataclass(frozen=True)
class MapCatalog:
    """The maps of one file and how to place them in q, φ and time; nothing is read yet.

    **Fields:**

    - `layout`: `"nexus"`, `"legacy"` or `"flat"`.
    - `group`: the HDF5 group holding the maps (`""` for in-memory arrays).
    - `keys`: the dataset name of every map, in file order (ascending integer suffix).
    - `labels`: the bin label of every map (dynamic ROI label; 1-based), or the map index.
    - `q`: wavevector of every map (Å⁻¹).
    - `phi`: angle of every map (degrees).
    - `q_grid`, `phi_grid`: the centres of the full (q, φ) partition, empty bins included, when
        the file records them; selection uses their spacing to decide what is "near".
    - `n_frames`: rows (= columns) of every map.
    - `frame_period`: the spacing of the map rows in seconds (raw frame period × stride ×
        average), or `None` when the file does not record it.
    - `first_frame`: the 1-based frame number of map row 0 (frame k at t = k·dt), or
        `None` for explicit times that are not on a grid t = k·dt (then `frames=` is refused).
    - `metadata`: plain values describing the file, copied into `XPCSData.metadata`.
    - `bins`: a reader of the `BinGeometry` of the maps at given indices (from the file's q map
        or bin spans), or `None` when the file describes no bin extent.
    """

    layout: str
    group: str
    keys: tuple[str, ...]
    labels: Int[np.ndarray, " map"]
    q: Float[np.ndarray, " map"]
    phi: Float[np.ndarray, " map"]
    q_grid: Float[np.ndarray, " qbin"] | None
    phi_grid: Float[np.ndarray, " phibin"] | None
    n_frames: int
    frame_period: float | None
    first_frame: int | None
    metadata: dict[str, Any]
    bins: Callable[[Int[np.ndarray, " selected"]], Any] | None = None


def first_frame_number(raw_begin: int, binning: int, *, source: str) -> int:
    """The 1-based frame number (in the binned series) of map row 0.

    Row n of a map averages raw frames `raw_begin + n·binning … raw_begin + (n+1)·binning − 1`
    (0-based), where `binning = stride × average`. Frame k of the binned series sits at
    t = k·dt with dt = raw period × binning, at the end of its block, so row n is
    frame `raw_begin / binning + 1 + n`. When `raw_begin` is not a multiple of `binning` the
    origin is rounded down to a whole binned frame, with a warning (the time axis is then early
    by less than one dt; the position inside an averaged block is uncertain by as much anyway).

    **Arguments:**

    - `raw_begin`: 0-based index of the first raw frame used.
    - `binning`: raw frames per map row (≥ 1).
    - `source`: where `raw_begin` came from, for the warning.

    **Returns:**

    The frame number of row 0 (≥ 1).
    """
    if raw_begin < 0:
        warnings.warn(
            f"{source} = {raw_begin} counts from the end of the raw series, whose length is not "
            "recorded; the time axis starts at frame 1. Pass `frames=` and check the times.",
            stacklevel=3,
        )
        return 1
    whole, rest = divmod(raw_begin, binning)
    if rest:
        warnings.warn(
            f"{source} = {raw_begin} is not a multiple of the frame binning {binning}; row 0 is "
            f"taken as binned frame {whole + 1} (times early by {rest}/{binning} of dt).",
            stacklevel=3,
        )
    return whole + 1


def check_square_maps(shapes: Sequence[tuple[int, ...]], names: Sequence[str]) -> int:
    """The common side of the stored maps; a `ValueError` for non-square or mismatched maps."""
    for name, shape in zip(names, shapes):
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(
                f"c2 map {name!r} has shape {shape}; two-time maps must be square (T, T)."
            )
    sides = sorted({shape[0] for shape in shapes})
    if len(sides) > 1:
        listing = ", ".join(f"{name}: {shape}" for name, shape in list(zip(names, shapes))[:20])
        raise ValueError(
            f"the c2 maps have different sizes {sides} ({listing}); every map of one measurement "
            "must cover the same frames."
        )
    if sides[0] < 2:
        raise ValueError(f"the c2 maps are {sides[0]}×{sides[0]}; at least 2×2 is needed.")
    return sides[0]
