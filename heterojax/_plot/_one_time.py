"""One-time cuts g2(τ) = c2(t₁, t₁ + τ) at several ages t₁, data with the fit overlaid."""

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._data._xpcs_data import XPCSData
from ._view import angle_title, fit_view, new_figure, save


if TYPE_CHECKING:
    from matplotlib.figure import Figure


_DEFAULT_AGE_FRACTIONS = (0.02, 0.25, 0.5, 0.7)


def _age_indices(t: np.ndarray, ages: Any) -> list[int]:
    if ages is None:
        picks = [int(round(f * (t.size - 1))) for f in _DEFAULT_AGE_FRACTIONS]
    else:
        picks = [int(np.argmin(np.abs(t - float(a)))) for a in np.atleast_1d(ages)]
    usable = sorted({i for i in picks if i < t.size - 2})
    if not usable:
        raise ValueError(f"No usable age in {ages!r}: each needs at least 3 later frames.")
    return usable


def plot_one_time(
    result: Any,
    data: XPCSData | None = None,
    *,
    ages: Any = None,
    angles: Any = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """Cuts through the two-time maps at fixed ages: g2(τ) = c2(t₁, t₁ + τ), one panel per angle.

    Data are markers (only the entries the fit used, so a masked diagonal is not drawn), the
    fit is a line in the same colour. Under nonequilibrium dynamics the cuts differ with age:
    this is where a time-dependent J(t) or v(t) shows.

    **Arguments:**

    - `result`: an `NLSQResult` (pass `data` too), a saved record from `load_result`, or
        `None` to plot the data alone.
    - `data`: the `XPCSData`.
    - `ages`: ages t₁ in seconds (the nearest frames are used); default four spread over the
        first 70 % of the window.
    - `angles`: map indices to show (default all).
    - `path`, `dpi`, `overwrite`: write a PNG (atomically).

    **Returns:** the matplotlib `Figure`.
    """
    view = fit_view(result, data)
    t = view.t
    starts = _age_indices(t, ages)
    indices = list(range(view.phi.size)) if angles is None else [int(a) for a in angles]
    columns = min(3, len(indices))
    rows = -(-len(indices) // columns)
    figure = new_figure(4.6 * columns, 3.4 * rows + 0.5)
    axes = figure.subplots(rows, columns, squeeze=False)
    colours = [f"C{k}" for k in range(len(starts))]
    for k, ax in enumerate(axes.ravel()):
        if k >= len(indices):
            ax.set_visible(False)
            continue
        a = indices[k]
        for colour, i in zip(colours, starts):
            lags = t[i:] - t[i]
            measured = np.where(view.mask[a, i, i:], view.c2[a, i, i:], np.nan)
            ax.plot(
                lags, measured, "o", ms=2.5, color=colour, alpha=0.7, label=f"t₁ = {t[i]:.3g} s"
            )
            if view.fit is not None:
                ax.plot(lags, view.fit[a, i, i:], "-", lw=1.3, color=colour)
        ax.set_title(angle_title(view.phi[a], view.q[a]), fontsize=10)
        ax.set_xlabel("τ = t₂ − t₁ (s)")
        if k % columns == 0:
            ax.set_ylabel("c2(t₁, t₁ + τ)")
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(
                fontsize=8,
                title="markers: data, lines: fit" if view.fit is not None else None,
                title_fontsize=8,
            )
    figure.suptitle(f"one-time cuts — {view.label}")
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure
