"""The q-consistency check: rings fitted alone agree when the physics does not depend on q, and
a transport coefficient that drifts with q is caught."""

import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._by_q import consistency_test, q_rings


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 600.0, "D0_sample": 2500.0, "v0": 300.0, "f0": 0.4})
FREE = ("D0_ref", "D0_sample", "v0", "f0")
FIXED = tuple(n for n in hj.PARAMETER_NAMES if n not in FREE)
T = 0.1 * np.arange(1, 41)


def _rings(d0_sample_at_high_q: float) -> hj.XPCSData:
    """Two q rings × two angles; the second ring simulated with its own D0_sample."""
    parts = [
        hj.simulate(
            TRUTH.replace(D0_sample=d0),
            T,
            q=q,
            phi=[0.0, 60.0],
            contrast=0.15,
            offset=1.0,
            noise=0.001,
            key=jr.key(seed),
        )
        for seed, (q, d0) in enumerate(((0.008, 2500.0), (0.012, d0_sample_at_high_q)))
    ]
    return hj.XPCSData(
        np.concatenate([np.asarray(p.c2) for p in parts]),
        T,
        q=np.concatenate([np.asarray(p.q) for p in parts]),
        phi=np.concatenate([np.asarray(p.phi) for p in parts]),
        dt=0.1,
    )


def test_rings_group_maps_by_q():
    rings = q_rings(np.array([0.012, 0.008, 0.012, 0.008 * (1 + 1e-9)]))
    assert [list(r) for r in rings] == [[1, 3], [0, 2]]


@pytest.mark.slow
def test_q_independent_physics_is_consistent_and_a_drift_is_caught(tmp_path):
    options = dict(fixed=FIXED, starts=1)
    check = hj.fit_by_q(TRUTH, _rings(2500.0), **options)
    np.testing.assert_allclose(check.q, [0.008, 0.012])
    assert check.names == FREE
    assert check.consistent, check.summary()
    assert np.all(np.abs(check.values - check.mean) <= 4 * check.errors)
    assert "q-consistency: ok" in check.summary()
    assert check.joint.quality.q_drift == ()
    drifted = hj.fit_by_q(TRUTH, _rings(4000.0), **options)
    assert "D0_sample" in drifted.drifting, drifted.summary()
    assert not drifted.consistent and "FAILED" in drifted.summary()
    # The joint fit's quality report says so, and is not ok.
    assert drifted.joint.quality.q_drift == drifted.drifting
    assert not drifted.joint.quality.ok
    assert "differs between q rings" in drifted.joint.summary()
    figure = hj.plot_q_dependence(drifted, path=tmp_path / "q.png")
    titles = [ax.get_title() for ax in figure.axes if ax.get_visible()]
    assert any(t.startswith("D0_sample: drifts") for t in titles)
    assert (tmp_path / "q.png").stat().st_size > 0


def test_one_ring_is_refused():
    data = hj.simulate(TRUTH, T, q=0.01, phi=[0.0, 60.0], contrast=0.15, noise=0.001, key=jr.key(0))
    with pytest.raises(ValueError, match="two or more q"):
        hj.fit_by_q(TRUTH, data, fixed=FIXED, starts=1)


def test_a_prefactor_with_a_free_exponent_is_tested_on_the_log_scale():
    """Rings with D0 log-normal (D0 = D(t*)·t*^(−α), α uncertain; σ/θ = 0.5): on the log scale
    the test holds its level and catches a D0 that quadruples from ring to ring; on the linear
    scale, where the errors grow with the estimates, it hardly ever flags either."""
    rng = np.random.default_rng(1)
    trials, sd_log = 2000, 0.5
    names = ("D0_sample", "alpha_sample")

    def alarm_rates(growth):
        truth = 50.0 * growth ** np.arange(3)
        d0 = truth * np.exp(sd_log * rng.standard_normal((trials, 3)))
        values = np.stack([d0, 0.1 + 0.2 * rng.standard_normal((trials, 3))], axis=-1)
        errors = np.stack([sd_log * d0, np.full((trials, 3), 0.2)], axis=-1)
        log_p = [consistency_test(names, v, e)[3][0] for v, e in zip(values, errors)]
        linear_p = [
            consistency_test(names[:1], v[:, :1], e[:, :1])[3][0] for v, e in zip(values, errors)
        ]
        return np.mean(np.array(log_p) < 0.05), np.mean(np.array(linear_p) < 0.05), values

    log_level, linear_level, values = alarm_rates(1.0)
    assert log_level == pytest.approx(0.05, abs=0.015)
    assert linear_level < 0.02
    log_power, linear_power, _ = alarm_rates(4.0)
    assert log_power > 0.85 and linear_power < 0.6
    equal_weights = consistency_test(names, values[0], np.full((3, 2), 0.1) * values[0])[0][0]
    assert equal_weights == pytest.approx(np.exp(np.mean(np.log(values[0, :, 0]))))


def test_ring_angles_are_compared_modulo_their_period():
    """Rings whose φ0 estimates sit at 89° and −89° agree (2° apart on the circle): they are
    taken nearest the joint value before the drift test, not 178° apart."""
    from heterojax._fit._by_q import _near_the_joint

    values = np.array([[89.0, 10.0], [-89.0, 11.0]])
    near = _near_the_joint(values, ("phi0", "v0"), {"phi0": 89.5, "v0": 10.0}, {"phi0": 180.0})
    np.testing.assert_allclose(near, [[89.0, 10.0], [91.0, 11.0]])
    errors = np.array([[1.0, 1.0], [1.0, 1.0]])
    _, chi2, _, p_value = consistency_test(("phi0", "v0"), near, errors)
    assert chi2[0] == pytest.approx(2.0) and p_value[0] > 0.1
