"""Joint nonlinear least squares over all maps with optimistix Levenberg–Marquardt."""

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from .._data._xpcs_data import XPCSData
from .._model._bins import BinGeometry
from .._model._heterodyne import HeterodyneModel
from ._compressed import NULL_EIGENVALUE_FRACTION, compressed_residual, coordinate_scale
from ._nlsq_result import NLSQResult, StartsSummary
from ._problem import FitProblem, best_scaling, build_problem, evaluate_at
from ._quality import build_quality_report
from ._roi import bin_widths, describe_model, fit_bins
from ._scaling import estimate_contrast_offset, estimate_velocity, resolve_scaling
from ._starts import pulled_inside, start_design, swapped_model
from ._transforms import BoxTransform


# The solver's coordinates z are scaled so that the diagonal of JᵀJ starts at 1/_INITIAL_STEP²:
# LM's initial damping λ = 1 is then 1 % of the curvature (close to a Gauss–Newton step), and the
# trust region grows by _WIDENING after every very successful step (optimistix's default 3.5).
# Together they halve the steps of local fits in our tests (26 → 13 on the 3 × 500² benchmark)
# without losing any recovery case of the test suite.
_INITIAL_STEP = 10.0
_WIDENING = 10.0


@eqx.filter_jit
def _to_unconstrained(transform: BoxTransform, x):
    return transform.to_unconstrained(x)


@eqx.filter_jit
def _to_bounded(transform: BoxTransform, theta):
    """x(θ) and dx/dθ (rows of θ or one vector)."""
    return transform.to_bounded(theta), transform.derivative(theta)


# Listeners of the LM steps while a fit with `progress` runs: callables (step, χ²) -> None.
_STEP_LISTENERS: list[Callable[..., Any]] = []


def _on_step(step, loss) -> None:
    step, chi2 = int(np.max(step)), float(2 * np.min(loss))
    for listener in _STEP_LISTENERS:
        listener(step, chi2)


def _report_step(**fields) -> None:
    """An optimistix `verbose` callable: hands the step count and the loss of the last accepted
    step to the host (`_on_step`). Compiled in only when progress is asked for (a program with
    host callbacks cannot be stored in JAX's persistent compilation cache)."""
    jax.debug.callback(_on_step, fields["num_steps"][1], fields["loss_last_accepted_step"][1])


@contextlib.contextmanager
def _listening(progress: Any) -> Iterator[bool]:
    """Registers the progress listener of `fit_nlsq` for the duration of the fit."""
    if not progress:
        yield False
        return
    began, last = time.perf_counter(), [-1.0]

    def print_step(step: int, chi2: float) -> None:
        now = time.perf_counter() - began
        if now - last[0] >= 1.0:
            last[0] = now
            print(
                f"[heterojax.fit_nlsq] step {step:4d}   χ² = {chi2:.6g}   {now:6.1f} s",
                file=sys.stderr,
                flush=True,
            )

    listener: Callable[..., Any] = progress if callable(progress) else print_step
    _STEP_LISTENERS.append(listener)
    try:
        yield True
    finally:
        _STEP_LISTENERS.remove(listener)


@eqx.filter_jit
def _solve_starts(
    problem: FitProblem,
    thetas,
    z_scales,
    rtol: float,
    atol: float,
    max_steps: int,
    progress: bool = False,
):
    """LM from every start (rows of `thetas`) in one compiled program, vmapped over starts.

    Each start is solved in coordinates z with θ = z ⊙ s, s = `coordinate_scale` at the start,
    so that the solver's initial damping λ = 1 is comparable with the curvature of every
    parameter. The trust region widens when at least half of the predicted reduction is
    achieved (optimistix's default asks for 99 %, which keeps LM crawling along the strongly
    correlated valleys of this model: ~3× more steps in our tests).

    **Returns:** per start θ, the result code, the number of steps and ‖ρ‖² at θ (χ² plus the
    saturation penalty, from the solver's last accepted residual).
    """
    solver = optx.LevenbergMarquardt(
        rtol=rtol, atol=atol, verbose=_report_step if progress else False
    )
    search = optx.ClassicalTrustRegion(high_cutoff=0.5, high_constant=_WIDENING)
    solver = eqx.tree_at(lambda s: s.search, solver, search)
    transform = problem.transform

    def one(theta, z_scale):
        solution = optx.least_squares(
            compressed_residual,
            solver,
            theta / z_scale,
            args=(problem, transform, z_scale),
            max_steps=max_steps,
            throw=False,
        )
        objective = jnp.sum(solution.state.f_info.residual**2)
        return (
            solution.value * z_scale,
            solution.result._value,
            solution.stats["num_steps"],
            objective,
        )

    if thetas.shape[0] == 1:  # one start: no batch axis (a smaller program, compiled faster)
        return tuple(a[None] for a in one(thetas[0], z_scales[0]))
    return jax.vmap(one)(thetas, z_scales)


def _sum_of_squares(problem: FitProblem, theta, *, penalty: bool = False):
    x = problem.transform.to_bounded(theta)
    total = jnp.sum(problem.residual_maps(x) ** 2)
    if penalty and problem.free_physics:
        total = total + jnp.sum(problem.saturation_penalty(problem.split(x)[0]) ** 2)
    return total


@eqx.filter_jit
def _population_chi2(problem: FitProblem, thetas):
    return jax.lax.map(lambda theta: _sum_of_squares(problem, theta, penalty=True), thetas)


@eqx.filter_jit
def _solution_terms(problem: FitProblem, x, gram):
    """Everything the result needs at the solution x besides `evaluate_at`, in one program.

    The covariance terms: with the Jacobi scaling S = diag(G)^{−1/2}, the pseudo-inverse of
    S G S (lineax SVD solves, singular values below `NULL_EIGENVALUE_FRACTION` of the largest
    dropped), S, and the eigen-decomposition of S G S (to flag undetermined directions). Also
    the fitted model, contrast and offset per map, max |v(t)| on the grid (aliasing check) and
    which parameters sit at a bound.
    """
    diagonal = jnp.diagonal(gram)
    scale = jnp.where(diagonal > 0, 1 / jnp.sqrt(jnp.where(diagonal > 0, diagonal, 1.0)), 0.0)
    scaled = scale[:, None] * gram * scale[None, :]
    operator = lx.MatrixLinearOperator(scaled, lx.symmetric_tag)
    solver = lx.SVD(rcond=NULL_EIGENVALUE_FRACTION)
    identity = jnp.eye(x.shape[0], dtype=x.dtype)
    # throw=False: no error callback, so that this program can be kept in the compilation cache.
    inverse = jax.vmap(lambda e: lx.linear_solve(operator, e, solver, throw=False).value)(identity)
    eigenvalues, vectors = jnp.linalg.eigh(scaled)
    model, contrast, offset = problem.unpack(x)
    speed = jnp.max(jnp.abs(model.velocity(problem.t)))
    return {
        "inverse": inverse,
        "scale": scale,
        "eigenvalues": eigenvalues,
        "vectors": vectors,
        "model": model,
        "contrast": contrast,
        "offset": offset,
        "speed": speed,
        "at_bound": problem.transform.at_bound(x),
    }


def _coordinate_scales(problem: FitProblem, thetas: np.ndarray) -> np.ndarray:
    """`coordinate_scale` at every row of θ (one `evaluate_at` call each)."""
    xs, derivatives = _to_bounded(problem.transform, jnp.asarray(np.atleast_2d(thetas)))
    return np.array(
        [
            _INITIAL_STEP * coordinate_scale(evaluate_at(problem, x).gram, derivative)
            for x, derivative in zip(xs, derivatives)
        ]
    )


def _message(code: int) -> str:
    """The optimistix message of a result code ("" for success)."""
    for name, item in optx.RESULTS._name_to_item.items():
        if int(item._value) == int(code):
            return optx.RESULTS[item] or ("" if name == "successful" else name)
    return f"solver result code {code}"


def _global_search(problem: FitProblem, theta0: np.ndarray, evaluations: int, seed: int):
    """CMA-ES (pycma) in unconstrained coordinates; each generation is one vmapped χ² call."""
    import cma

    options = {
        "seed": seed + 1,
        "maxfevals": evaluations,
        "verbose": -9,
        "tolfun": 1e-10,
        "CMA_diagonal": False,
    }
    strategy = cma.CMAEvolutionStrategy(np.asarray(theta0, float), 1.0, options)
    while not strategy.stop():
        population = np.asarray(strategy.ask())
        losses = np.asarray(_population_chi2(problem, jnp.asarray(population)))
        strategy.tell(list(population), list(np.where(np.isfinite(losses), losses, 1e300)))
    return np.asarray(strategy.result.xbest)


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


def _multi_start(problem, thetas, rtol, atol, max_steps, screening_steps, progress, survivors=4):
    """Screens every start with a short budget, then runs the best few to convergence.

    All starts run `screening_steps` LM steps in one vmapped program; the `survivors` with the
    lowest objective continue from where they stopped (with coordinate scales renewed there)
    for up to `max_steps` more. Returns per-start (θ, result code, steps, objective).
    """
    thetas = np.asarray(thetas)
    scales = _coordinate_scales(problem, thetas)
    if thetas.shape[0] <= survivors:
        solved = _solve_starts(
            problem, jnp.asarray(thetas), jnp.asarray(scales), rtol, atol, max_steps, progress
        )
        return tuple(np.array(a) for a in solved)
    screened = _solve_starts(
        problem, jnp.asarray(thetas), jnp.asarray(scales), rtol, atol, screening_steps, progress
    )
    values, codes, steps, objective = (np.array(a) for a in screened)
    best = np.argsort(np.where(np.isfinite(objective), objective, np.inf))[:survivors]
    scales = _coordinate_scales(problem, values[best])
    more = _solve_starts(
        problem, jnp.asarray(values[best]), jnp.asarray(scales), rtol, atol, max_steps, progress
    )
    values[best], codes[best] = np.asarray(more[0]), np.asarray(more[1])
    steps[best] += np.asarray(more[2])
    objective[best] = np.asarray(more[3])
    return values, codes, steps, objective


def _start_design(model, data, problem: FitProblem, x0: np.ndarray, n_starts: int, seed: int):
    """The rows of starting fit vectors (see `_starts` for the design)."""
    lower, upper = np.asarray(problem.transform.lower), np.asarray(problem.transform.upper)
    names = problem.names
    if n_starts == 1:
        return pulled_inside(names, x0[None], lower, upper)
    n_phys = problem.n_free_physics

    def fit_vector(candidate: HeterodyneModel) -> np.ndarray:
        physics = np.asarray(candidate.to_vector())[list(problem.free_physics)]
        return np.concatenate([physics, x0[n_phys:]])

    anchors, centre = [x0], x0
    speed = estimate_velocity(np.asarray(data.c2), np.asarray(data.q), float(data.dt))
    anchor_model = model
    if speed is not None and "v0" in names:
        upper_v0 = upper[names.index("v0")]
        changes = {"v0": min(speed, upper_v0)}
        if "beta" in names:
            changes["beta"] = 0.0
        anchor_model = model.replace(**changes)
        centre = fit_vector(anchor_model)
        anchors.append(centre)
    swapped = swapped_model(anchor_model, np.asarray(data.t))
    if swapped is not None:
        anchors.append(fit_vector(swapped))
    rng = np.random.default_rng(seed)
    design = start_design(names, anchors[:n_starts], centre, lower, upper, n_starts, rng)
    return pulled_inside(names, design, lower, upper)


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
    starts: int = 1,
    global_search: bool = False,
    global_evaluations: int = 2000,
    seed: int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-4,
    max_steps: int = 256,
    screening_steps: int = 30,
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
    accumulated map by map, so memory stays at one map's Jacobian.

    **Which start strategy when:**

    - `starts=1` (default): a local fit from `model`; enough when the start is close (e.g. a
      previous fit, or known physics).
    - `starts=N` (N ≈ 8–32): the start, its reference↔sample swapped image and a Latin hypercube
      of the rest (see `_starts`), all solved in one vmapped program; the best χ² is kept and
      the quality report warns when another start found a different solution with similar χ².
      Use it whenever the start is a guess — the likelihood has false minima.
    - `global_search=True`: CMA-ES over all free parameters (unconstrained coordinates) before
      the local fits; for multi-scale problems where no sensible start is known. Costs
      `global_evaluations` χ² evaluations.

    **Arguments:**

    - `model`: the start; fixed parameters keep its values. Any `HeterodyneModel`, including
      user-written laws.
    - `data`: an `XPCSData`.
    - `fixed`: names to hold fixed (physics names, `"contrast"`, `"offset"`).
    - `bounds`: name → (lower, upper) overrides (`heterojax.PARAMETERS` gives the defaults).
    - `scaling`: `"auto"`, `"individual"`, `"constant"` or `"fourier"` (see `_scaling`).
    - `fourier_order`: the order K for `"fourier"` (default 2).
    - `contrast`, `offset`: start values (scalar or per map); default: for every start, the
        values that minimise χ² for its physics (a linear least-squares solve), with the
        far-lag plateau / near-diagonal estimate as the fallback bounds-clipped guess.
    - `sigma`: σ per entry or per map; default `data.sigma`, else estimated from the maps and
      the covariance scaled by the reduced χ².
    - `starts`, `global_search`, `global_evaluations`, `seed`: the start strategy (above).
    - `rtol`, `atol`, `max_steps`: solver tolerances (on the fit coordinates, which are scaled
        to unit curvature at the start, and on the compressed residual) and the step limit.
    - `screening_steps`: with more than 4 starts, every start first gets this many steps and
        only the 4 best continue to convergence.
    - `progress`: `True` prints the LM step count and χ² to stderr (at most once a second);
        a callable `(step, chi2) -> None` is called at every step instead (the CLI drives its
        progress bar with it). Off by default: a program with host callbacks cannot be kept in
        JAX's persistent compilation cache (`heterojax.enable_compilation_cache`).
    - `roi`: the model of each map's detector bin. `None` (default): the bin average (ROI
        model, `BinGeometry`) when `data.bins` is present, else the bin centre; `False`: the
        bin-centre model (for comparison); `True`: the ROI model, an error without `data.bins`.
    - `throw`: raise `RuntimeError` if the solver fails, instead of reporting it in the result.

    **Returns:** an `NLSQResult`.
    """
    began = time.perf_counter()
    if not isinstance(model, HeterodyneModel):
        raise TypeError(f"`model` must be a heterojax.HeterodyneModel; got {type(model).__name__}.")
    if not isinstance(data, XPCSData):
        raise TypeError(f"`data` must be a heterojax.XPCSData; got {type(data).__name__}.")
    if int(starts) < 1:
        raise ValueError(f"`starts` must be a positive integer; got {starts!r}.")
    phi = np.asarray(data.phi)
    resolved = resolve_scaling(scaling, phi, order=fourier_order)
    mask = np.asarray(data.mask)
    estimated_contrast, estimated_offset = estimate_contrast_offset(np.asarray(data.c2), mask)
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
    transform = problem.transform
    lower, upper = np.asarray(transform.lower), np.asarray(transform.upper)

    design = _start_design(model, data, problem, np.asarray(x0), int(starts), seed)
    if contrast is None and offset is None and problem.n_parameters > problem.n_free_physics:
        n_phys = problem.n_free_physics
        design = np.array(
            [
                np.concatenate(
                    [row[:n_phys], best_scaling(problem, evaluate_at(problem, row).scaling_sums)]
                )
                for row in design
            ]
        )
    thetas = np.asarray(_to_unconstrained(transform, jnp.asarray(design)))
    if global_search:
        best_global = _global_search(problem, thetas[0], int(global_evaluations), seed)
        thetas = np.concatenate([best_global[None], thetas])[: max(int(starts), 1) + 1]

    with _listening(progress) as report:
        values, codes, steps, chi2 = _multi_start(
            problem, thetas, float(rtol), float(atol), int(max_steps), int(screening_steps), report
        )
    successful = codes == int(optx.RESULTS.successful._value)
    finite = np.isfinite(chi2)
    ranking = np.where(finite, chi2, np.inf) + np.where(successful, 0.0, 1e-9 * np.abs(chi2))
    best = int(np.argmin(ranking))
    solution_values = np.asarray(_to_bounded(transform, jnp.asarray(values))[0])
    x = jnp.asarray(solution_values[best])
    success = bool(successful[best] and finite[best])
    message = _message(int(codes[best]))
    if throw and not success:
        raise RuntimeError(f"fit_nlsq failed: {message}")

    evaluation = evaluate_at(problem, x)
    terms = _solution_terms(problem, x, evaluation.gram)
    inverse, scale = np.asarray(terms["inverse"]), np.asarray(terms["scale"])
    eigenvalues, vectors = np.asarray(terms["eigenvalues"]), np.asarray(terms["vectors"])
    ssr = evaluation.ssr
    chi2[best] = float(ssr)
    n_points = int(np.count_nonzero(np.asarray(problem.weights)))
    n_free = problem.n_parameters
    dof = max(n_points - n_free, 1)
    chi2_best = float(ssr)
    reduced = chi2_best / dof
    variance_scale = reduced if noise == "estimated" else 1.0
    covariance = variance_scale * scale[:, None] * inverse * scale[None, :]
    null = eigenvalues <= NULL_EIGENVALUE_FRACTION * np.max(eigenvalues)
    singular = bool(np.any(null)) or bool(np.any(scale == 0))
    undetermined = (scale == 0) | np.any(np.abs(vectors[:, null]) > 1e-3, axis=1)
    variances = np.where(undetermined, np.inf, np.diagonal(covariance))
    stderr_vector = np.sqrt(np.maximum(variances, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = covariance / np.outer(stderr_vector, stderr_vector)
    correlation = np.where(
        np.outer(undetermined, undetermined) | np.isinf(correlation), np.nan, correlation
    )
    np.fill_diagonal(correlation, np.where(undetermined, np.nan, 1.0))

    fitted_model = terms["model"]
    fitted_contrast, fitted_offset = terms["contrast"], terms["offset"]
    stderr: dict[str, Any] = {name: float(e) for name, e in zip(problem.names, stderr_vector)}
    n_phys, n_con = problem.n_free_physics, problem.n_contrast
    for kind, basis, block in (
        ("contrast", np.asarray(problem.contrast_basis), slice(n_phys, n_phys + n_con)),
        ("offset", np.asarray(problem.offset_basis), slice(n_phys + n_con, n_free)),
    ):
        if basis.shape[1] == 0:
            continue
        sub = covariance[block, block]
        per_map = np.einsum("ak,kl,al->a", basis, sub, basis)
        if np.any(undetermined[block]):
            per_map = np.where(np.abs(basis[:, undetermined[block]]).sum(1) > 0, np.inf, per_map)
        stderr[kind] = np.sqrt(np.maximum(per_map, 0.0))

    at_bound = np.asarray(terms["at_bound"])
    quality = build_quality_report(
        names=problem.names,
        values=np.asarray(x),
        stderr=stderr_vector,
        correlation=correlation,
        at_bound=at_bound,
        reduced_chi2=reduced,
        singular=singular,
        aliasing_ratio=_aliasing_ratio(
            float(terms["speed"]), float(fitted_model.phi0), data, problem.bins
        ),
        phi=phi,
        start_chi2=chi2,
        start_values=solution_values,
        best_index=best,
        n_physics=n_phys,
        roi=problem.bins is not None,
        bin_widths=bin_widths(data.bins),
    )
    fitted_c2 = evaluation.maps
    sigma_per_map = np.sqrt(np.mean(np.asarray(sigma_used) ** 2, axis=(1, 2)))
    return NLSQResult(
        model=fitted_model,
        contrast=fitted_contrast,
        offset=fitted_offset,
        names=problem.names,
        values=np.asarray(x),
        stderr=stderr,
        covariance=covariance,
        correlation=correlation,
        chi2=chi2_best,
        reduced_chi2=reduced,
        dof=dof,
        n_points=n_points,
        success=success,
        message=message,
        n_steps=int(steps[best]),
        wall_time=time.perf_counter() - began,
        fitted_c2=fitted_c2,
        sigma=sigma_per_map,
        noise=noise,
        scaling=problem.scaling_mode,
        diagonal=data.diagonal,
        singular=singular,
        quality=quality,
        starts=StartsSummary(
            chi2=chi2, values=solution_values, n_steps=steps, success=successful, best=best
        ),
        bounds={n: (float(lo), float(hi)) for n, lo, hi in zip(problem.names, lower, upper)},
        metadata=dict(data.metadata),
        bins=problem.bins,
        model_description=describe_model(problem.bins),
    )
