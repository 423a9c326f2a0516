"""Exact symmetries of the model, and one canonical form for each family of equivalent fits.

c2 depends on the flow only through cos(φ + φ0)·∫v, so φ0 → φ0 + 180° and v → −v change nothing;
the box picks one representative (φ0 ∈ [−90°, 90°), fitted as an angle on that period;
v0 ≥ 0). The third symmetry is the exchange of reference and sample with f_s ↔ f_r = 1 − f_s:
the numerator of c2 is symmetric in the two components except for the phase, and cos is even,
so the exchange is exact whenever the fraction is constant in time. The canonical labelling
then calls the slower component (smaller J at the middle of the window) the reference, as the
experiment usually does.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._model._heterodyne import HeterodyneModel
from .._model._laws import ExponentialFraction
from ._problem import FitProblem


def _exchanged_model(model: HeterodyneModel, middle) -> HeterodyneModel:
    """Reference ↔ sample, with the fraction the constant 1 − f_s(middle) (clipped)."""
    share = jnp.clip(model.fraction(jnp.reshape(middle, (1,)))[0], 0.0, 1.0)
    fraction = ExponentialFraction().with_vector(
        jnp.stack([1.0 - share, *jnp.zeros(3, share.dtype)])
    )
    return HeterodyneModel(model.sample, model.reference, model.velocity, fraction, model.phi0)


def _exchangeable(model: HeterodyneModel) -> bool:
    return type(model.reference) is type(model.sample) and isinstance(
        model.fraction, ExponentialFraction
    )


class _Summary(NamedTuple):
    """What the symmetry tests read off a fit vector (NumPy): the physics `vector`; the clipped
    sample `fraction` at every time; the `laws` J_ref, J_sample and v (rows) at the first,
    middle and last time; the physics vector of the exchanged labelling (None when the laws
    cannot be exchanged)."""

    vector: np.ndarray
    fraction: np.ndarray
    laws: np.ndarray
    swapped: np.ndarray | None


@eqx.filter_jit
def _summary_terms(problem: FitProblem, x):
    model = problem.unpack(x)[0]
    t = problem.t
    n = t.shape[0]
    times = t[np.array([0, n // 2, n - 1])]
    laws = jnp.stack(
        [jnp.broadcast_to(law(times), times.shape) for law in (model.reference, model.sample)]
        + [jnp.broadcast_to(model.velocity(times), times.shape)]
    )
    swapped = _exchanged_model(model, t[n // 2]).to_vector() if _exchangeable(model) else None
    fraction = jnp.clip(jnp.broadcast_to(model.fraction(t), t.shape), 0.0, 1.0)
    return model.to_vector(), fraction, laws, swapped


def _summary(problem: FitProblem, x) -> _Summary:
    """`_Summary` of the fit vector x: one compiled program, however many tests read it."""
    return _Summary(*jax.device_get(_summary_terms(problem, np.asarray(x, float))))


def exchanged(model: HeterodyneModel, t: np.ndarray) -> HeterodyneModel | None:
    """The model with reference and sample exchanged and f_s → 1 − f_s (as a constant), or
    None when the laws cannot be exchanged (different transport types, a user-written fraction)."""
    if not _exchangeable(model):
        return None
    return _exchanged_model(model, jnp.asarray(np.asarray(t)[len(t) // 2]))


def canonical(problem: FitProblem, x: np.ndarray) -> np.ndarray:
    """The fit vector of the canonical labelling of x (unchanged unless the exchange is exact
    at x, the reference is the faster component, and every parameter the exchange moves is free).
    """
    x = np.asarray(x, float)
    summary = _summary(problem, x)
    if not _fraction_is_constant(summary) or summary.swapped is None:
        return x
    if _reference_is_slower(summary):
        return x
    names = problem.names
    parameter_names = problem.model.parameter_names
    physics = dict(zip(parameter_names, summary.vector))
    target = dict(zip(parameter_names, summary.swapped))
    moved = [name for name in target if not np.isclose(target[name], physics[name])]
    if any(name not in names for name in moved):
        return x
    out = x.copy()
    for name in moved:
        out[names.index(name)] = target[name]
    lower, upper = np.asarray(problem.transform.lower), np.asarray(problem.transform.upper)
    if np.any(out < lower) or np.any(out > upper):
        return x
    return out


def basin_signature(problem: FitProblem, x: np.ndarray) -> np.ndarray:
    """What a solution predicts, for telling basins apart: log J_ref, log J_sample, log |v| (each
    floored at 1e-12 of its scale) and f_s at the first, middle and last time of the grid. Fits
    that differ only along an undetermined direction (e.g. f0 against f3 at a constant
    fraction) have the same signature."""
    summary = _summary(problem, canonical(problem, x))
    logs = np.log(np.maximum(np.abs(summary.laws), 1e-12)).ravel()
    n = summary.fraction.shape[0]
    return np.concatenate([logs, summary.fraction[[0, n // 2, n - 1]]])


def exchanged_signature(signature: np.ndarray) -> np.ndarray:
    """The `basin_signature` of the exchanged labelling: J_ref ↔ J_sample, f_s → 1 − f_s."""
    reference, sample, speed, share = np.split(np.asarray(signature), 4)
    return np.concatenate([sample, reference, speed, 1.0 - share])


def _fraction_is_constant(summary: _Summary) -> bool:
    """Whether the clipped sample fraction is the same at every time of the grid."""
    return bool(np.ptp(summary.fraction) <= 1e-9)


def _reference_is_slower(summary: _Summary) -> bool:
    return bool(summary.laws[0, 1] <= summary.laws[1, 1])


def reference_is_slower(problem: FitProblem, x: np.ndarray) -> bool:
    """Whether J_ref ≤ J_sample at the middle of the window (the canonical labelling)."""
    return _reference_is_slower(_summary(problem, x))


def fraction_is_steady(problem: FitProblem, x: np.ndarray, stderr: np.ndarray) -> bool:
    """Whether the data resolve no change of the fraction: f1 fixed with a constant fraction,
    or free and within 3 standard errors of 0. Then the exchange is exact within the errors."""
    if "f1" in problem.names:
        index = problem.names.index("f1")
        error = float(stderr[index])
        return not np.isfinite(error) or abs(float(x[index])) <= 3.0 * error
    return _fraction_is_constant(_summary(problem, x))
