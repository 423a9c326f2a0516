"""Selection rules shared by every loader: which maps (q, φ) and which frames to read.

q: a value picks the nearest q bin, accepted when the value lies within half a bin spacing of
that bin's centre (towards the neighbouring bin on the value's side; within 10 % when the file
has a single q bin); with `q_tolerance`, every map within the tolerance is kept. Bins that hold
no map (empty in the file) are never replaced by a neighbour: asking for one is an error.

φ: a value picks, at every selected q, the map nearest in angle (compared modulo 360°), accepted
within `phi_tolerance` (default: half the smallest spacing of the φ partition, so a request
falling in an empty sector finds nothing; a single φ bin accepts every angle). A pair
`(start, stop)` is a range swept counter-clockwise from `start` to `stop`, so `(170, -170)` is
the 20° across ±180° and `(-10, 10)` the 20° around 0°.

Frames: `(first, last)`, 1-based and inclusive in the frame numbering of the file, frame k at
t = k·dt.
"""

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Bool, Float, Int


# Slack for comparisons of values that went through float arithmetic (degrees or Å⁻¹ scale).
_SLACK = 1e-9


def _format_values(values: Float[np.ndarray, " n"], unit: str) -> str:
    distinct = np.unique(np.asarray(values, dtype=float))
    text = ", ".join(f"{v:.6g}" for v in distinct[:40])
    if distinct.size > 40:
        text += f", … ({distinct.size} values)"
    return f"[{text}] {unit}"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_number(value: Any, *, argument: str) -> float:
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not _is_number(value) or not np.isfinite(float(value)):
        raise TypeError(
            f"`{argument}` entries must be finite numbers; got {value!r} ({type(value).__name__})."
        )
    return float(value)


def _as_sequence(request: Any) -> list[Any]:
    if isinstance(request, np.ndarray):
        return list(request) if request.ndim else [request.item()]
    if isinstance(request, (str, bytes)):
        return [request]
    if isinstance(request, Sequence):
        return list(request)
    return [request]


def circular_distance(a: Float[np.ndarray, "*shape"], b: float) -> Float[np.ndarray, "*shape"]:
    """|a − b| on the circle, in degrees, in [0, 180]."""
    return np.asarray(np.abs((np.asarray(a, dtype=float) - b + 180.0) % 360.0 - 180.0))


def in_arc(angles: Float[np.ndarray, " n"], start: float, stop: float) -> Bool[np.ndarray, " n"]:
    """Whether each angle lies on the arc swept counter-clockwise from `start` to `stop` (deg).

    An arc of 360° or more is the whole circle; the end points are included.
    """
    width = stop - start
    if width >= 360.0:
        return np.ones(np.shape(angles), bool)
    width %= 360.0
    offset = (np.asarray(angles, dtype=float) - start) % 360.0
    return (offset <= width + _SLACK) | (offset >= 360.0 - _SLACK)


def _phi_spacing(angles: Float[np.ndarray, " n"]) -> float:
    """The smallest gap between distinct angles on the circle (360 for a single angle)."""
    distinct = np.unique(np.round(np.asarray(angles, dtype=float) % 360.0, 9))
    if distinct.size < 2:
        return 360.0
    gaps = np.diff(np.concatenate([distinct, distinct[:1] + 360.0]))
    return float(np.min(gaps))


def _nearest_q_bin(centres: Float[np.ndarray, " n"], request: float) -> tuple[float, float]:
    """The nearest bin centre and the half-width accepted around it on the request's side."""
    index = int(np.argmin(np.abs(centres - request)))
    centre = float(centres[index])
    if centres.size == 1:
        return centre, 0.1 * abs(centre)
    if request >= centre:
        neighbour = centres[index + 1] if index + 1 < centres.size else centres[index - 1]
    else:
        neighbour = centres[index - 1] if index > 0 else centres[index + 1]
    return centre, 0.5 * abs(float(neighbour) - centre)


def select_q(
    q_map: Float[np.ndarray, " map"],
    q: Any,
    *,
    tolerance: Any = None,
    grid: Float[np.ndarray, " qbin"] | None = None,
) -> Bool[np.ndarray, " map"]:
    """Which maps the `q=` request selects.

    **Arguments:**

    - `q_map`: the q of every map (Å⁻¹).
    - `q`: `None` (all maps), a number, or a sequence of numbers (the union).
    - `tolerance`: `None` for the nearest bin, else keep every map with |q_map − q| ≤ tolerance.
    - `grid`: the q bin centres of the file's partition, empty bins included, when known.

    **Returns:**

    A boolean mask over the maps. Raises `ValueError` when a request has nothing near, naming
    the q values available.
    """
    q_map = np.asarray(q_map, dtype=float)
    if q is None:
        return np.ones(q_map.shape, bool)
    requests = [_as_number(value, argument="q") for value in _as_sequence(q)]
    if not requests:
        raise ValueError("`q` is an empty sequence; pass None for all maps or the q values wanted.")
    if tolerance is not None:
        tolerance = _as_number(tolerance, argument="q_tolerance")
        if tolerance < 0:
            raise ValueError(f"`q_tolerance` must be non-negative (Å⁻¹); got {tolerance}.")
    centres = np.unique(q_map if grid is None else np.asarray(grid, dtype=float))
    selected = np.zeros(q_map.shape, bool)
    for request in requests:
        if tolerance is not None:
            hit = np.abs(q_map - request) <= tolerance * (1 + _SLACK)
            if not np.any(hit):
                raise ValueError(
                    f"`q`: no map within q_tolerance = {tolerance:.6g} of q = {request:.6g} Å⁻¹; "
                    f"available q: {_format_values(q_map, 'Å⁻¹')}."
                )
        else:
            centre, half_width = _nearest_q_bin(centres, request)
            if abs(request - centre) > half_width * (1 + _SLACK):
                raise ValueError(
                    f"`q`: nothing near q = {request:.6g} Å⁻¹ (the nearest bin, {centre:.6g}, is "
                    f"more than half a bin spacing away); available q: "
                    f"{_format_values(q_map, 'Å⁻¹')}. Pass q_tolerance= to widen the match."
                )
            hit = np.isclose(q_map, centre, rtol=1e-12, atol=0.0)
            if not np.any(hit):
                raise ValueError(
                    f"`q`: the q bin at {centre:.6g} Å⁻¹ nearest to q = {request:.6g} holds no map "
                    f"in this file (empty bin); available q: {_format_values(q_map, 'Å⁻¹')}."
                )
        selected |= hit
    return selected


def _parse_phi(phi: Any) -> list[float | tuple[float, float]]:
    requests: list[float | tuple[float, float]] = []
    for item in _as_sequence(phi):
        if isinstance(item, (Sequence, np.ndarray)) and not isinstance(item, (str, bytes)):
            pair = list(np.asarray(item).reshape(-1)) if isinstance(item, np.ndarray) else item
            if len(pair) != 2:
                raise ValueError(
                    f"`phi` ranges are pairs (start, stop) in degrees; got {item!r}. Give angles "
                    "as numbers and ranges as 2-tuples, e.g. phi=[0, 90, (170, -170)]."
                )
            requests.append(
                (_as_number(pair[0], argument="phi"), _as_number(pair[1], argument="phi"))
            )
        else:
            requests.append(_as_number(item, argument="phi"))
    if not requests:
        raise ValueError("`phi` is an empty sequence; pass None for all maps or the angles wanted.")
    return requests


def select_phi(
    q_map: Float[np.ndarray, " map"],
    phi_map: Float[np.ndarray, " map"],
    phi: Any,
    *,
    candidates: Bool[np.ndarray, " map"],
    tolerance: Any = None,
    grid: Float[np.ndarray, " phibin"] | None = None,
) -> Bool[np.ndarray, " map"]:
    """Which of the `candidates` (the maps at the selected q) the `phi=` request selects.

    **Arguments:**

    - `q_map`, `phi_map`: the q (Å⁻¹) and φ (deg) of every map.
    - `phi`: `None` (all candidates), a number, a `(start, stop)` range given inside a list, or
        a list mixing both, e.g. `[0, 90, (170, -170)]`. A plain list of numbers (even of
        two) is a list of angles.
    - `candidates`: the maps the q selection kept.
    - `tolerance`: the largest accepted angular distance for a requested angle (degrees);
        `None`: half the smallest spacing of `grid` (or of the angles present).
    - `grid`: the φ bin centres of the file's partition, empty bins included, when known.

    **Returns:**

    A boolean mask over the maps. Raises `ValueError` when a request has nothing near, naming
    the angles available.
    """
    if phi is None:
        return candidates.copy()
    requests = _parse_phi(phi)
    phi_map = np.asarray(phi_map, dtype=float)
    q_map = np.asarray(q_map, dtype=float)
    if tolerance is None:
        tolerance = 0.5 * _phi_spacing(phi_map if grid is None else np.asarray(grid, dtype=float))
    else:
        tolerance = _as_number(tolerance, argument="phi_tolerance")
        if tolerance < 0:
            raise ValueError(f"`phi_tolerance` must be non-negative (degrees); got {tolerance}.")
    available = _format_values(phi_map[candidates], "deg")
    selected = np.zeros(phi_map.shape, bool)
    for request in requests:
        hit = np.zeros(phi_map.shape, bool)
        if isinstance(request, tuple):
            hit = candidates & in_arc(phi_map, *request)
            if not np.any(hit):
                raise ValueError(
                    f"`phi`: no map in the range {request} (counter-clockwise from "
                    f"{request[0]:g}° to {request[1]:g}°) at the selected q; available φ: "
                    f"{available}."
                )
        else:
            for q_value in np.unique(q_map[candidates]):
                group = np.flatnonzero(candidates & (q_map == q_value))
                distance = circular_distance(phi_map[group], request)
                nearest = int(np.argmin(distance))
                if distance[nearest] <= tolerance + _SLACK:
                    hit[group[nearest]] = True
            if not np.any(hit):
                raise ValueError(
                    f"`phi`: no map within {tolerance:.6g}° of φ = {request:g}° at the selected "
                    f"q; available φ: {available}. Pass phi_tolerance= to widen the match."
                )
        selected |= hit
    return selected


def select_maps(
    q_map: Float[np.ndarray, " map"],
    phi_map: Float[np.ndarray, " map"],
    *,
    q: Any = None,
    phi: Any = None,
    q_tolerance: Any = None,
    phi_tolerance: Any = None,
    q_grid: Float[np.ndarray, " qbin"] | None = None,
    phi_grid: Float[np.ndarray, " phibin"] | None = None,
) -> Int[np.ndarray, " selected"]:
    """The indices (ascending, file order) of the maps that `q=` and `phi=` select.

    **Arguments:** as `select_q` and `select_phi`.

    **Returns:**

    A non-empty integer array of map indices.
    """
    by_q = select_q(q_map, q, tolerance=q_tolerance, grid=q_grid)
    chosen = select_phi(
        q_map, phi_map, phi, candidates=by_q, tolerance=phi_tolerance, grid=phi_grid
    )
    return np.flatnonzero(chosen)


def frame_window(frames: Any, *, first_frame: int, n_frames: int) -> tuple[int, int, int, int]:
    """The map rows that a `frames=(first, last)` request selects.

    **Arguments:**

    - `frames`: `None` (every frame) or `(first, last)`, 1-based frame numbers, inclusive.
    - `first_frame`: the frame number of map row 0.
    - `n_frames`: rows per map.

    **Returns:**

    `(row_start, row_stop, first, last)`: rows `row_start:row_stop` of the maps are frames
    `first..last`. Raises `ValueError` for an empty window, one outside the file, or one with
    fewer than two frames (no (t1, t2) pair).
    """
    last_frame = first_frame + n_frames - 1
    if frames is None:
        first, last = first_frame, last_frame
    else:
        items = _as_sequence(frames)
        if len(items) != 2 or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items
        ):
            raise TypeError(
                f"`frames` must be a pair of integers (first, last), 1-based and inclusive; "
                f"got {frames!r}."
            )
        first, last = int(items[0]), int(items[1])
        if first > last:
            raise ValueError(
                f"`frames` = ({first}, {last}) is an empty frame window (first > last); the file "
                f"holds frames {first_frame}..{last_frame}."
            )
        if first < first_frame or last > last_frame:
            raise ValueError(
                f"`frames` = ({first}, {last}) lies outside the frames in the file, "
                f"{first_frame}..{last_frame} (1-based, inclusive)."
            )
    if last - first + 1 < 2:
        raise ValueError(
            f"`frames` = ({first}, {last}) holds {last - first + 1} frame; a two-time map needs at "
            "least two frames."
        )
    return first - first_frame, last - first_frame + 1, first, last
