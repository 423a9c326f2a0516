"""One-time correlation from a two-time map by averaging along its diagonals."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


def _one_time_single(c2: Float[Array, "t t"]) -> Float[Array, " t"]:
    n = c2.shape[-1]
    start = jnp.arange(n)[:, None]
    lag = jnp.arange(n)[None, :]
    stop = start + lag
    inside = stop < n
    values = c2[start, jnp.minimum(stop, n - 1)]
    valid = inside & jnp.isfinite(values)
    total = jnp.sum(jnp.where(valid, values, 0.0), axis=0)
    count = jnp.sum(valid, axis=0)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def one_time(c2: Float[ArrayLike, "*phi t t"]) -> Float[Array, "*phi t"]:
    """g2 at lag k frames as the mean of the k-th upper diagonal of each two-time map.

        g2[k] = (1 / (N − k)) Σ_{i=0}^{N−k−1} c2[i, i + k],   k = 0 … N − 1.

    Non-finite entries (e.g. a masked diagonal stored as NaN) are left out of the mean; a lag with
    no finite entry gives NaN.

    **Arguments:**

    - `c2`: one map `(t, t)` or a stack `(..., t, t)`.

    **Returns:** g2 with the last two axes replaced by one lag axis of length N.
    """
    c2 = jnp.asarray(c2)
    if c2.ndim < 2 or c2.shape[-1] != c2.shape[-2]:
        raise ValueError(f"`c2` must end in two equal axes (t, t); got shape {c2.shape}.")
    flat = c2.reshape((-1, *c2.shape[-2:]))
    return jax.vmap(_one_time_single)(flat).reshape(c2.shape[:-1])
