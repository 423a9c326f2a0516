"""heterojax's c2 against the independent plain-NumPy implementation of SPEC §2.

Tolerances are absolute, relative to max|c2| (which is ≤ offset + contrast ≤ 2.5):

- well-conditioned cases (q²·max C_J + q·max|C_v| ≤ 10, i.e. a sensible experiment): 1e-12·max|c2|,
  flat. Rounding in the integrals can move c2 by at most ~64·eps·10 ≈ 1.4e-13 there.
- the whole parameter box: 1e-12·max|c2| plus `rounding_allowance` (64 ulps of max|C| propagated
  through q²·max C_J + q·max|C_v|). jnp.cumsum sums in another order than the sequential
  reference, so the integrals themselves differ by a few ulps of their largest value; at
  D0 = 1e6, q = 0.1 and t ~ 1e3 s a few ulps of C shift the exponents by ~1e-8, which no correct
  float64 code can avoid.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
from _model_strategies import EPS, c2, cases, rounding_allowance
from _numpy_reference import (
    c2 as reference_c2,
    power_of_time,
    rates as reference_rates,
    unpack,
)
from hypothesis import given, strategies as st

import heterojax as hj


def _check(case, method, *, well_conditioned):
    model = hj.HeterodyneModel.from_vector(case["vector"])
    got = c2(
        model,
        case["t"],
        q=case["q"],
        phi=case["phi"],
        contrast=case["contrast"],
        offset=case["offset"],
        method=method,
    )
    expected = reference_c2(
        case["vector"],
        case["t"],
        q=case["q"],
        phi=case["phi"],
        contrast=case["contrast"],
        offset=case["offset"],
    )
    tolerance = 1e-12 * np.max(np.abs(expected))
    if not well_conditioned:
        tolerance += rounding_allowance(case["vector"], case["t"], case["q"], case["contrast"])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("method", ["direct", "structured"])
@given(case=cases(kappa=10.0))
def test_agrees_with_numpy_reference_well_conditioned(case, method):
    _check(case, method, well_conditioned=True)


@pytest.mark.parametrize("method", ["direct", "structured"])
@given(case=cases())
def test_agrees_with_numpy_reference_whole_box(case, method):
    _check(case, method, well_conditioned=False)


def _vector(**values):
    return np.asarray(
        [values.get(name, hj.PARAMETERS[name].default) for name in hj.PARAMETER_NAMES]
    )


# Hand-picked cases: every law away from its default, the bounds, and the edges of SPEC §2.
REFERENCE_CASES = {
    "defaults": _vector(),
    "ageing everything": _vector(
        D0_ref=300.0,
        alpha_ref=0.7,
        D_offset_ref=20.0,
        D0_sample=2e3,
        alpha_sample=-0.4,
        D_offset_sample=-50.0,
        v0=40.0,
        beta=0.3,
        v_offset=-15.0,
        f0=0.2,
        f1=-0.3,
        f2=1.5,
        f3=0.1,
        phi0=17.0,
    ),
    "negative offsets floor J at 0": _vector(
        D0_ref=1e3, alpha_ref=1.0, D_offset_ref=-2e3, D_offset_sample=-1e5
    ),
    "alpha at -2 from t=0": _vector(alpha_ref=-2.0, alpha_sample=-2.0, beta=-2.0),
    "alpha at +2": _vector(alpha_ref=2.0, alpha_sample=2.0, beta=2.0, v0=1.0),
    "static reference": _vector(D0_ref=0.0, D0_sample=5e3, v0=2e3),
    "fraction pinned at 0": _vector(f0=0.0, f3=0.0),
    "fraction pinned at 1": _vector(f0=1.0, f3=1.0),
    "fraction crossing 1": _vector(f0=0.05, f1=2.0, f2=0.0, f3=0.2),
    # f0·exp(f1(t − f2)) saturates only at exponents far above 100 (regression: the exponent
    # used to be capped at 100, leaving f_s ≈ 2.7e-7 where SPEC §2 gives 1).
    "tiny f0 saturating late": _vector(f0=1e-80, f1=10.0, f2=-20.0, f3=0.0),
    "flow reversal": _vector(v0=500.0, beta=1.0, v_offset=-800.0),
    "phi0 at -90": _vector(phi0=-90.0, v0=3e3),
    "upper bounds": np.asarray([hj.PARAMETERS[name].upper for name in hj.PARAMETER_NAMES]),
    "lower bounds": np.asarray([hj.PARAMETERS[name].lower for name in hj.PARAMETER_NAMES]),
}
REFERENCE_GRIDS = {  # 40 points each: one compilation per method serves every case
    "uniform from 0": np.linspace(0.0, 2.0, 40),
    "uniform late": 100.0 + 0.05 * np.arange(40),
    "non-uniform from 0": np.concatenate([[0.0], np.cumsum(np.geomspace(1e-3, 0.3, 39))]),
}


@pytest.mark.parametrize("grid", REFERENCE_GRIDS.values(), ids=REFERENCE_GRIDS.keys())
@pytest.mark.parametrize("vector", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
@pytest.mark.parametrize("q", [1e-3, 0.1])
def test_agrees_with_numpy_reference_table(vector, grid, q):
    case = {
        "vector": vector,
        "t": grid,
        "q": q * np.array([1.0, 0.5, 0.3]),  # one q per angle (each (q, φ) bin has its own)
        "phi": np.array([0.0, 35.0, 90.0]),
        "contrast": np.array([0.3, 0.5, 1.0]),
        "offset": np.array([1.0, 0.5, 1.5]),
    }
    _check(case, "direct", well_conditioned=False)
    _check(case, "structured", well_conditioned=False)


@given(case=cases(kappa=10.0), data=st.data())
def test_c2_pairs_agrees_with_numpy_reference(case, data):
    case = case | {"q": case["q"] * np.array([1.0, 0.7, 0.4])}  # one q per angle
    n = case["t"].shape[0]
    n_pairs = 20
    indices = st.lists(st.integers(0, n - 1), min_size=n_pairs, max_size=n_pairs)
    i, j = np.asarray(data.draw(indices)), np.asarray(data.draw(indices))
    angle = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=n_pairs, max_size=n_pairs)))
    model = hj.HeterodyneModel.from_vector(case["vector"])
    arrays = [jnp.asarray(case[k]) for k in ("t", "q", "phi", "contrast", "offset")]
    got = _c2_pairs(model, *arrays, i, j, angle)
    kwargs = {k: case[k] for k in ("q", "phi", "contrast", "offset")}
    expected = reference_c2(case["vector"], case["t"], pairs=(i, j, angle), **kwargs)
    maps = reference_c2(case["vector"], case["t"], **kwargs)
    np.testing.assert_array_equal(expected, maps[angle, i, j])  # the reference is consistent
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * np.max(np.abs(maps)))


@eqx.filter_jit
def _c2_pairs(model, t, q, phi, contrast, offset, i, j, angle):
    return model.c2_pairs(t, i, j, angle, q=q, phi=phi, contrast=contrast, offset=offset)


@given(case=cases())
def test_rates_agree_with_numpy_reference(case):
    """J_ref, J_sample, v, f_s on the grid, to a few ulps of the largest term of each law.

    D0·t^α + D_offset can cancel, so the tolerance is 8 ulps of |D0·t^α| + |D_offset| (likewise
    for v); f_s to 8 ulps of f0·exp(·) + f3 (clipped to 1).
    """
    model = hj.HeterodyneModel.from_vector(case["vector"])
    t = case["t"]
    got = model.rates(jnp.asarray(t))
    expected = reference_rates(case["vector"], t)
    p = unpack(case["vector"])
    scales = {
        "J_ref": abs(p["D0_ref"]) * power_of_time(t, p["alpha_ref"]) + abs(p["D_offset_ref"]),
        "J_sample": abs(p["D0_sample"]) * power_of_time(t, p["alpha_sample"])
        + abs(p["D_offset_sample"]),
        "velocity": abs(p["v0"]) * power_of_time(t, p["beta"]) + abs(p["v_offset"]),
        "sample_fraction": np.ones_like(t),
    }
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_less(
            np.abs(np.asarray(got[name]) - value), 8 * EPS * scales[name] + 1e-300, err_msg=name
        )
