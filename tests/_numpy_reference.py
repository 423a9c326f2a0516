"""An independent plain-NumPy implementation of SPEC §2, for comparison with heterojax.

Written from the SPEC text only: nothing here imports heterojax, and every loop is the obvious
one (sequential trapezoid sums, one formula per map entry, vectorised over the (t1, t2) grid).
Parameter vectors are in the canonical order of SPEC §3, transcribed below.
"""

import numpy as np


# SPEC §3, in canonical order.
NAMES = (
    "D0_ref",
    "alpha_ref",
    "D_offset_ref",
    "D0_sample",
    "alpha_sample",
    "D_offset_sample",
    "v0",
    "beta",
    "v_offset",
    "f0",
    "f1",
    "f2",
    "f3",
    "phi0",
)


def unpack(vector) -> dict[str, float]:
    """Name → value for a 14-vector in canonical order."""
    vector = np.asarray(vector, dtype=np.float64)
    assert vector.shape == (len(NAMES),), vector.shape
    return {name: float(value) for name, value in zip(NAMES, vector)}


def power_of_time(t, exponent: float):
    """t**exponent for t ≥ 0, with t^a := 0 at t = 0 for every a."""
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros_like(t)
    positive = t > 0
    out[positive] = t[positive] ** exponent
    return out


def transport_rate(t, D0: float, alpha: float, D_offset: float):
    """J(t) = D0 · t^alpha + D_offset, floored at 0."""
    return np.maximum(D0 * power_of_time(t, alpha) + D_offset, 0.0)


def velocity(t, v0: float, beta: float, v_offset: float):
    """v(t) = v0 · t^beta + v_offset (signed)."""
    return v0 * power_of_time(t, beta) + v_offset


def sample_fraction(t, f0: float, f1: float, f2: float, f3: float):
    """f_s(t) = f0 · exp(f1 · (t − f2)) + f3, kept in [0, 1].

    exp may overflow to inf (then f_s is 1 for f0 > 0); f0 = 0 makes the term exactly 0.
    """
    t = np.asarray(t, dtype=np.float64)
    if f0 == 0.0:
        growth_term = np.zeros_like(t)
    else:
        with np.errstate(over="ignore"):
            growth_term = f0 * np.exp(f1 * (t - f2))
    return np.clip(growth_term + f3, 0.0, 1.0)


def rates(vector, t) -> dict[str, np.ndarray]:
    """J_ref, J_sample (floored), v and f_s (clipped) on the grid for a canonical 14-vector."""
    p = unpack(vector)
    return {
        "J_ref": transport_rate(t, p["D0_ref"], p["alpha_ref"], p["D_offset_ref"]),
        "J_sample": transport_rate(t, p["D0_sample"], p["alpha_sample"], p["D_offset_sample"]),
        "velocity": velocity(t, p["v0"], p["beta"], p["v_offset"]),
        "sample_fraction": sample_fraction(t, p["f0"], p["f1"], p["f2"], p["f3"]),
    }


def cumulative_trapezoid(values, t):
    """C[0] = 0, C[k] = Σ_{i<k} (t_{i+1} − t_i)(g_i + g_{i+1})/2, summed in order."""
    values = np.asarray(values, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    out = np.zeros_like(t)
    for k in range(1, t.shape[0]):
        out[k] = out[k - 1] + (t[k] - t[k - 1]) * (values[k - 1] + values[k]) / 2
    return out


def c2_from_rates(
    t, J_ref, J_sample, v, f_s, *, q, phi, phi0, contrast=0.5, offset=1.0, pairs=None
) -> np.ndarray:
    """c2 of SPEC §2 from rates already on the grid.

    J_ref and J_sample are floored at 0 and f_s clipped into [0, 1] here (again), so raw
    user-law values can be passed. `q`, `contrast`, `offset` are scalars or one per angle.
    Without `pairs`, returns the maps, shape (len(phi), len(t), len(t)); with
    `pairs = (i, j, angle)` (index arrays), returns c2 at those triples only.
    """
    t = np.asarray(t, dtype=np.float64)
    phi = np.atleast_1d(np.asarray(phi, dtype=np.float64))
    n_angles = phi.shape[0]
    q = np.broadcast_to(np.asarray(q, dtype=np.float64), (n_angles,))
    contrast = np.broadcast_to(np.asarray(contrast, dtype=np.float64), (n_angles,))
    offset = np.broadcast_to(np.asarray(offset, dtype=np.float64), (n_angles,))

    C_ref = cumulative_trapezoid(np.maximum(J_ref, 0.0), t)
    C_sample = cumulative_trapezoid(np.maximum(J_sample, 0.0), t)
    C_v = cumulative_trapezoid(v, t)
    f_s = np.clip(np.asarray(f_s, dtype=np.float64), 0.0, 1.0)
    cosine = np.cos(np.deg2rad(phi + phi0))

    def correlation(i, j, k):
        # t1 = t[i], t2 = t[j], angle k; "1" and "2" mark the two times.
        fs1, fs2 = f_s[i], f_s[j]
        fr1, fr2 = 1.0 - fs1, 1.0 - fs2
        h_ref = np.exp(-0.5 * q[k] ** 2 * np.abs(C_ref[j] - C_ref[i]))
        h_sample = np.exp(-0.5 * q[k] ** 2 * np.abs(C_sample[j] - C_sample[i]))
        phase = q[k] * cosine[k] * (C_v[j] - C_v[i])
        num = (
            (fr1 * fr2) ** 2 * h_ref**2
            + (fs1 * fs2) ** 2 * h_sample**2
            + 2 * (fr1 * fs1) * (fr2 * fs2) * h_ref * h_sample * np.cos(phase)
        )
        norm = (fs1**2 + fr1**2) * (fs2**2 + fr2**2)
        return offset[k] + contrast[k] * num / norm

    if pairs is not None:
        i, j, k = (np.asarray(index) for index in pairs)
        return correlation(i, j, k)
    n = t.shape[0]
    rows, columns = np.arange(n)[:, None], np.arange(n)[None, :]
    return np.stack([correlation(rows, columns, k) for k in range(n_angles)])


def c2(vector, t, *, q, phi, contrast=0.5, offset=1.0, pairs=None) -> np.ndarray:
    """c2 of SPEC §2 for a canonical 14-vector: maps (len(phi), len(t), len(t)), or values at
    `pairs = (i, j, angle)`."""
    r = rates(vector, t)
    return c2_from_rates(
        t,
        r["J_ref"],
        r["J_sample"],
        r["velocity"],
        r["sample_fraction"],
        q=q,
        phi=phi,
        phi0=unpack(vector)["phi0"],
        contrast=contrast,
        offset=offset,
        pairs=pairs,
    )


def g2_stationary(tau, *, D_ref, D_sample, v, x, q, phi, phi0, contrast=0.5, offset=1.0):
    """The one-time form S-98 (SPEC §2) with constant rates; x = f_s²/(f_s² + f_r²).

    Returns shape (len(phi), len(tau)).
    """
    tau = np.abs(np.asarray(tau, dtype=np.float64))[None, :]
    phi = np.atleast_1d(np.asarray(phi, dtype=np.float64))[:, None]
    q = np.asarray(q, dtype=np.float64)
    phase = q * np.cos(np.deg2rad(phi + phi0)) * v * tau
    bracket = (
        (1 - x) ** 2 * np.exp(-(q**2) * D_ref * tau)
        + x**2 * np.exp(-(q**2) * D_sample * tau)
        + 2 * x * (1 - x) * np.exp(-0.5 * q**2 * (D_ref + D_sample) * tau) * np.cos(phase)
    )
    return offset + contrast * bracket


def integral_scales(vector, t) -> tuple[float, float]:
    """(max C_ref + max C_sample, max|C_v|): the largest transport and displacement integrals."""
    r = rates(vector, t)
    C_ref = cumulative_trapezoid(r["J_ref"], t)
    C_sample = cumulative_trapezoid(r["J_sample"], t)
    C_v = cumulative_trapezoid(r["velocity"], t)
    return float(C_ref[-1] + C_sample[-1]), float(np.max(np.abs(C_v)))


def roundoff_scale(vector, t, q) -> float:
    """The condition number of c2 with respect to rounding in the integrals.

    Every evaluation path differences cumulative integrals whose magnitude can reach max|C|;
    an error of a few ulps of max|C| enters the exponents as q²·ulp and the phase as q·ulp.
    This returns q²·(max C_ref + max C_sample) + q·max|C_v|, so that a few times
    `eps · roundoff_scale` bounds the absolute change of num/f² that rounding can cause in
    *any* correct float64 evaluation (paths that sum or difference in another order differ by
    that much). It is not an error of either path: it is the resolution of float64 here.
    """
    transport, displacement = integral_scales(vector, t)
    q = float(np.max(np.abs(q)))
    return q**2 * transport + q * displacement
