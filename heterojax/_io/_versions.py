"""Versions of heterojax and the libraries a result depends on."""

import importlib.metadata
import platform
import sys


_LIBRARIES = ("jax", "jaxlib", "numpy", "equinox", "optimistix", "lineax", "blackjax", "h5py")


def versions() -> dict[str, str]:
    """Name → version of heterojax, Python and the numerical libraries that are installed."""
    from .._version import __version__

    out = {"heterojax": __version__, "python": sys.version.split()[0]}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    out["platform"] = platform.platform()
    return out
