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
    assert main(["plot", "fit", results, "--output", str(tmp_path)]) == 2
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
