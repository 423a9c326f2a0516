"""What a plot needs from a fit, whatever it came from (a live result or a saved record)."""

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._data._xpcs_data import XPCSData
from .._io._atomic import write_atomically


if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclasses.dataclass(frozen=True)
class FitView:
    """Arrays of one fit (or of data alone) in NumPy form.

    **Fields:** `t` `(t,)` in s; `q` (Å⁻¹), `phi` (deg) `(phi,)`; `c2` data `(phi, t, t)`;
    `fit` model maps or `None`; `mask` the fitted entries (upper triangle); `sigma` σ per map
    or `None`; `label` a one-line description of the fit.
    """

    t: np.ndarray
    q: np.ndarray
    phi: np.ndarray
    c2: np.ndarray
    fit: np.ndarray | None
    mask: np.ndarray
    sigma: np.ndarray | None
    label: str

    @property
    def residual(self) -> np.ndarray | None:
        """(data − fit)/σ on the fitted entries and their mirror, NaN elsewhere."""
        if self.fit is None:
            return None
        used = self.mask | np.swapaxes(self.mask, -1, -2)
        difference = self.c2 - self.fit
        if self.sigma is not None:
            difference = difference / self.sigma[:, None, None]
        return np.where(used, difference, np.nan)


def _data_arrays(data: XPCSData) -> dict[str, np.ndarray]:
    return {
        "t": np.asarray(data.t),
        "q": np.asarray(data.q),
        "phi": np.asarray(data.phi),
        "c2": np.asarray(data.c2),
        "mask": np.asarray(data.mask),
    }


def fit_view(result: Any, data: XPCSData | None = None) -> FitView:
    """A `FitView` from an `NLSQResult` with its data, a saved NLSQ record (`load_result`), a
    model-map array with its data, or data alone (`result=None`)."""
    if result is None:
        if data is None:
            raise ValueError("Pass `data` (an XPCSData) to plot data alone.")
        return FitView(**_data_arrays(data), fit=None, sigma=None, label="data")
    arrays = getattr(result, "arrays", None)
    if isinstance(arrays, dict) and "fitted_c2" in arrays:  # a SavedResult of an NLSQ fit
        info = result.info
        base = (
            _data_arrays(data)
            if data is not None
            else {k: np.asarray(arrays[k]) for k in ("t", "q", "phi", "c2")}
            | {"mask": np.asarray(arrays["mask"], bool)}
        )
        return FitView(
            **base,
            fit=np.asarray(arrays["fitted_c2"]),
            sigma=np.asarray(arrays["sigma"]),
            label=f"NLSQ fit, reduced χ² = {info.get('reduced_chi2', float('nan')):.3g}",
        )
    if hasattr(result, "fitted_c2"):  # an NLSQResult
        if data is None:
            raise ValueError("Pass the fitted `data` along with an NLSQResult.")
        return FitView(
            **_data_arrays(data),
            fit=np.asarray(result.fitted_c2),
            sigma=np.asarray(result.sigma),
            label=f"NLSQ fit, reduced χ² = {float(result.reduced_chi2):.3g} "
            f"({result.quality.band})",
        )
    raise TypeError(
        "`result` must be an NLSQResult (with `data`), a saved NLSQ result from "
        f"heterojax.load_result, or None; got {type(result).__name__}."
    )


def new_figure(width: float, height: float) -> "Figure":
    """A figure on the non-interactive Agg canvas (no pyplot state, safe in threads/scripts)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("heterojax plots need matplotlib: `pip install matplotlib`.") from error
    return Figure(figsize=(width, height), layout="constrained")


def save(figure: "Figure", path: str | os.PathLike | None, *, dpi: int, overwrite: bool) -> None:
    """Writes `figure` as PNG to `path` atomically (nothing when `path` is None)."""
    if path is None:
        return

    def write(temporary: str) -> None:
        figure.savefig(temporary, dpi=dpi, format="png")

    write_atomically(path, write, overwrite=overwrite)


def off_diagonal(values: np.ndarray) -> np.ndarray:
    """The entries of `(…, t, t)` maps above the diagonal, flattened."""
    n = values.shape[-1]
    upper = np.triu(np.ones((n, n), bool), k=1)
    return values[..., upper].ravel()


def time_extent(t: np.ndarray) -> list[float]:
    """Pixel-edge extent of a map on the grid `t` for `imshow(origin="lower")`."""
    half = 0.5 * (t[1] - t[0]) if t.size > 1 else 0.5
    return [float(t[0] - half), float(t[-1] + half), float(t[0] - half), float(t[-1] + half)]


def angle_title(phi: float, q: float) -> str:
    return f"φ = {phi:g}°, q = {q:.4g} Å⁻¹"
