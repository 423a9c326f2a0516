"""On data simulated with the ROI model (45° sectors, q ± 15 %), the ROI-aware fit recovers the
sample transport and the velocity, and the bin-centre fit does not (issue 7, item 4c).

The bin-centre model has no dephasing across the bin, so it imitates the loss of fringe
contrast with a faster sample decay: D0_sample comes out ~3× too large, with a poor χ².
"""

import jax
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._roi import fit_bins


TRUTH = dict(D0_ref=0.0, D0_sample=2e4, v0=2000.0, f0=0.5, phi0=0.0)
FREE = ("D0_sample", "v0", "f0")
Q = np.full(3, 0.01)
PHI = np.array([0.0, 45.0, 90.0])


def fit(model, data, *, roi):
    """`fit_nlsq` with the ROI model on or off."""
    fixed = [name for name in hj.PARAMETER_NAMES if name not in FREE]
    return hj.fit_nlsq(model, data, roi=roi, fixed=fixed, scaling="constant", starts=1)


@pytest.fixture(scope="module")
def data():
    model = hj.HeterodyneModel.from_dict(TRUTH)
    t = 0.01 * np.arange(1, 61)
    # Over the window q·∫v = 12 rad and the sample decays by e^-1.2.
    return hj.simulate(
        model,
        t,
        q=Q,
        phi=PHI,
        contrast=0.3,
        noise=0.003,
        key=jax.random.key(7),
        q_width=0.3 * Q,
        phi_width=45.0,
    )


@pytest.mark.slow
def test_roi_fit_recovers_transport_and_velocity_where_the_bin_centre_fit_fails(data):
    start = hj.HeterodyneModel.from_dict(TRUTH).replace(D0_sample=3e4, v0=2100.0)
    roi = fit(start, data, roi=True)
    centre = fit(start, data, roi=False)
    assert roi.success and centre.success
    found, wrong = roi.parameters(), centre.parameters()
    assert abs(found["D0_sample"] / TRUTH["D0_sample"] - 1) < 0.10
    assert abs(found["v0"] / TRUTH["v0"] - 1) < 0.02
    assert roi.reduced_chi2 < 1.5
    assert abs(wrong["D0_sample"] / TRUTH["D0_sample"] - 1) > 0.5
    assert centre.reduced_chi2 > 3.0
    # The results say which model was used; the bin-centre one is told to try the ROI model.
    assert roi.bins is not None and "ROI" in roi.summary()
    assert centre.bins is None and "bin centre" in centre.summary()
    assert centre.quality.roi_suggested and not roi.quality.roi_suggested

    # The fitted maps are the ROI model at the solution.
    bins = fit_bins(start, data, roi=True)
    expected = roi.model.c2(
        data.t, q=data.q, phi=data.phi, contrast=roi.contrast, offset=roi.offset, bins=bins
    )
    np.testing.assert_allclose(roi.fitted_c2, expected, atol=1e-12)


def test_fit_bins_choice(data):
    model = hj.HeterodyneModel.from_dict(TRUTH)
    assert fit_bins(model, data) is not None  # on by default with geometry
    assert fit_bins(model, data, roi=False) is None
    bare = data.with_bins(None)
    assert fit_bins(model, bare) is None
    with pytest.raises(ValueError, match="with_bins"):
        fit_bins(model, bare, roi=True)
    # The fit's rule is finer than the simulation's: margin 2 on the spreads.
    used = fit_bins(model, data)
    assert used is not None and used.grid is not None and data.bins is not None
    simulated = data.bins.for_model(model, data.t).grid
    assert simulated is not None
    assert used.grid[0] >= simulated[0] and used.grid[1] > simulated[1]


def test_aliasing_ratio_uses_the_outermost_node_of_each_bin(data):
    """With the ROI model the aliasing check takes the bin's largest q·|cos(φ + φ0)|: at φ = 90°
    the bin centre has no flow phase at all, but the sector's edges do."""
    from heterojax._fit._nlsq import _aliasing_ratio

    centre = _aliasing_ratio(1000.0, 0.0, data)
    bins = fit_bins(hj.HeterodyneModel.from_dict(TRUTH), data, roi=True)
    assert bins is not None
    binned = _aliasing_ratio(1000.0, 0.0, data, bins)
    q, phi, w = (np.asarray(a) for a in (bins.q_nodes, bins.phi_nodes, bins.weights))
    outermost = np.max(np.where(w != 0, q * np.abs(np.cos(np.deg2rad(phi))), 0.0), axis=1)
    np.testing.assert_allclose(binned, outermost * 1000.0 * float(data.dt) / np.pi)
    assert np.all(binned >= centre * (1 - 1e-12))
    assert centre[2] < 1e-12 < binned[2]
