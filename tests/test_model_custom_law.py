"""User-written laws plug into HeterodyneModel without touching heterojax (issue #2, point 2).

The laws below are written as a user would: subclass an abstract base, declare the parameters
as float fields plus `parameter_specs`, implement `__call__`. The model must name, vectorise,
evaluate (to the NumPy reference), differentiate, vmap and jit them like the built-in laws.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_strategies import EPS, c2
from _numpy_reference import (
    c2_from_rates,
    cumulative_trapezoid as reference_trapezoid,
    power_of_time,
)
from hypothesis import given, strategies as st
from jaxtyping import Array, Float

import heterojax as hj


def _as_float(value) -> Float[Array, ""]:
    return jnp.asarray(value, dtype=float)


def _field(default: float):
    return eqx.field(default=default, converter=_as_float)


class StretchedTransport(hj.AbstractTransport):
    """J(t) = D_inf · (1 − exp(−(t/tau)^stretch)): a stretched saturation."""

    parameter_specs: ClassVar[tuple[hj.ParameterSpec, ...]] = (
        hj.ParameterSpec("D_inf", 1e3, 0.0, 1e6, "Å²/s"),
        hj.ParameterSpec("tau", 1.0, 1e-3, 1e4, "s"),
        hj.ParameterSpec("stretch", 0.7, 0.1, 3.0, "-"),
    )
    D_inf: Float[Array, ""] = _field(1e3)
    tau: Float[Array, ""] = _field(1.0)
    stretch: Float[Array, ""] = _field(0.7)

    def __call__(self, t):
        # (t/tau)^stretch with the t = 0 guard users need for fractional powers.
        positive = t > 0
        ratio = jnp.where(positive, t / self.tau, 1.0)
        return self.D_inf * -jnp.expm1(-jnp.where(positive, ratio**self.stretch, 0.0))


class OscillatingVelocity(hj.AbstractVelocity):
    """v(t) = v_amp · cos(2π t / period): the flow reverses every half period."""

    parameter_specs: ClassVar[tuple[hj.ParameterSpec, ...]] = (
        hj.ParameterSpec("v_amp", 300.0, 0.0, 1e5, "Å/s"),
        hj.ParameterSpec("period", 2.0, 1e-2, 1e4, "s"),
    )
    v_amp: Float[Array, ""] = _field(300.0)
    period: Float[Array, ""] = _field(2.0)

    def __call__(self, t):
        return self.v_amp * jnp.cos(2 * jnp.pi * t / self.period)


class LogisticFraction(hj.AbstractFraction):
    """f_s(t) = height / (1 + exp(−(t − t_half)/width)); height > 1 overshoots (clipped)."""

    parameter_specs: ClassVar[tuple[hj.ParameterSpec, ...]] = (
        hj.ParameterSpec("height", 0.8, 0.0, 2.0, "-"),
        hj.ParameterSpec("t_half", 0.5, -1e3, 1e3, "s"),
        hj.ParameterSpec("width", 0.3, 1e-3, 1e3, "s"),
    )
    height: Float[Array, ""] = _field(0.8)
    t_half: Float[Array, ""] = _field(0.5)
    width: Float[Array, ""] = _field(0.3)

    def __call__(self, t):
        return self.height * jax.nn.sigmoid((t - self.t_half) / self.width)


class LinearTransport(hj.AbstractTransport):
    """J(t) = slope · (t − t_zero): negative before t_zero, where the model must floor it."""

    parameter_specs: ClassVar[tuple[hj.ParameterSpec, ...]] = (
        hj.ParameterSpec("slope", 1e3, -1e6, 1e6, "Å²/s²"),
        hj.ParameterSpec("t_zero", 0.5, -1e4, 1e4, "s"),
    )
    slope: Float[Array, ""] = _field(1e3)
    t_zero: Float[Array, ""] = _field(0.5)

    def __call__(self, t):
        return self.slope * (t - self.t_zero)


# The same laws in NumPy, for the reference c2.
def _stretched(t, D_inf, tau, stretch):
    return D_inf * -np.expm1(-power_of_time(t / tau, stretch))


def _oscillating(t, v_amp, period):
    return v_amp * np.cos(2 * np.pi * t / period)


def _logistic(t, height, t_half, width):
    return height * 0.5 * (1 + np.tanh((t - t_half) / (2 * width)))  # 1/(1 + e^−x), no overflow


def _linear(t, slope, t_zero):
    return slope * (t - t_zero)


NAMES = (
    "D_inf_ref",
    "tau_ref",
    "stretch_ref",
    "slope_sample",
    "t_zero_sample",
    "v_amp",
    "period",
    "height",
    "t_half",
    "width",
    "phi0",
)


def _custom_model(vector=None):
    model = hj.HeterodyneModel(
        reference=StretchedTransport(),
        sample=LinearTransport(),
        velocity=OscillatingVelocity(),
        fraction=LogisticFraction(),
        phi0=5.0,
    )
    return model if vector is None else model.with_vector(vector)


def _reference_rates(vector, t):
    v = dict(zip(NAMES, np.asarray(vector, dtype=float)))
    return (
        _stretched(t, v["D_inf_ref"], v["tau_ref"], v["stretch_ref"]),
        _linear(t, v["slope_sample"], v["t_zero_sample"]),
        _oscillating(t, v["v_amp"], v["period"]),
        _logistic(t, v["height"], v["t_half"], v["width"]),
    )


def _rounding_allowance(vector, t, q):
    """64 ulps of the largest integrals propagated to c2 (see _numpy_reference.roundoff_scale)."""
    J_ref, J_sample, v, _ = _reference_rates(vector, t)
    C_ref = reference_trapezoid(np.maximum(J_ref, 0.0), t)
    C_sample = reference_trapezoid(np.maximum(J_sample, 0.0), t)
    C_v = reference_trapezoid(v, t)
    return 64 * EPS * (q**2 * (C_ref[-1] + C_sample[-1]) + q * np.max(np.abs(C_v)))


def _reference_c2(vector, t, *, q, phi, contrast=0.5, offset=1.0):
    return c2_from_rates(
        t,
        *_reference_rates(vector, t),
        q=q,
        phi=phi,
        phi0=vector[NAMES.index("phi0")],
        contrast=contrast,
        offset=offset,
    )


CUSTOM_SPECS = _custom_model().parameter_specs


def custom_vectors():
    """Values inside the custom laws' own bounds (bounds themselves included)."""
    return st.tuples(
        *(
            st.sampled_from([spec.lower, spec.upper, spec.default])
            | st.floats(spec.lower, spec.upper, allow_subnormal=False)
            for spec in CUSTOM_SPECS
        )
    ).map(np.asarray)


def test_names_and_specs_come_from_the_laws():
    model = _custom_model()
    assert model.parameter_names == NAMES
    specs = {spec.name: spec for spec in model.parameter_specs}
    assert (specs["tau_ref"].lower, specs["tau_ref"].upper, specs["tau_ref"].unit) == (
        1e-3,
        1e4,
        "s",
    )
    assert specs["slope_sample"].unit == "Å²/s²"
    assert specs["phi0"] == hj.PARAMETERS["phi0"]
    np.testing.assert_array_equal(
        model.to_vector(), [s.default for s in model.parameter_specs[:-1]] + [5.0]
    )


@given(vector=custom_vectors())
def test_vector_round_trip_and_replace(vector):
    model = _custom_model(vector)
    np.testing.assert_array_equal(model.to_vector(), vector)
    assert isinstance(model.reference, StretchedTransport)
    assert isinstance(model.fraction, LogisticFraction)
    assert float(model.velocity.period) == vector[NAMES.index("period")]
    assert tuple(model.to_dict()) == NAMES
    changed = model.replace(tau_ref=vector[1] + 1.0, width=vector[9] * 2)
    expected = vector.copy()
    expected[1] += 1.0
    expected[9] *= 2
    np.testing.assert_array_equal(changed.to_vector(), expected)
    with pytest.raises(ValueError):
        model.replace(D0_ref=1.0)  # not a parameter of this model


GRID = np.linspace(0.0, 3.0, 33)
PHI = np.array([0.0, 85.0, 130.0])


@pytest.mark.parametrize("method", ["direct", "structured"])
@given(vector=custom_vectors(), q=st.floats(1e-4, 0.1))
def test_c2_matches_numpy_reference_and_invariants(vector, q, method):
    model = _custom_model(vector)
    contrast, offset = np.array([0.2, 0.5, 1.0]), np.array([1.0, 0.5, 1.5])
    maps = c2(model, GRID, q=q, phi=PHI, contrast=contrast, offset=offset, method=method)
    expected = _reference_c2(vector, GRID, q=q, phi=PHI, contrast=contrast, offset=offset)
    # 1e-12·max|c2| plus rounding of the integrals (large at the bounds: slope 1e6, t_zero −1e4).
    tolerance = 1e-12 * 2.5 + _rounding_allowance(vector, GRID, q)
    np.testing.assert_allclose(maps, expected, rtol=0, atol=tolerance)
    diagonal = np.diagonal(maps, axis1=-2, axis2=-1)
    np.testing.assert_allclose(
        diagonal, np.broadcast_to((offset + contrast)[:, None], diagonal.shape), rtol=8 * EPS
    )
    np.testing.assert_allclose(maps, np.swapaxes(maps, -1, -2), rtol=0, atol=16 * EPS * 2.5)
    assert np.all(maps >= offset[:, None, None] - 1e-14)
    assert np.all(maps <= (offset + contrast)[:, None, None] + 1e-14)


def test_floor_and_clip_apply_to_user_laws():
    model = _custom_model().replace(slope_sample=-2e3, t_zero_sample=1.0, height=1.6)
    t = jnp.asarray(GRID)
    rates = model.rates(t)
    raw_transport = _linear(GRID, -2e3, 1.0)
    assert np.any(raw_transport < 0)
    np.testing.assert_allclose(rates["J_sample"], np.maximum(raw_transport, 0.0), rtol=1e-15)
    raw_fraction = _logistic(GRID, 1.6, 0.5, 0.3)
    assert np.any(raw_fraction > 1)
    np.testing.assert_allclose(rates["sample_fraction"], np.minimum(raw_fraction, 1.0), rtol=1e-14)
    # Flow reversal is kept: v is signed.
    assert np.any(np.asarray(rates["velocity"]) < 0) and np.any(np.asarray(rates["velocity"]) > 0)


def _loss(vector, weights):
    maps = _custom_model(vector).c2(jnp.asarray(GRID), q=0.02, phi=jnp.asarray(PHI))
    return jnp.sum(weights * maps)


def test_gradient_of_user_parameters_matches_finite_differences(key):
    weights = jax.random.normal(key, (3, GRID.shape[0], GRID.shape[0]))
    vector = np.asarray(_custom_model().replace(t_zero_sample=-0.5).to_vector())
    loss = jax.jit(_loss)
    gradient = np.asarray(jax.jit(jax.grad(_loss))(jnp.asarray(vector), weights))
    assert np.all(np.isfinite(gradient))
    # Central differences, relative step 1e-6: truncation ~1e-12, rounding ~1e3·eps·Σ|w·c2|/h.
    steps = 1e-6 * np.maximum(np.abs(vector), 1e-3)
    magnitude = float(jnp.sum(jnp.abs(weights))) * 2.5
    for k, name in enumerate(NAMES):
        up, down = vector.copy(), vector.copy()
        up[k] += steps[k]
        down[k] -= steps[k]
        finite = (float(loss(up, weights)) - float(loss(down, weights))) / (2 * steps[k])
        tolerance = 1e-6 * abs(finite) + 1e3 * EPS * magnitude / (2 * steps[k])
        assert abs(gradient[k] - finite) <= tolerance, (name, gradient[k], finite)
        assert gradient[k] != 0.0, name


def test_jit_vmap_and_no_retrace_with_user_laws():
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def evaluate(vector):
        return _custom_model(vector).c2(jnp.asarray(GRID), q=0.02, phi=jnp.asarray(PHI))

    vectors = np.stack(
        [
            np.asarray(_custom_model().replace(tau_ref=tau, v_amp=50.0 * tau).to_vector())
            for tau in (0.5, 1.0, 2.0)
        ]
    )
    looped = np.stack([np.asarray(evaluate(jnp.asarray(v))) for v in vectors])
    assert eqx.debug.get_num_traces(evaluate) == 1
    batched = np.asarray(
        jax.jit(
            jax.vmap(lambda v: _custom_model(v).c2(jnp.asarray(GRID), q=0.02, phi=jnp.asarray(PHI)))
        )(jnp.asarray(vectors))
    )
    np.testing.assert_allclose(batched, looped, rtol=0, atol=16 * EPS * 2.5)
    # Different parameter values really give different maps (the vmap is not trivially equal).
    assert np.max(np.abs(looped[0] - looped[2])) > 1e-3


def test_laws_must_go_in_matching_slots():
    with pytest.raises(TypeError, match="fraction"):
        hj.HeterodyneModel(fraction=StretchedTransport())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="reference"):
        hj.HeterodyneModel(reference=OscillatingVelocity())  # type: ignore[arg-type]
