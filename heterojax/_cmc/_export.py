"""ArviZ containers for CMC draws, for ArviZ 0.2x (`InferenceData`) and 1.x (`xarray.DataTree`).

ArviZ 1.0 split into arviz-base / arviz-stats / arviz-plots and replaced `InferenceData` by
xarray's `DataTree` (one child node per group). Both read the same NetCDF layout — one netCDF
group per ArviZ group — so `cmc.nc` written by either reads back with either's
`arviz.from_netcdf`. This module needs only NumPy, xarray and ArviZ (no JAX), so that it can be
checked against either ArviZ line on its own.
"""

from collections.abc import Mapping
from typing import Any


def arviz_major(arviz: Any) -> int:
    """The major version of an imported `arviz` module (0 when it cannot be read)."""
    version = str(getattr(arviz, "__version__", "0"))
    head = version.split(".")[0]
    return int(head) if head.isdigit() else 0


def inference_container(groups: Mapping[str, Any]):
    """The ArviZ container of `groups` (group name → `xarray.Dataset`).

    **Returns:** an `arviz.InferenceData` with ArviZ < 1; with ArviZ ≥ 1 (or any ArviZ without
    `InferenceData`) an `xarray.DataTree` whose children are the groups — what ArviZ 1.x
    functions take and `arviz.from_netcdf` returns.

    **Raises:** `ImportError` naming the package when ArviZ is not installed.
    """
    try:
        import arviz
    except ImportError as error:
        raise ImportError("The ArviZ export needs ArviZ: `pip install arviz`.") from error
    if arviz_major(arviz) < 1 and hasattr(arviz, "InferenceData"):
        return arviz.InferenceData(**dict(groups))
    import xarray as xr

    return xr.DataTree.from_dict({f"/{name}": dataset for name, dataset in groups.items()})


def group_names(container) -> set[str]:
    """The group names of an `InferenceData` or a `DataTree` (its child nodes)."""
    if hasattr(container, "children"):
        return set(container.children)
    return set(container.groups())
