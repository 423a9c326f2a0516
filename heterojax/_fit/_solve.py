"""The local solver: Levenberg–Marquardt from rows of starts, and its progress reports."""

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .._threads import default_threads, in_parallel
from ._compressed import coordinate_scale
from ._problem import FitProblem, best_scaling, evaluate_at
from ._profile import full_vectors, physics_transform, profile_of, profiled_terms
from ._stepping import Evaluate, Stepper, run_steps
from ._transforms import BoxTransform


# The solver's coordinates z are scaled so that the diagonal of JᵀJ starts at 1/_INITIAL_STEP²:
# LM's initial damping λ = 1 is then 1 % of the curvature (close to a Gauss–Newton step), and the
# trust region grows by _WIDENING after every very successful step (optimistix's default 3.5).
# Together they halve the steps of local fits in our tests (26 → 13 on the 3 × 500² benchmark)
# without losing any recovery case of the test suite.
_INITIAL_STEP = 10.0
_WIDENING = 10.0


@eqx.filter_jit
def to_unconstrained(transform: BoxTransform, x):
    return transform.to_unconstrained(x)


@eqx.filter_jit
def to_bounded(transform: BoxTransform, theta):
    """x(θ) and dx/dθ (rows of θ or one vector)."""
    return transform.to_bounded(theta), transform.derivative(theta)


# Listeners of the LM steps while a fit with `progress` runs: callables (step, χ²) -> None.
_STEP_LISTENERS: list[Callable[..., Any]] = []


def _on_step(step: int, chi2: float) -> None:
    for listener in _STEP_LISTENERS:
        listener(step, chi2)


@contextlib.contextmanager
def listening(progress: Any) -> Iterator[bool]:
    """Registers the progress listener of `fit_nlsq` for the duration of the fit."""
    if not progress:
        yield False
        return
    began, last, best = time.perf_counter(), [-1.0], [np.inf]

    def print_step(step: int, chi2: float) -> None:
        # Starts report in turn, with χ² = 0 before their first evaluation: show the best.
        if np.isfinite(chi2) and chi2 > 0:
            best[0] = min(best[0], chi2)
        now = time.perf_counter() - began
        if now - last[0] >= 1.0 and np.isfinite(best[0]):
            last[0] = now
            print(
                f"[heterojax.fit_nlsq] step {step:4d}   best χ² = {best[0]:.6g}   {now:6.1f} s",
                file=sys.stderr,
                flush=True,
            )

    listener: Callable[..., Any] = progress if callable(progress) else print_step
    _STEP_LISTENERS.append(listener)
    try:
        yield True
    finally:
        _STEP_LISTENERS.remove(listener)


def _start_passes(
    evaluate: Evaluate, transform: BoxTransform, thetas: np.ndarray, references
) -> tuple[np.ndarray, list[tuple]]:
    """The data terms (G, b, ‖r‖²) at every row of θ (`evaluate`, one pass over the data
    each; with `references`, rows of scaling coefficients, those of the profiled problem), and
    the coordinate scales they give (`coordinate_scale`). The terms are those the first step
    of each row needs: its start is the point that step evaluates."""
    xs, derivatives = jax.device_get(to_bounded(transform, jnp.asarray(np.atleast_2d(thetas))))
    if references is not None:
        xs = np.concatenate([xs, np.asarray(references)], axis=1)
    terms = [evaluate(jnp.asarray(x)) for x in xs]
    scales = np.array(
        [
            _INITIAL_STEP * coordinate_scale(gram, derivative)
            for (gram, _, _), derivative in zip(terms, derivatives)
        ]
    )
    return scales, terms


_NOT_AT_MINIMUM = (
    "Levenberg–Marquardt used its whole step budget (max_steps; CLI: nlsq.max_steps) without "
    "meeting its tolerances (rtol, atol), so the fit may not be at a minimum of χ²; raise the "
    "budget or start closer"
)
_LINEAR_SOLVE = (
    "the linear solve inside Levenberg–Marquardt failed (JᵀJ singular or ill-conditioned): some "
    "free parameters do not change the model at these values; fix them or free fewer"
)
# What each optimistix outcome means for this fit (optimistix's own texts speak of root-finds
# and linear solvers in general).
_OUTCOMES = {
    "successful": "",
    "max_steps_reached": _NOT_AT_MINIMUM,
    "nonlinear_max_steps_reached": _NOT_AT_MINIMUM,
    "nonlinear_divergence": (
        "the fit diverged: χ² kept growing from this start; check the start values and bounds"
    ),
    "nonfinite": (
        "the model or χ² became NaN/Inf during the fit (parameters reached values where the "
        "model is not finite); check the start values and bounds"
    ),
    "nonfinite_input": "the model or χ² is NaN/Inf at the start values; check them",
    "singular": _LINEAR_SOLVE,
    "breakdown": _LINEAR_SOLVE,
    "stagnation": _LINEAR_SOLVE,
    "conlim": _LINEAR_SOLVE,
}


def result_message(code: int) -> str:
    """What the optimistix result `code` means for this fit, in words ("" for success)."""
    for name, item in optx.RESULTS._name_to_item.items():
        if int(item._value) == int(code):
            return _OUTCOMES.get(name, f"the solver stopped: {name.replace('_', ' ')}")
    return f"solver result code {code}"


SUCCESSFUL = int(optx.RESULTS.successful._value)
# Outcomes where the fit was still moving when its step budget ran out.
OUT_OF_STEPS = tuple(
    int(item._value)
    for name, item in optx.RESULTS._name_to_item.items()
    if name in ("max_steps_reached", "nonlinear_max_steps_reached")
)


class Solved(NamedTuple):
    """Where local fits ended, one row per start (NumPy): `values` (bounded fit vectors),
    `codes` (optimistix result codes), `steps`, `chi2`."""

    values: np.ndarray
    codes: np.ndarray
    steps: np.ndarray
    chi2: np.ndarray

    def ranking(self) -> np.ndarray:
        """χ² with failures and non-finite values ranked last among equals."""
        finite = np.where(np.isfinite(self.chi2), self.chi2, np.inf)
        return finite + np.where(self.codes == SUCCESSFUL, 0.0, 1e-9 * np.abs(finite))

    def take(self, rows) -> "Solved":
        return Solved(*(np.asarray(a)[rows] for a in self))

    def resumed(
        self, problem: FitProblem, solve: "LocalSolver", rounds: int, within: float = np.inf
    ) -> "Solved":
        """The same fits with every one that ran out of steps and is within `within` of the
        lowest χ² continued from where it stopped (a fresh step budget and damping each round;
        up to `rounds` rounds): a long walk along a ridge (the fraction's f0–f1–f3, an exponent
        and its prefactor) is not a minimum, and a fit that could still win must finish."""
        solved = Solved(*(np.array(a) for a in self))
        for _ in range(rounds):
            contender = solved.chi2 <= np.nanmin(solved.chi2) + within
            moving = np.flatnonzero(np.isin(solved.codes, OUT_OF_STEPS) & contender)
            if moving.size == 0:
                break
            more = solve(problem, solved.values[moving], batched=False, rescale=False)
            solved.values[moving], solved.codes[moving] = more.values, more.codes
            solved.chi2[moving] = more.chi2
            solved.steps[moving] += more.steps
        return solved


def _evaluation(
    problem: FitProblem, *, profiled: bool, batched: bool, coefficients: dict | None = None
) -> Evaluate:
    """The data pass of the solver's steps: (G, b, ‖r‖²) at a bounded fit vector (rows of
    them when `batched`), of the profiled problem (`_profile`) or of the whole fit vector.
    A profiled pass of one vector leaves its best coefficients α* in `coefficients`, keyed by
    the vector's bytes (`full_vectors` reads them back at the fits' ends)."""
    if batched:
        return lambda xs: _terms_of_rows(problem, xs, profiled)
    if not profiled:
        return lambda x: _terms(evaluate_at(problem, x))

    def profiled_pass(x):
        profile = profile_of(problem, x)
        if coefficients is not None:
            coefficients[np.asarray(x).tobytes()] = profile.coefficients
        return _terms(profile)

    return profiled_pass


def _terms(evaluation) -> tuple:
    """(G, b, ‖r‖²) of a `Profile` or an `Evaluation`."""
    return evaluation.gram, evaluation.gradient, evaluation.ssr


@eqx.filter_jit
def _terms_of_rows(problem: FitProblem, xs, profiled: bool):
    """The data pass at rows of fit vectors in one program (the maps scanned inside it)."""

    def terms(x):
        moments = problem.moments(x, profiled)
        if profiled:
            return _terms(profiled_terms(problem, moments, x))
        return _terms(moments.evaluation(problem, x))

    return jax.vmap(terms)(xs)


class LocalSolver(eqx.Module):
    """Levenberg–Marquardt settings of the local fits (see `fit_nlsq`).

    A fit stops when optimistix's test (`rtol`, `atol` on the step and the residual) is met,
    or (`decrement_tol` > 0, the start strategies' stages before the final fits) when the χ²
    that the Gauss–Newton step could still gain, bᵀG⁻¹b, is at most `decrement_tol` times the
    data's scatter about the fit (χ²/points).

    `newton_finish` (default): a fit (one start at a time) that crawls near its minimum after
    ten steps (its Gauss–Newton decrement small and falling slowly, `_stepping._crawling`)
    takes Newton steps with the whole curvature of χ² (`_stepping.newton_point`): Gauss–Newton
    crawls along valleys whose curvature JᵀJ overstates. This holds for the final fits and for
    the profiled fits of the stages before them; not for the joint screening (`decrement_tol`
    and no `profile_scaling`), where a Newton try costs a data pass for each of the many
    contrast/offset coefficients too and shortened no screened fit (on the 42-map file of
    `bench_whole_file.py`: 4 tries, the same steps, the screening 31 → 41 s; the medium
    stage's profiled fits took 84 instead of 159 steps). `LocalSolver(newton_finish=False)`
    leaves LM to crawl to its own test.

    `profile_scaling` (default): LM runs over the free physics alone, with every start's
    contrast/offset coefficients profiled out (`_profile`; the same minimum, without the ridge
    that each map's contrast forms with the physics). Otherwise LM runs over the whole fit
    vector, from each row's best scaling when `scale_starts`.

    `threads`: independent fits (no `contend_within`: the screening's starts, continued fits)
    run on this many threads, each start's fit the same as alone (`heterojax._threads`;
    `None`: every core on a CPU, 1 on an accelerator). On a 2-core CPU the screening of the
    42-map file of `bench_whole_file.py` (30 starts) took 23.0 s instead of 31.4 s.
    """

    rtol: float = 1e-7
    atol: float = 1e-4
    decrement_tol: float = 0.0
    max_steps: int = 256
    progress: bool = False
    scale_starts: bool = True  # start every row at its best contrast/offset (not profiled)
    profile_scaling: bool = True
    newton_finish: bool = True
    threads: int | None = None

    def _solver(self) -> optx.LevenbergMarquardt:
        """Levenberg–Marquardt whose trust region widens when at least half of the predicted
        reduction is achieved (optimistix's default asks for 99 %, which keeps LM crawling
        along the strongly correlated valleys of this model: ~3× more steps in our tests)."""
        solver = optx.LevenbergMarquardt(rtol=float(self.rtol), atol=float(self.atol))
        search = optx.ClassicalTrustRegion(high_cutoff=0.5, high_constant=_WIDENING)
        return eqx.tree_at(lambda s: s.search, solver, search)

    def _threads(self) -> int:
        return default_threads() if self.threads is None else int(self.threads)

    def starting_rows(self, problem: FitProblem, rows: np.ndarray) -> np.ndarray:
        """Rows with the scaling coefficients replaced by the best ones for their physics."""
        rows = np.atleast_2d(np.asarray(rows, float))
        if not self.scale_starts or problem.n_parameters == problem.n_free_physics:
            return rows
        n_phys = problem.n_free_physics
        scaled = in_parallel(
            lambda row: best_scaling(problem, evaluate_at(problem, jnp.asarray(row)).scaling_sums),
            rows,
            self._threads(),
        )
        return np.concatenate([rows[:, :n_phys], np.array(scaled)], axis=1)

    def __call__(
        self,
        problem: FitProblem,
        rows: np.ndarray,
        *,
        max_steps: int | None = None,
        batched: bool | None = None,
        rescale: bool = True,
        contend_within: float = np.inf,
        best_known: float = np.inf,
    ) -> Solved:
        """Local fits from the bounded start `rows` (`_stepping.run_steps`): stepped together
        (`batched`: the data pass and the step vmapped over the starts), or one after another
        with the single-start programs (which a local fit compiles anyway). `rescale=False`
        keeps the rows' contrast/offset (a continued fit).

        With a finite `contend_within`, a fit that cannot come within that of the best χ² known
        (`best_known`, and the fits already finished: rows in turn, best first) stops as soon as
        its χ² minus a hundred times the Gauss–Newton decrement lies above it (`Stepper`): a
        rival basin is not walked to the end of its valley only to lose. Its χ² is then an upper
        bound of its basin's, above it by about the decrement (≪ its gap to the best).

        `batched=None` steps together on an accelerator and in turn on a CPU. There the batch
        costs every start the step count of the slowest (a stopped start is frozen, not
        skipped), and its programs are compiled in addition to the single-start ones: on the
        38 screening starts of two recovery cases (identical fits) 19.7 s in turn against
        39.6 s vmapped (5 maps × 107 frames) and 3.5 s against 4.4 s (4 × 46 frames); cold,
        22.8 s against 48.6 s (measured with the earlier one-program solver).
        """
        rows = np.atleast_2d(np.asarray(rows, float))
        k = problem.n_free_physics
        if self.profile_scaling and problem.n_parameters > k:
            transform = physics_transform(problem)
            lower, upper = (
                np.asarray(b)[k:] for b in (problem.transform.lower, problem.transform.upper)
            )
            references = np.clip(rows[:, k:], lower, upper)
            rows = rows[:, :k]
        else:
            transform, references = problem.transform, None
            rows = self.starting_rows(problem, rows) if rescale else rows
        thetas = np.asarray(to_unconstrained(transform, jnp.asarray(rows)))
        steps = int(self.max_steps if max_steps is None else max_steps)
        if batched is None:
            batched = jax.default_backend() != "cpu"
        batched = batched and thetas.shape[0] > 1
        if batched:
            parts = [(thetas, references)]
        else:
            parts = [
                (thetas[[i]], None if references is None else references[[i]])
                for i in range(len(thetas))
            ]
        stepper = Stepper(
            self._solver(),
            transform,
            jnp.asarray(float(self.decrement_tol)),
            jnp.asarray(float(problem.n_points)),
            jnp.asarray(np.inf),
        )
        known: dict = {}  # α* of the profiled passes (`_evaluation`)
        single = _evaluation(
            problem, profiled=references is not None, batched=False, coefficients=known
        )
        evaluate = (
            _evaluation(problem, profiled=references is not None, batched=True)
            if batched
            else single
        )
        on_step = _on_step if self.progress else None
        newton = self.newton_finish and (references is not None or not self.decrement_tol)

        def fit_part(part, ceiling: float) -> list:
            theta, reference = part
            bounded = eqx.tree_at(lambda s: s.ceiling, stepper, jnp.asarray(ceiling))
            z_scale, first_terms = _start_passes(single, transform, theta, reference)
            if batched:
                first = tuple(jnp.stack(part) for part in zip(*first_terms))
            else:  # one start: no batch axis
                theta, z_scale, first = theta[0], z_scale[0], first_terms[0]
                reference = None if reference is None else reference[0]
            z, *rest = run_steps(
                bounded,
                evaluate,
                jnp.asarray(theta / z_scale),
                jnp.asarray(z_scale),
                None if reference is None else jnp.asarray(reference),
                steps,
                on_step,
                newton=newton,
                first_terms=first,
            )
            theta = np.asarray(z) * z_scale
            return [np.atleast_2d(theta)] + [np.atleast_1d(a) for a in rest]

        if np.isinf(contend_within):  # independent fits: on as many threads as cores
            outputs = in_parallel(lambda part: fit_part(part, np.inf), parts, self._threads())
        else:  # in turn, each bounded by the best finished before it
            outputs = []
            for part in parts:
                best = min(
                    [best_known] + [float(np.nanmin(out[-1], initial=np.inf)) for out in outputs]
                )
                outputs.append(fit_part(part, best + contend_within))
        theta, codes, n_steps, chi2 = (np.concatenate(a) for a in zip(*outputs))
        values = to_bounded(transform, jnp.asarray(theta))[0]
        if references is not None:
            values = full_vectors(problem, values, jnp.asarray(references), known)
        return Solved(np.asarray(values), codes, n_steps, chi2)
