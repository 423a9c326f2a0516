"""Histogram of normalised residuals, per angle, against the standard normal."""

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._data._xpcs_data import XPCSData
from ._view import fit_view, new_figure, save


if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_residual_histogram(
    result: Any,
    data: XPCSData | None = None,
    *,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """Distribution of (data − fit)/σ over the fitted entries, one step histogram per angle.

    With a correct model and σ the histograms follow the standard normal (drawn in black); a
    shifted or widened histogram, or heavy tails, point to model error or a wrong σ.

    **Arguments:**

    - `result`: an `NLSQResult` (pass `data` too) or a saved record from `load_result`.
    - `data`: the fitted `XPCSData`.
    - `path`, `dpi`, `overwrite`: write a PNG (atomically).

    **Returns:** the matplotlib `Figure`.
    """
    view = fit_view(result, data)
    if view.fit is None:
        raise ValueError("A residual histogram needs a fit result.")
    normalised = view.sigma is not None
    scale = view.sigma[:, None, None] if view.sigma is not None else 1.0
    residual = (view.c2 - view.fit) / scale
    figure = new_figure(6.4, 4.4)
    ax = figure.subplots()
    pooled = residual[view.mask]
    bound = float(np.percentile(np.abs(pooled), 99.9)) if pooled.size else 1.0
    bound = max(bound, 4.0) if normalised else bound
    bins = np.linspace(-bound, bound, 61).tolist()
    for a in range(view.phi.size):
        values = residual[a][view.mask[a]]
        ax.hist(
            values,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.4,
            label=f"φ = {view.phi[a]:g}°: mean {values.mean():+.2f}, sd {values.std():.2f}",
        )
    if normalised:
        grid = np.linspace(-bound, bound, 400)
        ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), "k-", lw=1, label="N(0, 1)")
    ax.set_xlabel("(data − fit)/σ" if normalised else "data − fit")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax.set_title(f"residuals — {view.label}", fontsize=10)
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure
