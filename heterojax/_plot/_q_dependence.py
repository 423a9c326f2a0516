"""Each physics parameter fitted ring by ring against q, with the joint fit (`fit_by_q`)."""

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ._view import new_figure, save


if TYPE_CHECKING:
    from matplotlib.figure import Figure


ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))  # the level of ±1σ for a normal estimate


def _one_sigma_ends(result: Any, name: str) -> tuple[float, float]:
    """(low, high) of `result.intervals(ONE_SIGMA)` for `name`; NaN when it was not free or
    its error is not finite (no bar, rather than one across the whole box)."""
    error = np.asarray(result.stderr.get(name, math.nan), float)
    if error.ndim or not np.isfinite(error):
        return math.nan, math.nan
    return result.intervals(ONE_SIGMA)[name]


def plot_q_dependence(
    check: Any,
    *,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """One panel per free physics parameter: its value and 68 % interval in each q ring alone
    (points with bars), and the joint fit of all rings (line, its interval shaded). The
    intervals are `NLSQResult.intervals` at ±1σ: value ± standard error, reaching up to the
    log-normal upper end for a power law's prefactor whose exponent is free (longer upwards). A
    parameter that drifts with q (`QDependence.drifting`) has its panel title marked with its
    p-value.

    **Arguments:**

    - `check`: the `QDependence` of `heterojax.fit_by_q`.
    - `path`, `dpi`, `overwrite`: write a PNG (atomically).

    **Returns:** the matplotlib `Figure`.
    """
    names = check.names
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    figure = new_figure(4.2 * columns, 3.0 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    q = np.asarray(check.q)
    for k, (ax, name) in enumerate(zip(axes, names)):
        ends = np.array([_one_sigma_ends(r, name) for r in check.ring_results])
        bars = np.abs(ends - check.values[:, k, None]).T
        ax.errorbar(q, check.values[:, k], yerr=bars, fmt="o", capsize=3)
        value = check.joint_values[k]
        ax.axhline(value, color="C1", lw=1.2, label="joint fit")
        low, high = _one_sigma_ends(check.joint, name)
        if np.isfinite(low) and np.isfinite(high):
            ax.axhspan(low, high, color="C1", alpha=0.2, lw=0)
        drifts = name in check.drifting
        title = f"{name}: drifts with q (p = {check.p_value[k]:.2g})" if drifts else name
        ax.set_title(title, color="C3" if drifts else "black")
        ax.set_xlabel("q (1/Å)")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize="small")
    if path is not None:
        save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure
