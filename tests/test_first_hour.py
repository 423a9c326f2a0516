"""What a new user meets in the first hour (issue 15): damaged files are bad input for every
command, result files honour the umask, global flags go anywhere, the README's `fit` then
`plot fit` works, the template names nothing the user lacks."""

import contextlib
import os
import shutil
import stat

import numpy as np
import pytest
import yaml
from test_cli_helpers import tiny_demo

import heterojax as hj
from heterojax._cli._main import main
from heterojax._config._template import template
from heterojax._io._atomic import write_atomically, write_text_atomically


REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def damaged_config(tmp_path):
    """A config whose data.file is the tiny demo's APS file cut to 3000 bytes."""
    source = os.path.join(tiny_demo(), "demo_data.h5")
    damaged = tmp_path / "cut.h5"
    damaged.write_bytes(open(source, "rb").read()[:3000])
    return demo_config(tmp_path, file="cut.h5")


def demo_config(folder, **data):
    """The tiny demo's config in `folder`, with `data` keys changed."""
    config = yaml.safe_load(open(os.path.join(tiny_demo(), "demo.yaml"), encoding="utf-8"))
    config["data"].update(data)
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["config", "check", "{config}"],
        ["config", "new", "--data", "{data}", "-o", "{folder}/new.yaml"],
        ["fit", "{config}", "--output", "{folder}/out"],
        ["plot", "data", "{config}", "--output", "{folder}/plots"],
        ["plot", "model", "{config}", "--output", "{folder}/plots"],
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_damaged_file_is_bad_input_for_every_command(damaged_config, command, capsys):
    folder = os.path.dirname(damaged_config)
    argv = [
        part.format(config=damaged_config, data=os.path.join(folder, "cut.h5"), folder=folder)
        for part in command
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("heterojax: error: ") and error.count("\n") == 1, error
    assert "cut.h5" in error and "is truncated: it ends at byte 3,000 of" in error
    assert "internal error" not in error and "Traceback" not in error
    assert "`source`" not in error


def test_cli_messages_name_config_keys(tmp_path, capsys):
    shutil.copy(os.path.join(tiny_demo(), "demo_data.h5"), tmp_path / "demo_data.h5")
    config = demo_config(tmp_path, q=0.5)
    assert main(["config", "check", str(config)]) == 2
    error = capsys.readouterr().err
    assert "data.q" in error and "`q`" not in error and "q_tolerance=" not in error, error


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_result_files_honour_the_umask(tmp_path, mask, mode):
    data = hj.XPCSData(
        np.ones((1, 4, 4)) + np.eye(4), 0.1 * np.arange(1, 5), q=0.01, phi=np.zeros(1), dt=0.1
    )
    with umask(mask):
        written = [
            write_text_atomically(tmp_path / "note.txt", "text\n"),
            write_atomically(tmp_path / "raw.bin", lambda p: open(p, "wb").write(b"1")),
            hj.save_aps(tmp_path / "data.h5", data),
            hj.save_aps(tmp_path / "legacy.h5", data, layout="legacy"),
        ]
        hj.plot_data(data, path=tmp_path / "data.png")
        written.append(str(tmp_path / "data.png"))
    for path in written:
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path


def test_cli_result_files_are_readable_by_others(tmp_path):
    with umask(0o022):
        assert main(["config", "new", "-o", str(tmp_path / "fit.yaml"), "-q"]) == 0
    assert stat.S_IMODE(os.stat(tmp_path / "fit.yaml").st_mode) == 0o644


@pytest.mark.parametrize("where", ["before", "after", "config level"])
def test_global_flags_before_or_after_the_subcommand(tmp_path, capsys, where):
    config = tmp_path / "fit.yaml"
    assert main(["config", "new", "-o", str(config), "-q"]) == 0
    capsys.readouterr()
    argv = {
        "before": ["-q", "config", "check", str(config), "--no-data"],
        "after": ["config", "check", str(config), "--no-data", "-q"],
        "config level": ["config", "-q", "check", str(config), "--no-data"],
    }[where]
    assert main(argv) == 0
    assert capsys.readouterr().out == ""  # -q: no summary
    verbose = {"before": ["-v"], "after": [], "config level": []}[where]
    assert main([*verbose, "config", "check", str(config), "--no-data"]) == 0
    assert "valid" in capsys.readouterr().out
    assert main(["-v", "config", "check", str(config), "--no-data", "-q"]) == 2  # exclusive


def test_fit_then_plot_fit_as_the_readme_shows(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(os.path.join(tiny_demo(), "results"), results)  # what `fit` wrote
    plots = sorted(os.listdir(results / "plots"))
    assert plots and all(name.endswith(".png") for name in plots)
    before = {name: os.stat(results / "plots" / name).st_mtime_ns for name in plots}
    for name in plots:
        os.utime(results / "plots" / name, ns=(0, 0))
    assert main(["plot", "fit", str(results), "-q"]) == 0
    after = {name: os.stat(results / "plots" / name).st_mtime_ns for name in plots}
    assert all(after[name] > 0 for name in plots), (before, after)  # every plot redrawn


@pytest.mark.parametrize("data_file", [None, "run.h5"])
def test_template_names_nothing_the_user_lacks(data_file):
    text = template(data_file, estimated={"v0": 250.0} if data_file else None)
    assert "SPEC" not in text and "§" not in text
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_no_spec_references_in_the_package():
    """SPEC.md is not shipped: docstrings and messages must not send users to it."""
    found = []
    for folder, _, names in os.walk(os.path.join(REPOSITORY, "heterojax")):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                if "SPEC §" in open(path, encoding="utf-8").read():
                    found.append(path)
    assert not found


def test_default_output_folders_are_ignored_by_git():
    ignored = open(os.path.join(REPOSITORY, ".gitignore"), encoding="utf-8").read().split()
    for folder in ("demo-output/", "heterojax-demo/", "heterojax-results/", "example-results/"):
        assert folder in ignored, folder
