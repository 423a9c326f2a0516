"""The exact offset shear of the CMC coordinates (`OffsetShear`, `NUTS(shear_offset=True)`)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._coordinates import offset_shear
from heterojax._fit._problem import build_problem
from heterojax._fit._scaling import resolve_scaling


TRUTH = hj.HeterodyneModel.from_dict(
    {"D0_ref": 200.0, "D0_sample": 2e3, "alpha_sample": 0.0, "v0": 60.0, "f0": 0.4}
)
FREE = ("D0_ref", "D0_sample", "v0", "f0")


def _problem(scaling: str):
    t = 0.25 * np.arange(1, 33)
    phi = np.array([0.0, 50.0, 100.0])
    data = hj.simulate(
        TRUTH, t, q=0.012, phi=phi, contrast=0.3, offset=1.0, noise=0.01, key=jr.key(3)
    )
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    problem, x0, _ = build_problem(
        TRUTH,
        data,
        fixed=fixed,
        bounds=None,
        scaling=resolve_scaling(scaling, phi, order=1),
        contrast=np.array([0.3, 0.32, 0.28]),
        offset=np.array([1.0, 1.01, 0.99]),
    )
    center = problem.transform.to_unconstrained(jnp.asarray(x0))
    return data, problem, center


@pytest.mark.slow  # the shear is opt-in (NUTS(shear_offset=True)); ~20 s a case
@pytest.mark.parametrize("scaling", ["constant", "individual"])
def test_offset_shear_is_an_exact_volume_preserving_bijection(scaling):
    """to_theta inverts from_theta, and the map has unit Jacobian determinant, so the density
    in the sheared coordinates is the density in θ."""
    data, problem, center = _problem(scaling)
    shear = offset_shear(problem, data.t, data.q, data.phi, center)
    assert shear.applies
    rng = np.random.default_rng(0)
    for _ in range(3):
        theta = center + jnp.asarray(rng.normal(0.0, 0.5, center.shape))
        v = shear.from_theta(theta)
        assert not np.allclose(v, theta)  # it does move the scaling coordinates
        np.testing.assert_allclose(shear.to_theta(v), theta, rtol=0, atol=1e-10)
        jacobian = jax.jacfwd(shear.to_theta)(v)
        assert abs(float(jnp.linalg.det(jacobian)) - 1.0) < 1e-10
    # At the centre each offset coordinate is its deviation from the ridge: zero.
    b = np.asarray(problem.offset_basis).shape[1]
    np.testing.assert_allclose(shear.from_theta(center)[-b:], 0.0, atol=1e-12)


def test_offset_shear_is_the_identity_where_it_does_not_apply():
    data, problem, center = _problem("fourier")
    shear = offset_shear(problem, data.t, data.q, data.phi, center)
    assert not shear.applies
    theta = center + 0.3
    np.testing.assert_array_equal(shear.to_theta(theta), theta)
    data, problem, center = _problem("constant")
    assert not offset_shear(problem, data.t, data.q, data.phi, center, enabled=False).applies
