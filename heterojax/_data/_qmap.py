"""Detector geometry of APS q maps: the q and φ of every pixel, and each bin's pixels.

Pixel (row, col) of the detector image, with the beam centre (bcx, bcy) in pixels, pixel size p
and sample–detector distance d in one length unit, and the photon energy E in keV
(λ = 12.398 / E Å), sits at (as pyXpcsViewer / pySimpleMask compute it)

    φ  = −atan2(row − bcy, col − bcx)   (degrees; 0 along +x, counter-clockwise on screen)
    2θ = atan(p · hypot(row − bcy, col − bcx) / d)
    q  = 4π/λ · sin(2θ / 2)             (Å⁻¹).

(pySimpleMask writes q = 2π/λ · sin 2θ, which differs by (2θ)²/8 relative, < 1e-5 at SAXS
angles.) A map's bin is the set of pixels whose `dynamic_roi_map` label is the map's processed
bin; its `BinGeometry` is the quadrature rule of those pixels' (q, φ) (`BinGeometry.from_pixels`).
"""

import os
import warnings
from collections.abc import Callable

import h5py
import numpy as np
from jaxtyping import Float, Int, UInt

from .._model._bins import BinGeometry
from ._hdf5 import check_numbers, lookup, read_scalar


KEV_ANGSTROM = 12.398  # λ[Å] = 12.398 / E[keV]
QMAP = "/xpcs/qmap"
INCIDENT_ENERGY = "/entry/instrument/incident_beam/incident_energy"
BinReader = Callable[[Int[np.ndarray, " selected"]], BinGeometry | None]


def pixel_q_phi(
    shape: tuple[int, int],
    *,
    beam_center_x: float,
    beam_center_y: float,
    pixel_size: float,
    detector_distance: float,
    energy: float,
) -> tuple[Float[np.ndarray, "y x"], Float[np.ndarray, "y x"]]:
    """q (Å⁻¹) and φ (deg) of every pixel of an image of `shape` (module doc).

    **Arguments:** the image shape `(rows, columns)`; the beam centre in pixels (x = column,
    y = row); pixel size and detector distance in the same length unit; energy in keV.
    """
    rows, columns = np.indices(shape, dtype=np.float64)
    dy, dx = rows - beam_center_y, columns - beam_center_x
    phi = -np.rad2deg(np.arctan2(dy, dx))
    two_theta = np.arctan(np.hypot(dx, dy) * pixel_size / detector_distance)
    q = 4 * np.pi * energy / KEV_ANGSTROM * np.sin(two_theta / 2)
    return q, phi


def bins_from_labels(
    roi_map: UInt[np.ndarray, "y x"],
    labels: Int[np.ndarray, " map"],
    q_pixels: Float[np.ndarray, "y x"],
    phi_pixels: Float[np.ndarray, "y x"],
    phi_centres: Float[np.ndarray, " map"],
) -> BinGeometry:
    """The `BinGeometry` of the maps whose bins carry `labels` in `roi_map`.

    Pixels are grouped by one stable sort of the labels (no loop over pixels); a label with no
    pixel raises `ValueError`.
    """
    flat = np.asarray(roi_map).ravel()
    order = np.argsort(flat, kind="stable")
    ordered = flat[order]
    starts = np.searchsorted(ordered, labels, side="left")
    stops = np.searchsorted(ordered, labels, side="right")
    empty = [int(label) for label, a, b in zip(labels, starts, stops) if b <= a]
    if empty:
        raise ValueError(f"the q map has no pixel with label(s) {empty[:10]}.")
    q_flat, phi_flat = np.asarray(q_pixels).ravel(), np.asarray(phi_pixels).ravel()
    members = [order[a:b] for a, b in zip(starts, stops)]
    return BinGeometry.from_pixels(
        [q_flat[m] for m in members], [phi_flat[m] for m in members], phi_centre=phi_centres
    )


def nexus_bin_reader(
    h5: h5py.File, labels: Int[np.ndarray, " map"], phi: Float[np.ndarray, " map"]
) -> BinReader | None:
    """A reader of the selected maps' bin geometry from a NeXus file's q map, or `None` when the
    file lacks the ROI map or any of the detector geometry (beam centre, pixel size, distance,
    energy: `/xpcs/qmap/energy` or the incident energy)."""
    filename = os.path.basename(h5.filename)
    roi = lookup(h5, f"{QMAP}/dynamic_roi_map")
    if roi is None:
        return None
    values = {
        name: read_scalar(h5, f"{QMAP}/{name}")
        for name in ("beam_center_x", "beam_center_y", "pixel_size", "detector_distance")
    }
    values["energy"] = read_scalar(h5, f"{QMAP}/energy", read_scalar(h5, INCIDENT_ENERGY))
    if any(v is None for v in values.values()):
        return None
    if not isinstance(roi, h5py.Dataset) or roi.ndim != 2:
        raise ValueError(
            f"{filename!r}: {QMAP}/dynamic_roi_map should be a 2-D detector image of bin labels; "
            f"got {roi}."
        )
    for name, value in values.items():
        # Recorded but unusable geometry is a damaged file, not a file without geometry.
        positive = name in ("pixel_size", "detector_distance", "energy")
        if not np.isfinite(value) or (positive and not value > 0):  # pyright: ignore[reportArgumentType, reportOptionalOperand]
            raise ValueError(
                f"{filename!r}: the q map's {name} is {value}; it should be a finite"
                f"{' positive' if positive else ''} number."
            )

    def read(indices: Int[np.ndarray, " selected"]) -> BinGeometry | None:
        roi_map = np.asarray(roi[()])
        if roi_map.dtype.kind not in "iu":
            raise ValueError(
                f"{filename!r}: {QMAP}/dynamic_roi_map should hold integer bin labels; got "
                f"{roi_map.dtype} values."
            )
        q_pixels, phi_pixels = pixel_q_phi(roi_map.shape, **values)  # pyright: ignore[reportArgumentType]
        try:
            return bins_from_labels(roi_map, labels[indices], q_pixels, phi_pixels, phi[indices])
        except ValueError as error:
            warnings.warn(
                f"{filename!r}: no bin geometry ({error}); the maps are read without it and "
                "fitted with the bin-centre model.",
                stacklevel=4,
            )
            return None

    return read


def legacy_bin_reader(
    h5: h5py.File, labels: Int[np.ndarray, " map"], n_phi: int | None
) -> BinReader | None:
    """A reader of bin geometry from a legacy file's spans: `/xpcs/dqspan` (n_q + 1 edges) and
    `/xpcs/dphispan` (n_φ + 1 edges) with `dnoq`, `dnophi`; `None` when they are absent or do
    not have those sizes. Bin label ℓ is (q index, φ index) = divmod(ℓ − 1, n_φ)."""
    n_q = read_scalar(h5, "/xpcs/dnoq")
    if n_phi is None or n_q is None or "/xpcs/dqspan" not in h5 or "/xpcs/dphispan" not in h5:
        return None
    filename = os.path.basename(h5.filename)
    q_edges, phi_edges = (
        check_numbers(np.asarray(h5[key][()]), key=key, filename=filename)  # pyright: ignore[reportIndexIssue]
        for key in ("/xpcs/dqspan", "/xpcs/dphispan")
    )
    if q_edges.size != int(n_q) + 1 or phi_edges.size != n_phi + 1:
        return None

    def read(indices: Int[np.ndarray, " selected"]) -> BinGeometry | None:
        q_index, phi_index = np.divmod(labels[indices] - 1, n_phi)
        q_low, q_high = q_edges[q_index], q_edges[q_index + 1]
        phi_low, phi_high = phi_edges[phi_index], phi_edges[phi_index + 1]
        return BinGeometry.from_widths(
            (q_low + q_high) / 2, (phi_low + phi_high) / 2, q_high - q_low, phi_high - phi_low
        )

    return read


# ----------------------------------------------------------------------------- writing


def synthetic_detector(
    bins: BinGeometry,
    bin_labels: Int[np.ndarray, " map"],
    *,
    pixels_across: int = 24,
    max_side: int = 2048,
) -> dict[str, np.ndarray | float] | None:
    """A detector image whose pixels draw every bin's (q, φ) box, with its geometry.

    The pixel size in q is chosen so that the narrowest bin dimension spans about
    `pixels_across` pixels (fewer, down to 4, when the image would exceed `max_side`); energy
    10 keV, pixel 0.075 mm, the distance follows. Returns the datasets of `/xpcs/qmap`
    (`dynamic_roi_map`, `beam_center_x/y`, `pixel_size`, `detector_distance`, `energy`,
    `mask`), or `None` with a warning when the bins cannot be drawn (zero width, too narrow
    for the image size, or overlapping).
    """
    q_centre, q_width = np.asarray(bins.q_centre), np.asarray(bins.q_width)
    phi_centre, phi_width = np.asarray(bins.phi_centre), np.asarray(bins.phi_width)
    q_low, q_high = q_centre - q_width / 2, q_centre + q_width / 2
    smallest = float(np.min(np.minimum(q_width, q_low * np.deg2rad(phi_width))))
    if not smallest > 0:
        warnings.warn(
            "bins of zero width cannot be drawn on a detector; the file gets a block q map "
            "without geometry.",
            stacklevel=4,
        )
        return None
    across = float(pixels_across)
    radius = float(np.max(q_high)) / (smallest / across)
    if 2 * radius + 3 > max_side:
        across *= (max_side - 3) / (2 * radius)
        radius = (max_side - 3) / 2
    if across < 4:
        warnings.warn(
            f"the bins are too narrow next to q_max = {np.max(q_high):.3g} Å⁻¹ to draw on a "
            f"{max_side}² detector; the file gets a block q map without geometry.",
            stacklevel=4,
        )
        return None
    energy, pixel_size = 10.0, 0.075
    q_per_pixel = smallest / across
    # q ≈ (4π/λ)·(p r / d)/2 near the beam, so d = (2π/λ)·p / (q per pixel).
    distance = 2 * np.pi * energy / KEV_ANGSTROM * pixel_size / q_per_pixel
    side = int(np.ceil(2 * radius)) + 3
    geometry = {
        "beam_center_x": side / 2 + 0.31,  # off the pixel grid: no pixel sits on a bin edge
        "beam_center_y": side / 2 - 0.27,
        "pixel_size": pixel_size,
        "detector_distance": float(distance),
        "energy": energy,
    }
    q, phi = pixel_q_phi((side, side), **geometry)  # pyright: ignore[reportArgumentType]
    roi_map = np.zeros((side, side), np.uint32)
    for a in range(q_centre.size):
        offset = (phi - phi_centre[a] + 180.0) % 360.0 - 180.0
        inside = (
            (q >= q_low[a])
            & (q < q_high[a])
            & (offset >= -phi_width[a] / 2)
            & (offset < phi_width[a] / 2)
        )
        if np.any(roi_map[inside]):
            warnings.warn(
                "the bins overlap on the detector; the file gets a block q map without geometry.",
                stacklevel=4,
            )
            return None
        if not np.any(inside):
            warnings.warn(
                f"bin {a} covers no pixel of the synthetic detector; the file gets a block q map "
                "without geometry.",
                stacklevel=4,
            )
            return None
        roi_map[inside] = bin_labels[a]
    return {"dynamic_roi_map": roi_map, "mask": np.ones((side, side), np.int32), **geometry}  # pyright: ignore[reportReturnType]
