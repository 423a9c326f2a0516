"""Simulated cases for the NLSQ recovery suite (issue 12), and the criterion that scores a fit.

Shared by `benchmarks/bench_recovery.py` (all cases) and `tests/test_nlsq_recovery.py` (a
subset); the benchmark puts this folder on `sys.path`.

**Cases.** `recovery_cases(n, seed)` draws `n` cases across the parameter box of SPEC §3, cycling
through `CATEGORIES` (so any n ≥ 9 covers each), each with its category's feature forced and the
other features mixed in at random:

- geometry: q log-uniform in [0.005, 0.02] Å⁻¹, dt log-uniform in [0.01, 0.5] s, frames 100–200
  (40–100 with `few_frames`; at most 120 with `many_angles`), t = dt·(1 … frames); 2–6 angles
  (16–23 with `many_angles`) spread over 180° with a random origin; phi0 uniform in [−60°, 60°]
  (`phi0_span`: [−90°, 90°), the whole period, with 90);
- transport: each component's decay over the window, K_n = q²·∫J_n dt (trapezoid on the grid),
  log-uniform in [0.3, 30] (capped so that D0 ≤ 5e5), the two at least a factor 2 apart unless
  `similar_rates` (D0_ref within 20 % of D0_sample, same exponent); `static_reference`:
  D0_ref = alpha_ref = 0; `ageing`: alpha_ref, alpha_sample in [−0.8, 0.8] (not both within 0.2
  of 0), beta in [−0.5, 0.5] (otherwise all three are 0);
- velocity: a mean speed giving 1–6 fringes over the window at φ + phi0 = 0 (0.3–0.8 with
  `slow_flow`), scaled down where needed so that the phase advances by at most 0.8 rad a frame
  (no aliasing); `flow_reversal`: v_offset = −V fixed at that nonzero truth, beta in [0.4, 1] or
  [−0.6, −0.3] and v0 such that v(t) crosses zero between 30 % and 70 % of the window;
- fraction f_s = f0·exp(f1·t) + f3: `constant_fraction` (f1 = 0; f0 and f3 then enter only as
  their sum), `growing_fraction`, `decaying_fraction` (f1 < 0), or `saturating_fraction` (f1 > 0,
  f_s reaches 1 between 30 % and 70 % of the window and stays clipped there);
- contrast 0.05–0.4 and offset ≈ 1, varying smoothly with φ (a Fourier series of order 2, so the
  truth is representable by every scaling mode, `"fourier"` included); Gaussian noise σ of
  0.3–2 % of the mean contrast (5–10 % with `high_noise`).

The four exactly degenerate offsets `DEGENERATE_FIXED` are fixed at the truth; the other ten
physics parameters are free and start at the `HeterodyneModel()` defaults (`RecoveryCase.start`).
The generator is pure: case i depends only on (seed, i), so a shorter list is a prefix of a longer.

**Criterion** (`basin_verdict`). A fit *reaches the global basin* when

    χ²_fit ≤ χ²_truth + tol,   tol = 2·√(2·n_free) + 1,

(χ²_truth: the truth's physics, contrast and offset under the fit's σ and mask, `truth_chi2`;
the truth is a feasible point, so the global minimum lies at or below it; n_free counts every
free fit parameter, scaling coefficients included) and every free physics parameter lies within
`n_sigma` = 5 standard errors of the truth, after the exact symmetries are taken out: phi0 is
compared modulo 180°, v0 by magnitude when v_offset = 0, and at constant fraction (f1 = 0) the
truth is also relabelled with reference ↔ sample exchanged (f_s → 1 − f_s); with exactly two
angles (modulo 180°) and v_offset = 0, a second phi0 (with v rescaled) fits the data exactly as
well (`_mirrored`) and is a labelling too. The labelling closest to the fit (least Σz²) counts,
each taken at its member closest to the fit where the truth is a set of identical models (at
f1 = 0 only f0 + f3 matters; at D0_n = 0, alpha_n does not matter; `_closest_equivalent`).
A parameter with an infinite or undefined standard error passes the z test (only the χ²
condition judges it) and is listed in `BasinVerdict.undetermined`.
"""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax.random as jr
import numpy as np

import heterojax as hj


# Exactly degenerate with D0 / v0 / f0 (an offset rate trades with the prefactor; f2 rescales
# f0), so fixed at the truth in every case.
DEGENERATE_FIXED = ("D_offset_ref", "D_offset_sample", "v_offset", "f2")
CATEGORIES = (
    "ageing",
    "saturating_fraction",
    "decaying_fraction",
    "flow_reversal",
    "static_reference",
    "similar_rates",
    "few_frames",
    "high_noise",
    "many_angles",
)
# Features a case may carry besides its category, in the order names list them.
FEATURES = (
    *CATEGORIES,
    "growing_fraction",
    "constant_fraction",
    "slow_flow",
)
N_SIGMA = 5.0
# The largest phase advance per frame (rad) at φ + phi0 = 0: the fringes stay well sampled.
_MAX_PHASE_PER_FRAME = 0.8
_MAX_D0 = 5e5
_MAX_V0 = 5e4
_MAX_V_OFFSET = 5e3


@dataclasses.dataclass(frozen=True, eq=False)
class RecoveryCase:
    """One simulated dataset, its truth and how a fit is started.

    **Fields:**

    - `name`: `"NN-category"` plus `+feature` for every extra feature.
    - `category`: the feature the case was drawn for (one of `CATEGORIES`, or `"issue"`).
    - `features`: every feature present (category first).
    - `truth`: the `HeterodyneModel` the data are simulated from.
    - `t`: the frame times (s), `dt·(1 … frames)`; `q` (Å⁻¹); `phi`: angles (deg).
    - `contrast`, `offset`: the simulated values per angle.
    - `noise`: σ of the Gaussian noise on c2.
    - `fixed`: names held fixed at the truth.
    - `data_seed`: the seed of the noise.
    - `start_values`: `(name, value)` pairs that replace the plain start's values (used by the
        issue cases).
    """

    name: str
    category: str
    features: tuple[str, ...]
    truth: hj.HeterodyneModel
    t: np.ndarray
    q: float
    phi: np.ndarray
    contrast: np.ndarray
    offset: np.ndarray
    noise: float
    fixed: tuple[str, ...] = DEGENERATE_FIXED
    data_seed: int = 0
    start_values: tuple[tuple[str, float], ...] = ()

    @property
    def dt(self) -> float:
        return float(self.t[1] - self.t[0])

    @property
    def n_angles(self) -> int:
        return int(self.phi.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.t.shape[0])

    @property
    def free(self) -> tuple[str, ...]:
        """The free physics parameters, in canonical order."""
        return tuple(name for name in hj.PARAMETER_NAMES if name not in self.fixed)

    def truth_values(self) -> dict[str, float]:
        """Name → true value of every physics parameter."""
        return {name: float(value) for name, value in self.truth.to_dict().items()}

    def data(self) -> hj.XPCSData:
        """The simulated maps with σ known and the diagonal masked (as `tests/test_nlsq.py`)."""
        simulated = hj.simulate(
            self.truth,
            self.t,
            q=self.q,
            phi=self.phi,
            contrast=self.contrast,
            offset=self.offset,
            noise=self.noise,
            key=jr.key(self.data_seed),
        )
        return hj.XPCSData(
            simulated.c2,
            simulated.t,
            q=simulated.q,
            phi=simulated.phi,
            dt=self.dt,
            sigma=simulated.sigma,
            diagonal="mask",
        )

    def start(self) -> hj.HeterodyneModel:
        """The plain start: `HeterodyneModel()` defaults for the free physics parameters, the
        truth for the fixed ones, then `start_values`."""
        truth = self.truth_values()
        values = {name: truth[name] for name in self.fixed if name in truth}
        values.update(dict(self.start_values))
        return hj.HeterodyneModel().replace(**values)


# ------------------------------------------------------------------------------ the generator


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _time_integral(t: np.ndarray, exponent: float) -> float:
    """∫ t^exponent over the grid by the trapezoid rule (as the model integrates)."""
    values = t**exponent
    return float(np.sum(np.diff(t) * (values[1:] + values[:-1]) / 2))


def _smooth_in_angle(
    rng: np.random.Generator, phi: np.ndarray, mean: float, amplitude: float
) -> np.ndarray:
    """mean·(1 + Σ_{k≤2} a_k cos kφ + b_k sin kφ), |a_k|, |b_k| ≤ amplitude: per-angle values
    that the order-2 Fourier scaling represents exactly."""
    radians = np.deg2rad(phi)
    series = np.ones_like(radians)
    for k in (1, 2):
        a, b = rng.uniform(-amplitude, amplitude, 2)
        series += a * np.cos(k * radians) + b * np.sin(k * radians)
    return mean * series


def _largest_decay(q: float, t: np.ndarray, alpha: float) -> float:
    """The decay K = q²·∫J dt of D0 = _MAX_D0 (with J = D0·t^alpha): K is capped there."""
    return _MAX_D0 * q**2 * _time_integral(t, alpha)


def _prefactor(decay: float, q: float, t: np.ndarray, alpha: float) -> float:
    """D0 such that q²·∫D0·t^alpha dt over the window equals `decay`."""
    return decay / (q**2 * _time_integral(t, alpha))


def _fraction(rng: np.random.Generator, kind: str, t: np.ndarray) -> dict[str, float]:
    """f0, f1, f3 for a fraction law of the given kind on the window t (f2 = 0)."""
    t0, width = float(t[0]), float(t[-1] - t[0])
    if kind == "constant_fraction":
        share = rng.uniform(0.15, 0.85)
        f3 = share * rng.uniform(0.0, 0.5)
        return {"f0": share - f3, "f1": 0.0, "f3": f3}
    f3 = 0.0 if rng.uniform() < 0.5 else rng.uniform(0.05, 0.2)
    if kind == "growing_fraction":
        first = rng.uniform(f3 + 0.05, 0.45)
        last = rng.uniform(first + 0.15, 0.9)
        f1 = math.log((last - f3) / (first - f3)) / width
    elif kind == "decaying_fraction":
        first = rng.uniform(max(0.5, f3 + 0.35), 0.9)
        last = rng.uniform(f3 + 0.05, first - 0.25)
        f1 = math.log((last - f3) / (first - f3)) / width
    elif kind == "saturating_fraction":
        crossing = rng.uniform(0.3, 0.7) * width  # after t0
        first = rng.uniform(max(0.15, f3 + 0.1), 0.6)
        f1 = math.log((1 - f3) / (first - f3)) / crossing
        if f1 > 8.0:  # inside the f1 box: start higher so that the growth is slower
            f1 = 8.0
            first = f3 + (1 - f3) * math.exp(-f1 * crossing)
    else:
        raise ValueError(f"unknown fraction kind {kind!r}")
    return {"f0": (first - f3) * math.exp(-f1 * t0), "f1": f1, "f3": f3}


def _velocity(
    rng: np.random.Generator,
    t: np.ndarray,
    q: float,
    beta: float,
    *,
    reversal: bool,
    slow: bool,
) -> dict[str, float]:
    """v0, beta, v_offset: a few fringes over the window, never more than
    `_MAX_PHASE_PER_FRAME` a frame."""
    t0, width, dt = float(t[0]), float(t[-1] - t[0]), float(t[1] - t[0])
    fringes = rng.uniform(0.3, 0.8) if slow else rng.uniform(1.0, min(6.0, t.size / 10))
    speed = 2 * math.pi * fringes / (q * width)
    if reversal:
        beta = rng.uniform(0.4, 1.0) if rng.uniform() < 0.6 else rng.uniform(-0.6, -0.3)
        crossing = t0 + rng.uniform(0.3, 0.7) * width
        v_offset, v0 = -speed, speed / crossing**beta
    else:
        v_offset, v0 = 0.0, speed * width / _time_integral(t, beta)
    velocity = v0 * t**beta + v_offset
    factor = min(
        1.0,
        _MAX_PHASE_PER_FRAME / (q * float(np.max(np.abs(velocity))) * dt),
        _MAX_V0 / v0,
        _MAX_V_OFFSET / max(abs(v_offset), 1e-300),
    )
    return {"v0": v0 * factor, "beta": beta, "v_offset": v_offset * factor}


def _check_inside_bounds(values: Mapping[str, float], name: str) -> None:
    for name in hj.PARAMETER_NAMES:
        spec, value = hj.PARAMETERS[name], values[name]
        if not spec.lower <= value <= spec.upper:
            raise AssertionError(f"case {name}: {spec.name} = {value} outside its bounds")


def _draw_case(
    index: int, category: str, rng: np.random.Generator, phi0_span: float = 60.0
) -> RecoveryCase:
    uniform = rng.uniform
    many_angles = category == "many_angles"
    few_frames = category == "few_frames" or uniform() < 0.2
    high_noise = category == "high_noise" or uniform() < 0.15
    ageing = category == "ageing" or uniform() < 0.35
    similar = category == "similar_rates"
    static = category == "static_reference" or (not similar and uniform() < 0.1)
    reversal = category == "flow_reversal" or uniform() < 0.1
    slow_flow = not reversal and uniform() < 0.15
    if category in ("saturating_fraction", "decaying_fraction"):
        fraction_kind = category
    else:
        fraction_kind = str(
            rng.choice(
                [
                    "constant_fraction",
                    "growing_fraction",
                    "decaying_fraction",
                    "saturating_fraction",
                ],
                p=[0.35, 0.3, 0.2, 0.15],
            )
        )

    n_angles = int(rng.integers(16, 24)) if many_angles else int(rng.integers(2, 7))
    if few_frames:
        frames = int(rng.integers(40, 101))
    else:
        frames = int(rng.integers(60, 121)) if many_angles else int(rng.integers(100, 201))
    q = round(_log_uniform(rng, 0.005, 0.02), 5)
    dt = float(f"{_log_uniform(rng, 0.01, 0.5):.3g}")
    t = dt * np.arange(1, frames + 1, dtype=np.float64)
    spacing = 180.0 / n_angles
    origin = uniform(0.0, 180.0)
    phi = origin + spacing * (np.arange(n_angles) + uniform(-0.2, 0.2, n_angles))
    phi = np.round((phi + 180.0) % 360.0 - 180.0, 1)
    phi0 = round(uniform(-phi0_span, phi0_span), 2)

    alpha_ref = alpha_sample = beta = 0.0
    if ageing:
        beta = uniform(-0.5, 0.5)
        if static or similar:
            alpha_sample = rng.choice([-1.0, 1.0]) * uniform(0.2, 0.8)
            alpha_ref = 0.0 if static else alpha_sample
        else:
            while max(abs(alpha_ref), abs(alpha_sample)) < 0.2:
                alpha_ref, alpha_sample = uniform(-0.8, 0.8, 2)
    # Visible decays: K = q²·∫J dt in [0.3, 30] (and D0 ≤ _MAX_D0).
    highest = min(30.0, _largest_decay(q, t, alpha_ref), _largest_decay(q, t, alpha_sample))
    if static or similar:
        d0_sample = _prefactor(_log_uniform(rng, 0.3, highest), q, t, alpha_sample)
        d0_ref = 0.0 if static else d0_sample * uniform(1 / 1.2, 1.2)
    else:
        # At least a factor 2 apart, the reference the slower in 70 % of the cases.
        decays = (1.0, 1.0)
        while abs(math.log(decays[0] / decays[1])) < math.log(2.0):
            decays = (_log_uniform(rng, 0.3, highest), _log_uniform(rng, 0.3, highest))
        slow, fast = sorted(decays)
        decay_ref, decay_sample = (slow, fast) if uniform() < 0.7 else (fast, slow)
        d0_ref = _prefactor(decay_ref, q, t, alpha_ref)
        d0_sample = _prefactor(decay_sample, q, t, alpha_sample)
    velocity = _velocity(rng, t, q, beta, reversal=reversal, slow=slow_flow)
    fraction = _fraction(rng, fraction_kind, t)
    values = {
        "D0_ref": d0_ref,
        "alpha_ref": alpha_ref,
        "D_offset_ref": 0.0,
        "D0_sample": d0_sample,
        "alpha_sample": alpha_sample,
        "D_offset_sample": 0.0,
        **velocity,
        "f2": 0.0,
        **fraction,
        "phi0": phi0,
    }
    values = {name: float(f"{float(values[name]):.6g}") for name in hj.PARAMETER_NAMES}

    # Not rounded: the order-2 Fourier scaling must represent them exactly.
    contrast = _smooth_in_angle(rng, phi, uniform(0.05, 0.4), 0.03)
    offset = _smooth_in_angle(rng, phi, 1.0 + uniform(-0.02, 0.02), 0.005)
    relative_noise = uniform(0.05, 0.10) if high_noise else _log_uniform(rng, 0.003, 0.02)
    noise = float(f"{relative_noise * float(np.mean(contrast)):.4g}")

    present = {
        "ageing": ageing,
        "saturating_fraction": fraction_kind == "saturating_fraction",
        "decaying_fraction": fraction_kind == "decaying_fraction",
        "flow_reversal": reversal,
        "static_reference": static,
        "similar_rates": similar,
        "few_frames": few_frames,
        "high_noise": high_noise,
        "many_angles": many_angles,
        "growing_fraction": fraction_kind == "growing_fraction",
        "constant_fraction": fraction_kind == "constant_fraction",
        "slow_flow": slow_flow,
    }
    extras = tuple(f for f in FEATURES if present[f] and f != category)
    name = f"{index:02d}-{category}" + "".join(f"+{f}" for f in extras)
    _check_inside_bounds(values, name)
    return RecoveryCase(
        name=name,
        category=category,
        features=(category, *extras),
        truth=hj.HeterodyneModel.from_dict(values),
        t=t,
        q=q,
        phi=phi,
        contrast=contrast,
        offset=offset,
        noise=noise,
        data_seed=int(rng.integers(0, 2**31 - 1)),
    )


def recovery_cases(n: int = 48, seed: int = 0, phi0_span: float = 60.0) -> list[RecoveryCase]:
    """`n` cases cycling through `CATEGORIES`; case i depends only on (seed, i).

    **Arguments:**

    - `n`: the number of cases (any n ≥ 9 covers every category).
    - `seed`: the seed of the draw (of the parameters and of the noise).
    - `phi0_span`: phi0 is drawn uniform in [−span, span] degrees; 90 is the whole period,
        flows near ±90° included. Every other draw of a case is the same for any span.

    **Returns:** a list of `RecoveryCase`.
    """
    if n < 0:
        raise ValueError(f"`n` must be non-negative; got {n}.")
    return [
        _draw_case(i, CATEGORIES[i % len(CATEGORIES)], np.random.default_rng([seed, i]), phi0_span)
        for i in range(n)
    ]


# ------------------------------------------------------------------------------ the issue cases


def issue_case_false_minimum() -> RecoveryCase:
    """Issue 12's first case: 3 angles × 200 frames, an ageing sample (alpha_sample = 0.3), a
    10× slower reference, beta = 0.2 and a growing fraction (0.25 → 0.51), started with the
    reference slower than the sample but both far off (D0_ref = 100, D0_sample = 1000, v0 = 20,
    the rest at the defaults)."""
    dt, frames = 0.1, 200
    truth = {
        "D0_ref": 300.0,
        "alpha_ref": 0.0,
        "D_offset_ref": 0.0,
        "D0_sample": 3000.0,
        "alpha_sample": 0.3,
        "D_offset_sample": 0.0,
        "v0": 30.0,
        "beta": 0.2,
        "v_offset": 0.0,
        "f0": 0.15,
        "f1": 0.05,
        "f2": 0.0,
        "f3": 0.1,
        "phi0": 5.0,
    }
    contrast = 0.3
    return RecoveryCase(
        name="issue-false_minimum",
        category="issue",
        features=("issue", "ageing", "growing_fraction"),
        truth=hj.HeterodyneModel.from_dict(truth),
        t=dt * np.arange(1, frames + 1, dtype=np.float64),
        q=0.01,
        phi=np.array([0.0, 45.0, 90.0]),
        contrast=np.full(3, contrast),
        offset=np.ones(3),
        noise=0.005 * contrast,
        data_seed=12,
        start_values=(("D0_ref", 100.0), ("D0_sample", 1000.0), ("v0", 20.0)),
    )


def issue_case_saturating(frames: int = 1000) -> RecoveryCase:
    """Issue 12's second case: 23 angles, dt = 0.01 s at 1000 frames, f_s = f0·exp(f1·t) with
    f0 = 0.2 reaching 1 at t = 5 s (mid-window) and clipped there to the end; started at the
    truth. Fewer `frames` keep the same truth and the same 10 s window (dt = 10 s / frames)."""
    dt = 10.0 / frames
    f0 = 0.2
    truth = {
        "D0_ref": 500.0,
        "alpha_ref": 0.0,
        "D_offset_ref": 0.0,
        "D0_sample": 5000.0,
        "alpha_sample": 0.0,
        "D_offset_sample": 0.0,
        "v0": 150.0,
        "beta": 0.0,
        "v_offset": 0.0,
        "f0": f0,
        "f1": math.log(1 / f0) / 5.0,
        "f2": 0.0,
        "f3": 0.0,
        "phi0": 10.0,
    }
    n_angles, contrast = 23, 0.2
    return RecoveryCase(
        name=f"issue-saturating-{n_angles}x{frames}",
        category="issue",
        features=("issue", "saturating_fraction", "many_angles"),
        truth=hj.HeterodyneModel.from_dict(truth),
        t=dt * np.arange(1, frames + 1, dtype=np.float64),
        q=0.01,
        phi=-180.0 + (np.arange(n_angles) + 0.5) * 360.0 / n_angles,
        contrast=np.full(n_angles, contrast),
        offset=np.ones(n_angles),
        noise=0.01 * contrast,
        data_seed=1000 + frames,
        start_values=tuple(truth.items()),
    )


# ------------------------------------------------------------------------------ the criterion


def chi2_tolerance(n_free: int) -> float:
    """tol = 2·√(2·n_free) + 1: how far above the truth's χ² a fit may end and still count."""
    return 2.0 * math.sqrt(2.0 * n_free) + 1.0


def model_chi2(model: hj.HeterodyneModel, contrast, offset, data: hj.XPCSData) -> float:
    """χ² on `fit_nlsq`'s definition: Σ over `data.mask` (the pairs t1 < t2 when the diagonal
    is masked) of ((model − c2)/σ)², σ = `data.sigma`."""
    maps = model.c2(data.t, q=data.q, phi=data.phi, contrast=contrast, offset=offset)
    residual = (np.asarray(maps) - np.asarray(data.c2)) / np.asarray(data.sigma)
    return float(np.sum(np.where(np.asarray(data.mask), residual, 0.0) ** 2))


def truth_chi2(case: RecoveryCase, data: hj.XPCSData) -> float:
    """χ² of the truth (physics, contrast and offset as simulated), `model_chi2`."""
    return model_chi2(case.truth, case.contrast, case.offset, data)


def _swapped(values: Mapping[str, float]) -> dict[str, float]:
    """The truth relabelled with reference ↔ sample exchanged and f_s → 1 − f_s (exact at
    constant fraction; f0 and f3 keep their proportion)."""
    swapped = dict(values)
    for a, b in (("D0_ref", "D0_sample"), ("alpha_ref", "alpha_sample")):
        swapped[a], swapped[b] = values[b], values[a]
    swapped["D_offset_ref"] = values["D_offset_sample"]
    swapped["D_offset_sample"] = values["D_offset_ref"]
    share = values["f0"] * math.exp(-values["f1"] * values["f2"]) + values["f3"]
    if 0 < share < 1:
        factor = (1 - share) / share
        swapped["f0"], swapped["f3"] = values["f0"] * factor, values["f3"] * factor
    return swapped


def _mirrored(values: Mapping[str, float], phi: np.ndarray) -> dict[str, float] | None:
    """The truth with the second phi0 that two angles cannot tell apart, or None.

    With two distinct angles (modulo 180°) the data fix only v(t)·|cos(φ_a + phi0)|, a = 1, 2.
    With u = φ1 + phi0 and d = φ2 − φ1, cos(u + d)/cos u = cos d − sin d·tan u, so
    tan u' = 2·cot d − tan u gives the same ratio with the opposite sign, and
    v' = v·|cos u|/|cos u'| the same products: an exact symmetry, as long as v can be rescaled
    (v_offset = 0; a fixed offset cannot).
    """
    angles = np.unique(np.round(np.mod(np.asarray(phi, float), 180.0), 9))
    if angles.size != 2 or values["v_offset"] != 0:
        return None
    first, second = (math.radians(a) for a in angles)
    u = first + math.radians(values["phi0"])
    if abs(math.cos(u)) < 1e-9:
        return None
    mirrored_u = math.atan(2.0 / math.tan(second - first) - math.tan(u))
    phi0 = (math.degrees(mirrored_u - first) + 90.0) % 180.0 - 90.0
    cosine = abs(math.cos(first + math.radians(phi0)))
    if cosine < 1e-9:
        return None
    return {**values, "phi0": phi0, "v0": values["v0"] * abs(math.cos(u)) / cosine}


def _closest_equivalent(
    values: Mapping[str, float], fitted: Mapping[str, float], stderr: Mapping[str, float]
) -> dict[str, float]:
    """The member of the truth's class of identical models closest to the fit.

    Some truths are a set of parameter vectors, not a point: at f1 = 0, f_s = f0 + f3 whatever
    the split, so the split (both ≥ 0) closest to the fitted pair in standard errors is taken,
    and where it puts f0 = 0 the truth's f1 is arbitrary too (set to the fitted value); with
    D0_n = 0, alpha_n is arbitrary (set to the fitted value). Only free parameters move.
    """
    values = dict(values)

    def weight(name: str) -> float:
        error = stderr.get(name, math.nan)
        return 1 / error**2 if math.isfinite(error) and error > 0 else 0.0

    if values["f1"] == 0 and "f0" in stderr and "f3" in stderr:
        total = values["f0"] + values["f3"]
        w0, w3 = weight("f0"), weight("f3")
        if w0 + w3 > 0:
            split = (w0 * fitted["f0"] + w3 * (total - fitted["f3"])) / (w0 + w3)
            values["f0"] = min(max(split, 0.0), total)
            values["f3"] = total - values["f0"]
        if values["f0"] == 0 and "f1" in stderr:
            values["f1"] = fitted["f1"]
    for suffix in ("_ref", "_sample"):
        if values[f"D0{suffix}"] == 0 and f"alpha{suffix}" in stderr:
            values[f"alpha{suffix}"] = fitted[f"alpha{suffix}"]
    return values


@dataclasses.dataclass(frozen=True)
class BasinVerdict:
    """Whether a fit reached the global basin (see the module docstring), and why not.

    **Fields:** `reached`; `chi2_fit`, `chi2_truth`, `delta_chi2` (fit − truth), `tolerance`,
    `chi2_ok`; `z`: name → (fit − truth)/stderr per free physics parameter (0 where the error
    is not finite); `worst`, `worst_z`: the largest |z|; `undetermined`: free physics parameters
    with an infinite or undefined standard error; `labelling`: `"as simulated"` or
    `"exchanged"` (reference ↔ sample), either with `", phi0 mirrored"` (two angles);
    `fitted`, `truth`: the compared values (canonical).
    """

    reached: bool
    chi2_fit: float
    chi2_truth: float
    delta_chi2: float
    tolerance: float
    chi2_ok: bool
    z: dict[str, float]
    worst: str | None
    worst_z: float
    undetermined: tuple[str, ...]
    labelling: str
    fitted: dict[str, float]
    truth: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _z_scores(
    fitted: Mapping[str, float],
    truth: Mapping[str, float],
    stderr: Mapping[str, float],
    names: tuple[str, ...],
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(z, canonical fitted values, canonical true values) with phi0 modulo 180° and |v0| when
    v_offset = 0."""
    z, fit_values, true_values = {}, {}, {}
    for name in names:
        fit, true = float(fitted[name]), float(truth[name])
        if name == "phi0":
            difference = (fit - true + 90.0) % 180.0 - 90.0
            fit = true + difference
        elif name == "v0" and truth["v_offset"] == 0 and fitted["v_offset"] == 0:
            fit, true = abs(fit), abs(true)
        error = float(stderr.get(name, math.nan))
        determined = math.isfinite(error) and error > 0
        z[name] = (fit - true) / error if determined else 0.0
        fit_values[name], true_values[name] = fit, true
    return z, fit_values, true_values


def basin_verdict(
    case: RecoveryCase, result: hj.NLSQResult, chi2_truth: float, *, n_sigma: float = N_SIGMA
) -> BasinVerdict:
    """Scores a fit of `case.data()` by the criterion of the module docstring.

    **Arguments:**

    - `case`: the case that was fitted.
    - `result`: the `NLSQResult` (its `chi2`, `names`, `stderr` and fitted model are used).
    - `chi2_truth`: `truth_chi2(case, data)` for the same data.
    - `n_sigma`: the z bound on every free physics parameter.

    **Returns:** a `BasinVerdict`.
    """
    physics = tuple(name for name in result.names if name in hj.PARAMETER_NAMES)
    fitted = result.parameters()
    stderr = {name: float(np.max(np.atleast_1d(result.stderr[name]))) for name in physics}
    undetermined = tuple(n for n in physics if not (math.isfinite(stderr[n]) and stderr[n] > 0))
    truth = case.truth_values()
    labellings = [("as simulated", truth)]
    if truth["f1"] == 0:
        labellings.append(("exchanged", _swapped(truth)))
    for label, values in list(labellings):
        mirrored = _mirrored(values, case.phi)
        if mirrored is not None:
            labellings.append((f"{label}, phi0 mirrored", mirrored))
    scored = []
    for label, values in labellings:
        values = _closest_equivalent(values, fitted, stderr)
        z, fit_values, true_values = _z_scores(fitted, values, stderr, physics)
        scored.append((sum(v * v for v in z.values()), label, z, fit_values, true_values))
    _, label, z, fit_values, true_values = min(scored, key=lambda item: item[0])
    worst = max(z, key=lambda name: abs(z[name])) if z else None
    worst_z = abs(z[worst]) if worst is not None else 0.0
    chi2_fit = float(result.chi2)
    tolerance = chi2_tolerance(len(result.names))
    chi2_ok = bool(np.isfinite(chi2_fit) and chi2_fit <= chi2_truth + tolerance)
    return BasinVerdict(
        reached=chi2_ok and worst_z <= n_sigma,
        chi2_fit=chi2_fit,
        chi2_truth=float(chi2_truth),
        delta_chi2=chi2_fit - float(chi2_truth),
        tolerance=tolerance,
        chi2_ok=chi2_ok,
        z=z,
        worst=worst,
        worst_z=worst_z,
        undetermined=undetermined,
        labelling=label,
        fitted=fit_values,
        truth=true_values,
    )


def held_out_case_low_ranked_basin() -> RecoveryCase:
    """Case 18 of a held-out draw (`recovery_cases(48, seed=36)`): ageing, a fraction that
    saturates, high noise; 4 angles × 190 frames. Its global basin ranks 6th among the 7
    distinct screened basin signatures within the margin (`AutoStarts.polish`)."""
    return recovery_cases(48, seed=36)[18]


def held_out_case_slow_minor_component() -> RecoveryCase:
    """Case 33 of a held-out draw (`recovery_cases(48, seed=36)`): 6 angles × 83 frames, a
    constant fraction and a slow flow; the reference carries 16 % of the light and decays 10×
    slower than the sample. Before the minor-slow starts (`AutoStarts`, `_minor_slow`) no start
    reached its basin and the fit stopped 33 above the global χ²."""
    return recovery_cases(48, seed=36)[33]


def held_out_case_wrong_labelling() -> RecoveryCase:
    """Case 13 of a held-out draw (`recovery_cases(48, seed=37)`): a static reference that the
    sample displaces by mid-window (a saturating fraction), 4 angles × 190 frames. Before the
    slow-vanishing hop moves (`_strategies._slow_vanishing`) the best fit carried the sample's
    decay on the reference, χ² 163 702 against the truth's 73 023."""
    return recovery_cases(48, seed=37)[13]


def held_out_case_static_reference() -> RecoveryCase:
    """Case 4 of a held-out draw (`recovery_cases(48, seed=38)`): a static reference with 58 %
    of the light, a constant fraction and a slow flow; 3 angles × 170 frames. Before the
    static-reference starts (`_strategies._static_reference`) the fit stopped 47 above the
    global χ² with a slowly decaying reference and a faster flow."""
    return recovery_cases(48, seed=38)[4]


def held_out_case_fringes_that_end_early() -> RecoveryCase:
    """Case 28 of a held-out draw (`recovery_cases(48, seed=38)`): a fraction that saturates at
    0.86 s of a 1.56 s window, so the fringes (the cross term) end early; 3 angles × 114
    frames. Before φ0 was read from the age window that shows the flow
    (`_estimate.read_cuts`) the estimate took 70° against −20° from the two windows without
    fringes and the fit ended 508 900 above the truth's χ²."""
    return recovery_cases(48, seed=38)[28]
