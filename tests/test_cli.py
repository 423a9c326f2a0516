"""The `heterojax` command, run in-process through `main([...])`: exit codes, files, messages."""

import os
import shutil

import equinox as eqx
import numpy as np
import pytest
import yaml
from test_cli_helpers import fake_cmc_result, tiny_demo, tiny_fit

import heterojax
from heterojax._cli._main import main
from heterojax._io._results import load_result


def _copy_demo(tmp_path):
    """The tiny demo's data and config in tmp_path, without its results."""
    source = tiny_demo()
    for name in ("demo_data.h5", "demo.yaml"):
        shutil.copy(os.path.join(source, name), tmp_path / name)
    return tmp_path / "demo.yaml"


def test_help_everywhere(capsys):
    for argv in (
        ["--help"],
        ["fit", "--help"],
        ["config", "--help"],
        ["config", "new", "--help"],
        ["config", "check", "--help"],
        ["config", "import", "--help"],
        ["plot", "--help"],
        ["simulate", "--help"],
        ["demo", "--help"],
        ["info", "--help"],
    ):
        assert main(argv) == 0
        text = capsys.readouterr().out
        assert "examples:" in text, argv
    assert main(["fitt", "x.yaml"]) == 2  # argparse usage error
    assert "invalid choice" in capsys.readouterr().err


def test_demo_quick_smoke():
    folder = tiny_demo()
    results = os.path.join(folder, "results")
    for name in (
        "nlsq.json",
        "nlsq.npz",
        "heterojax.log",
        "plots/nlsq_maps.png",
        "plots/nlsq_one_time.png",
        "plots/nlsq_residuals.png",
    ):
        assert os.path.getsize(os.path.join(results, name)) > 0, name
    saved = load_result(results)
    assert saved.info["success"] and saved.info["quality"]["ok"]
    assert saved.info["selection"]["source"].endswith("demo_data.h5")  # read via load_aps
    log = open(os.path.join(results, "heterojax.log"), encoding="utf-8").read()
    assert "NLSQ quality gate: passed" in log and "reduced χ²" in log


def test_fit_writes_results_and_refuses_to_overwrite(tmp_path, capsys):
    config = _copy_demo(tmp_path)
    out = tmp_path / "out"
    assert main(["fit", str(config), "--output", str(out), "--no-plots"]) == 0
    printed = capsys.readouterr()
    assert "reduced χ²" in printed.out
    assert (out / "nlsq.json").exists() and not (out / "plots").exists()
    before = (out / "nlsq.json").read_bytes()
    assert main(["fit", str(config), "--output", str(out), "--no-plots"]) == 2
    error = capsys.readouterr().err
    assert "--overwrite" in error and "nlsq.json" in error and "Traceback" not in error
    assert (out / "nlsq.json").read_bytes() == before
    assert main(["fit", str(config), "--output", str(out), "--no-plots", "--overwrite", "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_quality_gate_failure_exits_1(tmp_path, monkeypatch, capsys):
    config = _copy_demo(tmp_path)
    _, result, _ = tiny_fit()
    failed = eqx.tree_at(lambda r: r.success, result, False)
    monkeypatch.setattr(heterojax, "fit_nlsq", lambda *a, **k: failed)
    out = tmp_path / "gate"
    assert main(["fit", str(config), "--output", str(out), "--no-plots"]) == 1
    assert "quality gate: FAILED" in capsys.readouterr().err
    assert (out / "nlsq.json").exists()  # written all the same


@pytest.mark.parametrize(
    "edit, fragment",
    [
        ({"nlsqq": {}}, "Did you mean 'nlsq'?"),
        (
            {"parameters": {"D0_reff": 1.0}},
            "unknown key 'parameters.D0_reff'. Did you mean 'D0_ref'?",
        ),
        ({"data": {"file": "missing.h5"}}, "missing.h5"),
        ({"data": {"file": "demo_data.h5", "phi": [200.5]}}, "φ"),
        ({"data": {"file": "demo_data.h5", "frames": [1, 999]}}, "999"),
    ],
)
def test_bad_input_exits_2_with_one_message(tmp_path, capsys, edit, fragment):
    config_path = _copy_demo(tmp_path)
    raw = yaml.safe_load(config_path.read_text())
    for key, value in edit.items():
        if isinstance(value, dict) and key in raw:
            raw[key].update(value)
        else:
            raw[key] = value
    config_path.write_text(yaml.safe_dump(raw))
    assert main(["fit", str(config_path), "--no-plots", "--output", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("heterojax: error:")
    assert fragment in error
    assert "Traceback" not in error
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_missing_config_exits_2(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "nope.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "nope.yaml")]) == 2


def test_config_new_check_round_trip(tmp_path, capsys):
    data = os.path.join(tiny_demo(), "demo_data.h5")
    config = tmp_path / "sub" / "fit.yaml"
    config.parent.mkdir()
    assert main(["config", "new", "--data", data, "-o", str(config)]) == 0
    text = config.read_text()
    assert "file: ../" in text or "file: " in text  # relative to the config's folder
    assert main(["config", "check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "2 map(s) × 24 frames" in out
    assert main(["config", "new", "--data", data, "-o", str(config)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    assert main(["config", "new", "-o", "-"]) == 0
    assert "← EDIT" in capsys.readouterr().out
    assert main(["config", "new", "--data", str(tmp_path / "none.h5")]) == 2


def test_config_new_with_data_writes_estimated_starts(tmp_path, capsys):
    from heterojax._config._degeneracy import DEFAULT_FIXED
    from heterojax._config._template import estimated_start

    data_path = os.path.join(tiny_demo(), "demo_data.h5")
    config_path = tmp_path / "fit.yaml"
    assert main(["config", "new", "--data", data_path, "-o", str(config_path)]) == 0
    assert "start values estimated from 2 map(s) × 24 frames" in capsys.readouterr().err
    text = config_path.read_text()
    parameters = yaml.safe_load(text)["parameters"]
    expected = estimated_start(heterojax.estimate_start(heterojax.load(data_path)).to_dict())
    assert {"D0_ref", "D0_sample", "v0", "f0"} <= set(expected)  # the data inform these
    for name in heterojax.PARAMETER_NAMES:
        entry = parameters[name]
        line = next(x for x in text.splitlines() if x.startswith(f"  {name}:"))
        if name in expected:
            assert entry["value"] == expected[name] and not entry["fixed"], name
            assert "estimated from the data" in line
            assert float(f"{entry['value']:.4g}") == entry["value"]  # 4 significant digits
        else:
            assert entry["value"] == heterojax.PARAMETERS[name].default, name
        assert entry["fixed"] == (name in DEFAULT_FIXED), name
    for name in ("D_offset_ref", "D_offset_sample", "v_offset", "f2"):
        assert parameters[name] == {
            "value": 0.0,
            "lower": heterojax.PARAMETERS[name].lower,
            "upper": heterojax.PARAMETERS[name].upper,
            "fixed": True,
        }
    assert yaml.safe_load(text)["nlsq"]["starts"] == "auto"
    assert main(["config", "check", str(config_path)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_config_new_with_unreadable_data_exits_2(tmp_path, capsys):
    garbage = tmp_path / "garbage.h5"
    garbage.write_text("not a data file\n")
    damaged = tmp_path / "damaged.h5"  # an HDF5 file cut short: h5py raises OSError
    source = os.path.join(tiny_demo(), "demo_data.h5")
    damaged.write_bytes(open(source, "rb").read()[:3000])
    for path in (garbage, damaged):
        out = tmp_path / "fit.yaml"
        assert main(["config", "new", "--data", str(path), "-o", str(out)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"heterojax: error: --data {str(path)!r} cannot be read")
        assert "Traceback" not in error and not out.exists()


def test_config_new_falls_back_to_defaults_when_estimation_fails(tmp_path, monkeypatch, capsys):
    def broken(data, model=None):
        raise RuntimeError("no cuts")

    monkeypatch.setattr(heterojax, "estimate_start", broken)
    data_path = os.path.join(tiny_demo(), "demo_data.h5")
    out = tmp_path / "fit.yaml"
    assert main(["config", "new", "--data", data_path, "-o", str(out)]) == 0
    error = capsys.readouterr().err
    assert "warning: could not estimate start values" in error and "no cuts" in error
    parameters = yaml.safe_load(out.read_text())["parameters"]
    for name in heterojax.PARAMETER_NAMES:
        assert parameters[name]["value"] == heterojax.PARAMETERS[name].default
    assert parameters["v_offset"]["fixed"] and not parameters["v0"]["fixed"]


@pytest.mark.parametrize(
    "parameters, named",
    [
        ({"D_offset_ref": {"fixed": False}}, ("D_offset_ref", "D0_ref", "fix D_offset_ref")),
        (
            {"D_offset_sample": {"fixed": False}, "alpha_sample": {"value": 0, "fixed": True}},
            ("D_offset_sample", "D0_sample", "fix D_offset_sample"),
        ),
        ({"v_offset": {"fixed": False}}, ("v_offset", "v0", "fix v_offset")),
        ({"f2": {"fixed": False}}, ("f2", "f0", "fix f2")),
        (
            {"f2": {"fixed": False}, "f1": {"value": 0, "fixed": True}},
            ("f2 is free but has no effect", "fix it"),
        ),
        (
            {"f3": {"fixed": False}, "f1": {"value": 0, "fixed": True}},
            ("f3", "f0", "fix f3"),
        ),
    ],
)
def test_config_check_warns_on_exact_degeneracies(tmp_path, capsys, parameters, named):
    config = tmp_path / "fit.yaml"
    assert main(["config", "new", "-o", str(config)]) == 0
    raw = yaml.safe_load(config.read_text())
    for name, change in parameters.items():
        raw["parameters"][name].update(change)
    config.write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["config", "check", str(config), "--no-data"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, captured.err
    assert all(fragment in warnings[0] for fragment in named), warnings[0]
    assert "warning:" not in captured.out
    # the same config with nothing degenerate left free: no warning
    assert main(["config", "new", "-o", str(config), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["config", "check", str(config), "--no-data"]) == 0
    assert "warning:" not in capsys.readouterr().err


def _simulated_file(path, *, frames: int, dt: float, phi):
    """An APS file of the demo's truth (an ageing, accelerating sample) at this size."""
    import jax.random as jr

    from heterojax._cli._demo import CONTRAST, NOISE, TRUTH, Q

    data = heterojax.simulate(
        heterojax.HeterodyneModel.from_dict(TRUTH),
        dt * np.arange(1, frames + 1),
        q=Q,
        phi=phi,
        contrast=list(CONTRAST[: len(phi)]),
        offset=1.0,
        noise=NOISE,
        key=jr.key(7),
    )
    heterojax.save_aps(path, data)
    return path


def _new_then_fit(tmp_path, data_path):
    config = tmp_path / "fit.yaml"
    assert main(["config", "new", "--data", str(data_path), "-o", str(config), "-q"]) == 0
    out = tmp_path / "results"
    code = main(["fit", str(config), "--output", str(out), "--no-plots", "-q"])
    saved = load_result(out)
    return code, saved


@pytest.mark.slow
def test_config_new_then_fit_succeeds(tmp_path):
    """The CLI's first fit: `config new --data` → `fit` with nothing edited exits 0 with a good
    fit, on a small file (3 angles — two leave (v0, φ0) with two exact solutions — × 40
    frames)."""
    data_path = _simulated_file(tmp_path / "run.h5", frames=40, dt=0.15, phi=[0.0, 40.0, 80.0])
    code, saved = _new_then_fit(tmp_path, data_path)
    info = saved.info
    assert code == 0, f"exit {code}: quality {info['quality']}"
    assert info["success"] and 0.8 < info["reduced_chi2"] < 1.2
    from heterojax._cli._demo import TRUTH

    for name, value in TRUTH.items():  # the canonical labelling: the slower is the reference
        assert abs(saved.parameters[name] - value) < 5 * saved.errors[name], name


@pytest.mark.slow
def test_config_new_then_fit_on_the_demo_file(tmp_path):
    """Issue 12 §5: on the demo's data file (3 angles × 120 frames), `config new` → `fit`
    succeeds with exit 0 and recovers the truth."""
    demo = tmp_path / "demo"
    assert main(["demo", "--output", str(demo), "--no-cmc", "-q"]) == 0
    code, saved = _new_then_fit(tmp_path, demo / "demo_data.h5")
    assert code == 0, f"exit {code}: quality {saved.info['quality']}"
    assert 0.9 < saved.info["reduced_chi2"] < 1.1
    from heterojax._cli._demo import TRUTH

    for name, value in TRUTH.items():  # the canonical labelling: the slower is the reference
        assert abs(saved.parameters[name] - value) < 5 * saved.errors[name], name


def test_config_check_relative_paths_from_elsewhere(tmp_path, monkeypatch, capsys):
    config = _copy_demo(tmp_path)
    monkeypatch.chdir("/")
    assert main(["config", "check", str(config)]) == 0
    assert str(tmp_path / "demo_data.h5") in capsys.readouterr().out


def test_config_import_command(tmp_path, capsys):
    from test_config import OLD_CONFIG

    old = tmp_path / "old.yaml"
    old.write_text(OLD_CONFIG)
    new = tmp_path / "new.yaml"
    assert main(["config", "import", str(old), "-o", str(new)]) == 0
    error = capsys.readouterr().err
    assert "not mapped" in error and "optimization.nlsq.loss" in error
    text = new.read_text()
    assert "#   plotting.color_scale.vmin" in text
    assert main(["config", "check", str(new), "--no-data"]) == 0


def test_simulate_then_plot_data_and_model(tmp_path, capsys):
    config = tmp_path / "sim.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "file": "sim.h5",
                    "q": 0.01,
                    "phi": [0.0, 30.0],
                    "frames": [1, 16],
                    "dt": 0.05,
                },
                "parameters": {"D0_sample": 3000.0, "v0": 400.0},
                "simulate": {"noise": 0.001, "seed": 1},
                "output": {"directory": "out"},
            }
        )
    )
    assert main(["simulate", str(config)]) == 0
    data = heterojax.load_aps(tmp_path / "sim.h5")
    assert data.n_angles == 2 and data.n_times == 16
    np.testing.assert_allclose(np.asarray(data.t), 0.05 * np.arange(1, 17))
    assert main(["simulate", str(config)]) == 2  # exists
    capsys.readouterr()
    assert main(["plot", "data", str(config)]) == 0
    assert main(["plot", "model", str(config)]) == 0
    assert (tmp_path / "out" / "plots" / "data.png").stat().st_size > 1000
    assert (tmp_path / "out" / "plots" / "model.png").stat().st_size > 1000
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"file": "x.h5"}}))
    assert main(["simulate", str(bad)]) == 2
    assert "data.frames" in capsys.readouterr().err


def test_plot_fit_from_saved_results(tmp_path):
    results = os.path.join(tiny_demo(), "results")
    assert main(["plot", "fit", results, "--output", str(tmp_path)]) == 0
    for name in ("nlsq_maps.png", "nlsq_one_time.png", "nlsq_residuals.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert main(["plot", "fit", results, "--output", str(tmp_path)]) == 0  # redrawn, replaced
    assert main(["plot", "fit", str(tmp_path / "nothing")]) == 2


def test_both_methods_with_a_stand_in_cmc(tmp_path, monkeypatch, capsys):
    config = _copy_demo(tmp_path)
    received = {}

    def fake_fit_cmc(model, data, *, key, nlsq, **options):
        received.update(options, nlsq=nlsq, key=key)
        return fake_cmc_result(n_angles=data.n_angles)

    monkeypatch.setattr(heterojax, "fit_cmc", fake_fit_cmc, raising=False)
    out = tmp_path / "both"
    assert main(["fit", str(config), "--method", "both", "--output", str(out)]) == 0
    assert received["nlsq"] is not None and received["chains"] == 2
    assert received["thresholds"].r_hat == 1.05
    for name in (
        "nlsq.json",
        "cmc.json",
        "cmc_samples.npz",
        "plots/cmc_posterior.png",
        "plots/cmc_traces.png",
        "plots/nlsq_maps.png",
    ):
        assert (out / name).exists(), name
    assert load_result(out, method="cmc").info["verdict"]["passed"]


def test_cmc_absent_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import heterojax._cli._pipeline as pipeline

    def missing():
        raise pipeline.BadInput("CMC is not available in this heterojax installation")

    monkeypatch.setattr(pipeline, "cmc_function", missing)
    config = _copy_demo(tmp_path)
    assert main(["fit", str(config), "--method", "cmc", "--output", str(tmp_path / "c")]) == 2
    assert "CMC is not available" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "float64" in out and "jax" in out and "device" in out


def test_sampler_progress_lines_are_parsed(capsys):
    import io

    from heterojax._cli._progress import _SamplerStream

    target = io.StringIO()
    stream = _SamplerStream(target, warmup=10, samples=10, interactive=False)
    stream.write("[heterojax.fit_cmc] warmup: 5/10 ( 50 %)    1.0 s\nsomething else\n")
    stream.close()
    assert target.getvalue() == "something else\n"


def test_sampler_progress_starts_again_over_more_draws(caplog):
    import io
    import logging

    from heterojax._cli._progress import _SamplerStream

    more = "[heterojax.fit_cmc] an ESS 1.33× short of its threshold: 30 more draws per chain"
    target = io.StringIO()
    stream = _SamplerStream(target, warmup=10, samples=10, interactive=True)
    stream.write("[heterojax.fit_cmc] chains: 40/40 steps (100 %)  1.0 s\n")
    stream.write(f"{more} (40 in all)\n")
    assert stream.bar is not None and stream.bar.n == 0 and stream.bar.total == 30
    stream.write("[heterojax.fit_cmc] chains: 30/60 steps ( 50 %)  (chain 1: sampling 15/30)\n")
    assert stream.bar.n == 30 and stream.bar.total == 60
    stream.close()
    assert "CMC an ESS 1.33× short" in target.getvalue()
    # Without a terminal the line goes to the log, and the sampling lines count from 0.
    quiet = _SamplerStream(io.StringIO(), warmup=10, samples=10, interactive=False)
    with caplog.at_level(logging.INFO, logger="heterojax.cli"):
        quiet.write(f"{more} (40 in all)\n[heterojax.fit_cmc] sampling: 30/30 (100 %)  1 s\n")
    assert "30 more draws per chain" in caplog.text and "sampling: 30/30" in caplog.text
    assert quiet.warmup == 0 and quiet.total == 30
    # shards="auto" samples again with fewer shards: warmup and draws, the bar over them again.
    again = "[heterojax.fit_cmc] K = 2 shards are not Gaussian (v0: …): sampling again with K = 1"
    stream = _SamplerStream(io.StringIO(), warmup=10, samples=10, interactive=True)
    stream.write("[heterojax.fit_cmc] chains: 80/80 steps (100 %)  1.0 s\n" + again + "\n")
    assert stream.bar is not None and stream.bar.n == 0 and stream.bar.total == 20
    assert stream.warmup == 10 and stream.bar.desc.startswith("CMC warmup")
    stream.close()


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "heterojax", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and heterojax.__version__ in done.stdout


@pytest.mark.slow
def test_full_demo_end_to_end(tmp_path):
    """The README's demo: 3 angles × 120 frames, NLSQ + short CMC, within 3 minutes on an
    unloaded 2-core machine; truth recovered."""
    import time

    began = time.perf_counter()
    assert main(["demo", "--output", str(tmp_path), "-q"]) == 0
    elapsed = time.perf_counter() - began
    saved = load_result(tmp_path / "results")
    from heterojax._cli._demo import TRUTH

    for name, value in TRUTH.items():
        error = saved.errors.get(name)
        if error is not None:
            assert abs(saved.parameters[name] - value) < 5 * error + 1e-9, name
    assert (tmp_path / "results" / "cmc.nc").exists()
    assert elapsed < 600  # generous: the 3-minute budget is for an unloaded machine


def test_sampler_progress_drives_a_bar_with_eta():
    import io

    from heterojax._cli._progress import _SamplerStream

    target = io.StringIO()
    stream = _SamplerStream(target, warmup=10, samples=10, interactive=True)
    for phase, done in (("warmup", 5), ("warmup", 10), ("sampling", 5), ("sampling", 10)):
        stream.write(f"[heterojax.fit_cmc] {phase}: {done}/10 ({done * 10:3d} %)  1.0 s\n")
    assert stream.bar is not None and stream.bar.n == 20 and stream.bar.total == 20
    assert stream.bar.desc.startswith("CMC sampling")
    stream.close()
    shown = target.getvalue()
    assert "/20 [" in shown and "<" in shown  # tqdm's elapsed<remaining (ETA) field
