"""Posterior plots of a CMC run: a corner plot and chain traces."""

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._parameters import PARAMETERS
from ._view import new_figure, save


if TYPE_CHECKING:
    from matplotlib.figure import Figure


_MAX_CORNER = 8


def _draws(result: Any) -> tuple[list[str], np.ndarray, dict[str, Any]]:
    """(names, draws `(chain, draw, p)`, diagnostics) from a CMC result or its saved record."""
    arrays = getattr(result, "arrays", None)
    if isinstance(arrays, dict) and "draws" in arrays:
        names = [str(n) for n in arrays["names"]]
        table = result.info.get("posterior", {})
        return names, np.asarray(arrays["draws"]), table
    if hasattr(result, "draws") and hasattr(result, "names"):
        return list(result.names), np.asarray(result.draws), result.table()
    raise TypeError(
        "`result` must be a fit_cmc result or a saved CMC record (load_result(dir, "
        f"method='cmc')); got {type(result).__name__}."
    )


def _pick(names: list[str], parameters: Any) -> list[int]:
    if parameters is not None:
        missing = [p for p in parameters if p not in names]
        if missing:
            raise ValueError(f"Unknown parameter(s) {missing}; sampled: {names}.")
        return [names.index(p) for p in parameters]
    physics = [
        k for k, n in enumerate(names) if n in PARAMETERS and n not in ("contrast", "offset")
    ]
    # Contrast and offset trade off with the physics (the fringe amplitude against the
    # fraction): the first angle's pair is shown too.
    scaling = [
        next(k for k, n in enumerate(names) if n.split("[", 1)[0] == base)
        for base in ("contrast", "offset")
        if any(n.split("[", 1)[0] == base for n in names)
    ]
    return (physics[:_MAX_CORNER] + scaling) or list(range(len(names)))[:_MAX_CORNER]


def _digits(value: float, spread: float) -> str:
    """`value` with enough significant digits to resolve `spread` (at least 3)."""
    if not np.isfinite(value) or value == 0 or spread <= 0:
        return f"{value:.4g}"
    digits = int(np.clip(np.ceil(np.log10(abs(value) / spread)) + 2, 3, 10))
    return f"{value:.{digits}g}"


def _label(name: str) -> str:
    spec = PARAMETERS.get(name.split("[", 1)[0])
    return f"{name} ({spec.unit})" if spec is not None and spec.unit != "-" else name


def plot_posterior(
    result: Any,
    *,
    parameters: Any = None,
    reference: dict[str, float] | None = None,
    reference_label: str = "reference",
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """Corner plot of the combined posterior: marginal histograms on the diagonal, pairwise
    2-D histograms below it, posterior mean and 95 % interval in each title.

    **Arguments:**

    - `result`: a `fit_cmc` result or a saved CMC record from `load_result`.
    - `parameters`: names to show (default: the free physics parameters, at most 8).
    - `reference`: name → value drawn in red (e.g. the NLSQ values or the truth), named
        `reference_label` in the title.
    - `path`, `dpi`, `overwrite`: write a PNG (atomically).

    **Returns:** the matplotlib `Figure`.
    """
    names, draws, _ = _draws(result)
    picked = _pick(names, parameters)
    flat = draws.reshape(-1, draws.shape[-1])
    n_draws = flat.shape[0]
    bins = int(np.clip(n_draws // 15, 10, 40))
    limits = {}
    for p in picked:  # the draws' range: a far-off reference must not squash the panels
        low, high = np.percentile(flat[:, p], [0.5, 99.5])
        pad = 0.08 * (high - low) if high > low else max(abs(low) * 1e-3, 1e-12)
        limits[p] = (low - pad, high + pad)
    n = len(picked)
    size = max(2.2 * n, 4.0)
    figure = new_figure(size, size)
    axes = figure.subplots(n, n, squeeze=False)
    for row, i in enumerate(picked):
        for column, j in enumerate(picked):
            ax = axes[row, column]
            if column > row:
                ax.set_visible(False)
                continue
            x = flat[:, j]
            if row == column:
                ax.hist(x, bins=bins, range=limits[j], color="C0", histtype="stepfilled", alpha=0.6)
                low, high = np.percentile(x, [2.5, 97.5])
                spread = float(high - low)
                title = (
                    f"{names[i]} = {_digits(float(np.mean(x)), spread)}\n95 %: "
                    f"[{_digits(float(low), spread)}, {_digits(float(high), spread)}]"
                )
                if reference and names[i] in reference:
                    ax.axvline(reference[names[i]], color="C3", lw=1)
                    title += f"\n{reference_label}: {_digits(reference[names[i]], spread)}"
                ax.set_title(title, fontsize=8)
                ax.set_yticks([])
            else:
                y = flat[:, i]
                if n_draws < 2000:
                    ax.plot(x, y, ".", ms=2, alpha=0.5, color="C0")
                else:
                    ax.hist2d(x, y, bins=30, range=[limits[j], limits[i]], cmap="Blues")
                if reference and names[i] in reference and names[j] in reference:
                    ax.plot(
                        reference[names[j]], reference[names[i]], "+", color="C3", ms=10, mew=1.5
                    )
                ax.set_ylim(limits[i])
                if column == 0:
                    ax.set_ylabel(_label(names[i]), fontsize=8)
                else:
                    ax.set_yticklabels([])
            ax.set_xlim(limits[j])
            if row == n - 1:
                ax.set_xlabel(_label(names[j]), fontsize=8)
            else:
                ax.set_xticklabels([])
            ax.tick_params(labelsize=7)
            # Plain tick values: an offset ("+3e2") sits far from the ticks and is misread.
            for axis in (ax.xaxis, ax.yaxis):
                formatter = axis.get_major_formatter()
                if hasattr(formatter, "set_useOffset"):  # hidden labels have none
                    formatter.set_useOffset(False)
            for label in ax.get_xticklabels():
                label.set_rotation(45)
    title = "posterior (CMC, combined)"
    if reference:
        title += f" — red: {reference_label}"
    figure.suptitle(title)
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure


def plot_traces(
    result: Any,
    *,
    parameters: Any = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """Trace of every chain of the combined posterior, one row per parameter, with R̂ and
    bulk ESS in the title.

    **Arguments:** as `plot_posterior` (without `reference`).

    **Returns:** the matplotlib `Figure`.
    """
    names, draws, table = _draws(result)
    picked = _pick(names, parameters)
    figure = new_figure(9.0, 1.7 * len(picked) + 0.6)
    axes = figure.subplots(len(picked), 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, picked):
        for chain in range(draws.shape[0]):
            ax.plot(draws[chain, :, p], lw=0.6, alpha=0.8, label=f"chain {chain}")
        row = table.get(names[p], {})
        details = ""
        if row.get("r_hat") is not None:
            details = f"   R̂ = {row['r_hat']:.3f}, ESS bulk = {row.get('ess_bulk', np.nan):.0f}"
        ax.set_title(f"{_label(names[p])}{details}", fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("draw")
    if draws.shape[0] <= 8:
        axes[0].legend(fontsize=7, ncols=min(draws.shape[0], 4), loc="upper right")
    figure.suptitle("CMC traces (combined draws)")
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure
