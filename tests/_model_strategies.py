"""Hypothesis strategies and shared jitted evaluators for the model tests (tests/test_model_*.py).

Parameter vectors are drawn inside the bounds of `heterojax.PARAMETERS`, with the bounds and the
defaults themselves drawn often, and wide-ranged parameters (D0, D_offset, v0, v_offset, f2) drawn
log-uniformly in magnitude as well, so that both small and extreme scales occur. Grid sizes come
from a short list so that the jitted evaluators below compile once per size and are reused by
every example of every test.
"""

import math

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import assume

import heterojax as hj


# An ageing state with every law time-dependent, flow reversal (v_offset < 0) and a phase
# offset: the demanding fixed case of the kernel tests.
AGEING = dict(
    D0_ref=50.0,
    alpha_ref=0.5,
    D_offset_ref=5.0,
    D0_sample=2e3,
    alpha_sample=-0.5,
    v0=300.0,
    beta=0.4,
    v_offset=-100.0,
    f0=0.3,
    f1=0.5,
    f2=0.5,
    f3=0.05,
    phi0=20.0,
)


EPS = float(np.finfo(np.float64).eps)
GRID_SIZES = (1, 2, 16)
# Grid size of the gradient tests (finite differences, robustness): two blocks of the structured
# evaluation (70 = 2 × 35), so its off-diagonal part is differentiated too. One size for all of
# them, because compiling a gradient of the structured evaluation costs seconds.
GRID_POINTS = 70
N_ANGLES = 3
_WIDE = {"D0_ref", "D0_sample", "D_offset_ref", "D_offset_sample", "v0", "v_offset", "f2"}


def log_uniform(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats in [low, high] (0 < low < high), uniform in log10."""
    return st.floats(math.log10(low), math.log10(high)).map(lambda e: min(max(10.0**e, low), high))


def parameter_value(name: str, *, moderate: bool = False) -> st.SearchStrategy[float]:
    """One value for parameter `name` inside its bounds.

    With `moderate`, wide-ranged parameters are kept within 1 % of their bound magnitude and the
    exponents within [−1, 1], so the c2 map is not dominated by rounding of huge integrals (used
    where a test wants tolerances near machine precision on every draw).
    """
    spec = hj.PARAMETERS[name]
    lower, upper = spec.lower, spec.upper
    if moderate:
        if name in _WIDE:
            lower, upper = max(lower, -0.01 * abs(lower)), min(upper, 0.01 * upper)
        elif name in ("alpha_ref", "alpha_sample", "beta", "f1"):
            lower, upper = -1.0, 1.0
    special = [lower, upper] + ([spec.default] if lower <= spec.default <= upper else [])
    options = [
        st.sampled_from(special),
        st.floats(lower, upper, allow_nan=False, allow_infinity=False, allow_subnormal=False),
    ]
    if name == "f0":
        # ExponentialFraction is exact for f0 = 0 and f0 ≥ e^−300 (its docstring: the exponent
        # cap that keeps derivatives finite treats smaller amplitudes as e^−300).
        return st.one_of(options).map(lambda f0: 0.0 if f0 < 1e-130 else f0)
    if name in _WIDE:
        magnitude = log_uniform(1e-3, max(abs(lower), abs(upper)))
        signs = [s for s, bound in ((1.0, upper), (-1.0, lower)) if s * bound > 0]
        options.append(
            st.tuples(st.sampled_from(signs), magnitude).map(
                lambda pair: float(np.clip(pair[0] * pair[1], lower, upper))
            )
        )
    return st.one_of(options)


@st.composite
def parameter_vectors(draw, *, moderate: bool = False, **fixed: float) -> np.ndarray:
    """A 14-vector in canonical order inside the bounds; `fixed` pins named entries."""
    unknown = set(fixed) - set(hj.PARAMETER_NAMES)
    assert not unknown, unknown
    values = [
        fixed[name] if name in fixed else draw(parameter_value(name, moderate=moderate))
        for name in hj.PARAMETER_NAMES
    ]
    return np.asarray(values, dtype=np.float64)


@st.composite
def time_grids(draw, *, sizes=GRID_SIZES, positive: bool = False, max_start: float = 5e3):
    """Strictly increasing grids: uniform or not, starting at 0 (unless `positive`) or later."""
    n = draw(st.sampled_from(sizes))
    starts = [log_uniform(1e-3, max_start)] + ([] if positive else [st.just(0.0)])
    start = draw(st.one_of(starts))
    step = draw(log_uniform(1e-3, 10.0))
    if n > 1 and draw(st.booleans()):
        factors = draw(st.lists(st.floats(0.1, 10.0), min_size=n - 1, max_size=n - 1))
        steps = step * np.asarray(factors)
    else:
        steps = np.full(n - 1, step)
    t = start + np.concatenate([[0.0], np.cumsum(steps)])
    assume(np.all(np.diff(t) > 0))
    return t


wavevectors = st.one_of(st.sampled_from([1e-4, 0.1]), log_uniform(1e-4, 0.1))
angle_arrays = st.lists(
    st.floats(-360.0, 360.0, allow_subnormal=False), min_size=N_ANGLES, max_size=N_ANGLES
).map(np.asarray)
contrasts = st.floats(hj.PARAMETERS["contrast"].lower, hj.PARAMETERS["contrast"].upper)
offsets = st.floats(hj.PARAMETERS["offset"].lower, hj.PARAMETERS["offset"].upper)


@st.composite
def cases(draw, *, kappa: float | None = None, sizes=GRID_SIZES, positive: bool = False, **fixed):
    """A full evaluation case: dict(vector, t, q, phi, contrast, offset).

    Contrast and offset are per-angle arrays. With `kappa`, q is drawn below
    `well_conditioned_q(vector, t, kappa)` (see there); otherwise from `wavevectors`.
    """
    vector = draw(parameter_vectors(**fixed))
    t = draw(time_grids(sizes=sizes, positive=positive))
    if kappa is None:
        q = draw(wavevectors)
    else:
        q = well_conditioned_q(vector, t, kappa) * draw(
            st.sampled_from([1.0, 0.5]) | st.floats(1e-2, 1.0)
        )
    per_angle = {"min_size": N_ANGLES, "max_size": N_ANGLES}
    return {
        "vector": vector,
        "t": t,
        "q": q,
        "phi": draw(angle_arrays),
        "contrast": np.asarray(draw(st.lists(contrasts, **per_angle))),
        "offset": np.asarray(draw(st.lists(offsets, **per_angle))),
    }


# ------------------------------------------------------------------------ evaluators


@eqx.filter_jit
def _c2(model, t, q, phi, contrast, offset, method):
    return model.c2(t, q=q, phi=phi, contrast=contrast, offset=offset, method=method)


def c2(model, t, *, q, phi, contrast=0.5, offset=1.0, method="direct") -> np.ndarray:
    """`model.c2` under one shared `eqx.filter_jit`.

    q, contrast and offset are broadcast to one value per angle first, so that every call with
    the same grid size, number of angles and method reuses one compiled function.
    """
    phi = jnp.atleast_1d(jnp.asarray(phi))
    q, contrast, offset = (
        jnp.broadcast_to(jnp.asarray(v), phi.shape) for v in (q, contrast, offset)
    )
    return np.asarray(_c2(model, jnp.asarray(t), q, phi, contrast, offset, method))


def rounding_allowance(vector, t, q, contrast, *, ulps: float = 64) -> float:
    """Absolute error of c2 that rounding in the cumulative integrals can explain.

    `ulps` units of max|C| propagated to c2 through the condition number
    `_numpy_reference.roundoff_scale` (q²·max C_J + q·max|C_v|), times the largest contrast.
    Two correct float64 evaluations that sum or difference the integrals in another order can
    differ by this much; for well-conditioned cases it is far below 1e-12.
    """
    from _numpy_reference import roundoff_scale

    return float(np.max(contrast)) * ulps * EPS * roundoff_scale(vector, t, q)


def well_conditioned_q(vector, t, kappa: float) -> float:
    """The largest q ≤ 0.1 Å⁻¹ with q²·max C_J + q·max|C_v| ≤ kappa on this grid.

    kappa ~ 10 means the map decays by at most e^−10 and turns through ~1.5 fringes over the
    grid: a sensible experiment, where c2 is insensitive to rounding in the integrals.
    """
    from _numpy_reference import integral_scales

    transport, displacement = integral_scales(vector, t)
    if transport > 0:
        q = (-displacement + math.sqrt(displacement**2 + 4 * transport * kappa)) / (2 * transport)
    elif displacement > 0:
        q = kappa / displacement
    else:
        q = 0.1
    return min(0.1, q)


@eqx.filter_jit
def _g2(model, tau, q, phi, contrast, offset):
    return model.g2(tau, q=q, phi=phi, contrast=contrast, offset=offset)


def g2(model, tau, *, q, phi, contrast=0.5, offset=1.0) -> np.ndarray:
    """`model.g2` under one shared `eqx.filter_jit`."""
    as_array = jnp.asarray
    return np.asarray(
        _g2(model, as_array(tau), as_array(q), as_array(phi), as_array(contrast), as_array(offset))
    )


one_time = eqx.filter_jit(hj.one_time)


# Functions of the 16-vector (14 physics parameters, contrast, offset) shared by the gradient
# and robustness tests, so that each (grid size, method) compiles once for the whole suite.


def _maps_of_all_parameters(parameters, t, q, phi, method):
    model = hj.HeterodyneModel.from_vector(parameters[: len(hj.PARAMETER_NAMES)])
    return model.c2(t, q=q, phi=phi, contrast=parameters[-2], offset=parameters[-1], method=method)


def _weighted_sum(parameters, t, q, phi, weights, method):
    return jnp.sum(weights * _maps_of_all_parameters(parameters, t, q, phi, method))


weighted_sum = eqx.filter_jit(_weighted_sum)
"""Σ w·c2 as a function of the 16-vector; arguments (parameters, t, q, phi, weights, method)."""

weighted_sum_gradient = eqx.filter_jit(eqx.filter_grad(_weighted_sum))
"""Reverse-mode gradient of `weighted_sum` with respect to the 16-vector."""


@eqx.filter_jit
def weighted_sum_forward_gradient(parameters, t, q, phi, weights, method):
    """Forward-mode gradient of `weighted_sum` with respect to the 16-vector."""
    return jax.jacfwd(lambda p: _weighted_sum(p, t, q, phi, weights, method))(parameters)


def _pairs_weighted_sum(parameters, t, i, j, angle, q, phi, weights):
    model = hj.HeterodyneModel.from_vector(parameters[: len(hj.PARAMETER_NAMES)])
    values = model.c2_pairs(
        t, i, j, angle, q=q, phi=phi, contrast=parameters[-2], offset=parameters[-1]
    )
    return jnp.sum(weights * values)


pairs_weighted_sum = eqx.filter_jit(_pairs_weighted_sum)
"""Σ_k w_k·c2(t[i_k], t[j_k], φ[angle_k]) through `c2_pairs`, as a function of the 16-vector;
arguments (parameters, t, i, j, angle, q, phi, weights)."""

pairs_weighted_sum_gradient = eqx.filter_jit(jax.grad(_pairs_weighted_sum))
"""Reverse-mode gradient of `pairs_weighted_sum` with respect to the 16-vector."""
