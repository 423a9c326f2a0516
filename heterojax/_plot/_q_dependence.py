"""Each physics parameter fitted ring by ring against q, with the joint fit (`fit_by_q`)."""

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from ._view import new_figure, save


if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_q_dependence(
    check: Any,
    *,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """One panel per free physics parameter: its value ± standard error in each q ring alone
    (points), and the joint fit of all rings (line, shaded ± its error). A parameter that drifts
    with q (`QDependence.drifting`) has its panel title marked with its p-value.

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
        ax.errorbar(q, check.values[:, k], yerr=check.errors[:, k], fmt="o", capsize=3)
        value, error = check.joint_values[k], check.joint_errors[k]
        ax.axhline(value, color="C1", lw=1.2, label="joint fit")
        if np.isfinite(error):
            ax.axhspan(value - error, value + error, color="C1", alpha=0.2, lw=0)
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
