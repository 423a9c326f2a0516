"""The time laws and the integrals of SPEC §2: t^a at t = 0, the floor on J, the clip on f_s,
and the cumulative trapezoid (exact for constant and linear rates, never an antiderivative)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_strategies import EPS, c2, log_uniform, parameter_vectors, time_grids
from _numpy_reference import c2_from_rates, cumulative_trapezoid as reference_trapezoid
from hypothesis import given, strategies as st

import heterojax as hj


EXPONENTS = [-2.0, -0.5, 0.0, 0.5, 2.0]


@pytest.mark.parametrize("exponent", EXPONENTS)
def test_power_of_time_is_zero_at_t0_for_every_exponent(exponent):
    """J(0) = D_offset and v(0) = v_offset, even for α = 0 (where 0^0 would be 1)."""
    t = jnp.array([0.0, 0.5, 2.0])
    transport = hj.PowerLawTransport(D0=3.0, alpha=exponent, D_offset=0.25)
    velocity = hj.PowerLawVelocity(v0=3.0, beta=exponent, v_offset=-0.25)
    np.testing.assert_allclose(
        transport(t), [0.25, 3.0 * 0.5**exponent + 0.25, 3.0 * 2.0**exponent + 0.25], rtol=1e-15
    )
    np.testing.assert_allclose(
        velocity(t), [-0.25, 3.0 * 0.5**exponent - 0.25, 3.0 * 2.0**exponent - 0.25], rtol=1e-15
    )

    # d/dα of D0·t^α is D0·t^α·log t: 0 at t = 0 (not nan), and exact elsewhere.
    def law(alpha):
        return hj.PowerLawTransport(D0=3.0, alpha=alpha, D_offset=0.25)(t)

    derivative = jax.jacfwd(law)(jnp.asarray(exponent))
    np.testing.assert_allclose(
        derivative,
        3.0 * np.array([0.0, *(np.r_[0.5, 2.0] ** exponent * np.log([0.5, 2.0]))]),
        rtol=1e-14,
    )


@given(x=parameter_vectors(), t=time_grids(sizes=(33,)))
def test_transport_nonnegative_and_fraction_in_unit_interval(x, t):
    rates = hj.HeterodyneModel.from_vector(x).rates(jnp.asarray(t))
    for name in ("J_ref", "J_sample"):
        assert np.all(np.asarray(rates[name]) >= 0.0), name
    f_s = np.asarray(rates["sample_fraction"])
    assert np.all((f_s >= 0.0) & (f_s <= 1.0))
    assert all(np.all(np.isfinite(np.asarray(value))) for value in rates.values())


def test_floor_and_clip_are_applied_where_the_laws_leave_the_range():
    t = jnp.linspace(0.0, 2.0, 9)
    model = hj.HeterodyneModel().replace(
        D0_ref=1e3, alpha_ref=1.0, D_offset_ref=-1e3, f0=0.4, f1=1.0, f2=0.0, f3=0.1
    )
    rates = model.rates(t)
    raw_transport = 1e3 * np.asarray(t) - 1e3
    np.testing.assert_allclose(rates["J_ref"], np.maximum(raw_transport, 0.0), rtol=1e-15)
    assert np.any(raw_transport < 0) and np.any(raw_transport > 0)
    raw_fraction = 0.4 * np.exp(np.asarray(t)) + 0.1
    np.testing.assert_allclose(rates["sample_fraction"], np.minimum(raw_fraction, 1.0), rtol=1e-15)
    assert np.any(raw_fraction > 1) and np.any(raw_fraction < 1)
    # Below 0 only outside the box (f0 < 0), but the model must clip whatever a law returns.
    falling = model.replace(f0=-0.1, f3=0.3).rates(t)["sample_fraction"]
    raw_fraction = -0.1 * np.exp(np.asarray(t)) + 0.3
    np.testing.assert_allclose(falling, np.maximum(raw_fraction, 0.0), rtol=1e-15, atol=1e-16)
    assert np.any(raw_fraction < 0) and np.any(raw_fraction > 0)


SATURATION_CASES = [
    # f0, f1, f2, t, expected f_s (f3 = 0): f0·exp(f1(t − f2)) clipped to 1.
    (1e-50, 1.0, 0.0, 100.0, 1e-50 * np.exp(100.0)),
    (1e-50, 1.0, 0.0, 200.0, 1.0),  # 1e-50·e^200 ≈ 7e36: saturated
    (1e-120, 10.0, 0.0, 27.0, 1e-120 * np.exp(270.0)),  # exponent 270, not saturated
    (1e-120, 10.0, 0.0, 28.0, 1.0),  # exponent 280 ≥ 276: saturated
    (0.5, 10.0, -1e4, 0.0, 1.0),  # exponent 1e5: saturated without overflow
    (0.5, -10.0, -1e4, 0.0, 0.5 * np.exp(-100.0)),  # far below: e^−100 floor, negligible
    (0.0, 10.0, -1e4, 0.0, 0.0),  # f0 = 0 stays 0 even where exp would overflow
]


@pytest.mark.parametrize("f0, f1, f2, t, expected", SATURATION_CASES)
def test_exponential_fraction_saturates_exactly(f0, f1, f2, t, expected):
    model = hj.HeterodyneModel().replace(f0=f0, f1=f1, f2=f2, f3=0.0)
    f_s = float(model.rates(jnp.array([t]))["sample_fraction"][0])
    if expected < 1e-40:
        assert f_s <= 1e-40
    else:
        np.testing.assert_allclose(f_s, expected, rtol=1e-12)


def _total_c2(x, t):
    return jnp.sum(hj.HeterodyneModel.from_vector(x).c2(t, q=0.01, phi=jnp.array([0.0])))


_reverse = jax.jit(jax.grad(_total_c2))
_forward = jax.jit(jax.jacfwd(_total_c2))


@pytest.mark.parametrize("f0", [0.0, 1e-200, 1e-50, 0.3])
def test_fraction_derivatives_finite_where_exp_would_overflow(f0):
    """f1·(t − f2) up to 2e5 inside the box: the derivatives of c2 stay finite."""
    t = jnp.linspace(0.0, 1e4, 6)
    x = hj.HeterodyneModel().replace(f0=f0, f1=10.0, f2=-1e4, f3=0.2).to_vector()
    assert np.all(np.isfinite(_reverse(x, t)))
    assert np.all(np.isfinite(_forward(x, t)))


# ------------------------------------------------------------------ cumulative trapezoid

_cumulative_trapezoid = eqx.filter_jit(hj.cumulative_trapezoid)


@given(
    t=time_grids(sizes=(2, 5, 33)),
    constant=st.floats(-1e5, 1e5, allow_subnormal=False),
    slope=st.floats(-1e3, 1e3, allow_subnormal=False),
)
def test_trapezoid_exact_for_linear_rates(t, constant, slope):
    got = np.asarray(_cumulative_trapezoid(jnp.asarray(constant + slope * t), jnp.asarray(t)))
    start = t[0]
    exact = constant * (t - start) + slope * (t - start) * (t + start) / 2
    assert got[0] == 0.0
    # Exact in exact arithmetic; a cumulative sum of N terms is exact to ~N ulps of its scale.
    scale = abs(constant) * t[-1] + abs(slope) * t[-1] ** 2
    np.testing.assert_allclose(got, exact, rtol=0, atol=4 * t.shape[0] * EPS * scale)


@given(t=time_grids(sizes=(5, 33)), data=st.data())
def test_trapezoid_matches_definition(t, data):
    values = np.asarray(
        data.draw(
            st.lists(
                st.floats(-1e6, 1e6, allow_subnormal=False),
                min_size=t.shape[0],
                max_size=t.shape[0],
            )
        )
    )
    got = np.asarray(_cumulative_trapezoid(jnp.asarray(values), jnp.asarray(t)))
    expected = reference_trapezoid(values, t)
    scale = np.sum(np.abs(np.diff(t)) * (np.abs(values[1:]) + np.abs(values[:-1])) / 2)
    np.testing.assert_allclose(got, expected, rtol=0, atol=4 * t.shape[0] * EPS * scale)


@given(
    t=time_grids(sizes=(16,), positive=True, max_start=10.0),
    rates=st.tuples(log_uniform(1.0, 1e4), log_uniform(1.0, 1e4), st.floats(-1e3, 1e3)),
    fraction=st.floats(0.0, 1.0),
)
def test_model_integrals_exact_for_linear_laws(t, rates, fraction):
    """α = β = 1: c2 equals the formula evaluated with the exact integrals D0(t2² − t1²)/2 + …"""
    D_ref, D_sample, v = rates
    model = hj.HeterodyneModel().replace(
        D0_ref=D_ref,
        alpha_ref=1.0,
        D_offset_ref=5.0,
        D0_sample=D_sample,
        alpha_sample=1.0,
        v0=v,
        beta=1.0,
        v_offset=-3.0,
        f0=fraction,
        f3=0.0,
    )
    q = 0.1 / max(1.0, np.sqrt(D_ref + D_sample) * t[-1], abs(v) * t[-1] ** 2)
    phi = np.array([0.0, 60.0, 100.0])
    maps = c2(model, t, q=q, phi=phi)

    # The closed-form integrals of the linear rates (the trapezoid rule must reproduce them).
    def closed(slope, constant):
        return slope * t**2 / 2 + constant * t

    C_ref, C_sample, C_v = closed(D_ref, 5.0), closed(D_sample, 0.0), closed(v, -3.0)
    expected = _formula_from_integrals(C_ref, C_sample, C_v, fraction, q, phi)
    scale = q**2 * (C_ref[-1] + C_sample[-1]) + q * np.max(np.abs(C_v))
    np.testing.assert_allclose(maps, expected, rtol=0, atol=1e-13 + 64 * EPS * scale)


def _formula_from_integrals(C_ref, C_sample, C_v, f_s, q, phi, contrast=0.5, offset=1.0):
    """SPEC §2 with given integrals and a constant f_s (the linear-law test's oracle)."""
    f_r = 1.0 - f_s
    x = f_s**2 / (f_s**2 + f_r**2)
    d_ref = np.abs(C_ref[None, :] - C_ref[:, None])
    d_sample = np.abs(C_sample[None, :] - C_sample[:, None])
    d_v = C_v[None, :] - C_v[:, None]
    maps = []
    for angle in phi:
        phase = q * np.cos(np.deg2rad(angle)) * d_v
        bracket = (
            (1 - x) ** 2 * np.exp(-(q**2) * d_ref)
            + x**2 * np.exp(-(q**2) * d_sample)
            + 2 * x * (1 - x) * np.exp(-0.5 * q**2 * (d_ref + d_sample)) * np.cos(phase)
        )
        maps.append(offset + contrast * bracket)
    return np.stack(maps)


def test_integrals_are_trapezoids_not_antiderivatives():
    """α = 2 on a coarse grid: c2 follows the trapezoid rule, which differs visibly from the
    analytic ∫ D0 t² dt = D0 t³/3 (SPEC §2: never substitute an antiderivative)."""
    t = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    model = hj.HeterodyneModel().replace(D0_ref=400.0, alpha_ref=2.0, f0=0.0)  # reference only
    maps = c2(model, t, q=0.05, phi=np.array([0.0]))
    J = 400.0 * t**2
    trapezoid = reference_trapezoid(J, t)
    analytic = 400.0 * t**3 / 3
    assert np.max(np.abs(trapezoid - analytic)) > 1.0
    f_s = np.zeros_like(t)
    expected = c2_from_rates(t, J, J * 0, J * 0, f_s, q=0.05, phi=[0.0], phi0=0.0)
    wrong = _formula_from_integrals(analytic, analytic * 0, analytic * 0, 0.0, 0.05, [0.0])
    np.testing.assert_allclose(maps, expected, rtol=1e-14)
    assert np.max(np.abs(maps - wrong)) > 1e-3
