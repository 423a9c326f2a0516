"""The error estimators by name (`fit_nlsq(errors=...)`)."""

from ._speckle_errors import SpeckleErrors
from ._uncertainty import AbstractErrors, FormalErrors, FrameClusteredErrors


ERRORS = {
    "formal": FormalErrors,
    "frame-clustered": FrameClusteredErrors,
    "speckle": SpeckleErrors,
}


def resolve_errors(errors) -> AbstractErrors:
    """`errors=` of `fit_nlsq`: a name in `ERRORS` or an `AbstractErrors` instance."""
    if isinstance(errors, AbstractErrors):
        return errors
    if isinstance(errors, str) and errors in ERRORS:
        return ERRORS[errors]()
    raise ValueError(
        f"`errors` must be one of {sorted(ERRORS)} or a heterojax.AbstractErrors; got {errors!r}."
    )
