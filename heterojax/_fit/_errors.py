"""The error estimators by name (`fit_nlsq(errors=...)`), and what `"auto"` chooses."""

from collections.abc import Mapping
from typing import Any

from ._speckle_errors import SpeckleErrors
from ._uncertainty import AbstractErrors, FormalErrors, FrameClusteredErrors


ERRORS = {
    "formal": FormalErrors,
    "frame-clustered": FrameClusteredErrors,
    "speckle": SpeckleErrors,
}
# Where maps come from a multi-pixel correlator of speckle frames: `two_time` and
# `simulate_speckle` record their source, APS result files their layout; files that
# `save_aps` wrote from heterojax's own maps record where those came from (`maps_from`).
_CORRELATOR_SOURCES = ("heterojax.two_time", "heterojax.simulate_speckle")
_INDEPENDENT_SOURCES = ("heterojax.simulate",)


def correlates_speckle(metadata: Mapping[str, Any]) -> bool:
    """Whether data with this metadata are two-time correlations of speckle frames: an APS
    8-ID-I result file (`load_aps`), `two_time` or `simulate_speckle` — but not the maps of
    `simulate` (independent noise), also when read back from a file `save_aps` wrote."""
    origin = metadata.get("maps_from", metadata.get("source"))
    if origin in _INDEPENDENT_SOURCES:
        return False
    return origin in _CORRELATOR_SOURCES or metadata.get("layout") in ("nexus", "legacy")


def resolve_errors(errors, metadata: Mapping[str, Any] | None = None) -> AbstractErrors:
    """`errors=` of `fit_nlsq`: `"auto"`, a name in `ERRORS` or an `AbstractErrors` instance.

    `"auto"` takes the noise model from where the maps come from (`metadata`, the data's):
    `SpeckleErrors` for correlations of speckle frames (`correlates_speckle`), whose noise is
    correlated over the whole map, and `FrameClusteredErrors` for maps of unknown origin or
    with independent noise (`simulate`), whose scores it clusters by blocks of frames.
    """
    if isinstance(errors, AbstractErrors):
        return errors
    if errors == "auto":
        speckle = metadata is not None and correlates_speckle(metadata)
        return SpeckleErrors() if speckle else FrameClusteredErrors()
    if isinstance(errors, str) and errors in ERRORS:
        return ERRORS[errors]()
    raise ValueError(
        f"`errors` must be 'auto', one of {sorted(ERRORS)} or a heterojax.AbstractErrors; "
        f"got {errors!r}."
    )
