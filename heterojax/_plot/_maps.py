"""Two-time maps: data | fit | normalised residual per angle, and data or model maps alone."""

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._data._xpcs_data import XPCSData
from .._model._bins import evaluation_bins
from ._view import FitView, angle_title, fit_view, new_figure, off_diagonal, save, time_extent


if TYPE_CHECKING:
    from matplotlib.figure import Figure


_MAP_CMAP = "viridis"
_RESIDUAL_CMAP = "RdBu_r"


def _limits(*maps: np.ndarray) -> tuple[float, float]:
    """Shared colour limits: the 0.5–99.5 % range of the off-diagonal entries of all maps
    (the diagonal's shot-noise excess would otherwise wash out the colour scale)."""
    values = np.concatenate([off_diagonal(m) for m in maps])
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, [0.5, 99.5]) if values.size else (0.0, 1.0)
    return float(low), float(high) if high > low else float(low) + 1e-12


def _select(view: FitView, angles: Any) -> list[int]:
    if angles is None:
        return list(range(view.phi.size))
    indices = [int(a) for a in np.atleast_1d(angles)]
    bad = [a for a in indices if not 0 <= a < view.phi.size]
    if bad:
        raise ValueError(f"`angles` are map indices in [0, {view.phi.size}); got {bad}.")
    return indices


def _map_axes(ax, image, t, title=None, *, cmap, vmin, vmax, ylabel=True, xlabel=True):
    from matplotlib import colormaps

    colour = colormaps[cmap].with_extremes(bad="0.85")
    handle = ax.imshow(
        image,
        origin="lower",
        extent=time_extent(t),
        cmap=colour,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )
    if xlabel:  # only under the bottom panel: above another row it collides with its title
        ax.set_xlabel("t₂ (s)")
    if ylabel:
        ax.set_ylabel("t₁ (s)")
    if title:
        ax.set_title(title, fontsize=10)
    return handle


def _fit_figure(view: FitView, angles, fit_name: str) -> "Figure":
    assert view.fit is not None
    residual = view.residual
    assert residual is not None
    rows = _select(view, angles)
    figure = new_figure(12.5, 3.6 * len(rows) + 0.6)
    axes = figure.subplots(len(rows), 3, squeeze=False)
    normalised = view.sigma is not None
    for row, a in enumerate(rows):
        low, high = _limits(view.c2[a], view.fit[a])
        finite = np.abs(residual[a][np.isfinite(residual[a])])
        bound = float(np.percentile(finite, 99)) if finite.size else 1.0
        # With σ known, pure noise stays pale below ±3σ and real misfit saturates.
        bound = max(bound, 3.0) if normalised else (bound if bound > 0 else 1.0)
        data_ax, fit_ax, residual_ax = axes[row]
        bottom = row == len(rows) - 1
        _map_axes(
            data_ax,
            view.c2[a],
            view.t,
            f"data — {angle_title(view.phi[a], view.q[a])}",
            cmap=_MAP_CMAP,
            vmin=low,
            vmax=high,
            xlabel=bottom,
        )
        handle = _map_axes(
            fit_ax,
            view.fit[a],
            view.t,
            fit_name,
            cmap=_MAP_CMAP,
            vmin=low,
            vmax=high,
            ylabel=False,
            xlabel=bottom,
        )
        figure.colorbar(handle, ax=[data_ax, fit_ax], label="c2", shrink=0.9)
        label = f"(data − {fit_name})/σ" if normalised else f"data − {fit_name}"
        handle = _map_axes(
            residual_ax,
            residual[a],
            view.t,
            label,
            cmap=_RESIDUAL_CMAP,
            vmin=-bound,
            vmax=bound,
            ylabel=False,
            xlabel=bottom,
        )
        figure.colorbar(handle, ax=residual_ax, label=label, shrink=0.9)
    figure.suptitle(view.label)
    return figure


def plot_maps(
    result: Any,
    data: XPCSData | None = None,
    *,
    angles: Any = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """Data, fit and residual maps, one row per angle.

    Data and fit share one colour scale per angle (the 0.5–99.5 % range of both, diagonal
    excluded); the residual panel is (data − fit)/σ (σ per map as used by the fit) on a
    symmetric diverging scale at the 99th percentile of its magnitude, with entries the fit did
    not use (the diagonal when interpolated or masked) in grey. Axes are t₂ (s), t₁ (s).

    **Arguments:**

    - `result`: an `NLSQResult` (pass `data` too) or a saved record from `load_result`.
    - `data`: the fitted `XPCSData` (optional for a saved record, which holds its data).
    - `angles`: map indices to show (default all).
    - `path`: write a PNG there (atomically); `dpi` its resolution; `overwrite` replace a file.

    **Returns:** the matplotlib `Figure`.
    """
    figure = _fit_figure(fit_view(result, data), angles, "fit")
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure


def plot_data(
    data: XPCSData,
    *,
    angles: Any = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
) -> "Figure":
    """The measured maps, one panel per angle, each on its own 0.5–99.5 % colour scale.

    **Arguments:** `data` (an `XPCSData`); `angles`, `path`, `dpi`, `overwrite` as in
    `plot_maps`.

    **Returns:** the matplotlib `Figure`.
    """
    view = fit_view(None, data)
    indices = _select(view, angles)
    columns = min(3, len(indices))
    rows = -(-len(indices) // columns)
    figure = new_figure(4.4 * columns + 0.4, 3.8 * rows + 0.4)
    axes = figure.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(indices):
            ax.set_visible(False)
            continue
        a = indices[k]
        low, high = _limits(view.c2[a])
        handle = _map_axes(
            ax,
            view.c2[a],
            view.t,
            angle_title(view.phi[a], view.q[a]),
            cmap=_MAP_CMAP,
            vmin=low,
            vmax=high,
            ylabel=k % columns == 0,
            xlabel=k + columns >= len(indices),
        )
        figure.colorbar(handle, ax=ax, label="c2", shrink=0.85)
    source = data.metadata.get("source", "")
    figure.suptitle(f"data: {os.path.basename(str(source))}" if source else "data")
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure


def plot_model(
    model: Any,
    data: XPCSData,
    *,
    contrast: Any = 0.5,
    offset: Any = 1.0,
    angles: Any = None,
    path: str | os.PathLike | None = None,
    dpi: int = 110,
    overwrite: bool = True,
    roi: bool = True,
) -> "Figure":
    """A model (e.g. a fit's start values) against the data, as in `plot_maps`.

    **Arguments:**

    - `model`: a `HeterodyneModel`, evaluated on the data's t, q and φ.
    - `data`: an `XPCSData`.
    - `contrast`, `offset`: scalars or one per map.
    - `angles`, `path`, `dpi`, `overwrite`: as in `plot_maps`.
    - `roi`: with a bin geometry on the data (`data.bins`), draw the bin-averaged model
        (default) or, with `False`, the model at the bin centres.

    **Returns:** the matplotlib `Figure`.
    """
    view = fit_view(None, data)
    bins = evaluation_bins(data.bins, model, data.t, roi=roi)
    maps = np.asarray(
        model.c2(data.t, q=data.q, phi=data.phi, contrast=contrast, offset=offset, bins=bins)
    )
    sigma = None
    if data.sigma is not None:
        sigma = np.sqrt(np.mean(np.asarray(data.sigma) ** 2, axis=(1, 2)))
    view = dataclasses.replace(
        view, fit=maps, sigma=sigma, label="model at the given values (not fitted)"
    )
    figure = _fit_figure(view, angles, "model")
    save(figure, path, dpi=dpi, overwrite=overwrite)
    return figure
