"""Joint nonlinear least squares over all maps with optimistix Levenberg–Marquardt.

`fit_nlsq` reads as its phases: build the problem → search from the strategy's starts →
choose the solution (in its canonical form) → uncertainty → quality report → result.
"""

import time
from collections.abc import Callable, Iterable, Mapping

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._data._xpcs_data import XPCSData
from .._model._bins import BinGeometry
from .._model._heterodyne import HeterodyneModel
from ._errors import resolve_errors
from ._global import global_search as run_global_search
from ._nlsq_result import NLSQResult, StartsSummary
from ._problem import FitProblem, build_problem, evaluate_at
from ._quality import build_quality_report, similar_chi2
from ._roi import bin_widths, describe_model, fit_bins
from ._scaling import estimate_contrast_offset, resolve_scaling
from ._solve import SUCCESSFUL, LocalSolver, Solved, listening, result_message
from ._strategies import (
    AbstractStarts,
    SearchOutcome,
    exact_two_angle_twin,
    resolve_starts,
)
from ._symmetry import (
    basin_signature,
    canonical,
    exchanged_signature,
    fraction_is_steady,
    reference_is_slower,
)
from ._uncertainty import AbstractErrors, Uncertainty, solution_uncertainty


# Two fits are the same basin when their `basin_signature`s (log-rates, log-speed, fraction at
# three times) differ by less than this everywhere.
_SAME_SOLUTION = 0.1


def _check_inputs(model, data) -> None:
    if not isinstance(model, HeterodyneModel):
        raise TypeError(f"`model` must be a heterojax.HeterodyneModel; got {type(model).__name__}.")
    if not isinstance(data, XPCSData):
        raise TypeError(f"`data` must be a heterojax.XPCSData; got {type(data).__name__}.")


def _build(model, data, *, fixed, bounds, scaling, fourier_order, contrast, offset, sigma, roi):
    """Phase 1: the `FitProblem`, the start vector, σ per entry and where σ came from."""
    phi = np.asarray(data.phi)
    resolved = resolve_scaling(scaling, phi, order=fourier_order, q=np.asarray(data.q))
    estimated_contrast, estimated_offset = estimate_contrast_offset(
        np.asarray(data.c2), np.asarray(data.mask)
    )
    start_contrast = np.broadcast_to(
        estimated_contrast if contrast is None else np.asarray(contrast, float), phi.shape
    )
    start_offset = np.broadcast_to(
        estimated_offset if offset is None else np.asarray(offset, float), phi.shape
    )
    noise = "argument" if sigma is not None else ("data" if data.sigma is not None else "estimated")
    problem, x0, sigma_used = build_problem(
        model,
        data,
        fixed=fixed,
        bounds=bounds,
        scaling=resolved,
        contrast=start_contrast,
        offset=start_offset,
        sigma=sigma,
        bins=fit_bins(model, data, roi=roi),
    )
    return problem, np.asarray(x0), sigma_used, noise


def _search(
    strategy: AbstractStarts,
    problem: FitProblem,
    data: XPCSData,
    x0: np.ndarray,
    solve: LocalSolver,
    *,
    seed: int,
    global_evaluations: int | None,
) -> SearchOutcome:
    """Phase 2: the strategy's local fits, plus one from the CMA-ES optimum when asked."""
    outcome = strategy.search(problem, data, x0, solve, seed=seed)
    if global_evaluations is None:
        return outcome
    found = run_global_search(problem, outcome.final.values[0], global_evaluations, seed)
    polished = solve(problem, found[None], batched=False)
    final = Solved(*(np.concatenate([a, b]) for a, b in zip(polished, outcome.final)))
    return SearchOutcome(final, outcome.screening)


def _choose(problem: FitProblem, final: Solved) -> tuple[int, np.ndarray]:
    """Phase 3: the start with the lowest χ², its fit vector in the canonical labelling."""
    best = int(np.argmin(final.ranking()))
    return best, canonical(problem, final.values[best])


def _exchange_images(problem: FitProblem, final: Solved, x: np.ndarray) -> np.ndarray:
    """Which converged fits are the exchanged labelling of x (reference ↔ sample)."""
    image = exchanged_signature(basin_signature(problem, x))
    return np.array(
        [
            code == SUCCESSFUL
            and np.max(np.abs(basin_signature(problem, value) - image)) < _SAME_SOLUTION
            for value, code in zip(final.values, final.codes)
        ],
        bool,
    )


def _fold_exchange(problem, final: Solved, best: int, x, stderr, chi2: float, dof: int):
    """Phase 3b: when the data resolve no change of the fraction, the exchange of reference and
    sample is exact within the errors, so its two labellings are one solution: report the
    canonical one (the slower component as the reference) if a local fit reached it with a χ²
    as good within the report's tolerance, and never count the other as a rival.

    **Returns:** `(best, images)`: the index to report and the mask of fits that are the
    exchanged image of it (all False when the exchange is not exact within the errors).
    """
    none = np.zeros(len(final.chi2), bool)
    if not fraction_is_steady(problem, x, stderr):
        return best, none
    images = _exchange_images(problem, final, x)
    if not reference_is_slower(problem, x):
        tolerance = similar_chi2(dof)
        candidates = [
            k
            for k in np.flatnonzero(images)
            if reference_is_slower(problem, final.values[k]) and final.chi2[k] - chi2 < tolerance
        ]
        if candidates:
            chosen = int(min(candidates, key=lambda k: final.chi2[k]))
            return chosen, _exchange_images(problem, final, final.values[chosen])
    return best, images


def _calibrate_noise(
    problem: FitProblem, evaluation, uncertainty: Uncertainty, sigma_used, outcome: SearchOutcome
):
    """Phase 4b, for an estimated σ: rescale it so that E[χ²] = n_points at the truth.

    The second-difference estimate (`estimate_noise`) sees only the part of the noise that
    changes from one frame to the next; on measured (speckle) maps much of the noise is shared
    by neighbouring frames, and the local σ̂ is 1.5–3× too small. For weighted residuals with
    noise covariance Σ (in units of the current σ), E[‖r(θ_true)‖²] = tr Σ = κ·n and, at the
    least-squares solution, E[‖r(θ̂)‖²] = tr Σ − tr(G⁻¹ JᵀΣJ) = κ·n − tr(G·C), C the
    covariance of θ̂ (G = JᵀJ). So

        κ = (χ²(θ̂) + tr(G·C)) / n,   σ ← σ̂·√κ,

    with C the chosen error estimator's (for the formal one tr(G·C) = s²·p and κ = χ²/dof, the
    usual s²). The covariance is unchanged (the formal one already carries s², the sandwich is
    free of σ); χ², the reduced χ² and every start's χ² are divided by κ. One factor for all
    maps keeps the relative weights, hence the solution.

    **Returns:** `(problem, evaluation, sigma, outcome)` in the rescaled units.
    """
    determined = np.isfinite(uncertainty.stderr_vector)
    gram = np.asarray(evaluation.gram)[np.ix_(determined, determined)]
    covariance = uncertainty.covariance[np.ix_(determined, determined)]
    kappa = (float(evaluation.ssr) + float(np.sum(gram * covariance.T))) / problem.n_points
    if not np.isfinite(kappa) or kappa <= 0:
        return problem, evaluation, sigma_used, outcome
    problem = eqx.tree_at(lambda p: p.weights, problem, problem.weights / np.sqrt(kappa))
    evaluation = evaluation._replace(
        gram=evaluation.gram / kappa,
        gradient=evaluation.gradient / kappa,
        ssr=evaluation.ssr / kappa,
        scaling_sums=evaluation.scaling_sums / kappa,
    )
    rescale = lambda solved: None if solved is None else solved._replace(chi2=solved.chi2 / kappa)  # noqa: E731
    outcome = SearchOutcome(rescale(outcome.final), rescale(outcome.screening))
    return problem, evaluation, np.asarray(sigma_used) * np.sqrt(kappa), outcome


def _solution(problem: FitProblem, x: np.ndarray, noise: str, errors: AbstractErrors):
    """Phase 4: the evaluation at x, its uncertainty (the chosen estimator's and the formal
    one), reduced χ² and degrees of freedom."""
    evaluation = evaluate_at(problem, jnp.asarray(x))
    dof = max(problem.n_points - problem.n_parameters, 1)
    reduced = float(evaluation.ssr) / dof
    residual_maps = np.asarray(problem.weights) * (
        np.asarray(evaluation.maps) - np.asarray(problem.data)
    )
    uncertainty, formal = solution_uncertainty(
        problem,
        jnp.asarray(x),
        evaluation.gram,
        reduced if noise == "estimated" else 1.0,
        errors,
        residual_maps=residual_maps,
    )
    return evaluation, uncertainty, formal, reduced, dof


def _aliasing_ratio(
    speed: float, phi0: float, data: XPCSData, bins: BinGeometry | None = None
) -> np.ndarray:
    """q·|cos(φ + φ0)|·max|v|·dt / π per map (> 1: the phase advances by more than π a frame).

    With the ROI model (`bins`), q·|cos(φ + φ0)| is the largest over the bin's nodes: the
    fringes of the bin's outer pixels alias first.
    """
    if bins is None:
        wave = np.asarray(data.q) * np.abs(np.cos(np.deg2rad(np.asarray(data.phi) + phi0)))
    else:
        node_wave = np.asarray(bins.q_nodes) * np.abs(
            np.cos(np.deg2rad(np.asarray(bins.phi_nodes) + phi0))
        )
        wave = np.where(np.asarray(bins.weights) != 0, node_wave, 0.0).max(axis=1)
    return wave * speed * float(data.dt) / np.pi


def _difference_noise(
    problem: FitProblem, x, maps, rivals: np.ndarray, values: np.ndarray, errors: AbstractErrors
) -> np.ndarray:
    """Per start, the sd of its χ² difference from the solution x under the fit's noise model:
    2·√Var(Σ d ε) with d = w ⊙ (model at the start's solution − model at x)
    (`AbstractErrors.difference_variance`); NaN where `rivals` is False.

    Whether another minimum competes is a question about this difference, not about χ²'s own
    spread √(2·dof): under independent noise a rival at Δχ² ≫ 2√Δχ² is excluded by the data
    however many points there are, and under correlated (speckle) noise the same Δχ² can be
    well within the noise. One model pass per rival, by the fit's own compiled pass
    (`evaluate_at`: a program for the model alone would be compiled for this use only).
    """
    weights = np.asarray(problem.weights)
    residual = weights * (np.asarray(maps) - np.asarray(problem.data))
    noise = np.full(len(values), np.nan)
    for k in np.flatnonzero(rivals):
        rival_maps = np.asarray(evaluate_at(problem, jnp.asarray(values[k])).maps)
        difference = weights * (rival_maps - np.asarray(maps))
        noise[k] = 2.0 * np.sqrt(errors.difference_variance(problem, x, difference, residual))
    return noise


def _report(
    problem, data, x, uncertainty: Uncertainty, evaluation, final, best, images, noise, errors
):
    """Phase 5: the quality report at the solution; `images` marks fits that are the same
    solution in the other labelling (no rivals)."""
    terms = uncertainty.terms
    dof = max(problem.n_points - problem.n_parameters, 1)
    reduced = float(evaluation.ssr) / dof
    start_values = final.values.copy()
    start_values[best] = x
    # Only converged fits are solutions; a start stopped early (e.g. by a screening budget)
    # is no rival.
    start_chi2 = np.where((final.codes == SUCCESSFUL) & ~images, final.chi2, np.nan)
    start_chi2[best] = float(evaluation.ssr)
    rivals = np.isfinite(start_chi2) & (np.arange(len(start_chi2)) != best)
    chi2_noise = _difference_noise(problem, x, evaluation.maps, rivals, start_values, errors)
    return build_quality_report(
        names=problem.names,
        values=np.asarray(x),
        stderr=uncertainty.stderr_vector,
        correlation=uncertainty.correlation,
        at_bound=np.asarray(terms["at_bound"]),
        reduced_chi2=reduced,
        singular=uncertainty.singular,
        aliasing_ratio=_aliasing_ratio(
            float(terms["speed"]), float(terms["model"].phi0), data, problem.bins
        ),
        phi=np.asarray(data.phi),
        start_chi2=start_chi2,
        start_values=np.array([canonical(problem, v) for v in start_values]),
        best_index=best,
        n_physics=problem.n_free_physics,
        dof=dof,
        chi2_noise=chi2_noise,
        noise_known=noise != "estimated",
        roi=problem.bins is not None,
        bin_widths=bin_widths(data.bins),
        periods=np.asarray(problem.transform.periods()),
        twin=exact_two_angle_twin(problem, terms["model"]),
    )


def fit_nlsq(
    model: HeterodyneModel,
    data: XPCSData,
    *,
    fixed: Iterable[str] = (),
    bounds: Mapping[str, tuple[float | int, float | int]] | None = None,
    scaling: str = "auto",
    fourier_order: int | None = None,
    contrast=None,
    offset=None,
    sigma=None,
    starts: int | str | AbstractStarts = "auto",
    errors: str | AbstractErrors = "frame-clustered",
    global_search: bool = False,
    global_evaluations: int = 2000,
    seed: int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-4,
    max_steps: int = 256,
    progress: bool | Callable[[int, float], None] = False,
    roi: bool | None = None,
    throw: bool = False,
) -> NLSQResult:
    """Fits `model` to every map of `data` jointly by Levenberg–Marquardt.

    Physics parameters are shared by all maps; contrast and offset follow the `scaling` mode.
    The objective is χ² = Σ_a Σ_{(i,j) used} ((offset_a + contrast_a g_a(t_i, t_j) − c2_a)/σ_a)²
    over the pairs t1 < t2 (plus the diagonal only when `data.diagonal == "none"`), so the
    same entries count in the residuals, χ² and degrees of freedom.

    Bounds are enforced by smooth transforms (no parameter ever leaves its box). The solver is
    `optimistix.LevenbergMarquardt` on an exact compressed residual (`_compressed`), with JᵀJ
    accumulated map by map, so memory stays at one map's Jacobian. Local fits and polishes run
    over the physics alone: c2 is linear in the contrast/offset coefficients, so for every
    physics they are set to their best values (a small bounded linear least-squares solve) and
    LM sees the profiled χ² (variable projection, `_profile`). The minimum is the same as over
    all parameters; the ridge between every map's contrast and the physics is gone (many-map
    files converge in a fraction of the steps). The screening of the start strategies runs LM
    over the whole fit vector (`_strategies.joint`).

    **The start strategy** (`starts`, a Module as optimistix takes a solver; see
    `heterojax.AbstractStarts`):

    - `"auto"` (default, `AutoStarts()`): starts read off the data (rates at several ages from
      the one-time cuts, speed and φ0 from the fringes, the fraction from their amplitude), the
      exchanged labelling and the α_ref ↔ α_sample trade-off around them, and a Latin hypercube;
      all screened to convergence on a coarse sub-grid of frames, every competitive basin
      polished on the full data. Use it whenever the start is a guess.
    - `1` (`LocalStart()`): one local fit from `model`, for refits from a close start.
    - `N > 1` (`MultiStart(N)`): the start, its velocity-anchored and exchanged images and a
      Latin hypercube, N starts screened for a few steps, the best four to convergence.
    - any `AbstractStarts` instance, e.g. `AutoStarts(random_starts=40)` or your own.
    - `global_search=True` adds a local fit from the best point of a CMA-ES search over all
      free parameters (`global_evaluations` χ² evaluations).

    The solution is reported in the canonical form of its exact symmetries (`_symmetry`):
    φ0 ∈ [−90°, 90°) (one period of c2, fitted as an angle across its wrap: `BoxTransform`),
    v0 ≥ 0 by the bounds, and at constant fraction the slower component as the reference.
    When local fits end in different basins with similar χ², the solution sits on the
    α_ref ↔ α_sample ridge, or a bound stopped a power law on the ridge of its prefactor and
    exponent, the quality report says so and `quality.ok` is False.

    **Arguments:**

    - `model`: the start; fixed parameters keep its values. Any `HeterodyneModel`, including
      user-written laws.
    - `data`: an `XPCSData`.
    - `fixed`: names to hold fixed (physics names, `"contrast"`, `"offset"`).
    - `bounds`: name → (lower, upper) overrides (`heterojax.PARAMETERS` gives the defaults).
    - `scaling`: `"auto"`, `"individual"`, `"constant"` or `"fourier"` (see `_scaling`).
    - `fourier_order`: the order K for `"fourier"` (default 2).
    - `contrast`, `offset`: start values (scalar or per map). The local fits profile the
        scaling out (above), so these only matter for coefficients the data do not determine;
        default: the far-lag plateau / near-diagonal estimate, clipped into the bounds.
    - `sigma`: σ per entry or per map; default `data.sigma`, else estimated: the maps'
      second differences set the relative σ of the maps, rescaled at the solution so that
      E[χ²] = n_points at the truth (`_calibrate_noise`).
    - `errors`: the error estimator, a name or an `AbstractErrors` Module:
        `"frame-clustered"` (default; `FrameClusteredErrors`: the scores clustered by blocks
        of frames, for noise that neighbouring frames share); `"speckle"` (`SpeckleErrors`:
        a sandwich whose middle term is the speckle model's own covariance of the c2 noise,
        simulated at the fit; correlated over the whole map where a reference is static;
        better calibrated on speckle data, see its docstring); `"auto"` (`"speckle"` for maps
        correlated from speckle frames: APS result files, `two_time`, `simulate_speckle`;
        else `"frame-clustered"`) or `"formal"` (s²(JᵀJ)⁻¹, exact only for independent
        noise).
        `result.formal_stderr` always holds the independent-noise errors.
    - `starts`, `global_search`, `global_evaluations`, `seed`: the start strategy (above);
        the same `seed` gives the same starts.
    - `rtol`, `atol`, `max_steps`: solver tolerances (on the fit coordinates, which are scaled
        to unit curvature at the start, and on the compressed residual) and the step limit.
    - `progress`: `True` prints the LM step count and χ² to stderr (at most once a second);
        a callable `(step, chi2) -> None` is called at every step instead (the CLI drives its
        progress bar with it). The steps are driven from Python (`_stepping`), so progress adds
        no host callback to any compiled program: all of them can be kept in JAX's persistent
        compilation cache (`heterojax.enable_compilation_cache`) either way.
    - `roi`: the model of each map's detector bin. `None` (default): the bin average (ROI
        model, `BinGeometry`) when `data.bins` is present, else the bin centre; `False`: the
        bin-centre model (for comparison); `True`: the ROI model, an error without `data.bins`.
    - `throw`: raise `RuntimeError` if the solver fails, instead of reporting it in the result.

    **Returns:** an `NLSQResult`.
    """
    began = time.perf_counter()
    _check_inputs(model, data)
    strategy = resolve_starts(starts)
    error_strategy = resolve_errors(errors, data.metadata)
    problem, x0, sigma_used, noise = _build(
        model,
        data,
        fixed=fixed,
        bounds=bounds,
        scaling=scaling,
        fourier_order=fourier_order,
        contrast=contrast,
        offset=offset,
        sigma=sigma,
        roi=roi,
    )
    with listening(progress) as report:
        solve = LocalSolver(
            rtol=float(rtol),
            atol=float(atol),
            max_steps=int(max_steps),
            progress=report,
            scale_starts=contrast is None and offset is None,
        )
        outcome = _search(
            strategy,
            problem,
            data,
            x0,
            solve,
            seed=int(seed),
            global_evaluations=int(global_evaluations) if global_search else None,
        )
    best, x = _choose(problem, outcome.final)
    evaluation, uncertainty, formal, reduced, dof = _solution(problem, x, noise, error_strategy)
    if noise == "estimated":
        problem, evaluation, sigma_used, outcome = _calibrate_noise(
            problem, evaluation, uncertainty, sigma_used, outcome
        )
        reduced = float(evaluation.ssr) / dof
    final = outcome.final
    folded, images = _fold_exchange(
        problem, final, best, x, uncertainty.stderr_vector, float(evaluation.ssr), dof
    )
    if folded != best:
        best, x = folded, canonical(problem, final.values[folded])
        evaluation, uncertainty, formal, reduced, dof = _solution(problem, x, noise, error_strategy)
    success = bool(final.codes[best] == SUCCESSFUL and np.isfinite(final.chi2[best]))
    message = result_message(int(final.codes[best]))
    if throw and not success:
        raise RuntimeError(f"fit_nlsq failed: {message}")
    chi2 = float(evaluation.ssr)
    quality = _report(
        problem, data, x, uncertainty, evaluation, final, best, images, noise, error_strategy
    )
    terms = uncertainty.terms
    lower, upper = np.asarray(problem.transform.lower), np.asarray(problem.transform.upper)
    return NLSQResult(
        model=terms["model"],
        contrast=terms["contrast"],
        offset=terms["offset"],
        names=problem.names,
        values=np.asarray(x),
        stderr=uncertainty.stderr,
        formal_stderr=formal.stderr,
        formal_covariance=formal.covariance,
        errors=type(error_strategy).__name__,
        covariance=uncertainty.covariance,
        correlation=uncertainty.correlation,
        chi2=chi2,
        reduced_chi2=reduced,
        dof=dof,
        n_points=problem.n_points,
        success=success,
        message=message,
        n_steps=int(final.steps[best]),
        wall_time=time.perf_counter() - began,
        fitted_c2=evaluation.maps,
        sigma=np.sqrt(np.mean(np.asarray(sigma_used) ** 2, axis=(1, 2))),
        noise=noise,
        scaling=problem.scaling_mode,
        diagonal=data.diagonal,
        singular=uncertainty.singular,
        quality=quality,
        starts=StartsSummary(
            chi2=np.where(np.arange(len(final.chi2)) == best, chi2, final.chi2),
            values=final.values,
            n_steps=final.steps,
            success=final.codes == SUCCESSFUL,
            best=best,
            screening_chi2=None if outcome.screening is None else outcome.screening.chi2,
            strategy=type(strategy).__name__,
        ),
        bounds={n: (float(lo), float(hi)) for n, lo, hi in zip(problem.names, lower, upper)},
        metadata=dict(data.metadata),
        bins=problem.bins,
        model_description=describe_model(problem.bins),
    )
