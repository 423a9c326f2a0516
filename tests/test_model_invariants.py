"""Property tests for the invariants of SPEC §2–§3, over the whole parameter box.

Every test runs both evaluation methods. Tolerances are absolute on c2 (whose scale is
offset + contrast ≤ 2.5):

- identities that hold operation by operation (diagonal, range, linearity, v → −v) get a few
  ulps;
- identities that change how an angle or an integral is rounded (φ → φ + 360°, φ → −φ − 2φ0, …)
  also get `rounding_allowance`: 64 ulps of the largest integral propagated through
  q²·max C_J + q·max|C_v|, the resolution of float64 for that map (see `_numpy_reference`).
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from _model_strategies import EPS, c2, cases, g2 as jitted_g2, one_time, rounding_allowance
from _numpy_reference import (
    cumulative_trapezoid as reference_trapezoid,
    g2_stationary,
    integral_scales,
    rates as reference_rates,
)
from hypothesis import given, strategies as st

import heterojax as hj


METHODS = ["direct", "structured"]
PHYSICS = {name: k for k, name in enumerate(hj.PARAMETER_NAMES)}


def _evaluate(case, method, *, vector=None, phi=None, contrast=None, offset=None):
    vector = case["vector"] if vector is None else vector
    return c2(
        hj.HeterodyneModel.from_vector(vector),
        case["t"],
        q=case["q"],
        phi=case["phi"] if phi is None else phi,
        contrast=case["contrast"] if contrast is None else contrast,
        offset=case["offset"] if offset is None else offset,
        method=method,
    )


def _with(vector, **values):
    vector = np.array(vector, dtype=np.float64)
    for name, value in values.items():
        vector[PHYSICS[name]] = value
    return vector


@pytest.mark.parametrize("method", METHODS)
@given(case=cases())
def test_diagonal_is_offset_plus_contrast(case, method):
    maps = _evaluate(case, method)
    diagonal = np.diagonal(maps, axis1=-2, axis2=-1)
    expected = (case["offset"] + case["contrast"])[:, None]
    # On the diagonal h = 1 and cos Φ = 1, so num/f² = (f_r² + f_s²)²/(f_r² + f_s²)²: 8 ulps.
    np.testing.assert_allclose(diagonal, np.broadcast_to(expected, diagonal.shape), rtol=8 * EPS)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases())
def test_symmetric_in_t1_t2(case, method):
    maps = _evaluate(case, method)
    # The direct formula is symmetric operation by operation (|ΔC|, cos of ±Φ); the structured
    # one multiplies the same factors in transposed order: 16 ulps of the map's scale.
    np.testing.assert_allclose(maps, np.swapaxes(maps, -1, -2), rtol=0, atol=16 * EPS * 2.5)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases())
def test_between_offset_and_offset_plus_contrast(case, method):
    """0 ≤ num/f² ≤ 1: num ≥ (f_r f_r' h_r − f_s f_s' h_s)² and Cauchy–Schwarz bounds it by f²."""
    maps = _evaluate(case, method)
    lower = case["offset"][:, None, None]
    upper = lower + case["contrast"][:, None, None]
    slack = 8 * EPS * 2.5
    assert np.all(np.isfinite(maps))
    assert np.all(maps >= lower - slack)
    assert np.all(maps <= upper + slack)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases(), shift=st.integers(-2, 2))
def test_periodic_in_phi(case, method, shift):
    """φ → φ + 360°·k and φ → φ + 180° (cos → −cos, and cos Φ is even) leave c2 unchanged."""
    maps = _evaluate(case, method)
    tolerance = 1e-13 + rounding_allowance(case["vector"], case["t"], case["q"], case["contrast"])
    for turned in (case["phi"] + 360.0 * shift, case["phi"] + 180.0):
        np.testing.assert_allclose(
            _evaluate(case, method, phi=turned), maps, rtol=0, atol=tolerance
        )


@pytest.mark.parametrize("method", METHODS)
@given(case=cases())
def test_even_in_phi_plus_phi0(case, method):
    """c2(φ) = c2(−φ − 2φ0): cos(φ + φ0) is even about φ = −φ0."""
    maps = _evaluate(case, method)
    phi0 = case["vector"][PHYSICS["phi0"]]
    mirrored = _evaluate(case, method, phi=-case["phi"] - 2 * phi0)
    tolerance = 1e-13 + rounding_allowance(case["vector"], case["t"], case["q"], case["contrast"])
    np.testing.assert_allclose(mirrored, maps, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases(), delta=st.floats(-90.0, 90.0))
def test_depends_on_phi_and_phi0_only_through_their_sum(case, method, delta):
    maps = _evaluate(case, method)
    phi0 = case["vector"][PHYSICS["phi0"]]
    moved = _evaluate(
        case, method, vector=_with(case["vector"], phi0=phi0 + delta), phi=case["phi"] - delta
    )
    tolerance = 1e-13 + rounding_allowance(case["vector"], case["t"], case["q"], case["contrast"])
    np.testing.assert_allclose(moved, maps, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases())
def test_unchanged_by_velocity_reversal(case, method):
    """v → −v negates Φ exactly; cos Φ is even (SPEC §3: only |v| is observable)."""
    maps = _evaluate(case, method)
    x = case["vector"]
    reversed_flow = _with(x, v0=-x[PHYSICS["v0"]], v_offset=-x[PHYSICS["v_offset"]])
    # Outside the box (v0 < 0), but the model is defined there; every integral flips sign exactly.
    np.testing.assert_allclose(
        _evaluate(case, method, vector=reversed_flow), maps, rtol=0, atol=16 * EPS * 2.5
    )


@pytest.mark.parametrize("method", METHODS)
@given(case=cases())
def test_linear_in_contrast_and_offset(case, method):
    normalised = _evaluate(case, method, contrast=np.ones(3), offset=np.zeros(3))
    maps = _evaluate(case, method)
    contrast, offset = case["contrast"][:, None, None], case["offset"][:, None, None]
    np.testing.assert_allclose(maps, offset + contrast * normalised, rtol=0, atol=8 * EPS * 2.5)
    # contrast 0 gives exactly the offset.
    flat = _evaluate(case, method, contrast=np.zeros(3))
    np.testing.assert_array_equal(flat, np.broadcast_to(offset, flat.shape))


@pytest.mark.parametrize("method", METHODS)
def test_scalar_contrast_and_offset_broadcast_over_angles(method):
    model = hj.HeterodyneModel().replace(v0=300.0, alpha_sample=0.5)
    t, phi = np.linspace(0.0, 1.0, 16), np.array([0.0, 40.0, 80.0])
    evaluate = eqx.filter_jit(model.c2)  # not the shared helper: it broadcasts by itself
    scalar = evaluate(t, q=0.02, phi=phi, contrast=0.25, offset=1.25, method=method)
    per_angle = evaluate(
        t,
        q=np.full(3, 0.02),
        phi=phi,
        contrast=np.full(3, 0.25),
        offset=np.full(3, 1.25),
        method=method,
    )
    np.testing.assert_allclose(scalar, per_angle, rtol=0, atol=4 * EPS * 2.5)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases(), side=st.sampled_from([90.0, -90.0]))
def test_phase_vanishes_perpendicular_to_flow(case, method, side):
    """At φ + φ0 = ±90° the cross term carries no phase: c2 equals the model without flow."""
    x = case["vector"]
    phi = np.full(3, side - x[PHYSICS["phi0"]])
    with_flow = _evaluate(case, method, phi=phi)
    without_flow = _evaluate(case, method, vector=_with(x, v0=0.0, v_offset=0.0), phi=phi)
    # cos(deg2rad(90°)) is 6e-17, not 0, and φ + φ0 rounds to within 2 ulps of 90: the residual
    # phase is below 1e-15·q·max|C_v| and changes c2 by at most contrast·Φ²/2.
    _, displacement = integral_scales(x, case["t"])
    residual_phase = 1e-15 * case["q"] * displacement
    tolerance = 1e-13 + np.max(case["contrast"]) * min(residual_phase**2, 4.0)
    np.testing.assert_allclose(with_flow, without_flow, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases(), pinned=st.sampled_from(["reference only", "sample only"]))
def test_pinned_fractions_reduce_to_one_component(case, method, pinned):
    """f_s ≡ 0: c2 = offset + contrast·exp(−q²|ΔC_ref|); f_s ≡ 1: the same with C_sample."""
    x = case["vector"]
    if pinned == "reference only":
        x = _with(x, f0=0.0, f3=0.0)
        rate = reference_rates(x, case["t"])["J_ref"]
    else:
        x = _with(x, f3=1.0)  # f_s = f0·exp(·) + 1 ≥ 1, clipped to 1
        rate = reference_rates(x, case["t"])["J_sample"]
    maps = _evaluate(case, method, vector=x)
    integral = reference_trapezoid(rate, case["t"])
    decay = np.exp(-(case["q"] ** 2) * np.abs(integral[None, :] - integral[:, None]))
    expected = case["offset"][:, None, None] + case["contrast"][:, None, None] * decay
    tolerance = 1e-13 + rounding_allowance(x, case["t"], case["q"], case["contrast"])
    np.testing.assert_allclose(maps, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases(f1=0.0, f3=0.0))
def test_exchanging_reference_and_sample_with_fractions(case, method):
    """SPEC §3: swapping the two transport laws and f_s ↔ f_r leaves c2 unchanged.

    Exact for a constant fraction (f1 = 0, f3 = 0, so f_s = min(f0, 1) and f_r = 1 − f0).
    """
    x = case["vector"]
    swapped = _with(
        x,
        D0_ref=x[PHYSICS["D0_sample"]],
        alpha_ref=x[PHYSICS["alpha_sample"]],
        D_offset_ref=x[PHYSICS["D_offset_sample"]],
        D0_sample=x[PHYSICS["D0_ref"]],
        alpha_sample=x[PHYSICS["alpha_ref"]],
        D_offset_sample=x[PHYSICS["D_offset_ref"]],
        f0=1.0 - x[PHYSICS["f0"]],
    )
    # f_r = 1 − (1 − f0) differs from f0 by an ulp of 1, which moves c2 by a few ulps.
    np.testing.assert_allclose(
        _evaluate(case, method, vector=swapped), _evaluate(case, method), rtol=0, atol=64 * EPS
    )


# ------------------------------------------------------------------ stationary case (S-98)


@st.composite
def stationary_cases(draw):
    """Constant rates: SPEC's case (α = β = f1 = f3 = 0, D_offset = v_offset = 0, t > 0), or
    rates that are constant from t = 0 (D0 = 0 with D_offset ≥ 0, v0 = 0, f0 = 0)."""
    if draw(st.booleans()):
        fixed = dict(alpha_ref=0.0, alpha_sample=0.0, beta=0.0, f1=0.0, f3=0.0)
        fixed |= dict(D_offset_ref=0.0, D_offset_sample=0.0, v_offset=0.0)
        case = draw(cases(positive=True, **fixed))
    else:
        case = draw(cases(D0_ref=0.0, D0_sample=0.0, v0=0.0, f0=0.0))
        x = case["vector"]
        x[PHYSICS["D_offset_ref"]] = abs(x[PHYSICS["D_offset_ref"]])
        x[PHYSICS["D_offset_sample"]] = abs(x[PHYSICS["D_offset_sample"]])
    return case


def _stationary_form(case):
    """S-98 in NumPy for the case's constant rates, as a function of τ."""
    rates = reference_rates(case["vector"], case["t"])
    f_s = rates["sample_fraction"][-1]
    x = f_s**2 / (f_s**2 + (1 - f_s) ** 2)

    def g2(tau):
        return g2_stationary(
            tau,
            D_ref=rates["J_ref"][-1],
            D_sample=rates["J_sample"][-1],
            v=rates["velocity"][-1],
            x=x,
            q=case["q"],
            phi=case["phi"][:, None],
            phi0=case["vector"][PHYSICS["phi0"]],
            contrast=case["contrast"][:, None, None],
            offset=case["offset"][:, None, None],
        )

    return g2, rates


def _stationary_tolerance(case, rates):
    # S-98 uses τ = t2 − t1 while c2 differences cumulative sums that reach J·t_max: both are
    # exact to a few ulps of t_max, which the rates turn into q²·J·ulp and q·|v|·ulp.
    t_max = case["t"][-1]
    q = case["q"]
    rate_scale = q**2 * (rates["J_ref"][-1] + rates["J_sample"][-1]) + q * abs(
        rates["velocity"][-1]
    )
    return 1e-12 * 2.5 + np.max(case["contrast"]) * 64 * EPS * t_max * rate_scale


@pytest.mark.parametrize("method", METHODS)
@given(case=stationary_cases())
def test_stationary_c2_equals_one_time_form(case, method):
    g2, rates = _stationary_form(case)
    t = case["t"]
    tau = t[None, :] - t[:, None]
    expected = g2(tau.ravel()).reshape(3, *tau.shape)
    maps = _evaluate(case, method)
    np.testing.assert_allclose(maps, expected, rtol=0, atol=_stationary_tolerance(case, rates))


@given(case=stationary_cases())
def test_model_g2_is_the_one_time_form(case):
    g2, rates = _stationary_form(case)
    t = case["t"]
    tau = t - t[0]
    model = hj.HeterodyneModel.from_vector(case["vector"])
    got = jitted_g2(
        model,
        tau,
        q=case["q"],
        phi=case["phi"],
        contrast=case["contrast"],
        offset=case["offset"],
    )
    expected = g2(tau)[:, 0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=_stationary_tolerance(case, rates))


@given(case=stationary_cases(), step=st.floats(1e-3, 1.0))
def test_one_time_of_stationary_map_is_g2(case, step):
    """heterojax.one_time averages the diagonals of c2: on a uniform grid, g2(k·dt)."""
    t = case["t"][0] + step * np.arange(case["t"].shape[0])
    case = case | {"t": t}
    maps = _evaluate(case, "direct")
    got = np.asarray(one_time(maps))
    model = hj.HeterodyneModel.from_vector(case["vector"])
    expected = jitted_g2(
        model,
        t - t[0],
        q=case["q"],
        phi=case["phi"],
        contrast=case["contrast"],
        offset=case["offset"],
    )
    _, rates = _stationary_form(case)
    np.testing.assert_allclose(got, expected, rtol=0, atol=_stationary_tolerance(case, rates))


def test_one_time_averages_diagonals():
    """On a non-stationary map, g2[k] is the plain mean of the k-th upper diagonal."""
    model = hj.HeterodyneModel().replace(alpha_sample=0.5, v0=50.0, beta=0.5, f1=0.3)
    t = np.linspace(0.1, 3.0, 12)
    maps = c2(model, t, q=0.01, phi=np.array([0.0, 60.0, 120.0]))
    got = np.asarray(hj.one_time(maps))
    for k in range(t.shape[0]):
        expected = np.mean(np.diagonal(maps, offset=k, axis1=-2, axis2=-1), axis=-1)
        np.testing.assert_allclose(got[:, k], expected, rtol=1e-14)
    # A NaN (e.g. a masked diagonal) is left out of the mean.
    masked = maps.copy()
    masked[:, 3, 3] = np.nan
    expected = np.mean(np.delete(np.diagonal(maps, axis1=-2, axis2=-1), 3, axis=-1), axis=-1)
    np.testing.assert_allclose(np.asarray(hj.one_time(masked))[:, 0], expected, rtol=1e-14)


def test_g2_refuses_time_dependent_models():
    model = hj.HeterodyneModel().replace(alpha_sample=0.5)
    with pytest.raises(Exception, match="time-independent"):
        jnp.asarray(model.g2(jnp.linspace(0.0, 1.0, 5), q=0.01, phi=0.0)).block_until_ready()
