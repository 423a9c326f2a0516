"""The Levenberg–Marquardt stepping loop (`_stepping`): its Newton finish and its stop for fits
that cannot win."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heterojax._fit._solve import SUCCESSFUL, LocalSolver
from heterojax._fit._stepping import Stepper, newton_point, run_steps
from heterojax._fit._transforms import BoxTransform


def _terms_of(residual, jacobian):
    """(G, b, ‖r‖²) of a least-squares problem given as r(x) and J(x) (NumPy-free jnp)."""

    def evaluate(x):
        r, j = residual(x), jacobian(x)
        return j.T @ j, j.T @ r, jnp.sum(r**2)

    return evaluate


def _stepper(p: int, n_points: float) -> Stepper:
    free = BoxTransform(jnp.full(p, -jnp.inf), jnp.full(p, jnp.inf))
    return Stepper(LocalSolver()._solver(), free, 0.0, jnp.asarray(n_points), jnp.inf)


def test_the_newton_point_of_a_linear_problem_is_its_minimum():
    """χ² of r = A x − y is quadratic: from anywhere, with any coordinate scale, the Newton
    point (gradient exact, curvature by forward differences) is the least-squares solution."""
    rng = np.random.default_rng(0)
    a, y = jnp.asarray(rng.normal(size=(12, 3))), jnp.asarray(rng.normal(size=12))
    evaluate = _terms_of(lambda x: a @ x - y, lambda x: a)
    z_scale = jnp.asarray([0.5, 2.0, 3.0])
    z = jnp.asarray([4.0, -1.0, 0.3])
    stepper = _stepper(3, 12.0)
    proposal, _, _ = newton_point(stepper, evaluate, z, evaluate(z * z_scale), z_scale, None)
    solution = np.linalg.lstsq(np.asarray(a), np.asarray(y), rcond=None)[0]
    np.testing.assert_allclose(proposal * np.asarray(z_scale), solution, rtol=1e-7, atol=1e-9)


def test_no_newton_point_where_the_curvature_is_singular():
    """Two columns of A equal: χ² is flat along their difference, and the difference-quotient
    Hessian is singular (to rounding). No Newton point (LM goes on), and no exception."""
    rng = np.random.default_rng(1)
    column = rng.normal(size=(12, 1))
    a = jnp.asarray(np.hstack([column, column, rng.normal(size=(12, 1))]))
    y = jnp.asarray(rng.normal(size=12))
    evaluate = _terms_of(lambda x: a @ x - y, lambda x: a)
    z_scale, z = jnp.ones(3), jnp.asarray([0.3, -0.2, 1.0])
    assert newton_point(_stepper(3, 12.0), evaluate, z, evaluate(z), z_scale, None) is None


def test_the_newton_finish_ends_the_crawl_of_gauss_newton_on_a_large_residual_problem():
    """Dennis & Schnabel's r(x) = [x + 1, λx² + x − 1]: minimum at x = 0, where ½‖r‖² has
    curvature 1 − λ against Gauss–Newton's 1, so each Gauss–Newton step near it only multiplies
    x by λ, and LM's step test stops the crawl short of the minimum. With the Newton finish the
    fit ends nearer the minimum, with a lower χ², for fewer data passes (Newton's included)."""
    lam = 0.95
    terms = _terms_of(
        lambda x: jnp.stack([x[0] + 1, lam * x[0] ** 2 + x[0] - 1]),
        lambda x: jnp.stack([jnp.ones(1), 2 * lam * x + 1]),
    )
    ends = {}
    for newton in (False, True):
        passes = []

        def evaluate(x):
            passes.append(x)
            return terms(x)

        z, code, _, chi2 = run_steps(
            _stepper(1, 2.0), evaluate, jnp.asarray([0.5]), jnp.ones(1), None, 256, newton=newton
        )
        assert int(code) == SUCCESSFUL
        ends[newton] = (abs(float(z[0])), len(passes), float(chi2))
    (crawled, crawl_passes, crawl_chi2), (finished, newton_passes, newton_chi2) = ends.values()
    assert crawl_passes > 40
    assert newton_passes < crawl_passes / 1.5
    assert finished < crawled / 2
    assert newton_chi2 < crawl_chi2


def test_a_fit_whose_remaining_gain_is_below_the_rounding_of_chi2_has_converged():
    """The first step at a point whose Gauss–Newton decrement D = bᵀG⁻¹b is a few roundings
    of χ² (ε·χ²) converges: no gain is left that χ² resolves. A decrement well above that does
    not (LM and its own test go on)."""
    p = 3
    stepper = _stepper(p, 1e6)
    z, z_scale = jnp.zeros(p), jnp.ones(p)
    chi2 = 1.0e6
    eps = float(np.finfo(np.float64).eps)
    for decrement, converged in ((eps * chi2, True), (1e4 * eps * chi2, False)):
        b = jnp.full(p, np.sqrt(decrement / p))
        state, _ = stepper.start(z, z_scale, None)
        terms = (jnp.eye(p), b, jnp.asarray(chi2))
        out = stepper.advance(z, state, terms, z_scale, None, jnp.asarray(False))
        _, _, _, stop, _, objective, met, reported = out
        assert float(reported) == pytest.approx(decrement, rel=1e-6)
        assert float(objective) == pytest.approx(chi2)
        assert bool(met) is converged and bool(stop) is converged


def test_the_first_step_takes_the_terms_the_caller_already_has():
    """`run_steps(first_terms=...)`: the start's data pass, made by the caller (for the
    coordinate scale), is the first step's; the fit is the same, one pass fewer."""
    rng = np.random.default_rng(1)
    t = jnp.linspace(0.0, 3.0, 200)
    y = 2.0 * jnp.exp(-1.3 * t) + 0.05 * jnp.asarray(rng.normal(size=200))

    def residual(x):
        return x[0] * jnp.exp(-x[1] * t) - y

    terms = _terms_of(residual, jax.jacfwd(residual))
    z0, z_scale = jnp.asarray([0.5, 0.2]), jnp.asarray([1.0, 2.0])
    runs = []
    for first in (None, terms(z0 * z_scale)):
        passes = []

        def evaluate(x):
            passes.append(x)
            return terms(x)

        out = run_steps(_stepper(2, 200.0), evaluate, z0, z_scale, None, 256, first_terms=first)
        runs.append((out, len(passes)))
    (plain, plain_passes), (reused, reused_passes) = runs
    assert reused_passes == plain_passes - 1
    np.testing.assert_array_equal(np.asarray(reused[0]), np.asarray(plain[0]))
    assert int(reused[2]) == int(plain[2]) and float(reused[3]) == float(plain[3])
