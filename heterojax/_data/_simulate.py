"""`simulate`: synthetic two-time data from any model, with Gaussian noise, as an `XPCSData`."""

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._model._bins import BinGeometry, evaluation_bins
from .._model._heterodyne import HeterodyneModel
from ._assemble import adopt, aligned_empty, plain
from ._diagonal import apply_diagonal_mode, check_diagonal_mode
from ._xpcs_data import XPCSData


def _mirror_upper(maps: Float[Array, "*phi t t"]) -> Float[Array, "*phi t t"]:
    """The symmetric maps built from the upper triangle (diagonal included) of `maps`."""
    return jnp.triu(maps) + jnp.swapaxes(jnp.triu(maps, 1), -1, -2)


@jax.jit
def _symmetric_maps(
    clean: Float[Array, "phi t t"], sigma: Float[Array, "phi t t"] | None, key
) -> tuple[Float[Array, "phi t t"], Float[Array, "phi t t"] | None]:
    """The clean maps mirrored, plus (with `sigma`) Gaussian noise N(0, σ²) drawn for the upper
    triangle and mirrored, and σ mirrored: one compiled program, not a dozen op by op."""
    maps = _mirror_upper(clean)
    if sigma is None:
        return maps, None
    noise = _mirror_upper(sigma * jr.normal(key, maps.shape, dtype=maps.dtype))
    return maps + noise, _mirror_upper(sigma)


def _per_angle(
    value: ArrayLike | Sequence[float], n_angles: int, *, argument: str
) -> Float[np.ndarray, " phi"]:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, n_angles)):
        raise ValueError(
            f"`{argument}` must be a scalar or have one value per angle ({n_angles}); "
            f"got shape {array.shape}."
        )
    return np.broadcast_to(array, (n_angles,)).copy()


def _noise_levels(
    noise: ArrayLike | Sequence[float], shape: tuple[int, int, int]
) -> Float[np.ndarray, "phi t t"] | None:
    """σ broadcast to the maps, or `None` for noiseless data; `ValueError` for bad values."""
    sigma = np.asarray(noise, dtype=np.float64)
    n_angles = shape[0]
    if sigma.ndim == 1 and sigma.shape[0] in (1, n_angles):
        sigma = sigma[:, None, None]
    elif sigma.ndim not in (0, 2, 3):
        raise ValueError(
            f"`noise` must be a scalar, one σ per angle ({n_angles},), or an array of shape "
            f"(t, t) or {shape}; got shape {sigma.shape}."
        )
    try:
        sigma = np.broadcast_to(sigma, shape)
    except ValueError:
        raise ValueError(
            f"`noise` of shape {np.shape(noise)} does not broadcast to the maps {shape}."
        ) from None
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("`noise` must be finite and non-negative (a standard deviation).")
    if not np.any(sigma > 0):
        return None
    if np.any(sigma == 0):
        raise ValueError(
            "`noise` is zero for some entries but not others; give a positive σ everywhere, or "
            "noise=0 for noiseless data."
        )
    return sigma


def _frame_window(t: Float[np.ndarray, " t"], dt: float) -> tuple[int, int] | None:
    frames = t / dt
    first = int(np.rint(frames[0]))
    expected = first + np.arange(t.size)
    if first >= 1 and np.allclose(frames, expected, rtol=0.0, atol=1e-9 * max(1, t.size)):
        return first, int(expected[-1])
    return None


def simulate(
    model: HeterodyneModel,
    t: Float[ArrayLike, " t"],
    *,
    q: ArrayLike | Sequence[float],
    phi: ArrayLike | Sequence[float],
    contrast: ArrayLike | Sequence[float] = 0.5,
    offset: ArrayLike | Sequence[float] = 1.0,
    noise: ArrayLike | Sequence[float] = 0.0,
    key: PRNGKeyArray | None = None,
    dt: float | int | None = None,
    diagonal: str = "none",
    method: Literal["auto", "structured", "direct"] = "auto",
    bins: BinGeometry | None = None,
    q_width: ArrayLike | Sequence[float] | None = None,
    phi_width: ArrayLike | Sequence[float] | None = None,
) -> XPCSData:
    """Synthetic two-time maps from a model, as an `XPCSData` ready to fit or to `save_aps`.

    The clean maps are `model.c2(t, q=q, phi=phi, contrast=contrast, offset=offset)`. Gaussian
    noise with standard deviation σ = `noise` is drawn for the upper triangle (diagonal
    included) and mirrored, because measured c2 maps are symmetric; the clean maps are made
    exactly symmetric the same way. With noise the returned data carry `sigma` = σ (so that fits
    can weight by it); without noise `sigma` is `None`.

    With a bin geometry (`bins`, or `q_width`/`phi_width`), every map is the average over its
    detector bin (the ROI model of `HeterodyneModel.c2`), with the node count chosen for this
    model to 1e-4 in c2 (`BinGeometry.for_model`); the data carry the geometry, so fits use it.

    Use absolute times: for frames first..last, `t = dt * arange(first, last + 1)`;
    the frame window is then recorded in the metadata and the data can be saved as an APS file.

    **Arguments:**

    - `model`: a `HeterodyneModel` (any laws).
    - `t`: strictly increasing times in seconds.
    - `q`: wavevector in Å⁻¹, a scalar or one per angle.
    - `phi`: detector angles in degrees (one map each).
    - `contrast`, `offset`: scalars or one per angle.
    - `noise`: σ of the Gaussian noise: a scalar, one per angle, or an array of shape `(t, t)` or
        `(phi, t, t)`; 0 (default) for clean maps.
    - `key`: a `jax.random` key, required when `noise` is not 0.
    - `dt`: the frame period in seconds (default: the first spacing of `t`).
    - `diagonal`: how the returned data treat the diagonal (`"none"`: as simulated, since a
        simulation has no shot-noise excess there; see `load_aps`).
    - `method`: passed to `HeterodyneModel.c2`.
    - `bins`: a `BinGeometry` with one bin per angle.
    - `q_width`, `phi_width`: instead of `bins`, full bin widths (Å⁻¹, degrees; scalars or one
        per angle) around `q` and `phi` (`BinGeometry.from_widths`; a missing one is 0).

    **Returns:**

    An `XPCSData` with `metadata` holding the model parameters, contrast, offset, noise and,
    when t is on a frame grid, the frame window.
    """
    if not isinstance(model, HeterodyneModel):
        raise TypeError(f"`model` must be a heterojax.HeterodyneModel; got {type(model).__name__}.")
    diagonal = check_diagonal_mode(diagonal)
    phi_values = np.atleast_1d(np.asarray(phi, dtype=np.float64))
    if phi_values.ndim != 1:
        raise ValueError(f"`phi` must be a scalar or a 1-D list of angles; got {np.shape(phi)}.")
    n_angles = phi_values.shape[0]
    q_values = _per_angle(q, n_angles, argument="q")
    contrast_values = _per_angle(contrast, n_angles, argument="contrast")
    offset_values = _per_angle(offset, n_angles, argument="offset")
    times = np.asarray(t, dtype=np.float64)
    if times.ndim != 1 or times.size < 2:
        raise ValueError(f"`t` must be a 1-D array of at least two times (s); got {times.shape}.")
    dt_value = float(times[1] - times[0]) if dt is None else float(dt)
    shape = (n_angles, times.size, times.size)
    sigma = _noise_levels(noise, shape)
    if sigma is not None and key is None:
        raise ValueError("`key` is required when `noise` > 0; pass key=jax.random.key(seed).")
    if q_width is not None or phi_width is not None:
        if bins is not None:
            raise ValueError("Pass either `bins` or `q_width`/`phi_width`, not both.")
        bins = BinGeometry.from_widths(
            q_values,
            phi_values,
            0.0 if q_width is None else q_width,
            0.0 if phi_width is None else phi_width,
        )
    if bins is not None and not isinstance(bins, BinGeometry):
        raise TypeError(f"`bins` must be a heterojax.BinGeometry; got {type(bins).__name__}.")
    if bins is not None and bins.n_maps != n_angles:
        raise ValueError(f"`bins` describes {bins.n_maps} bins for {n_angles} angles.")
    used_bins = evaluation_bins(bins, model, times)
    clean = model.c2(
        times,
        q=q_values,
        phi=phi_values,
        contrast=contrast_values,
        offset=offset_values,
        method=method,
        bins=used_bins,
    )
    maps, sigma = _symmetric_maps(clean, None if sigma is None else jnp.asarray(sigma), key)
    if sigma is not None:
        sigma = np.asarray(sigma)
    c2 = aligned_empty(tuple(maps.shape))
    c2[...] = np.asarray(maps)
    apply_diagonal_mode(c2, diagonal)
    noise_levels = np.asarray(noise, dtype=np.float64)
    metadata = {
        "source": "heterojax.simulate",
        "parameters": {name: float(value) for name, value in model.to_dict().items()},
        "contrast": contrast_values,
        "offset": offset_values,
        "noise": noise_levels if noise_levels.ndim < 2 else "array",
        "frames": _frame_window(times, dt_value) if dt_value > 0 else None,
        "diagonal": diagonal,
        "roi": None
        if used_bins is None
        else {"source": used_bins.source, "nodes": used_bins.grid or used_bins.n_nodes},
    }
    return XPCSData(
        adopt(c2),
        times,
        q=q_values,
        phi=phi_values,
        dt=dt_value,
        sigma=sigma,
        diagonal=diagonal,  # pyright: ignore[reportArgumentType]
        metadata=plain(metadata),
        bins=bins,
    )
