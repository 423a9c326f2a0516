"""Profile-likelihood intervals of a fit's physics parameters (`profile_intervals`).

The standard errors of a fit describe the χ² surface by its curvature at the minimum: a
quadratic. Where the surface is not quadratic over the width of the error — a fraction that
trades off against two similar decay rates, an angle or a speed the fringes barely show, a
parameter near a bound — the interval θ̂ ± z σ can be much too narrow on one side (or too
wide on the other). The profile interval asks the likelihood itself: with ψ held at a value
and every other parameter refitted, how much worse is the best fit?

    Δχ²(ψ) = min_{others} χ²(ψ, others) − χ²_min,

and the interval is the connected set of ψ around the estimate where the adjusted statistic

    W(ψ) = Δχ²(ψ) / (s² · k),      k = σ_honest² / σ_formal²,

stays below χ²₁(level) (2.71 at 90 %). s² is the variance scale of the fit's σ (the reduced
χ² when σ was estimated, else 1), so Δχ²/s² is the likelihood-ratio statistic for independent
noise. On correlated (speckle) noise that statistic is too large by the ratio k of the fit's
honest variance of ψ (`NLSQResult.stderr`, e.g. frame-clustered) to its independent-noise
variance (`formal_stderr`): dividing by k is the magnitude adjustment of a composite
likelihood ratio for a scalar parameter (Chandler & Bate 2007; Pace, Salvan & Sartori 2011),
asymptotically χ²₁ again. Where χ² is quadratic in ψ the interval is θ̂ ± z σ_honest exactly;
elsewhere it follows the surface.

Assumptions, stated: k is read at the minimum and held along the profile (the noise's
correlation structure does not change with ψ); the profile is the connected region around the
estimate, so a second mode separated by a barrier higher than the threshold is not joined; the
refits are local (`starts=1`) from the previous profile point, so the profile is a local one
(a refit that ends below the fit's χ² means the fit was not at the global minimum along ψ:
the interval then reports `lower_minimum`).
"""

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from .._data._xpcs_data import XPCSData
from ._intervals import normal_quantile
from ._nlsq import fit_nlsq
from ._nlsq_result import NLSQResult, refit_settings


# Steps outwards from the estimate, in honest standard errors: the first, and the growth factor
# of each next one (so a flat profile reaches ten errors in about eight refits).
_FIRST_STEP = 0.5
_GROWTH = 1.4
# Refits between the last point below the threshold and the first above it (bisection).
_REFINEMENTS = 2
# Refits at most on each side before the interval is reported as not closed there.
_MAX_STEPS = 16
# A refit this much (relative) below the fit's χ² is a lower minimum, not rounding.
_LOWER = 1e-9


class ProfileInterval(NamedTuple):
    """One parameter's profile interval (`profile_intervals`).

    **Fields:** `low`, `high` — the interval's ends (a bound where the profile stays below the
    threshold up to it); `values`, `statistic` — the profiled points ψ (sorted) and W(ψ) there;
    `threshold` — χ²₁(level); `closed` — (low side, high side): whether the statistic crossed
    the threshold on that side (False: a bound, the period of an angle, or the step limit ended
    it); `lower_minimum` — whether a refit found a χ² below the fit's (then W is measured from
    that lower value and the fit itself is not the minimum along ψ); `adjustment` — k.
    """

    low: float
    high: float
    values: np.ndarray
    statistic: np.ndarray
    threshold: float
    closed: tuple[bool, bool]
    lower_minimum: bool
    adjustment: float


class _Profiler:
    """Refits of one fit with one parameter held fixed, and the statistic W at each."""

    def __init__(self, result: NLSQResult, data: XPCSData, name: str):
        self.result, self.data, self.name = result, data, name
        self.settings = refit_settings(result)
        honest = float(result.stderr[name])
        formal = float((result.formal_stderr or result.stderr)[name])
        self.adjustment = (honest / formal) ** 2 if formal > 0 else 1.0
        self.scale = float(result.reduced_chi2) if result.noise == "estimated" else 1.0
        self.minimum = float(result.chi2)
        self.lower_minimum = False
        self.period = result.periods().get(name, 0.0)

    def refit(self, start, value: float):
        """The best fit with ψ = value, from the model `start`; (its model, its χ²). An angle's
        value is taken modulo its period into the fit's box."""
        if self.period:
            low = self.result.bounds[self.name][0]
            value = low + (value - low) % self.period
        fitted = fit_nlsq(
            start.replace(**{self.name: value}),
            self.data,
            **{**self.settings, "fixed": [*self.settings["fixed"], self.name]},
            starts=1,
            errors="formal",
        )
        chi2 = float(fitted.chi2)
        if chi2 < self.minimum * (1 - _LOWER):
            self.minimum, self.lower_minimum = chi2, True
        return fitted.model, chi2

    def statistic(self, chi2: float) -> float:
        return max(chi2 - self.minimum, 0.0) / (self.scale * self.adjustment)


def _side(profiler: _Profiler, direction: int, threshold: float, limit: float, sigma: float):
    """Profile points from the estimate towards `limit` (a bound or half a period away) until W
    crosses `threshold`; the crossing refined by bisection. Returns (end, closed, points)."""
    estimate = float(profiler.result.parameters()[profiler.name])
    points: list[tuple[float, float]] = []
    inside_value, inside_model = estimate, profiler.result.model
    step = _FIRST_STEP * sigma
    for _ in range(_MAX_STEPS):
        value = estimate + direction * min(abs(inside_value - estimate) + step, limit)
        model, chi2 = profiler.refit(inside_model, value)
        points.append((value, chi2))
        if profiler.statistic(chi2) > threshold:
            outside_value = value
            break
        inside_value, inside_model = value, model
        if abs(value - estimate) >= limit:
            return value, False, points
        step *= _GROWTH
    else:
        return inside_value, False, points
    for _ in range(_REFINEMENTS):
        middle = 0.5 * (inside_value + outside_value)
        model, chi2 = profiler.refit(inside_model, middle)
        points.append((middle, chi2))
        if profiler.statistic(chi2) > threshold:
            outside_value = middle
        else:
            inside_value, inside_model = middle, model
    # the crossing, interpolating √W (linear in ψ where χ² is quadratic) between the bracket
    inside_w = profiler.statistic(_chi2_at(points, inside_value, profiler.minimum))
    outside_w = profiler.statistic(_chi2_at(points, outside_value, profiler.minimum))
    low_root, high_root, target = math.sqrt(inside_w), math.sqrt(outside_w), math.sqrt(threshold)
    share = (target - low_root) / (high_root - low_root) if high_root > low_root else 1.0
    return inside_value + share * (outside_value - inside_value), True, points


def _chi2_at(points: list[tuple[float, float]], value: float, minimum: float) -> float:
    """The profiled χ² at one of the points (the minimum at the estimate itself)."""
    for point, chi2 in points:
        if point == value:
            return chi2
    return minimum


def profile_intervals(
    result: NLSQResult,
    data: XPCSData,
    names: Iterable[str] | None = None,
    level: float = 0.9,
) -> dict[str, ProfileInterval]:
    """Profile-likelihood intervals of free physics parameters of a fit (module docstring).

    For each name, ψ is held at values stepping outwards from the estimate on both sides (in
    growing steps of the honest standard error) and every other free parameter refitted from
    the previous point (`fit_nlsq(..., starts=1)`, with the fit's σ, bounds, scaling and bin
    model), until the adjusted statistic W(ψ) = Δχ²/(s²·k) exceeds χ²₁(level); the crossing
    is then refined by bisection. Costs about 6–12 local refits per side and parameter (one
    compilation per parameter), so it is meant for the few parameters one quotes.

    An angle (φ0 on its one-period box) is profiled up to half a period each way; other
    parameters up to their bounds (the interval's end is then the bound, `closed` False).

    **Arguments:** `result` — an `NLSQResult` of `fit_nlsq`; `data` — the `XPCSData` it was
    fitted to; `names` — free physics parameters (default: all of them); `level` — the
    coverage, in (0, 1).

    **Returns:** name → `ProfileInterval`.
    """
    if not isinstance(result, NLSQResult):
        raise TypeError(f"`result` must be a heterojax.NLSQResult; got {type(result).__name__}.")
    if not isinstance(data, XPCSData):
        raise TypeError(f"`data` must be a heterojax.XPCSData; got {type(data).__name__}.")
    threshold = normal_quantile(level) ** 2
    physics = [n for n in result.names if n in result.model.parameter_names]
    names = physics if names is None else list(names)
    unknown = [n for n in names if n not in physics]
    if unknown:
        raise ValueError(
            f"Only free physics parameters of the fit can be profiled ({', '.join(physics)}); "
            f"got {', '.join(map(repr, unknown))}."
        )
    periods = result.periods()
    intervals = {}
    for name in names:
        sigma = float(result.stderr[name])
        estimate = float(result.parameters()[name])
        low_bound, high_bound = result.bounds[name]
        if not math.isfinite(sigma) or sigma <= 0:
            sigma = 0.1 * (high_bound - low_bound) if math.isfinite(high_bound - low_bound) else 1
        profiler = _Profiler(result, data, name)
        ends, closed, points = [], [], []
        for direction in (-1, 1):
            if name in periods:
                limit = periods[name] / 2
            else:
                limit = estimate - low_bound if direction < 0 else high_bound - estimate
            end, crossed, side = _side(profiler, direction, threshold, limit, sigma)
            ends.append(end)
            closed.append(crossed)
            points += side
        values = np.array(sorted({estimate, *(p for p, _ in points)}))
        chi2 = dict(points)
        statistic = np.array([profiler.statistic(chi2.get(v, float(result.chi2))) for v in values])
        intervals[name] = ProfileInterval(
            low=float(ends[0]),
            high=float(ends[1]),
            values=values,
            statistic=statistic,
            threshold=threshold,
            closed=(closed[0], closed[1]),
            lower_minimum=profiler.lower_minimum,
            adjustment=profiler.adjustment,
        )
    return intervals
