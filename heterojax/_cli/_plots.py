"""The standard set of PNG plots of a fit, written into `<output>/plots`."""

import logging
import os
from typing import Any

from .._plot._maps import plot_maps
from .._plot._one_time import plot_one_time
from .._plot._posterior import plot_posterior, plot_traces
from .._plot._residuals import plot_residual_histogram


_LOG = logging.getLogger("heterojax.cli")
NLSQ_PLOTS = ("nlsq_maps.png", "nlsq_one_time.png", "nlsq_residuals.png")
CMC_PLOTS = ("cmc_posterior.png", "cmc_traces.png")


def plot_paths(directory: str, methods: tuple[str, ...]) -> list[str]:
    """The plot files a run of `methods` writes into `directory`."""
    names = (NLSQ_PLOTS if "nlsq" in methods else ()) + (CMC_PLOTS if "cmc" in methods else ())
    return [os.path.join(directory, name) for name in names]


def write_nlsq_plots(result: Any, data: Any, directory: str, *, overwrite: bool) -> list[str]:
    """Maps, one-time cuts and the residual histogram of an NLSQ fit (live or saved)."""
    paths = plot_paths(directory, ("nlsq",))
    makers = (plot_maps, plot_one_time, plot_residual_histogram)
    for path, make in zip(paths, makers):
        make(result, data, path=path, overwrite=overwrite).clear()
        _LOG.info(f"wrote {path}")
    return paths


def write_cmc_plots(
    result: Any, directory: str, *, reference: dict[str, float] | None, overwrite: bool
) -> list[str]:
    """Corner plot (with `reference` values marked) and traces of a CMC run (live or saved)."""
    posterior, traces = plot_paths(directory, ("cmc",))
    plot_posterior(
        result, reference=reference, reference_label="NLSQ", path=posterior, overwrite=overwrite
    ).clear()
    plot_traces(result, path=traces, overwrite=overwrite).clear()
    for path in (posterior, traces):
        _LOG.info(f"wrote {path}")
    return [posterior, traces]
