"""The shard log density against an independent path: full maps from `model.c2`, masked."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import heterojax as hj
from heterojax._cmc._adjustment import merged_shards
from heterojax._cmc._posterior import (
    AffinePreconditioner,
    PreconditionedPosterior,
    ShardPosterior,
    WhitenedShard,
    gather_shard_data,
    gauss_newton_information,
)
from heterojax._cmc._shards import make_shards
from heterojax._fit._problem import build_problem
from heterojax._fit._scaling import resolve_scaling


# Every law active (ageing transport, accelerating flow, changing fraction), no aliasing.
TRUTH = hj.HeterodyneModel.from_dict(
    {
        "D0_ref": 300.0,
        "alpha_ref": 0.4,
        "D_offset_ref": 20.0,
        "D0_sample": 2e3,
        "alpha_sample": -0.3,
        "D_offset_sample": 50.0,
        "v0": 40.0,
        "beta": 0.3,
        "v_offset": -5.0,
        "f0": 0.3,
        "f1": 0.02,
        "f2": 5.0,
        "f3": 0.2,
        "phi0": 8.0,
    }
)
FREE = ("D0_sample", "alpha_sample", "v0", "f0", "phi0")


def _setup(diagonal):
    t = 0.4 * np.arange(1, 31)
    data = hj.simulate(
        TRUTH,
        t,
        q=[0.012, 0.015, 0.012],
        phi=[0.0, 50.0, 120.0],
        contrast=[0.3, 0.35, 0.4],
        offset=1.0,
        noise=0.02,
        key=jr.key(4),
        diagonal=diagonal,
    )
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    problem, x0, sigma = build_problem(
        TRUTH.replace(D0_sample=1.5e3, v0=45.0),
        data,
        fixed=fixed,
        bounds=None,
        scaling=resolve_scaling("individual", np.asarray(data.phi)),
        contrast=np.array([0.32, 0.33, 0.38]),
        offset=np.array([1.01, 0.99, 1.0]),
    )
    return data, problem, x0, np.asarray(sigma)


@pytest.fixture(scope="module", params=["none", "mask"])
def both_diagonals(request):
    return _setup(request.param)


@pytest.fixture(scope="module")
def setup():
    return _setup("mask")


def _posterior(problem, data, k, prior_precision=None):
    p = len(problem.names)
    return ShardPosterior(
        problem=problem,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        tempering=jnp.asarray(1.0 / k),
        prior_mean=jnp.zeros(p),
        prior_precision=jnp.zeros(p) if prior_precision is None else prior_precision,
    )


@eqx.filter_jit
def _maps(problem, data, x):
    model, contrast, offset = problem.unpack(x)
    return model.c2(
        data.t, q=data.q, phi=data.phi, contrast=contrast, offset=offset, method="direct"
    )


_log_likelihood = eqx.filter_jit(
    lambda posterior, theta, shard: posterior.log_likelihood(theta, shard)
)
_log_density = eqx.filter_jit(lambda posterior, theta, shard: posterior(theta, shard))


def _full_map_log_likelihood(problem, data, sigma, x, select):
    """−½ Σ ((c2 − y)/σ)² over the selected entries, with c2 from full `model.c2` maps."""
    maps = np.asarray(_maps(problem, data, x))
    residual = (maps - np.asarray(data.c2)) / sigma
    return -0.5 * np.sum(np.where(select, residual**2, 0.0))


@pytest.mark.parametrize("layout", ["tiles", "maps"])
@pytest.mark.parametrize("strategy", ["random", "stratified"])
def test_shard_likelihood_equals_the_masked_full_map_likelihood(both_diagonals, strategy, layout):
    data, problem, x0, sigma = both_diagonals
    mask = np.asarray(data.mask)
    shards = make_shards(mask, 3, strategy=strategy, seed=2)
    shard_data = gather_shard_data(shards, np.asarray(data.c2), sigma, layout)
    posterior = _posterior(problem, data, 3)
    theta = problem.transform.to_unconstrained(x0)
    total = 0.0
    for s in range(3):
        one = jax.tree.map(lambda a: a[s], shard_data)
        value = float(_log_likelihood(posterior, theta, one))
        select = np.zeros_like(mask)
        angle, t1, t2 = shards.entries(s)
        select[angle, t1, t2] = True
        expected = _full_map_log_likelihood(problem, data, sigma, x0, select)
        np.testing.assert_allclose(value, expected, rtol=1e-10)
        total += value
    # The shards together are the whole likelihood over `data.mask` (each pair once).
    expected_total = _full_map_log_likelihood(problem, data, sigma, x0, mask)
    np.testing.assert_allclose(total, expected_total, rtol=1e-10)


def test_product_of_shard_targets_is_the_full_posterior(setup):
    data, problem, x0, sigma = setup
    mask = np.asarray(data.mask)
    k = 4
    precision = jnp.asarray(np.linspace(0.0, 5.0, len(problem.names)))
    sharded = _posterior(problem, data, k, precision)
    full = _posterior(problem, data, 1, precision)
    shard_data = gather_shard_data(make_shards(mask, k, seed=0), np.asarray(data.c2), sigma)
    whole = gather_shard_data(make_shards(mask, 1, seed=0), np.asarray(data.c2), sigma)
    theta = problem.transform.to_unconstrained(x0) + 0.01
    product = sum(
        float(_log_density(sharded, theta, jax.tree.map(lambda a: a[s], shard_data)))
        for s in range(k)
    )
    whole_value = float(_log_density(full, theta, jax.tree.map(lambda a: a[0], whole)))
    np.testing.assert_allclose(product, whole_value, rtol=1e-10)


def test_priors_in_unconstrained_coordinates(setup):
    data, problem, x0, _ = setup
    theta = problem.transform.to_unconstrained(x0)
    uniform = _posterior(problem, data, 2)
    np.testing.assert_allclose(
        uniform.log_prior(theta), problem.transform.log_abs_det_jacobian(theta), rtol=1e-12
    )
    precision = jnp.full(len(problem.names), 4.0)
    informed = ShardPosterior(
        problem=problem,
        t=uniform.t,
        q=uniform.q,
        phi=uniform.phi,
        tempering=uniform.tempering,
        prior_mean=x0 + 0.5,
        prior_precision=precision,
    )
    np.testing.assert_allclose(
        informed.log_prior(theta) - uniform.log_prior(theta),
        -0.5 * 4.0 * 0.25 * len(problem.names),
        rtol=1e-10,
    )


def test_gradient_matches_finite_differences(setup):
    data, problem, x0, sigma = setup
    shard_data = gather_shard_data(
        make_shards(np.asarray(data.mask), 2, seed=0), np.asarray(data.c2), sigma
    )
    one = jax.tree.map(lambda a: a[1], shard_data)
    posterior = _posterior(problem, data, 2)
    theta = problem.transform.to_unconstrained(x0)
    value = eqx.filter_jit(lambda post, th, d: post(th, d))
    gradient = np.asarray(
        eqx.filter_jit(lambda post, th, d: jax.grad(post)(th, d))(posterior, theta, one)
    )
    step = 1e-5
    shifts = step * jnp.eye(theta.shape[0])
    forward = eqx.filter_jit(lambda post, ths, d: jax.vmap(post, in_axes=(0, None))(ths, d))
    difference = np.asarray(
        forward(posterior, theta + shifts, one) - forward(posterior, theta - shifts, one)
    )
    # Central differences: truncation O(h²) and rounding O(ε|f|/h) both ≲ 1e-5 relative.
    np.testing.assert_allclose(
        gradient,
        difference / (2 * step),
        rtol=1e-4,
        atol=1e-6 * abs(float(value(posterior, theta, one))),
    )


def test_preconditioned_density_and_gauss_newton(setup):
    data, problem, x0, sigma = setup
    shard_data = gather_shard_data(
        make_shards(np.asarray(data.mask), 2, seed=0), np.asarray(data.c2), sigma
    )
    posterior = _posterior(problem, data, 2)
    theta = problem.transform.to_unconstrained(x0)
    p = len(problem.names)
    factor = jnp.asarray(np.tril(np.random.default_rng(0).normal(size=(p, p))) + 3 * np.eye(p))
    preconditioned = PreconditionedPosterior(posterior)
    z = jnp.asarray(np.random.default_rng(1).normal(size=p)) * 0.01
    one = jax.tree.map(lambda a: a[0], shard_data)
    whitened = WhitenedShard(one, AffinePreconditioner(theta, factor))
    np.testing.assert_allclose(
        _log_density(preconditioned, z, whitened),
        _log_density(posterior, theta + factor @ z, one),
        rtol=1e-12,
    )
    information = np.asarray(gauss_newton_information(posterior, theta, shard_data))

    # Independent path: the Jacobian of the full `model.c2` maps, restricted to `data.mask`.
    def maps(theta):
        return _maps(problem, data, problem.transform.to_bounded(theta))

    jacobian = np.asarray(jax.jit(jax.jacfwd(maps))(theta)).reshape(-1, p)
    weights = (np.asarray(data.mask) / sigma**2).reshape(-1)
    expected = jacobian.T @ (weights[:, None] * jacobian)
    np.testing.assert_allclose(information, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())


@pytest.mark.parametrize("layout", ["tiles", "maps"])
@pytest.mark.parametrize("rule", ["tensor", "own nodes"])
def test_shard_likelihood_with_the_roi_model_equals_the_full_bin_average_maps(rule, layout):
    """With bin geometry on the problem, shards evaluate Σ_k w_k num(q_k, φ_k)/f² at their pairs,
    exactly the full `model.c2(..., bins=...)` maps at those entries (issue 7: CMC honours it),
    for a tensor rule (q nodes shared along φ) and for a rule without that structure."""
    data, problem, x0, sigma = _setup("mask")
    bins = hj.BinGeometry.from_widths(data.q, data.phi, q_width=0.3 * data.q, phi_width=40.0)
    bins = bins.with_nodes(3, 5)
    if rule == "own nodes":  # the same nodes, unequal weights, no grid
        weights = np.asarray(bins.weights) * (1.0 + 0.5 * np.cos(np.arange(15)))
        bins = hj.BinGeometry.from_nodes(bins.q_nodes, bins.phi_nodes, weights)
        assert bins.grid is None
    problem = eqx.tree_at(lambda p: p.bins, problem, bins, is_leaf=lambda x: x is None)
    mask = np.asarray(data.mask)
    shards = make_shards(mask, 2, strategy="random", seed=0)
    shard_data = gather_shard_data(shards, np.asarray(data.c2), sigma, layout)
    posterior = _posterior(problem, data, 2)
    theta = problem.transform.to_unconstrained(x0)
    model, contrast, offset = problem.unpack(x0)
    maps = np.asarray(
        model.c2(data.t, q=data.q, phi=data.phi, contrast=contrast, offset=offset, bins=bins)
    )
    point_maps = np.asarray(_maps(problem, data, x0))
    assert np.max(np.abs(maps - point_maps)) > 1e-3  # the bins matter at these widths
    for s in range(2):
        one = jax.tree.map(lambda a: a[s], shard_data)
        value = float(_log_likelihood(posterior, theta, one))
        angle, t1, t2 = shards.entries(s)
        residual = (maps[angle, t1, t2] - np.asarray(data.c2)[angle, t1, t2]) / sigma[angle, t1, t2]
        np.testing.assert_allclose(value, -0.5 * np.sum(residual**2), rtol=1e-10)


def test_tiles_must_start_on_the_block_grid():
    """The likelihood tabulates per-frame factors per block of b frames: a tile that does not
    start at a multiple of b is refused with a clear error, not evaluated wrongly."""
    mask = np.triu(np.ones((1, 24, 24), bool), 1)
    shards = make_shards(mask, 1, seed=0)
    c2 = np.ones((1, 24, 24))
    gather_shard_data(shards, c2, np.ones_like(c2))  # aligned: accepted
    moved = eqx.tree_at(lambda s: s.t2_start, shards, shards.t2_start + 1)
    with pytest.raises(ValueError, match="multiple of its side"):
        gather_shard_data(moved, c2, np.ones_like(c2))


@pytest.mark.slow
@pytest.mark.parametrize("marginal", [False, True])
def test_the_two_layouts_give_one_density_gradient_and_information(setup, marginal):
    """Whole maps with zero precision outside a shard (`"maps"`) and the shard's tiles are the
    same shard posterior: density, gradient, Gauss–Newton information and the merged full data,
    with and without the scaling coefficients integrated out."""
    data, problem, x0, sigma = setup
    shards = make_shards(np.asarray(data.mask), 3, seed=1)
    tiles = gather_shard_data(shards, np.asarray(data.c2), sigma, "tiles")
    maps = gather_shard_data(shards, np.asarray(data.c2), sigma, "maps")
    assert maps.observed.shape == (3, 3, 30, 30)
    posterior = dataclasses.replace(_posterior(problem, data, 3), marginal_scaling=marginal)
    k = posterior.n_sampled
    theta = problem.transform.to_unconstrained(x0)[:k] + 0.02
    gradient = eqx.filter_jit(lambda post, th, d: jax.value_and_grad(post)(th, d))
    for s in range(3):
        one_tiles = jax.tree.map(lambda a: a[s], tiles)
        one_maps = jax.tree.map(lambda a: a[s], maps)
        value_t, grad_t = gradient(posterior, theta, one_tiles)
        value_m, grad_m = gradient(posterior, theta, one_maps)
        np.testing.assert_allclose(value_m, value_t, rtol=1e-10)
        np.testing.assert_allclose(grad_m, grad_t, rtol=1e-8, atol=1e-8 * np.max(np.abs(grad_t)))
    np.testing.assert_allclose(
        gauss_newton_information(posterior, theta, maps),
        gauss_newton_information(posterior, theta, tiles),
        rtol=1e-8,
    )
    merged = merged_shards(maps)
    assert merged.observed.shape == (1, 3, 30, 30)
    whole = jax.tree.map(
        lambda a: a[0],
        gather_shard_data(make_shards(np.asarray(data.mask), 1), np.asarray(data.c2), sigma),
    )
    full = dataclasses.replace(posterior, tempering=jnp.asarray(1.0))
    np.testing.assert_allclose(
        _log_density(full, theta, jax.tree.map(lambda a: a[0], merged)),
        _log_density(full, theta, whole),
        rtol=1e-10,
    )


def test_an_unknown_layout_is_refused(setup):
    data, _, _, sigma = setup
    shards = make_shards(np.asarray(data.mask), 1)
    with pytest.raises(ValueError, match="layout"):
        gather_shard_data(shards, np.asarray(data.c2), sigma, "pairs")
