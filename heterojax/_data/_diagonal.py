"""The measured diagonal c2(t, t) carries shot noise: interpolate it, mask it, or keep it."""

import numpy as np
from jaxtyping import Float

from ._xpcs_data import DIAGONAL_MODES


def check_diagonal_mode(diagonal: object) -> str:
    """Validates the `diagonal=` argument shared by every loader and by `simulate`.

    **Arguments:**

    - `diagonal`: `"interpolate"`, `"mask"` or `"none"`.

    **Returns:**

    The mode, unchanged. Raises `ValueError` for anything else.
    """
    if not isinstance(diagonal, str) or diagonal not in DIAGONAL_MODES:
        raise ValueError(
            f"`diagonal` must be one of {DIAGONAL_MODES}: 'interpolate' replaces c2(t, t) by the "
            "mean of its neighbours, 'mask' keeps it but leaves it out of every fit, 'none' keeps "
            f"and fits it; got {diagonal!r}."
        )
    return diagonal


def interpolate_diagonal(c2: Float[np.ndarray, "*phi t t"]) -> None:
    """Replaces the diagonal of every map, in place, by the mean of its neighbouring side bands.

    c2[i, i] ← (c2[i, i+1] + c2[i−1, i]) / 2 for interior i; the first and last rows use their
    single neighbour c2[0, 1] and c2[T−2, T−1]. Only off-diagonal entries are read, so applying
    it twice changes nothing. A 1×1 map has no neighbour and is left as it is.

    **Arguments:**

    - `c2`: float array of shape `(..., T, T)`, symmetric maps; modified in place.
    """
    n = c2.shape[-1]
    if n < 2:
        return
    for index in np.ndindex(c2.shape[:-2]):
        single = c2[index]  # a view: the loop writes into `c2`
        side = np.diagonal(single, 1)
        new = np.empty(n, dtype=single.dtype)
        new[0] = side[0]
        new[-1] = side[-1]
        new[1:-1] = 0.5 * (side[1:] + side[:-1])
        np.fill_diagonal(single, new)


def apply_diagonal_mode(c2: Float[np.ndarray, "*phi t t"], diagonal: str) -> None:
    """Treats the diagonal of `c2` in place as `diagonal` says.

    `"interpolate"` rewrites it (see `interpolate_diagonal`); `"mask"` and `"none"` keep the
    measured values: with `"mask"` the diagonal is left out of every fit by `XPCSData.mask`.

    **Arguments:**

    - `c2`: float array of shape `(..., T, T)`; modified in place.
    - `diagonal`: a mode accepted by `check_diagonal_mode`.
    """
    if check_diagonal_mode(diagonal) == "interpolate":
        interpolate_diagonal(c2)
