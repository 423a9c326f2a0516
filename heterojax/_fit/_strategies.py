"""Start strategies: where the local fits of `fit_nlsq` start, and which run to convergence.

A strategy is a Module passed to `fit_nlsq(..., starts=...)`, as optimistix takes a solver:

- `LocalStart()`: one local fit from the given model (`starts=1`); for refits from a close start.
- `MultiStart(n)`: the start, its velocity-anchored and exchanged images and a Latin hypercube
  (`_starts`), screened for a few steps on the full data, the best four run to convergence
  (`starts=n`).
- `AutoStarts()` (the default, `starts="auto"`): starts read off the data (`_estimate`) and the
  known degeneracies around them, screened *to convergence* on a coarse sub-grid of frames, then
  every distinct basin that could still win polished on the full data.

Write your own by subclassing `AbstractStarts` and implementing `search`.
"""

import abc
import math
import threading
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._data._xpcs_data import XPCSData
from .._model._heterodyne import HeterodyneModel
from .._threads import compile_ahead
from ._estimate import cut_changes, estimate_starts, estimate_velocity, velocity_branches
from ._problem import FitProblem, evaluate_at
from ._profile import profile_of
from ._solve import LocalSolver, Solved
from ._starts import pulled_inside, start_design
from ._symmetry import basin_signature, exchanged


class SearchOutcome(NamedTuple):
    """What a start strategy found: `final`, the local fits on the full data (the best of them
    is the answer); `screening`, where every start of a coarse or short screening ended (or
    None)."""

    final: Solved
    screening: Solved | None = None


class AbstractStarts(eqx.Module):
    """A start strategy (module docstring)."""

    @abc.abstractmethod
    def search(
        self,
        problem: FitProblem,
        data: XPCSData,
        x0: np.ndarray,
        solve: LocalSolver,
        *,
        seed: int,
    ) -> SearchOutcome:
        """Runs local fits with `solve(problem, rows, ...)` from starts of this strategy.

        **Arguments:** the `problem`, the `data` it was built from, the start fit vector `x0`
        (the user's model and contrast/offset), the local solver, and the `seed` that makes any
        random design reproducible.

        **Returns:** a `SearchOutcome`.
        """


# The stages before the final fits (screening, the medium problem) stop a fit once the
# Gauss–Newton step could gain at most this much χ² (in units of the data's scatter about the
# fit, `LocalSolver.decrement_tol`): the Gauss–Newton minimum is then within √1e-3 ≈ 0.03
# standard errors (of the Gauss–Newton curvature, δᵀGδ = bᵀG⁻¹b) in every direction, closer than
# anything a stage decides needs. optimistix's test on the step alone (atol 1e-4 in the scaled
# coordinates) kept fits crawling along flat valleys at < 1e-3 of χ² a step: on the 42-map
# file of `bench_whole_file.py` the best row took 242 steps on the medium problem, within 0.01
# of its final χ² after 16. The final fits keep the solver's own test.
_STAGE_DECREMENT = 1e-3


def staged(solve: LocalSolver) -> LocalSolver:
    """The solver of a stage before the final fits: converged at `_STAGE_DECREMENT`."""
    return eqx.tree_at(lambda s: s.decrement_tol, solve, _STAGE_DECREMENT)


def joint(solve: LocalSolver) -> LocalSolver:
    """The solver for screening starts (`staged`): LM over the whole fit vector, not the
    profiled physics (`LocalSolver.profile_scaling`). From poor starts the joint fit, free to
    move contrast and physics together, reached the right basin in cases where the profiled
    one stalled (recovery suite: a static reference with a growing fraction); near a basin the
    profiled fit converges in far fewer steps (many maps), so the polishes keep it."""
    return eqx.tree_at(lambda s: s.profile_scaling, staged(solve), False)


def _fit_vector(problem: FitProblem, model: HeterodyneModel, x0: np.ndarray) -> np.ndarray:
    """The physics of `model` with the scaling coefficients of x0, as a fit vector."""
    physics = np.asarray(model.to_vector())[list(problem.free_physics)]
    return np.concatenate([physics, np.asarray(x0)[problem.n_free_physics :]])


def _bounds(problem: FitProblem) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(problem.transform.lower), np.asarray(problem.transform.upper)


class LocalStart(AbstractStarts):
    """One local fit from the start (moved off any bound it sits on)."""

    def search(self, problem, data, x0, solve, *, seed):
        lower, upper = _bounds(problem)
        start = pulled_inside(problem.names, x0[None], lower, upper, user_rows=1)
        return SearchOutcome(solve(problem, start))


class MultiStart(AbstractStarts):
    """`n` starts screened for `screening_steps` LM steps on the full data; the `survivors`
    with the lowest χ² continue to convergence (a fit that runs out of steps is continued from
    where it stopped, `resumes` times at most).

    The design (`_starts`): the start; with visible fringes the start with v0 at the data's
    fringe estimate; that anchor's exchanged image; a Latin hypercube around the anchor.
    """

    n: int
    screening_steps: int = 30
    survivors: int = 4
    resumes: int = 2

    def __check_init__(self):
        if int(self.n) < 1:
            raise ValueError(f"`starts` must be a positive integer; got {self.n!r}.")

    def design(self, problem: FitProblem, data: XPCSData, x0: np.ndarray, seed: int):
        lower, upper = _bounds(problem)
        names = problem.names
        model = problem.unpack(jnp.asarray(x0))[0]
        anchors, centre = [x0], x0
        speed = estimate_velocity(np.asarray(data.c2), np.asarray(data.q), float(data.dt))
        if speed is not None and "v0" in names:
            changes = {"v0": min(speed, upper[names.index("v0")])}
            if "beta" in names:
                changes["beta"] = 0.0
            model = model.replace(**changes)
            centre = _fit_vector(problem, model, x0)
            anchors.append(centre)
        swapped = exchanged(model, np.asarray(data.t))
        if swapped is not None:
            anchors.append(_fit_vector(problem, swapped, x0))
        rng = np.random.default_rng(seed)
        design = start_design(names, anchors[: self.n], centre, lower, upper, self.n, rng)
        return pulled_inside(names, design, lower, upper, user_rows=1)

    def search(self, problem, data, x0, solve, *, seed):
        design = self.design(problem, data, x0, seed)
        if design.shape[0] <= self.survivors:
            return SearchOutcome(solve(problem, design))
        screened = joint(solve)(problem, design, max_steps=self.screening_steps)
        best = np.argsort(screened.ranking())[: self.survivors]
        margin = _screen_margin(problem)
        more = solve(problem, screened.values[best], rescale=False, contend_within=margin)
        more = more.resumed(problem, solve, self.resumes, margin)
        final = Solved(*(np.array(a) for a in screened))
        final.values[best], final.codes[best], final.chi2[best] = more.values, more.codes, more.chi2
        final.steps[best] += more.steps
        return SearchOutcome(final, screened)


# Coarse screening keeps the change of the data between neighbouring sub-grid frames (their
# one-time cuts, `_estimate.cut_changes`) within this fraction of each map's contrast: a decay of
# one e-fold, or about half a radian of fringe phase at full amplitude, per sub-grid step.
_COARSE_CHANGE = 0.5
# A screened basin is polished on the full data when its coarse χ² is within this many
# √(2·points) of the best (plus a constant for small problems): basins that close could still
# win once every frame counts.
_SCREEN_MARGIN_SIGMAS = 5.0
_SCREEN_MARGIN_FLOOR = 25.0
# Screened solutions whose predictions (`basin_signature`: log-rates, log-speed and fraction at
# three times) differ by less than this everywhere are one basin.
_SAME_BASIN = 0.05
# A hop wins only if it lowers χ² by more than this fraction of it: the exact twin of a fit (the
# two-angle mirror without a velocity offset) converges to the same χ² within optimiser
# tolerance, and whether it lands a hair below is chance, not a better solution.
_SAME_CHI2 = 1e-8
# The α trade-off: anchors with the exponents moved apart by this much, J at mid-window kept.
_EXPONENT_SHIFT = 0.6
# A slow component at a small share (`_minor_slow`, `_slow_vanishing`): how many times slower
# than the other component it decays, its share of the light in the starts, and the flow
# directions those are tried at (spread over φ0's period).
_MINOR_SLOWDOWN = 10.0
_MINOR_SHARE = 0.15
_MINOR_FLOW_DIRECTIONS = 4


def _moves(problem: FitProblem, x: np.ndarray) -> np.ndarray:
    """Starts one move away from the fit x along the model's near-degeneracies: its other flow
    branches (with a velocity offset, `_estimate.velocity_branches` of |v| at three ages), its
    fraction growing to saturation, decaying from 1 or held steady (`_fraction_shapes`,
    `_steady`), in either labelling with the component the fraction removes made slow
    (`_slow_vanishing`), its free transport exponents moved apart both ways (the α trade-off,
    `_exponent_trades`), and with two angles the other flow direction that fits them
    (`two_angle_mirrors`)."""
    model = problem.unpack(jnp.asarray(x))[0]
    t = np.asarray(problem.t)
    t_mid = float(t[len(t) // 2])
    values = model.to_dict()
    names = problem.names
    models = []
    v_offset = float(values.get("v_offset", 0.0))
    if v_offset != 0.0 and {"v0", "beta"} <= set(names):
        ages = t[0] + (t[-1] - t[0]) * np.array([1.0, 3.0, 5.0]) / 6.0
        speeds = np.abs(np.asarray(model.velocity(jnp.asarray(ages))))
        for v0, beta in velocity_branches(ages, speeds, v_offset):
            models.append(model.replace(v0=v0, beta=beta))
    if "f1" in names:
        models += _fraction_shapes(model, t) + [_steady(model, t_mid, ())]
        models += _slow_vanishing(model, t, t_mid, names)
    models += _exponent_trades(model, t_mid, names)
    if "phi0" in names:
        models += two_angle_mirrors(model, np.asarray(problem.phi), t)
    if not models:
        return np.zeros((0, x.shape[0]))
    lower, upper = _bounds(problem)
    rows = np.array([np.clip(_fit_vector(problem, m, x), lower, upper) for m in models])
    return pulled_inside(names, rows, lower, upper)


def _screen_margin(problem: FitProblem) -> float:
    """How far above the best χ² a fit could still win: 5 √(2·points) + 25."""
    return _SCREEN_MARGIN_SIGMAS * math.sqrt(2 * problem.n_points) + _SCREEN_MARGIN_FLOOR


def _screening_stride(problem: FitProblem, frames: int) -> int:
    """The sub-grid step in frames: about `frames` frames, and no larger than the data allow,
    i.e. the largest k up to n / `frames` for which the data change by at most `_COARSE_CHANGE`
    of their contrast over every step of 1 … k frames (`_estimate.cut_changes`).

    The data decide, not the estimate: on wide sectors and static references the one-time cuts
    also fit a component that has decayed within one frame, whose rate (the estimate's grid
    ceiling) would otherwise force k = 1 on data that change by a tenth of their contrast over
    seven frames (the 42-map file of `bench_whole_file.py`)."""
    n = int(problem.t.shape[0])
    limit = max(1, math.ceil(n / frames))
    if limit == 1:
        return 1
    changes = cut_changes(np.asarray(problem.data), np.asarray(problem.weights) > 0, limit)
    smooth = np.cumprod(changes <= _COARSE_CHANGE).astype(bool)
    return int(max(1, np.count_nonzero(smooth)))


def two_angle_mirrors(model: HeterodyneModel, phi: np.ndarray, t: np.ndarray) -> list:
    """With two distinct angles (modulo 180°), the other φ0 that they cannot tell apart.

    The fringes of angle a see the phase q·cos(φ_a + φ0)·∫v, with cos even: the data fix
    |cos(φ_a + φ0)|·v(t) for a = 1, 2 and no more. With u = φ1 + φ0 and d = φ2 − φ1,
    cos(u + d)/cos u = cos d − sin d · tan u, so tan u' = 2 cot d − tan u gives the same ratio
    with the other sign, and v' = v·|cos u|/|cos u'| the same products. Without a velocity
    offset that is an exact second solution; with one (a flow that reverses) the offset does
    not scale, v' is only approximately a law of the same form, and the mirror is a rival basin
    whose χ² can be far below or above this one's (measured: the recovery suite with φ0 over
    its whole period, a two-angle reversing flow at φ0 = −70° fitted at −5.3°, Δχ² = +964 over
    the truth, reported ok). The moves: φ0', v0 and v_offset scaled by |cos u|/|cos u'|, and
    with a velocity offset also the branches of `velocity_branches` through the scaled speeds
    (v_offset kept, for a fit that holds it fixed)."""
    angles = np.unique(np.round(np.mod(np.asarray(phi, float), 180.0), 9))
    values = model.to_dict()
    if angles.size != 2 or not {"phi0", "v0", "v_offset"} <= set(values):
        return []  # (a custom velocity law: no known way to rescale it)
    first, second = np.deg2rad(angles)
    u = first + np.deg2rad(float(values["phi0"]))
    if abs(math.cos(u)) < 1e-9 or abs(math.sin(second - first)) < 1e-9:
        return []
    mirrored_u = math.atan(2.0 / math.tan(second - first) - math.tan(u))
    cosine = abs(math.cos(mirrored_u))
    if cosine < 1e-9:
        return []
    phi0 = (math.degrees(mirrored_u - first) + 90.0) % 180.0 - 90.0
    scale = abs(math.cos(u)) / cosine
    v0, v_offset = float(values["v0"]), float(values["v_offset"])
    models = [model.replace(phi0=phi0, v0=v0 * scale, v_offset=v_offset * scale)]
    if v_offset != 0.0:
        ages = t[0] + (t[-1] - t[0]) * np.array([1.0, 3.0, 5.0]) / 6.0
        speeds = scale * np.abs(np.asarray(model.velocity(jnp.asarray(ages))))
        models += [
            model.replace(phi0=phi0, v0=branch_v0, beta=beta)
            for branch_v0, beta in velocity_branches(ages, speeds, v_offset)
        ]
    return models


def exact_two_angle_twin(problem: FitProblem, model: HeterodyneModel) -> dict[str, float] | None:
    """The flow of the second solution that two angles leave (`two_angle_mirrors`): φ0, v0
    and a free velocity offset, where the twin is exact (bin-centre model, and v rescalable:
    no velocity offset, or a free one) and φ0 and v0 are free; else None."""
    values = model.to_dict()
    if problem.bins is not None or "phi0" not in problem.names or "v0" not in problem.names:
        return None
    if values.get("v_offset", 0.0) != 0.0 and "v_offset" not in problem.names:
        return None
    mirrors = two_angle_mirrors(model, np.asarray(problem.phi), np.asarray(problem.t))
    if not mirrors:
        return None
    twin = mirrors[0].to_dict()
    flow = ("phi0", "v0") + (("v_offset",) if "v_offset" in problem.names else ())
    return {name: float(twin[name]) for name in flow}


def _exponent_trades(
    model: HeterodyneModel, t_mid: float, names: tuple[str, ...]
) -> list[HeterodyneModel]:
    """The α trade-off: the model with α_ref raised and α_sample lowered by `_EXPONENT_SHIFT`,
    and the reverse, J at t_mid kept (`_with_exponents`). Only exponents fitted together with
    their prefactor move: with an exponent fixed, the move would only rescale the prefactor (a
    factor t_mid^0.6), which is no degeneracy of the fit. None when no exponent is free."""
    signs = {"alpha_ref": 1.0, "alpha_sample": -1.0}
    traded = [e for e, p in (("alpha_ref", "D0_ref"), ("alpha_sample", "D0_sample"))
              if e in names and p in names]  # fmt: skip
    if not traded:
        return []
    return [
        _with_exponents(model, t_mid, {e: sign * signs[e] * _EXPONENT_SHIFT for e in traded})
        for sign in (1.0, -1.0)
    ]


def _with_exponents(model: HeterodyneModel, t_mid: float, shifts: dict[str, float]):
    """The model with exponents shifted and each prefactor rescaled so that J (or v) at t_mid
    is unchanged: D0' = D0 · t_mid^(α − α')."""
    values = model.to_dict()
    specs = {spec.name: spec for spec in model.parameter_specs}
    changes = {}
    for exponent, prefactor in (
        ("alpha_ref", "D0_ref"),
        ("alpha_sample", "D0_sample"),
        ("beta", "v0"),
    ):
        if exponent not in shifts or exponent not in values:
            continue
        old = float(values[exponent])
        new = float(np.clip(old + shifts[exponent], specs[exponent].lower, specs[exponent].upper))
        changes[exponent] = new
        scaled = float(values[prefactor]) * t_mid ** (old - new)
        changes[prefactor] = float(np.clip(scaled, specs[prefactor].lower, specs[prefactor].upper))
    return model.replace(**changes)


def _steady(model: HeterodyneModel, t_mid: float, exponents: tuple[str, ...]):
    """The model without time dependence in `exponents` (each rate or speed kept at t_mid) and
    with the fraction held at its mid-window value (f1 = f3 = 0, f0 = f_s(t_mid))."""
    values = model.to_dict()
    steady = _with_exponents(model, t_mid, {k: -float(values[k]) for k in exponents if k in values})
    if {"f0", "f1"} <= set(values):
        share = float(np.clip(model.fraction(jnp.array([t_mid]))[0], 0.0, 1.0))
        changes = {"f0": share, "f1": 0.0, **({"f3": 0.0} if "f3" in values else {})}
        steady = steady.replace(**changes)
    return steady


def _fraction_shapes(model: HeterodyneModel, t: np.ndarray) -> list[HeterodyneModel]:
    """The model with a sample fraction that grows from 1/4 to saturate (f_s = 1) at mid-window,
    and with one that decays from 1 to 1/4 over the window. A fraction that changes this much
    moves the χ² surface more than any rate does (the reference vanishes, or appears), and the
    one-time cuts read it poorly when the decays are fast."""
    names = set(model.parameter_names)
    if not {"f0", "f1"} <= names:
        return []
    t = np.asarray(t, float)
    window = float(t[-1] - t[0]) or 1.0
    specs = {spec.name: spec for spec in model.parameter_specs}
    origin = float(model.to_dict().get("f2", 0.0))  # f_s = f0·exp(f1·(t − f2)) + f3
    shapes = []
    for start, rate in ((0.25, math.log(4.0) / (0.5 * window)), (1.0, -math.log(4.0) / window)):
        rate = float(np.clip(rate, specs["f1"].lower, specs["f1"].upper))
        f0 = float(
            np.clip(start * math.exp(-rate * (t[0] - origin)), specs["f0"].lower, specs["f0"].upper)
        )
        changes = {"f0": f0, "f1": rate, **({"f3": 0.0} if "f3" in names else {})}
        shapes.append(model.replace(**changes))
    return shapes


def _slow_vanishing(
    model: HeterodyneModel, t: np.ndarray, t_mid: float, names: tuple[str, ...]
) -> list[HeterodyneModel]:
    """The model and its exchanged labelling, each with the fraction shapes of
    `_fraction_shapes` (the sample saturating at mid-window, or decaying from 1), and the
    component that shape removes — the reference as the sample saturates, the sample as it
    decays — made `_MINOR_SLOWDOWN` times slower than the other one at mid-window (`_slowed`).

    A fit can put the dominant decay on the wrong component: with a fraction that varies, the
    labelling matters, and the flow belongs to the sample. Measured on a held-out draw of the
    recovery suite (`bench_recovery.py --seed 37`, case 13: a static reference that the sample
    displaces by mid-window, 4 angles × 190 frames): the best fit carried the sample's decay on
    the reference (χ² 163 702 against the truth's 73 023); of the fraction-shape moves only the
    exchanged labelling with a slow vanishing reference reached the global minimum (73 007.5);
    without the slowing, or unexchanged, they fell onto the fit with the sample alone."""
    if not {"f0", "f1"} <= set(names):
        return []
    models = []
    for labelling in (model, exchanged(model, t)):
        shapes = _fraction_shapes(labelling, t) if labelling is not None else []
        if len(shapes) == 2:
            saturating, decaying = shapes
            models.append(_slowed(saturating, "ref", "sample", t_mid, names))
            models.append(_slowed(decaying, "sample", "ref", t_mid, names))
    return models


def _slowed(
    model: HeterodyneModel, slow: str, other: str, t_mid: float, names: tuple[str, ...]
) -> HeterodyneModel:
    """The model with component `slow` ("ref" or "sample") steady (its exponent at 0 where
    free) at a rate `_MINOR_SLOWDOWN` times below the `other`'s at t_mid; unchanged where its
    prefactor is not free."""
    if f"D0_{slow}" not in names:
        return model
    values = model.to_dict()
    rate = float(model.rates(jnp.array([t_mid]))[f"J_{other}"][0]) / _MINOR_SLOWDOWN
    changes = {f"D0_{slow}": rate - float(values.get(f"D_offset_{slow}", 0.0))}
    if f"alpha_{slow}" in names:
        changes[f"alpha_{slow}"] = 0.0
    return model.replace(**changes)


def _speed_scan(
    estimate: HeterodyneModel, problem: FitProblem, t_mid: float, count: int
) -> list[HeterodyneModel]:
    """`count` copies of the estimate whose speed |v(t_mid)| runs over a log grid from one
    radian of fringe phase over the window to π/2 a frame (at the largest q): the fringe
    frequency makes χ² multimodal in v, and without visible fringes (fast decays, flow
    reversal) the data-driven speed is only a guess."""
    names = {spec.name: spec for spec in estimate.parameter_specs}
    if count < 1 or "v0" not in names or "v0" not in problem.names:
        return []
    t = np.asarray(problem.t)
    q = float(np.max(np.asarray(problem.q)))
    dt = float(np.median(np.diff(t))) if t.shape[0] > 1 else float(t[0])
    window = float(t[-1] - t[0]) or dt
    values = estimate.to_dict()
    beta = float(values.get("beta", 0.0))
    v_offset = float(values.get("v_offset", 0.0))
    spec = names["v0"]
    models = []
    for speed in np.geomspace(1.0 / (q * window), 0.5 * np.pi / (q * dt), count):
        v0 = (speed - v_offset) / t_mid**beta
        if v0 <= 0 and v_offset != 0:
            v0 = (-speed - v_offset) / t_mid**beta
        models.append(estimate.replace(v0=float(np.clip(v0, spec.lower, spec.upper))))
    return models


def _minor_slow(
    estimate: HeterodyneModel, problem: FitProblem, t_mid: float
) -> list[HeterodyneModel]:
    """Steady starts where a minor component carries `_MINOR_SHARE` of the light and decays
    `_MINOR_SLOWDOWN` times slower than the dominant one (the estimate's component with the
    larger share, its rate at mid-window): the reference under a flowing sample, and the
    sample under a static reference; each at the slowest speed of `_speed_scan` (one radian
    of fringe phase over the window) and at `_MINOR_FLOW_DIRECTIONS` values of φ0 spread over
    its period.

    A slow minor component adds a small long-lived plateau and a cross term decaying at about
    half the dominant rate; the one-time cuts read the dominant decay and leave the rest to
    noise or flow, and with a slow flow (a radian or two of fringe phase over the window) the
    estimate's φ0 is a guess. Measured on a held-out draw of the recovery suite
    (`bench_recovery.py --seed 36`, case 33: a reference with 16 % of the light decaying 10×
    slower than the flowing sample, 6 angles): no other start reached its basin, and the fit
    stopped in a basin of two fast components 33 above the global χ²; these starts reach it
    from three of the four directions."""
    fast = _dominant_rate(estimate, problem, t_mid)
    if fast is None:
        return []
    steady = _steady(estimate, t_mid, ("alpha_ref", "alpha_sample", "beta"))
    values = steady.to_dict()
    models = []
    for minor, major, share in (
        ("ref", "sample", 1 - _MINOR_SHARE),
        ("sample", "ref", _MINOR_SHARE),
    ):
        major_prefactor = fast - float(values.get(f"D_offset_{major}", 0.0))
        model = steady.replace(**{f"D0_{major}": major_prefactor, "f0": share})
        model = _slowed(model, minor, major, t_mid, problem.names)
        model = (_speed_scan(model, problem, t_mid, 1) or [model])[0]
        models += _flow_directions(model, problem.names, _MINOR_FLOW_DIRECTIONS)
    return models


def _static_reference(
    estimate: HeterodyneModel, problem: FitProblem, t_mid: float, count: int
) -> list[HeterodyneModel]:
    """Steady starts with a static reference (D0_ref = 0) carrying most of the light and the
    sample, with `_MINOR_SHARE` of it, decaying at the dominant rate of the estimate (as in
    `_minor_slow`), at `count` speeds of `_speed_scan`: the textbook heterodyne geometry, a
    strong stationary reference mixed with a weak flowing sample.

    A static reference adds a plateau that never decays and turns the flow's fringes into a
    slowly decaying cross term; with a slow flow (under a radian of fringe phase while the
    cross term lasts) the flow reads as extra decay, and fits from the estimate settle on a
    slowly decaying reference and a faster flow instead. Measured on a held-out draw of the
    recovery suite (`bench_recovery.py --seed 38`, case 4: a static reference with 58 % of the
    light, a constant fraction, 3 angles × 170 frames): no start of the design reached the
    global basin and the fit stopped 47 above its χ² (D0_ref 1 856, v0 110 against 0 and 82);
    these starts reach it from three of the four speeds."""
    fast = _dominant_rate(estimate, problem, t_mid)
    if fast is None:
        return []
    steady = _steady(estimate, t_mid, ("alpha_ref", "alpha_sample", "beta"))
    values = steady.to_dict()
    sample_prefactor = fast - float(values.get("D_offset_sample", 0.0))
    model = steady.replace(D0_ref=0.0, D0_sample=sample_prefactor, f0=_MINOR_SHARE)
    return _speed_scan(model, problem, t_mid, count)


def _dominant_rate(estimate: HeterodyneModel, problem: FitProblem, t_mid: float) -> float | None:
    """The transport rate at t_mid of the estimate's component with the larger share of the
    light; None when it is not positive or the two prefactors and the fraction are not all
    free (no start can then move the light between the components)."""
    if not {"D0_ref", "D0_sample", "f0"} <= set(problem.names):
        return None
    rates = estimate.rates(jnp.array([t_mid]))
    dominant = "sample" if float(rates["sample_fraction"][0]) >= 0.5 else "ref"
    fast = float(rates[f"J_{dominant}"][0])
    return fast if fast > 0 else None


def _flow_directions(model: HeterodyneModel, names: tuple[str, ...], count: int) -> list:
    """The model at `count` values of φ0 spread evenly over its period from the model's own
    (just the model when φ0 is not fitted or has no period)."""
    spec = {s.name: s for s in model.parameter_specs}.get("phi0")
    if spec is None or "phi0" not in names or not spec.period > 0:
        return [model]
    phi0 = float(model.to_dict()["phi0"])
    angles = [phi0 + spec.period * k / count for k in range(count)]
    if spec.wraps:
        angles = [spec.lower + (a - spec.lower) % spec.period for a in angles]
    return [model.replace(phi0=a) for a in angles]


class AutoStarts(AbstractStarts):
    """The default: data-driven starts and the degeneracies around them, screened to
    convergence on a coarse sub-grid of frames, every competitive basin polished on all data.

    The starts: the user's; the data-driven estimate E (`_estimate.estimate_start`: rates,
    exponents, speed, φ0 and fraction from the one-time cuts at several ages); E with the
    components exchanged; E and its exchange without time dependence (exponents and f1 at 0,
    rates at their mid-window values); E with its free transport exponents moved apart both
    ways (the α_ref ↔ α_sample trade-off, `_exponent_trades`); the user's start with E's speed
    and φ0; with a velocity offset, E on the other flow branches
    (`_estimate.velocity_branches`: the fringes see only |v|, so a flow that slows and one
    that reverses read alike); E at `speed_scan`
    speeds log-spaced from one radian of fringe phase over the window to π/2 a frame (χ² is
    multimodal in v, and without visible fringes the data's speed is a guess); E held steady
    with a fraction that saturates at mid-window or decays from 1 (`_fraction_shapes`), each at
    half as many of those speeds (a fraction that changes this much is a basin of its own that
    the cuts read poorly when the decays are fast); E held steady with a minor component
    (15 % of the light) decaying 10× slower than the dominant one, the reference under a
    flowing sample and the sample under a static reference, each at the slowest of those
    speeds and at 4 values of φ0 spread over its period (`_minor_slow`: the cuts read the
    dominant decay only); E held steady with a static reference carrying 85 % of the light
    and the sample decaying at the dominant rate, at half of those speeds (`_static_reference`:
    the textbook heterodyne geometry, where a slow flow reads as extra decay); then a Latin
    hypercube around E
    (`random_starts`, default 4 + the number of free physics parameters, 8 to 16) with the
    speed v0 drawn log-uniformly within ×/÷ 10 of E's and the fraction's rate f1 uniformly so
    that the fraction changes by e^−4 to e^4 over the window (growing, decaying, saturating).

    Every start gets `screening_steps` LM steps (most converge within them) on the problem
    restricted to every k-th frame (about `screening_frames` frames, k limited so that the
    data change by at most half their contrast over a sub-grid step, `_screening_stride`) and
    to at most `screening_maps` maps spread over the list (the physics is shared by all maps;
    many angles add cost, not basins).
    Distinct basins (exact symmetries folded, `_symmetry.basin_signature`) whose coarse χ² is
    within 5 √(2·points) + 25 of the best — converged or not, anything that could still win —
    continue on the full data, at most `polish` (8) of them, best first, together with the
    exchanged labelling of the best (a near-exact rival when the fraction varies slowly). They
    are polished in turn, and one whose χ² would stay above the margin of the best finished fit
    even after a hundred times the decrease its Gauss–Newton step predicts stops there (a rival
    basin is not walked to the end of its valley only to lose: on 8 maps × 400² three rivals
    10 800 above the best took 2 steps each instead of 114–256). A polished fit within that
    margin of the best that runs out of steps is continued from where it stopped (`resumes`
    times at most). When the screening left maps out and subsampled the
    frames, the polish first fits these rows on every map at the screening's sub-grid (the
    *medium* problem, ~stride² cheaper a step) and only its distinct basins within the same
    margin (on its points) of its best go on to the full data (on the 42-map file of
    `bench_whole_file.py` it folds the exchanged start into the best's basin and hands the full
    data a nearly converged best fit; a rival basin 64 600 above the best in full χ² is only
    1 136 above it there, inside the margin, and is still polished). Then, up to `hops`
    rounds: from the best fit so far, one move along each near-degeneracy (`_moves`: its other
    flow branches, its fraction saturating, decaying or steady, saturating or decaying in
    either labelling with the component the fraction removes made slow, its exponents traded),
    screened likewise and polished when they could beat it (the estimate can be poor; the best
    fit is a better place to look from). The lowest full χ² wins.

    **Why 8 basins.** The screening's χ² ranks fits that have mostly not converged in their
    `screening_steps`, so a basin ranked low there can still win on the full data. Measured on
    a held-out draw of the recovery suite (`bench_recovery.py --seed 36`, case 18: ageing, a
    saturating fraction, high noise; 7 distinct basin signatures within the margin, two of them
    one fit with a flow too slow to see): with at most 4 the global basin, ranked 6th, was
    never polished and the fit stopped 1 632 above the truth's χ²; with 8 it reached 22 below
    it. Hopeless rivals still stop early (above); measured on 7 cases of that draw (the two
    settings alternated, each fit cold), the wall time changed by a median factor 0.99 and 8 %
    in total, at most +30 % (a static-reference case).
    """

    random_starts: int | None = None
    speed_scan: int = 8
    screening_frames: int = 64
    screening_maps: int = 8
    screening_steps: int = 64
    polish: int = 8
    resumes: int = 2
    hops: int = 2

    def design(self, problem: FitProblem, data: XPCSData, x0: np.ndarray, seed: int):
        """(rows of starts, the data-driven estimate)."""
        lower, upper = _bounds(problem)
        names = problem.names
        t = np.asarray(data.t)
        t_mid = float(t[len(t) // 2])
        user = problem.unpack(jnp.asarray(x0))[0]
        estimate, *branches = estimate_starts(data, user)
        stationary = _steady(estimate, t_mid, ("alpha_ref", "alpha_sample", "beta"))
        models = [estimate, stationary]
        models += [m for m in (exchanged(estimate, t), exchanged(stationary, t)) if m is not None]
        models += _exponent_trades(estimate, t_mid, names)
        flow = {k: estimate.to_dict()[k] for k in ("v0", "beta", "phi0") if k in names}
        models.append(user.replace(**flow))
        for branch in branches:  # a reversing flow: its own transport and fraction guesses fail
            models += [branch, _steady(branch, t_mid, ("alpha_ref", "alpha_sample"))]
        models += _speed_scan(estimate, problem, t_mid, self.speed_scan)
        half_scan = max(self.speed_scan // 2, 1)
        for shape in _fraction_shapes(stationary, t):
            models += _speed_scan(shape, problem, t_mid, half_scan)
        models += _minor_slow(estimate, problem, t_mid)
        models += _static_reference(estimate, problem, t_mid, half_scan)
        anchors = [np.asarray(x0, float)] + [_fit_vector(problem, m, x0) for m in models]
        n_random = self.random_starts
        if n_random is None:
            n_random = int(np.clip(problem.n_free_physics + 4, 8, 16))
        centre = _fit_vector(problem, estimate, x0)
        rng = np.random.default_rng(seed)
        n_total = len(anchors) + int(n_random)
        design = start_design(names, anchors, centre, lower, upper, n_total, rng)
        if "v0" in names and n_total > len(anchors):  # the speed: ×/÷ 10 around E's
            k = names.index("v0")
            speed = max(float(centre[k]), 1e-3 * float(upper[k]))
            draws = speed * 10.0 ** rng.uniform(-1.0, 1.0, n_total - len(anchors))
            design[len(anchors) :, k] = np.clip(draws, lower[k], upper[k])
        if "f1" in names:  # the fraction's rate: from e^−4 to e^4 over the window
            window = float(t[-1] - t[0]) or 1.0
            k = names.index("f1")
            rates = rng.uniform(-4.0, 4.0, n_total - len(anchors)) / window
            design[len(anchors) :, k] = np.clip(rates, lower[k], upper[k])
        return pulled_inside(names, design, lower, upper, user_rows=1), estimate

    def search(self, problem, data, x0, solve, *, seed):
        stride = _screening_stride(problem, self.screening_frames)
        coarse, medium = self._coarse(problem, stride), self._medium(problem, stride)
        ahead = self._compile_ahead(problem, medium, x0, solve)
        design, _ = self.design(problem, data, x0, seed)
        screened = joint(solve)(coarse, design, max_steps=self.screening_steps)
        rows = screened.values[self._survivors(coarse, screened)]
        # The exchanged labelling of the best basin is always tried on the full data: with a
        # slowly varying fraction it is a near-exact rival that the screening may not reach.
        best_model = coarse.unpack(jnp.asarray(rows[0]))[0]
        image = exchanged(best_model, np.asarray(problem.t))
        if image is not None:
            lower, upper = _bounds(problem)
            mirrored = _fit_vector(problem, image, rows[0])
            rows = np.concatenate(
                [rows, pulled_inside(problem.names, mirrored[None], lower, upper)]
            )
        if ahead is not None:
            ahead.join()
        final = self._polish(problem, medium, rows, solve)
        for _ in range(self.hops):
            found = self._hop(problem, coarse, medium, final, solve)
            if found is None:
                break
            final = Solved(*(np.concatenate([a, b]) for a, b in zip(final, found)))
        return SearchOutcome(final, screened)

    @staticmethod
    def _compile_ahead(
        problem: FitProblem, medium: FitProblem | None, x0: np.ndarray, solve: LocalSolver
    ) -> threading.Thread | None:
        """The profiled passes of the medium and full-data stages, compiled on a background
        thread while the start design and the screening run (`compile_ahead`; the fits are
        unchanged). On the 42-map file of `bench_whole_file.py` (2 cores) the medium and final
        stages took 7.7 s and 20.2 s instead of 14.3 s and 31.7 s, the design and screening
        37.9 s instead of 27.2 s: the whole fit 81.7 s instead of 90.0 s."""
        if not solve.profile_scaling or problem.n_parameters == problem.n_free_physics:
            return None
        x = jnp.asarray(x0)
        stages = [medium, problem] if medium is not None else [problem]
        return compile_ahead([lambda stage=stage: profile_of(stage, x).ssr for stage in stages])

    def _coarse(self, problem: FitProblem, stride: int) -> FitProblem:
        """The screening problem: every k-th frame and at most `screening_maps` maps."""
        coarse = problem.subsampled(stride)
        n_maps = int(problem.q.shape[0])
        if n_maps > self.screening_maps:  # maps spread over the list (angles, q rings)
            spread = np.unique(np.round(np.linspace(0, n_maps - 1, self.screening_maps)))
            coarse = coarse.with_maps(spread.astype(int))
        return coarse

    def _medium(self, problem: FitProblem, stride: int) -> FitProblem | None:
        """Every map on the screening's sub-grid of frames, where the screening kept only some
        maps and subsampled the frames (otherwise None: the screening saw every map, or the
        sub-grid is the full grid)."""
        if stride <= 1 or int(problem.q.shape[0]) <= self.screening_maps:
            return None
        return problem.subsampled(stride)

    def _polish(
        self,
        problem: FitProblem,
        medium: FitProblem | None,
        rows: np.ndarray,
        solve: LocalSolver,
        best_known: float = np.inf,
    ) -> Solved:
        """Local fits on the full data (rows in turn, best first), continued while a contender
        runs out of steps. A fit that cannot come within the screening margin of the best
        finished one (or of `best_known`) stops early (`LocalSolver`'s `contend_within`). With
        a `medium` problem the rows are first fitted there (continued and stopped likewise),
        and only its distinct basins within the margin of its best go on to the full data."""
        if medium is not None:
            stage, margin = staged(solve), _screen_margin(medium)
            refined = stage(medium, rows, batched=False, contend_within=margin)
            refined = refined.resumed(medium, stage, self.resumes, margin)
            kept = _distinct_basins(medium, refined, np.nanmin(refined.chi2) + margin, len(rows))
            rows = refined.values[kept] if kept else refined.values[[0]]
        margin = _screen_margin(problem)
        final = solve(problem, rows, batched=False, contend_within=margin, best_known=best_known)
        return final.resumed(problem, solve, self.resumes, margin)

    def _hop(
        self,
        problem: FitProblem,
        coarse: FitProblem,
        medium: FitProblem | None,
        final: Solved,
        solve: LocalSolver,
    ):
        """One round of moves from the best fit so far along the model's near-degeneracies
        (`_moves`), screened on the coarse problem; the distinct ones whose coarse χ² could
        still beat the best's are polished. None when no move could win (or improved χ²)."""
        best = int(np.argmin(final.ranking()))
        x = final.values[best]
        moves = _moves(problem, x)
        if moves.shape[0] == 0:
            return None
        screened = joint(solve)(coarse, moves, max_steps=self.screening_steps)
        reference = float(evaluate_at(coarse, jnp.asarray(x)).ssr)
        kept = _distinct_basins(
            coarse, screened, reference + _screen_margin(coarse), self.polish, [x]
        )
        if not kept:
            return None
        found = self._polish(problem, medium, screened.values[kept], solve, final.chi2[best])
        gain = final.chi2[best] - np.nanmin(found.chi2)
        return found if gain > _SAME_CHI2 * abs(final.chi2[best]) else None

    def _survivors(self, coarse: FitProblem, screened: Solved) -> np.ndarray:
        """Indices of distinct screened basins within the margin of the best, best first."""
        order = np.argsort(screened.ranking())
        ceiling = screened.chi2[order[0]] + _screen_margin(coarse)
        kept = _distinct_basins(coarse, screened, ceiling, self.polish)
        return np.array(kept if kept else [int(order[0])])


def _distinct_basins(
    coarse: FitProblem, screened: Solved, ceiling: float, limit: int, known=()
) -> list[int]:
    """Indices of screened fits with χ² ≤ `ceiling`, best first, one per basin (exact
    symmetries folded, `basin_signature`), none in the basin of a `known` fit vector; at most
    `limit`."""
    signatures = [basin_signature(coarse, x) for x in known]
    kept: list[int] = []
    for index in np.argsort(screened.ranking()):
        if not np.isfinite(screened.chi2[index]):
            continue
        if not screened.chi2[index] <= ceiling:
            break
        signature = basin_signature(coarse, screened.values[index])
        if any(np.max(np.abs(signature - other)) < _SAME_BASIN for other in signatures):
            continue
        kept.append(int(index))
        signatures.append(signature)
        if len(kept) == limit:
            break
    return kept


_STARTS_HELP = "`starts` must be a positive integer, 'auto' or a heterojax.AbstractStarts"


def resolve_starts(starts) -> AbstractStarts:
    """`starts=` of `fit_nlsq` as a strategy: 1 → `LocalStart`, n > 1 → `MultiStart(n)`,
    `"auto"` → `AutoStarts()`, or a strategy instance as given."""
    if isinstance(starts, AbstractStarts):
        return starts
    if isinstance(starts, str):
        if starts == "auto":
            return AutoStarts()
        raise ValueError(f"{_STARTS_HELP}; got {starts!r}.")
    if isinstance(starts, bool) or not isinstance(starts, (int, np.integer)) or int(starts) < 1:
        raise ValueError(f"{_STARTS_HELP}; got {starts!r}.")
    return LocalStart() if int(starts) == 1 else MultiStart(int(starts))
