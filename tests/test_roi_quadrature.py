"""The bin quadrature reproduces the pixel average of the point model (issue 7, item 4a).

The independent path: pixel (q, φ) computed here with NumPy from a detector geometry (APS
convention), the point model evaluated at every pixel by the plain-NumPy reference of SPEC §2
(`_numpy_reference`, which never imports heterojax) and averaged with NumPy. The ROI model
(`HeterodyneModel.c2(..., bins=...)` with the rule `BinGeometry.for_model` chooses for a
stated accuracy of 1e-4 in c2) must agree with it to 1e-4 everywhere on the map; the
bin-centre model must not (so the comparison can fail).
"""

import numpy as np
import pytest
from _numpy_reference import c2 as reference_c2

import heterojax as hj
from heterojax._model._quadrature import gauss_rule, nodes_for_spread, pixel_moments, tensor_rule


TOLERANCE = 1e-4
# An ageing model with strong dephasing across 45° sectors: q·∫v reaches ~25 rad at q = 0.0115
# over the window, the sample decays by e^-2.
PARAMETERS = dict(
    D0_ref=300.0,
    alpha_ref=0.3,
    D0_sample=2e4,
    alpha_sample=-0.3,
    D_offset_sample=2e3,
    v0=1800.0,
    beta=0.4,
    v_offset=200.0,
    f0=0.45,
    f1=0.3,
    phi0=12.0,
)
T = 0.02 * np.arange(1, 61)
CONTRAST, OFFSET = 0.4, 1.0


def vector(**values):
    return np.array([values.get(n, hj.PARAMETERS[n].default) for n in hj.PARAMETER_NAMES])


def detector_pixels(side=401, centre=(200.3, 199.6), pixel=0.075, distance=5000.0, energy=10.0):
    """q (Å⁻¹) and φ (deg) of every pixel: φ = −atan2(row − bcy, col − bcx),
    q = 4π/λ sin(½ atan(r·p/d)), λ = 12.398/E."""
    rows, cols = np.mgrid[0:side, 0:side].astype(float)
    dy, dx = rows - centre[1], cols - centre[0]
    q = 4 * np.pi / (12.398 / energy) * np.sin(0.5 * np.arctan(np.hypot(dx, dy) * pixel / distance))
    return q.ravel(), -np.rad2deg(np.arctan2(dy, dx)).ravel()


def sector(q, phi, q_range, phi_range):
    offset = (phi - phi_range[0]) % 360.0
    return (q >= q_range[0]) & (q < q_range[1]) & (offset < (phi_range[1] - phi_range[0]) % 360)


def pixel_average(model_vector, q_pixels, phi_pixels):
    """The point model at every pixel (NumPy reference), averaged over the pixels."""
    maps = reference_c2(
        model_vector, T, q=q_pixels, phi=phi_pixels, contrast=CONTRAST, offset=OFFSET
    )
    return maps.mean(axis=0)


Q_PIXELS, PHI_PIXELS = detector_pixels()
BINS = {
    # name: (q range, φ range swept counter-clockwise), about ±15 % and 45°
    "across flow": (((0.0085, 0.0115)), (67.5, 112.5)),
    "oblique": ((0.0085, 0.0115), (22.5, 67.5)),
    "across ±180°": ((0.0085, 0.0115), (157.5, -157.5)),
}


@pytest.mark.parametrize("name", BINS)
def test_quadrature_equals_pixel_average(name):
    q_range, phi_range = BINS[name]
    inside = sector(Q_PIXELS, PHI_PIXELS, q_range, phi_range)
    q_pix, phi_pix = Q_PIXELS[inside], PHI_PIXELS[inside]
    assert q_pix.size > 1000
    model_vector = vector(**PARAMETERS)
    model = hj.HeterodyneModel.from_vector(model_vector)
    bins = hj.BinGeometry.from_pixels([q_pix], [phi_pix]).for_model(model, T)
    assert bins.n_nodes < 200  # a small rule, not the pixels
    centre_q, centre_phi = float(bins.q_centre[0]), float(bins.phi_centre[0])
    roi = np.asarray(
        model.c2(T, q=centre_q, phi=centre_phi, contrast=CONTRAST, offset=OFFSET, bins=bins)
    )[0]
    exact = pixel_average(model_vector, q_pix, phi_pix)
    assert np.max(np.abs(roi - exact)) <= TOLERANCE
    centre = np.asarray(model.c2(T, q=centre_q, phi=centre_phi, contrast=CONTRAST, offset=OFFSET))
    assert np.max(np.abs(centre[0] - exact)) > 100 * TOLERANCE


def test_masked_bin_is_not_a_product_measure_and_still_exact():
    # A beamstop arm and a module gap cut the sector: the pixel measure is no product of its
    # q and φ marginals, which the interpolatory weights handle.
    inside = sector(Q_PIXELS, PHI_PIXELS, (0.0085, 0.0115), (67.5, 112.5))
    rows, cols = np.divmod(np.arange(Q_PIXELS.size), 401)
    arm = np.abs(cols - 195) < 6
    gap = (rows > 60) & (rows < 75)
    inside &= ~arm & ~gap
    q_pix, phi_pix = Q_PIXELS[inside], PHI_PIXELS[inside]
    model_vector = vector(**PARAMETERS)
    model = hj.HeterodyneModel.from_vector(model_vector)
    bins = hj.BinGeometry.from_pixels([q_pix], [phi_pix]).for_model(model, T)
    roi = np.asarray(model.c2(T, q=0.01, phi=90.0, contrast=CONTRAST, offset=OFFSET, bins=bins))[0]
    assert np.max(np.abs(roi - pixel_average(model_vector, q_pix, phi_pix))) <= TOLERANCE


def test_widths_rule_equals_continuum_average_of_an_annular_sector():
    # from_widths integrates over the box with the density ∝ q (q dq dφ); compare with a
    # 40 × 80 Gauss–Legendre product rule of NumPy weighted by q, converged far below 1e-4.
    q0, dq, phi0_, dphi = 0.01, 0.003, 90.0, 45.0
    model_vector = vector(**PARAMETERS)
    model = hj.HeterodyneModel.from_vector(model_vector)
    bins = hj.BinGeometry.from_widths(q0, phi0_, dq, dphi).for_model(model, T)
    roi = np.asarray(model.c2(T, q=q0, phi=phi0_, contrast=CONTRAST, offset=OFFSET, bins=bins))[0]
    (xq, wq), (xp, wp) = (np.polynomial.legendre.leggauss(n) for n in (40, 80))
    qq, pp = np.meshgrid(q0 + dq / 2 * xq, phi0_ + dphi / 2 * xp, indexing="ij")
    weights = (wq[:, None] * wp[None, :] * qq).ravel()
    maps = reference_c2(
        model_vector, T, q=qq.ravel(), phi=pp.ravel(), contrast=CONTRAST, offset=OFFSET
    )
    area = np.tensordot(weights / weights.sum(), maps, axes=1)
    assert np.max(np.abs(roi - area)) <= TOLERANCE


def test_gauss_rule_from_moments_is_gauss_legendre_for_the_uniform_measure():
    moments = np.zeros(64)
    moments[0] = 1.0
    for n in (1, 2, 7, 32):
        nodes, weights = gauss_rule(moments, n)
        expected_nodes, expected_weights = np.polynomial.legendre.leggauss(n)
        np.testing.assert_allclose(nodes, expected_nodes, atol=1e-13)
        np.testing.assert_allclose(weights, expected_weights / 2, atol=1e-13)


def test_tensor_rule_is_exact_for_polynomials_of_the_pixel_measure():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 4000) ** 3  # a lopsided, non-uniform measure
    y = np.clip(rng.normal(0, 0.5, 4000) + 0.2 * x, -1, 1)  # correlated with x
    xn, yn, w = tensor_rule(pixel_moments(x, y), 5, 6)
    for a in range(5):
        for b in range(6):
            exact = np.mean(x**a * y**b)
            rule = np.sum(w * xn[:, None] ** a * yn[None, :] ** b)
            assert abs(rule - exact) < 1e-12


def test_few_pixels_give_the_rule_of_their_support():
    bins = hj.BinGeometry.from_pixels(
        [np.array([0.01, 0.011, 0.012])], [np.array([10.0, 10.0, 10.0])], nodes=(8, 8)
    )
    weights = np.asarray(bins.weights).reshape(8, 8)
    assert np.count_nonzero(np.abs(weights) > 1e-12) == 3
    np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-12)


def test_node_rule_grows_with_the_spread_and_meets_its_tolerance():
    counts = [nodes_for_spread(p, 0.0, 1e-4) for p in (0.0, 1.0, 5.0, 20.0, 60.0)]
    assert counts[0] == 1
    assert counts == sorted(counts) and counts[-1] > counts[2] > counts[1]
    # 20 rad of phase: the chosen rule is within tolerance on every oscillation up to 20 rad.
    n = nodes_for_spread(20.0, 3.0, 1e-4)
    x, w = np.polynomial.legendre.leggauss(n)
    u = (x + 1) / 2
    for phase in np.linspace(0, 20, 101):
        for decay in (0.0, 1.5, 3.0):
            z = -decay + 1j * phase
            exact = np.expm1(z) / z if z != 0 else 1.0
            assert abs(np.sum(w / 2 * np.exp(z * u)) - exact) <= 1e-4


def test_node_count_follows_the_model_spreads():
    bins = hj.BinGeometry.from_widths([0.01, 0.01], [0.0, 90.0], [0.003, 0.0], [45.0, 10.0])
    slow = hj.HeterodyneModel.from_dict({"v0": 10.0, "D0_sample": 10.0, "D0_ref": 0.0})
    fast = slow.replace(v0=3000.0)
    assert bins.nodes_needed(slow, T) == (1, 1) or max(bins.nodes_needed(slow, T)) <= 2
    n_q, n_phi = bins.nodes_needed(fast, T)
    assert n_phi > n_q > 1
    assert bins.for_model(fast, T).grid == (n_q, n_phi)
    fixed = hj.BinGeometry.from_widths(0.01, 0.0, 0.003, 45.0, nodes=(2, 3))
    assert fixed.for_model(fast, T).grid == (2, 3)  # a fixed rule is kept


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(q=0.01, phi=0.0, q_width=0.03, phi_width=10.0), "q_width"),
        (dict(q=-0.01, phi=0.0, q_width=0.0, phi_width=10.0), "positive"),
        (dict(q=0.01, phi=0.0, q_width=0.001, phi_width=400.0), "phi_width"),
        (dict(q=[0.01, 0.02], phi=[0.0, 1.0, 2.0], q_width=0.0, phi_width=1.0), "one value per"),
    ],
)
def test_from_widths_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        hj.BinGeometry.from_widths(**arguments)


def test_constructor_errors():
    with pytest.raises(ValueError, match="nodes"):
        hj.BinGeometry.from_widths(0.01, 0.0, 0.001, 10.0, nodes=(0, 3))
    with pytest.raises(ValueError, match="pixel"):
        hj.BinGeometry.from_pixels([np.array([])], [np.array([])])
    with pytest.raises(ValueError, match="sum"):
        hj.BinGeometry.from_nodes([[0.01, 0.02]], [[0.0, 0.0]], [[1.0, -1.0]])
    with pytest.raises(ValueError, match="from_widths"):
        hj.BinGeometry.from_nodes([[0.01, 0.02]], [[0.0, 0.0]]).with_nodes(2, 2)
