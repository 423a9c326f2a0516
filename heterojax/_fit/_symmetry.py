"""Exact symmetries of the model, and one canonical form for each family of equivalent fits.

c2 depends on the flow only through cos(φ + φ0)·∫v, so φ0 → φ0 + 180° and v → −v change nothing;
the bounds already pick one representative (φ0 ∈ [−90°, 90°], v0 ≥ 0). The third symmetry is the
exchange of reference and sample with f_s ↔ f_r = 1 − f_s: the numerator of c2 is symmetric in
the two components except for the phase, and cos is even, so the exchange is exact whenever the
fraction is constant in time. The canonical labelling then calls the slower component (smaller
J at the middle of the window) the reference, as the experiment usually does.
"""

import jax.numpy as jnp
import numpy as np

from .._model._heterodyne import HeterodyneModel
from .._model._laws import ExponentialFraction
from ._problem import FitProblem


def fraction_is_constant(model: HeterodyneModel, t: np.ndarray) -> bool:
    """Whether the clipped sample fraction is the same at every time of the grid."""
    values = np.clip(np.asarray(model.fraction(jnp.asarray(t))), 0.0, 1.0)
    return bool(np.ptp(values) <= 1e-9)


def exchanged(model: HeterodyneModel, t: np.ndarray) -> HeterodyneModel | None:
    """The model with reference and sample exchanged and f_s → 1 − f_s (as a constant), or
    None when the laws cannot be exchanged (different transport types, a user-written fraction)."""
    if type(model.reference) is not type(model.sample):
        return None
    if not isinstance(model.fraction, ExponentialFraction):
        return None
    middle = np.asarray(t)[len(t) // 2]
    share = float(np.clip(model.fraction(jnp.array([middle]))[0], 0.0, 1.0))
    fraction = ExponentialFraction().with_vector(jnp.array([1.0 - share, 0.0, 0.0, 0.0]))
    return HeterodyneModel(model.sample, model.reference, model.velocity, fraction, model.phi0)


def canonical(problem: FitProblem, x: np.ndarray) -> np.ndarray:
    """The fit vector of the canonical labelling of x (unchanged unless the exchange is exact
    at x, the reference is the faster component, and every parameter the exchange moves is free).
    """
    x = np.asarray(x, float)
    model = problem.unpack(jnp.asarray(x))[0]
    t = np.asarray(problem.t)
    if not fraction_is_constant(model, t):
        return x
    if reference_is_slower(problem, x):
        return x
    swapped = exchanged(model, t)
    if swapped is None:
        return x
    names = problem.names
    physics = dict(zip(model.parameter_names, np.asarray(model.to_vector())))
    target = dict(zip(swapped.parameter_names, np.asarray(swapped.to_vector())))
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
    model = problem.unpack(jnp.asarray(canonical(problem, x)))[0]
    t = np.asarray(problem.t)
    times = jnp.asarray(t[[0, len(t) // 2, len(t) - 1]])
    logs = [
        np.log(np.maximum(np.abs(np.asarray(law(times))), 1e-12))
        for law in (model.reference, model.sample, model.velocity)
    ]
    share = np.clip(np.asarray(model.fraction(times)), 0.0, 1.0)
    return np.concatenate(logs + [share])


def exchanged_signature(signature: np.ndarray) -> np.ndarray:
    """The `basin_signature` of the exchanged labelling: J_ref ↔ J_sample, f_s → 1 − f_s."""
    reference, sample, speed, share = np.split(np.asarray(signature), 4)
    return np.concatenate([sample, reference, speed, 1.0 - share])


def reference_is_slower(problem: FitProblem, x: np.ndarray) -> bool:
    """Whether J_ref ≤ J_sample at the middle of the window (the canonical labelling)."""
    model = problem.unpack(jnp.asarray(x))[0]
    t = np.asarray(problem.t)
    middle = jnp.asarray(t[len(t) // 2 : len(t) // 2 + 1])
    return float(model.reference(middle)[0]) <= float(model.sample(middle)[0])


def fraction_is_steady(problem: FitProblem, x: np.ndarray, stderr: np.ndarray) -> bool:
    """Whether the data resolve no change of the fraction: f1 fixed with a constant fraction,
    or free and within 3 standard errors of 0. Then the exchange is exact within the errors."""
    if "f1" in problem.names:
        index = problem.names.index("f1")
        error = float(stderr[index])
        return not np.isfinite(error) or abs(float(x[index])) <= 3.0 * error
    return fraction_is_constant(problem.unpack(jnp.asarray(x))[0], np.asarray(problem.t))
