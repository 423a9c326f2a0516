"""The quality report of a fit: what a careful user checks before trusting the numbers."""

import dataclasses

import numpy as np

from ._intervals import POWER_LAWS
from ._roi import are_wide
from ._transforms import shorter_way_round


# Reduced χ² bands (with σ known or estimated, a good fit gives ≈ 1).
GOOD_REDUCED_CHI2 = 1.5
MARGINAL_REDUCED_CHI2 = 3.0
STRONG_CORRELATION = 0.95
UNCONSTRAINED_RELATIVE_ERROR = 1.0
# Another local fit competes when its χ² (after dividing by the best reduced χ²) is within
# SIMILAR_CHI2_SIGMAS standard deviations of the noise of its χ² difference from the best
# (`chi2_noise`: what the noise could change that difference by, under the fit's noise model) —
# or, without that figure, within SIMILAR_CHI2_SIGMAS · √(2·dof), χ²'s own spread — and always
# within SIMILAR_CHI2; and it is a different solution when some physics parameter differs by
# more than DISTINCT_STANDARD_ERRORS standard errors (exact symmetries folded first).
SIMILAR_CHI2 = 10.0
SIMILAR_CHI2_SIGMAS = 3.0
DISTINCT_STANDARD_ERRORS = 3.0
# The exponents of the two components trade off (a faster-ageing reference looks like a
# slower-ageing sample); above this |correlation| the solution sits on that ridge. The same
# figure marks the ridge of a power law x0·t^γ whose prefactor (its value at t = 1 s, often
# outside the window) and exponent the data fix only in combination.
RIDGE_CORRELATION = 0.99
# With σ given (by the data or the caller), χ² has mean dof and sd √(2·dof) at the right answer;
# beyond this many sds the fit is inconsistent with the stated noise (a false minimum, a wrong
# law, or σ too small).
EXCESS_CHI2_SIGMAS = 5.0
_EXPONENTS = ("alpha_ref", "alpha_sample")


def describe_twin(twin: dict[str, float]) -> str:
    """A two-angle twin's flow (`QualityReport.twin`) as text: "phi0 = -62.62, v0 = 19.36"."""
    return ", ".join(f"{name} = {value:.4g}" for name, value in twin.items())


def similar_chi2(dof: int | None) -> float:
    """The χ² difference within which two minima count as similar: max(SIMILAR_CHI2,
    SIMILAR_CHI2_SIGMAS·√(2·dof)), or SIMILAR_CHI2 without dof."""
    if dof is None:
        return SIMILAR_CHI2
    return max(SIMILAR_CHI2, SIMILAR_CHI2_SIGMAS * float(np.sqrt(2 * dof)))


@dataclasses.dataclass(frozen=True)
class QualityReport:
    """Checks on a fit, each with the numbers behind it.

    **Fields:**

    - `band`: `"good"` (χ²_red < 1.5), `"marginal"` (< 3) or `"poor"`.
    - `at_bounds`: names of parameters within 1e-6 (of the range) of a bound.
    - `correlated_pairs`: `(name_a, name_b, correlation)` with |correlation| > 0.95.
    - `unconstrained`: names whose standard error exceeds 100 % of |value| (or is infinite).
    - `singular`: whether JᵀJ was singular (some combination undetermined by the data).
    - `aliasing`: `(angle, ratio)` for maps where q·|cos(φ + φ0)|·max|v|·dt / π > 1, i.e. the
      heterodyne fringes are undersampled by the frame period.
    - `distinct_minima`: `(start index, Δχ², largest parameter shift in standard errors)` for
      other local fits that ended at a different solution with a similar χ²;
      `competing`: for each, `(start index, {name: value})` of the physics parameters that
      differ from the best solution by more than 3 standard errors.
    - `ridge`: `(name_a, name_b, correlation)` when the solution sits on the α_ref ↔ α_sample
      trade-off (|correlation| > 0.99), else None.
    - `bound_ridges`: `(prefactor, exponent, correlation)` for each power law (D0_ref·t^α_ref,
      D0_sample·t^α_sample, v0·t^β) one of whose two parameters is at a bound while their
      |correlation| exceeds 0.99: the data fix only a combination of the two, the fit ran
      along it until the bound stopped it, and the bound, not the data, set both values.
    - `chi2_excess`: with σ given, (χ² − dof)/√(2·dof) when it exceeds 5 (the fit is
      inconsistent with the stated noise), else None.
    - `q_drift`: the physics parameters that `fit_by_q` found to drift with q beyond the
      honest errors (set on `QDependence.joint`; empty when the check was not run or passed).
    - `twin`: with two angles, the physics values (φ0, v0 and any velocity offset) of the
      second solution that fits the data exactly as well (`_strategies.two_angle_mirrors`:
      two angles fix only |cos(φ + φ0)|·v(t)), where that twin is exact; else None.
    - `warnings`: the readable sentences for all of the above.
    - `ok` and `failures` (properties): whether the numbers can be taken as they are, and if
      not, one short reason per failed check.
    - `roi_suggested`: whether χ² is not good, the bins are wide and the fit used the bin
      centres: the bin-averaged (ROI) model should be tried.
    """

    band: str
    at_bounds: tuple[str, ...]
    correlated_pairs: tuple[tuple[str, str, float], ...]
    unconstrained: tuple[str, ...]
    singular: bool
    aliasing: tuple[tuple[float, float], ...]
    distinct_minima: tuple[tuple[int, float, float], ...]
    warnings: tuple[str, ...]
    roi_suggested: bool = False
    competing: tuple[tuple[int, dict[str, float]], ...] = ()
    ridge: tuple[str, str, float] | None = None
    chi2_excess: float | None = None
    q_drift: tuple[str, ...] = ()
    bound_ridges: tuple[tuple[str, str, float], ...] = ()
    twin: dict[str, float] | None = None

    @property
    def ok(self) -> bool:
        """True when the band is not poor and nothing above calls the numbers into question
        (`failures` is empty): not singular, no competing minimum (nor an exact two-angle
        twin), not on the exponent ridge, no power law stopped on its ridge by a bound, χ²
        consistent with a stated σ, no drift with q. A parameter at a bound alone (a fraction
        baseline at 0, a static reference) does not count: its value is the constrained
        optimum, listed in `at_bounds`."""
        return not self.failures

    @property
    def failures(self) -> tuple[str, ...]:
        """One short reason for every check that makes `ok` False (what the CLI's quality
        gate prints)."""
        checks = (
            (self.band == "poor", f"the reduced χ² is poor (≥ {MARGINAL_REDUCED_CHI2:g})"),
            (self.singular, "JᵀJ is singular (a parameter combination is undetermined)"),
            (
                bool(self.distinct_minima),
                "other starts reached a different solution with a similar χ²",
            ),
            (
                self.twin is not None,
                f"two angles: {describe_twin(self.twin or {})} fits exactly alike",
            ),
            (self.ridge is not None, "the solution sits on the α_ref ↔ α_sample ridge"),
            *(
                (True, f"a bound stopped {prefactor}·t^{exponent} on its ridge")
                for prefactor, exponent, _ in self.bound_ridges
            ),
            (
                self.chi2_excess is not None,
                f"χ² exceeds the stated noise by {self.chi2_excess or 0.0:.3g} sd",
            ),
            (bool(self.q_drift), f"drift with q: {', '.join(self.q_drift)}"),
        )
        return tuple(reason for failed, reason in checks if failed)

    def to_dict(self) -> dict:
        """Every field, `ok` and `failures`, as plain values (what `save_result` writes)."""
        return {"ok": self.ok, "failures": list(self.failures), **dataclasses.asdict(self)}


def chi2_band(reduced_chi2: float) -> str:
    """ "good", "marginal" or "poor" by the reduced χ² bands."""
    if reduced_chi2 < GOOD_REDUCED_CHI2:
        return "good"
    if reduced_chi2 < MARGINAL_REDUCED_CHI2:
        return "marginal"
    return "poor"


def build_quality_report(
    *,
    names: tuple[str, ...],
    values: np.ndarray,
    stderr: np.ndarray,
    correlation: np.ndarray,
    at_bound: np.ndarray,
    reduced_chi2: float,
    singular: bool,
    aliasing_ratio: np.ndarray,
    phi: np.ndarray,
    start_chi2: np.ndarray,
    start_values: np.ndarray,
    best_index: int,
    n_physics: int,
    dof: int | None = None,
    noise_known: bool = False,
    roi: bool | None = None,
    bin_widths: tuple[float, float] | None = None,
    chi2_noise: np.ndarray | None = None,
    periods: np.ndarray | None = None,
    twin: dict[str, float] | None = None,
) -> QualityReport:
    """Runs every check; see `QualityReport` for what each one means.

    `roi` (whether the fit used the bin-averaged model; `None`: not said) and `bin_widths`
    (the largest Δq/q and Δφ in degrees of the data's bins, e.g. `_roi.bin_widths(data.bins)`)
    let the report suggest the ROI model when χ² is high and the bins are wide. `dof` sets the
    χ² scale on which other starts' minima count as similar (without it, `SIMILAR_CHI2`).
    `start_values` should already be in the canonical form of the exact symmetries.
    `noise_known` (σ given by the data or the caller, not estimated) with `dof` enables the
    χ²-excess check. `chi2_noise` (per start, the sd of its χ² difference from the best under
    the fit's noise model; NaN where not known) replaces the √(2·dof) scale for that start.
    `periods` (per parameter, 0 for none; `BoxTransform.periods`) makes an angle's difference
    between two solutions the shorter way round the circle (φ0 at 89° and −89°: 2°). `twin`
    is the exact two-angle twin's flow (`_strategies.exact_two_angle_twin`), if any.
    """
    warnings = []
    band = chi2_band(reduced_chi2)
    roi_suggested = band != "good" and roi is False and are_wide(bin_widths)
    if band != "good":
        cause = {
            None: "wrong law, wide bins — try the ROI-aware model — or an underestimated σ",
            True: "wrong law or an underestimated σ; the bin-averaged model is in use",
            False: "wrong law, bins too wide for the bin-centre model, or an underestimated σ",
        }[roi]
        warnings.append(
            f"Reduced χ² = {reduced_chi2:.3g} is {band}: the model misses structure in the data "
            f"({cause})."
        )
    if roi_suggested:
        assert bin_widths is not None
        warnings.append(
            f"The bins are wide (Δq/q up to {bin_widths[0]:.2g}, Δφ up to {bin_widths[1]:.3g}°) "
            "and the fit used the bin centres: the heterodyne fringes dephase across a bin, "
            "which a bin-centre fit absorbs into a wrong transport coefficient. Refit with the "
            "ROI-aware model (roi=True)."
        )
    bounded = tuple(n for n, b in zip(names, at_bound) if b)
    if bounded:
        warnings.append(
            f"At a bound: {', '.join(bounded)}. Their errors are not meaningful; widen the bound "
            "or fix the parameter if the bound is physical."
        )
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if np.isfinite(correlation[i, j]) and abs(correlation[i, j]) > STRONG_CORRELATION:
                pairs.append((names[i], names[j], float(correlation[i, j])))
    if pairs:
        strongest = sorted(pairs, key=lambda pair: -abs(pair[2]))
        listed = ", ".join(f"{a}–{b} ({c:+.3f})" for a, b, c in strongest[:6])
        more = f" and {len(pairs) - 6} more" if len(pairs) > 6 else ""
        warnings.append(
            f"Strongly correlated pairs: {listed}{more}; consider fixing one of each pair."
        )
    loose = tuple(
        n
        for n, v, e in zip(names, values, stderr)
        if not np.isfinite(e) or e > UNCONSTRAINED_RELATIVE_ERROR * abs(v)
    )
    if loose:
        warnings.append(
            f"Not constrained by the data (error > 100 % of the value): {', '.join(loose)}."
        )
    if singular:
        warnings.append(
            "JᵀJ is singular: some parameter combination has no effect on c2; errors along it "
            "are reported as infinite. Fix one of the parameters involved."
        )
    aliased = tuple(
        (float(a), float(r)) for a, r in zip(phi, aliasing_ratio) if np.isfinite(r) and r > 1
    )
    if aliased:
        listed = ", ".join(f"φ={a:g}° (×{r:.2g})" for a, r in aliased)
        warnings.append(
            "Heterodyne fringes are undersampled (q·|cos(φ+φ0)|·|v|·dt > π) at "
            f"{listed}: velocity estimates there may alias; use a shorter frame period."
        )
    distinct, competing = [], []
    scale = max(reduced_chi2, 1.0)
    similar = similar_chi2(dof)
    best = start_values[best_index]
    physics_error = np.where(np.isfinite(stderr) & (stderr > 0), stderr, np.inf)[:n_physics]
    noise_of = np.full(len(start_chi2), np.nan) if chi2_noise is None else np.asarray(chi2_noise)
    spread = np.where(
        np.isfinite(noise_of), noise_of / np.sqrt(scale), similar / SIMILAR_CHI2_SIGMAS
    )
    for k, (chi2, vector) in enumerate(zip(start_chi2, start_values)):
        if k == best_index or not np.isfinite(chi2):
            continue
        delta = (chi2 - start_chi2[best_index]) / scale
        difference = vector - best
        if periods is not None:
            difference = shorter_way_round(difference, periods)
        shifts = np.abs(difference[:n_physics]) / physics_error
        within = max(SIMILAR_CHI2, SIMILAR_CHI2_SIGMAS * float(spread[k]))
        if delta < within and np.max(shifts, initial=0.0) > DISTINCT_STANDARD_ERRORS:
            distinct.append((k, float(delta), float(np.max(shifts))))
            differing = {
                names[i]: float(vector[i])
                for i in np.flatnonzero(shifts > DISTINCT_STANDARD_ERRORS)
            }
            competing.append((k, differing))
    if distinct:
        described = "; ".join(
            f"start {k} (Δχ² = {delta:.3g} ± {spread[k]:.2g}): "
            + ", ".join(f"{name} = {value:.4g}" for name, value in differing.items())
            for (k, delta, _), (_, differing) in zip(distinct, competing)
        )
        best_values = ", ".join(
            f"{name} = {float(best[names.index(name)]):.4g}"
            for name in dict.fromkeys(n for _, d in competing for n in d)
        )
        warnings.append(
            f"{len(distinct)} other local fit(s) reached a different solution with a χ² within "
            f"{SIMILAR_CHI2_SIGMAS:g} sd of the noise of the difference: the data do not single "
            f"out one answer. Best: {best_values}; "
            f"competing: {described}. Fix or bound the parameters that differ, or add data."
        )
    chi2_excess = None
    if noise_known and dof is not None:
        excess = (reduced_chi2 - 1.0) * np.sqrt(dof / 2.0)
        if excess > EXCESS_CHI2_SIGMAS:
            chi2_excess = float(excess)
            warnings.append(
                f"χ² exceeds its expected value for the stated σ by {excess:.3g} standard "
                f"deviations (reduced χ² = {reduced_chi2:.4g}, expected 1 ± "
                f"{np.sqrt(2 / dof):.2g}): the fit may sit in a false minimum, the law may "
                "miss structure, or σ is too small."
            )
    ridge = None
    value = _pair_correlation(names, correlation, *_EXPONENTS)
    if abs(value) > RIDGE_CORRELATION:
        ridge = (*_EXPONENTS, value)
        warnings.append(
            f"The solution sits on the α_ref ↔ α_sample ridge (correlation {value:+.3f}): "
            "the data trade one component's ageing for the other's, and the exponents are "
            "not separately determined. Fix one exponent or fit a longer window."
        )
    bound_ridges = _bound_power_laws(names, at_bound, correlation)
    for prefactor, exponent, value in bound_ridges:
        warnings.append(
            f"{prefactor} and {exponent} sit on their power law's ridge (correlation "
            f"{value:+.3f}) with one of them at its bound: the data fix only a combination of "
            "the two, and the bound, not the data, set both values (their errors assume "
            "otherwise). Fix one of them, fit a window that reaches t = 1 s, or widen the "
            "bound if it is not physical."
        )
    if twin is not None:
        fitted = dict(zip(names, np.asarray(values, float)))
        warnings.append(
            f"Two angles fix only |cos(φ + φ0)|·v(t): φ0 = {fitted['phi0']:.4g}° with "
            f"v0 = {fitted['v0']:.4g} and φ0 = {twin['phi0']:.4g}° with v0 = {twin['v0']:.4g} "
            "fit these data exactly alike. Measure a third angle (or fix φ0) to tell them apart."
        )
    return QualityReport(
        band=band,
        at_bounds=bounded,
        correlated_pairs=tuple(pairs),
        unconstrained=loose,
        singular=bool(singular),
        aliasing=aliased,
        distinct_minima=tuple(distinct),
        warnings=tuple(warnings),
        roi_suggested=bool(roi_suggested),
        competing=tuple(competing),
        ridge=ridge,
        chi2_excess=chi2_excess,
        bound_ridges=bound_ridges,
        twin=twin,
    )


def _bound_power_laws(
    names: tuple[str, ...], at_bound: np.ndarray, correlation: np.ndarray
) -> tuple[tuple[str, str, float], ...]:
    """(prefactor, exponent, ρ) of each free power law with a parameter at a bound and
    |ρ| > RIDGE_CORRELATION."""
    ridges = []
    for pair in POWER_LAWS:
        value = _pair_correlation(names, correlation, *pair)
        if abs(value) > RIDGE_CORRELATION and any(at_bound[names.index(n)] for n in pair):
            ridges.append((*pair, value))
    return tuple(ridges)


def _pair_correlation(names: tuple[str, ...], correlation: np.ndarray, a: str, b: str) -> float:
    """ρ(a, b); NaN when either is not free (or ρ is undefined)."""
    if a not in names or b not in names:
        return float("nan")
    return float(correlation[names.index(a), names.index(b)])
