"""The ROI kernels: structured = direct = pairs, the point model as a one-node bin, linear cost
in the number of nodes, and jit / vmap / grad with a bin geometry (issue 7, items 3, 4b, 4e).

Tolerances: the structured kernel re-associates C[j] − C[i] at block pivots and rotates phases
from them, so it differs from the direct formula by a few ulps of q²·max C and q·max|C_v|
(here ≲ 30 rad): 1e-12 absolute.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_strategies import AGEING

import heterojax as hj


PARAMETERS = AGEING
MODEL = hj.HeterodyneModel.from_dict(PARAMETERS)
Q = np.array([0.02, 0.02, 0.03])
PHI = np.array([0.0, 60.0, 100.0])
CONTRAST = np.array([0.3, 0.4, 0.5])
OFFSET = np.array([1.0, 1.02, 0.98])


def grid(n):
    return 0.01 * np.arange(1, n + 1)


# One compilation per case (eager evaluation would compile every operation separately).
c2 = eqx.filter_jit(lambda model, t, **arguments: model.c2(t, **arguments))


def geometries():
    tensor = hj.BinGeometry.from_widths(Q, PHI, 0.3 * Q, [45.0, 20.0, 30.0], nodes=(3, 5))
    rng = np.random.default_rng(0)
    q_nodes = Q[:, None] * (1 + 0.1 * rng.uniform(-1, 1, (3, 7)))
    phi_nodes = PHI[:, None] + rng.uniform(-20, 20, (3, 7))
    free = hj.BinGeometry.from_nodes(q_nodes, phi_nodes, rng.uniform(0.1, 1, (3, 7)))
    return {"tensor": tensor, "nodes": free}


# 5: a single (short) block; 64: two full blocks; 131: a short last block (block 32 does not
# divide it); the same size serves the other tests, so their compilations are shared.
N = 131


@pytest.mark.parametrize("kind, n", [("tensor", 5), ("tensor", 64), ("tensor", N), ("nodes", N)])
def test_structured_equals_direct(kind, n):
    bins = geometries()[kind]
    t = grid(n)
    arguments = dict(q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins)
    structured = c2(MODEL, t, method="structured", **arguments)
    direct = c2(MODEL, t, method="direct", **arguments)
    assert structured.shape == (3, n, n)
    np.testing.assert_allclose(structured, direct, rtol=0, atol=1e-12)
    np.testing.assert_allclose(structured, jnp.swapaxes(structured, 1, 2), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        jnp.diagonal(structured, axis1=1, axis2=2), (OFFSET + CONTRAST)[:, None] + 0 * t, atol=1e-12
    )


@pytest.mark.parametrize("method", ["structured", "direct"])
def test_one_node_bin_is_the_point_model(method):
    t = grid(N)
    bins = hj.BinGeometry.from_nodes(Q[:, None], PHI[:, None])
    roi = c2(MODEL, t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins, method=method)
    point = c2(MODEL, t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, method=method)
    np.testing.assert_allclose(roi, point, rtol=0, atol=1e-12)
    zero_width = hj.BinGeometry.from_widths(Q, PHI, 0.0, 0.0, nodes=(1, 1))
    np.testing.assert_allclose(zero_width.q_nodes, bins.q_nodes, rtol=1e-15)
    np.testing.assert_allclose(zero_width.phi_nodes, bins.phi_nodes, rtol=1e-15)


def test_bin_average_is_the_weighted_mean_of_point_maps():
    # The definition, c2_bin = Σ_k w_k c2(q_k, φ_k), through the public point model.
    t = grid(24)
    bins = geometries()["nodes"]
    roi = c2(MODEL, t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins)
    w = np.asarray(bins.weights)
    for a in range(3):
        points = c2(
            MODEL,
            t,
            q=bins.q_nodes[a],
            phi=bins.phi_nodes[a],
            contrast=CONTRAST[a],
            offset=OFFSET[a],
        )
        np.testing.assert_allclose(roi[a], np.tensordot(w[a], points, axes=1), atol=1e-13)


def test_pairs_equal_maps():
    t = grid(N)
    bins = geometries()["tensor"]
    maps = c2(MODEL, t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins, method="direct")
    rng = np.random.default_rng(1)
    i, j, a = rng.integers(0, N, 500), rng.integers(0, N, 500), rng.integers(0, 3, 500)
    pairs = MODEL.c2_pairs(t, i, j, a, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins)
    np.testing.assert_allclose(pairs, maps[a, i, j], rtol=0, atol=1e-12)


def test_cost_grows_linearly_with_the_nodes():
    # XLA's own flop count of the compiled structured kernel: doubling the nodes at most
    # doubles it (the fixed cost of the point-like terms makes it grow less).
    t = jnp.asarray(grid(128))

    def flops(nodes):
        bins = hj.BinGeometry.from_widths(Q, PHI, 0.3 * Q, 45.0, nodes=nodes)
        function = jax.jit(lambda m, b: m.c2(t, q=Q, phi=PHI, bins=b, method="structured"))
        analysis = function.lower(MODEL, bins).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        return float(analysis["flops"])

    assert flops((4, 8)) / flops((4, 4)) <= 2.0  # 32 nodes against 16


def test_jit_vmap_grad_with_bins():
    t = jnp.asarray(grid(24))
    bins = geometries()["tensor"]

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def total(model, bins):
        return jnp.sum(model.c2(t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins))

    first = total(MODEL, bins)
    other = total(MODEL.replace(v0=310.0), bins.with_nodes(3, 5))  # new values, no retrace
    assert jnp.isfinite(first) and jnp.isfinite(other) and first != other

    # vmap over a batch of velocities.
    @jax.jit
    def one(v0):
        model = MODEL.replace(v0=v0)
        return model.c2(t, q=Q, phi=PHI, bins=bins)[:, 5, 20]

    velocities = jnp.array([100.0, 500.0])
    batched = jax.jit(jax.vmap(one))(velocities)
    for k, v0 in enumerate(velocities):
        np.testing.assert_allclose(batched[k], one(v0), atol=1e-13)

    # grad with respect to D0_sample and v0, against central differences.
    def loss(values):
        model = MODEL.replace(D0_sample=values[0], v0=values[1])
        return jnp.sum(model.c2(t, q=Q, phi=PHI, bins=bins) ** 2)

    x = jnp.array([2e3, 300.0])
    gradient = jax.jit(jax.grad(loss))(x)
    steps = jnp.array([1.0, 0.01])
    shifts = jnp.concatenate([jnp.diag(steps), -jnp.diag(steps)])
    values = jax.jit(jax.vmap(loss))(x + shifts)
    differences = (values[:2] - values[2:]) / (2 * steps)
    np.testing.assert_allclose(gradient, differences, rtol=1e-6)


@pytest.mark.slow
def test_structured_derivatives_equal_direct():
    # The structured kernel's forward-mode Jacobian (what NLSQ takes) and gradient (reverse
    # mode, through the shared cos/sin buffers and their custom derivative) against the direct
    # formula's, on several blocks.
    t = jnp.asarray(grid(N))
    bins = geometries()["tensor"]
    names = ("D0_sample", "v0", "f0", "phi0", "alpha_ref")

    def maps(values, method):
        model = MODEL.replace(**dict(zip(names, values)))
        return model.c2(t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, bins=bins, method=method)

    x = jnp.array([PARAMETERS[name] for name in names])
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(3, N, N)))
    for method_maps in (jax.jacfwd, lambda f: jax.grad(lambda v: jnp.sum(weights * f(v)))):
        structured = jax.jit(method_maps(lambda v: maps(v, "structured")))(x)
        direct = jax.jit(method_maps(lambda v: maps(v, "direct")))(x)
        scale = jnp.max(jnp.abs(direct), axis=tuple(range(direct.ndim - 1)))
        assert jnp.all(scale > 0)
        np.testing.assert_allclose(structured / scale, direct / scale, rtol=0, atol=1e-10)


def test_cos_sin_derivatives():
    from heterojax._model._numerics import cos_sin

    x = jnp.linspace(-40.0, 40.0, 17).reshape(1, 17)
    np.testing.assert_allclose(cos_sin(x), jnp.stack([jnp.cos(x), jnp.sin(x)]), atol=1e-15)
    weights = jnp.array([0.3, -1.2])[:, None, None]
    forward = jax.jacfwd(lambda v: jnp.sum(weights * cos_sin(v)))(x)
    reverse = jax.grad(lambda v: jnp.sum(weights * cos_sin(v)))(x)
    expected = -0.3 * jnp.sin(x) - 1.2 * jnp.cos(x)
    np.testing.assert_allclose(forward, expected, atol=1e-13)
    np.testing.assert_allclose(reverse, expected, atol=1e-13)
    batched = jax.vmap(cos_sin)(x[0])
    np.testing.assert_allclose(batched, jnp.stack([jnp.cos(x[0]), jnp.sin(x[0])], axis=1))


def test_single_map_rule_sliced_by_scan():
    # lax.scan over maps hands c2 one map's rule without the map axis (as fits do).
    t = jnp.asarray(grid(24))
    bins = geometries()["tensor"]
    maps = c2(MODEL, t, q=Q, phi=PHI, bins=bins)

    def step(_, inputs):
        q, phi, rule = inputs
        return None, MODEL.c2(t, q=q, phi=phi, bins=rule)[0]

    scan = jax.jit(lambda inputs: jax.lax.scan(step, None, inputs)[1])
    scanned = scan((jnp.asarray(Q), jnp.asarray(PHI), bins))
    np.testing.assert_allclose(scanned, maps, atol=1e-13)
    taken = c2(MODEL, t, q=Q[1:], phi=PHI[1:], bins=bins.take([1, 2]))
    np.testing.assert_allclose(taken, maps[1:], atol=1e-13)


def test_bins_errors():
    t = grid(10)
    bins = geometries()["tensor"]
    with pytest.raises(ValueError, match="3 bins but there are 2 angles"):
        MODEL.c2(t, q=Q[:2], phi=PHI[:2], bins=bins)
    with pytest.raises(TypeError, match="BinGeometry"):
        MODEL.c2(t, q=Q, phi=PHI, bins="wide")  # pyright: ignore[reportArgumentType]
