"""The moments pass and the profiled (variable-projection) least squares of the local fits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _fit_problems import fit_problem
from hypothesis import given, settings, strategies as st

from heterojax._fit import _problem as problem_module
from heterojax._fit._problem import evaluate_at
from heterojax._fit._profile import box_least_squares, profile_at
from heterojax._fit._solve import LocalSolver


def _direct_evaluation(problem, x):
    """G, b, ‖r‖² and the model maps from the per-map Jacobian, entry by entry."""
    gram = np.zeros((x.size, x.size))
    gradient = np.zeros(x.size)
    ssr, maps = 0.0, []
    for inputs in zip(*problem._map_inputs()[:-1], [None] * int(problem.q.shape[0])):
        columns, residual, _, fitted, expand = problem._map_jacobian(jnp.asarray(x), inputs)
        flat = np.asarray(columns).reshape(columns.shape[0], -1).T @ np.asarray(expand)
        gram += flat.T @ flat
        gradient += flat.T @ np.asarray(residual).ravel()
        ssr += float(np.sum(np.asarray(residual) ** 2))
        maps.append(np.asarray(fitted))
    return gram, gradient, ssr, np.stack(maps)


@pytest.mark.parametrize("by_map", [False, True])
@pytest.mark.parametrize(
    "scaling, fixed_scaling",
    [("individual", ()), ("constant", ()), ("fourier", ()), ("individual", ("contrast",))],
)
def test_the_moments_give_the_normal_equations_of_the_direct_jacobian(
    scaling, fixed_scaling, by_map, monkeypatch
):
    """Both compiled passes (one scan over the maps; map by map, as for long maps)."""
    monkeypatch.setattr(problem_module, "_PER_MAP_FRAMES", 1 if by_map else 10**9)
    problem, x0 = fit_problem(scaling, fixed_scaling)
    assert problem_module.passes_by_map(problem) == by_map
    x = x0 * 1.01
    evaluation = evaluate_at(problem, jnp.asarray(x))
    gram, gradient, ssr, maps = _direct_evaluation(problem, x)
    np.testing.assert_allclose(evaluation.gram, gram, rtol=1e-10, atol=1e-9 * np.abs(gram).max())
    np.testing.assert_allclose(
        evaluation.gradient, gradient, rtol=1e-10, atol=1e-9 * np.abs(gradient).max()
    )
    assert float(evaluation.ssr) == pytest.approx(ssr, rel=1e-12)
    np.testing.assert_allclose(evaluation.maps, maps, rtol=1e-13)


@pytest.mark.parametrize("scaling", ["individual", "constant", "fourier"])
def test_the_profile_is_the_best_scaling_and_its_gradient_is_exact(scaling):
    problem, x0 = fit_problem(scaling)
    k = problem.n_free_physics
    physics, reference = jnp.asarray(x0[:k]), jnp.asarray(x0[k:])
    profiled = profile_at(problem, physics, reference)
    x = jnp.concatenate([physics, profiled.coefficients])
    full = evaluate_at(problem, x)
    # The coefficients minimise χ² for these physics (inside the bounds: zero gradient there).
    scale = np.sqrt(np.diagonal(np.asarray(full.gram)))
    assert np.max(np.abs(np.asarray(full.gradient)[k:] / scale[k:])) < 1e-8
    assert float(profiled.ssr) == pytest.approx(float(full.ssr), rel=1e-12)
    # ½ d χ²_profiled / dθ = b_θ (variable projection), checked by central differences.
    for j in range(k):
        step = 1e-6 * abs(float(physics[j]))
        up = profile_at(problem, physics.at[j].add(step), reference).ssr
        down = profile_at(problem, physics.at[j].add(-step), reference).ssr
        derivative = 0.5 * float(up - down) / (2 * step)
        assert derivative == pytest.approx(float(profiled.gradient[j]), rel=1e-4, abs=1e-3)
    # Kaufman's Gram is the Schur complement of the coefficients in JᵀJ.
    gram = np.asarray(full.gram)
    schur = gram[:k, :k] - gram[:k, k:] @ np.linalg.solve(gram[k:, k:], gram[k:, :k])
    np.testing.assert_allclose(profiled.gram, schur, rtol=1e-8)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=6), st.integers(min_value=0, max_value=2**31 - 1))
def test_the_box_least_squares_meets_the_kkt_conditions(n, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n + 2, n))
    hessian = a.T @ a
    target = rng.normal(size=n) * 3
    lower = -rng.uniform(0.0, 1.0, n)
    upper = rng.uniform(0.0, 1.0, n)
    delta, free = jax.jit(box_least_squares)(hessian, target, lower, upper)
    delta, free = np.asarray(delta), np.asarray(free)
    assert np.all(delta >= lower) and np.all(delta <= upper)
    gradient = hessian @ delta - target
    tolerance = 1e-8 * (1 + np.abs(target).max() + np.abs(hessian).max())
    assert np.all(np.abs(gradient[free]) < tolerance)
    at_lower, at_upper = delta <= lower, delta >= upper
    assert np.all(gradient[at_lower] > -tolerance)
    assert np.all(gradient[at_upper] < tolerance)
    # No feasible point is better (a convex problem: KKT means optimal); spot-check at random.
    objective = lambda d: 0.5 * d @ hessian @ d - target @ d  # noqa: E731
    others = rng.uniform(lower, upper, size=(200, n))
    assert objective(delta) <= min(objective(o) for o in others) + tolerance


def test_profiled_and_joint_local_fits_reach_the_same_minimum():
    problem, x0 = fit_problem("individual", phi=(0.0, 30.0, 60.0, 90.0, 120.0, 150.0))
    profiled = LocalSolver(max_steps=400)(problem, x0[None])
    joint = LocalSolver(max_steps=400, profile_scaling=False)(problem, x0[None])
    assert profiled.codes[0] == 0
    assert profiled.chi2[0] <= joint.chi2[0] * (1 + 1e-9)
    k = problem.n_free_physics
    full = evaluate_at(problem, jnp.asarray(profiled.values[0]))
    assert float(full.ssr) == pytest.approx(float(profiled.chi2[0]), rel=1e-9)
    if joint.codes[0] == 0:
        np.testing.assert_allclose(profiled.values[0, :k], joint.values[0, :k], rtol=1e-4)


def test_a_coefficient_no_entry_depends_on_keeps_its_reference():
    problem, x0 = fit_problem("individual")
    k = problem.n_free_physics
    subset = problem.with_maps([0, 2])  # map 1's contrast and offset no longer matter
    profiled = profile_at(subset, jnp.asarray(x0[:k]), jnp.asarray(x0[k:]))
    n_maps = int(problem.q.shape[0])
    coefficients = np.asarray(profiled.coefficients)
    assert coefficients[1] == x0[k + 1] and coefficients[n_maps + 1] == x0[k + n_maps + 1]
    assert np.all(np.isfinite(np.asarray(profiled.gram)))


def test_starts_stepped_together_equal_starts_stepped_in_turn():
    """`_stepping.run_steps` with a batch of starts (each frozen once it stops) ends where the
    starts run one at a time end, and reports progress from the Python step loop."""
    problem, x0 = fit_problem()
    rows = np.stack([x0, x0 * np.r_[1.2, 0.9, 1.05, 0.9, np.ones(x0.size - 4)]])
    solver = LocalSolver(progress=True)
    seen = []
    from heterojax._fit import _solve

    _solve._STEP_LISTENERS.append(lambda step, chi2: seen.append((step, chi2)))
    try:
        apart = solver(problem, rows, batched=False)
        together = solver(problem, rows, batched=True)
    finally:
        _solve._STEP_LISTENERS.clear()
    np.testing.assert_array_equal(together.codes, apart.codes)
    np.testing.assert_array_equal(together.steps, apart.steps)
    np.testing.assert_allclose(together.values, apart.values, rtol=1e-8)
    np.testing.assert_allclose(together.chi2, apart.chi2, rtol=1e-8)
    assert np.all(apart.codes == _solve.SUCCESSFUL)
    assert len(seen) == apart.steps.sum() + together.steps.max()
    assert all(np.isfinite(chi2) for _, chi2 in seen)


def test_a_local_fit_passes_over_the_data_once_a_step(monkeypatch):
    """The start's pass is the first step's, and the best coefficients at the end are those
    of the last pass there: a profiled fit (no Newton try) makes one data pass a step, and
    its coefficients are the profile's at its physics."""
    from heterojax._fit import _profile, _solve

    problem, x0 = fit_problem()
    passes = []
    counted = _profile.profile_of

    def profile_of(problem, x):
        passes.append(x)
        return counted(problem, x)

    monkeypatch.setattr(_solve, "profile_of", profile_of)
    monkeypatch.setattr(_profile, "profile_of", profile_of)
    solved = LocalSolver(newton_finish=False)(problem, x0[None])
    assert solved.codes[0] == _solve.SUCCESSFUL
    assert len(passes) == solved.steps[0]
    k = problem.n_free_physics
    at_end = counted(problem, np.concatenate([solved.values[0, :k], x0[k:]]))
    np.testing.assert_allclose(solved.values[0, k:], at_end.coefficients, rtol=1e-12)
