"""Data-driven start values: the transport-coefficient view of the one-time cuts.

He et al. (PNAS 2024) read a two-time map as a sequence of one-time correlations at increasing
age. Over a short lag τ at age t the rates are nearly constant, so the cut at that age follows the
constant-rate form (SI Eq. S-98) with x = f_s² / (f_s² + f_r²):

    g(τ) = offset + contrast · [(1 − x)² e^{−q² J_r τ} + x² e^{−q² J_s τ}
                                + 2x(1 − x) e^{−½ q² (J_r + J_s) τ} cos(q cos(φ + φ0) v τ)].

`estimate_start` fits that form by a vectorised grid search (J_r, J_s, x on grids; contrast and
offset per map by linear least squares for every grid point) at a few ages, after reading v and
φ0 off the fringe frequencies of each map. Power laws through the ages then give
J_n(t) ≈ D0_n t^α_n, v(t) ≈ v0 t^β and f_s(t) ≈ f0 e^{f1 t}. None of this is a fit result: it is a
start that lands in the right basin far more often than the defaults, and the start strategies
(`_strategies`) cover the degeneracies around it.
"""

import dataclasses
import math

import numpy as np

from .._data._xpcs_data import XPCSData
from .._model._heterodyne import HeterodyneModel
from ._scaling import estimate_contrast_offset


# Rates are searched on log grids of q²·J between these multiples of 1/T (T: the window) and
# 1/dt (beyond them nothing decays in the window, or everything has decayed after one frame).
_SLOWEST, _FASTEST = 0.03, 3.0
_RATE_GRID = 28
_FRACTIONS = np.linspace(0.05, 0.95, 13)
_LAGS = 48  # lags per cut, log-spaced (the grid search's cost is ∝ lags)
_MIN_FRAMES_PER_AGE = 12


@dataclasses.dataclass(frozen=True)
class DataEstimate:
    """What the one-time cuts say, per age window.

    **Fields:** `ages` (s), per age the rates `reference_rate`, `sample_rate` (J in Å²/s),
    `sample_share` (f_s), `speed` (|v| in Å/s, from the window's grid search), and the overall
    `phi0` (deg, NaN without an age window): that of the window whose flow explains the most
    of its cuts (the largest flow gain of `_grid_search`). Windows without fringes
    return an arbitrary angle; a median over windows let two of them outvote the one that saw
    the flow (measured: `bench_recovery.py --seed 38`, case 28, a fraction saturating at 0.86 s
    of a 1.56 s window: φ0 70° against −20°, and a fit 508 900 above the truth's χ²).
    """

    ages: np.ndarray
    reference_rate: np.ndarray
    sample_rate: np.ndarray
    sample_share: np.ndarray
    speed: np.ndarray
    phi0: float


def fringe_frequencies(c2: np.ndarray, dt: float, rows: slice | None = None) -> np.ndarray:
    """The angular fringe frequency ω (rad/s) of each map's one-time cut, NaN without a peak.

    The cut g2(τ) (diagonal means over `rows`, default all) oscillates as cos(ω τ),
    ω = q |cos(φ + φ0)| |v|. After removing a moving average (width N/8) and tapering, the peak
    of the zero-padded spectrum gives ω when it stands 4× above the median.
    """
    estimates = []
    for values in np.asarray(c2, float):
        n = values.shape[0]
        first, last = (0, n) if rows is None else (rows.start, rows.stop)
        lags = np.arange(1, n - first)
        g2 = np.array(
            [np.nanmean(np.diagonal(values, offset=k)[first:last]) for k in lags if k < n]
        )
        if g2.shape[0] < 16 or not np.all(np.isfinite(g2)):
            estimates.append(np.nan)
            continue
        width = max(3, g2.shape[0] // 8)
        trend = np.convolve(g2, np.ones(width) / width, mode="same")
        tapered = (g2 - trend) * np.hanning(g2.shape[0])
        spectrum = np.abs(np.fft.rfft(tapered, 8 * g2.shape[0]))
        frequencies = np.fft.rfftfreq(8 * g2.shape[0], d=dt)
        peak = int(np.argmax(spectrum[1:])) + 1
        strong = spectrum[peak] > 4 * np.median(spectrum[1:])
        estimates.append(2 * np.pi * frequencies[peak] if strong else np.nan)
    return np.array(estimates)


def estimate_velocity(c2: np.ndarray, q: np.ndarray, dt: float) -> float | None:
    """The flow speed |v| (Å/s) as max_a ω_a / q_a (`fringe_frequencies`): the map most aligned
    with the flow shows the fastest fringes. None when no map shows a peak."""
    speeds = fringe_frequencies(c2, dt) / np.asarray(q, float)
    return float(np.nanmax(speeds)) if np.any(np.isfinite(speeds)) else None


def speed_and_angle(omega: np.ndarray, q: np.ndarray, phi: np.ndarray) -> tuple[float, float]:
    """|v| and φ0 from per-map fringe frequencies: ω_a = q_a |v| |cos(φ_a + φ0)|.

    For every φ0 on a 0.5° grid over [−90°, 90°) the best |v| is linear least squares; the φ0
    with the smallest misfit wins. With one map showing fringes, |v| = ω/q (the map taken as
    aligned with the flow) and φ0 is NaN.
    """
    seen = np.isfinite(omega)
    if not np.any(seen):
        return math.nan, math.nan
    if np.count_nonzero(seen) < 2:
        return float(np.nanmax(omega / q)), math.nan
    grid = np.arange(-90.0, 90.0, 0.5)
    design = q[None, seen] * np.abs(np.cos(np.deg2rad(phi[None, seen] + grid[:, None])))
    target = omega[seen][None]
    speed = np.sum(design * target, axis=1) / np.maximum(np.sum(design**2, axis=1), 1e-300)
    misfit = np.sum((speed[:, None] * design - target) ** 2, axis=1)
    best = int(np.argmin(misfit))
    return float(speed[best]), float(grid[best])


def lag_cut(maps: np.ndarray, mask: np.ndarray, rows: range, lags: np.ndarray) -> np.ndarray:
    """Mean over rows i (with i + k inside the map and used) of c2[i, i + k], per map and lag."""
    n = maps.shape[-1]
    i = np.asarray(rows)[:, None]
    j = i + lags[None, :]
    inside = j < n
    j = np.minimum(j, n - 1)
    values = maps[:, i, j]
    used = mask[:, i, j] & inside[None]
    count = np.sum(used, axis=1)
    return np.where(
        count > 0, np.sum(np.where(used, values, 0.0), axis=1) / np.maximum(count, 1), np.nan
    )


def _misfit(cut, tau, gamma_r, gamma_s, x, phase_rate) -> np.ndarray:
    """Σ over maps of the least-squares misfit of the S-98 shape to the cuts, per candidate.

    Candidates are rows of `gamma_r`, `gamma_s`, `x` (q²·J_r, q²·J_s, x) and `phase_rate`
    (candidates, maps): q cos(φ + φ0) v per map. Each map gets its own linear contrast and
    offset (the centred regression of the cut on the shape), so rough scaling does not matter.
    """
    decay_r = np.exp(-gamma_r[:, None] * tau[None, :])
    decay_s = np.exp(-gamma_s[:, None] * tau[None, :])
    cross = np.sqrt(decay_r * decay_s)
    x = x[:, None]
    residual = np.zeros(gamma_r.shape[0])
    for a, values in enumerate(cut):  # one map at a time: (candidates, lags)
        valid = np.isfinite(values)
        if np.count_nonzero(valid) < 3:
            continue
        y, lag = values[valid], tau[valid]
        shape = (
            (1 - x) ** 2 * decay_r[:, valid]
            + x**2 * decay_s[:, valid]
            + 2 * x * (1 - x) * cross[:, valid] * np.cos(phase_rate[:, a, None] * lag[None, :])
        )
        centred = shape - shape.mean(axis=-1, keepdims=True)
        y_centred = y - y.mean()
        variance = np.sum(centred**2, axis=-1)
        covariance = centred @ y_centred
        explained = np.where(variance > 1e-300, covariance**2 / np.maximum(variance, 1e-300), 0.0)
        residual += np.sum(y_centred**2) - explained
    return residual


def _grid_search(cut, tau, q, phi, speed, phi0):
    """(J_r, J_s, x, |v|, φ0, flow gain) of the S-98 form that best fits the cuts (maps × lags).

    Alternates two grid searches, twice: over (q²J_r ≤ q²J_s, x) at the current (v, φ0) — the
    exchanged labelling is the same curve; J_r = 0, a static reference, is on the grid — and over
    (|v|, φ0) at the current rates. The spectral (v, φ0) is only the first guess: fringes that
    decay within a period show no spectral peak. The flow gain, 1 − misfit(v, φ0)/misfit(v = 0)
    at the final rates, is how much of the cuts the flow explains: near 0 where the window
    shows no fringes (no cross term left, or none yet), and its v and φ0 are then noise.
    """
    total = tau[-1]
    rates = np.concatenate([[0.0], np.geomspace(_SLOWEST / total, _FASTEST / tau[0], _RATE_GRID)])
    r_index, s_index = np.triu_indices(rates.shape[0])
    pairs_r = np.repeat(rates[r_index], _FRACTIONS.shape[0])
    pairs_s = np.repeat(rates[s_index], _FRACTIONS.shape[0])
    pairs_x = np.tile(_FRACTIONS, r_index.shape[0])
    q_max = float(np.max(q))
    # Up to π/2 of phase a frame: faster fringes alias, and the cut cannot tell their speed.
    speeds = np.concatenate([[0.0], np.geomspace(0.3 / total, 0.5 * np.pi / tau[0], 24) / q_max])
    angles = np.arange(-90.0, 90.0, 10.0)
    grid_v, grid_phi0 = (a.ravel() for a in np.meshgrid(speeds, angles, indexing="ij"))
    grid_rates = q[None, :] * np.abs(np.cos(np.deg2rad(phi[None, :] + grid_phi0[:, None])))
    grid_rates = grid_rates * grid_v[:, None]
    speed = 0.0 if not np.isfinite(speed) else speed
    phi0 = 0.0 if not np.isfinite(phi0) else phi0
    best = 0
    for _ in range(2):
        rate = q * np.abs(np.cos(np.deg2rad(phi + phi0))) * speed
        misfit = _misfit(
            cut,
            tau,
            pairs_r,
            pairs_s,
            pairs_x,
            np.broadcast_to(rate, (pairs_r.shape[0], q.shape[0])),
        )
        best = int(np.argmin(misfit))
        n = grid_v.shape[0]
        misfit = _misfit(
            cut,
            tau,
            np.full(n, pairs_r[best]),
            np.full(n, pairs_s[best]),
            np.full(n, pairs_x[best]),
            grid_rates,
        )
        choice = int(np.argmin(misfit))
        speed, phi0 = float(grid_v[choice]), float(grid_phi0[choice])
    still = float(np.min(misfit[grid_v == 0.0]))
    gain = 1.0 - float(misfit[choice]) / still if still > 0 else 0.0
    q2 = float(np.mean(np.asarray(q) ** 2))
    return pairs_r[best] / q2, pairs_s[best] / q2, float(pairs_x[best]), speed, phi0, gain


def age_windows(n_times: int) -> list[range]:
    """Three consecutive row windows (one when there are too few frames)."""
    count = 3 if n_times >= 3 * _MIN_FRAMES_PER_AGE else 1
    edges = np.linspace(0, n_times, count + 1).astype(int)
    return [range(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def normalised_maps(c2: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(c2 − offset) / contrast per map, with the data-driven `estimate_contrast_offset`."""
    contrast, offset = estimate_contrast_offset(c2, mask)
    return (c2 - offset[:, None, None]) / contrast[:, None, None]


def cut_changes(c2: np.ndarray, mask: np.ndarray, largest: int) -> np.ndarray:
    """How much the data change over k frames, for k = 1 … `largest`: the largest
    |h(τ + k) − h(τ)| over maps, age windows (`age_windows`) and lags τ ≥ 1 of the normalised
    one-time cuts h = (cut − offset) / contrast (`lag_cut`; contrast and offset per map from
    `estimate_contrast_offset`). Lags are those that at least half of a window's rows reach.

    It reads the data, not a model: fringes, decays and fraction changes count alike, and a
    component that has decayed within one frame changes nothing at lags ≥ 1. Noise enlarges it.

    **Returns:** the changes, shape `(largest,)`, in units of each map's contrast.
    """
    n = c2.shape[-1]
    normalised = normalised_maps(c2, mask)
    changes = np.zeros(largest)
    for rows in age_windows(n):
        reach = n - rows.start - len(rows) // 2
        if reach < 2:
            continue
        cut = lag_cut(normalised, mask, rows, np.arange(1, reach))
        for k in range(1, min(largest, cut.shape[-1] - 1) + 1):
            step = np.abs(cut[:, k:] - cut[:, :-k])
            if np.any(np.isfinite(step)):
                changes[k - 1] = max(changes[k - 1], float(np.nanmax(step)))
    return changes


def read_cuts(data: XPCSData) -> DataEstimate:
    """Rates, fraction and speed at a few ages from the one-time cuts (module docstring)."""
    c2 = np.asarray(data.c2, float)
    mask = np.asarray(data.mask, bool)
    q, phi, t, dt = (np.asarray(a, float) for a in (data.q, data.phi, data.t, data.dt))
    dt = float(dt)
    normalised = normalised_maps(c2, mask)
    omega_all = fringe_frequencies(c2, dt)
    speed_all, phi0 = speed_and_angle(omega_all, q, phi)
    windows = age_windows(t.shape[0])
    ages, reference, sample, share, speeds, angles, gains = [], [], [], [], [], [], []
    for rows in windows:
        span = t.shape[0] - rows.start - 1
        if span < 2:
            continue
        lags = np.unique(np.geomspace(1, span, _LAGS).astype(int))
        tau = t[np.minimum(rows.start + lags, t.shape[0] - 1)] - t[rows.start]
        cut = lag_cut(normalised, mask, rows, lags)
        j_r, j_s, x, speed, window_phi0, gain = _grid_search(cut, tau, q, phi, speed_all, phi0)
        ratio = math.sqrt(x / (1 - x))
        ages.append(float(np.mean(t[rows.start : rows.stop])))
        reference.append(j_r)
        sample.append(j_s)
        share.append(ratio / (1 + ratio))
        speeds.append(speed)
        angles.append(window_phi0)
        gains.append(gain)
    return DataEstimate(
        ages=np.array(ages),
        reference_rate=np.array(reference),
        sample_rate=np.array(sample),
        sample_share=np.array(share),
        speed=np.array(speeds, float),
        phi0=float(angles[int(np.argmax(gains))]) if angles else math.nan,
    )


def _power_law(ages: np.ndarray, values: np.ndarray, limit: float) -> tuple[float, float]:
    """(prefactor, exponent) of values ≈ prefactor · age^exponent (log-log least squares).

    The exponent is kept only when the values change monotonically with age (otherwise the
    differences are read as noise and the exponent is 0, the prefactor their geometric mean).
    """
    positive = np.isfinite(values) & (values > 0)
    if not np.any(positive):
        return 0.0, 0.0
    log_t, log_v = np.log(ages[positive]), np.log(values[positive])
    steps = np.diff(log_v)
    if log_v.shape[0] < 2 or not (np.all(steps > 0) or np.all(steps < 0)):
        return float(np.exp(np.mean(log_v))), 0.0
    exponent = float(np.clip(np.polyfit(log_t, log_v, 1)[0], -limit, limit))
    return float(np.exp(np.mean(log_v - exponent * log_t))), exponent


def velocity_branches(
    ages: np.ndarray, speeds: np.ndarray, v_offset: float, count: int = 4
) -> list[tuple[float, float]]:
    """Candidate (v0, β) with |v0·t^β + v_offset| closest to the speeds at the ages, best
    first: the best of each sign pattern of v at the ages.

    The fringes see only |v|. With an offset the flow may reverse inside the window, and a
    speed that falls and rises again is either a slowing flow or one that stops and turns: the
    sign of v at each age is a branch the data cannot choose, so each pattern of signs gets
    its own best law (a grid search with least absolute deviations, so that one window without
    fringes cannot dominate). Without an offset, v0 > 0 and there is one branch.
    """
    seen = np.isfinite(speeds)
    if not np.any(seen):
        return [(0.0, 0.0)]
    ages, speeds = ages[seen], speeds[seen]
    scale = float(np.max(speeds) + abs(v_offset))
    prefactors = np.geomspace(1e-3 * scale, 10 * scale, 161)
    exponents = np.linspace(-1.0, 1.0, 41)
    law = prefactors[:, None, None] * ages[None, None, :] ** exponents[None, :, None] + v_offset
    misfit = np.sum(np.abs(np.abs(law) - speeds[None, None, :]), axis=-1).ravel()
    pattern = (law > 0).reshape(misfit.shape[0], -1) @ (2 ** np.arange(ages.shape[0]))
    branches = []
    for code in np.unique(pattern):
        members = np.flatnonzero(pattern == code)
        best = int(members[np.argmin(misfit[members])])
        branches.append((float(misfit[best]), best))
    branches.sort()
    laws = []
    for _, best in branches[:count]:
        i, j = np.unravel_index(best, (prefactors.shape[0], exponents.shape[0]))
        laws.append((float(prefactors[i]), float(exponents[j])))
    return laws


def estimate_start(data: XPCSData, model: HeterodyneModel | None = None) -> HeterodyneModel:
    """A start model read off the data (module docstring), for any model with the standard names.

    Only parameters that the model has by the standard names (`D0_ref`, `alpha_ref`,
    `D0_sample`, `alpha_sample`, `v0`, `beta`, `f0`, `f1`, `f3`, `phi0`) are set, each within its
    bounds; every other parameter, and any that the data cannot inform, keeps `model`'s value.
    The reference is taken as the slower component (the usual experiment); the one-time form
    is symmetric under exchanging the components, so the start strategies try the other
    labelling too.

    **Arguments:**

    - `data`: an `XPCSData`.
    - `model`: the template (default `HeterodyneModel()`).

    **Returns:** a `HeterodyneModel`.
    """
    return estimate_starts(data, model)[0]


def estimate_starts(
    data: XPCSData, model: HeterodyneModel | None = None, *, branches: int = 4
) -> list[HeterodyneModel]:
    """`estimate_start`, then the same estimate on the other flow branches: with a velocity
    offset the fringes cannot tell a slowing flow from one that reverses (`velocity_branches`),
    so each sign pattern of v at the ages read off the cuts is a start of its own (up to
    `branches` in all). Without an offset the list has one model."""
    model = HeterodyneModel() if model is None else model
    reading = read_cuts(data)
    values = model.to_dict()
    f2 = float(values.get("f2", 0.0))
    d0_ref, alpha_ref = _power_law(reading.ages, reading.reference_rate, 1.5)
    d0_sample, alpha_sample = _power_law(reading.ages, reading.sample_rate, 1.5)
    v_offset = float(values.get("v_offset", 0.0))
    if v_offset == 0.0:
        flows = [_power_law(reading.ages, reading.speed, 1.0)]
    else:
        flows = velocity_branches(reading.ages, reading.speed, v_offset, count=branches)
    shares = np.clip(reading.sample_share, 1e-3, 1.0)
    if shares.shape[0] >= 2 and np.ptp(np.log(shares)) > 0.1:
        f1, log_f0 = np.polyfit(reading.ages, np.log(shares), 1)
        f0 = float(np.exp(log_f0 + f1 * f2))
    else:
        f1, f0 = 0.0, float(np.mean(shares))
    common = {
        "D0_ref": d0_ref,
        "alpha_ref": alpha_ref,
        "D0_sample": d0_sample,
        "alpha_sample": alpha_sample,
        "f0": f0,
        "f1": float(f1),
        "f3": 0.0,
        "phi0": None if np.isnan(reading.phi0) else reading.phi0,
    }
    return [
        _within_bounds(
            model, {**common, "v0": v0 if v0 > 0 else None, "beta": beta if v0 > 0 else None}
        )
        for v0, beta in flows
    ]


def _within_bounds(model: HeterodyneModel, proposal: dict) -> HeterodyneModel:
    """`model` with the proposed values that it has by name, finite and clipped to bounds."""
    specs = {spec.name: spec for spec in model.parameter_specs}
    changes = {}
    for name, value in proposal.items():
        if name in specs and value is not None and np.isfinite(value):
            spec = specs[name]
            changes[name] = float(np.clip(value, spec.lower, spec.upper))
    if "f0" in changes and "f1" in changes and "f0" in specs:
        changes["f0"] = min(changes["f0"], specs["f0"].upper)
    return model.replace(**changes)
