"""heterojax.simulate_speckle and heterojax.two_time: fields → photon counts → c2 maps.

The statistical tests use fixed keys, so they are deterministic; their tolerances are stated
in units of the standard error of the realisation mean, measured from the realisations' own
scatter, so that a wrong amplitude, contrast, phase or pixel distribution shows as a deviation
of many standard errors.
"""

import os
import re

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._data._speckle import _pixel_positions, mode_weights


# Time-varying J_sample (alpha ≠ 0), v (beta ≠ 0) and fraction (f1 ≠ 0); within 20 frames the
# sample decorrelates (q² ∫J_sample ≈ 3) and the fringes turn ≈ 2.5 times at φ = 0.
MODEL = hj.HeterodyneModel.from_dict(
    {
        "D0_ref": 1e3,
        "D0_sample": 1e4,
        "alpha_sample": 0.5,
        "v0": 800.0,
        "beta": 0.3,
        "f0": 0.4,
        "f1": 0.3,
        "phi0": 10.0,
    }
)
T = 0.1 * np.arange(1, 21)  # frames 1..20 at dt = 0.1 s
Q = 0.01
PHI = np.array([0.0, 60.0])
CONTRAST = np.array([0.5, 0.3])  # 2 equal modes; 4 modes with unequal weights
# Wide bins (±15 % in q, 30° sectors): the bin average differs from the bin centre by up to
# 0.047 in c2 here, well beyond the tolerance below, so the test sees whether pixels are
# really spread over the bin.
BINS = hj.BinGeometry.from_widths(Q, PHI, 0.3 * Q, 30.0)


def _realisations(n_keys, **kwargs):
    return np.stack(
        [
            np.asarray(
                hj.simulate_speckle(
                    MODEL, T, q=Q, phi=PHI, key=jr.key(k), correlate=True, **kwargs
                ).c2
            )
            for k in range(n_keys)
        ]
    )


@pytest.mark.slow
def test_mean_of_realisations_is_the_bin_averaged_model():
    # 16 keys × 2000 pixels, counts high (Poisson noise ≈ 1 % per pixel and frame).
    maps = _realisations(16, bins=BINS, pixels=2000, counts=1e4, contrast=CONTRAST)
    exact = BINS.for_model(MODEL, T, tolerance=1e-6)  # quadrature error ≤ 1e-6
    expected = np.asarray(MODEL.c2(T, q=Q, phi=PHI, contrast=CONTRAST, bins=exact))
    centre = np.asarray(MODEL.c2(T, q=Q, phi=PHI, contrast=CONTRAST))
    upper = np.triu_indices(T.size, k=1)
    mean = maps.mean(0)[:, upper[0], upper[1]]
    standard_error = maps.std(0, ddof=1)[:, upper[0], upper[1]] / np.sqrt(maps.shape[0])
    # The standard error of the mean of 32 000 pixels is at most ≈ 0.006 (largest near the
    # diagonal, where the intensities are most correlated); the ratio-of-means bias of the
    # correlator is O(β/pixels) ≈ 3e-4. Tolerance 0.025 ≈ 4 × the largest standard error.
    tolerance = 0.025
    assert standard_error.max() < 0.008
    deviation = np.abs(mean - expected[:, upper[0], upper[1]])
    assert deviation.max() < tolerance, deviation.max()
    # No systematic offset: the mean deviation over all 380 entries is far below one σ.
    assert abs(np.mean(mean - expected[:, upper[0], upper[1]])) < 0.003
    # The test has power: the bin-centre model is rejected.
    assert np.abs(mean - centre[:, upper[0], upper[1]]).max() > tolerance


def test_maps_are_symmetric_and_the_diagonal_carries_the_shot_noise_term():
    counts = 2.0
    contrast = np.array([1.0, 0.3])
    maps = _realisations(6, pixels=2000, counts=counts, contrast=contrast)
    np.testing.assert_array_equal(maps, np.swapaxes(maps, -1, -2))
    # ⟨N²⟩/⟨N⟩² = ⟨I²⟩/⟨I⟩² + 1/⟨N⟩ = 1 + β + 1/counts: averaged over 6 × 20 diagonals of
    # 2000 pixels the standard error is ≈ 0.005 and the ratio bias ≈ −2/2000.
    diagonal = np.diagonal(maps, axis1=-2, axis2=-1).mean(axis=(0, 2))
    np.testing.assert_allclose(diagonal, 1 + contrast + 1 / counts, atol=0.02)
    # Off the diagonal there is no shot-noise bias: the bin-centre model, on average.
    expected = np.asarray(MODEL.c2(T, q=Q, phi=PHI, contrast=contrast))
    off = ~np.eye(T.size, dtype=bool)
    deviation = (maps.mean(0) - expected)[:, off]
    assert abs(deviation.mean()) < 0.005  # a 1/counts = 0.5 bias would show at once
    assert np.abs(deviation).max() < 0.1


def test_same_key_same_frames_and_correlate_is_two_time():
    kwargs = dict(q=Q, phi=PHI, bins=BINS, pixels=2000, counts=3.0, contrast=CONTRAST)
    first = hj.simulate_speckle(MODEL, T, key=jr.key(3), **kwargs)
    again = hj.simulate_speckle(MODEL, T, key=jr.key(3), **kwargs)
    other = hj.simulate_speckle(MODEL, T, key=jr.key(4), **kwargs)
    assert first.shape == (2, 2000, T.size) and first.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    frames = np.asarray(first)
    assert np.all(frames >= 0) and np.all(frames == np.round(frames))  # photon counts
    data = hj.simulate_speckle(MODEL, T, key=jr.key(3), correlate=True, **kwargs)
    direct = hj.two_time(frames, T, q=Q, phi=PHI, bins=BINS)
    np.testing.assert_array_equal(np.asarray(data.c2), np.asarray(direct.c2))
    assert data.bins is BINS and data.sigma is None and data.diagonal == "mask"
    assert data.metadata["source"] == "heterojax.simulate_speckle"
    assert data.metadata["pixels"] == (2000, 2000) and data.metadata["frames"] == (1, 20)
    assert data.metadata["contrast"] == (0.5, 0.3)


def test_two_time_matches_a_numpy_correlator():
    rng = np.random.default_rng(0)
    frames = rng.poisson(3.0, size=(3, 40, 7)).astype(float)
    frames[1, 25:] = np.nan  # bin 1 has 25 pixels
    t = 0.5 * np.arange(3, 10)
    data = hj.two_time(frames, t, q=[0.01, 0.02, 0.03], phi=[0.0, 45.0, 90.0], diagonal="none")
    for b, n in enumerate((40, 25, 40)):
        intensity = frames[b, :n]
        mean = intensity.mean(0)
        reference = (intensity.T @ intensity / n) / np.outer(mean, mean)
        np.testing.assert_allclose(np.asarray(data.c2[b]), reference, rtol=1e-13)
    assert data.metadata["pixels"] == (40, 25, 40)
    assert float(data.dt) == pytest.approx(0.5) and data.metadata["frames"] == (3, 9)


def test_per_bin_pixels_are_padded_with_nan_and_skipped():
    frames = hj.simulate_speckle(
        MODEL, T, q=Q, phi=PHI, key=jr.key(5), pixels=[300, 2000], counts=5.0, contrast=CONTRAST
    )
    frames = np.asarray(frames)
    assert frames.shape == (2, 2000, T.size)
    assert np.all(np.isnan(frames[0, 300:])) and np.all(np.isfinite(frames[0, :300]))
    assert np.all(np.isfinite(frames[1]))
    data = hj.two_time(frames, T, q=Q, phi=PHI)
    assert data.metadata["pixels"] == (300, 2000)
    alone = hj.two_time(frames[0, :300], T, q=Q, phi=PHI[0])
    np.testing.assert_allclose(np.asarray(data.c2[0]), np.asarray(alone.c2[0]), rtol=1e-13)


@pytest.mark.parametrize("contrast", [1.0, 0.5, 0.3, 0.25, 0.07, 0.01])
def test_mode_weights_give_the_contrast(contrast):
    weights = mode_weights(np.array([contrast]))[0]
    assert np.all(weights >= 0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sum(weights**2) == pytest.approx(contrast, abs=1e-12)
    assert np.count_nonzero(weights) == int(np.ceil(1 / contrast - 1e-9))


def test_intensities_without_photons_have_mean_one_and_the_contrast():
    # counts=None: the intensities themselves, ⟨I⟩ = 1 and ⟨I²⟩ = 1 + β for every frame,
    # whatever the fraction. 40 000 pixels: standard errors ≈ 0.004 (mean), ≈ 0.015 (⟨I²⟩).
    contrast = np.array([0.3, 1.0])
    frames = np.asarray(
        hj.simulate_speckle(
            MODEL,
            T[[0, -1]],
            q=Q,
            phi=PHI,
            key=jr.key(6),
            pixels=40_000,
            counts=None,
            contrast=contrast,
        )
    )
    np.testing.assert_allclose(frames.mean(1), 1.0, atol=0.02)
    np.testing.assert_allclose((frames**2).mean(1), np.outer(1 + contrast, [1, 1]), atol=0.08)


def test_pixels_of_a_width_bin_fill_its_annular_sector():
    q_pixels, phi_pixels = (
        np.asarray(x)
        for x in _pixel_positions(BINS, jnp.full(2, Q), jnp.asarray(PHI), 20_000, jr.key(8))
    )
    low, high = 0.85 * Q, 1.15 * Q
    assert np.all((q_pixels >= low) & (q_pixels <= high))
    assert np.all(np.abs(phi_pixels - PHI[:, None]) <= 15.0)
    # Density ∝ q dq dφ (a flat detector): E[q] = (2/3)(b³ − a³)/(b² − a²), uniform φ.
    # Standard errors over 20 000 pixels: 6e-6 Å⁻¹ in q, 0.06° in φ.
    np.testing.assert_allclose(
        q_pixels.mean(1), 2 / 3 * (high**3 - low**3) / (high**2 - low**2), atol=3e-5
    )
    np.testing.assert_allclose(phi_pixels.mean(1), PHI, atol=0.3)
    np.testing.assert_allclose(phi_pixels.std(1), 30.0 / np.sqrt(12), rtol=0.02)


def test_pixels_of_a_pixel_bin_are_drawn_from_its_rule():
    rng = np.random.default_rng(1)
    q_pixels = [rng.uniform(0.009, 0.011, 300), rng.uniform(0.009, 0.011, 300)]
    phi_pixels = [rng.uniform(-10, 10, 300), rng.uniform(50, 70, 300)]
    bins = hj.BinGeometry.from_pixels(q_pixels, phi_pixels, nodes=(3, 2))
    drawn_q, drawn_phi = (
        np.asarray(x)
        for x in _pixel_positions(bins, jnp.full(2, Q), jnp.asarray(PHI), 20_000, jr.key(9))
    )
    weights = np.asarray(bins.weights)
    for b in range(2):
        nodes = list(zip(np.asarray(bins.q_nodes[b]), np.asarray(bins.phi_nodes[b])))
        index = [nodes.index(pair) for pair in zip(drawn_q[b], drawn_phi[b])]
        frequency = np.bincount(index, minlength=len(nodes)) / len(index)
        # Multinomial standard error ≤ √(1/4/20 000) = 0.0035.
        np.testing.assert_allclose(frequency, np.maximum(weights[b], 0), atol=0.015)
    data = hj.simulate_speckle(
        MODEL,
        T,
        q=Q,
        phi=PHI,
        key=jr.key(7),
        bins=bins,
        pixels=2000,
        counts=20.0,
        contrast=CONTRAST,
        correlate=True,
    )
    assert data.bins is bins and np.all(np.isfinite(np.asarray(data.c2)))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(pixels=0), ValueError, "pixels"),
        (dict(pixels=-5), ValueError, "pixels"),
        (dict(pixels=[10, 0]), ValueError, "pixels"),
        (dict(pixels=[10, 10, 10]), ValueError, "pixels"),
        (dict(pixels=2.5), TypeError, "pixels"),
        (dict(pixels=True), TypeError, "pixels"),
        (dict(counts=0.0), ValueError, "counts"),
        (dict(counts=-1.0), ValueError, "counts"),
        (dict(counts=float("nan")), ValueError, "counts"),
        (dict(counts="10"), TypeError, "counts"),
        (dict(contrast=0.0), ValueError, "contrast"),
        (dict(contrast=1.5), ValueError, "contrast"),
        (dict(contrast=[0.5, 0.5, 0.5]), ValueError, "contrast"),
        (dict(q=[0.01, 0.02, 0.03]), ValueError, "q"),
        (dict(q=-0.01), ValueError, "q"),
        (dict(phi=np.zeros((2, 2))), ValueError, "phi"),
        (dict(t=T[::-1]), ValueError, "t"),
        (dict(t=T[:1]), ValueError, "t"),
        (dict(key=None), TypeError, "key"),
        (dict(key=0), TypeError, "key"),
        (dict(bins=BINS.take([0])), ValueError, "bins"),
        (dict(diagonal="drop"), ValueError, "diagonal"),
        (dict(model="model"), TypeError, "model"),
    ],
)
def test_simulate_speckle_rejects_bad_input(kwargs, error, match):
    arguments = dict(model=MODEL, t=T, q=Q, phi=PHI, key=jr.key(0), pixels=10, counts=5.0)
    arguments.update(kwargs)
    model, t = arguments.pop("model"), arguments.pop("t")
    with pytest.raises(error, match=match):
        hj.simulate_speckle(model, t, **arguments)


def test_two_time_rejects_bad_input():
    frames = np.ones((2, 5, 4))
    t = np.arange(1.0, 5.0)
    with pytest.raises(ValueError, match="frames"):
        hj.two_time(np.ones(4), t, q=Q, phi=PHI)
    with pytest.raises(ValueError, match="frames"):
        hj.two_time(np.ones((2, 5, 1)), t[:1], q=Q, phi=PHI)
    with pytest.raises(ValueError, match="`t`"):
        hj.two_time(frames, t[:3], q=Q, phi=PHI)
    with pytest.raises(ValueError, match="`t`"):
        hj.two_time(frames, t[::-1], q=Q, phi=PHI)
    with pytest.raises(ValueError, match="phi"):
        hj.two_time(frames, t, q=Q, phi=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="`q`"):
        hj.two_time(frames, t, q=[0.01, 0.02, 0.03], phi=PHI)
    with pytest.raises(ValueError, match="bins"):
        hj.two_time(frames, t, q=Q, phi=PHI, bins=BINS.take([0]))
    partial = frames.copy()
    partial[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="pixel 2 of bin 1"):
        hj.two_time(partial, t, q=Q, phi=PHI)
    empty = frames.copy()
    empty[0] = np.nan
    with pytest.raises(ValueError, match="bin 0 has no pixels"):
        hj.two_time(empty, t, q=Q, phi=PHI)
    dark = frames.copy()
    dark[1, :, 2] = 0.0
    with pytest.raises(ValueError, match="frame 2 of bin 1"):
        hj.two_time(dark, t, q=Q, phi=PHI)
    with pytest.raises(ValueError, match="dt"):
        hj.two_time(frames, t, q=Q, phi=PHI, dt=-1.0)


@pytest.mark.slow
def test_readme_planning_example_runs(capsys):
    with open(os.path.join(os.path.dirname(__file__), "..", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme.split("### Realistic noise and experiment planning", 1)[1]
    (block,) = re.findall(r"```py\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    exec(compile(block, "README.md", "exec"), {})
    value, spread = re.search(r"v0 = ([\d.]+) ± ([\d.]+)", capsys.readouterr().out).groups()
    assert abs(float(value) - 300.0) < 10.0 and 0.5 < float(spread) < 20.0
