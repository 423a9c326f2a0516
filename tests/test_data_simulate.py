"""heterojax.simulate: clean maps from the model, symmetric Gaussian noise, σ, metadata."""

import jax.random as jr
import numpy as np
import pytest

import heterojax as hj


MODEL = hj.HeterodyneModel().replace(D0_ref=2e3, D0_sample=8e3, v0=4e3, f0=0.4)
DT = 0.002
T = DT * np.arange(5, 45)  # frames 5..44
Q = np.array([0.01, 0.01, 0.02])
PHI = np.array([0.0, 60.0, 0.0])
METHOD = "auto"  # the default: "direct" for these small grids


def test_clean_maps_are_the_model_made_exactly_symmetric():
    data = hj.simulate(MODEL, T, q=Q, phi=PHI, contrast=0.3, offset=1.1, method=METHOD)
    direct = np.asarray(MODEL.c2(T, q=Q, phi=PHI, contrast=np.full(3, 0.3), offset=np.full(3, 1.1)))
    c2 = np.asarray(data.c2)
    np.testing.assert_array_equal(c2, np.swapaxes(c2, 1, 2))
    np.testing.assert_allclose(c2, direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(c2, axis1=1, axis2=2), 1.4, atol=1e-12)
    assert data.sigma is None and data.diagonal == "none"
    assert data.metadata["frames"] == (5, 44)
    assert data.metadata["parameters"]["v0"] == 4e3
    assert data.metadata["contrast"] == (0.3, 0.3, 0.3)
    assert float(data.dt) == pytest.approx(DT, rel=1e-12)


def test_noise_is_gaussian_symmetric_and_recorded_as_sigma(key):
    clean = np.asarray(hj.simulate(MODEL, T, q=Q, phi=PHI, method=METHOD).c2)
    levels = np.array([0.01, 0.05, 0.2])
    noisy = hj.simulate(MODEL, T, q=Q, phi=PHI, noise=levels, key=key, method=METHOD)
    residual = np.asarray(noisy.c2) - clean
    np.testing.assert_array_equal(residual, np.swapaxes(residual, 1, 2))
    upper = np.triu_indices(T.size)
    for k, sigma in enumerate(levels):
        draws = residual[k][upper] / sigma
        # 820 independent standard normals: mean within 4/√n, std within 10 %.
        assert abs(draws.mean()) < 4 / np.sqrt(draws.size)
        assert draws.std() == pytest.approx(1.0, rel=0.1)
    assert noisy.sigma is not None
    np.testing.assert_array_equal(
        np.asarray(noisy.sigma), np.broadcast_to(levels[:, None, None], residual.shape)
    )
    weights = np.asarray(noisy.weights)
    assert weights[2, 0, 1] == pytest.approx(1 / 0.2**2) and weights[2, 1, 0] == 0.0


def test_same_key_same_data_other_key_other_data(key):
    first = hj.simulate(MODEL, T, q=Q, phi=PHI, noise=0.01, key=key, method=METHOD)
    again = hj.simulate(MODEL, T, q=Q, phi=PHI, noise=0.01, key=key, method=METHOD)
    other = hj.simulate(MODEL, T, q=Q, phi=PHI, noise=0.01, key=jr.key(7), method=METHOD)
    np.testing.assert_array_equal(np.asarray(first.c2), np.asarray(again.c2))
    assert not np.array_equal(np.asarray(first.c2), np.asarray(other.c2))


def test_diagonal_modes(key):
    noisy = hj.simulate(MODEL, T, q=Q, phi=PHI, noise=0.05, key=key, method=METHOD)
    interpolated = hj.simulate(
        MODEL, T, q=Q, phi=PHI, noise=0.05, key=key, diagonal="interpolate", method=METHOD
    )
    raw = np.asarray(noisy.c2[1])
    fixed = np.asarray(interpolated.c2[1])
    assert interpolated.diagonal == "interpolate"
    assert fixed[3, 3] == pytest.approx(0.5 * (raw[3, 4] + raw[2, 3]), abs=1e-15)
    off = ~np.eye(T.size, dtype=bool)
    np.testing.assert_array_equal(fixed[off], raw[off])


def test_simulate_errors(key):
    with pytest.raises(ValueError, match="`key` is required when `noise` > 0"):
        hj.simulate(MODEL, T, q=Q, phi=PHI, noise=0.1, method=METHOD)
    with pytest.raises(ValueError, match="non-negative"):
        hj.simulate(MODEL, T, q=Q, phi=PHI, noise=-0.1, key=key, method=METHOD)
    with pytest.raises(ValueError, match="`noise` must be a scalar, one σ per angle"):
        hj.simulate(MODEL, T, q=Q, phi=PHI, noise=np.ones(5), key=key, method=METHOD)
    with pytest.raises(ValueError, match="zero for some entries but not others"):
        hj.simulate(MODEL, T, q=Q, phi=PHI, noise=np.array([0.0, 0.1, 0.1]), key=key)
    with pytest.raises(ValueError, match="`contrast` must be a scalar or have one value per angle"):
        hj.simulate(MODEL, T, q=Q, phi=PHI, contrast=np.ones(2), method=METHOD)
    with pytest.raises(ValueError, match="`diagonal` must be one of"):
        hj.simulate(MODEL, T, q=Q, phi=PHI, diagonal="drop")
