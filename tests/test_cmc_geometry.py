"""Issue 14: the sampler's coordinates, the exchange labelling, the verdict, the NUTS settings."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._coordinates import gaussian_defect, shard_laplace, shard_preconditioners
from heterojax._cmc._labelling import canonical_theta
from heterojax._cmc._posterior import ShardPosterior, gather_shard_data
from heterojax._cmc._shards import make_shards
from heterojax._cmc._verdict import RunSettings, Thresholds, make_verdict
from heterojax._fit._problem import build_problem
from heterojax._fit._scaling import resolve_scaling
from heterojax._fit._symmetry import canonical


# A constant fraction and equal transport laws: the exchange reference ↔ sample is exact.
TRUTH = hj.HeterodyneModel.from_dict(
    {"D0_ref": 200.0, "D0_sample": 2e3, "alpha_sample": 0.0, "v0": 60.0, "f0": 0.4}
)
FREE = ("D0_ref", "D0_sample", "v0", "f0")


@pytest.fixture(scope="module")
def setup():
    t = 0.25 * np.arange(1, 33)
    data = hj.simulate(
        TRUTH, t, q=0.012, phi=[0.0, 50.0], contrast=0.3, offset=1.0, noise=0.01, key=jr.key(3)
    )
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    problem, x0, sigma = build_problem(
        TRUTH,
        data,
        fixed=fixed,
        bounds=None,
        scaling=resolve_scaling("constant", np.asarray(data.phi)),
        contrast=np.array([0.3, 0.3]),
        offset=np.array([1.0, 1.0]),
    )
    return data, problem, jnp.asarray(x0), np.asarray(sigma)


def _posterior(problem, data, k):
    p = len(problem.names)
    return ShardPosterior(
        problem=problem,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        tempering=jnp.asarray(1.0 / k),
        prior_mean=jnp.zeros(p),
        prior_precision=jnp.zeros(p),
    )


def test_canonical_labelling_matches_the_reference_and_keeps_c2(setup):
    data, problem, x0, _ = setup
    names = problem.names
    rng = np.random.default_rng(0)
    # Draws around the truth and around its exchanged image (D0 swapped, f0 → 1 − f0).
    x = np.tile(np.asarray(x0), (6, 1))
    x[:, names.index("D0_ref")] = rng.uniform(100, 300, 6)
    x[:, names.index("D0_sample")] = rng.uniform(1500, 2500, 6)
    mirrored = x.copy()
    mirrored[:, names.index("D0_ref")] = x[:, names.index("D0_sample")]
    mirrored[:, names.index("D0_sample")] = x[:, names.index("D0_ref")]
    mirrored[:, names.index("f0")] = 1.0 - x[:, names.index("f0")]
    draws = np.concatenate([x, mirrored])
    theta = problem.transform.to_unconstrained(jnp.asarray(draws))
    out, n_exchanged = canonical_theta(problem, theta.reshape(2, 6, -1))
    out = np.asarray(problem.transform.to_bounded(out.reshape(12, -1)))
    assert int(n_exchanged) == 6
    # Against `_fit._symmetry.canonical`, draw by draw.
    expected = np.stack([canonical(problem, d) for d in draws])
    np.testing.assert_allclose(out, expected, rtol=1e-9)
    np.testing.assert_allclose(out[6:], out[:6], rtol=1e-9)
    # The exchange is exact: the model maps are unchanged.
    for before, after in zip(draws[6:], out[6:]):
        np.testing.assert_allclose(
            problem.model_maps(jnp.asarray(before)),
            problem.model_maps(jnp.asarray(after)),
            atol=1e-12,
        )


def test_no_exchange_when_the_fraction_changes(setup):
    data, problem, x0, _ = setup
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE + ("f1",)]
    changing, x1, _ = build_problem(
        TRUTH.replace(f1=0.05),
        data,
        fixed=fixed,
        bounds=None,
        scaling=resolve_scaling("constant", np.asarray(data.phi)),
        contrast=np.array([0.3, 0.3]),
        offset=np.array([1.0, 1.0]),
    )
    x = np.asarray(x1).copy()
    names = changing.names
    x[names.index("D0_ref")], x[names.index("D0_sample")] = 2e3, 200.0  # faster reference
    theta = changing.transform.to_unconstrained(jnp.asarray(x))[None]
    out, n_exchanged = canonical_theta(changing, theta)
    assert int(n_exchanged) == 0
    np.testing.assert_array_equal(np.asarray(out), np.asarray(theta))


@pytest.mark.slow
def test_shard_laplace_whitens_each_shard(setup):
    data, problem, x0, sigma = setup
    shards = make_shards(np.asarray(data.mask), 2, seed=0)
    shard_data = gather_shard_data(shards, np.asarray(data.c2), sigma)
    posterior = _posterior(problem, data, 2)
    # Start off the optimum: each shard's mode is found from there.
    start = problem.transform.to_unconstrained(x0) + 0.05
    modes, covariances = shard_laplace(posterior, start, shard_data)
    preconditioner = shard_preconditioners(modes, covariances)
    for k in range(2):
        one = jax_tree_index(shard_data, k)
        gradient = np.asarray(jax_grad(posterior, modes[k], one))
        # At the mode the gradient in whitened coordinates (Lᵀ ∇) is negligible against the
        # unit scale of z: one Newton step from there would move < 1e-3 sd.
        whitened = np.asarray(preconditioner.factor[k]).T @ gradient
        assert np.max(np.abs(whitened)) < 1e-3, whitened
        # The whitened Hessian is close to the identity: the Laplace covariance uses the
        # Gauss–Newton information (no residual term), the prior curvature clipped at 0 and a
        # weak ridge (sd 3 in θ), each a few per cent here; 0.25 bounds their sum.
        hessian = np.asarray(jax_hessian(posterior, modes[k], one))
        factor = np.asarray(preconditioner.factor[k])
        whitened_hessian = -factor.T @ hessian @ factor
        np.testing.assert_allclose(whitened_hessian, np.eye(len(problem.names)), atol=0.25)
    defect = np.asarray(gaussian_defect(posterior, preconditioner, shard_data))
    assert defect.shape == (2,) and np.all(np.isfinite(defect)) and np.all(defect >= 0)


def jax_tree_index(tree, k):
    import jax

    return jax.tree.map(lambda a: a[k], tree)


def jax_grad(posterior, theta, shard):
    import jax

    # Jitted: op by op, the gradient of the model takes ~20 s.
    return jax.jit(jax.grad(lambda t: posterior(t, shard)))(theta)


def jax_hessian(posterior, theta, shard, step=1e-5):
    """By central differences of the jitted gradient (compiling `jax.hessian` of the shard
    density costs ~30 s; the differences are accurate to ~1e-8 relative, far inside atol)."""
    import jax

    gradient = jax.jit(jax.grad(lambda t: posterior(t, shard)))
    steps = step * np.eye(theta.shape[0])
    columns = [(np.asarray(gradient(theta + e)) - np.asarray(gradient(theta - e))) / (2 * step)
               for e in steps]  # fmt: skip
    hessian = np.stack(columns, axis=1)
    return 0.5 * (hessian + hessian.T)


def _run(**changes):
    base = dict(
        warmup=300,
        samples=500,
        chains=2,
        n_shards=4,
        shards_auto=False,
        reduced_from=None,
        target_accept=0.9,
        max_tree_depth=10,
        dense_mass=True,
        nlsq=True,
        shard_strategy="random",
    )
    return RunSettings(**{**base, **changes})


def _diagnostics(n_shards=4, names=("a", "b", "c")):
    p = len(names)
    return {
        "r_hat": np.ones((n_shards, p)),
        "ess_bulk": np.full((n_shards, p), 1000.0),
        "ess_tail": np.full((n_shards, p), 1000.0),
        "bfmi": np.ones((n_shards, 2)),
        "divergences": np.zeros(n_shards, int),
        "tree_depth_saturation": np.zeros(n_shards),
        "width_ratio": np.ones((n_shards, p)),
        "skewness": np.zeros((n_shards, p)),
    }


def test_verdict_one_line_per_failing_parameter_and_no_repeated_advice():
    names = ("a", "b", "c")
    diagnostics = _diagnostics()
    diagnostics["r_hat"][2, 0] = 1.3
    diagnostics["ess_bulk"][2, 0] = 20.0
    diagnostics["ess_tail"][1, 0] = 30.0
    diagnostics["ess_bulk"][3, 2] = 200.0
    agreement = np.zeros((4, 3))
    verdict = make_verdict(
        names=names,
        shard_diagnostics=diagnostics,
        agreement=agreement,
        thresholds=Thresholds(),
        settings=_run(),
    )
    assert not verdict.passed
    assert len(verdict.failures) == 2  # a and c, one line each
    first, second = verdict.failures
    assert first.startswith("a:") and "shard 2" in first and "1.300" in first
    assert "nlsq=" not in str(verdict)  # an NLSQ start was already given
    assert "dense_mass" not in str(verdict)  # already dense
    assert "shards=2" in first  # R̂ with K = 4 shards: fewer shards
    assert second.startswith("c:") and "samples=" in second
    # Without an NLSQ start that is the advice for disagreeing chains.
    alone = make_verdict(
        names=names,
        shard_diagnostics=diagnostics,
        agreement=agreement,
        thresholds=Thresholds(),
        settings=_run(nlsq=False),
    )
    assert "nlsq=" in alone.failures[0]


def test_verdict_run_level_advice_is_new():
    diagnostics = _diagnostics(n_shards=1)
    diagnostics["divergences"][0] = 5
    diagnostics["tree_depth_saturation"][0] = 0.2
    verdict = make_verdict(
        names=("a", "b", "c"),
        shard_diagnostics=diagnostics,
        agreement=np.zeros((1, 3)),
        thresholds=Thresholds(),
        settings=_run(n_shards=1, target_accept=0.99, dense_mass=True),
    )
    text = str(verdict)
    assert len(verdict.failures) == 2
    assert "target_accept=" not in text and "dense_mass" not in text
    assert "max_tree_depth=12" in text
    passed = make_verdict(
        names=("a", "b", "c"),
        shard_diagnostics=_diagnostics(),
        agreement=np.zeros((4, 3)),
        thresholds=Thresholds(),
        settings=_run(),
    )
    assert passed.passed and str(passed).startswith("PASSED")


def test_nuts_settings():
    assert hj.NUTS().dense(7) and not hj.NUTS().dense(40)
    assert not hj.NUTS(dense_mass=False).dense(3)
    for bad in ({"target_accept": 1.0}, {"max_tree_depth": 0}, {"init_jitter": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            hj.NUTS(**bad)
    assert hj.NoAdjustment().adjust("posterior", shard_data=None, nlsq=None, center=None) == (
        "posterior"
    )


@pytest.mark.slow  # ~45 s: the shard Laplace fits compile once per K tried
def test_auto_shards_lowers_k_while_a_shard_is_not_gaussian(setup, monkeypatch):
    from heterojax._cmc import _fit, _shards

    data, problem, x0, sigma = setup
    # Small shards (992 points // 240): auto starts from K = 4, whose shards are far from Gaussian.
    monkeypatch.setattr(_shards, "AUTO_POINTS_PER_SHARD", 240)
    setup_ = _fit._Setup(problem, np.asarray(x0), np.zeros(len(problem.names)),
                         np.zeros(len(problem.names)), sigma, "data")  # fmt: skip
    arguments = dict(
        shard_strategy="random",
        seed=0,
        sampler=hj.NUTS(),
        adjustment=hj.NoAdjustment(),
        nlsq=None,
        thresholds=hj.Thresholds(),
    )
    fixed = _fit._shards_and_coordinates(setup_, data, shards=4, **arguments)
    assert fixed.shards.n_shards == 4 and fixed.reduced_from is None
    auto = _fit._shards_and_coordinates(setup_, data, shards="auto", **arguments)
    assert np.max(fixed.gaussian_defect) > _fit.AUTO_GAUSSIAN_DEFECT
    assert auto.reduced_from == 4 and auto.shards.n_shards < 4
    assert auto.shards.n_shards == 1 or (
        np.max(auto.gaussian_defect) <= _fit.AUTO_GAUSSIAN_DEFECT
        and not _fit.laplace_disagree(auto, hj.Thresholds())
    )


def test_verdict_names_chains_in_separate_modes():
    """R̂ failing because the chains sit in separate modes: the line says so, and advises what
    can decide between them instead of a longer warmup."""
    from heterojax._cmc._verdict import chain_separation

    rng = np.random.default_rng(0)
    draws = rng.normal(size=(4, 2, 300, 3))
    draws[1, 1, :, 0] += 10.0  # shard 1: chain 1 of parameter a in a mode 10 sds away
    separation = chain_separation(draws)
    assert separation[1, 0] > 8 and np.all(np.delete(separation.ravel(), 3) < 1)
    diagnostics = _diagnostics()
    diagnostics["r_hat"][1, 0] = 1.6
    diagnostics["chain_separation"] = separation
    verdict = make_verdict(
        names=("a", "b", "c"),
        shard_diagnostics=diagnostics,
        agreement=np.zeros((4, 3)),
        thresholds=Thresholds(),
        settings=_run(n_shards=1),
    )
    (line,) = verdict.failures
    assert line.startswith("a:") and "separate modes" in line
    assert "warmup=" not in line and "decide between these modes" in line
