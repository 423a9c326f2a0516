"""jit, vmap and autodiff through the model agree with eager, looped and finite-difference results,
and jitted evaluation does not retrace when only values change."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from _model_strategies import (
    EPS,
    GRID_POINTS,
    c2,
    cases,
    pairs_weighted_sum,
    pairs_weighted_sum_gradient,
    parameter_vectors,
    weighted_sum,
    weighted_sum_forward_gradient,
    weighted_sum_gradient,
)
from hypothesis import given, strategies as st

import heterojax as hj


METHODS = ["direct", "structured"]
N_PHYSICS = len(hj.PARAMETER_NAMES)
ALL_NAMES = (*hj.PARAMETER_NAMES, "contrast", "offset")


def _vector(**values):
    return np.asarray([values.get(name, hj.PARAMETERS[name].default) for name in ALL_NAMES])


# Interior points (no floor, clip or |·| kink within a finite-difference step), t from 0.
GRADIENT_CASES = {
    # f_s = 1/2 with equal transport makes c2 stationary in f_s: every fraction parameter has
    # zero derivative there (checked below against finite differences, not assumed).
    "defaults": _vector(),
    "ageing": _vector(
        D0_ref=300.0,
        alpha_ref=0.6,
        D_offset_ref=40.0,
        D0_sample=3e3,
        alpha_sample=-0.3,
        D_offset_sample=500.0,
        v0=400.0,
        beta=0.5,
        v_offset=-120.0,
        f0=0.25,
        f1=0.4,
        f2=0.3,
        f3=0.1,
        phi0=25.0,
        contrast=0.3,
        offset=1.1,
    ),
    "negative exponents": _vector(
        D0_ref=20.0,
        alpha_ref=-1.5,
        D_offset_ref=10.0,
        alpha_sample=-0.8,
        beta=-0.5,
        v0=100.0,
        f1=-0.7,
        f2=1.0,
        phi0=-60.0,
    ),
}
# GRID_POINTS (two blocks of the structured evaluation) from t = 0, non-uniform, to ~3.5 s.
GRID = np.concatenate([[0.0], np.cumsum(np.linspace(0.02, 0.08, GRID_POINTS - 1))])
Q = 0.01
PHI = np.array([0.0, 50.0, 100.0])


INSENSITIVE = {"defaults": {"f0", "f1", "f2", "f3"}}


def _finite_difference_gradient(loss, x):
    """Central differences with a relative step h_k = 1e-6·max(|x_k|, 1e-3·(upper − lower)).

    Truncation error is O(h²·L''') ~ 1e-12 relative; rounding error is ~eps·Σ|w·c2|/h_k, which
    the tolerance in the test bounds explicitly.
    """
    widths = np.asarray([hj.PARAMETERS[n].upper - hj.PARAMETERS[n].lower for n in ALL_NAMES])
    steps = 1e-6 * np.maximum(np.abs(x), 1e-3 * widths)
    gradient = np.empty_like(x)
    for k in range(x.shape[0]):
        up, down = x.copy(), x.copy()
        up[k] += steps[k]
        down[k] -= steps[k]
        difference = float(loss(jnp.asarray(up))) - float(loss(jnp.asarray(down)))
        gradient[k] = difference / (2 * steps[k])
    return gradient, steps


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("label", GRADIENT_CASES)
def test_gradient_matches_finite_differences(label, method, key):
    x = GRADIENT_CASES[label]
    weights = jr.normal(key, (PHI.shape[0], GRID.shape[0], GRID.shape[0]))
    args = (jnp.asarray(GRID), jnp.asarray(Q), jnp.asarray(PHI), weights, method)
    reverse = np.asarray(weighted_sum_gradient(jnp.asarray(x), *args))
    forward = np.asarray(weighted_sum_forward_gradient(jnp.asarray(x), *args))
    finite, steps = _finite_difference_gradient(lambda p: weighted_sum(p, *args), x)
    # Rounding in L (a sum of ~1e3 terms of size |w·c2|) is ≤ 1e3·eps·Σ|w·c2|; divided by 2h it
    # bounds the finite-difference rounding error. rtol 1e-6 covers the O(h²) truncation.
    magnitude = float(jnp.sum(jnp.abs(weights))) * 2.5
    atol = 1e3 * EPS * magnitude / (2 * steps)
    for name, ad, fd, tol in zip(ALL_NAMES, reverse, finite, atol):
        assert abs(ad - fd) <= 1e-6 * abs(fd) + tol, (name, ad, fd)
    np.testing.assert_allclose(forward, reverse, rtol=1e-12, atol=1e-12 * np.max(np.abs(reverse)))
    # Every parameter matters at these points (an accidental zero gradient would hide a bug).
    for name, ad in zip(ALL_NAMES, reverse):
        if name not in INSENSITIVE.get(label, set()):
            assert ad != 0.0, name


# Eager structured evaluation compiles each of its many operations separately (~8 s): slow.
@pytest.mark.parametrize("method", ["direct", pytest.param("structured", marks=pytest.mark.slow)])
def test_jit_equals_eager(method):
    x = GRADIENT_CASES["ageing"]
    model = hj.HeterodyneModel.from_vector(x[:N_PHYSICS])
    kwargs = dict(q=Q, phi=PHI, contrast=0.4, offset=1.2, method=method)
    eager = np.asarray(model.c2(GRID, **kwargs))
    jitted = c2(model, GRID, **kwargs)
    # XLA may fuse and reorder inside jit: a few ulps of the map's scale.
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=16 * EPS * 2.5)


@eqx.filter_jit
def _one_angle(model, t, q, phi, contrast, offset, method):
    return model.c2(t, q=q, phi=phi, contrast=contrast, offset=offset, method=method)[0]


@eqx.filter_jit
def _vmap_angles(model, t, q, phi, contrast, offset, method):
    return jax.vmap(
        lambda p, c, o: model.c2(t, q=q, phi=p, contrast=c, offset=o, method=method)[0]
    )(phi, contrast, offset)


@pytest.mark.parametrize("method", METHODS)
@given(case=cases(sizes=(5, 16)))
def test_vmap_over_angles_equals_loop(case, method):
    model = hj.HeterodyneModel.from_vector(case["vector"])
    t, q = jnp.asarray(case["t"]), jnp.asarray(case["q"])
    phi, contrast, offset = (jnp.asarray(case[k]) for k in ("phi", "contrast", "offset"))
    batched = np.asarray(_vmap_angles(model, t, q, phi, contrast, offset, method))
    looped = np.stack(
        [
            np.asarray(_one_angle(model, t, q, phi[k], contrast[k], offset[k], method))
            for k in range(3)
        ]
    )
    together = c2(model, case["t"], q=q, phi=phi, contrast=contrast, offset=offset, method=method)
    np.testing.assert_allclose(batched, looped, rtol=0, atol=16 * EPS * 2.5)
    np.testing.assert_allclose(together, looped, rtol=0, atol=16 * EPS * 2.5)


def _from_vector_c2(x, method):
    return hj.HeterodyneModel.from_vector(x).c2(
        jnp.linspace(0.0, 2.0, 16), q=0.005, phi=jnp.asarray(PHI), method=method
    )


_single_parameter_set = eqx.filter_jit(_from_vector_c2)


@eqx.filter_jit
def _parameter_sets(vectors, method):
    return jax.vmap(lambda x: _from_vector_c2(x, method))(vectors)


@pytest.mark.parametrize("method", METHODS)
@given(vectors=st.lists(parameter_vectors(), min_size=3, max_size=3))
def test_vmap_over_parameter_sets_equals_loop(vectors, method):
    batched = np.asarray(_parameter_sets(jnp.asarray(np.stack(vectors)), method))
    looped = np.stack([np.asarray(_single_parameter_set(jnp.asarray(x), method)) for x in vectors])
    np.testing.assert_allclose(batched, looped, rtol=0, atol=16 * EPS * 2.5)


def test_vmap_over_models_as_pytrees():
    """Models stacked with eqx.filter_vmap behave like a batch of models."""
    vectors = jnp.stack([jnp.asarray(x[:N_PHYSICS]) for x in GRADIENT_CASES.values()])
    models = eqx.filter_vmap(hj.HeterodyneModel.from_vector)(vectors)
    batched = eqx.filter_jit(
        eqx.filter_vmap(lambda m: m.c2(jnp.asarray(GRID), q=Q, phi=jnp.asarray(PHI)))
    )(models)
    for k, x in enumerate(vectors):
        single = c2(hj.HeterodyneModel.from_vector(x), GRID, q=Q, phi=PHI)
        np.testing.assert_allclose(batched[k], single, rtol=0, atol=16 * EPS * 2.5)


@pytest.mark.parametrize("method", METHODS)
def test_no_retrace_when_only_values_change(method):
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def evaluate(model, t, q, phi, contrast, offset):
        return model.c2(t, q=q, phi=phi, contrast=contrast, offset=offset, method=method)

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def gradient(x, t):
        # The trace count does not depend on the method; "direct" compiles faster.
        def loss(x):
            return jnp.sum(hj.HeterodyneModel.from_vector(x).c2(t, q=Q, phi=PHI, method="direct"))

        return jax.grad(loss)(x)

    for k, x in enumerate(GRADIENT_CASES.values()):
        model = hj.HeterodyneModel.from_vector(x[:N_PHYSICS])
        t = jnp.asarray(GRID * (1 + k))
        evaluate(
            model,
            t,
            jnp.asarray(Q * (k + 1)),
            jnp.asarray(PHI + k),
            jnp.asarray(0.1 * k),
            jnp.asarray(1.0 + 0.1 * k),
        )
        # A model built with replace() has the same structure as from_vector's.
        evaluate(
            model.replace(v0=7.0 * k),
            t,
            jnp.asarray(Q),
            jnp.asarray(PHI),
            jnp.asarray(0.5),
            jnp.asarray(1.0),
        )
        gradient(jnp.asarray(x[:N_PHYSICS]), t)
    assert eqx.debug.get_num_traces(evaluate) == 1
    assert eqx.debug.get_num_traces(gradient) == 1


def test_c2_pairs_gradient_equals_map_gradient(key):
    """grad through c2_pairs equals grad through the full map weighted at the same pairs."""
    x = jnp.asarray(GRADIENT_CASES["ageing"])
    n = GRID.shape[0]
    i, j, angle = (jr.randint(k, (50,), 0, m) for k, m in zip(jr.split(key, 3), (n, n, 3)))
    weights = jr.normal(key, (50,))
    # Σ_k w_k c2[angle_k, i_k, j_k] = Σ W·c2 with W the pair weights scattered onto the maps.
    map_weights = jnp.zeros((3, n, n)).at[angle, i, j].add(weights)
    pair_args = (jnp.asarray(GRID), i, j, angle, jnp.asarray(Q), jnp.asarray(PHI), weights)
    map_args = (jnp.asarray(GRID), jnp.asarray(Q), jnp.asarray(PHI), map_weights, "direct")
    np.testing.assert_allclose(
        pairs_weighted_sum(x, *pair_args), weighted_sum(x, *map_args), rtol=1e-13
    )
    pairs_gradient = pairs_weighted_sum_gradient(x, *pair_args)
    map_gradient = weighted_sum_gradient(x, *map_args)
    scale = float(jnp.max(jnp.abs(map_gradient)))
    np.testing.assert_allclose(pairs_gradient, map_gradient, rtol=1e-12, atol=1e-12 * scale)
