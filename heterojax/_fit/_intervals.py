"""Intervals of fitted parameters from their standard errors (`NLSQResult.intervals`)."""

import math
import statistics
from collections.abc import Iterable, Mapping

import numpy as np


# (prefactor, exponent) of the power laws J_n(t) = D0_n·t^alpha_n and v(t) = v0·t^beta.
POWER_LAWS = (("D0_ref", "alpha_ref"), ("D0_sample", "alpha_sample"), ("v0", "beta"))


def normal_quantile(level: float) -> float:
    """z with P(|Z| ≤ z) = `level` for a standard normal Z (1.645 at 0.9)."""
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"`level` must be a probability in (0, 1), e.g. 0.9; got {level!r}.")
    return statistics.NormalDist().inv_cdf(0.5 + level / 2.0)


def log_scale_parameters(free: tuple[str, ...]) -> frozenset[str]:
    """The prefactors whose estimate is log-normal: those of a power law whose exponent is free
    too (`parameter_intervals`, `consistency_test` of `fit_by_q`)."""
    return frozenset(
        prefactor for prefactor, exponent in POWER_LAWS if {prefactor, exponent} <= set(free)
    )


def parameter_intervals(
    values: Mapping[str, float],
    stderr: Mapping[str, float],
    bounds: Mapping[str, tuple[float, float]],
    free: tuple[str, ...],
    level: float = 0.9,
    log_scale: Iterable[str] | None = None,
    periods: Mapping[str, float] | None = None,
) -> dict[str, tuple[float, float]]:
    """`level` intervals of the free parameters named in `values`, inside their bounds.

    With z the normal quantile (`normal_quantile`) and σ the standard error:

    - θ ± z σ for every parameter, except
    - [θ − z σ, θ · exp(z σ/θ)] for the prefactor of a power law D0·t^α (D0_ref, D0_sample;
      v0 with beta) whose exponent is free as well and whose value is positive. The data fix
      the rate inside the window, D(t*) at a time t* where the two decorrelate, and the
      prefactor — the rate at t = 1 s — is D(t*)·t*^(−α): with α Gaussian, ln D0 is Gaussian
      and D0 is log-normal, θ·exp(±z σ/θ). Its linear error σ = D0·σ_ln is the same
      first-order quantity, but a symmetric interval around a low estimate then misses a truth
      several times larger (measured on speckle data, `benchmarks/bench_calibration.py`: the
      D0_sample misses of −3 to −24 linear errors sit where σ ≥ 0.8 θ, with α within 2 of its
      errors). Where the rate itself is not determined away from 0 — a static reference,
      D0_ref = 0 at its bound with alpha_ref free and undetermined — the estimate is not
      log-normal, and the log interval would exclude 0. The interval is therefore the union of
      the two, which holds at least `level` under either model: since exp(±x) ≥ 1 ± x, its
      lower end is the normal one's and its upper end the log-normal one's. With the exponent
      fixed the prefactor is the rate itself, and its interval is the normal one.

    `log_scale` names the parameters to treat so instead (e.g. the prefactor of a custom law);
    `None` chooses as above. Both ends are then clipped to the parameter's bounds (its values
    outside cannot be true). An infinite or undefined error gives the whole range between the
    bounds.

    An angle — a name in `periods`, whose box is one period of the model (φ0: 180°) — has no
    bounds to clip at: θ ± z σ is kept whole and read modulo the period (φ0 = 88° ± 5° at 90 %:
    [79.8, 96.2], that is 79.8° to 90° and −90° to −83.8°), and the whole box once 2 z σ
    reaches the period.
    """
    z = normal_quantile(level)
    logarithmic = log_scale_parameters(free) if log_scale is None else frozenset(log_scale)
    periods = dict(periods or {})
    intervals = {}
    for name, value in values.items():
        error = float(stderr[name])
        low_bound, high_bound = bounds.get(name, (-math.inf, math.inf))
        if name in periods and math.isfinite(error) and 2 * z * error < periods[name]:
            intervals[name] = (value - z * error, value + z * error)
            continue
        if not math.isfinite(error) or name in periods:
            low, high = -math.inf, math.inf
        elif name in logarithmic and value > 0:
            low, high = value - z * error, value * math.exp(min(z * error / value, 700.0))
        else:
            low, high = value - z * error, value + z * error
        intervals[name] = (
            float(np.clip(low, low_bound, high_bound)),
            float(np.clip(high, low_bound, high_bound)),
        )
    return intervals
