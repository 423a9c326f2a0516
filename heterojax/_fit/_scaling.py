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


def _angle_labels(phi: np.ndarray) -> list[str]:
    return [f"{float(p):g}" for p in phi]


def resolve_scaling(mode: str, phi: np.ndarray, *, order: int | None = None) -> Scaling:
    """Turns a mode name into bases and coefficient specs for the given map angles (degrees).

    **Arguments:**

    - `mode`: one of `"auto"`, `"individual"`, `"constant"`, `"fourier"`.
    - `phi`: the detector angle of each map (degrees).
    - `order`: Fourier order K (default 2), only for `"fourier"`.

    **Returns:** a `Scaling`.
    """
    phi = np.asarray(phi, float)
    n_angles = phi.shape[0]
    if mode not in SCALING_MODES:
        raise ValueError(f"`scaling` must be one of {SCALING_MODES}; got {mode!r}.")
    if mode == "auto":
        mode = "individual" if n_angles <= AUTO_INDIVIDUAL_MAX_ANGLES else "fourier"
        order = AUTO_FOURIER_ORDER if mode == "fourier" else None
    if mode == "individual":
        basis = np.eye(n_angles)
        labels = _angle_labels(phi)
        return Scaling(
            "individual",
            0,
            basis,
            basis,
            tuple(CONTRAST_SPEC.renamed(f"contrast[{label}]") for label in labels),
            tuple(OFFSET_SPEC.renamed(f"offset[{label}]") for label in labels),
        )
    if mode == "constant":
        basis = np.ones((n_angles, 1))
        return Scaling("constant", 0, basis, basis, (CONTRAST_SPEC,), (OFFSET_SPEC,))
    order = AUTO_FOURIER_ORDER if order is None else int(order)
    n_distinct = len(np.unique(np.round(np.mod(phi, 360.0), 9)))
    if order < 0 or n_distinct < 2 * order + 1:
        raise ValueError(
            f"Fourier scaling of order {order} needs at least {2 * order + 1} distinct angles; "
            f"the data have {n_distinct}. Use a lower order or scaling='individual'."
        )
    radians = np.deg2rad(phi)
    columns = [np.ones(n_angles)]
    for k in range(1, order + 1):
        columns += [np.cos(k * radians), np.sin(k * radians)]
    basis = np.stack(columns, axis=1)

    def specs(base: ParameterSpec, name: str) -> tuple[ParameterSpec, ...]:
        bound = _FOURIER_HARMONIC_BOUND[name]
        out = [base.renamed(f"{name}_0")]
        for k in range(1, order + 1):
            for trig in ("cos", "sin"):
                out.append(ParameterSpec(f"{name}_{trig}{k}", 0.0, -bound, bound, "-", ""))
        return tuple(out)

    return Scaling(
        "fourier",
        order,
        basis,
        basis,
        specs(CONTRAST_SPEC, "contrast"),
        specs(OFFSET_SPEC, "offset"),
    )


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
