"""The structured (block low-rank) evaluation of c2 equals the direct formula.

Both methods take the same cumulative integrals; the structured one differences them at block
pivots ((C[e] − C[i]) + (C[s] − C[e]) + (C[j] − C[s]) instead of C[j] − C[i]) and rotates phases
from the pivots. Each re-association costs at most a few ulps of max|C|, so the tolerance is
1e-12·max|c2| plus 16 ulps of max|C| propagated through q²·max C_J + q·max|C_v|
(`rounding_allowance`). For sensible experiments that is ~1e-12; at the corners of the box
(D0 = 1e6, α = 2, t to 1e4 s, q = 0.1) the phase q·∫v reaches 1e15 rad or more, where float64
cannot resolve cos Φ at all and the allowance exceeds the range of c2: those cases still check
that both methods are finite and inside [offset, offset + contrast].
"""

import numpy as np
import pytest
from _model_strategies import AGEING, EPS, c2, cases, rounding_allowance
from hypothesis import given

import heterojax as hj


def _vector(**values):
    return np.asarray(
        [values.get(name, hj.PARAMETERS[name].default) for name in hj.PARAMETER_NAMES]
    )


PARAMETER_CASES = {
    "defaults": (_vector(), 0.01),
    "ageing": (
        _vector(**AGEING),
        0.02,
    ),
    "fast diffusion at q = 0.1": (_vector(D0_ref=1e6, D0_sample=1e6), 0.1),
    "fast flow at q = 0.1": (_vector(D0_ref=0.0, D0_sample=1.0, v0=1e5), 0.1),
    "alpha = -2": (_vector(alpha_ref=-2.0, alpha_sample=-2.0, beta=-2.0, v0=1e5), 0.1),
    "alpha = +2": (_vector(D0_ref=1e6, alpha_ref=2.0, alpha_sample=2.0, beta=2.0, v0=1e5), 0.1),
    "upper bounds": (np.asarray([hj.PARAMETERS[n].upper for n in hj.PARAMETER_NAMES]), 0.1),
    "lower bounds": (np.asarray([hj.PARAMETERS[n].lower for n in hj.PARAMETER_NAMES]), 0.1),
    "fraction pinned at 0": (_vector(f0=0.0, f3=0.0, D0_ref=5e3), 0.01),
    "fraction pinned at 1": (_vector(f0=1.0, f3=1.0), 0.01),
}
# 127 and 128 are one block (the block size divides n when it can, up to 127), 129 = 3 × 43,
# 131 (prime) = 64 + 64 + 3 with a short last block, 300 = 5 × 60, 1000 = 20 × 50.
SIZES = [1, 2, 5, 127, 128, 129, 131, 300, 1000]


def _grids(n):
    """Grids of n points: short from t = 0 (small grids only, to keep the run short), long (to
    ~1e4 s) from t = 0, and non-uniform late."""
    long_step = 1e4 / max(n - 1, 1)
    rng = np.random.default_rng(n)
    grids = {
        "long from 0": long_step * np.arange(n),
        "non-uniform": 10.0 + np.cumsum(rng.uniform(0.002, 0.02, n)),
    }
    return grids | ({"short from 0": 0.01 * np.arange(n)} if n < 300 else {})


@pytest.mark.parametrize("n", SIZES)
def test_structured_equals_direct(n):
    phi = np.array([0.0, 45.0, 90.0])
    contrast = np.array([0.2, 0.5, 1.0])
    offset = np.array([1.0, 0.5, 1.5])
    for label, (vector, q) in PARAMETER_CASES.items():
        model = hj.HeterodyneModel.from_vector(vector)
        for grid_label, t in _grids(n).items():
            kwargs = dict(q=q, phi=phi, contrast=contrast, offset=offset)
            direct = c2(model, t, method="direct", **kwargs)
            structured = c2(model, t, method="structured", **kwargs)
            assert np.all(np.isfinite(structured)), (label, grid_label)
            bounds = offset[:, None, None], (offset + contrast)[:, None, None]
            assert np.all(structured >= bounds[0] - 1e-14), (label, grid_label)
            assert np.all(structured <= bounds[1] + 1e-14), (label, grid_label)
            tolerance = 1e-12 * np.max(np.abs(direct))
            tolerance += rounding_allowance(vector, t, q, contrast, ulps=16)
            np.testing.assert_allclose(
                structured, direct, rtol=0, atol=tolerance, err_msg=f"{label}, {grid_label}"
            )


@pytest.mark.parametrize("n, chosen", [(31, "direct"), (32, "structured")])
def test_auto_switches_at_32_points(n, chosen):
    """ "auto" is the direct formula below 32 points and the structured evaluation from 32
    (the same computation, so bit for bit); with a bin geometry always the structured one."""
    vector, q = PARAMETER_CASES["ageing"]
    model = hj.HeterodyneModel.from_vector(vector)
    t = 0.01 * np.arange(1, n + 1)
    phi = np.array([10.0, 45.0, 80.0])
    auto = c2(model, t, q=q, phi=phi, method="auto")
    np.testing.assert_array_equal(auto, c2(model, t, q=q, phi=phi, method=chosen))
    bins = hj.BinGeometry.from_widths(np.full(3, q), phi, 0.1 * q, 20.0, nodes=(2, 3))
    auto, structured = (
        model.c2(t[:8], q=q, phi=phi, bins=bins, method=method) for method in ("auto", "structured")
    )
    np.testing.assert_array_equal(auto, structured)


def test_well_conditioned_cases_agree_to_1e_12():
    """Where rounding in the integrals cannot matter, the methods agree to 1e-12 outright."""
    vector, q = PARAMETER_CASES["ageing"]
    model = hj.HeterodyneModel.from_vector(vector)
    t = 0.005 * np.arange(300)
    assert rounding_allowance(vector, t, q, 1.0, ulps=16) < 1e-13
    phi = np.array([0.0, 30.0, 60.0])
    direct = c2(model, t, q=q, phi=phi, contrast=np.full(3, 0.5), method="direct")
    structured = c2(model, t, q=q, phi=phi, contrast=np.full(3, 0.5), method="structured")
    np.testing.assert_allclose(structured, direct, rtol=0, atol=1e-12 * np.max(np.abs(direct)))
    # The map is far from trivial here: it decays and oscillates.
    assert np.ptp(direct) > 0.1


@given(case=cases())
def test_structured_equals_direct_property(case):
    """Whole box, small grids (padded to one block: the diagonal-block path)."""
    model = hj.HeterodyneModel.from_vector(case["vector"])
    kwargs = {k: case[k] for k in ("q", "phi", "contrast", "offset")}
    direct = c2(model, case["t"], method="direct", **kwargs)
    structured = c2(model, case["t"], method="structured", **kwargs)
    tolerance = 1e-12 * np.max(np.abs(direct))
    tolerance += rounding_allowance(case["vector"], case["t"], case["q"], case["contrast"], ulps=16)
    np.testing.assert_allclose(structured, direct, rtol=0, atol=tolerance)


@pytest.mark.parametrize("n", [131, 300])
@given(case=cases(kappa=30.0, sizes=(2,)))
def test_structured_equals_direct_property_multi_block(case, n):
    """Whole box, grids of several blocks (131 is prime: 64 + 64 + 3, 300 is 5 × 60); the
    case's parameters and angles, on a uniform grid stretched from its first two points."""
    t = case["t"][0] + (case["t"][1] - case["t"][0]) * np.arange(n) / (n - 1)
    model = hj.HeterodyneModel.from_vector(case["vector"])
    kwargs = {k: case[k] for k in ("q", "phi", "contrast", "offset")}
    direct = c2(model, t, method="direct", **kwargs)
    structured = c2(model, t, method="structured", **kwargs)
    tolerance = 1e-12 * np.max(np.abs(direct))
    tolerance += rounding_allowance(case["vector"], t, case["q"], case["contrast"], ulps=16)
    np.testing.assert_allclose(structured, direct, rtol=0, atol=tolerance)
    assert 16 * EPS < 1e-12  # the allowance above is at most ~1e-12 for these q (kappa ≤ 30)


@given(case=cases(sizes=(70,)))
def test_invariants_on_several_blocks(case):
    """The invariants of test_model_invariants on a grid of two blocks (70 = 2 × 35), where the
    off-diagonal part of the structured evaluation is used (small grids are one block)."""
    model = hj.HeterodyneModel.from_vector(case["vector"])
    kwargs = {k: case[k] for k in ("q", "phi", "contrast", "offset")}
    maps = c2(model, case["t"], method="structured", **kwargs)
    contrast, offset = case["contrast"][:, None, None], case["offset"][:, None, None]
    diagonal = np.diagonal(maps, axis1=-2, axis2=-1)
    np.testing.assert_allclose(
        diagonal, np.broadcast_to(offset + contrast, maps.shape)[..., 0], rtol=8 * EPS
    )
    np.testing.assert_allclose(maps, np.swapaxes(maps, -1, -2), rtol=0, atol=16 * EPS * 2.5)
    assert np.all((maps >= offset - 8 * EPS * 2.5) & (maps <= offset + contrast + 8 * EPS * 2.5))
    tolerance = 1e-13 + rounding_allowance(case["vector"], case["t"], case["q"], case["contrast"])
    turned = c2(model, case["t"], method="structured", **(kwargs | {"phi": case["phi"] + 180.0}))
    np.testing.assert_allclose(turned, maps, rtol=0, atol=tolerance)
