"""A small simulated fit problem (four free physics parameters, a start off the truth) that the
tests of the compiled passes and local fits build their `FitProblem`s from."""

import jax.random as jr
import numpy as np

import heterojax as hj
from heterojax._fit._nlsq import _build


FREE = ("D0_ref", "D0_sample", "v0", "f0")
TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 600.0, "D0_sample": 2500.0, "v0": 300.0, "f0": 0.4})


def fit_problem(scaling="individual", fixed_scaling=(), phi=(0.0, 45.0, 90.0), frames=40, seed=0):
    data = hj.simulate(
        TRUTH,
        0.5 * np.arange(1, frames + 1),
        q=0.01,
        phi=np.asarray(phi),
        contrast=np.linspace(0.25, 0.35, len(phi)),
        offset=1.0,
        noise=0.002,
        key=jr.key(seed),
    )
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE] + list(fixed_scaling)
    start = TRUTH.replace(D0_ref=750.0, v0=330.0, f0=0.45)
    problem, x0, _, _ = _build(
        start,
        data,
        fixed=fixed,
        bounds=None,
        scaling=scaling,
        fourier_order=1 if scaling == "fourier" else None,
        contrast=None,
        offset=None,
        sigma=np.asarray(0.002),
        roi=False,
    )
    return problem, np.asarray(x0)
