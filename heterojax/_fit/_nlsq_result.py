"""The result of `fit_nlsq`."""

from collections.abc import Iterable
from typing import Any

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from .._model._bins import BinGeometry
from .._model._heterodyne import HeterodyneModel
from ._intervals import parameter_intervals
from ._quality import QualityReport


class StartsSummary(eqx.Module):
    """Where the local fits of the start strategy ended on the full data.

    **Fields:** `chi2` (one per local fit), `values` (the fit vectors, one row each),
    `n_steps`, `success`, `best` (the index of the fit that was kept), `screening_chi2` (where
    every start of the strategy's screening ended, on its own — possibly coarser — data, so not
    comparable with `chi2`; None without screening) and `strategy` (its class name).
    """

    chi2: np.ndarray
    values: np.ndarray
    n_steps: np.ndarray
    success: np.ndarray
    best: int
    screening_chi2: np.ndarray | None = None
    strategy: str = "LocalStart"

    def describe(self) -> str:
        """E.g. "AutoStarts (24 screened, 3 fitted)" or "1"."""
        fitted = len(self.chi2)
        if self.screening_chi2 is None:
            return str(fitted) if fitted == 1 else f"{self.strategy} ({fitted} fitted)"
        return f"{self.strategy} ({len(self.screening_chi2)} screened, {fitted} fitted)"


def _relative(relative: float) -> str:
    """A relative error for the table's 8-character column (never wider)."""
    if not np.isfinite(relative):
        return "–"
    return f"{relative:.1%}" if relative < 10 else ">1000%"


class NLSQResult(eqx.Module):
    """A joint least-squares fit of a `HeterodyneModel` to all maps of an `XPCSData`.

    **Fields:**

    - `model`: the fitted model (fixed parameters keep their input values).
    - `contrast`, `offset`: fitted per-map values, shape `(phi,)`.
    - `names`: the free parameters in fit-vector order (physics, then scaling coefficients).
    - `values`: the fitted free parameters.
    - `stderr`: name → standard error for every free physics parameter and scaling
      coefficient; `stderr["contrast"]`, `stderr["offset"]` are per-map arrays (when free).
    - `covariance`, `correlation`: over `names`; rows of undetermined parameters are inf/nan.
    - `chi2`: Σ ((model − data)/σ)² over the used pairs; `dof` = used pairs − free parameters;
      `reduced_chi2` = chi2 / dof.
    - `n_points`: the number of used (t1, t2, map) entries.
    - `success`, `message`, `n_steps`: the solver's outcome (best start).
    - `wall_time`: seconds for the whole call, compilation included.
    - `fitted_c2`: the model maps at the solution, shape `(phi, t, t)`.
    - `sigma`: σ per map used as weights; `noise`: `"data"` (σ from the data), `"argument"`
      (passed to the fit) or `"estimated"` (the maps' second differences, rescaled at the
      solution so that E[χ²] = n_points at the truth; the reduced χ² is then a little below 1
      on correlated noise, and does not judge the fit).
    - `scaling`: the resolved scaling mode; `diagonal`: the data's diagonal convention.
    - `singular`: whether JᵀJ was singular at the solution.
    - `quality`: the `QualityReport`; `starts`: a `StartsSummary`.
    - `metadata`: the data's metadata.
    - `formal_stderr`: the independent-noise errors s²(JᵀJ)⁻¹ (equal to `stderr` when
      `errors` is `"FormalErrors"`) and `formal_covariance` over `names`; `errors`: the
      estimator that gave `stderr` and `covariance`.
    """

    model: HeterodyneModel
    contrast: Float[Array, " phi"]
    offset: Float[Array, " phi"]
    names: tuple[str, ...]
    values: np.ndarray
    stderr: dict[str, Any]
    covariance: np.ndarray
    correlation: np.ndarray
    chi2: float
    reduced_chi2: float
    dof: int
    n_points: int
    success: bool
    message: str
    n_steps: int
    wall_time: float
    fitted_c2: Float[Array, "phi t t"]
    sigma: np.ndarray
    noise: str
    scaling: str
    diagonal: str
    singular: bool
    quality: QualityReport
    starts: StartsSummary
    bounds: dict[str, tuple[float, float]]
    metadata: dict[str, Any]
    bins: BinGeometry | None = None
    model_description: str = "model = bin centre"
    formal_stderr: dict[str, Any] | None = None
    formal_covariance: np.ndarray | None = None
    errors: str = "FormalErrors"

    def parameters(self) -> dict[str, float]:
        """Name → value of every physics parameter of the fitted model (fixed ones included)."""
        return {name: float(value) for name, value in self.model.to_dict().items()}

    def intervals(
        self, level: float = 0.9, log_scale: Iterable[str] | None = None
    ) -> dict[str, tuple[float, float]]:
        """Name → (low, high): the `level` interval of every free physics parameter from
        `stderr`, inside its bounds (`parameter_intervals`; central, except that of a power
        law's prefactor below, which holds at least `level`).

        θ ± z σ, except for a power-law prefactor whose exponent is free too (D0_ref with
        alpha_ref, D0_sample with alpha_sample, v0 with beta): [θ − z σ, θ·exp(z σ/θ)], since
        the prefactor is the rate at t = 1 s, the rate the data fix inside the window carried
        there by an uncertain exponent (log-normal, not normal), unless that rate is not
        determined away from 0 (a static reference): the union of the normal and log-normal
        intervals. `log_scale` names the parameters to treat so instead (a custom law's
        prefactor; `()` for none). An angle's interval (`periods`) is not clipped: its ends are
        read modulo the period.
        """
        physics = self.parameters()
        values = {name: physics[name] for name in self.names if name in physics}
        return parameter_intervals(
            values, self.stderr, self.bounds, self.names, level, log_scale, self.periods()
        )

    def periods(self) -> dict[str, float]:
        """Name → period of the free parameters fitted as angles (`ParameterSpec.wraps` with
        the fit's bounds: `phi0` on its default box, 180°); their values and intervals are read
        modulo the period."""
        specs = {spec.name: spec for spec in self.model.parameter_specs}
        periods = {}
        for name in self.names:
            spec = specs.get(name)
            if spec is not None and spec.period > 0 and name in self.bounds:
                if spec.with_bounds(*self.bounds[name]).wraps:
                    periods[name] = spec.period
        return periods

    def summary(self) -> str:
        """A readable table of values, errors and flags, then the fit statistics and warnings."""
        lines = []
        header = (
            f"{'parameter':<22}{'value':>14}  {'std. error':>12}  {'rel.':>8}  "
            f"{'90 % interval':>25}  flags"
        )
        lines += [header, "-" * len(header)]
        at_bounds = set(self.quality.at_bounds)
        loose = set(self.quality.unconstrained)
        free = dict(zip(self.names, self.values))
        intervals = self.intervals(0.9)
        for name, value in self.parameters().items():
            if name not in free:
                lines.append(f"{name:<22}{value:>14.6g}  {'fixed':>12}")
                continue
            error = float(self.stderr[name])
            relative = error / abs(value) if value != 0 else np.inf
            flags = []
            if name in at_bounds:
                low, high = self.bounds[name]
                flags.append(f"at bound [{low:g}, {high:g}]")
            if name in loose:
                flags.append("unconstrained")
            low, high = intervals[name]
            lines.append(
                f"{name:<22}{value:>14.6g}  {error:>12.3g}  {_relative(relative):>8}  "
                f"{f'[{low:.4g}, {high:.4g}]':>25}  {', '.join(flags)}".rstrip()
            )
        for name in self.names:
            if name in self.parameters():
                continue
            # In "constant" mode the coefficient is named like the per-map entry ("contrast"),
            # which holds one (equal) error per map.
            error = float(np.max(np.atleast_1d(self.stderr[name])))
            flag = "at bound" if name in at_bounds else ""
            lines.append(f"{name:<22}{free[name]:>14.6g}  {error:>12.3g}  {'':>8}  {flag}".rstrip())
        lines.append("")
        lines.append(
            f"χ² = {self.chi2:.6g}   dof = {self.dof}   reduced χ² = {self.reduced_chi2:.4f} "
            f"({self.quality.band})   points = {self.n_points}"
        )
        lines.append(
            f"scaling = {self.scaling}   diagonal = {self.diagonal}   noise = {self.noise}   "
            f"starts = {self.starts.describe()}   steps = {self.n_steps}   "
            f"time = {self.wall_time:.2f} s"
        )
        lines.append(self.model_description)
        # Two separate verdicts: whether LM met its convergence test, and whether the answer
        # passes the quality report (a converged fit can still be a poor or ambiguous one).
        solver = "converged" if self.success else f"did not converge: {self.message}"
        lines.append(f"solver: {solver}")
        quality = "ok" if self.quality.ok else "NOT ok (see the warnings below)"
        lines.append(f"quality report: {quality}")
        for warning in self.quality.warnings:
            lines.append(f"warning: {warning}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()
