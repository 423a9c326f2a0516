"""fit_nlsq: exactness of the compressed solver, recovery of known parameters, options, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._fit._problem import build_problem
from heterojax._fit._scaling import resolve_scaling


Q = 0.01
PHI = np.array([0.0, 45.0, 90.0])
CONTRAST = np.array([0.30, 0.32, 0.28])
NOISE = 0.0015  # 0.5 % of the contrast, as in the issue
# Parameters that are exactly degenerate (f2 with f0) or not needed by these tests stay fixed.
FIXED = ("D_offset_ref", "D_offset_sample", "v_offset", "f2")

TRUTH = hj.HeterodyneModel().replace(
    D0_ref=200.0,
    alpha_ref=0.2,
    D0_sample=2000.0,
    alpha_sample=-0.3,
    v0=30.0,
    beta=0.2,
    f0=0.1,
    f1=0.015,
    f3=0.1,
    phi0=5.0,
)


def _simulate(model, n_frames=64, dt=0.5, seed=0, diagonal="mask", phi=PHI, contrast=CONTRAST):
    t = dt * np.arange(1, n_frames + 1)
    data = hj.simulate(
        model, t, q=Q, phi=phi, contrast=contrast, offset=1.0, noise=NOISE, key=jr.key(seed)
    )
    return hj.XPCSData(
        data.c2, data.t, q=data.q, phi=data.phi, dt=dt, sigma=data.sigma, diagonal=diagonal
    )


def _perturbed(model, factor):
    values = model.to_dict()
    return model.replace(
        D0_ref=values["D0_ref"] * factor,
        D0_sample=values["D0_sample"] / factor,
        v0=values["v0"] * (1 + 0.1 * (factor - 1)),
        f0=values["f0"] * factor,
    )


def _assert_recovered(result, truth, n_sigma=4.0):
    true_values = truth.to_dict()
    for name in result.names:
        if name not in true_values:
            continue
        error = result.stderr[name]
        assert np.isfinite(error) and error > 0, name
        deviation = abs(result.parameters()[name] - float(true_values[name])) / error
        assert deviation < n_sigma, (name, result.parameters()[name], float(true_values[name]))


@pytest.fixture(scope="module")
def local_fit():
    data = _simulate(TRUTH)
    return data, hj.fit_nlsq(_perturbed(TRUTH, 1.3), data, fixed=FIXED, starts=1)


def test_local_fit_recovers_truth(local_fit):
    data, result = local_fit
    assert result.success, result.message
    _assert_recovered(result, TRUTH)
    # The noise is known (σ from simulate), so a correct model gives χ²_red ≈ 1 ± √(2/dof).
    assert abs(result.reduced_chi2 - 1) < 0.05
    assert result.quality.band == "good"
    np.testing.assert_allclose(
        result.contrast, CONTRAST, atol=5 * np.max(result.stderr["contrast"])
    )
    assert result.fitted_c2.shape == data.c2.shape
    assert result.dof == data.n_points - len(result.names)
    assert result.n_points == data.n_points


def test_solution_is_stationary_and_chi2_is_recomputable(local_fit):
    """Independent path: χ² and its gradient from the full residual vector with jax.grad."""
    data, result = local_fit
    mask = np.asarray(data.mask)
    weights = mask / np.asarray(data.sigma)

    def chi2(values):
        model = result.model.replace(**dict(zip(result.names[:10], values)))
        maps = model.c2(
            data.t, q=data.q, phi=data.phi, contrast=result.contrast, offset=result.offset
        )
        return jnp.sum((weights * (maps - data.c2)) ** 2)

    physics = jnp.asarray(result.values[:10])
    assert float(chi2(physics)) == pytest.approx(result.chi2, rel=1e-9)
    gradient = np.asarray(jax.jit(jax.grad(chi2))(physics))
    # At a minimum the gradient in units of each parameter's standard error is ≪ 1.
    errors = np.array([result.stderr[n] for n in result.names[:10]])
    assert np.max(np.abs(gradient * errors)) < 1e-2


def test_covariance_matches_dense_jacobian(local_fit):
    """Independent path: (JᵀJ)⁻¹ from a dense jacfwd of the masked residual vector."""
    data, result = local_fit
    problem, _, _ = build_problem(
        TRUTH,
        data,
        fixed=FIXED,
        bounds=None,
        scaling=resolve_scaling(result.scaling, np.asarray(data.phi)),
        contrast=np.asarray(result.contrast),
        offset=np.asarray(result.offset),
    )
    used = np.asarray(data.mask)

    def residual(x):
        return problem.residual_maps(x)[used]

    jacobian = np.asarray(jax.jit(jax.jacfwd(residual))(jnp.asarray(result.values)))
    dense = np.linalg.inv(jacobian.T @ jacobian)
    np.testing.assert_allclose(
        result.formal_covariance, dense, rtol=1e-6, atol=1e-12 * np.abs(dense).max()
    )
    diagonal = np.sqrt(np.diagonal(dense))
    np.testing.assert_allclose([result.formal_stderr[n] for n in result.names], diagonal, rtol=1e-6)
    # The default (frame-clustered) errors are a sandwich around the same (JᵀJ)⁻¹.
    assert result.errors == "FrameClusteredErrors"
    assert np.all(np.isfinite([result.stderr[n] for n in result.names]))


def test_summary_lists_every_parameter(local_fit):
    _, result = local_fit
    text = result.summary()
    for name in hj.PARAMETER_NAMES:
        assert name in text
    assert "reduced χ²" in text
    assert "fixed" in text


@pytest.mark.slow
def test_multistart_from_plain_start_small():
    """A plain start far from the truth: multi-start finds the true basin."""
    data = _simulate(TRUTH, n_frames=48, seed=3)
    plain = hj.HeterodyneModel().replace(D0_ref=100.0, D0_sample=1000.0, v0=20.0)
    result = hj.fit_nlsq(plain, data, fixed=FIXED, starts=8)
    _assert_recovered(result, TRUTH)
    assert abs(result.reduced_chi2 - 1) < 0.05
    assert len(result.starts.chi2) == 8
    assert result.starts.best == int(np.nanargmin(result.starts.chi2))


@pytest.mark.slow
def test_flow_reversal():
    """v(t) = v0·t^β + v_offset crosses zero inside the window."""
    truth = hj.HeterodyneModel().replace(
        D0_ref=100.0, D0_sample=1500.0, v0=8.0, beta=0.5, v_offset=-20.0, f0=0.4, phi0=0.0
    )
    velocity = np.asarray(truth.velocity(0.5 * jnp.arange(1, 65)))
    assert velocity.min() < 0 < velocity.max()
    data = _simulate(truth)
    start = truth.replace(v0=6.0, v_offset=-15.0, D0_sample=1200.0)
    fixed = ("D_offset_ref", "D_offset_sample", "alpha_ref", "alpha_sample", "f1", "f2", "f3")
    result = hj.fit_nlsq(start, data, fixed=fixed, starts=1)
    assert result.success
    _assert_recovered(result, truth)


@pytest.mark.slow
def test_static_reference():
    """D0_ref = 0 (a static reference) sits on its lower bound and is reported as such."""
    truth = hj.HeterodyneModel().replace(D0_ref=0.0, D0_sample=1500.0, v0=25.0, f0=0.3)
    data = _simulate(truth)
    start = truth.replace(D0_ref=50.0, D0_sample=1000.0, v0=24.0, f0=0.4)
    fixed = ("alpha_ref", "D_offset_ref", "D_offset_sample", "v_offset", "f1", "f2", "f3")
    result = hj.fit_nlsq(start, data, fixed=fixed, starts=1)
    assert result.parameters()["D0_ref"] < 5 * NOISE * 1e4  # ≤ a few Å²/s: indistinguishable from 0
    _assert_recovered(result, truth.replace(D0_ref=result.parameters()["D0_ref"]))
    assert abs(result.reduced_chi2 - 1) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("mode, expected", [("constant", 2), ("individual", 6)])
def test_scaling_modes(mode, expected):
    data = _simulate(TRUTH, n_frames=32, contrast=np.full(3, 0.3))
    result = hj.fit_nlsq(
        TRUTH, data, fixed=FIXED + ("alpha_ref", "alpha_sample"), scaling=mode, starts=1
    )
    n_scaling = sum(n.startswith(("contrast", "offset")) for n in result.names)
    assert n_scaling == expected
    if mode == "constant":
        assert np.ptp(np.asarray(result.contrast)) == 0
    np.testing.assert_allclose(result.contrast, 0.3, atol=5 * np.max(result.stderr["contrast"]))


@pytest.mark.slow
def test_fourier_scaling_follows_smooth_contrast():
    phi = np.linspace(-80, 80, 7)
    contrast = 0.3 + 0.03 * np.cos(np.deg2rad(phi))
    model = TRUTH.replace(v0=5.0, beta=0.0)
    data = _simulate(model, n_frames=32, phi=phi, contrast=contrast)
    result = hj.fit_nlsq(
        model, data, fixed=FIXED + ("alpha_ref", "alpha_sample", "beta"), scaling="auto", starts=1
    )
    assert result.scaling == "fourier"  # auto: more than 6 maps
    np.testing.assert_allclose(
        result.contrast, contrast, atol=5 * np.max(result.stderr["contrast"])
    )


@pytest.mark.slow
def test_fixed_parameters_keep_their_values_and_diagonal_counts():
    data_mask = _simulate(TRUTH, n_frames=24, diagonal="mask")
    data_none = hj.XPCSData(
        data_mask.c2,
        data_mask.t,
        q=data_mask.q,
        phi=data_mask.phi,
        dt=0.5,
        sigma=data_mask.sigma,
        diagonal="none",
    )
    fixed = FIXED + ("alpha_ref", "alpha_sample", "beta", "f1", "f3", "contrast")
    results = [
        hj.fit_nlsq(TRUTH, d, fixed=fixed, contrast=0.29, starts=1) for d in (data_mask, data_none)
    ]
    for result in results:
        for name in fixed[:-1]:
            assert name not in result.names
            assert result.parameters()[name] == pytest.approx(float(TRUTH.to_dict()[name]))
        np.testing.assert_array_equal(result.contrast, 0.29)
        assert "contrast" not in result.stderr
    assert results[1].n_points - results[0].n_points == 3 * 24


@pytest.mark.slow
def test_custom_transport_law_fits():
    class SaturatingTransport(hj.AbstractTransport):
        parameter_specs = (
            hj.ParameterSpec("D_inf", 1e3, 0.0, 1e6, "Å²/s"),
            hj.ParameterSpec("tau", 10.0, 1e-3, 1e4, "s"),
        )
        D_inf: jax.Array = eqx.field(default=1e3, converter=lambda x: jnp.asarray(x, float))
        tau: jax.Array = eqx.field(default=10.0, converter=lambda x: jnp.asarray(x, float))

        def __call__(self, t):
            return self.D_inf * (1 - jnp.exp(-t / self.tau))

    truth = hj.HeterodyneModel(sample=SaturatingTransport(jnp.asarray(2000.0), jnp.asarray(8.0)))
    truth = truth.replace(D0_ref=100.0, v0=20.0, f0=0.4)
    assert "D_inf_sample" in truth.parameter_names
    data = _simulate(truth, n_frames=48)
    start = truth.replace(D_inf_sample=1500.0, tau_sample=12.0)
    fixed = ("alpha_ref", "D_offset_ref", "beta", "v_offset", "f1", "f2", "f3")
    result = hj.fit_nlsq(start, data, fixed=fixed, starts=1)
    assert isinstance(result.model.sample, SaturatingTransport)
    _assert_recovered(result, truth)


@pytest.mark.slow
def test_singular_problem_is_flagged():
    """f0·exp(f1(t − f2)) makes f0 and f2 exactly degenerate: errors are inf, not zero."""
    data = _simulate(TRUTH, n_frames=24)
    result = hj.fit_nlsq(
        TRUTH, data, fixed=("D_offset_ref", "D_offset_sample", "v_offset"), starts=1
    )
    assert result.singular
    assert not np.isfinite(result.stderr["f2"])
    assert any("singular" in w for w in result.quality.warnings)


@pytest.mark.slow
def test_aliasing_is_reported():
    fast = TRUTH.replace(v0=800.0, beta=0.0)  # q·v·dt = 0.01·800·0.5 = 4 > π
    data = _simulate(fast, n_frames=24)
    result = hj.fit_nlsq(fast, data, fixed=FIXED + ("beta",), starts=1)
    assert result.quality.aliasing
    assert result.quality.aliasing[0][1] > 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fixed": ("D0_reff",)}, "Unknown name"),
        ({"bounds": {"v00": (0, 1)}}, "Unknown name"),
        ({"bounds": {"v0": (40.0, 50.0)}}, "outside its bounds"),
        ({"scaling": "fourir"}, "scaling"),
        ({"starts": 0}, "starts"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    data = _simulate(TRUTH, n_frames=16)
    with pytest.raises(ValueError, match=message):
        hj.fit_nlsq(TRUTH, data, **kwargs)


def test_wrong_types_are_rejected():
    data = _simulate(TRUTH, n_frames=16)
    with pytest.raises(TypeError, match="model"):
        hj.fit_nlsq(data, data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data"):
        hj.fit_nlsq(TRUTH, np.zeros((1, 4, 4)))  # type: ignore[arg-type]


@pytest.mark.slow
def test_issue_recovery_case_200_frames_16_starts():
    """The issue's case: 3 angles × 200², time-varying rates, plain start, starts=16."""
    data = _simulate(TRUTH, n_frames=200, seed=0)
    plain = hj.HeterodyneModel().replace(D0_ref=100.0, D0_sample=1000.0, v0=20.0)
    result = hj.fit_nlsq(plain, data, fixed=FIXED, starts=16)
    _assert_recovered(result, TRUTH)
    assert abs(result.reduced_chi2 - 1) < 0.05


@pytest.mark.slow
def test_global_search_runs_cma_es_and_keeps_its_start():
    """CMA-ES (pycma) over the unconstrained coordinates seeds one extra local fit."""
    data = _simulate(TRUTH, n_frames=24)
    fixed = FIXED + ("alpha_ref", "alpha_sample", "beta", "f1", "f3", "phi0")
    local = hj.fit_nlsq(TRUTH, data, fixed=fixed, starts=1)
    searched = hj.fit_nlsq(
        TRUTH, data, fixed=fixed, starts=1, global_search=True, global_evaluations=300, seed=1
    )
    assert len(searched.starts.chi2) == 2  # the CMA-ES optimum, then the user's start
    assert searched.chi2 <= local.chi2 * (1 + 1e-9)
    _assert_recovered(searched, TRUTH)


@pytest.mark.slow  # ~16 s; the NLSQ progress line is also checked in test_progress_terminal
def test_progress_reports_every_step_and_the_final_chi2():
    """`progress=callable` sees increasing step counts and a χ² that ends at the fit's χ²."""
    data = _simulate(TRUTH, n_frames=16)
    fixed = FIXED + ("alpha_ref", "alpha_sample", "beta", "f1", "f3", "phi0")
    seen: list[tuple[int, float]] = []
    result = hj.fit_nlsq(
        _perturbed(TRUTH, 1.2),
        data,
        fixed=fixed,
        starts=1,
        progress=lambda s, c: seen.append((s, c)),
    )
    steps = [s for s, _ in seen]
    assert steps == sorted(steps) and steps[0] <= 1 and steps[-1] >= result.n_steps - 1
    assert seen[-1][1] == pytest.approx(result.chi2, rel=1e-6)


@pytest.mark.slow
def test_start_on_a_bound_is_moved_inside_and_fitted():
    """A free parameter started exactly on its bound (f3 = 0, where the logistic transform is
    flat) is moved just inside, so the fit can still reach the truth (f3 = 0.1)."""
    data = _simulate(TRUTH, n_frames=32)
    fixed = FIXED + ("alpha_ref", "alpha_sample", "beta", "f1", "phi0")
    result = hj.fit_nlsq(TRUTH.replace(f3=0.0, f0=0.15), data, fixed=fixed, starts=1)
    assert result.parameters()["f3"] == pytest.approx(0.1, abs=5 * result.stderr["f3"])


@pytest.mark.slow
def test_compilation_cache_is_filled_and_reused(tmp_path):
    """`enable_compilation_cache` (in a child process: it changes JAX's process settings)
    writes the fit's compiled programs; a second process loads them instead of compiling."""
    import subprocess
    import sys

    script = (
        "import sys, jax, numpy as np, heterojax as hj\n"
        "hits = []\n"
        "jax.monitoring.register_event_listener(lambda e, **k: "
        "hits.append(e) if e == '/jax/compilation_cache/cache_hits' else None)\n"
        "hj.enable_compilation_cache(sys.argv[1])\n"
        "t = 0.5 * np.arange(1, 17)\n"
        "truth = hj.HeterodyneModel().replace(D0_ref=200.0, D0_sample=2000.0, v0=30.0, f0=0.3)\n"
        "data = hj.simulate(truth, t, q=0.01, phi=[0.0, 60.0], contrast=0.3, offset=1.0,"
        " noise=0.002, key=jax.random.key(0))\n"
        "free = ('D0_sample', 'v0')\n"
        "fixed = [n for n in hj.PARAMETER_NAMES if n not in free]\n"
        "hj.fit_nlsq(truth.replace(v0=28.0), data, fixed=fixed, starts=1)\n"
        "print(len(hits))\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
        )
        for _ in range(2)
    ]
    entries = list(tmp_path.iterdir())
    assert entries, "no cache entries written"
    first, second = (int(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert first == 0 and second >= 3  # evaluation, LM solve and solution terms at least


def test_the_reported_sigma_per_map_can_be_passed_back():
    """`NLSQResult.sigma` (one σ per map) is a valid `sigma=`: the same fit as σ per entry;
    any other shape that does not fit the maps is refused with the shapes it accepts."""
    data = _simulate(TRUTH, n_frames=24)
    data = eqx.tree_at(lambda d: d.sigma, data, None, is_leaf=lambda x: x is None)
    free = ("D0_sample", "v0", "f0")
    fixed = [n for n in hj.PARAMETER_NAMES if n not in free]
    first = hj.fit_nlsq(TRUTH, data, fixed=fixed, starts=1, errors="formal")
    assert np.shape(first.sigma) == (len(PHI),) and first.noise != "argument"
    per_map = hj.fit_nlsq(TRUTH, data, fixed=fixed, starts=1, errors="formal", sigma=first.sigma)
    per_entry = hj.fit_nlsq(
        TRUTH,
        data,
        fixed=fixed,
        starts=1,
        errors="formal",
        sigma=np.asarray(first.sigma)[:, None, None],
    )
    assert per_map.noise == "argument"
    np.testing.assert_array_equal(per_map.values, per_entry.values)
    assert per_map.chi2 == per_entry.chi2
    with pytest.raises(ValueError, match=r"one value per map \(shape \(3,\)\)"):
        hj.fit_nlsq(TRUTH, data, fixed=fixed, starts=1, sigma=np.ones(5))


@pytest.mark.slow
def test_phi0_is_fitted_as_an_angle_through_its_wrap():
    """φ0 and φ0 ± 180° give the same c2, and its box [−90°, 90°) is one period: a flow at
    φ0 = 89° started from −85° (4° away across the wrap) is found without a bound to creep to,
    its error is not shrunk by a transform, and it is never reported at a bound."""
    truth = TRUTH.replace(phi0=89.0, f0=0.3, f3=0.0, f1=0.0, alpha_ref=0.0, alpha_sample=0.0)
    data = _simulate(truth, n_frames=32)
    fixed = FIXED + ("alpha_ref", "alpha_sample", "beta", "f1", "f3")
    result = hj.fit_nlsq(truth.replace(phi0=-85.0), data, fixed=fixed, starts=1)
    assert result.success, result.message
    phi0, error = result.parameters()["phi0"], result.stderr["phi0"]
    assert -90.0 <= phi0 < 90.0
    assert 0 < error < 1.0
    assert abs((phi0 - 89.0 + 90.0) % 180.0 - 90.0) < 4 * error
    assert "phi0" not in result.quality.at_bounds
    assert result.periods() == {"phi0": 180.0}
    low, high = result.intervals(0.9)["phi0"]  # not clipped at ±90°: read modulo 180°
    assert high - low == pytest.approx(2 * 1.6448536 * error, rel=1e-6)
    # With phi0's box narrowed by the user it is an ordinary bounded parameter again.
    narrowed = hj.fit_nlsq(
        truth.replace(phi0=80.0), data, fixed=fixed, starts=1, bounds={"phi0": (0.0, 90.0)}
    )
    assert narrowed.periods() == {}
    assert 80.0 < narrowed.parameters()["phi0"] <= 90.0


@pytest.mark.slow
def test_two_angles_report_the_twin_flow_direction():
    """With two angles and no velocity offset the mirrored φ0 (v0 rescaled) fits exactly alike:
    the report gives that second answer (`quality.twin`), names both in a warning, and the fit
    is not ok (φ0 and v0 each have two values the data cannot choose between). A third angle
    or a fixed φ0 removes it."""
    data = _simulate(TRUTH, n_frames=24, phi=np.array([0.0, 60.0]), contrast=CONTRAST[:2])
    fixed = FIXED + ("alpha_ref", "alpha_sample", "beta", "f1", "f3")
    result = hj.fit_nlsq(TRUTH, data, fixed=fixed, starts=1)
    twin = result.quality.twin
    assert set(twin) == {"phi0", "v0"}
    fitted = result.model
    other = fitted.replace(**twin)
    assert abs(twin["phi0"] - float(fitted.phi0)) > 1.0  # a different flow direction...
    kwargs = dict(q=data.q, phi=data.phi, contrast=result.contrast, offset=result.offset)
    np.testing.assert_allclose(  # ...with the same maps
        other.c2(data.t, **kwargs), fitted.c2(data.t, **kwargs), rtol=0, atol=1e-9
    )
    (warning,) = [w for w in result.quality.warnings if w.startswith("Two angles")]
    assert "third angle" in warning and f"{result.parameters()['phi0']:.4g}°" in warning
    assert not result.quality.ok
    assert any(f.startswith("two angles") for f in result.quality.failures)
    assert result.quality.to_dict()["twin"] == twin
    three = hj.fit_nlsq(TRUTH, _simulate(TRUTH, n_frames=24), fixed=fixed, starts=1)
    assert three.quality.twin is None
    assert not any(w.startswith("Two angles") for w in three.quality.warnings)
    known = hj.fit_nlsq(TRUTH, data, fixed=(*fixed, "phi0"), starts=1)
    assert known.quality.twin is None
