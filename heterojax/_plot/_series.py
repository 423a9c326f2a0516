"""Each free parameter across a batch of fits, with error bars (`fit_batch`'s table)."""

import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._parameters import PARAMETER_NAMES
from ._view import new_figure, save


if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure


def _table(summary: Any) -> "pd.DataFrame":
    import pandas as pd

    if isinstance(summary, pd.DataFrame):
        return summary
    path = os.fspath(summary)
    if os.path.isdir(path):
        path = os.path.join(path, "summary.csv")
    return pd.read_csv(path)


def plot_series(
    summary: Any,
    *,
    x: str = "file",
    parameters: list[str] | None = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """One panel per free physics parameter: its value ± standard error across the datasets of
    a batch, against `x`.

    **Arguments:**

    - `summary`: the DataFrame `fit_batch` returns, or a `summary.csv` (or its folder).
    - `x`: the column along the horizontal axis: `"file"` (default; the datasets in table
      order, labelled by file name), `"name"`, or any numeric column you added (a shear rate,
      a temperature, an age read from the files' metadata), for which the axis is numeric.
    - `parameters`: the names to plot (default: every parameter with a value in some row).
    - `path`, `dpi`, `overwrite`: write a PNG (atomically).

    Rows whose status is `error` are left out; rows with status `quality` are drawn as open
    markers (fitted, but the quality report says not to trust them).

    **Returns:** the matplotlib `Figure`.
    """
    table = _table(summary)
    if x not in table.columns:
        raise ValueError(f"`x` must be a column of the summary; got {x!r} ({list(table.columns)}).")
    table = table[table["status"] != "error"] if "status" in table.columns else table
    if parameters is None:
        parameters = [n for n in PARAMETER_NAMES if n in table.columns and table[n].notna().any()]
    missing = [n for n in parameters if n not in table.columns]
    if missing or not parameters:
        raise ValueError(f"No values to plot for {missing or 'any parameter'} in the summary.")
    categorical = x in ("file", "name") or table[x].dtype.kind not in "biuf"
    positions = np.arange(len(table)) if categorical else table[x].to_numpy(float)
    columns = min(3, len(parameters))
    rows = math.ceil(len(parameters) / columns)
    figure = new_figure(4.2 * columns, 2.8 * rows + (0.8 if categorical else 0.0))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).ravel()
    trusted = (
        (table["status"] == "ok").to_numpy()
        if "status" in table.columns
        else np.ones(len(table), bool)
    )
    for ax, name in zip(axes, parameters):
        values = table[name].to_numpy(float)
        errors = table[f"{name}_err"].to_numpy(float) if f"{name}_err" in table.columns else None
        for mask, face in ((trusted, None), (~trusted, "none")):
            if mask.any():
                ax.errorbar(
                    positions[mask],
                    values[mask],
                    yerr=None if errors is None else errors[mask],
                    fmt="o",
                    mfc=face,
                    capsize=3,
                    color="C0",
                )
        ax.set_title(name)
        if categorical:
            labels = [os.path.basename(str(v)) for v in table[x]]
            ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize="small")
        else:
            ax.set_xlabel(x)
    for ax in axes[len(parameters) :]:
        ax.set_visible(False)
    if path is not None:
        save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure
