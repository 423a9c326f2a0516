"""Saved results: JSON + NPZ round trip, atomic writes, refusal to overwrite."""

import json
import os

import numpy as np
import pytest
from test_cli_helpers import fake_cmc_result, tiny_fit

import heterojax
from heterojax._io._atomic import write_atomically
from heterojax._io._results import load_result, save_result


def test_nlsq_round_trip(tmp_path):
    data, result, config = tiny_fit()
    record = config.model_dump(mode="json")
    paths = save_result(result, data, tmp_path, config=record, seed=7)
    assert sorted(os.path.basename(p) for p in paths) == ["nlsq.json", "nlsq.npz"]
    saved = load_result(tmp_path)
    assert saved.method == "nlsq"
    assert list(saved.parameters) == list(heterojax.PARAMETER_NAMES)
    for name, value in result.parameters().items():
        assert saved.parameters[name] == pytest.approx(value, rel=1e-12)
    for name in result.names:
        expected = float(result.stderr[name])
        if np.isfinite(expected):
            assert saved.errors[name] == pytest.approx(expected, rel=1e-12)
        else:
            assert saved.errors[name] is None
    info = saved.info
    assert info["seed"] == 7 and info["config"] == record
    assert info["reduced_chi2"] == pytest.approx(result.reduced_chi2)
    assert info["quality"]["ok"] == result.quality.ok
    assert info["quality"]["band"] == result.quality.band
    assert set(info["versions"]) >= {"heterojax", "jax", "numpy", "python"}
    assert info["selection"]["source"] == data.metadata["source"]
    assert info["correlation"]["names"] == list(result.names)
    arrays = saved.arrays
    np.testing.assert_array_equal(arrays["c2"], np.asarray(data.c2))
    np.testing.assert_array_equal(arrays["fitted_c2"], np.asarray(result.fitted_c2))
    np.testing.assert_allclose(arrays["residuals"], arrays["c2"] - arrays["fitted_c2"])
    np.testing.assert_array_equal(arrays["t"], np.asarray(data.t))
    np.testing.assert_array_equal(arrays["phi"], np.asarray(data.phi))
    np.testing.assert_array_equal(arrays["mask"], np.asarray(data.mask))
    # JSON: sorted keys, no NaN/Infinity (not JSON)
    text = (tmp_path / "nlsq.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def test_refuses_to_overwrite_and_writes_nothing(tmp_path):
    data, result, _ = tiny_fit()
    save_result(result, data, tmp_path)
    (tmp_path / "nlsq.npz").unlink()  # only the JSON is left; still a refusal, and all-or-none
    before = (tmp_path / "nlsq.json").read_bytes()
    with pytest.raises(FileExistsError, match="nlsq.json.*overwrite"):
        save_result(result, data, tmp_path)
    assert not (tmp_path / "nlsq.npz").exists()
    assert (tmp_path / "nlsq.json").read_bytes() == before
    save_result(result, data, tmp_path, overwrite=True)
    assert (tmp_path / "nlsq.npz").exists()


def test_a_crash_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"

    def crash(temporary):
        with open(temporary, "w") as stream:
            stream.write("{half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomically(target, crash)
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        write_atomically(target, crash, overwrite=True)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_cmc_round_trip(tmp_path):
    data, _, _ = tiny_fit()
    fake = fake_cmc_result(n_angles=data.n_angles)
    paths = save_result(fake, data, tmp_path, seed=3)
    names = {os.path.basename(p) for p in paths}
    assert {"cmc.json", "cmc_samples.npz"} <= names <= {"cmc.json", "cmc_samples.npz", "cmc.nc"}
    saved = load_result(tmp_path, method="cmc")
    assert saved.info["verdict"]["passed"] is True
    assert saved.info["seed"] == 3
    np.testing.assert_array_equal(saved.arrays["draws"], fake.draws)
    np.testing.assert_array_equal(saved.samples["D0_sample"], fake.samples["D0_sample"])
    assert saved.samples["contrast"].shape == fake.samples["contrast"].shape
    assert saved.errors["v0"] == pytest.approx(fake.table()["v0"]["sd"])
    assert load_result(tmp_path).method == "cmc"  # the only record there


def test_load_result_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nlsq.json"):
        load_result(tmp_path, method="nlsq")
    with pytest.raises(ValueError, match="method"):
        load_result(tmp_path, method="mcmc")
    with pytest.raises(TypeError, match="NLSQResult"):
        save_result(object(), tiny_fit()[0], tmp_path)
