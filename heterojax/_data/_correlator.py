"""`two_time`: the multi-pixel two-time correlator, from intensity frames to an `XPCSData`."""

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from .._model._bins import BinGeometry
from ._assemble import adopt, aligned_empty, check_dt, plain
from ._diagonal import apply_diagonal_mode, check_diagonal_mode
from ._simulate import _frame_window
from ._xpcs_data import XPCSData


def _per_bin(value: ArrayLike | Sequence[float], n_bins: int, *, argument: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, n_bins)):
        raise ValueError(
            f"`{argument}` must be a scalar or have one value per bin ({n_bins}); "
            f"got shape {array.shape}."
        )
    return np.broadcast_to(array, (n_bins,)).copy()


@eqx.filter_jit
def _correlate(
    frames: Float[Array, "bin pixel t"], used: Bool[Array, "bin pixel"]
) -> tuple[Float[Array, "bin t t"], Float[Array, "bin t"]]:
    """c2 of every bin (symmetrised) and the mean intensity ⟨I(t)⟩_p of every bin."""
    intensities = jnp.where(used[..., None], frames, 0.0)
    n_pixels = jnp.sum(used, axis=1).astype(frames.dtype)[:, None]
    mean = jnp.sum(intensities, axis=1) / n_pixels
    # One (t × pixel)·(pixel × t) product per bin: ⟨I_i I_j⟩_p for every pair of frames.
    second = jnp.einsum("bpi,bpj->bij", intensities, intensities) / n_pixels[..., None]
    c2 = second / (mean[:, :, None] * mean[:, None, :])
    return (c2 + jnp.swapaxes(c2, 1, 2)) / 2, mean


def two_time(
    frames: Real[ArrayLike, "..."],
    t: Float[ArrayLike, " t"],
    *,
    q: ArrayLike | Sequence[float],
    phi: ArrayLike | Sequence[float],
    bins: BinGeometry | None = None,
    dt: float | None = None,
    diagonal: str = "mask",
) -> XPCSData:
    """The two-time correlation maps of intensity frames, as a multi-pixel correlator makes them.

    For every bin, with ⟨·⟩_p the plain mean over the bin's pixels p and I_p(t_i) the intensity
    (photon count) of pixel p in frame i,

        c2(t_i, t_j) = ⟨I_p(t_i) I_p(t_j)⟩_p / (⟨I_p(t_i)⟩_p ⟨I_p(t_j)⟩_p),

    the normalisation the APS 8-ID-I correlator (boost-corr) uses in its two-time mode. The
    numerator of all pairs (i, j) is one matrix product per bin, so the cost is
    O(bins · pixels · t²) and the memory that of the maps. The result is symmetrised,
    (c2 + c2ᵀ)/2, which only removes rounding.

    With Poisson counts N ~ Poisson(λ I) the off-diagonal entries carry no shot-noise bias
    (⟨N_i N_j⟩ = λ² ⟨I_i I_j⟩ for i ≠ j), while the diagonal does:
    ⟨N²⟩/⟨N⟩² = ⟨I²⟩/⟨I⟩² + 1/⟨N⟩. Hence the default `diagonal="mask"`, which keeps the
    measured diagonal for display and leaves it out of every fit. As a ratio of pixel means,
    c2 has a bias of relative order 1/pixels (e.g. ≈ −0.75/pixels on the diagonal at
    contrast 0.5 without shot noise), as the beamline correlator has.

    **Arguments:**

    - `frames`: intensities of shape `(bins, pixels, t)` (or `(pixels, t)` for one bin), e.g.
        the output of `heterojax.simulate_speckle`. A pixel whose frames are all NaN is absent
        (how bins with fewer pixels are padded); any other non-finite value is an error.
    - `t`: the absolute time of every frame in seconds, strictly increasing.
    - `q`: the wavevector of every bin (Å⁻¹), a scalar or one per bin.
    - `phi`: the angle of every bin (degrees), a scalar or one per bin.
    - `bins`: the `BinGeometry` of the bins, attached to the data so that fits use the
        bin-averaged model (optional).
    - `dt`: the frame period in seconds (default: the first spacing of `t`).
    - `diagonal`: `"mask"` (default), `"interpolate"` or `"none"`, as in `load_aps`.

    **Returns:**

    An `XPCSData` with `sigma=None`, the bins when given, and `metadata` recording the number
    of pixels of every bin.
    """
    return correlate_frames(frames, t, q=q, phi=phi, bins=bins, dt=dt, diagonal=diagonal)


def correlate_frames(
    frames: Real[ArrayLike, "..."],
    t: Float[ArrayLike, " t"],
    *,
    q: ArrayLike | Sequence[float],
    phi: ArrayLike | Sequence[float],
    bins: BinGeometry | None,
    dt: float | None,
    diagonal: str,
    metadata: dict | None = None,
) -> XPCSData:
    """`two_time` with extra `metadata` entries (the simulator records its inputs there)."""
    diagonal = check_diagonal_mode(diagonal)
    values = np.asarray(frames, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or values.shape[1] < 1 or values.shape[2] < 2:
        raise ValueError(
            "`frames` must have shape (bins, pixels, t) (or (pixels, t) for one bin) with at "
            f"least one pixel and two frames; got shape {np.shape(frames)}."
        )
    n_bins, _, n_times = values.shape
    times = np.asarray(t, dtype=np.float64)
    if times.shape != (n_times,):
        raise ValueError(
            f"`t` must hold one time per frame ({n_times}, the last axis of `frames`); got "
            f"shape {times.shape}."
        )
    if not np.all(np.diff(times) > 0):
        raise ValueError("`t` must be strictly increasing (seconds, one per frame).")
    phi_values = np.atleast_1d(np.asarray(phi, dtype=np.float64))
    if phi_values.shape not in ((1,), (n_bins,)):
        raise ValueError(
            f"`phi` must be a scalar or have one angle per bin ({n_bins}); got shape "
            f"{np.shape(phi)}."
        )
    phi_values = np.broadcast_to(phi_values, (n_bins,)).copy()
    q_values = _per_bin(q, n_bins, argument="q")
    if bins is not None and not isinstance(bins, BinGeometry):
        raise TypeError(f"`bins` must be a heterojax.BinGeometry; got {type(bins).__name__}.")
    if bins is not None and bins.n_maps != n_bins:
        raise ValueError(f"`bins` describes {bins.n_maps} bins for {n_bins} bins of frames.")
    checked_dt = check_dt(dt)
    dt_value = float(times[1] - times[0]) if checked_dt is None else checked_dt
    finite = np.isfinite(values)
    used = finite.all(axis=2)
    partial = ~used & finite.any(axis=2)
    if np.any(partial) or np.any(np.isinf(values)):
        b, p = np.argwhere(partial | np.isinf(values).any(axis=2))[0]
        raise ValueError(
            f"`frames` has non-finite values in pixel {p} of bin {b}; a pixel is either "
            "present (all frames finite) or absent (all frames NaN)."
        )
    n_pixels = used.sum(axis=1)
    if np.any(n_pixels == 0):
        raise ValueError(f"bin {int(np.argmin(n_pixels))} has no pixels (all frames NaN).")
    c2, mean = _correlate(jnp.asarray(values), jnp.asarray(used))
    mean = np.asarray(mean)
    if not np.all(mean > 0):
        b, i = np.argwhere(~(mean > 0))[0]
        raise ValueError(
            f"frame {i} of bin {b} has mean intensity {mean[b, i]:g} over its pixels, so c2 "
            "is undefined there; use more pixels or counts (photons per pixel per frame)."
        )
    maps = aligned_empty(tuple(c2.shape))
    maps[...] = np.asarray(c2)
    apply_diagonal_mode(maps, diagonal)
    metadata = {
        "source": "heterojax.two_time",
        "pixels": n_pixels,
        "frames": _frame_window(times, dt_value),
        "diagonal": diagonal,
        **(metadata or {}),
    }
    return XPCSData(
        adopt(maps),
        times,
        q=q_values,
        phi=phi_values,
        dt=dt_value,
        sigma=None,
        diagonal=diagonal,  # pyright: ignore[reportArgumentType]
        metadata=plain(metadata),
        bins=bins,
    )
