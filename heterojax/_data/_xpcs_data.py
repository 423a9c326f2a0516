"""The container every loader returns and every fit takes: c2 maps with their axes."""

from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float

from .._model._bins import BinGeometry
from .._model._numerics import as_parameter


DiagonalMode = Literal["interpolate", "mask", "none"]
DIAGONAL_MODES: tuple[str, ...] = ("interpolate", "mask", "none")


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


class XPCSData(eqx.Module):
    """Two-time correlation maps of one measurement, one map per (q, φ) bin.

    **Fields:**

    - `c2`: the maps, shape `(phi, t, t)`, symmetric.
    - `t`: absolute times of the frames in seconds (frame k sits at t = k·dt).
    - `q`: wavevector of each map in Å⁻¹, shape `(phi,)`.
    - `phi`: detector angle of each map in degrees, shape `(phi,)`.
    - `dt`: the frame period in seconds.
    - `sigma`: optional standard deviation of every entry, same shape as `c2` (`None`: unknown;
        fits then estimate one noise level from the residuals).
    - `diagonal`: how the measured diagonal, which carries shot noise, was treated:
        `"interpolate"` (replaced by the mean of its neighbours, for display and one-time cuts),
        `"mask"` or `"none"` (kept as measured). Fits and χ² use the pairs t1 < t2 only
        (c2 is symmetric, so the lower triangle repeats them), plus the diagonal when and only
        when `diagonal == "none"`.
    - `metadata`: a dict of plain values describing where the data came from (file, selection,
        frame window); carried along, never used in computation.
    - `bins`: the detector bin of every map as a `BinGeometry` (quadrature nodes in (q, φ)), or
        `None` when only the bin centres are known. With it, fits, `simulate` and plots use the
        bin-averaged (ROI) model by default. `load_aps` builds it from the file's q map.
    """

    c2: Float[Array, "phi t t"]
    t: Float[Array, " t"]
    q: Float[Array, " phi"]
    phi: Float[Array, " phi"]
    dt: Float[Array, ""]
    sigma: Float[Array, "phi t t"] | None
    diagonal: str = eqx.field(static=True)
    metadata: dict[str, Any]
    bins: BinGeometry | None

    def __init__(
        self,
        c2: Float[ArrayLike, "*phi t t"],
        t: Float[ArrayLike, " t"],
        *,
        q: Float[ArrayLike, "*phi"],
        phi: Float[ArrayLike, "*phi"],
        dt: float | Float[ArrayLike, ""] | None = None,
        sigma: Float[ArrayLike, "*phi t t"] | None = None,
        diagonal: DiagonalMode = "none",
        metadata: dict[str, Any] | None = None,
        bins: BinGeometry | None = None,
    ):
        """**Arguments:** as the fields; a single `(t, t)` map and scalar `q`/`phi` are promoted to
        one angle, and `dt` defaults to the first spacing of `t`."""
        c2 = as_parameter(c2)
        if c2.ndim == 2:
            c2 = c2[None]
        t = as_parameter(t)
        n_angles = c2.shape[0] if c2.ndim == 3 else 0
        self.c2 = c2
        self.t = t
        self.q = (
            jnp.broadcast_to(as_parameter(q), (n_angles,)) if jnp.ndim(q) == 0 else as_parameter(q)
        )
        self.phi = (
            jnp.broadcast_to(as_parameter(phi), (n_angles,))
            if jnp.ndim(phi) == 0
            else as_parameter(phi)
        )
        if dt is None:
            self.dt = as_parameter(t[1] - t[0] if t.ndim == 1 and t.shape[0] > 1 else 1.0)
        else:
            self.dt = as_parameter(dt)
        self.sigma = None if sigma is None else jnp.broadcast_to(as_parameter(sigma), c2.shape)
        self.diagonal = diagonal
        self.metadata = dict(metadata or {})
        self.bins = bins

    def __check_init__(self):
        if self.diagonal not in DIAGONAL_MODES:
            raise ValueError(f"`diagonal` must be one of {DIAGONAL_MODES}; got {self.diagonal!r}.")
        if self.c2.ndim != 3 or self.c2.shape[1] != self.c2.shape[2]:
            raise ValueError(
                f"`c2` must have shape (phi, t, t) with square maps; got shape {self.c2.shape}."
            )
        n_angles, n_times = self.c2.shape[0], self.c2.shape[1]
        if self.t.shape != (n_times,):
            raise ValueError(
                f"`t` must have one time per row of c2 ({n_times}); got shape {self.t.shape}."
            )
        for name in ("q", "phi"):
            if getattr(self, name).shape != (n_angles,):
                raise ValueError(
                    f"`{name}` must have one value per map ({n_angles}); "
                    f"got shape {getattr(self, name).shape}."
                )
        if self.bins is not None:
            if not isinstance(self.bins, BinGeometry):
                raise TypeError(
                    f"`bins` must be a heterojax.BinGeometry or None; got "
                    f"{type(self.bins).__name__}."
                )
            if self.bins.weights.shape[0] != n_angles:
                raise ValueError(
                    f"`bins` describes {self.bins.weights.shape[0]} bins for {n_angles} maps; "
                    "give one bin per map, in the order of the maps."
                )
        if not all(_is_concrete(x) for x in (self.c2, self.t, self.q, self.dt)):
            return
        if n_times > 1 and not np.all(np.diff(np.asarray(self.t)) > 0):
            raise ValueError("`t` must be strictly increasing.")
        if not np.all(np.isfinite(np.asarray(self.c2))):
            bad = int(np.sum(~np.isfinite(np.asarray(self.c2))))
            raise ValueError(
                f"`c2` holds {bad} NaN/Inf values; remove or repair them (or choose other maps "
                "or frames) before fitting."
            )
        if not np.all(np.asarray(self.q) > 0):
            raise ValueError(f"`q` must be positive (Å⁻¹); got {np.asarray(self.q)}.")
        if not float(self.dt) > 0:
            raise ValueError(f"`dt` must be positive (s); got {float(self.dt)}.")
        if self.sigma is not None and _is_concrete(self.sigma):
            sigma = np.asarray(self.sigma)
            if not np.all(np.isfinite(sigma)) or not np.all(sigma > 0):
                raise ValueError("`sigma` must be finite and positive everywhere.")

    def with_bins(self, bins: BinGeometry | None) -> "XPCSData":
        """A copy of these data with the bin geometry replaced (`None` removes it).

        E.g. `data.with_bins(hj.BinGeometry.from_widths(data.q, data.phi, q_width=0.2 * data.q,
        phi_width=45.0))` for ±10 % rings cut into 45° sectors.
        """
        return XPCSData(
            self.c2,
            self.t,
            q=self.q,
            phi=self.phi,
            dt=self.dt,
            sigma=self.sigma,
            diagonal=self.diagonal,  # pyright: ignore[reportArgumentType]
            metadata=self.metadata,
            bins=bins,
        )

    @property
    def n_angles(self) -> int:
        """The number of maps."""
        return self.c2.shape[0]

    @property
    def n_times(self) -> int:
        """The number of frames per map side."""
        return self.c2.shape[1]

    @property
    def mask(self) -> Bool[Array, "phi t t"]:
        """Entries that enter every likelihood, residual and χ²: t1 < t2, plus the diagonal when
        `diagonal == "none"`."""
        k = 0 if self.diagonal == "none" else 1
        upper = np.triu(np.ones((self.n_times, self.n_times), bool), k=k)  # host: no program
        return jnp.asarray(np.broadcast_to(upper, self.c2.shape))

    @property
    def weights(self) -> Float[Array, "phi t t"]:
        """The weight of every entry in least squares and χ²: 1/σ² where `mask` is true (1 when
        `sigma` is unknown) and 0 elsewhere, so the diagonal convention holds in every fit."""
        precision = jnp.ones_like(self.c2) if self.sigma is None else 1.0 / self.sigma**2
        return jnp.where(self.mask, precision, 0.0)

    @property
    def n_points(self) -> int:
        """The number of independent data points used by fits (entries of `mask`)."""
        n = self.n_times
        per_map = n * (n - 1) // 2 + (n if self.diagonal == "none" else 0)
        return per_map * self.n_angles
