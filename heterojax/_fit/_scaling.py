"""Per-angle contrast and offset as linear functions of a few fitted coefficients.

Every scaling mode writes the per-angle values as a fixed basis times coefficients,

    contrast = B_c · a,   offset = B_o · b,   B: (n_angles, n_coefficients),

so fits see one coefficient vector whatever the mode:

- `"individual"`: B = I — each angle its own contrast and offset (2·n_angles coefficients).
- `"constant"`: B = 1 — one contrast and one offset shared by all angles.
- `"fourier"`: B = [1, cos φ, sin φ, …, cos Kφ, sin Kφ] (φ in radians) — a smooth order-K series
  in the detector angle (2·(2K + 1) coefficients); needs at least 2K + 1 distinct angles.
- `"auto"`: `"individual"` for up to 6 maps (cheap and most flexible), else `"fourier"` with
  K = 2, which keeps the count of nuisance parameters at 10 however many angles there are.

Maps at several q (a whole file) get each rule per q ring (`resolve_scaling`'s `q`).
"""

import dataclasses
import math

import numpy as np

from .._parameters import CONTRAST_SPEC, OFFSET_SPEC, ParameterSpec


SCALING_MODES = ("auto", "individual", "constant", "fourier")
AUTO_INDIVIDUAL_MAX_ANGLES = 6
AUTO_FOURIER_ORDER = 2
# Bounds of the higher Fourier coefficients (the k = 0 term keeps the contrast/offset bounds).
_FOURIER_HARMONIC_BOUND = {"contrast": 0.5, "offset": 0.5}


@dataclasses.dataclass(frozen=True)
class Scaling:
    """A resolved scaling mode: bases and the specs (names, bounds) of the coefficients.

    **Fields:**

    - `mode`: `"individual"`, `"constant"` or `"fourier"` (never `"auto"`).
    - `order`: the Fourier order K (0 otherwise).
    - `contrast_basis`, `offset_basis`: NumPy arrays `(n_angles, n_coefficients)`.
    - `contrast_specs`, `offset_specs`: one `ParameterSpec` per coefficient.
    """

    mode: str
    order: int
    contrast_basis: np.ndarray
    offset_basis: np.ndarray
    contrast_specs: tuple[ParameterSpec, ...]
    offset_specs: tuple[ParameterSpec, ...]

    @property
    def specs(self) -> tuple[ParameterSpec, ...]:
        """Coefficient specs, contrast first then offset (the order of the fit vector)."""
        return self.contrast_specs + self.offset_specs

    def coefficients_from_values(self, contrast: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Least-squares coefficients reproducing per-angle values, clipped into their bounds."""
        parts = []
        for basis, values, specs in (
            (self.contrast_basis, contrast, self.contrast_specs),
            (self.offset_basis, offset, self.offset_specs),
        ):
            coefficients = np.linalg.lstsq(basis, np.asarray(values, float), rcond=None)[0]
            lower = np.array([s.lower for s in specs])
            upper = np.array([s.upper for s in specs])
            parts.append(np.clip(coefficients, lower, upper))
        return np.concatenate(parts)


def q_rings(q: np.ndarray, *, relative_tolerance: float = 1e-6) -> list[np.ndarray]:
    """Indices of the maps of each q ring (maps whose q agree within the tolerance), by q."""
    q = np.asarray(q, float)
    order = np.argsort(q, kind="stable")
    rings: list[list[int]] = []
    for index in order:
        if rings and abs(q[index] - q[rings[-1][0]]) <= relative_tolerance * abs(q[index]):
            rings[-1].append(int(index))
        else:
            rings.append([int(index)])
    return [np.asarray(sorted(ring)) for ring in rings]


def _distinct_angles(phi: np.ndarray) -> int:
    return len(np.unique(np.round(np.mod(phi, 360.0), 9)))


def _fourier_specs(name: str, base: ParameterSpec, order: int, suffix: str):
    bound = _FOURIER_HARMONIC_BOUND[name]
    out = [base.renamed(f"{name}_0{suffix}")]
    for k in range(1, order + 1):
        for trig in ("cos", "sin"):
            out.append(ParameterSpec(f"{name}_{trig}{k}{suffix}", 0.0, -bound, bound, "-", ""))
    return out


def _ring_terms(mode: str, phi: np.ndarray, order: int, ring_label: str | None):
    """(basis, contrast specs, offset specs) of one q ring's maps (`ring_label` None: the data
    have one ring, and the names carry no q)."""
    n_angles = phi.shape[0]
    if mode == "individual":
        labels = [f"{float(p):g}" for p in phi]
        if ring_label is not None:
            labels = [f"{ring_label},{label}" for label in labels]
        return (
            np.eye(n_angles),
            [CONTRAST_SPEC.renamed(f"contrast[{label}]") for label in labels],
            [OFFSET_SPEC.renamed(f"offset[{label}]") for label in labels],
        )
    if mode == "constant":
        if ring_label is None:
            return np.ones((n_angles, 1)), [CONTRAST_SPEC], [OFFSET_SPEC]
        return (
            np.ones((n_angles, 1)),
            [CONTRAST_SPEC.renamed(f"contrast[{ring_label}]")],
            [OFFSET_SPEC.renamed(f"offset[{ring_label}]")],
        )
    n_distinct = _distinct_angles(phi)
    if order < 0 or n_distinct < 2 * order + 1:
        where = "" if ring_label is None else f" in the q ring {ring_label}"
        raise ValueError(
            f"Fourier scaling of order {order} needs at least {2 * order + 1} distinct angles; "
            f"the data have {n_distinct}{where}. Use a lower order or scaling='individual'."
        )
    radians = np.deg2rad(phi)
    columns = [np.ones(n_angles)]
    for k in range(1, order + 1):
        columns += [np.cos(k * radians), np.sin(k * radians)]
    suffix = "" if ring_label is None else f"[{ring_label}]"
    return (
        np.stack(columns, axis=1),
        _fourier_specs("contrast", CONTRAST_SPEC, order, suffix),
        _fourier_specs("offset", OFFSET_SPEC, order, suffix),
    )


def _auto_mode(phi: np.ndarray, rings: list[np.ndarray]) -> str:
    """`"individual"` while every ring has at most `AUTO_INDIVIDUAL_MAX_ANGLES` maps (or some
    ring has too few distinct angles for the series), else `"fourier"`."""
    if all(len(ring) <= AUTO_INDIVIDUAL_MAX_ANGLES for ring in rings):
        return "individual"
    enough = all(_distinct_angles(phi[ring]) >= 2 * AUTO_FOURIER_ORDER + 1 for ring in rings)
    return "fourier" if enough else "individual"


def resolve_scaling(
    mode: str, phi: np.ndarray, *, order: int | None = None, q: np.ndarray | None = None
) -> Scaling:
    """Turns a mode name into bases and coefficient specs for the given maps.

    **Arguments:**

    - `mode`: one of `"auto"`, `"individual"`, `"constant"`, `"fourier"`.
    - `phi`: the detector angle of each map (degrees).
    - `order`: Fourier order K (default 2), only for `"fourier"`.
    - `q`: the wavevector of each map. With several q rings (a whole file), every rule applies
      per ring: the speckle contrast and the baseline depend on q (the speckle size against
      the pixel, the coherent fraction) but not on φ, so `"constant"` is one contrast and one
      offset per ring and `"fourier"` a series in φ per ring; `"auto"` chooses from the
      largest ring. The names then carry the ring: `contrast[q0.0052,10]` (individual),
      `contrast[q0.0052]` (constant), `contrast_cos1[q0.0052]` (Fourier).

    **Returns:** a `Scaling`; its bases are block-diagonal over the rings.
    """
    phi = np.asarray(phi, float)
    if mode not in SCALING_MODES:
        raise ValueError(f"`scaling` must be one of {SCALING_MODES}; got {mode!r}.")
    rings = [np.arange(phi.shape[0])] if q is None else q_rings(np.asarray(q, float))
    if mode == "auto":
        mode = _auto_mode(phi, rings)
        order = AUTO_FOURIER_ORDER if mode == "fourier" else None
    order = (AUTO_FOURIER_ORDER if order is None else int(order)) if mode == "fourier" else 0
    q_values = None if q is None else np.asarray(q, float)
    parts = [
        _ring_terms(
            mode,
            phi[ring],
            order,
            None if len(rings) == 1 else f"q{float(q_values[ring[0]]):.4g}",
        )
        for ring in rings
    ]
    widths = [part[0].shape[1] for part in parts]
    basis = np.zeros((phi.shape[0], sum(widths)))
    start = 0
    for ring, part, width in zip(rings, parts, widths):
        basis[np.ix_(ring, np.arange(start, start + width))] = part[0]
        start += width
    contrast_specs = tuple(spec for part in parts for spec in part[1])
    offset_specs = tuple(spec for part in parts for spec in part[2])
    return Scaling(mode, order, basis, basis, contrast_specs, offset_specs)


def estimate_contrast_offset(
    c2: np.ndarray, mask: np.ndarray, *, far_fraction: float = 0.2, near_lags: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Data-driven start values per map: the far-lag plateau and the near-diagonal height.

        offset   ≈ median of c2 over the used pairs with lag ≥ (1 − far_fraction)·(N − 1),
        contrast ≈ median of c2 over the used pairs with 1 ≤ lag ≤ near_lags, minus offset,

    both clipped into their bounds. Decayed correlations (the usual case at far lags) make the
    plateau a good offset estimate; near the diagonal num/f² ≈ 1.

    **Arguments:** `c2` `(phi, t, t)` and the boolean `mask` of used entries (same shape).

    **Returns:** `(contrast, offset)`, one value per map.
    """
    n = c2.shape[-1]
    lag = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    far = lag >= max(1, math.floor((1 - far_fraction) * (n - 1)))
    near = (lag >= 1) & (lag <= near_lags)
    contrast, offset = [], []
    for values, used in zip(c2, mask):
        far_values = values[far & used] if np.any(far & used) else values[used]
        near_values = values[near & used] if np.any(near & used) else values[used]
        plateau = float(np.median(far_values))
        top = float(np.median(near_values))
        plateau = float(np.clip(plateau, OFFSET_SPEC.lower, OFFSET_SPEC.upper))
        offset.append(plateau)
        contrast.append(float(np.clip(top - plateau, 1e-3, CONTRAST_SPEC.upper)))
    return np.array(contrast), np.array(offset)
