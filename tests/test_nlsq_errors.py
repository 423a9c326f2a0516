"""Error estimators: the frame-clustered sandwich against a brute-force reference and in use."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._nlsq import _build
from heterojax._fit._uncertainty import FormalErrors, FrameClusteredErrors, resolve_errors


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 100.0, "D0_sample": 2000.0, "v0": 300.0, "f0": 0.4})
FREE = {"D0_ref", "D0_sample", "v0", "f0"}
FIXED = [name for name in TRUTH.parameter_names if name not in FREE]


def test_errors_argument_resolves():
    assert isinstance(resolve_errors("formal"), FormalErrors)
    assert isinstance(resolve_errors("frame-clustered"), FrameClusteredErrors)
    custom = FrameClusteredErrors()
    assert resolve_errors(custom) is custom
    with pytest.raises(ValueError, match="errors"):
        resolve_errors("sandwich")


@pytest.mark.parametrize("diagonal", ["mask", "none"])
def test_clustered_meat_matches_a_brute_force_sum_over_entry_pairs(diagonal):
    """M = Σ over pairs of used entries (e, e') of the same map sharing a frame of s_e s_e'ᵀ,
    computed from the dense Jacobian of the residual maps."""
    t = 0.05 * np.arange(1, 9)
    simulated = hj.simulate(
        TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.01, key=jr.key(3)
    )
    data = hj.XPCSData(
        simulated.c2,
        simulated.t,
        q=simulated.q,
        phi=simulated.phi,
        sigma=simulated.sigma,
        diagonal=diagonal,
    )
    problem, x0, _, _ = _build(
        TRUTH,
        data,
        fixed=FIXED,
        bounds=None,
        scaling="individual",
        fourier_order=None,
        contrast=None,
        offset=None,
        sigma=None,
        roi=None,
    )
    x = jnp.asarray(x0)
    residual = np.asarray(problem.residual_maps(x))  # (maps, t, t)
    jacobian = np.asarray(jax.jacfwd(problem.residual_maps)(x))  # (maps, t, t, p)
    scores = jacobian * residual[..., None]
    used = np.asarray(problem.weights) != 0
    expected = np.zeros((x.shape[0], x.shape[0]))
    n = t.shape[0]
    for a in range(scores.shape[0]):
        entries = [(i, j) for i in range(n) for j in range(n) if used[a, i, j]]
        for i, j in entries:
            for k, m in entries:
                if {i, j} & {k, m}:
                    expected += np.outer(scores[a, i, j], scores[a, k, m])
    meat = np.asarray(problem.frame_clustered_meat(x))
    np.testing.assert_allclose(meat, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


@pytest.mark.slow
def test_clustered_errors_track_the_scatter_on_speckle_data_and_formal_errors_do_not():
    """Speckle noise is correlated along rows and columns: the formal error is too small,
    the frame-clustered one is larger (measured: about 1.7×; scatter/formal ≈ 2.1)."""
    t = 0.05 * np.arange(1, 61)
    ratios = []
    for seed in range(3):
        data = hj.simulate_speckle(
            TRUTH,
            t,
            q=0.01,
            phi=[0.0, 60.0],
            pixels=500,
            counts=2.0,
            contrast=0.2,
            key=jr.key(seed),
            correlate=True,
        )
        result = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1, errors="frame-clustered")
        assert result.errors == "FrameClusteredErrors"
        ratios.append(result.stderr["v0"] / result.formal_stderr["v0"])
    assert np.median(ratios) > 1.3


def test_clustered_errors_agree_with_formal_errors_on_independent_noise():
    t = 0.05 * np.arange(1, 61)
    data = hj.simulate(TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.002, key=jr.key(1))
    result = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1, errors="frame-clustered")
    for name in FREE:
        assert result.stderr[name] == pytest.approx(result.formal_stderr[name], rel=0.35)
    default = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1)
    assert default.errors == "FormalErrors" and default.stderr == default.formal_stderr
