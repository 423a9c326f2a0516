"""Error estimators: the frame-clustered sandwich against a brute-force reference and in use."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit import _problem
from heterojax._fit._errors import resolve_errors
from heterojax._fit._nlsq import _build
from heterojax._fit._problem import estimate_noise
from heterojax._fit._uncertainty import (
    FormalErrors,
    FrameClusteredErrors,
    clustered_terms_at,
    correlation_frames,
    frame_autocorrelation,
    leverage_corrected_covariance,
    solution_uncertainty,
)


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 100.0, "D0_sample": 2000.0, "v0": 300.0, "f0": 0.4})
FREE = {"D0_ref", "D0_sample", "v0", "f0"}
FIXED = [name for name in TRUTH.parameter_names if name not in FREE]


def _fit_problem(data, scaling="individual", *, model=TRUTH, fixed=FIXED):
    """The fit problem of `model` (TRUTH) with `fixed` (FIXED) held, individual scaling by
    default, and its start x."""
    problem, x0, _, _ = _build(
        model,
        data,
        fixed=fixed,
        bounds=None,
        scaling=scaling,
        fourier_order=None,
        contrast=None,
        offset=None,
        sigma=None,
        roi=None,
    )
    return problem, jnp.asarray(x0)


def _dense_jacobian(problem, x) -> np.ndarray:
    """The weighted Jacobian of the residual maps, (maps, t, t, p): the brute-force reference."""
    return np.asarray(jax.jit(jax.jacfwd(problem.residual_maps))(x))


def test_errors_argument_resolves():
    assert isinstance(resolve_errors("formal"), FormalErrors)
    assert isinstance(resolve_errors("frame-clustered"), FrameClusteredErrors)
    custom = FrameClusteredErrors()
    assert resolve_errors(custom) is custom
    with pytest.raises(ValueError, match="errors"):
        resolve_errors("sandwich")
    # "auto" follows where the maps come from: speckle correlations get the speckle model.
    assert isinstance(resolve_errors("auto", {"layout": "nexus"}), hj.SpeckleErrors)
    assert isinstance(resolve_errors("auto", {"source": "heterojax.two_time"}), hj.SpeckleErrors)
    assert isinstance(
        resolve_errors("auto", {"source": "heterojax.simulate"}), FrameClusteredErrors
    )
    assert isinstance(resolve_errors("auto", {}), FrameClusteredErrors)


@pytest.mark.parametrize("layout", ["nexus", "legacy"])
def test_auto_errors_follow_the_maps_through_an_aps_file(tmp_path, layout):
    """An APS file is read as speckle correlations, unless `save_aps` wrote it from maps of
    independent noise (`simulate`): the file records where heterojax made its maps."""
    t = 0.1 * np.arange(1, 11)
    model = hj.HeterodyneModel.from_dict({"D0_ref": 100.0})
    made = {
        "heterojax.simulate": hj.simulate(model, t, q=0.01, phi=[0.0], noise=1e-3, key=jr.key(0)),
        "heterojax.simulate_speckle": hj.simulate_speckle(
            model, t, q=0.01, phi=[0.0], pixels=50, key=jr.key(0), correlate=True
        ),
    }
    for source, data in made.items():
        path = tmp_path / f"{source}.h5"
        hj.save_aps(path, data, layout=layout)
        metadata = hj.load_aps(path).metadata
        assert metadata["maps_from"] == source
        again = tmp_path / f"again-{source}.h5"  # a file written from a file keeps the record
        hj.save_aps(again, hj.load_aps(path, diagonal="none"), layout=layout)
        assert hj.load_aps(again).metadata["maps_from"] == source
        expected = FrameClusteredErrors if source == "heterojax.simulate" else hj.SpeckleErrors
        assert isinstance(resolve_errors("auto", metadata), expected)
    # A file from elsewhere carries no such record: an APS file is speckle correlations.
    metadata = {k: v for k, v in hj.load_aps(path).metadata.items() if k != "maps_from"}
    assert isinstance(resolve_errors("auto", metadata), hj.SpeckleErrors)


@pytest.mark.parametrize(
    ("diagonal", "block", "shift"),
    [("mask", 1, 0), ("none", 1, 0), ("mask", 3, 0), ("none", 3, 2), ("mask", 8, 5)],
)
def test_clustered_meat_matches_a_brute_force_sum_over_entry_pairs(diagonal, block, shift):
    """M = Σ over pairs of used entries (e, e') of the same map with a frame of each in the same
    block of frames, of s_e s_e'ᵀ, computed from the dense Jacobian of the residual maps
    (frame i in block ⌊(i + shift) / block⌋)."""
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
    problem, x = _fit_problem(data)
    residual = np.asarray(problem.residual_maps(x))  # (maps, t, t)
    jacobian = _dense_jacobian(problem, x)
    scores = jacobian * residual[..., None]
    used = np.asarray(problem.weights) != 0
    expected = np.zeros((x.shape[0], x.shape[0]))
    n = t.shape[0]
    for a in range(scores.shape[0]):
        entries = [(i, j) for i in range(n) for j in range(n) if used[a, i, j]]
        for i, j in entries:
            for k, m in entries:
                of = lambda frames: {(f + shift) // block for f in frames}  # noqa: E731
                if of((i, j)) & of((k, m)):
                    expected += np.outer(scores[a, i, j], scores[a, k, m])
    meat = np.asarray(problem.frame_clustered_meat(x, block, (shift,)))
    np.testing.assert_allclose(meat, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())


def test_one_compiled_program_serves_every_block_length_of_a_bucket():
    """The block length and the shifts are traced (issue 17: a program per dataset's block
    length made batch runs recompile and pile up programs): with the cell count of
    `block_grids`, two block lengths share one program, and it gives the terms of the
    concrete call (meat and absorbed part; block 3 repeats a shift grid, weight 0)."""
    t = 0.05 * np.arange(1, 25)
    data = hj.simulate(TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.01, key=jr.key(6))
    problem, x = _fit_problem(data)
    inverse = jnp.asarray(np.linalg.pinv(np.asarray(problem.normal_equations(x)[0])))
    terms = jax.jit(
        lambda block, shifts, weights, n_cells: problem.frame_clustered_terms(
            x, block, shifts, inverse, shift_weights=weights, n_cells=n_cells
        ),
        static_argnums=3,
    )
    grids = [FrameClusteredErrors(block=block).block_grids(problem, x) for block in (2, 3)]
    assert grids[0]["n_cells"] == grids[1]["n_cells"]
    for g in grids:
        found = terms(g["block"], g["shifts"], g["shift_weights"], g["n_cells"])
    assert terms._cache_size() == 1
    _assert_same_terms(found, problem.frame_clustered_terms(x, 3, (0, 1, 2), inverse))


def _assert_same_terms(found, expected):
    """Every sum of two `ClusteredTerms` agrees to rounding: the meats relative to the
    largest meat entry, the absorbed parts (products through A⁻¹) to 1e-8."""
    scale = np.abs(np.asarray(expected.meat)).max()
    for name, value in expected._asdict().items():
        tolerance = (
            dict(rtol=1e-8, atol=1e-10 * np.abs(np.asarray(value)).max())
            if "absorbed" in name
            else dict(rtol=1e-10, atol=1e-12 * scale)
        )
        np.testing.assert_allclose(getattr(found, name), value, err_msg=name, **tolerance)


def test_whole_map_terms_are_the_map_scores_and_their_absorbed_part():
    """`map_meat` = Σ_a s_a s_aᵀ with s_a = Σ_{e of map a} J_e r_e, and `map_absorbed` =
    Σ_a A_a A⁻¹ A_a with A_a = J_aᵀJ_a, from the dense Jacobian of the residual maps."""
    t = 0.05 * np.arange(1, 9)
    data = hj.simulate(
        TRUTH, t, q=0.01, phi=[0.0, 60.0, 120.0], contrast=0.2, noise=0.01, key=jr.key(8)
    )
    problem, x0 = _fit_problem(data)
    x = x0 * 1.01  # off the solution, so that the map scores do not sum to zero
    residual = np.asarray(problem.residual_maps(x))
    jacobian = _dense_jacobian(problem, x)
    gram = np.einsum("atup,atuq->pq", jacobian, jacobian)
    inverse = np.linalg.pinv(gram)
    scores = np.einsum("atup,atu->ap", jacobian, residual)
    grams = np.einsum("atup,atuq->apq", jacobian, jacobian)
    terms = problem.frame_clustered_terms(x, 2, (0,), jnp.asarray(inverse))
    scale = np.abs(scores.T @ scores).max()
    np.testing.assert_allclose(terms.map_meat, scores.T @ scores, rtol=1e-9, atol=1e-12 * scale)
    expected = np.einsum("apq,qr,ars->ps", grams, inverse, grams)
    np.testing.assert_allclose(
        terms.map_absorbed, expected, rtol=1e-8, atol=1e-10 * np.abs(gram).max()
    )


@pytest.mark.slow
def test_whole_maps_widen_the_errors_by_noise_shared_across_a_map():
    """Each map drawn with its own fraction (f0 = 0.4 ± 0.04, as a static reference's speckle
    gives each bin its own share of reference light) and little independent noise: every
    block of a map carries the same shift, which blocks of 2 frames do not see and the maps
    do. The whole-map term widens f0's error to about the spread of the maps' fractions (sd
    0.04/√6 for the mean of 6 maps; 2.1× the blocks' error here, 1.7–2.8× over three draws)."""
    t = 0.05 * np.arange(1, 41)
    phi = np.arange(6) * 30.0
    fractions = 0.4 + 0.04 * np.asarray(jr.normal(jr.key(9), (6,)))
    maps = [
        hj.simulate(
            TRUTH.replace(f0=f),
            t,
            q=0.01,
            phi=[angle],
            contrast=0.2,
            noise=1e-4,
            key=jr.key(10 + a),
        )
        for a, (f, angle) in enumerate(zip(fractions, phi))
    ]
    data = hj.XPCSData(
        np.concatenate([m.c2 for m in maps]),
        t,
        q=0.01,
        phi=phi,
        sigma=np.concatenate([np.atleast_1d(m.sigma) for m in maps]),
    )
    fits = {
        whole: hj.fit_nlsq(
            TRUTH,
            data,
            fixed=FIXED,
            starts=1,
            errors=FrameClusteredErrors(block=2, whole_maps=whole),
        )
        for whole in (False, True)
    }
    spread = 0.04 / np.sqrt(6)
    assert fits[True].stderr["f0"] > 1.5 * fits[False].stderr["f0"]
    assert 0.5 * spread < fits[True].stderr["f0"] < 4 * spread
    assert abs(fits[True].parameters()["f0"] - 0.4) < 3.5 * fits[True].stderr["f0"]


@pytest.mark.parametrize("scaling", ["individual", "constant"])
def test_the_map_by_map_clustered_terms_equal_the_one_pass_terms(scaling, monkeypatch):
    """For long maps the fit takes the clustered terms map by map from the maps' vectors (the
    Jacobian pass its steps compiled, `clustered_terms_at`); they equal the scan of
    `frame_clustered_terms` (meat and absorbed part, a repeated grid weighted 0)."""
    monkeypatch.setattr(_problem, "_PER_MAP_FRAMES", 1)
    t = 0.05 * np.arange(1, 25)
    data = hj.simulate(
        TRUTH, t, q=0.01, phi=[0.0, 60.0, 120.0], contrast=0.2, noise=0.01, key=jr.key(7)
    )
    problem, x0 = _fit_problem(data, scaling)
    x = x0 * 1.01
    inverse = jnp.asarray(np.linalg.pinv(np.asarray(problem.normal_equations(x)[0])))
    grids = FrameClusteredErrors(block=3).block_grids(problem, x)
    found = clustered_terms_at(problem, x, grids, inverse)
    _assert_same_terms(found, problem.frame_clustered_terms(x, 3, (0, 1, 2), inverse))


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


@pytest.mark.slow
def test_clustered_errors_agree_with_formal_errors_on_independent_noise():
    t = 0.05 * np.arange(1, 61)
    data = hj.simulate(TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.002, key=jr.key(1))
    result = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1, errors="frame-clustered")
    for name in FREE:
        assert result.stderr[name] == pytest.approx(result.formal_stderr[name], rel=0.35)
    formal = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1, errors="formal")
    assert formal.errors == "FormalErrors" and formal.stderr == formal.formal_stderr


def test_the_default_errors_are_the_frame_clustered_sandwich():
    t = 0.05 * np.arange(1, 41)
    data = hj.simulate(TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.002, key=jr.key(2))
    result = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1)
    assert result.errors == "FrameClusteredErrors"


def test_frame_autocorrelation_and_correlation_time():
    """White noise: τ ≈ 1. Row effects a_i + a_j with a an AR(1) process of coefficient φ:
    the per-frame mean residual is ≈ a, so ρ(k) ≈ φ^k and τ ≈ (1 + φ)/(1 − φ)."""
    rng = np.random.default_rng(0)
    n, maps = 300, 4
    upper = np.triu(np.ones((n, n), bool), 1)
    white = np.where(upper, rng.normal(size=(maps, n, n)), 0.0)
    assert correlation_frames(frame_autocorrelation(white)) < 1.5
    phi = 0.8
    a = np.zeros((maps, n))
    for k in range(1, n):
        a[:, k] = phi * a[:, k - 1] + np.sqrt(1 - phi**2) * rng.normal(size=maps)
    rows = np.where(upper, 5 * (a[:, :, None] + a[:, None, :]) + white, 0.0)
    rho = frame_autocorrelation(rows)
    assert rho[0] == pytest.approx(1.0)
    assert rho[1] == pytest.approx(phi, abs=0.1)
    assert correlation_frames(rho) == pytest.approx((1 + phi) / (1 - phi), rel=0.35)


@pytest.mark.slow
def test_estimated_sigma_gives_reduced_chi2_one_at_the_truth_on_speckle_data():
    """Speckle noise is shared by neighbouring frames, so the local (second-difference) σ̂ is
    too small (the truth's reduced χ² under it is well above 1); the fit's σ, rescaled so that
    E[χ²] = n at the truth (`_calibrate_noise`), gives ≈ 1 there."""
    t = 0.1 * np.arange(1, 161)  # the sample decorrelates ~3 times over the window
    data = hj.simulate_speckle(
        TRUTH,
        t,
        q=0.01,
        phi=[0.0, 60.0],
        pixels=300,
        counts=5.0,
        contrast=0.3,
        key=jr.key(4),
        correlate=True,
    )
    result = hj.fit_nlsq(TRUTH, data, fixed=FIXED, starts=1)
    assert result.noise == "estimated"
    # The fit absorbs some of the correlated noise: χ² at the solution is below n − p.
    assert result.reduced_chi2 < 1.0
    clean = np.asarray(TRUTH.c2(t, q=0.01, phi=np.array([0.0, 60.0]), contrast=0.3, offset=1.0))
    mask = np.asarray(data.mask)
    residual = np.asarray(data.c2) - clean

    def truth_reduced(sigma):
        return float(np.mean((residual / np.reshape(sigma, (-1, 1, 1)))[mask] ** 2))

    local = truth_reduced(estimate_noise(np.asarray(data.c2), mask))
    calibrated = truth_reduced(result.sigma)
    assert local > 1.3
    assert abs(calibrated - 1.0) < 0.25 and abs(calibrated - 1.0) < abs(local - 1.0) / 2


@pytest.mark.parametrize(
    ("block", "shift"),
    [
        pytest.param(1, 0, marks=pytest.mark.slow),
        pytest.param(3, 2, marks=pytest.mark.slow),
        (4, 0),
    ],
)
def test_absorbed_meat_is_the_expected_meat_under_independent_noise(block, shift, monkeypatch):
    """With r = (I − H) ε for independent unit noise ε (H the hat matrix of the weighted
    Jacobian over all maps), E[M] = Σ over pairs of entries sharing a block of
    J_e (I − H)_{ee'} J_e'ᵀ; `frame_clustered_terms` gives it as JᵀJ − B."""
    t = 0.05 * np.arange(1, 9)
    data = hj.simulate(TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.01, key=jr.key(4))
    problem, x = _fit_problem(data)
    jacobian = _dense_jacobian(problem, x)
    used = np.argwhere(np.asarray(problem.weights) != 0)
    rows = np.array([jacobian[a, i, j] for a, i, j in used])
    gram = rows.T @ rows
    inverse = np.linalg.pinv(gram)
    kept = np.eye(len(used)) - rows @ inverse @ rows.T
    expected = np.zeros_like(gram)
    of = lambda i, j: {(i + shift) // block, (j + shift) // block}  # noqa: E731
    for e, (a, i, j) in enumerate(used):
        for f, (b, k, m) in enumerate(used):
            if a == b and of(i, j) & of(k, m):
                expected += kept[e, f] * np.outer(rows[e], rows[f])
    absorbed = problem.frame_clustered_terms(x, block, (shift,), jnp.asarray(inverse)).absorbed
    np.testing.assert_allclose(
        gram - np.asarray(absorbed), expected, rtol=1e-8, atol=1e-10 * np.abs(gram).max()
    )

    # Many blocks a map: only the block term Σ_K A_{S_K} A⁻¹ A_{S_K} (the pair term is
    # O(1/blocks²) and left out).
    monkeypatch.setattr(_problem, "_MAX_PAIR_BLOCKS", 0)
    blocks_only = np.zeros_like(gram)
    for a in range(int(used[:, 0].max()) + 1):
        for k in range((t.shape[0] + shift - 1) // block + 1):
            in_block = [e for e, (b, i, j) in enumerate(used) if b == a and k in of(i, j)]
            gram_k = rows[in_block].T @ rows[in_block]
            blocks_only += gram_k @ inverse @ gram_k
    absorbed = problem.frame_clustered_terms(x, block, (shift,), jnp.asarray(inverse)).absorbed
    np.testing.assert_allclose(
        np.asarray(absorbed), blocks_only, rtol=1e-8, atol=1e-10 * np.abs(gram).max()
    )


@pytest.mark.slow
def test_leverage_correction_widens_errors_most_where_blocks_are_few():
    """On independent noise the corrected sandwich is A⁺ in expectation; the plain one is
    smaller. With few frames (4 blocks a map) the correction is large, never below 1."""
    t = 0.05 * np.arange(1, 41)
    data = hj.simulate(TRUTH, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.002, key=jr.key(5))
    plain = hj.fit_nlsq(
        TRUTH,
        data,
        fixed=FIXED,
        starts=1,
        errors=FrameClusteredErrors(block=10, leverage_correction=False),
    )
    corrected = hj.fit_nlsq(
        TRUTH, data, fixed=FIXED, starts=1, errors=FrameClusteredErrors(block=10)
    )
    ratios = np.array([corrected.stderr[n] / plain.stderr[n] for n in sorted(FREE)])
    assert np.all(ratios >= 1.0) and np.max(ratios) > 1.1


def _jacobi_pseudo_inverse(gram: np.ndarray) -> np.ndarray:
    """A⁺ taken in Jacobi scaling, as the fit takes it (`solution_terms`)."""
    roots = np.sqrt(np.diagonal(gram))
    return np.linalg.pinv(gram / np.outer(roots, roots), rcond=1e-10) / np.outer(roots, roots)


def _sandwich_pieces(rng, p: int, scales):
    """In parameter units S: an indefinite clustered-like meat S (Σ g gᵀ − ½ Σ h hᵀ) S, its
    absorbed part S B S (B ⪰ 0) and the pseudo-inverse of the Gram matrix S (Σ g gᵀ) S, whose
    null direction is the split of the last two parameters (as f0/f3 at f1 = 0)."""
    g = rng.normal(size=(3 * p, p))
    g[:, -1] = g[:, -2]
    h = 0.3 * rng.normal(size=(p, p))
    h[:, -1] = h[:, -2]
    gram = g.T @ g
    s = np.asarray(scales)
    meat = s[:, None] * (gram - 0.5 * h.T @ h) * s
    absorbed = s[:, None] * (0.05 * gram) * s
    return meat, absorbed, _jacobi_pseudo_inverse(s[:, None] * gram * s)


@pytest.mark.parametrize("seed", range(4))
def test_sandwich_is_equivariant_under_a_change_of_parameter_units(seed):
    """Measuring a parameter in other units (θ → θ/s: M, B → S M S, A⁺ → S⁻¹ A⁺ S⁻¹) changes its
    covariance to S⁻¹ C S⁻¹ and nothing else, however far apart the units are (here 10¹⁶ from
    the smallest to the largest, as between D0 and alpha in a fit), with and without the
    leverage correction. An eigen-decomposition of the raw meat rounds every direction at
    ε × its largest eigenvalue and breaks this."""
    p = 6
    far = 10.0 ** np.random.default_rng(100 + seed).uniform(-8, 8, p)
    far[:2] = 1e-8, 1e8
    meat, absorbed, inverse = _sandwich_pieces(np.random.default_rng(seed), p, np.ones(p))
    meat_far, absorbed_far, inverse_far = _sandwich_pieces(np.random.default_rng(seed), p, far)
    determined = np.ix_(range(p - 2), range(p - 2))
    for share in (1.0, 0.0):
        expected = leverage_corrected_covariance(meat, share * absorbed, inverse)
        found = leverage_corrected_covariance(meat_far, share * absorbed_far, inverse_far)
        found = found * np.outer(far, far)
        np.testing.assert_allclose(found[determined], expected[determined], rtol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_clipped_sandwich_is_equivariant_under_any_reparametrisation(seed):
    """θ → T⁻¹θ for any invertible T (a rotation of f0/f3 into sum and split, a rescaling, a
    shear): J → J T, so M, B → Tᵀ M T, Tᵀ B T and A⁻¹ → T⁻¹ A⁻¹ T⁻ᵀ, and the covariance must
    become T⁻¹ C T⁻ᵀ. The meat here has negative eigenvalues, as finite-sample meats do, so
    where the clip is taken matters: in A-whitened coordinates it is invariant, in the raw or
    the Jacobi-scaled ones it is not; so is the whole-map term's positive part. The
    covariance is positive semi-definite."""
    rng = np.random.default_rng(seed)
    p = 5
    g = rng.normal(size=(3 * p, p))
    gram = g.T @ g
    pull = gram @ rng.normal(size=p)  # A⁻¹M = I − 1.5 u pullᵀ/(uᵀ pull): one eigenvalue −0.5
    meat = gram - 1.5 * np.outer(pull, pull) / (pull @ np.linalg.solve(gram, pull))
    absorbed = 0.05 * gram
    assert np.linalg.eigvals(np.linalg.solve(gram, meat)).real.min() == pytest.approx(-0.5)
    transform = rng.normal(size=(p, p)) * 10.0 ** rng.uniform(-3, 3, p)
    scores = rng.normal(size=(3, p)) @ np.linalg.cholesky(gram).T  # three maps' scores
    map_meat, map_absorbed = scores.T @ scores, 0.3 * gram
    moved = lambda matrix: transform.T @ matrix @ transform  # noqa: E731
    for share, whole in ((1.0, False), (0.0, False), (1.0, True)):
        expected = leverage_corrected_covariance(
            meat,
            share * absorbed,
            np.linalg.inv(gram),
            (map_meat, map_absorbed) if whole else None,
        )
        found = leverage_corrected_covariance(
            moved(meat),
            share * moved(absorbed),
            _jacobi_pseudo_inverse(moved(gram)),
            (moved(map_meat), moved(map_absorbed)) if whole else None,
        )
        back = transform @ found @ transform.T
        np.testing.assert_allclose(back, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
        roots = np.sqrt(np.diagonal(expected))
        assert np.linalg.eigvalsh(expected / np.outer(roots, roots)).min() > -1e-12


def test_frame_clustered_errors_are_the_same_along_an_exactly_flat_direction():
    """At f1 = 0 only f0 + f3 enters the model, so every split of the same sum is the same
    solution (f1's Jacobian column, f0·t, still moves with the split). The honest errors of the
    determined parameters must not depend on which split the fit stopped at: recovery case 44
    read D0_ref's error as 26–119 along this direction, against 91 from the meat itself,
    before the meat's clip was taken in Jacobi scaling."""
    t = 0.05 * np.arange(1, 25)
    truth = TRUTH.replace(D0_ref=6e4, D0_sample=1.5e5, v0=2000.0, f3=0.1)
    data = hj.simulate(truth, t, q=0.01, phi=[0.0, 60.0], contrast=0.2, noise=0.01, key=jr.key(8))
    fixed = [name for name in FIXED if name not in ("alpha_ref", "f1", "f3")]
    problem, x0 = _fit_problem(data, model=truth, fixed=fixed)
    names = list(problem.names)
    f0, f3 = names.index("f0"), names.index("f3")
    errors = []
    for split in (1e-6, 1e-3, 0.05):
        x = np.asarray(x0, float).copy()
        x[f0], x[f3] = x[f0] + x[f3] - split, split
        x = jnp.asarray(x)
        gram = problem.normal_equations(x)[0]
        honest, formal = solution_uncertainty(problem, x, gram, 1.0, FrameClusteredErrors())
        assert np.isinf(honest.stderr["f0"]) and np.isinf(honest.stderr["f3"])
        errors.append([honest.stderr[name] for name in ("D0_ref", "D0_sample", "v0")])
    np.testing.assert_allclose(errors[1:], [errors[0]] * 2, rtol=1e-6)
