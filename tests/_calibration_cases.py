"""Speckle-level datasets with known truth for the error-calibration suite (issue 13).

Shared by `benchmarks/bench_calibration.py` (all cases) and `tests/test_nlsq_calibration.py`
(a subset); the benchmark puts this folder on `sys.path`.

**Cases.** `calibration_cases(n, seed)` draws `n` cases across the box of the issue, case i
depending only on (seed, i), alternating stationary and time-varying physics:

- geometry: q log-uniform in [0.005, 0.02] Å⁻¹, 100–400 frames, 2–8 angles spread over 180°
  with a random origin, phi0 uniform in [−60°, 60°] (`phi0_span`: [−90°, 90°), the whole
  period, with 90; every other draw of a case is the same for any span);
- detector: 100–2000 pixels per bin and 1–50 mean counts per pixel (both log-uniform), speckle
  contrast β in [0.1, 0.5] (⌈1/β⌉ coherent modes a pixel); with `detector="photon-starved"`,
  1 000–10 000 pixels per bin and 0.01–1 counts per pixel (photon noise dominates the speckle
  noise), every other draw the same;
- transport: the sample decays by K_s = q²·∫J_sample ∈ [1, 10] over the window (log-uniform,
  which sets dt); the reference is static (D0_ref = 0, fixed) in half the cases, else decays by
  K_r ∈ [0.1, 0.5]·K_s;
- velocity: 1–5 fringes over the window at φ + phi0 = 0, at most 0.8 rad a frame;
- fraction: f0 ∈ [0.2, 0.8];
- time-varying cases add alpha_sample ∈ [−0.5, 0.5], beta ∈ [−0.4, 0.4] and a fraction that
  changes by a factor e^{±0.6} over the window (f1), all free.

Free: D0_sample, v0, f0, phi0 (+ D0_ref when the reference moves; + alpha_sample, beta, f1 when
time-varying), with contrast and offset per angle; the rest fixed at the truth. The data are
`hj.simulate_speckle(..., correlate=True)` (Poisson counts, a plain two-time correlator), so the
noise on c2 is the real one: correlated along rows and columns, non-Gaussian at low counts.

**Score.** z = (estimate − truth) / standard error per free physics parameter; coverage of the
nominal 68 % and 90 % intervals is the fraction of |z| below 1 and 1.645.
"""

import dataclasses
import math

import jax.random as jr
import numpy as np

import heterojax as hj


_MAX_PHASE_PER_FRAME = 0.8
# Pixels per bin and mean counts per pixel a frame (ranges of log-uniform draws) by detector.
DETECTORS = {
    "speckle": {"pixels": (100, 2000), "counts": (1.0, 50.0)},
    "photon-starved": {"pixels": (1000, 10000), "counts": (0.01, 1.0)},
}
NOMINAL = {"68": 1.0, "90": 1.6448536269514722}


@dataclasses.dataclass(frozen=True, eq=False)
class CalibrationCase:
    """One speckle dataset's recipe: truth, geometry, detector and the free parameters."""

    name: str
    truth: hj.HeterodyneModel
    t: np.ndarray
    q: float
    phi: np.ndarray
    pixels: int
    counts: float
    contrast: float
    free: tuple[str, ...]
    data_seed: int

    @property
    def n_frames(self) -> int:
        return int(self.t.shape[0])

    @property
    def fixed(self) -> tuple[str, ...]:
        return tuple(name for name in hj.PARAMETER_NAMES if name not in self.free)

    def data(self) -> hj.XPCSData:
        """The simulated two-time maps (deterministic for the case)."""
        return hj.simulate_speckle(
            self.truth,
            self.t,
            q=self.q,
            phi=self.phi,
            key=jr.key(self.data_seed),
            pixels=self.pixels,
            counts=self.counts,
            contrast=self.contrast,
            correlate=True,
        )


def _log_uniform(rng, low, high):
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _case(
    seed: int, index: int, detector: str = "speckle", phi0_span: float = 60.0
) -> CalibrationCase:
    ranges = DETECTORS[detector]
    rng = np.random.default_rng([seed, index])
    varying = index % 2 == 1
    static_reference = rng.uniform() < 0.5
    q = _log_uniform(rng, 0.005, 0.02)
    frames = int(rng.integers(100, 401))
    angles = int(rng.integers(2, 9))
    phi = np.mod(rng.uniform(0, 180) + 180.0 * np.arange(angles) / angles, 360.0) - 180.0
    phi0 = float(rng.uniform(-phi0_span, phi0_span))
    pixels = int(round(_log_uniform(rng, *ranges["pixels"])))
    counts = _log_uniform(rng, *ranges["counts"])
    contrast = float(rng.uniform(0.1, 0.5))

    t = np.arange(1, frames + 1, dtype=float)  # dt = 1 s; the rates set the time scales
    window = t[-1] - t[0]
    alpha_sample = float(rng.uniform(-0.5, 0.5)) if varying else 0.0
    beta = float(rng.uniform(-0.4, 0.4)) if varying else 0.0
    # ∫ t^a dt over the window, so that the decays K hit their draws.
    integral = lambda a: (t[-1] ** (a + 1) - t[0] ** (a + 1)) / (a + 1)  # noqa: E731
    decay_sample = _log_uniform(rng, 1.0, 10.0)
    d0_sample = decay_sample / (q**2 * integral(alpha_sample))
    d0_ref = 0.0 if static_reference else rng.uniform(0.1, 0.5) * decay_sample / (q**2 * window)
    fringes = rng.uniform(1.0, 5.0)
    speed = min(2 * math.pi * fringes / (q * window), _MAX_PHASE_PER_FRAME / q)
    v0 = speed * window / integral(beta)
    f0 = float(rng.uniform(0.2, 0.8))
    f1 = 0.0
    if varying:
        change = rng.uniform(0.2, 0.6) * rng.choice([-1.0, 1.0])
        f1 = change / window
        # Keep f_s = f0·exp(f1·t) inside (0.05, 0.95) over the window.
        f0 = float(np.clip(f0 * math.exp(-f1 * t[0]), 0.05, 0.95 / math.exp(max(change, 0.0))))
    truth = hj.HeterodyneModel.from_dict(
        {
            "D0_ref": d0_ref,
            "alpha_ref": 0.0,
            "D0_sample": d0_sample,
            "alpha_sample": alpha_sample,
            "v0": v0,
            "beta": beta,
            "v_offset": 0.0,
            "f0": f0,
            "f1": f1,
            "f2": 0.0,
            "f3": 0.0,
            "phi0": phi0,
            "D_offset_ref": 0.0,
            "D_offset_sample": 0.0,
        }
    )
    free = ["D0_sample", "v0", "f0", "phi0"]
    if not static_reference:
        free.append("D0_ref")
    if varying:
        free += ["alpha_sample", "beta", "f1"]
    name = (
        f"{index:02d}-{'varying' if varying else 'stationary'}"
        f"{'+static_ref' if static_reference else ''}"
        f"-{angles}x{frames}-{pixels}px-{counts:.{1 if counts >= 1 else 3}f}cts"
    )
    return CalibrationCase(
        name=name,
        truth=truth,
        t=t,
        q=q,
        phi=phi,
        pixels=pixels,
        counts=counts,
        contrast=contrast,
        free=tuple(n for n in hj.PARAMETER_NAMES if n in free),
        data_seed=int(rng.integers(2**31)),
    )


def calibration_cases(
    n: int, seed: int = 0, detector: str = "speckle", phi0_span: float = 60.0
) -> list[CalibrationCase]:
    """The first `n` cases of the suite drawn with `seed` for a `detector` of `DETECTORS`, phi0
    uniform in [−`phi0_span`, `phi0_span`] degrees (90: the whole period)."""
    if detector not in DETECTORS:
        raise ValueError(f"`detector` must be one of {tuple(DETECTORS)}; got {detector!r}.")
    return [_case(seed, i, detector, phi0_span) for i in range(n)]


def _differences(case: CalibrationCase, result) -> dict[str, float]:
    """estimate − truth per free physics parameter, phi0's modulo 180° (φ0 and φ0 ± 180° give
    the same c2)."""
    estimate, truth = result.parameters(), case.truth.to_dict()
    differences = {}
    for name in case.free:
        difference = float(estimate[name]) - float(truth[name])
        if name == "phi0":
            difference = (difference + 90.0) % 180.0 - 90.0
        differences[name] = difference
    return differences


def z_scores(case: CalibrationCase, result) -> dict[str, float]:
    """(estimate − truth) / stderr per free physics parameter (phi0 modulo 180°)."""
    return {
        name: difference / float(result.stderr[name])
        for name, difference in _differences(case, result).items()
    }


def interval_hits(case: CalibrationCase, result, level: float) -> dict[str, bool]:
    """Whether `result.intervals(level)` holds the truth, per free physics parameter (phi0's
    truth taken modulo 180° nearest the estimate)."""
    intervals, estimate = result.intervals(level), result.parameters()
    hits = {}
    for name, difference in _differences(case, result).items():
        low, high = intervals[name]
        hits[name] = bool(low <= float(estimate[name]) - difference <= high)
    return hits


def coverage(z: np.ndarray) -> dict[str, float]:
    """Fraction of |z| inside the nominal 68 % and 90 % intervals, and the median |z|."""
    z = np.abs(np.asarray(z, float))
    z = z[np.isfinite(z)]
    figures = {f"cover_{level}": float(np.mean(z <= bound)) for level, bound in NOMINAL.items()}
    figures["median_abs_z"] = float(np.median(z)) if z.size else float("nan")
    figures["n"] = int(z.size)
    return figures
