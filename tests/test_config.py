"""The YAML config: schema errors, suggestions, paths, template, and every key's effect."""

import inspect
import os

import numpy as np
import pytest
import yaml

import heterojax
from heterojax._config._calls import (
    cmc_arguments,
    load_arguments,
    model_from_config,
    nlsq_arguments,
    output_settings,
    simulate_arguments,
)
from heterojax._config._degeneracy import DEFAULT_FIXED, config_degeneracies, degeneracies
from heterojax._config._errors import ConfigError
from heterojax._config._load import load_config, validate_config
from heterojax._config._schema import CMCSection, Config, NLSQSection
from heterojax._config._template import estimated_start, template


BASE = {"data": {"file": "data.h5"}}


def _with(path: str, value):
    raw = {"data": {"file": "data.h5"}}
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


@pytest.mark.parametrize(
    "raw, key, suggestion",
    [
        ({**BASE, "nlsqq": {}}, "nlsqq", "nlsq"),
        (_with("data.frame", [1, 10]), "data.frame", "frames"),
        (_with("parameters.D0_reff", 5.0), "parameters.D0_reff", "D0_ref"),
        (_with("parameters.v0", {"vaule": 3.0}), "parameters.v0.vaule", "value"),
        (_with("cmc.thresholds.rhat", 1.1), "cmc.thresholds.rhat", "r_hat"),
        (_with("scaling.contrast", {"fixd": True}), "scaling.contrast.fixd", "fixed"),
        (_with("output.Directory", "x"), "output.Directory", "directory"),
    ],
)
def test_misspelt_keys_are_named_with_the_nearest_valid_key(raw, key, suggestion):
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    message = str(caught.value)
    assert f"unknown key '{key}'" in message
    assert f"Did you mean '{suggestion}'?" in message


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({}, "missing required key 'data'"),
        ({"data": {}}, "missing required key 'data.file'"),
        (_with("data.frames", [10, 2]), "'data.frames'"),
        (_with("data.diagonal", "interp"), "'data.diagonal'"),
        (_with("parameters.f0", 3.0), "'parameters.f0': value = 3 lies outside"),
        (_with("parameters.v0", {"lower": 10.0, "upper": 1.0}), "'parameters.v0'"),
        (_with("cmc.chains", 0), "'cmc.chains'"),
        (_with("scaling.contrast", {"fixed": True}), "'scaling.contrast': fixed: true needs"),
        (_with("method", "mcmc"), "'method'"),
    ],
)
def test_bad_values_name_the_key(raw, fragment):
    with pytest.raises(ConfigError, match="problem") as caught:
        validate_config(raw)
    assert fragment in str(caught.value)


def test_relative_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "configs" / "run1"
    folder.mkdir(parents=True)
    path = folder / "fit.yaml"
    path.write_text(
        yaml.safe_dump({"data": {"file": "../data/x.h5"}, "output": {"directory": "out"}})
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = load_config("configs/run1/fit.yaml")
    assert config.data.file == str(tmp_path / "configs" / "data" / "x.h5")
    assert config.output.directory == str(folder / "out")
    absolute = str(tmp_path / "elsewhere.h5")
    path.write_text(yaml.safe_dump({"data": {"file": absolute}}))
    assert load_config(path).data.file == absolute


def test_invalid_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def _leaf_paths(model_type, prefix=""):
    from heterojax._config._errors import _models_in

    paths = []
    for name, field in model_type.model_fields.items():
        inner = _models_in(field.annotation)
        if inner:
            paths += _leaf_paths(inner[0], f"{prefix}{name}.")
        else:
            paths.append(prefix + name)
    return paths


def test_template_holds_every_key_with_a_comment_and_validates():
    text = template("run.h5")
    raw = yaml.safe_load(text)
    config = validate_config(raw, base_dir="/x")
    assert config.data.file == "/x/run.h5"
    for path in _leaf_paths(Config):
        node = raw
        for part in path.split("."):
            assert part in node, f"template lacks {path}"
            node = node[part]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            assert "#" in line, f"key without a comment: {line!r}"
    # the template's values are the defaults: the same model, bounds and options
    default = validate_config({"data": {"file": "run.h5"}}, base_dir="/x")
    assert model_from_config(config) == model_from_config(default)
    bounds = nlsq_arguments(config)["bounds"]
    assert bounds == {
        n: (heterojax.PARAMETERS[n].lower, heterojax.PARAMETERS[n].upper)
        for n in heterojax.PARAMETER_NAMES
    }
    assert config.model_dump(exclude={"parameters"}) == default.model_dump(exclude={"parameters"})
    # the degenerate offsets are held at 0, and nothing degenerate is left free
    assert sorted(nlsq_arguments(config)["fixed"]) == sorted(DEFAULT_FIXED)
    assert set(DEFAULT_FIXED) >= {"D_offset_ref", "D_offset_sample", "v_offset", "f2"}
    for name in DEFAULT_FIXED:
        assert getattr(config.parameters, name).value == 0.0
        line = next(x for x in text.splitlines() if x.startswith(f"  {name}:"))
        assert "fixed: true" in line and DEFAULT_FIXED[name] in line
    assert config_degeneracies(config) == []
    assert "estimated from the data" not in text  # no data, no estimate


# Every leaf key of the schema with a valid non-default value. A new key without an entry here
# fails `test_every_key_changes_an_api_argument`.
ALTERNATIVES = {
    "method": "both",
    "data.file": "other.h5",
    "data.q": 0.02,
    "data.q_tolerance": 0.001,
    "data.phi": [0.0, [80.0, 100.0]],
    "data.phi_tolerance": 2.0,
    "data.frames": [2, 20],
    "data.dt": 0.1,
    "data.diagonal": "mask",
    "data.sigma": 0.003,
    "data.roi": False,
    "scaling.mode": "constant",
    "scaling.fourier_order": 1,
    "scaling.contrast.value": 0.2,
    "scaling.contrast.lower": 0.01,
    "scaling.contrast.upper": 0.9,
    "scaling.contrast.fixed": True,
    "scaling.offset.value": 1.01,
    "scaling.offset.lower": 0.8,
    "scaling.offset.upper": 1.2,
    "scaling.offset.fixed": True,
    "nlsq.starts": 8,
    "nlsq.errors": "formal",
    "nlsq.global_search": True,
    "nlsq.global_evaluations": 500,
    "nlsq.seed": 3,
    "nlsq.rtol": 1e-6,
    "nlsq.atol": 1e-5,
    "nlsq.max_steps": 100,
    "nlsq.screening_steps": 10,
    "cmc.warm_start": False,
    "cmc.shards": 4,
    "cmc.shard_strategy": "stratified",
    "cmc.chains": 2,
    "cmc.warmup": 100,
    "cmc.samples": 100,
    "cmc.max_samples": 400,
    "cmc.combine": "mixture",
    "cmc.priors": "informed",
    "cmc.prior_width": 3.0,
    "cmc.target_accept": 0.9,
    "cmc.max_tree_depth": 8,
    "cmc.dense_mass": True,
    "cmc.init_jitter": 0.1,
    "cmc.adjustment": "none",
    "cmc.chain_method": "sequential",
    "cmc.seed": 5,
    "cmc.thresholds.r_hat": 1.05,
    "cmc.thresholds.ess_bulk": 100.0,
    "cmc.thresholds.ess_tail": 100.0,
    "cmc.thresholds.bfmi": 0.2,
    "cmc.thresholds.divergences": 3,
    "cmc.thresholds.tree_depth_fraction": 0.1,
    "cmc.thresholds.shard_agreement": 5.0,
    "simulate.noise": 0.01,
    "simulate.seed": 9,
    "simulate.layout": "legacy",
    "simulate.dtype": "float32",
    "output.directory": "elsewhere",
    "output.overwrite": True,
    "output.plots": False,
}
for _name in heterojax.PARAMETER_NAMES:
    _spec = heterojax.PARAMETERS[_name]
    ALTERNATIVES[f"parameters.{_name}.value"] = (
        (_spec.lower + _spec.default) / 2
        if (_spec.default != _spec.lower)
        else (_spec.default + _spec.upper) / 2
    )
    ALTERNATIVES[f"parameters.{_name}.lower"] = _spec.lower - 1.0
    ALTERNATIVES[f"parameters.{_name}.upper"] = _spec.upper + 1.0
    ALTERNATIVES[f"parameters.{_name}.fixed"] = True


def _normalise(value):
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, np.ndarray):
        return ["array", value.shape, value.tolist()]
    if isinstance(value, heterojax.HeterodyneModel):
        return np.asarray(value.to_vector()).tolist()
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return _normalise(vars(value))
    return value


def _simulation_base():
    return {
        "data": {"file": "data.h5", "q": 0.01, "phi": [0.0, 45.0], "frames": [1, 10], "dt": 0.05}
    }


def _everything(raw):
    config = validate_config(raw, base_dir="/base")
    calls = {
        "load": load_arguments(config),
        "model": model_from_config(config),
        "nlsq": nlsq_arguments(config),
        "cmc": cmc_arguments(config, warm_start=config.cmc.warm_start),
        "output": output_settings(config),
    }
    try:
        calls["simulate"] = simulate_arguments(config)
    except ValueError as error:
        calls["simulate"] = str(error)
    return _normalise(calls)


def _set(raw, path, value):
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def test_every_key_changes_an_api_argument():
    assert sorted(_leaf_paths(Config)) == sorted(ALTERNATIVES), (
        "ALTERNATIVES must list exactly the schema's keys"
    )
    for path, value in ALTERNATIVES.items():
        # simulate.* keys need a simulation-ready config; data.* keys start from null
        base = _simulation_base() if not path.startswith("data.") else {"data": {"file": "d"}}
        if path == "nlsq.screening_steps":  # applies only to an integer starts > 1
            _set(base, "nlsq.starts", 8)
        if path == "scaling.fourier_order":
            _set(base, "scaling.mode", "fourier")
        if path.startswith("scaling.") and path.endswith(".fixed"):
            _set(base, path.replace("fixed", "value"), 0.3 if "contrast" in path else 1.0)
        changed = yaml.safe_load(yaml.safe_dump(base))
        _set(changed, path, value)
        if path == "cmc.warm_start":
            # the contrast/offset starts reach fit_cmc only without a warm start
            _set(base, "scaling.contrast.value", 0.3)
            _set(changed, "scaling.contrast.value", 0.3)
        assert _everything(changed) != _everything(base), f"{path} has no effect"


def test_schema_defaults_equal_the_api_defaults():
    signature = inspect.signature(heterojax.fit_nlsq).parameters
    config = validate_config({"data": {"file": "x"}})
    for key, value in config.nlsq.model_dump().items():
        if key == "screening_steps":  # null = MultiStart's own default, which it documents
            assert value is None and "null = 30" in NLSQSection.model_fields[key].description
            multi = inspect.signature(heterojax.MultiStart).parameters
            assert multi["screening_steps"].default == 30
            assert "screening_steps" not in signature
            continue
        assert signature[key].default == value, key
    load = inspect.signature(heterojax.load).parameters
    assert load["diagonal"].default == config.data.diagonal
    assert signature["scaling"].default == config.scaling.mode
    fit_cmc = getattr(heterojax, "fit_cmc", None)
    if fit_cmc is None:
        try:
            from heterojax._cmc._fit import fit_cmc
        except ImportError:
            pytest.skip("fit_cmc not available")
    cmc = inspect.signature(fit_cmc).parameters
    sampler = heterojax.NUTS()
    for key, value in config.cmc.model_dump().items():
        if key in ("warm_start", "seed", "thresholds"):
            continue
        assert cmc[key].default == value, key
        if key in ("target_accept", "max_tree_depth", "dense_mass", "init_jitter"):
            # null = the field of NUTS(), whose value the description states
            default = getattr(sampler, key)
            description = CMCSection.model_fields[key].description
            assert value is None and f"null = NUTS() default, {default}" in description, key
    from heterojax._cmc._verdict import Thresholds

    assert Thresholds(**config.cmc.thresholds.model_dump()) == Thresholds()


def test_arguments_of_a_typical_config():
    raw = {
        "data": {"file": "d.h5", "phi": [0, [170, -170]], "frames": [1, 50]},
        "parameters": {
            "D0_ref": {"value": 0.0, "fixed": True},
            "v0": {"value": 500.0, "upper": 2000.0},
        },
        "scaling": {"mode": "individual", "contrast": 0.2, "offset": {"value": 1.0, "fixed": True}},
        "data_": None,
    }
    raw.pop("data_")
    config = validate_config(raw, base_dir="/b")
    load = load_arguments(config)
    assert load["source"] == "/b/d.h5"
    assert load["phi"] == [0.0, (170.0, -170.0)] and load["frames"] == (1, 50)
    nlsq = nlsq_arguments(config)
    assert nlsq["fixed"] == ["D0_ref", "offset"]
    assert nlsq["bounds"] == {"v0": (0.0, 2000.0)}
    assert nlsq["contrast"] == 0.2 and nlsq["offset"] == 1.0
    model = model_from_config(config)
    assert float(model.to_dict()["D0_ref"]) == 0.0 and float(model.to_dict()["v0"]) == 500.0
    warm = cmc_arguments(config, warm_start=True)
    assert "contrast" not in warm and warm["fixed"] == ["D0_ref", "offset"]


@pytest.mark.parametrize(
    "nlsq, starts",
    [
        ({}, "auto"),
        ({"starts": "auto"}, "auto"),
        ({"starts": 1}, 1),
        ({"starts": 8}, 8),
        ({"starts": 8, "screening_steps": 10}, heterojax.MultiStart(8, screening_steps=10)),
    ],
)
def test_starts_reach_fit_nlsq(nlsq, starts):
    arguments = nlsq_arguments(validate_config({**BASE, "nlsq": nlsq}))
    assert arguments["starts"] == starts
    assert "screening_steps" not in arguments  # fit_nlsq takes it only inside MultiStart
    inspect.signature(heterojax.fit_nlsq).bind(None, None, **arguments)


@pytest.mark.parametrize(
    "nlsq, fragment",
    [
        ({"starts": 0}, "'nlsq.starts': must be \"auto\" or an integer ≥ 1"),
        ({"starts": "Auto"}, "'nlsq.starts': must be \"auto\""),
        ({"starts": True}, "'nlsq.starts'"),
        ({"starts": 2.5}, "'nlsq.starts'"),
        ({"screening_steps": 10}, "screening_steps applies only to an integer starts > 1"),
        ({"starts": 1, "screening_steps": 10}, "(got starts: 1)"),
        ({"starts": 8, "screening_steps": 0}, "'nlsq.screening_steps'"),
    ],
)
def test_bad_starts_name_the_key(nlsq, fragment):
    with pytest.raises(ConfigError) as caught:
        validate_config({**BASE, "nlsq": nlsq})
    assert fragment in str(caught.value)


# (parameter changes, expected [parameter to fix, ...]) from a config where every parameter is
# free at its default (alpha, beta, f1 start at 0): each rule, and what switches it off.
_ALL_FREE = {name: {"fixed": False} for name in heterojax.PARAMETER_NAMES}
DEGENERACY_CASES = [
    ({}, ["D_offset_ref", "D_offset_sample", "v_offset", "f2"]),
    ({"alpha_ref": {"value": 0.5}}, ["D_offset_sample", "v_offset", "f2"]),
    (
        {"alpha_sample": {"value": 0.0, "fixed": True}},
        ["D_offset_ref", "D_offset_sample", "v_offset", "f2"],
    ),
    ({"D0_ref": {"value": 100.0, "fixed": True}}, ["D_offset_sample", "v_offset", "f2"]),
    ({"D_offset_sample": {"value": 0.0, "fixed": True}}, ["D_offset_ref", "v_offset", "f2"]),
    ({"beta": {"value": 0.2}}, ["D_offset_ref", "D_offset_sample", "f2"]),
    ({"v0": {"value": 300.0, "fixed": True}}, ["D_offset_ref", "D_offset_sample", "f2"]),
    ({"f2": {"value": 0.0, "fixed": True}}, ["D_offset_ref", "D_offset_sample", "v_offset"]),
    # f2 with f0 and f1 free or nonzero: degenerate; f1 = 0 fixed: f2 has no effect at all,
    # and f3 becomes degenerate with f0.
    ({"f1": {"value": 0.3, "fixed": True}}, ["D_offset_ref", "D_offset_sample", "v_offset", "f2"]),
    (
        {"f1": {"value": 0.0, "fixed": True}},
        ["D_offset_ref", "D_offset_sample", "v_offset", "f2", "f3"],
    ),
    ({"f0": {"value": 0.5, "fixed": True}}, ["D_offset_ref", "D_offset_sample", "v_offset"]),
    (
        {"f0": {"value": 0.5, "fixed": True}, "f1": {"value": 0.0, "fixed": True}},
        ["D_offset_ref", "D_offset_sample", "v_offset", "f2"],
    ),
    (
        {"f1": {"value": 0.0, "fixed": True}, "f3": {"value": 0.0, "fixed": True}},
        ["D_offset_ref", "D_offset_sample", "v_offset", "f2"],
    ),
]


@pytest.mark.parametrize("changes, expected", DEGENERACY_CASES)
def test_degeneracy_rules(changes, expected):
    config = validate_config({**BASE, "parameters": {**_ALL_FREE, **changes}})
    found = config_degeneracies(config)
    assert [d.parameter for d in found] == expected
    for degeneracy in found:
        message = degeneracy.message()
        assert f"fix {degeneracy.parameter}" in message or "fix it" in message
        assert all(partner in message for partner in degeneracy.partners)


def test_degeneracies_are_exact_flat_directions():
    """Each reported pair really leaves c2 unchanged along a direction (so the rule is not a
    guess): moving the parameter to fix and compensating with its partner changes nothing."""
    t = 0.1 * np.arange(1, 31)
    base = heterojax.HeterodyneModel.from_dict(
        {"D0_ref": 200.0, "D0_sample": 3000.0, "v0": 300.0, "f0": 0.4, "f1": 0.2}
    )
    moves = {
        "D_offset_ref": {"D_offset_ref": 50.0, "D0_ref": 150.0},
        "v_offset": {"v_offset": 40.0, "v0": 260.0},
        "f2": {"f2": 1.5, "f0": 0.4 * float(np.exp(0.2 * 1.5))},
    }
    reference = np.asarray(heterojax.simulate(base, t, q=0.01, phi=[0.0, 50.0]).c2)
    for name, change in moves.items():
        assert name in [d.parameter for d in degeneracies(base.to_dict(), fixed=())]
        moved = np.asarray(
            heterojax.simulate(base.replace(**change), t, q=0.01, phi=[0.0, 50.0]).c2
        )
        np.testing.assert_allclose(moved, reference, rtol=0, atol=1e-12, err_msg=name)


def test_template_with_estimated_values():
    estimate = heterojax.HeterodyneModel.from_dict(
        {
            "D0_ref": 151.23456,
            "alpha_ref": -0.0123456,
            "D0_sample": 2499.96,
            "alpha_sample": 0.30049,
            "v0": 300.0381,
            "beta": 0.19992,
            "f0": 0.999996,  # rounds to the bound, stays inside
            "f1": 0.0,  # equal to the default: not informed, not marked
            "phi0": 7.123456,
            "D_offset_ref": 12.0,  # never taken from an estimate: held at 0
        }
    ).to_dict()
    estimated = estimated_start(estimate)
    assert estimated == {
        "D0_ref": 151.2,
        "alpha_ref": -0.01235,
        "D0_sample": 2500.0,
        "alpha_sample": 0.3005,
        "v0": 300.0,
        "beta": 0.1999,
        "f0": 1.0,
        "phi0": 7.123,
    }
    text = template("run.h5", estimated=estimated)
    config = validate_config(yaml.safe_load(text))
    for name in heterojax.PARAMETER_NAMES:
        entry = getattr(config.parameters, name)
        line = next(x for x in text.splitlines() if x.startswith(f"  {name}:"))
        if name in estimated:
            assert entry.value == estimated[name] and not entry.fixed, name
            assert "estimated from the data" in line
        else:
            assert entry.value == heterojax.PARAMETERS[name].default, name
            assert "estimated" not in line
        assert entry.fixed == (name in DEFAULT_FIXED), name
    assert config_degeneracies(config) == []


OLD_CONFIG = """
metadata:
  config_version: "2.0.1"
  description: shear cell run
experimental_data:
  file_path: ./data/run7.hdf
  data_folder_path: ""
  file_format: hdf5
  cache_compression: true
analyzer_parameters:
  dt: 0.002
  start_frame: 101
  end_frame: 1100
  scattering:
    wavevector_q: 0.0054
    phi_angles: [0.0, 90.0]
  geometry:
    stator_rotor_gap: 2000000
phi_filtering:
  enabled: true
  target_ranges:
    - {min_angle: -10, max_angle: 10}
parameters:
  reference:
    D0_ref: {value: 15000.0, min: 100.0, max: 1000000.0, vary: true}
    alpha_ref: {value: 0.0, min: -2.0, max: 2.0, vary: false}
  sample:
    D0_sample: {value: 8000.0, min: 100.0, max: 1000000.0, vary: true}
  velocity:
    v_0: {value: 2000.0, vary: true, prior: normal}
  fraction:
    fraction_0: {value: 0.3, vary: true}
  angle:
    angle_phi0: {value: 2.0, min: -10.0, max: 10.0, vary: true}
  scaling:
    contrast: {value: 0.3, min: 0.0, max: 1.0, vary: true}
    offset: {value: 1.0, vary: false}
  other:
    mystery: {value: 1}
optimization:
  method: cmc
  nlsq:
    multistart: true
    multistart_n: 12
    loss: soft_l1
    per_angle_mode: fourier
  cmc:
    per_shard_mcmc:
      num_warmup: 300
      num_samples: 700
      num_chains: 2
      target_accept_prob: 0.9
    validation:
      max_r_hat: 1.05
      min_ess: 200
      max_divergence_rate: 0.1
    combination:
      combination_method: robust_consensus_mc
plotting:
  color_scale: {vmin: 1.0, vmax: 1.5}
output:
  output_dir: ./results
"""


def test_config_import_translates_a_heterodyne_config(tmp_path):
    from heterojax._config._import import import_heterodyne

    raw = yaml.safe_load(OLD_CONFIG)
    old_dir = tmp_path / "old"
    new_dir = tmp_path / "new"
    config, notes, unmapped = import_heterodyne(
        raw, source_dir=str(old_dir), target_dir=str(new_dir)
    )
    checked = validate_config(config, base_dir=new_dir)
    assert checked.data.file == str(old_dir / "data" / "run7.hdf")
    assert checked.data.frames == (101, 1100) and checked.data.dt == 0.002
    assert checked.data.q == 0.0054 and checked.data.phi == [0.0, 90.0]
    p = checked.parameters
    assert p.D0_ref.value == 15000.0 and p.D0_ref.lower == 100.0 and not p.D0_ref.fixed
    assert p.alpha_ref.fixed
    assert p.v0.value == 2000.0 and p.f0.value == 0.3 and p.phi0.value == 2.0
    assert p.phi0.lower == -10.0 and p.phi0.upper == 10.0
    assert checked.scaling.contrast.value == 0.3 and checked.scaling.offset.fixed
    assert checked.scaling.mode == "fourier" and checked.method == "cmc"
    assert checked.nlsq.starts == 12
    c = checked.cmc
    assert (c.warmup, c.samples, c.chains, c.target_accept) == (300, 700, 2, 0.9)
    assert c.thresholds.r_hat == 1.05 and c.thresholds.ess_bulk == 200
    assert c.combine == "consensus"
    assert checked.output.directory == str(new_dir / "results")
    for key in (
        "optimization.nlsq.loss",
        "parameters.velocity.v_0.prior",
        "plotting.color_scale.vmin",
        "parameters.other.mystery.value",
        "optimization.cmc.validation.max_divergence_rate",
        "analyzer_parameters.geometry.stator_rotor_gap",
        "phi_filtering.target_ranges",
    ):
        assert key in unmapped, key
    assert "metadata.description" not in unmapped
    assert any("contrast" in note and "fixed: true" in note for note in notes)
    assert any("config's folder" in note for note in notes)


def test_config_import_legacy_temporal_and_flat_parameters():
    from heterojax._config._import import import_heterodyne

    raw = {
        "experimental_data": {"file_path": "/d/x.h5"},
        "temporal": {"dt": 0.5, "t_start": 9, "time_length": 40},
        "scattering": {"wavevector_q": 0.01},
        "initial_parameters": {
            "parameter_names": ["D0_ref", "v0"],
            "values": [200.0, 50.0],
            "active_parameters": ["v0"],
        },
    }
    config, notes, _ = import_heterodyne(raw)
    checked = validate_config(config)
    assert checked.data.frames == (10, 49) and checked.data.dt == 0.5
    assert checked.parameters.D0_ref.value == 200.0 and checked.parameters.D0_ref.fixed
    assert not checked.parameters.v0.fixed and checked.parameters.beta.fixed
    assert checked.scaling.contrast.fixed is False  # no value: fitted, with a note
    assert any("active_parameters" in n for n in notes)
    assert os.path.isabs(checked.data.file)
