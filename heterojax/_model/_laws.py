"""Time laws of the two-component model: transport J(t), velocity v(t), sample fraction f_s(t).

Each law is an immutable `eqx.Module` whose floating fields are its parameters, declared in the
class variable `parameter_specs` (name, default, bounds, unit) in the order of its parameter
vector. Users add a law by subclassing the matching abstract base and declaring its fields and
specs; the model and every fit then take it unchanged.
"""

import abc
from typing import ClassVar, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._custom_types import TimeGrid
from .._parameters import FRACTION_SPECS, TRANSPORT_SPECS, VELOCITY_SPECS, ParameterSpec
from ._numerics import as_parameter, power_of_time


class AbstractLaw(eqx.Module):
    """A parametrised function of time. Its parameters are the fields named in `parameter_specs`.

    Subclasses declare `parameter_specs: ClassVar[tuple[ParameterSpec, ...]]` with one spec per
    floating field (same names), and implement `__call__(t)`.
    """

    parameter_specs: eqx.AbstractClassVar[tuple[ParameterSpec, ...]]

    @abc.abstractmethod
    def __call__(self, t: TimeGrid) -> Float[Array, " t"]:
        """The law evaluated on the time grid `t` (seconds)."""

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The names of this law's parameters, in vector order."""
        return tuple(spec.name for spec in cls.parameter_specs)

    def to_vector(self) -> Float[Array, " p"]:
        """The parameters stacked in the order of `parameter_specs`."""
        return jnp.stack(
            [jnp.asarray(getattr(self, name), float) for name in self.parameter_names()]
        )

    def with_vector(self: "_Law", vector: Float[ArrayLike, " p"]) -> "_Law":
        """A copy of this law with its parameters replaced by `vector` (`parameter_specs` order)."""
        names = self.parameter_names()
        vector = jnp.asarray(vector)
        if vector.shape != (len(names),):
            raise ValueError(
                f"{type(self).__name__}.with_vector expects shape ({len(names)},) for parameters "
                f"{names}; got shape {vector.shape}."
            )
        return eqx.tree_at(
            lambda law: [getattr(law, name) for name in names],
            self,
            [vector[k] for k in range(len(names))],
        )


# A TypeVar rather than typing.Self: beartype (the runtime checker used in the tests) rejects
# Self outside classes it decorates itself.
_Law = TypeVar("_Law", bound=AbstractLaw)


class AbstractTransport(AbstractLaw):
    """A transport rate J(t) (Å²/s): the time derivative of the mean-square displacement.

    The model floors J at 0 (a transport rate is never negative), whatever the law returns.
    """


class AbstractVelocity(AbstractLaw):
    """A signed flow velocity v(t) (Å/s). Negative values mean flow reversal."""


class AbstractFraction(AbstractLaw):
    """The sample fraction f_s(t); the model clips it into [0, 1] and uses f_r = 1 − f_s."""


def _field(spec: ParameterSpec):
    return eqx.field(default=spec.default, converter=as_parameter)


class PowerLawTransport(AbstractTransport):
    """Power-law transport rate (SI Eq. S-90 family).

    J(t) = D0 · t^alpha + D_offset,  with t^alpha := 0 at t = 0.

    `alpha = 0` with `D_offset = 0` is Brownian diffusion with rate D0 (no factor 6: D0 *is* the
    rate); `alpha > 0` super-diffusive ageing, `alpha < 0` slowing down.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = TRANSPORT_SPECS
    D0: Float[Array, ""] = _field(TRANSPORT_SPECS[0])
    alpha: Float[Array, ""] = _field(TRANSPORT_SPECS[1])
    D_offset: Float[Array, ""] = _field(TRANSPORT_SPECS[2])

    def __call__(self, t: TimeGrid) -> Float[Array, " t"]:
        return self.D0 * power_of_time(t, self.alpha) + self.D_offset


class PowerLawVelocity(AbstractVelocity):
    """Power-law velocity.

    v(t) = v0 · t^beta + v_offset,  with t^beta := 0 at t = 0; signed, never floored.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = VELOCITY_SPECS
    v0: Float[Array, ""] = _field(VELOCITY_SPECS[0])
    beta: Float[Array, ""] = _field(VELOCITY_SPECS[1])
    v_offset: Float[Array, ""] = _field(VELOCITY_SPECS[2])

    def __call__(self, t: TimeGrid) -> Float[Array, " t"]:
        return self.v0 * power_of_time(t, self.beta) + self.v_offset


# exp(±100) keeps f0·exp(...) and its derivatives finite in float64 for f0 ≥ e^−99; below e^−100
# the term is negligible beside f3 ∈ [0, 1]. Smaller amplitudes need a higher cap (see __call__),
# computed as if f0 were at least e^−300 so that derivatives stay below e^301 (their squares in
# JᵀJ stay finite); f_s is exact for f0 = 0 and every f0 ≥ e^−300 ≈ 5e−131.
_MAX_EXPONENT = 100.0
_MIN_LOG_AMPLITUDE = -300.0


class ExponentialFraction(AbstractFraction):
    """Exponential sample fraction.

    f_s(t) = f0 · exp(f1 · (t − f2)) + f3,  clipped into [0, 1] by the model.
    """

    parameter_specs: ClassVar[tuple[ParameterSpec, ...]] = FRACTION_SPECS
    f0: Float[Array, ""] = _field(FRACTION_SPECS[0])
    f1: Float[Array, ""] = _field(FRACTION_SPECS[1])
    f2: Float[Array, ""] = _field(FRACTION_SPECS[2])
    f3: Float[Array, ""] = _field(FRACTION_SPECS[3])

    def __call__(self, t: TimeGrid) -> Float[Array, " t"]:
        # Above the cap f0·exp(...) ≥ e ≥ 1, so the model's clip saturates f_s at exactly 1. A fixed
        # cap of 100 would be wrong for small f0 (1e-50·e^200 saturates, 1e-50·e^100 does not).
        # The cap is a numerical guard, hence stop_gradient: where it binds f_s is saturated.
        log_amplitude = jnp.log(jnp.clip(self.f0, jnp.exp(_MIN_LOG_AMPLITUDE), 1.0))
        cap = jax.lax.stop_gradient(jnp.maximum(_MAX_EXPONENT, 1.0 - log_amplitude))
        exponent = jnp.clip(self.f1 * (t - self.f2), -_MAX_EXPONENT, cap)
        return self.f0 * jnp.exp(exponent) + self.f3
