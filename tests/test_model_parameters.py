"""The parameter table of SPEC §3 and the vector ↔ model round trip."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _model_strategies import parameter_vectors
from hypothesis import given

import heterojax as hj


# SPEC §3, transcribed: name, default, lower, upper, unit.
SPEC_TABLE = [
    ("D0_ref", 1e4, 0.0, 1e6, "Å²/s^(α+1)"),
    ("alpha_ref", 0.0, -2.0, 2.0, "-"),
    ("D_offset_ref", 0.0, -1e5, 1e5, "Å²/s"),
    ("D0_sample", 1e4, 0.0, 1e6, "Å²/s^(α+1)"),
    ("alpha_sample", 0.0, -2.0, 2.0, "-"),
    ("D_offset_sample", 0.0, -1e5, 1e5, "Å²/s"),
    ("v0", 1e3, 0.0, 1e5, "Å/s^(β+1)"),
    ("beta", 0.0, -2.0, 2.0, "-"),
    ("v_offset", 0.0, -1e4, 1e4, "Å/s"),
    ("f0", 0.5, 0.0, 1.0, "-"),
    ("f1", 0.0, -10.0, 10.0, "1/s"),
    ("f2", 0.0, -1e4, 1e4, "s"),
    ("f3", 0.0, 0.0, 1.0, "-"),
    ("phi0", 0.0, -90.0, 90.0, "deg"),
    ("contrast", 0.5, 0.0, 1.0, "-"),
    ("offset", 1.0, 0.5, 1.5, "-"),
]


def test_parameter_names_are_canonical():
    assert hj.PARAMETER_NAMES == tuple(row[0] for row in SPEC_TABLE[:14])
    assert hj.HeterodyneModel().parameter_names == hj.PARAMETER_NAMES


@pytest.mark.parametrize("name, default, lower, upper, unit", SPEC_TABLE)
def test_parameter_table_matches_spec(name, default, lower, upper, unit):
    spec = hj.PARAMETERS[name]
    assert (spec.name, spec.default, spec.lower, spec.upper, spec.unit) == (
        name,
        default,
        lower,
        upper,
        unit,
    )


def test_parameters_is_read_only_and_complete():
    assert list(hj.PARAMETERS) == [row[0] for row in SPEC_TABLE]
    with pytest.raises(TypeError):
        hj.PARAMETERS["D0_ref"] = hj.PARAMETERS["v0"]  # type: ignore[index]


def test_default_model_has_the_defaults():
    model = hj.HeterodyneModel()
    np.testing.assert_array_equal(model.to_vector(), [row[1] for row in SPEC_TABLE[:14]])
    assert model.to_vector().dtype == jnp.float64
    assert {k: float(v) for k, v in model.to_dict().items()} == {
        r[0]: r[1] for r in SPEC_TABLE[:14]
    }


@given(x=parameter_vectors())
def test_vector_round_trip(x):
    model = hj.HeterodyneModel.from_vector(x)
    np.testing.assert_array_equal(model.to_vector(), x)
    np.testing.assert_array_equal(hj.HeterodyneModel().with_vector(x).to_vector(), x)
    as_dict = model.to_dict()
    assert tuple(as_dict) == hj.PARAMETER_NAMES
    np.testing.assert_array_equal([as_dict[n] for n in hj.PARAMETER_NAMES], x)
    np.testing.assert_array_equal(hj.HeterodyneModel.from_dict(as_dict).to_vector(), x)


def test_replace_changes_only_the_named_entry():
    x = np.arange(14.0) * 1.5 - 3.0
    model = hj.HeterodyneModel.from_vector(x)
    for k, name in enumerate(hj.PARAMETER_NAMES):
        changed = model.replace(**{name: x[k] + 1.0}).to_vector()
        expected = x.copy()
        expected[k] += 1.0
        np.testing.assert_array_equal(changed, expected)


def test_fields_are_the_named_parameters():
    model = hj.HeterodyneModel.from_vector(np.arange(14.0) + 0.5)
    assert float(model.reference.D0) == 0.5 and float(model.reference.D_offset) == 2.5
    assert float(model.sample.alpha) == 4.5
    assert float(model.velocity.v0) == 6.5 and float(model.velocity.v_offset) == 8.5
    assert float(model.fraction.f0) == 9.5 and float(model.fraction.f3) == 12.5
    assert float(model.phi0) == 13.5


def test_floating_leaves_are_exactly_the_parameters():
    """Fits flatten the model: its inexact leaves must be the 14 parameters, nothing else."""
    x = np.arange(14.0) + 0.25
    leaves = jax.tree.leaves(eqx.filter(hj.HeterodyneModel.from_vector(x), eqx.is_inexact_array))
    assert len(leaves) == 14
    assert all(leaf.shape == () and leaf.dtype == jnp.float64 for leaf in leaves)
    assert sorted(float(leaf) for leaf in leaves) == sorted(x)


@pytest.mark.parametrize("shape", [(13,), (15,), (2, 14), ()])
def test_from_vector_rejects_wrong_shapes(shape):
    with pytest.raises((ValueError, TypeError), match="14|shape"):
        hj.HeterodyneModel.from_vector(np.zeros(shape))


def test_replace_rejects_unknown_names():
    with pytest.raises(ValueError, match="D0_reference"):
        hj.HeterodyneModel().replace(D0_reference=1.0)


def test_model_rejects_wrong_law_types():
    with pytest.raises(TypeError, match="velocity"):
        hj.HeterodyneModel(velocity=hj.PowerLawTransport())  # type: ignore[arg-type]


BAD_INPUTS = {
    "t decreasing": dict(t=np.array([0.0, 2.0, 1.0])),
    "t repeated": dict(t=np.array([0.0, 1.0, 1.0])),
    "t 2-D": dict(t=np.ones((2, 2))),
    "phi 2-D": dict(phi=np.zeros((2, 2))),
    "contrast per wrong angle count": dict(phi=np.zeros(3), contrast=np.ones(2)),
    "q per wrong angle count": dict(phi=np.zeros(3), q=np.full(2, 0.01)),
    "unknown method": dict(method="fast"),
}


@pytest.mark.parametrize("bad", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_c2_rejects_bad_input(bad):
    kwargs = dict(t=np.linspace(0.0, 1.0, 4), q=0.01, phi=np.zeros(3)) | bad
    t = kwargs.pop("t")
    # ValueError from the model's own checks; TypeError when the jaxtyping/beartype runtime
    # checks of the test configuration catch the shape first.
    with pytest.raises((ValueError, TypeError)):
        hj.HeterodyneModel().c2(t, **kwargs)


def test_c2_shapes_and_dtype():
    c2 = eqx.filter_jit(hj.HeterodyneModel().c2)
    t = np.linspace(0.0, 1.0, 7)
    assert c2(t, q=0.01, phi=30.0).shape == (1, 7, 7)
    maps = c2(t, q=np.array([0.01, 0.02]), phi=np.array([0.0, 30.0]))
    assert maps.shape == (2, 7, 7)
    assert maps.dtype == jnp.float64
    assert c2(np.array([5.0]), q=0.01, phi=np.zeros(2)).shape == (2, 1, 1)


def test_phi0_is_periodic_and_the_model_has_its_period():
    """c2 is the same at φ0 and φ0 ± 180° (the flow's phase enters only through an even
    function), the period `PARAMETERS["phi0"]` declares; narrowed bounds do not wrap."""
    spec = hj.PARAMETERS["phi0"]
    assert spec.period == 180.0 and spec.wraps
    assert not spec.with_bounds(0.0, 90.0).wraps
    assert not hj.PARAMETERS["v0"].wraps
    t = jnp.linspace(0.1, 5.0, 24)
    model = hj.HeterodyneModel().replace(D0_sample=500.0, v0=300.0, f0=0.4, phi0=70.0)
    maps = [
        model.replace(phi0=phi0).c2(t, q=0.01, phi=jnp.array([0.0, 30.0, 100.0]))
        for phi0 in (70.0, 70.0 - 180.0, 70.0 + 180.0)
    ]
    np.testing.assert_allclose(maps[1], maps[0], atol=1e-12)
    np.testing.assert_allclose(maps[2], maps[0], atol=1e-12)


def test_a_periodic_box_transform_wraps_with_unit_derivative():
    from heterojax._fit._transforms import BoxTransform

    transform = BoxTransform(
        jnp.array([-90.0, 0.0]), jnp.array([90.0, 1.0]), jnp.array([True, False])
    )
    theta = jnp.array([[91.0, 0.0], [-269.0, 2.0], [10.0, -3.0]])
    x = transform.to_bounded(theta)
    np.testing.assert_allclose(x[:, 0], [-89.0, -89.0, 10.0])
    np.testing.assert_allclose(transform.derivative(theta)[:, 0], 1.0)
    np.testing.assert_allclose(transform.to_bounded(transform.to_unconstrained(x)), x)
    assert not bool(transform.at_bound(jnp.array([90.0, 0.5]))[0])
    assert bool(transform.at_bound(jnp.array([0.0, 1.0]))[1])
    assert transform.take(1).periodic.tolist() == [True]
    gradient = jax.grad(lambda th: jnp.sin(jnp.deg2rad(2 * transform.to_bounded(th)[0])))
    np.testing.assert_allclose(
        gradient(jnp.array([89.99, 0.0]))[0], 2 * jnp.deg2rad(1.0) * jnp.cos(jnp.deg2rad(179.98))
    )
