"""Quadrature rules for the pixel measure of a detector bin, and how many nodes it needs.

A measured c2 map averages over the pixels of one (q, φ) bin, so the ROI model needs
∫ g(q, φ) dμ(q, φ) for the bin's pixel measure μ (each pixel's (q, φ) carrying equal weight).
Everything here is plain NumPy, run once when a `BinGeometry` is built or refined.

**The measure, compressed.** The bin's box [q_c − h_q, q_c + h_q] × [φ_c − h_φ, φ_c + h_φ] is
mapped onto [−1, 1]², x = (q − q_c)/h_q, y = (φ − φ_c)/h_φ, and μ is summarised by its Legendre
moments M[c, d] = ∫ P_c(x) P_d(y) dμ, c, d ≤ D (`pixel_moments`, `area_moments`). Every rule
below needs nothing else, so a bin of thousands of pixels is stored as a (D+1)² table.

**The rule.** Nodes: the n_q-point Gauss rule of the q marginal (moments M[:, 0]) times the
n_φ-point Gauss rule of the φ marginal (M[0, :]), each from its moments by Gautschi's modified
Chebyshev algorithm in the Legendre basis (`gauss_rule`). Weights: those of the interpolatory
rule on that tensor grid for the *joint* measure,

    w_ab = ∫ ℓ_a(x) ℓ_b(y) dμ = (L_q M L_φᵀ)[a, b],   ℓ the Lagrange polynomials of the nodes,

so the rule integrates every polynomial of degree < n_q in x times degree < n_φ in y exactly
for the pixels themselves, and reduces to the tensor Gauss rule (degree 2n − 1 in each variable)
when μ is a product measure (an annular sector in the continuum is one: q dq dφ). Σ w_ab = 1.

**How many nodes** (`nodes_for_spread`): the c2 integrand varies across a bin through
exp(−q² ΔC_n) and the phase q cos(φ + φ0) ΔC_v. Per dimension its largest total change across
the bin is a phase spread P (radians) and a decay spread G (in the exponent); the rule size is
the smallest n whose Gauss–Legendre error on every u ↦ exp((−G' + iP') u), u ∈ [0, 1],
0 ≤ P' ≤ P, 0 ≤ G' ≤ G, is within the tolerance. `BinGeometry.for_model` turns a model and a
time window into P and G and states the resulting accuracy.
"""

import warnings

import numpy as np
from jaxtyping import Float


# The largest rule per dimension, and the moment degree that supports it (a Gauss rule of n
# nodes needs the moments up to 2n − 1).
MAX_NODES = 32
MOMENT_DEGREE = 2 * MAX_NODES - 1


def legendre_table(x: Float[np.ndarray, " n"], degree: int) -> Float[np.ndarray, "n d"]:
    """P_0(x), …, P_degree(x) by the three-term recurrence, one row per point."""
    x = np.asarray(x, dtype=np.float64)
    table = np.empty((x.size, degree + 1))
    table[:, 0] = 1.0
    if degree >= 1:
        table[:, 1] = x
    for k in range(1, degree):
        table[:, k + 1] = ((2 * k + 1) * x * table[:, k] - k * table[:, k - 1]) / (k + 1)
    return table


def pixel_moments(
    x: Float[np.ndarray, " pixel"],
    y: Float[np.ndarray, " pixel"],
    mass: Float[np.ndarray, " pixel"] | None = None,
    degree: int = MOMENT_DEGREE,
) -> Float[np.ndarray, "d d"]:
    """The Legendre moments M[c, d] = Σ_p m_p P_c(x_p) P_d(y_p) / Σ_p m_p of a discrete measure
    on [−1, 1]² (pixels in box coordinates; equal masses by default)."""
    mass = np.ones(np.shape(x)) if mass is None else np.asarray(mass, dtype=np.float64)
    px = legendre_table(x, degree) * (mass / np.sum(mass))[:, None]
    return px.T @ legendre_table(y, degree)


def area_moments(
    relative_half_width: float, degree: int = MOMENT_DEGREE
) -> Float[np.ndarray, "d d"]:
    """Moments of the area measure q dq dφ on a box, normalised: density (1 + s x)/2 · 1/2 with
    s = h_q / q_c (a flat detector at small angles puts ∝ q dq dφ pixels into an annular sector),
    so M[0, 0] = 1, M[1, 0] = s/3 and every other moment vanishes."""
    moments = np.zeros((degree + 1, degree + 1))
    moments[0, 0] = 1.0
    if degree >= 1:
        moments[1, 0] = relative_half_width / 3.0
    return moments


def gauss_rule(
    moments: Float[np.ndarray, " d"], n: int
) -> tuple[Float[np.ndarray, " k"], Float[np.ndarray, " k"]]:
    """The Gauss rule of at most n nodes for a measure on [−1, 1] given its Legendre moments.

    Modified Chebyshev algorithm (Gautschi, *Orthogonal Polynomials*, §2.1.7) with the monic
    Legendre polynomials π_k = P_k · 2^k (k!)² / (2k)! (recurrence a_k = 0,
    b_k = k² / (4k² − 1)) as the modified basis, which is well conditioned on [−1, 1]; then
    Golub–Welsch. A measure with fewer than n support points (a bin of few pixels, or of zero
    width) yields the rule of its support: the recurrence stops where β_k vanishes.

    **Returns:** `(nodes, weights)`, weights summing to the measure's mass.
    """
    degree = 2 * n - 1
    if np.size(moments) < degree + 1:
        raise ValueError(f"a {n}-point Gauss rule needs Legendre moments up to degree {degree}.")
    k = np.arange(degree + 1)
    log_scale = k * np.log(2.0) + 2 * np.array([np.sum(np.log(np.arange(1, j + 1))) for j in k])
    log_scale -= np.array([np.sum(np.log(np.arange(1, 2 * j + 1))) for j in k])
    nu = np.asarray(moments[: degree + 1], dtype=np.float64) * np.exp(log_scale)
    a = np.zeros(degree + 1)
    b = np.array([j * j / (4.0 * j * j - 1.0) for j in k])
    alpha, beta = np.zeros(n), np.zeros(n)
    alpha[0] = a[0] + nu[1] / nu[0] if degree >= 1 else a[0]
    beta[0] = nu[0]
    previous = np.zeros(degree + 2)
    current = np.zeros(degree + 2)
    current[: degree + 1] = nu
    size = n
    for j in range(1, n):
        following = np.zeros(degree + 2)
        for m in range(j, 2 * n - j):
            following[m] = (
                current[m + 1]
                - (alpha[j - 1] - a[m]) * current[m]
                - beta[j - 1] * previous[m]
                + b[m] * current[m - 1]
            )
        # Relative to the scale of π_j² (≈ 4^−j), a vanishing σ_jj means no further support.
        if not following[j] > 1e-13 * 4.0**-j * nu[0]:
            size = j
            break
        alpha[j] = a[j] + following[j + 1] / following[j] - current[j] / current[j - 1]
        beta[j] = following[j] / current[j - 1]
        previous, current = current, following
    alpha, beta = alpha[:size], beta[:size]
    jacobi = np.diag(alpha) + np.diag(np.sqrt(beta[1:]), 1) + np.diag(np.sqrt(beta[1:]), -1)
    nodes, vectors = np.linalg.eigh(jacobi)
    weights = beta[0] * vectors[0] ** 2
    return nodes, weights


def tensor_rule(
    moments: Float[np.ndarray, "d d"], n_q: int, n_phi: int
) -> tuple[Float[np.ndarray, " a"], Float[np.ndarray, " b"], Float[np.ndarray, "a b"]]:
    """The tensor-grid rule of the module doc in box coordinates: `(x_nodes, y_nodes, weights)`.

    Dimensions whose marginal has fewer support points than asked get fewer nodes (the caller
    pads them with zero weights)."""
    x, _ = gauss_rule(moments[:, 0], n_q)
    y, _ = gauss_rule(moments[0, :], n_phi)
    lagrange_x = np.linalg.inv(legendre_table(x, x.size - 1).T)  # ℓ_a = Σ_c L[a, c] P_c
    lagrange_y = np.linalg.inv(legendre_table(y, y.size - 1).T)
    weights = lagrange_x @ moments[: x.size, : y.size] @ lagrange_y.T
    return x, y, weights


# ----------------------------------------------------------------------------- the node rule


def _gauss_legendre_error(
    n: int, phase: Float[np.ndarray, " p"], decay: Float[np.ndarray, " g"]
) -> float:
    """max over the grid of |Gauss–Legendre_n − exact| for ∫_0^1 exp((−G + iP) u) du."""
    x, w = np.polynomial.legendre.leggauss(n)
    u, w = (x + 1) / 2, w / 2
    z = -decay[:, None] + 1j * phase[None, :]
    rule = np.tensordot(np.exp(z[..., None] * u), w, axes=1)
    small = np.abs(z) < 1e-3
    safe = np.where(small, 1.0, z)
    exact = np.where(small, 1 + z / 2 + z * z / 6 + z**3 / 24, np.expm1(safe) / safe)
    return float(np.max(np.abs(rule - exact)))


def nodes_for_spread(phase: float, decay: float, tolerance: float) -> int:
    """The fewest Gauss nodes for a dimension with the given phase and decay spreads.

    The smallest n ≤ `MAX_NODES` for which the n-point Gauss–Legendre rule integrates every
    exp((−G' + iP') u) over u ∈ [0, 1] with 0 ≤ P' ≤ `phase`, 0 ≤ G' ≤ `decay` to within
    `tolerance` (the error is not monotone in P', so the whole range is checked). With more
    than `MAX_NODES` needed, a warning is given and `MAX_NODES` returned.
    """
    phase, decay = max(float(phase), 0.0), max(float(decay), 0.0)
    phases = np.linspace(0.0, phase, max(65, int(4 * phase) + 1))
    decays = np.linspace(0.0, decay, 17 if decay > 0 else 1)
    for n in range(1, MAX_NODES + 1):
        if _gauss_legendre_error(n, phases, decays) <= tolerance:
            return n
    warnings.warn(
        f"a bin needs more than {MAX_NODES} quadrature nodes per dimension to reach "
        f"{tolerance:.1g} (phase spread {phase:.3g} rad, decay spread {decay:.3g}); using "
        f"{MAX_NODES}. Narrower bins or a shorter time window keep the ROI model exact.",
        stacklevel=3,
    )
    return MAX_NODES
