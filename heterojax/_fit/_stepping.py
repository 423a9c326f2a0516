"""Levenberg–Marquardt stepped from the host: the data pass and the solver are two programs.

`optimistix.least_squares` runs a whole solve in one XLA while loop, so the pass over the data
(the model, its Jacobian and the moments, `FitProblem.moments`) would be compiled into the
solver's program as well as into the program every other phase of a fit uses (`moments_at`):
two compilations of the largest computation in the package, 1–4 s each on a CPU. Here the
loop is driven from Python through the solver's public interface (`init`, `step`,
`terminate`: the calls `optimistix.least_squares` makes inside its loop), one step being

    x_eval ──(the shared data pass, `evaluate`)──▶ (G, b, ‖r‖²) ──(`_advance`)──▶ x_eval′.

The solver's residual is the compressed ρ (`_compressed`), which needs only G, b and ‖r‖² at
the point the step evaluates (a Gauss–Newton step of optimistix evaluates its residual once, at
the proposed point `state.y_eval`), so the data pass runs before the step and the step
program holds only p-dimensional linear algebra. The solver's Jacobian is taken in reverse
mode (`jac="bwd"`): the (p + 1) × p matrix [R; 0] is materialised and the solver state holds no
traced function, so it can be carried from one call to the next. There are no host callbacks:
every program can be kept in JAX's persistent compilation cache, progress with it.

Each step costs one host synchronisation (whether to stop), small against the data pass.
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from ._compressed import compressed_residual
from ._transforms import BoxTransform


_OPTIONS = {"jac": "bwd"}
# How many times the Gauss–Newton decrement a fit may still gain before it is judged unable to
# reach a ceiling (`Stepper.advance`). The decrement predicted the gain that followed within
# 10 % on the fits where it was traced (from 1.65·10⁶ down to 9.47·10⁵, 8 maps × 400²); a
# crawling losing fit gains far less than it.
PREDICTION_ALLOWANCE = 100.0
# A fit whose Gauss–Newton decrement D is at most this many roundings of its χ² (ε·χ², ε the
# machine epsilon of its dtype) is at its minimum to working precision: the gain still
# predicted is about what evaluating χ² rounds away, so LM's ratio test reads rounding and
# rejects step after step until its step bound falls below its tolerance (measured: 7 of the 16
# data passes of `bench_nlsq`'s 3 × 500² fit, all at D ≈ 6·10⁻¹⁸·χ²).
RESOLVED_ROUNDINGS = 64.0
_TAGS: frozenset = frozenset()
# (G, b, ‖r‖²) of the least-squares problem at a bounded fit vector (or at rows of them).
Evaluate = Callable[[Array], tuple[Array, Array, Array]]


def _residual(z, args):
    """`compressed_residual` in the (value, aux) form the solver's methods call."""
    return compressed_residual(z, args), None


class Stepper(eqx.Module):
    """A Levenberg–Marquardt solver and the map from its coordinates z to the point whose data
    terms it needs: θ = z ⊙ z_scale (`transform`'s unconstrained coordinates) and
    x = transform.to_bounded(θ), followed by the fixed `reference` scaling coefficients when
    they are profiled (x is then the whole fit vector the data pass takes)."""

    solver: optx.LevenbergMarquardt
    transform: BoxTransform
    decrement_tol: Float[Array, ""] | float = 0.0  # arrays: one compiled step for every problem
    n_points: Float[Array, ""] | float = 1.0
    ceiling: Float[Array, ""] | float = float("inf")

    def point(self, z, z_scale, reference) -> Float[Array, " p"]:
        x = self.transform.to_bounded(z * z_scale)
        return x if reference is None else jnp.concatenate([x, reference])

    def start(self, z, z_scale, reference):
        """The solver state at z and the first point to evaluate."""
        p = z.shape[0]
        struct = jax.ShapeDtypeStruct((p + 1,), z.dtype)
        shapes = (jnp.eye(p, dtype=z.dtype), jnp.zeros(p, z.dtype), jnp.zeros((), z.dtype))
        args = (self.transform, z_scale, *shapes)  # only their shapes are used
        state = self.solver.init(_residual, z, args, _OPTIONS, struct, None, _TAGS)
        return state, self.point(z, z_scale, reference)

    def advance(self, z, state, terms, z_scale, reference, done):
        """One step from (z, state), given the data terms (G, b, ‖r‖²) at the point the step
        evaluates; a fit already `done` is returned unchanged.

        Besides the solver's own test, the fit has converged when the Gauss–Newton decrement at
        its accepted point, D = bᵀG⁻¹b = ‖ρ[:p]‖² (`_compressed`: the χ² decrease the undamped
        step's linear model predicts), is at most `decrement_tol` in units of the scatter of the
        data about the fit, χ²/`n_points`, or at most `RESOLVED_ROUNDINGS` roundings of χ²
        (ε·χ²: no gain left that χ² resolves). It stops as a fit that cannot win once even
        `PREDICTION_ALLOWANCE` times that predicted decrease leaves it above `ceiling`:
        χ² − 100·D > ceiling (infinite unless the caller knows a better fit; `LocalSolver`).

        **Returns:** `(z, state, x_next, stop, result, chi2, converged, decrement)`: the
        solver's iterate and state, the next point to evaluate, whether the fit stops
        (converged, or a failure), its result, the χ² of its last accepted step, whether a
        convergence test was met, and D there.
        """
        args = (self.transform, z_scale, *terms)
        new_z, new_state, _ = self.solver.step(_residual, z, args, _OPTIONS, state, _TAGS)
        stop, result = self.solver.terminate(_residual, new_z, args, _OPTIONS, new_state, _TAGS)
        finite = jnp.all(jnp.isfinite(new_z))
        result = optx.RESULTS.where(finite, result, optx.RESULTS.nonfinite)
        z, state = jtu.tree_map(lambda a, b: jnp.where(done, a, b), (z, state), (new_z, new_state))
        residual = state.f_info.residual
        decrement = jnp.sum(residual[:-1] ** 2)
        chi2 = jnp.sum(residual**2)
        resolution = RESOLVED_ROUNDINGS * jnp.finfo(chi2.dtype).eps * chi2
        small = decrement <= jnp.maximum(self.decrement_tol * chi2 / self.n_points, resolution)
        losing = chi2 - PREDICTION_ALLOWANCE * decrement > self.ceiling
        converged = state.terminate | (finite & (small | losing))
        stop = done | stop | converged | (result != optx.RESULTS.successful)
        x_next = self.point(state.y_eval, z_scale, reference)
        return z, state, x_next, stop, result, chi2, converged, decrement

    def gradient(self, z, terms, z_scale) -> Float[Array, " p"]:
        """∂(½‖r‖²)/∂z at z from the data terms (G, b, ‖r‖²) taken there: (dx/dz) ⊙ b."""
        return self.transform.derivative(z * z_scale) * z_scale * terms[1]


_start = eqx.filter_jit(Stepper.start)
_advance = eqx.filter_jit(Stepper.advance)
_gradient = eqx.filter_jit(Stepper.gradient)
_start_rows = eqx.filter_jit(eqx.filter_vmap(Stepper.start, in_axes=(None, 0, 0, 0)))
_advance_rows = eqx.filter_jit(eqx.filter_vmap(Stepper.advance, in_axes=(None, 0, 0, 0, 0, 0, 0)))


# The Newton finish (`newton_point`): first tried after this many steps, again this many steps
# later, at most `_NEWTON_TRIES` times a fit, and only while the fit crawls (`_crawling`); the
# forward difference of the gradient is taken over this step in z (unit curvature along each
# axis), and the Newton step repeated with that curvature up to `_NEWTON_STEPS` times.
_NEWTON_AFTER = 10
_NEWTON_TRIES = 2
_NEWTON_NEAR = 1.0
_NEWTON_DIFFERENCE = 1e-2
_NEWTON_STEPS = 3
_CRAWL_FALL = 0.03


def _crawling(decrements: list[float], chi2: float, per_point: float) -> bool:
    """Whether a fit crawls near its minimum: its Gauss–Newton decrement D is within
    `_NEWTON_NEAR` noise variances per parameter (`per_point` = p / points) and fell by less
    than `_CRAWL_FALL` over the last five steps (each step still leaving ≥ 0.7 of the way,
    where a converging Gauss–Newton iteration divides D by orders of magnitude a step). A fit
    whose D is within the rounding of χ² has stopped before this is asked (`Stepper.advance`).
    """
    if len(decrements) < 6:
        return False
    now, before = decrements[-1], decrements[-6]
    near = now <= _NEWTON_NEAR * per_point * chi2
    return near and now >= _CRAWL_FALL * before


def _small_step(solver: optx.LevenbergMarquardt, z, step) -> bool:
    """The solver's test on a step (`optimistix`'s Cauchy test on y): every |Δz| below
    atol + rtol·|z|. (Its test on the change of χ² is met alike: a Newton step near the
    minimum changes χ² by far less than atol + rtol·χ².)"""
    return bool(np.all(np.abs(step) < solver.atol + solver.rtol * np.abs(np.asarray(z))))


def newton_point(stepper: Stepper, evaluate: Evaluate, z, terms, z_scale, reference):
    """A point near the minimum of ½‖r‖² from z by Newton's method: `(point, χ², last step)`,
    or None where the curvature is not positive definite (or no Newton step lowers χ²).

    Gauss–Newton (and so Levenberg–Marquardt) models the curvature as JᵀJ and leaves out
    Σ_e r_e ∇²r_e. Along a valley where that term cancels most of JᵀJ's curvature (correlated
    parameters on large-residual data, e.g. speckle), each step covers only that small fraction
    of the remaining way: the fit crawls, tens of steps within a thousandth of its final χ².
    Newton's step uses the whole curvature: g = ∂(½‖r‖²)/∂z is exact at every point (b of the
    data pass, `Stepper.gradient`), and H is its forward difference along each axis of z,
    symmetrised (p more data passes). The step z ← z − H⁻¹g is repeated with the same H while
    χ² falls, `_NEWTON_STEPS` times at most (one data pass each): the difference quotient's
    error, a few percent of H, then shrinks geometrically.
    """
    gradient = np.asarray(_gradient(stepper, z, terms, z_scale))
    columns = []
    for axis in range(gradient.size):
        shifted = z.at[axis].add(_NEWTON_DIFFERENCE)
        there = evaluate(stepper.point(shifted, z_scale, reference))
        columns.append(np.asarray(_gradient(stepper, shifted, there, z_scale)) - gradient)
    hessian = np.array(columns).T / _NEWTON_DIFFERENCE
    hessian = (hessian + hessian.T) / 2
    if not np.all(np.isfinite(hessian)):
        return None
    eigenvalues = np.linalg.eigvalsh(hessian)
    # Positive definite to working precision, or no Newton step: a direction the difference
    # quotient finds flat (measured: a two-angle recovery case whose LU met a zero pivot
    # although the smallest eigenvalue came out positive) is LM's to handle.
    if eigenvalues[0] <= gradient.size * np.finfo(hessian.dtype).eps * eigenvalues[-1]:
        return None
    best, chi2 = None, float(terms[2])
    for _ in range(_NEWTON_STEPS):
        step = -np.linalg.solve(hessian, gradient)
        proposal = jnp.asarray(np.asarray(z) + step)
        there = evaluate(stepper.point(proposal, z_scale, reference))
        if not float(there[2]) < chi2:
            break
        best, z, chi2 = (proposal, float(there[2]), step), proposal, float(there[2])
        gradient = np.asarray(_gradient(stepper, z, there, z_scale))
    return best


def run_steps(
    stepper: Stepper,
    evaluate: Evaluate,
    z0,
    z_scale,
    reference,
    max_steps: int,
    on_step: Callable[[int, float], Any] | None = None,
    newton: bool = False,
    first_terms: tuple | None = None,
):
    """Levenberg–Marquardt from z0 until the solver's test is met, it fails, or `max_steps`.
    With a leading axis on `z0`, `z_scale` and `reference` (and an `evaluate` of rows), the
    starts step together, each frozen once it has stopped. `on_step(step, chi2)` is called
    after every step with the lowest χ² of the last accepted steps.

    `newton` (one start): a fit still running after `_NEWTON_AFTER` steps that crawls near its
    minimum (`_crawling`) tries Newton's method (`newton_point`); where that lowers χ², LM
    starts afresh from there (where it converges within a few steps instead of crawling on).
    `first_terms`: the data terms at z0's point when the caller has them (the first step's
    pass).

    **Returns:** `(z, result code, steps, chi2)` per start, as `optimistix.least_squares`
    reports them (a fit still moving at `max_steps` has `nonlinear_max_steps_reached`).
    """
    batched = z0.ndim == 2
    start, advance = (_start_rows, _advance_rows) if batched else (_start, _advance)
    state, x = start(stepper, z0, z_scale, reference)
    z, shape = z0, z0.shape[:-1]
    stopped, terminated = np.zeros(shape, bool), np.zeros(shape, bool)
    codes = np.full(shape, int(optx.RESULTS.successful._value))
    steps, chi2 = np.zeros(shape, int), np.full(shape, np.nan)
    newton = newton and not batched
    tries, next_try, decrements = 0, _NEWTON_AFTER, []
    for step in range(1, max_steps + 1):
        terms = first_terms if step == 1 and first_terms is not None else evaluate(x)
        evaluated = x
        z, state, x, stop, result, objective, converged, decrement = advance(
            stepper, z, state, terms, z_scale, reference, jnp.asarray(stopped)
        )
        fetched = jax.device_get((stop, result._value, objective, converged, decrement))
        running = ~stopped
        codes, chi2, terminated = (
            np.where(running, new, old) for new, old in zip(fetched[1:4], (codes, chi2, terminated))
        )
        steps = np.where(running, step, steps)
        stopped = stopped | fetched[0]
        if on_step is not None:
            on_step(step, float(np.nanmin(chi2)))
        if np.all(stopped):
            break
        decrements.append(float(np.max(fetched[4])))
        if (
            newton
            and step >= next_try
            and tries < _NEWTON_TRIES
            and _crawling(decrements, float(np.max(chi2)), z.shape[-1] / float(stepper.n_points))
        ):
            tries, next_try = tries + 1, step + _NEWTON_AFTER
            here = stepper.point(z, z_scale, reference)  # the step's own point when accepted
            accepted = np.array_equal(np.asarray(here), np.asarray(evaluated))
            here = terms if accepted else evaluate(here)
            newton_end = newton_point(stepper, evaluate, z, here, z_scale, reference)
            if newton_end is None:
                continue
            z, chi2, last = newton_end[0], np.asarray(newton_end[1]), newton_end[2]
            if _small_step(stepper.solver, z, last):  # converged by the solver's own step test
                terminated[...] = True
                break
            state, x = start(stepper, z, z_scale, reference)  # LM goes on from there, afresh
    moving = (codes == int(optx.RESULTS.successful._value)) & ~terminated
    codes = np.where(moving, int(optx.RESULTS.nonlinear_max_steps_reached._value), codes)
    return z, codes, steps, chi2
