"""The q-consistency check: each q ring fitted alone, against each other and the joint fit.

In the heterodyne model the transport coefficients J(t), the velocity v(t) and the fraction
f(t) do not depend on q; q enters only through q²∫J and q·cos(φ + φ0)·∫v. Fitted ring by ring,
a physics parameter θ_k should therefore agree across rings within the errors. A drift with q
(a D0 that grows with q, a velocity that shrinks) means the model misses physics: another
relaxation mechanism, a q-dependent contrast artefact, a mis-calibrated q.

**The test.** The rings use disjoint maps (different pixels), so their estimates θ_rk are
independent, with the honest standard errors σ_rk of each ring's fit. Under the hypothesis that
θ_k does not depend on q, with the inverse-variance mean θ̄_k = Σ_r θ_rk/σ_rk² / Σ_r 1/σ_rk²,

    χ²_k = Σ_r (θ_rk − θ̄_k)² / σ_rk²   ~   χ²(R_k − 1),

R_k the rings in which θ_k is determined. The prefactor of a power law whose exponent is free
too (D0_ref, D0_sample, v0: `NLSQResult.intervals`) is tested on the log scale, ln θ_rk with
errors σ_rk/θ_rk (θ̄_k then the weighted geometric mean): it is the rate inside the window
carried to t = 1 s by an uncertain exponent, log-normal. On the linear scale its errors grow
with its estimates and the test loses its level and its power: with 3 rings at σ/θ = 0.5 it
raised 0.1 % false alarms for 5 %, and caught a D0 that quadruples from ring to ring in 35 %
of draws (on the log scale 5.3 % and 95 %). Parameter k drifts when its p-value is below
`alpha / p` (Bonferroni over the p parameters tested, so `alpha` is the chance of a false
alarm for the whole check). The joint fit (all rings together) is reported beside θ̄_k.

**Assumptions.** Each ring's errors are honest (the default frame-clustered errors on measured
maps) and its fit reached its global basin; with few maps per ring some parameters may be
undetermined there (excluded from that parameter's test).
"""

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.stats

from .._data._xpcs_data import XPCSData
from .._model._heterodyne import HeterodyneModel
from .._parameters import PARAMETER_NAMES
from ._intervals import log_scale_parameters
from ._nlsq import fit_nlsq
from ._nlsq_result import NLSQResult
from ._scaling import q_rings
from ._transforms import shorter_way_round


def select_maps(data: XPCSData, index: np.ndarray) -> XPCSData:
    """The maps `index` of `data`, with their bins (ROI geometry) and metadata kept."""
    import jax

    index = np.asarray(index, int)
    bins = None if data.bins is None else jax.tree_util.tree_map(lambda a: a[index], data.bins)
    return XPCSData(
        np.asarray(data.c2)[index],
        np.asarray(data.t),
        q=np.asarray(data.q)[index],
        phi=np.asarray(data.phi)[index],
        dt=float(data.dt),
        sigma=None if data.sigma is None else np.asarray(data.sigma)[index],
        diagonal=data.diagonal,
        metadata={**data.metadata, "maps": [int(i) for i in index]},
        bins=bins,
    )


@dataclasses.dataclass(frozen=True)
class QDependence:
    """What `fit_by_q` returns.

    **Fields:**

    - `q`: each ring's q (Å⁻¹), ascending; `names`: the free physics parameters tested.
    - `values`, `errors`: `(ring, parameter)` estimates and honest standard errors of the ring
      fits (NaN error: undetermined in that ring); φ0's taken modulo 180° nearest the joint
      value (`_near_the_joint`), so they may lie past ±90°.
    - `mean`: θ̄ per parameter (inverse-variance mean over the rings where it is determined;
      for a prefactor tested on the log scale, the weighted geometric mean).
    - `joint_values`, `joint_errors`: the fit of all rings together.
    - `chi2`, `dof`, `p_value`: the test of the module docstring, per parameter.
    - `alpha`: the false-alarm level of the whole check; `drifting`: the parameters whose
      p-value is below `alpha / len(names)`; `consistent`: none drifts.
    - `ring_results`, `joint`: the `NLSQResult`s; when a parameter drifts, `joint.quality`
      names it (`q_drift`, a warning) and is not ok.
    """

    q: np.ndarray
    names: tuple[str, ...]
    values: np.ndarray
    errors: np.ndarray
    mean: np.ndarray
    joint_values: np.ndarray
    joint_errors: np.ndarray
    chi2: np.ndarray
    dof: np.ndarray
    p_value: np.ndarray
    alpha: float
    drifting: tuple[str, ...]
    ring_results: tuple[NLSQResult, ...]
    joint: NLSQResult

    @property
    def consistent(self) -> bool:
        return not self.drifting

    def summary(self) -> str:
        """Per parameter: each ring's value ± error, the joint fit, χ²/dof and p; the verdict."""
        header = f"{'parameter':<16}" + "".join(f"{f'q = {q:.4g}':>22}" for q in self.q)
        header += f"{'joint':>22}{'χ²/dof':>12}{'p':>10}"
        lines = [header, "-" * len(header)]
        for k, name in enumerate(self.names):
            cells = [
                f"{self.values[r, k]:.5g} ± {self.errors[r, k]:.2g}".rjust(22)
                for r in range(len(self.q))
            ]
            joint = f"{self.joint_values[k]:.5g} ± {self.joint_errors[k]:.2g}".rjust(22)
            test = f"{self.chi2[k]:.3g}/{int(self.dof[k])}".rjust(12)
            lines.append(
                f"{name:<16}" + "".join(cells) + joint + test + f"{self.p_value[k]:>10.3g}"
            )
        if self.consistent:
            lines.append(
                f"q-consistency: ok — no parameter drifts with q (family-wise α = {self.alpha:g})."
            )
        else:
            lines.append(
                "q-consistency: FAILED — "
                + ", ".join(self.drifting)
                + (" drifts" if len(self.drifting) == 1 else " drift")
                + " with q beyond the errors: the model misses q-dependent physics "
                "(another relaxation, a q calibration), or a ring's fit is not at its optimum."
            )
        return "\n".join(lines)


def consistency_test(names: tuple[str, ...], values: np.ndarray, errors: np.ndarray):
    """θ̄, χ², dof and p per parameter of `(ring, parameter)` estimates and errors (module
    docstring): the prefactors of `log_scale_parameters(names)` whose estimates are all > 0 on
    the log scale, the others on the linear one."""
    chosen = log_scale_parameters(names)
    logarithmic = np.array([n in chosen for n in names]) & np.all(values > 0, axis=0)
    safe = np.where(logarithmic, values, 1.0)
    mean, chi2, dof, p_value = _consistency(
        np.where(logarithmic, np.log(safe), values), np.where(logarithmic, errors / safe, errors)
    )
    return np.where(logarithmic, np.exp(np.where(logarithmic, mean, 0.0)), mean), chi2, dof, p_value


def _near_the_joint(
    values: np.ndarray, names: tuple[str, ...], joint: dict[str, float], periods: dict[str, float]
) -> np.ndarray:
    """The ring estimates with those of every angle (`periods`, `NLSQResult.periods`: φ0)
    taken modulo its period nearest the `joint` value, so that rings at 89° and −89° test (and
    plot) as 2° apart, not 178°."""
    values = values.copy()
    for name, period in periods.items():
        if name in names:
            k, centre = names.index(name), joint[name]
            values[:, k] = centre + shorter_way_round(values[:, k] - centre, period)
    return values


def _consistency(values: np.ndarray, errors: np.ndarray):
    """θ̄, χ², dof and p per column on the scale given; NaN where < 2 rings determine it."""
    usable = np.isfinite(errors) & (errors > 0) & np.isfinite(values)
    weights = np.where(usable, 1.0 / np.where(usable, errors, 1.0) ** 2, 0.0)
    total = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(total > 0, (weights * np.where(usable, values, 0.0)).sum(0) / total, np.nan)
        chi2 = (weights * np.where(usable, values - mean, 0.0) ** 2).sum(axis=0)
    dof = usable.sum(axis=0) - 1
    p_value = np.where(dof >= 1, scipy.stats.chi2.sf(chi2, np.maximum(dof, 1)), np.nan)
    chi2 = np.where(dof >= 1, chi2, np.nan)
    return mean, chi2, dof, p_value


def _with_q_drift(joint: NLSQResult, drifting, ring_q, names, values, errors, p_value):
    """`joint` with its quality report naming the drifting parameters (and so not ok)."""
    described = []
    for name in drifting:
        k = names.index(name)
        per_ring = ", ".join(
            f"{values[r, k]:.4g} ± {errors[r, k]:.2g} at q = {q:.3g}" for r, q in enumerate(ring_q)
        )
        described.append(f"{name} (p = {p_value[k]:.2g}: {per_ring})")
    warning = (
        "The physics differs between q rings beyond the honest errors — "
        + "; ".join(described)
        + ". J, v and f do not depend on q in the model, so it misses q-dependent physics "
        "(another relaxation, a q calibration), or a ring's fit is not at its optimum; "
        "the joint values average over it."
    )
    quality = dataclasses.replace(
        joint.quality, q_drift=tuple(drifting), warnings=(*joint.quality.warnings, warning)
    )
    return dataclasses.replace(joint, quality=quality)


def fit_by_q(
    model: HeterodyneModel,
    data: XPCSData,
    *,
    fixed: Iterable[str] = (),
    alpha: float = 0.01,
    joint: NLSQResult | None = None,
    **fit_options: Any,
) -> QDependence:
    """Fits each q ring of `data` alone and tests whether the physics agrees across rings.

    **Arguments:**

    - `model`, `fixed`, `**fit_options`: as for `fit_nlsq`, used for every ring and for the
      joint fit (per-map `contrast`/`offset`/`sigma` arrays cannot be split by ring: pass one
      value, or leave them to the fit).
    - `alpha`: the false-alarm probability of the whole check (Bonferroni over parameters).
    - `joint`: an `NLSQResult` of all maps already fitted with these settings (else fitted).

    **Returns:** a `QDependence` (`summary()` prints the table and the verdict).

    **Raises:** `ValueError` when `data` holds fewer than two q rings.
    """
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"`alpha` must lie in (0, 1); got {alpha!r}.")
    rings = q_rings(np.asarray(data.q))
    if len(rings) < 2:
        raise ValueError(
            f"fit_by_q needs maps at two or more q; these {data.n_angles} map(s) are all at "
            f"q = {float(np.asarray(data.q)[0]):.4g} Å⁻¹."
        )
    fixed = tuple(fixed)
    if joint is None:
        joint = fit_nlsq(model, data, fixed=fixed, **fit_options)
    results = tuple(
        fit_nlsq(model, select_maps(data, ring), fixed=fixed, **fit_options) for ring in rings
    )
    names = tuple(n for n in joint.names if n in PARAMETER_NAMES)
    values = np.array([[r.parameters()[n] for n in names] for r in results], float)
    errors = np.array([[r.stderr.get(n, np.nan) for n in names] for r in results], float)
    values = _near_the_joint(values, names, joint.parameters(), joint.periods())
    mean, chi2, dof, p_value = consistency_test(names, values, errors)
    threshold = float(alpha) / max(len(names), 1)
    drifting = tuple(n for n, p in zip(names, p_value) if np.isfinite(p) and p < threshold)
    ring_q = np.array([float(np.mean(np.asarray(data.q)[ring])) for ring in rings])
    if drifting:
        joint = _with_q_drift(joint, drifting, ring_q, names, values, errors, p_value)
    return QDependence(
        q=ring_q,
        names=names,
        values=values,
        errors=errors,
        mean=mean,
        joint_values=np.array([joint.parameters()[n] for n in names], float),
        joint_errors=np.array([joint.stderr.get(n, np.nan) for n in names], float),
        chi2=chi2,
        dof=dof,
        p_value=p_value,
        alpha=float(alpha),
        drifting=drifting,
        ring_results=results,
        joint=joint,
    )
