"""A whole file (issue 16 §1): every map at every q fitted jointly, contrast and offset by a
rule per q ring."""

import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._scaling import resolve_scaling


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 600.0, "D0_sample": 2500.0, "v0": 300.0, "f0": 0.4})
FREE = ("D0_ref", "D0_sample", "v0", "f0")
FIXED = [n for n in hj.PARAMETER_NAMES if n not in FREE]


def test_scaling_rules_apply_per_q_ring_with_distinct_names():
    q = np.repeat([0.01, 0.012, 0.014], 7)
    phi = np.tile(np.linspace(-90.0, 90.0, 7, endpoint=False), 3)
    individual = resolve_scaling("individual", phi, q=q)
    names = [s.name for s in individual.specs]
    assert len(set(names)) == len(names) == 42
    assert "contrast[q0.012,0]" not in names and "contrast[q0.012,-12.8571]" in names
    constant = resolve_scaling("constant", phi, q=q)
    assert [s.name for s in constant.contrast_specs] == [
        "contrast[q0.01]",
        "contrast[q0.012]",
        "contrast[q0.014]",
    ]
    # Map a takes its own ring's coefficient only.
    np.testing.assert_array_equal(constant.contrast_basis, np.kron(np.eye(3), np.ones((7, 1))))
    auto = resolve_scaling("auto", phi, q=q)  # 7 maps a ring: a Fourier series per ring
    assert auto.mode == "fourier" and auto.contrast_basis.shape == (21, 15)
    assert np.count_nonzero(auto.contrast_basis[:7, 5:]) == 0
    # One ring: the names of a single-q fit are unchanged.
    single = resolve_scaling("individual", phi[:3], q=q[:3])
    assert [s.name for s in single.contrast_specs] == [
        "contrast[-90]",
        "contrast[-64.2857]",
        "contrast[-38.5714]",
    ]
    with pytest.raises(ValueError, match="q ring"):
        resolve_scaling("fourier", phi[:9], q=np.r_[np.full(7, 0.01), 0.02, 0.02])


@pytest.mark.slow
def test_a_whole_file_fits_jointly_like_one_ring(tmp_path):
    """6 q rings × 7 φ sectors written in the APS layout: the default load returns all 42
    maps, the joint fit recovers the physics shared by every map, with each ring's contrast
    (the speckle contrast falls with q), and its errors shrink against one ring's."""
    q = np.repeat(np.linspace(0.008, 0.013, 6), 7)
    phi = np.tile(np.linspace(-90.0, 90.0, 7, endpoint=False), 6)
    contrast = 0.25 - 8.0 * (q - 0.008)
    simulated = hj.simulate(
        TRUTH,
        0.1 * np.arange(1, 41),
        q=q,
        phi=phi,
        contrast=contrast,
        offset=1.0,
        noise=0.002,
        key=jr.key(7),
    )
    path = tmp_path / "whole.h5"
    hj.save_aps(path, simulated)
    data = hj.load_aps(path)
    assert data.c2.shape[0] == 42

    joint = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1, scaling="constant")
    assert joint.success
    fitted_values = dict(zip(joint.names, joint.values))
    for name in FREE:
        assert abs(fitted_values[name] - TRUTH.to_dict()[name]) < 4 * joint.stderr[name]
    rings = sorted(set(np.round(np.asarray(data.q), 6)))
    fitted = [fitted_values[f"contrast[q{r:.4g}]"] for r in rings]
    np.testing.assert_allclose(fitted, 0.25 - 8.0 * (np.asarray(rings) - 0.008), rtol=0.02)

    one_ring = hj.fit_nlsq(TRUTH, hj.load_aps(path, q=float(rings[0])), fixed=FIXED, starts=1)
    assert len(one_ring.contrast) == 7
    for name in FREE:
        assert joint.stderr[name] < one_ring.stderr[name]
