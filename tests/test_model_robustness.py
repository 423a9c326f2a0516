"""Numerical robustness (issue #2, point 4): c2 and its derivatives with respect to the 14
physics parameters, contrast and offset are finite everywhere in the box, on grids from t = 0,
up to q = 0.1 Å⁻¹, with the fraction pinned at 0 or 1, and on grids of up to 10⁴ points."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from _model_strategies import (
    GRID_POINTS,
    c2,
    pairs_weighted_sum,
    pairs_weighted_sum_gradient,
    parameter_vectors,
    time_grids,
    wavevectors,
    weighted_sum_forward_gradient,
    weighted_sum_gradient,
)
from _numpy_reference import c2 as reference_c2
from hypothesis import given, strategies as st

import heterojax as hj


N_PHYSICS = len(hj.PARAMETER_NAMES)
ALL_NAMES = (*hj.PARAMETER_NAMES, "contrast", "offset")
PHI = jnp.array([0.0, 45.0, 90.0 - 1e-9])


def _check_finite(parameters, t, q, method):
    """c2 finite; Σ w·∂c2/∂θ finite in forward and reverse mode for all 16 θ.

    The weights are nonzero everywhere (w = 1 + cos k / 2), so an inf or nan anywhere in the
    Jacobian shows in the weighted sums; they share their compiled code with the
    finite-difference tests, which keeps the suite fast.
    """
    model = hj.HeterodyneModel.from_vector(parameters[:N_PHYSICS])
    maps = c2(model, t, q=q, phi=PHI, contrast=parameters[-2], offset=parameters[-1], method=method)
    assert np.all(np.isfinite(maps))
    weights = 1 + jnp.cos(jnp.arange(maps.size, dtype=float)).reshape(maps.shape) / 2
    args = (jnp.asarray(parameters), jnp.asarray(t), jnp.asarray(q), PHI, weights, method)
    for mode, gradient in (
        ("forward", weighted_sum_forward_gradient(*args)),
        ("reverse", weighted_sum_gradient(*args)),
    ):
        bad = ~np.isfinite(np.asarray(gradient))
        assert not np.any(bad), (mode, [n for n, b in zip(ALL_NAMES, bad) if b])


@st.composite
def box_points(draw):
    """16-vectors: 14 physics parameters, contrast and offset, all inside their bounds."""
    x = draw(parameter_vectors())
    pinned = draw(st.sampled_from(["free", "f_s = 0", "f_s = 1"]))
    if pinned == "f_s = 0":
        x[9], x[12] = 0.0, 0.0
    elif pinned == "f_s = 1":
        x[12] = 1.0
    contrast = draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0))
    offset = draw(st.sampled_from([0.5, 1.5]) | st.floats(0.5, 1.5))
    return np.concatenate([x, [contrast, offset]])


@pytest.mark.parametrize("method", ["direct", "structured"])
@given(parameters=box_points(), t=time_grids(sizes=(GRID_POINTS,)), q=wavevectors)
def test_finite_with_finite_derivatives_in_the_box(parameters, t, q, method):
    _check_finite(parameters, t, q, method)


def _corner(choice):
    lower = [hj.PARAMETERS[n].lower for n in ALL_NAMES]
    upper = [hj.PARAMETERS[n].upper for n in ALL_NAMES]
    rng = np.random.default_rng(choice)
    return np.where(rng.integers(0, 2, len(ALL_NAMES)) == 1, upper, lower).astype(float)


CORNERS = {
    "all lower": np.asarray([hj.PARAMETERS[n].lower for n in ALL_NAMES]),
    "all upper": np.asarray([hj.PARAMETERS[n].upper for n in ALL_NAMES]),
    **{f"mixed corner {k}": _corner(k) for k in range(6)},
}


def _corner_grids(n):
    return {
        "from 0 to 1e4 s": np.linspace(0.0, 1e4, n),
        "from 0, fine": np.linspace(0.0, 1e-3 * (n - 1), n),
        "late, non-uniform": 5e3 + np.cumsum(np.geomspace(1e-3, 50.0, n)),
    }


def _check_corners(method, n):
    for grid_label, grid in _corner_grids(n).items():
        for label, corner in CORNERS.items():
            for q in (1e-4, 0.1):
                try:
                    _check_finite(corner, grid, q, method)
                except AssertionError as error:
                    raise AssertionError(f"{label}, {grid_label}, q={q}: {error}") from None


@pytest.mark.parametrize("method", ["direct", "structured"])
def test_finite_at_the_corners_of_the_box(method):
    _check_corners(method, GRID_POINTS)


# ------------------------------------------------------------------------ large grids

LARGE_MODEL = hj.HeterodyneModel().replace(
    D0_ref=20.0,
    alpha_ref=0.5,
    D0_sample=1e3,
    alpha_sample=-0.5,
    v0=30.0,
    beta=0.2,
    f0=0.3,
    f1=1e-4,
    f3=0.1,
    phi0=10.0,
)


def test_forward_finite_on_1e4_points(key):
    """One angle on 10⁴ points from t = 0 (an 800 MB map), spot-checked against NumPy."""
    n = 10_000
    t = np.linspace(0.0, 1e3, n)
    maps = c2(LARGE_MODEL, t, q=0.01, phi=np.array([30.0]), method="auto")
    assert maps.shape == (1, n, n)
    assert np.all(np.isfinite(maps))
    assert np.all((maps >= 1.0 - 1e-14) & (maps <= 1.5 + 1e-14))
    i, j = (np.asarray(jr.randint(k, (500,), 0, n)) for k in jr.split(key))
    expected = reference_c2(
        LARGE_MODEL.to_vector(), t, q=0.01, phi=[30.0], pairs=(i, j, np.zeros_like(i))
    )
    # κ = q²·max C_J + q·max|C_v| ≈ 10 here: rounding in the integrals moves c2 by < 1e-13.
    np.testing.assert_allclose(maps[0, i, j], expected, rtol=0, atol=1e-12)
    del maps


def test_gradient_through_pairs_on_1e4_points(key):
    """All 16 derivatives at 3000 pairs of a 10⁴-point grid (integrals over the whole grid),
    finite and equal to central differences (relative step 1e-6: truncation ~1e-12, rounding
    ~1e-16·|L|/1e-6; rtol 1e-5 leaves ample room)."""
    n, n_pairs = 10_000, 3000
    t = jnp.linspace(0.0, 1e3, n)
    keys = jr.split(key, 4)
    i, j = jr.randint(keys[0], (n_pairs,), 0, n), jr.randint(keys[1], (n_pairs,), 0, n)
    angle = jr.randint(keys[2], (n_pairs,), 0, 3)
    weights = jr.normal(keys[3], (n_pairs,))
    x = jnp.concatenate([LARGE_MODEL.to_vector(), jnp.array([0.4, 1.1])])
    args = (t, i, j, angle, jnp.asarray(0.01), PHI, weights)
    gradient = np.asarray(pairs_weighted_sum_gradient(x, *args))
    assert np.all(np.isfinite(gradient))
    widths = np.asarray([hj.PARAMETERS[n].upper - hj.PARAMETERS[n].lower for n in ALL_NAMES])
    steps = 1e-6 * np.maximum(np.abs(np.asarray(x)), 1e-3 * widths)
    scale = float(jnp.sum(jnp.abs(weights))) * 2.5
    for k, name in enumerate(ALL_NAMES):
        up = float(pairs_weighted_sum(x.at[k].add(steps[k]), *args))
        down = float(pairs_weighted_sum(x.at[k].add(-steps[k]), *args))
        finite = (up - down) / (2 * steps[k])
        tolerance = 1e-5 * abs(finite) + 1e4 * np.finfo(float).eps * scale / steps[k]
        assert abs(gradient[k] - finite) <= tolerance, (name, gradient[k], finite)


def _full_map_gradient_check(n, key):
    t = jnp.linspace(0.0, 10.0, n)
    x = jnp.concatenate([LARGE_MODEL.replace(v0=300.0).to_vector(), jnp.array([0.4, 1.1])])
    weights = jr.normal(key, (3, n, n))
    args = (t, jnp.asarray(0.01), PHI, weights)
    structured = weighted_sum_gradient(x, *args, "structured")
    direct = weighted_sum_gradient(x, *args, "direct")
    assert np.all(np.isfinite(structured))
    # Both sum 3·N² terms of the same size in different orders: 1e-9 of the largest component.
    scale = float(jnp.max(jnp.abs(direct)))
    np.testing.assert_allclose(structured, direct, rtol=1e-9, atol=1e-9 * scale)


def test_full_map_gradient_structured_equals_direct(key):
    """jax.grad of Σ w·c2 through the structured evaluation equals the gradient of the direct
    formula, on a grid of two blocks (the size the gradient tests share; see GRID_POINTS)."""
    _full_map_gradient_check(GRID_POINTS, key)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1000, 2000])
def test_full_map_gradient_on_large_grids(n, key):
    """As above at N = 1000 and 2000 (each compiles its own gradient: ~10 s)."""
    _full_map_gradient_check(n, key)
