"""The two-component heterodyne model: a composition of time laws and the flow angle offset."""

from collections.abc import Mapping
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from .._custom_types import CorrelationMaps, PairValues, TimeGrid
from .._parameters import PARAMETER_NAMES, PHI0_SPEC, ParameterSpec
from ._bins import BinGeometry
from ._laws import (
    AbstractFraction,
    AbstractLaw,
    AbstractTransport,
    AbstractVelocity,
    ExponentialFraction,
    PowerLawTransport,
    PowerLawVelocity,
)
from ._numerics import as_parameter, cumulative_trapezoid
from ._two_time import (
    GridIntegrals,
    block_size,
    direct_correlation,
    pair_correlation,
    structured_correlation,
)
from ._two_time_roi import (
    direct_bin_correlation,
    pair_bin_correlation,
    structured_bin_correlation,
)


_COMPONENTS = ("reference", "sample", "velocity", "fraction")
_STRUCTURED_BLOCK = 64
# The largest diagonal square of the ROI kernel: its squares cost ∝ nodes · N · block, while
# the off-diagonal products do not depend on it.
_ROI_BLOCK = 32
# `method="auto"` evaluates the bin-centre model by blocks from this many frames on, the bin
# average always: the model's Jacobian (forward mode, 4 physics parameters, one map) took,
# direct against structured, 0.50 / 0.35 ms at 58 frames and 1.01 / 0.43 ms at 100 for the bin
# centre (0.19 / 0.30 ms at 16), and with 3 × 6 ROI nodes 0.45 / 0.41 ms at 16 frames, 4.5 /
# 0.77 ms at 58 and 6.9 / 1.1 ms at 100 (the direct bin average loops over the nodes).
_STRUCTURED_FROM = 32


def _suffix(component: str) -> str:
    return {"reference": "_ref", "sample": "_sample"}.get(component, "")


def _angle_cosine(phi: Float[Array, " phi"], phi0: Float[Array, ""]) -> Float[Array, " phi"]:
    return jnp.cos(jnp.deg2rad(phi + phi0))


def _per_angle(name: str, value, n_angles: int) -> Float[Array, " phi"]:
    array = as_parameter(value)
    if array.ndim > 1 or (array.ndim == 1 and array.shape[0] not in (1, n_angles)):
        raise ValueError(
            f"`{name}` must be a scalar or have one value per angle ({n_angles}); "
            f"got shape {array.shape}."
        )
    return jnp.broadcast_to(array, (n_angles,))


def _angles(phi) -> Float[Array, " phi"]:
    phi = as_parameter(phi)
    if phi.ndim > 1:
        raise ValueError(
            f"`phi` must be a scalar or a 1-D array of angles (deg); got shape {phi.shape}."
        )
    return jnp.atleast_1d(phi)


def _bin_geometry(bins: BinGeometry, n_angles: int) -> BinGeometry:
    """`bins` with a leading map axis, checked against the number of angles."""
    if not isinstance(bins, BinGeometry):
        raise TypeError(
            f"`bins` must be a heterojax.BinGeometry or None; got {type(bins).__name__}."
        )
    if bins.weights.ndim == 1:  # one map's rule, e.g. sliced by lax.scan or vmap
        bins = jtu.tree_map(lambda x: x[None], bins)
    if bins.weights.shape[0] != n_angles:
        raise ValueError(
            f"`bins` describes {bins.weights.shape[0]} bins but there are {n_angles} angles; "
            "give one bin per map (BinGeometry.take selects maps)."
        )
    return bins


def _time_grid(t) -> TimeGrid:
    if not isinstance(t, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        concrete = np.asarray(t)
        if concrete.ndim != 1 or concrete.shape[0] < 1:
            raise ValueError(
                f"`t` must be a non-empty 1-D array of times (s); got shape {concrete.shape}."
            )
        if not np.all(np.diff(concrete) > 0):
            raise ValueError("`t` must be strictly increasing (times in seconds, one per frame).")
    return as_parameter(t)


class HeterodyneModel(eqx.Module):
    """The two-component heterodyne model of He et al. (PNAS 2024, 2025; SI Eqs. S-77–S-98).

    A static-or-slow *reference* component with transport rate J_ref(t) and a flowing *sample*
    component with transport rate J_sample(t) and velocity v(t) scatter with fractions f_r = 1 − f_s
    and f_s(t). The two-time correlation for one detector angle φ is (primes: at t2)

        h_n = exp(−½ q² |∫_{t1}^{t2} J_n|),   Φ = q cos(φ + φ0) ∫_{t1}^{t2} v,
        num = (f_r f_r')² h_r² + (f_s f_s')² h_s² + 2 (f_r f_s)(f_r f_s)' h_r h_s cos Φ,
        c2  = offset + contrast · num / [(f_s² + f_r²)(f_s'² + f_r'²)],

    with J_n floored at 0, f_s clipped into [0, 1], and every integral a cumulative trapezoid on
    the grid (never an analytic antiderivative).

    The model is an immutable pytree: its floating leaves are exactly its parameters, so it can be
    passed through `jax.jit`, `jax.grad` and `jax.vmap`, and fits take any `HeterodyneModel`,
    including ones built from user-written laws.

    **Fields:**

    - `reference`: the reference transport law (an `AbstractTransport`).
    - `sample`: the sample transport law (an `AbstractTransport`).
    - `velocity`: the sample velocity law (an `AbstractVelocity`).
    - `fraction`: the sample fraction law (an `AbstractFraction`).
    - `phi0`: flow-direction offset in degrees; the phase goes as cos(φ + φ0).
    """

    reference: AbstractTransport
    sample: AbstractTransport
    velocity: AbstractVelocity
    fraction: AbstractFraction
    phi0: Float[Array, ""]

    def __init__(
        self,
        reference: AbstractTransport | None = None,
        sample: AbstractTransport | None = None,
        velocity: AbstractVelocity | None = None,
        fraction: AbstractFraction | None = None,
        phi0: Float[ArrayLike, ""] = PHI0_SPEC.default,
    ):
        """**Arguments:** the four laws (defaults: power laws and an exponential fraction with the
        default values of `heterojax.PARAMETERS`) and `phi0` in degrees."""
        self.reference = PowerLawTransport() if reference is None else reference
        self.sample = PowerLawTransport() if sample is None else sample
        self.velocity = PowerLawVelocity() if velocity is None else velocity
        self.fraction = ExponentialFraction() if fraction is None else fraction
        self.phi0 = as_parameter(phi0)

    def __check_init__(self):
        expected = {
            "reference": AbstractTransport,
            "sample": AbstractTransport,
            "velocity": AbstractVelocity,
            "fraction": AbstractFraction,
        }
        for component, base in expected.items():
            law = getattr(self, component)
            if not isinstance(law, base):
                raise TypeError(
                    f"HeterodyneModel `{component}` must be an instance of {base.__name__}; "
                    f"got {type(law).__name__}."
                )

    # ----------------------------------------------------------------- parameter vector

    def _laws(self) -> tuple[AbstractLaw, ...]:
        return tuple(getattr(self, component) for component in _COMPONENTS)

    @property
    def parameter_specs(self) -> tuple[ParameterSpec, ...]:
        """Specs of every physics parameter in vector order (transport names suffixed
        `_ref` / `_sample`); for the default laws the order is `heterojax.PARAMETER_NAMES`."""
        specs = []
        for component, law in zip(_COMPONENTS, self._laws()):
            specs.extend(s.renamed(s.name + _suffix(component)) for s in law.parameter_specs)
        specs.append(PHI0_SPEC)
        return tuple(specs)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Names of the physics parameters in vector order."""
        return tuple(spec.name for spec in self.parameter_specs)

    def to_vector(self) -> Float[Array, " p"]:
        """The physics parameters as one vector, in the order of `parameter_names`."""
        parts = [law.to_vector() for law in self._laws()]
        return jnp.concatenate([*parts, jnp.reshape(jnp.asarray(self.phi0, float), (1,))])

    def with_vector(self, vector: Float[ArrayLike, " p"]) -> "HeterodyneModel":
        """A copy of this model (same laws) with the parameters replaced by `vector`."""
        vector = as_parameter(vector)
        n_expected = len(self.parameter_names)
        if vector.shape != (n_expected,):
            raise ValueError(
                f"Expected a parameter vector of shape ({n_expected},) for {self.parameter_names}; "
                f"got shape {vector.shape}."
            )
        laws, position = [], 0
        for law in self._laws():
            size = len(law.parameter_specs)
            laws.append(law.with_vector(vector[position : position + size]))
            position += size
        return HeterodyneModel(*laws, phi0=vector[position])

    @classmethod
    def from_vector(cls, vector: Float[ArrayLike, " 14"]) -> "HeterodyneModel":
        """The default-law model from the 14 values in canonical order (`PARAMETER_NAMES`)."""
        return cls().with_vector(vector)

    def to_dict(self) -> dict[str, Float[Array, ""]]:
        """Name → value for every physics parameter."""
        vector = self.to_vector()
        return {name: vector[k] for k, name in enumerate(self.parameter_names)}

    def replace(self, **values: Float[ArrayLike, ""]) -> "HeterodyneModel":
        """A copy with the named parameters changed, e.g. `model.replace(D0_ref=0.0, v0=2e3)`."""
        names = self.parameter_names
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(
                f"Unknown parameter(s) {unknown}; this model's parameters are {names}."
            )
        vector = self.to_vector()
        for name, value in values.items():
            vector = vector.at[names.index(name)].set(as_parameter(value))
        return self.with_vector(vector)

    @classmethod
    def from_dict(cls, values: Mapping[str, Float[ArrayLike, ""]]) -> "HeterodyneModel":
        """The default-law model with the given name → value entries (others at their defaults)."""
        return cls().replace(**dict(values))

    # ----------------------------------------------------------------- evaluation

    def rates(self, t: TimeGrid) -> dict[str, Float[Array, " t"]]:
        """J_ref(t), J_sample(t) (floored at 0), v(t) and f_s(t) (clipped to [0, 1]) on a grid."""
        return {
            "J_ref": jnp.maximum(self.reference(t), 0.0),
            "J_sample": jnp.maximum(self.sample(t), 0.0),
            "velocity": self.velocity(t),
            "sample_fraction": jnp.clip(self.fraction(t), 0.0, 1.0),
        }

    def grid_integrals(self, t: TimeGrid) -> GridIntegrals:
        """Cumulative trapezoid integrals of the rates, and f_s, on the time grid `t`."""
        rates = self.rates(t)
        return GridIntegrals(
            reference=cumulative_trapezoid(rates["J_ref"], t),
            sample=cumulative_trapezoid(rates["J_sample"], t),
            velocity=cumulative_trapezoid(rates["velocity"], t),
            sample_fraction=rates["sample_fraction"],
        )

    def c2(
        self,
        t: Float[ArrayLike, " t"],
        *,
        q: Float[ArrayLike, "*#phi"],
        phi: Float[ArrayLike, "*#phi"],
        contrast: Float[ArrayLike, "*#phi"] = 0.5,
        offset: Float[ArrayLike, "*#phi"] = 1.0,
        method: Literal["auto", "structured", "direct"] = "auto",
        bins: BinGeometry | None = None,
    ) -> CorrelationMaps:
        """The two-time correlation maps c2(φ, t1, t2), one per angle.

        With `bins`, each map is the average over its detector bin (the ROI model),

            c2_bin = offset + contrast · Σ_k w_k num(q_k, φ_k) / f²,

        with the nodes and weights of the `BinGeometry` as they are (see
        `BinGeometry.for_model` for a rule that meets a stated accuracy); `q` and `phi` then
        only count the maps. The structured evaluation adds rank per node, so the cost grows
        linearly with the number of nodes.

        **Arguments:**

        - `t`: strictly increasing 1-D time grid in seconds (absolute times).
        - `q`: wavevector in Å⁻¹; a scalar or one value per angle.
        - `phi`: detector angles in degrees; a scalar or a 1-D array.
        - `contrast`, `offset`: scalars or one value per angle.
        - `method`: `"structured"` (rank-8 block evaluation, fast for large grids), `"direct"`
            (the formula element by element), or `"auto"` (structured with `bins`, and from 32
            points on without).
        - `bins`: a `BinGeometry` with one bin per angle, or `None` for the bin centres.

        **Returns:**

        An array of shape `(len(phi), len(t), len(t))`.
        """
        t = _time_grid(t)
        phi = _angles(phi)
        n_angles = phi.shape[0]
        q = _per_angle("q", q, n_angles)
        contrast = _per_angle("contrast", contrast, n_angles)
        offset = _per_angle("offset", offset, n_angles)
        if method not in ("auto", "structured", "direct"):
            raise ValueError(f"`method` must be 'auto', 'structured' or 'direct'; got {method!r}.")
        if method == "auto":
            large = t.shape[0] >= _STRUCTURED_FROM
            method = "structured" if large or bins is not None else "direct"
        if bins is not None:
            bins = _bin_geometry(bins, n_angles)
        # Python floats in a user's law would be static to the compiled program (one
        # compilation per value); as arrays they are traced like the built-in laws' fields.
        model = jtu.tree_map(lambda leaf: jnp.asarray(leaf) if type(leaf) is float else leaf, self)
        return _evaluate_c2(model, t, q, phi, contrast, offset, method, bins)

    def c2_pairs(
        self,
        t: Float[ArrayLike, " t"],
        t1_index: Int[ArrayLike, " pair"],
        t2_index: Int[ArrayLike, " pair"],
        angle_index: Int[ArrayLike, " pair"],
        *,
        q: Float[ArrayLike, "*#phi"],
        phi: Float[ArrayLike, "*#phi"],
        contrast: Float[ArrayLike, "*#phi"] = 0.5,
        offset: Float[ArrayLike, "*#phi"] = 1.0,
        bins: BinGeometry | None = None,
    ) -> PairValues:
        """c2 at arbitrary (t1, t2, angle) index triples, without forming any N×N map.

        Integrals are cumulative on the whole grid `t` (O(N)); each pair is then a gather, so the
        cost is O(N + n_pairs). Used by sharded likelihoods.

        **Arguments:** `t`, `q`, `phi`, `contrast`, `offset`, `bins` as in `c2`; `t1_index`,
        `t2_index` index into `t`; `angle_index` into `phi`. With `bins` the cost is
        O(N + n_pairs · nodes).

        **Returns:** an array with one c2 value per triple.
        """
        t = _time_grid(t)
        phi = _angles(phi)
        n_angles = phi.shape[0]
        q = _per_angle("q", q, n_angles)
        contrast = _per_angle("contrast", contrast, n_angles)
        offset = _per_angle("offset", offset, n_angles)
        angle_index = jnp.asarray(angle_index)
        grid = self.grid_integrals(t)
        if bins is not None:
            bins = _bin_geometry(bins, n_angles)
            cosine = jnp.cos(jnp.deg2rad(bins.phi_nodes + self.phi0))
            normalised = pair_bin_correlation(
                grid,
                jnp.asarray(t1_index),
                jnp.asarray(t2_index),
                bins.q_nodes[angle_index],
                cosine[angle_index],
                bins.weights[angle_index],
            )
            return offset[angle_index] + contrast[angle_index] * normalised
        cosine = _angle_cosine(phi, self.phi0)
        normalised = pair_correlation(
            grid,
            jnp.asarray(t1_index),
            jnp.asarray(t2_index),
            q[angle_index],
            cosine[angle_index],
        )
        return offset[angle_index] + contrast[angle_index] * normalised

    def g2(
        self,
        tau: Float[ArrayLike, " tau"],
        *,
        q: Float[ArrayLike, "*#phi"],
        phi: Float[ArrayLike, "*#phi"],
        contrast: Float[ArrayLike, "*#phi"] = 0.5,
        offset: Float[ArrayLike, "*#phi"] = 1.0,
    ) -> Float[Array, "phi tau"]:
        """The one-time correlation g2(τ) of a time-independent model (SI Eq. S-98).

        With constant rates J_r, J_s, v and fraction x = f_s² / (f_s² + f_r²),

            g2(τ) = offset + contrast · [(1−x)² e^{−q² J_r τ} + x² e^{−q² J_s τ}
                      + 2 x (1−x) e^{−½ q² (J_r + J_s) τ} cos(q cos(φ + φ0) v τ)].

        The laws are evaluated at t = 1 s and t = 2 s; if they differ the model is not
        time-independent and an error is raised (also under `jax.jit`).

        **Returns:** an array of shape `(len(phi), len(tau))`.
        """
        tau = jnp.abs(as_parameter(tau))
        phi = _angles(phi)
        n_angles = phi.shape[0]
        q = _per_angle("q", q, n_angles)[:, None]
        contrast = _per_angle("contrast", contrast, n_angles)[:, None]
        offset = _per_angle("offset", offset, n_angles)[:, None]
        rates = self.rates(jnp.array([1.0, 2.0]))
        stacked = jnp.stack(list(rates.values()))
        changing = jnp.any(
            jnp.abs(stacked[:, 1] - stacked[:, 0]) > 1e-12 * (1 + jnp.abs(stacked[:, 0]))
        )
        tau = eqx.error_if(
            tau,
            changing,
            "HeterodyneModel.g2 needs a time-independent model (constant J_ref, J_sample, v, f_s); "
            "use c2 and heterojax.one_time for ageing models.",
        )
        j_ref, j_sample, velocity, f_s = (value[0] for value in rates.values())
        x = f_s**2 / (f_s**2 + (1 - f_s) ** 2)
        cosine = _angle_cosine(phi, self.phi0)[:, None]
        q2 = q**2
        normalised = (
            (1 - x) ** 2 * jnp.exp(-q2 * j_ref * tau)
            + x**2 * jnp.exp(-q2 * j_sample * tau)
            + 2
            * x
            * (1 - x)
            * jnp.exp(-0.5 * q2 * (j_ref + j_sample) * tau)
            * jnp.cos(q * cosine * velocity * tau)
        )
        return offset + contrast * normalised


assert HeterodyneModel().parameter_names == PARAMETER_NAMES


@eqx.filter_jit
def _evaluate_c2(
    model: "HeterodyneModel",
    t: TimeGrid,
    q: Float[Array, " phi"],
    phi: Float[Array, " phi"],
    contrast: Float[Array, " phi"],
    offset: Float[Array, " phi"],
    method: str,
    bins: BinGeometry | None,
) -> CorrelationMaps:
    """`HeterodyneModel.c2` after its arguments are checked, as one compiled program per
    shape: evaluated op by op, its first call at a new shape compiled some 160 small programs
    (5–8 s for 2 × 40 frames, against well under a second for the one)."""
    grid = model.grid_integrals(t)
    if bins is not None:
        if method == "structured":
            q_nodes, phi_nodes, weights = bins.tensor_nodes()
            return structured_bin_correlation(
                grid,
                q_nodes,
                jnp.cos(jnp.deg2rad(phi_nodes + model.phi0)),
                weights,
                contrast,
                offset,
                block=_ROI_BLOCK,
            )
        cosine = jnp.cos(jnp.deg2rad(bins.phi_nodes + model.phi0))
        normalised = direct_bin_correlation(grid, bins.q_nodes, cosine, bins.weights)
        return offset[:, None, None] + contrast[:, None, None] * normalised
    cosine = _angle_cosine(phi, model.phi0)
    if method == "structured":
        block = block_size(t.shape[0], _STRUCTURED_BLOCK)
        return structured_correlation(grid, q, cosine, contrast, offset, block=block)
    normalised = jax.vmap(direct_correlation, in_axes=(None, 0, 0))(grid, q, cosine)
    return offset[:, None, None] + contrast[:, None, None] * normalised
