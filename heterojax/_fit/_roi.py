"""Which model a fit uses for the maps' detector bins: the bin average (ROI) or the bin centre.

With a bin geometry on the data, fits use the ROI model by default (`roi=None` → on when the
data carry `bins`); `roi=False` fits the bin-centre model, for comparison. The node count is
chosen for the start model with a margin of 2 on the phase and decay spreads
(`BinGeometry.for_model`), so that c2 stays within 1e-4 of the exact bin average while the
parameters move by up to a factor 2 during the fit.
"""

import numpy as np

from .._data._xpcs_data import XPCSData
from .._model._bins import DEFAULT_TOLERANCE, BinGeometry, evaluation_bins
from .._model._heterodyne import HeterodyneModel


FIT_MARGIN = 2.0
# Bins at least this wide count as wide in the quality report (full widths).
WIDE_PHI_DEGREES = 10.0
WIDE_Q_RELATIVE = 0.1


def fit_bins(
    model: HeterodyneModel,
    data: XPCSData,
    *,
    roi: bool | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> BinGeometry | None:
    """The bin geometry a fit of `model` to `data` evaluates with, or `None` (bin centres).

    **Arguments:**

    - `model`: the start model (sets the node count).
    - `data`: the `XPCSData`; its `bins` describe the bins.
    - `roi`: `None` (ROI model when the data carry bins), `True` (required: a `ValueError`
        when the data have no bins) or `False` (bin-centre model).
    - `tolerance`: the accuracy of c2 against the exact bin average.
    """
    if roi not in (None, True, False):
        raise TypeError(f"`roi` must be None, True or False; got {roi!r}.")
    if roi is None:
        roi = data.bins is not None
    if roi and data.bins is None:
        raise ValueError(
            "`roi=True` needs the bin geometry of the maps, and these data have none: load an "
            "APS file with a q map, or attach one with data.with_bins(heterojax.BinGeometry."
            "from_widths(data.q, data.phi, q_width=..., phi_width=...))."
        )
    return evaluation_bins(
        data.bins, model, data.t, roi=roi, tolerance=tolerance, margin=FIT_MARGIN
    )


def describe_model(bins: BinGeometry | None) -> str:
    """The line a summary prints for the model used: bin centre or bin average."""
    if bins is None:
        return "model = bin centre"
    return f"model = ROI ({bins.describe()})"


def bin_widths(bins: BinGeometry | None) -> tuple[float, float] | None:
    """The largest full widths (Δq/q, Δφ in degrees) of the bins, or `None` without bins."""
    if bins is None:
        return None
    relative = np.asarray(bins.q_width) / np.asarray(bins.q_centre)
    return float(np.max(relative)), float(np.max(np.asarray(bins.phi_width)))


def are_wide(widths: tuple[float, float] | None) -> bool:
    """Whether bins of these widths dephase the fringes enough to matter (Δq/q ≥ 10 % or
    Δφ ≥ 10°)."""
    return widths is not None and (widths[0] >= WIDE_Q_RELATIVE or widths[1] >= WIDE_PHI_DEGREES)
