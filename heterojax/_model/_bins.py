"""`BinGeometry`: the (q, φ) extent of every map's detector bin, as a quadrature rule.

A map is the average over the pixels of its bin: c2 = ⟨I(t1) I(t2)⟩_bin / (⟨I(t1)⟩ ⟨I(t2)⟩)_bin.
With f² independent of q and φ, the model of a bin is (ROI model, SI Eq. S-77 averaged)

    c2_bin = offset + contrast · Σ_k w_k num(q_k, φ_k) / f²,   Σ_k w_k = 1,

where (q_k, φ_k, w_k) is a quadrature rule for the bin's pixel measure (`_quadrature`). The
heterodyne phase q cos(φ + φ0) ∫v changes across a wide bin, so the fringes dephase; a model
evaluated at the bin centre compensates with a wrong transport coefficient.

**Accuracy rule** (`BinGeometry.for_model`): over the time window the integrand changes across
a bin by at most a phase spread P_φ = q_max · V · Δφ (rad) in the φ direction
(|∂Φ/∂φ| ≤ q V), a phase spread P_q = Δq · V and a decay spread G_q = (q_max² − q_min²) · D in
the q direction, with V = max C_v − min C_v (the range of ∫v) and D the larger of the two
transport integrals over the window. Each dimension gets the fewest Gauss nodes that integrate
every exp((−G' + iP')u) on [0, 1] with P' ≤ P, G' ≤ G to tolerance/2 (`nodes_for_spread`); the
integrand's terms are bounded by 1 and contrast ≤ 1, so the c2 error is within the tolerance
(1e-4 by default) of the exact pixel average. `margin` scales P and G to cover parameters that
move during a fit.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._quadrature import (
    MAX_NODES,
    MOMENT_DEGREE,
    area_moments,
    nodes_for_spread,
    pixel_moments,
    tensor_rule,
)


if TYPE_CHECKING:
    from ._heterodyne import HeterodyneModel


DEFAULT_NODES = (4, 8)  # (q, φ) before a model is known; `for_model` sets the real count
DEFAULT_TOLERANCE = 1e-4
_SOURCES = ("widths", "pixels", "nodes")


def _is_concrete(*values) -> bool:
    return not any(isinstance(v, jax.core.Tracer) for v in values)  # pyright: ignore[reportAttributeAccessIssue]


def _per_map(value: Any, n: int, *, argument: str) -> Float[np.ndarray, " phi"]:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, n)):
        raise ValueError(
            f"`{argument}` must be a scalar or one value per map ({n}); got shape {array.shape}."
        )
    array = np.broadcast_to(array, (n,)).copy()
    if not np.all(np.isfinite(array)):
        raise ValueError(f"`{argument}` must be finite; got {array}.")
    return array


def _node_counts(nodes: Any) -> tuple[int, int] | None:
    """(n_q, n_φ) from `nodes=`; None for "auto"."""
    if isinstance(nodes, str):
        if nodes != "auto":
            raise ValueError(f"`nodes` must be 'auto' or a pair (n_q, n_phi); got {nodes!r}.")
        return None
    try:
        n_q, n_phi = (int(n) for n in nodes)
    except (TypeError, ValueError):
        raise TypeError(
            f"`nodes` must be 'auto' or a pair of integers (n_q, n_phi); got {nodes!r}."
        ) from None
    if not (1 <= n_q <= MAX_NODES and 1 <= n_phi <= MAX_NODES):
        raise ValueError(f"`nodes` must lie in 1..{MAX_NODES} per dimension; got {nodes!r}.")
    return n_q, n_phi


def unwrap_degrees(phi: Any, centre: Any) -> Float[np.ndarray, "..."]:
    """Angles (deg) shifted by multiples of 360° into [centre − 180, centre + 180)."""
    return centre + (np.asarray(phi, dtype=np.float64) - centre + 180.0) % 360.0 - 180.0


def _rules_from_moments(moments, q_centre, q_half, phi_centre, phi_half, n_q, n_phi):
    """Nodes and weights (phi, n_q·n_φ), q-major, of the tensor rule of every map; a map whose
    marginal supports fewer nodes is padded with zero-weight copies of its first node."""
    n_maps = moments.shape[0]
    q_nodes = np.empty((n_maps, n_q, n_phi))
    phi_nodes = np.empty((n_maps, n_q, n_phi))
    weights = np.zeros((n_maps, n_q, n_phi))
    for a in range(n_maps):
        x, y, w = tensor_rule(moments[a], n_q, n_phi)
        x = np.concatenate([x, np.full(n_q - x.size, x[0])])
        y = np.concatenate([y, np.full(n_phi - y.size, y[0])])
        q_nodes[a] = (q_centre[a] + q_half[a] * x)[:, None]
        phi_nodes[a] = (phi_centre[a] + phi_half[a] * y)[None, :]
        weights[a, : w.shape[0], : w.shape[1]] = w
    flat = (n_maps, n_q * n_phi)
    return q_nodes.reshape(flat), phi_nodes.reshape(flat), weights.reshape(flat)


class BinGeometry(eqx.Module):
    """The detector bin of every map, as quadrature nodes (q_k, φ_k) with weights w_k.

    Build it with `BinGeometry.from_widths` (q and φ spans), `from_pixels` (the pixels of each
    bin, as `load_aps` does from a file's q map) or `from_nodes` (your own rule). Attach it to
    data with `XPCSData.with_bins`; `HeterodyneModel.c2(..., bins=...)` then returns the bin
    averages of the module doc, and `simulate`, fits and plots use it by default.

    **Fields:**

    - `q_nodes`, `phi_nodes`: node positions in Å⁻¹ and degrees, shape `(phi, k)`; for tensor
        rules q-major (node `a·n_φ + b` sits at q_a, φ_b).
    - `weights`: shape `(phi, k)`, summing to 1 per map.
    - `q_centre`, `q_width`: centre and full width of each bin's q span (Å⁻¹).
    - `phi_centre`, `phi_width`: centre and full width of each bin's φ span (deg).
    - `moments`: the Legendre moments of each bin's measure on its span (`_quadrature`), from
        which rules of any size are derived (`with_nodes`, `for_model`); `None` for
        user-given nodes.
    - `grid`: `(n_q, n_φ)` for tensor rules (their q nodes are shared along φ, which the
        kernels exploit), else `None`.
    - `source`: `"widths"`, `"pixels"` or `"nodes"`.
    - `adaptive`: whether the number of nodes is still to be chosen for a model (`nodes="auto"`);
        `simulate`, fits and plots then call `for_model` first.
    """

    q_nodes: Float[Array, "phi k"]
    phi_nodes: Float[Array, "phi k"]
    weights: Float[Array, "phi k"]
    q_centre: Float[Array, " phi"]
    q_width: Float[Array, " phi"]
    phi_centre: Float[Array, " phi"]
    phi_width: Float[Array, " phi"]
    moments: Float[Array, "phi d d"] | None
    grid: tuple[int, int] | None = eqx.field(static=True)
    source: str = eqx.field(static=True)
    adaptive: bool = eqx.field(static=True)

    def __check_init__(self):
        if self.source not in _SOURCES:
            raise ValueError(f"`source` must be one of {_SOURCES}; got {self.source!r}.")
        shape = self.weights.shape
        if len(shape) != 2 or self.q_nodes.shape != shape or self.phi_nodes.shape != shape:
            raise ValueError(
                "`q_nodes`, `phi_nodes` and `weights` must share one shape (maps, nodes); got "
                f"{self.q_nodes.shape}, {self.phi_nodes.shape}, {shape}."
            )
        for name in ("q_centre", "q_width", "phi_centre", "phi_width"):
            if getattr(self, name).shape != shape[:1]:
                raise ValueError(
                    f"`{name}` must have one value per map ({shape[0]}); got shape "
                    f"{getattr(self, name).shape}."
                )
        if self.grid is not None and self.grid[0] * self.grid[1] != shape[1]:
            raise ValueError(f"`grid` {self.grid} does not match {shape[1]} nodes per map.")
        if not _is_concrete(self.q_nodes, self.weights):
            return
        weights, q_nodes = np.asarray(self.weights), np.asarray(self.q_nodes)
        if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(q_nodes))):
            raise ValueError("bin nodes and weights must be finite.")
        if np.any(q_nodes[weights != 0] <= 0):
            raise ValueError("bin q nodes must be positive (Å⁻¹).")
        totals = weights.sum(axis=1)
        if not np.allclose(totals, 1.0, rtol=0.0, atol=1e-9):
            raise ValueError(f"bin weights must sum to 1 per map; the sums are {totals}.")

    # ----------------------------------------------------------------------- constructors

    @classmethod
    def from_widths(
        cls,
        q: ArrayLike | Sequence[float],
        phi: ArrayLike | Sequence[float],
        q_width: ArrayLike | Sequence[float],
        phi_width: ArrayLike | Sequence[float],
        *,
        nodes: Literal["auto"] | tuple[int, int] = "auto",
        density: Literal["area", "uniform"] = "area",
    ) -> "BinGeometry":
        """Bins given by their centres and full widths: q ± q_width/2, φ ± phi_width/2.

        The bin is the box in (q, φ) with the pixel density of a flat detector at small
        angles, ∝ q dq dφ (`density="area"`), or uniform in q (`"uniform"`); the rule is the
        tensor Gauss rule of that measure.

        **Arguments:**

        - `q`, `phi`: bin centres (Å⁻¹, degrees), one per map (scalars broadcast).
        - `q_width`, `phi_width`: full widths (Å⁻¹, degrees), scalars or one per map;
            0 gives the bin centre in that dimension.
        - `nodes`: `"auto"` (the count is chosen for the model by `for_model`; until then
            `DEFAULT_NODES`) or a fixed pair `(n_q, n_phi)`.
        - `density`: `"area"` or `"uniform"` (see above).
        """
        phi = np.atleast_1d(np.asarray(phi, dtype=np.float64))
        if phi.ndim != 1:
            raise ValueError(f"`phi` must be a scalar or 1-D; got shape {phi.shape}.")
        n = phi.shape[0]
        q = _per_map(q, n, argument="q")
        phi = _per_map(phi, n, argument="phi")
        q_width = _per_map(q_width, n, argument="q_width")
        phi_width = _per_map(phi_width, n, argument="phi_width")
        if np.any(q <= 0):
            raise ValueError(f"`q` must be positive (Å⁻¹); got {q}.")
        if np.any(q_width < 0) or np.any(q_width >= 2 * q):
            raise ValueError(
                f"`q_width` must lie in [0, 2q) so that the bin stays at q > 0; got {q_width} "
                f"for q = {q} (full widths in Å⁻¹, e.g. 0.2 * q for ±10 %)."
            )
        if np.any(phi_width < 0) or np.any(phi_width > 360):
            raise ValueError(f"`phi_width` must lie in [0, 360] degrees; got {phi_width}.")
        if density not in ("area", "uniform"):
            raise ValueError(f"`density` must be 'area' or 'uniform'; got {density!r}.")
        counts = _node_counts(nodes)
        relative = q_width / (2 * q) if density == "area" else np.zeros(n)
        moments = np.stack([area_moments(float(s)) for s in relative])
        return cls._from_moments(moments, q, q_width, phi, phi_width, counts, source="widths")

    @classmethod
    def from_pixels(
        cls,
        q: Sequence[ArrayLike | Sequence[float]],
        phi: Sequence[ArrayLike | Sequence[float]],
        *,
        phi_centre: ArrayLike | Sequence[float] | None = None,
        counts: Sequence[ArrayLike | Sequence[float]] | None = None,
        nodes: Literal["auto"] | tuple[int, int] = "auto",
    ) -> "BinGeometry":
        """Bins given by their pixels: the rule is exact for the pixels' own (q, φ) measure.

        **Arguments:**

        - `q`, `phi`: one array per map with the q (Å⁻¹) and φ (deg) of every pixel of its bin.
        - `phi_centre`: the angle around which each bin's φ values are unwrapped (a bin across
            ±180° stays contiguous); default the circular mean of its pixels.
        - `counts`: optional weight of every pixel (default 1 each: the correlator averages
            pixels with equal weight).
        - `nodes`: as in `from_widths`.
        """
        if len(q) != len(phi) or len(q) == 0:
            raise ValueError(
                f"`q` and `phi` must hold one pixel array per map (the same number, ≥ 1); got "
                f"{len(q)} and {len(phi)}."
            )
        n = len(q)
        centres = None if phi_centre is None else _per_map(phi_centre, n, argument="phi_centre")
        moments = np.empty((n, MOMENT_DEGREE + 1, MOMENT_DEGREE + 1))
        spans = np.empty((4, n))
        for a in range(n):
            q_pixels = np.asarray(q[a], dtype=np.float64).ravel()
            phi_pixels = np.asarray(phi[a], dtype=np.float64).ravel()
            mass = None if counts is None else np.asarray(counts[a], dtype=np.float64).ravel()
            if q_pixels.size == 0 or q_pixels.shape != phi_pixels.shape:
                raise ValueError(
                    f"map {a}: the bin needs at least one pixel with one q and one φ each; got "
                    f"{q_pixels.size} q and {phi_pixels.size} φ values."
                )
            if mass is not None and (mass.shape != q_pixels.shape or np.any(mass < 0)):
                raise ValueError(f"map {a}: `counts` must be non-negative, one per pixel.")
            if not (np.all(np.isfinite(q_pixels)) and np.all(np.isfinite(phi_pixels))):
                raise ValueError(f"map {a}: pixel q and φ must be finite.")
            if np.any(q_pixels <= 0):
                raise ValueError(f"map {a}: pixel q must be positive (the beam centre pixel?).")
            if centres is None:
                radians = np.deg2rad(phi_pixels)
                centre = float(
                    np.rad2deg(np.arctan2(np.sin(radians).mean(), np.cos(radians).mean()))
                )
            else:
                centre = float(centres[a])
            phi_pixels = unwrap_degrees(phi_pixels, centre)
            q_low, q_high = q_pixels.min(), q_pixels.max()
            phi_low, phi_high = phi_pixels.min(), phi_pixels.max()
            spans[:, a] = (
                (q_low + q_high) / 2,
                q_high - q_low,
                (phi_low + phi_high) / 2,
                (phi_high - phi_low),
            )
            x = (q_pixels - spans[0, a]) / (spans[1, a] / 2 if spans[1, a] > 0 else 1.0)
            y = (phi_pixels - spans[2, a]) / (spans[3, a] / 2 if spans[3, a] > 0 else 1.0)
            moments[a] = pixel_moments(x, y, mass)
        return cls._from_moments(
            moments, spans[0], spans[1], spans[2], spans[3], _node_counts(nodes), source="pixels"
        )

    @classmethod
    def from_nodes(
        cls,
        q_nodes: ArrayLike | Sequence[Sequence[float]],
        phi_nodes: ArrayLike | Sequence[Sequence[float]],
        weights: ArrayLike | Sequence[Sequence[float]] | None = None,
    ) -> "BinGeometry":
        """Your own rule: nodes (Å⁻¹, deg) and weights (normalised to sum 1 per map; equal by
        default), one row per map. Used as given (no refinement)."""
        q_nodes = np.atleast_2d(np.asarray(q_nodes, dtype=np.float64))
        phi_nodes = np.atleast_2d(np.asarray(phi_nodes, dtype=np.float64))
        if weights is None:
            weights = np.ones_like(q_nodes)
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if not (q_nodes.shape == phi_nodes.shape == weights.shape) or q_nodes.ndim != 2:
            raise ValueError(
                "`q_nodes`, `phi_nodes` and `weights` must have one shape (maps, nodes); got "
                f"{q_nodes.shape}, {phi_nodes.shape}, {weights.shape}."
            )
        totals = weights.sum(axis=1, keepdims=True)
        if not np.all(np.isfinite(totals)) or np.any(totals <= 0):
            raise ValueError("`weights` must have a positive, finite sum for every map.")
        weights = weights / totals
        used = weights != 0
        q_low = np.where(used, q_nodes, np.inf).min(1)
        q_high = np.where(used, q_nodes, -np.inf).max(1)
        phi_unwrapped = unwrap_degrees(phi_nodes, phi_nodes[:, :1])
        phi_low = np.where(used, phi_unwrapped, np.inf).min(1)
        phi_high = np.where(used, phi_unwrapped, -np.inf).max(1)
        return cls(
            q_nodes=jnp.asarray(q_nodes),
            phi_nodes=jnp.asarray(phi_nodes),
            weights=jnp.asarray(weights),
            q_centre=jnp.asarray((q_low + q_high) / 2),
            q_width=jnp.asarray(q_high - q_low),
            phi_centre=jnp.asarray((phi_low + phi_high) / 2),
            phi_width=jnp.asarray(phi_high - phi_low),
            moments=None,
            grid=None,
            source="nodes",
            adaptive=False,
        )

    @classmethod
    def _from_moments(cls, moments, q_centre, q_width, phi_centre, phi_width, counts, *, source):
        adaptive = counts is None
        n_q, n_phi = DEFAULT_NODES if counts is None else counts
        q_nodes, phi_nodes, weights = _rules_from_moments(
            moments, q_centre, q_width / 2, phi_centre, phi_width / 2, n_q, n_phi
        )
        return cls(
            q_nodes=jnp.asarray(q_nodes),
            phi_nodes=jnp.asarray(phi_nodes),
            weights=jnp.asarray(weights),
            q_centre=jnp.asarray(q_centre, dtype=float),
            q_width=jnp.asarray(q_width, dtype=float),
            phi_centre=jnp.asarray(phi_centre, dtype=float),
            phi_width=jnp.asarray(phi_width, dtype=float),
            moments=jnp.asarray(moments),
            grid=(n_q, n_phi),
            source=source,
            adaptive=adaptive,
        )

    # ----------------------------------------------------------------------- properties

    @property
    def n_maps(self) -> int:
        """The number of maps (bins)."""
        return self.weights.shape[0]

    @property
    def n_nodes(self) -> int:
        """Quadrature nodes per map."""
        return self.weights.shape[1]

    def tensor_nodes(
        self,
    ) -> tuple[Float[Array, "phi a"], Float[Array, "phi a b"], Float[Array, "phi a b"]]:
        """The rule as a grid: q nodes `(phi, a)`, and for each the angles and weights
        `(phi, a, b)`. A rule without grid structure is one q node per node (b = 1). The kernels
        evaluate what depends on q alone (exp(−q² ΔC)) once per q node."""
        if self.grid is None:
            return self.q_nodes, self.phi_nodes[..., None], self.weights[..., None]
        shape = (self.q_nodes.shape[0], *self.grid)
        return (
            self.q_nodes.reshape(shape)[:, :, 0],
            self.phi_nodes.reshape(shape),
            self.weights.reshape(shape),
        )

    def take(self, indices: Any) -> "BinGeometry":
        """The geometry of the maps `indices` (a selection of maps)."""
        index = np.asarray(indices)
        return jtu.tree_map(lambda x: x[index], self)

    def describe(self) -> str:
        """One line for summaries: the source, the rule and the largest relative widths."""
        q_rel = np.asarray(self.q_width) / np.asarray(self.q_centre)
        grid = "×".join(map(str, self.grid)) if self.grid else str(self.n_nodes)
        return (
            f"bin average over {grid} nodes ({self.source}): Δq/q ≤ {np.max(q_rel):.3g}, "
            f"Δφ ≤ {np.max(np.asarray(self.phi_width)):.3g}°"
        )

    # ----------------------------------------------------------------------- node count

    def with_nodes(self, n_q: int, n_phi: int) -> "BinGeometry":
        """The same bins with an `(n_q, n_phi)` rule (derived from the stored moments)."""
        counts = _node_counts((n_q, n_phi))
        if self.moments is None:
            raise ValueError(
                "this BinGeometry was given as nodes (`from_nodes`) and holds no description "
                "of the bins to derive another rule from; build it with from_widths/from_pixels."
            )
        return BinGeometry._from_moments(
            np.asarray(self.moments),
            np.asarray(self.q_centre),
            np.asarray(self.q_width),
            np.asarray(self.phi_centre),
            np.asarray(self.phi_width),
            counts,
            source=self.source,
        )

    def nodes_needed(
        self,
        model: "HeterodyneModel",
        t: Float[ArrayLike, " t"],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        margin: float = 1.0,
    ) -> tuple[int, int]:
        """(n_q, n_φ) for c2 within `tolerance` of the exact bin average (module doc rule).

        **Arguments:** the model and time grid to evaluate; `tolerance` in c2 units;
        `margin` (≥ 1) scales the spreads (fits use 2, for parameters that move).
        """
        if not tolerance > 0:
            raise ValueError(f"`tolerance` must be positive; got {tolerance}.")
        if not margin >= 1:
            raise ValueError(f"`margin` must be at least 1; got {margin}.")
        grid = model.grid_integrals(jnp.asarray(t, dtype=float))
        velocity = float(jnp.max(grid.velocity) - jnp.min(grid.velocity))
        transport = float(
            jnp.maximum(grid.reference[-1] - grid.reference[0], grid.sample[-1] - grid.sample[0])
        )
        q_centre, q_width = np.asarray(self.q_centre), np.asarray(self.q_width)
        q_high, q_low = q_centre + q_width / 2, q_centre - q_width / 2
        phase_phi = margin * q_high * velocity * np.deg2rad(np.asarray(self.phi_width))
        phase_q = margin * q_width * velocity
        decay_q = margin * (q_high**2 - q_low**2) * transport
        n_q = nodes_for_spread(float(np.max(phase_q)), float(np.max(decay_q)), tolerance / 2)
        n_phi = nodes_for_spread(float(np.max(phase_phi)), 0.0, tolerance / 2)
        return n_q, n_phi

    def for_model(
        self,
        model: "HeterodyneModel",
        t: Float[ArrayLike, " t"],
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        margin: float = 1.0,
    ) -> "BinGeometry":
        """This geometry with the rule `nodes_needed` chooses, fixed (`adaptive=False`).

        Geometries given as nodes, or with a fixed node count, are returned as they are.
        """
        if not self.adaptive or self.moments is None:
            return self
        n_q, n_phi = self.nodes_needed(model, t, tolerance=tolerance, margin=margin)
        return self.with_nodes(n_q, n_phi)


def evaluation_bins(
    bins: BinGeometry | None,
    model: "HeterodyneModel",
    t: Float[ArrayLike, " t"],
    *,
    roi: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    margin: float = 1.0,
) -> BinGeometry | None:
    """The geometry to evaluate `model` with: `None` for the bin-centre model (`roi=False` or
    no geometry), else `bins` with its node count chosen for the model (`for_model`)."""
    if not roi or bins is None:
        return None
    return bins.for_model(model, t, tolerance=tolerance, margin=margin)
