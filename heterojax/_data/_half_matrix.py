"""Half matrices: find which triangle a stored map fills and rebuild the full symmetric map.

APS writers store only one triangle of each symmetric c2 map: boost-corr the upper triangle with
the diagonal (`torch.triu`), the Matlab pipeline its `triu` in column-major order, which h5py
reads as the *lower* triangle. The stored triangle is detected, never assumed.
"""

from typing import Literal

import numpy as np
from jaxtyping import Float, Shaped


Triangle = Literal["upper", "lower", "full", "diagonal"]

# A stored full map counts as symmetric when its two triangles agree to float32 precision.
_SYMMETRY_RTOL = 1e-6


def which_triangle(block: Shaped[np.ndarray, "t t"]) -> Triangle:
    """Which part of a square map holds the data.

    **Arguments:**

    - `block`: a square map (or a diagonal window of one: a window `[a:b, a:b]` of a triangular
        matrix is triangular too).

    **Returns:**

    `"upper"` (strict lower triangle all zero), `"lower"` (strict upper triangle all zero),
    `"diagonal"` (both zero) or `"full"` (both filled).
    """
    upper_filled = bool(np.any(np.triu(block, 1)))
    lower_filled = bool(np.any(np.tril(block, -1)))
    if upper_filled and lower_filled:
        return "full"
    if upper_filled:
        return "upper"
    if lower_filled:
        return "lower"
    return "diagonal"


def rebuild_into(
    block: Shaped[np.ndarray, "t t"], out: Float[np.ndarray, "t t"], *, name: str = "map"
) -> Triangle:
    """Writes the full symmetric map rebuilt from a stored half (or full) map into `out`.

    For a half matrix h (one triangle and the diagonal), full = h + hᵀ − diag(h). Off the
    diagonal one of the two terms is zero, so the result equals the stored values exactly (also
    when float32 data are widened to float64). A stored full map must be symmetric to float32
    precision; its upper triangle is mirrored so that the output is exactly symmetric.

    **Arguments:**

    - `block`: the stored map, any real dtype.
    - `out`: a float64 array of the same shape, overwritten.
    - `name`: the map's name, for error messages.

    **Returns:**

    The detected triangle (see `which_triangle`). Raises `ValueError` for a full map that is
    not symmetric.
    """
    triangle = which_triangle(block)
    if triangle == "full":
        scale = float(np.max(np.abs(block)))
        asymmetry = float(np.max(np.abs(block - block.T)))
        if asymmetry > _SYMMETRY_RTOL * scale:
            raise ValueError(
                f"{name} holds a full map that is not symmetric (max |c2 − c2ᵀ| = {asymmetry:.3g}"
                f" vs max |c2| = {scale:.3g}); two-time maps are symmetric, so this is neither a "
                "half matrix nor a valid full one."
            )
        block = np.triu(block)
    # One of the two terms vanishes off the diagonal; the diagonal is then set from `block`.
    np.add(block, block.T, out=out, dtype=np.float64, casting="unsafe")
    np.fill_diagonal(out, np.diagonal(block))
    return triangle


def rebuild(block: Shaped[np.ndarray, "t t"]) -> Float[np.ndarray, "t t"]:
    """The full symmetric float64 map rebuilt from a stored half (or full) map.

    **Arguments:**

    - `block`: the stored map.

    **Returns:**

    A new float64 array, `h + hᵀ − diag(h)` for a half matrix h.
    """
    out = np.empty(block.shape, np.float64)
    rebuild_into(block, out)
    return out
