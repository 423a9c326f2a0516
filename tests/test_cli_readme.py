"""The README's Python example runs as written (CMC replaced by a signature check), and its
set-up commands match what CI runs."""

import inspect
import os
import re

from test_cli_helpers import fake_cmc_result

import heterojax


ROOT = os.path.join(os.path.dirname(__file__), "..")


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as stream:
        return stream.read()


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", _readme(), flags=re.S)
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) <= 24
    real = getattr(heterojax, "fit_cmc", None)
    if real is None:
        from heterojax._cmc._fit import fit_cmc as real

    def checked_fit_cmc(*args, **kwargs):
        inspect.signature(real).bind(*args, **kwargs)  # a valid call of the real function
        return fake_cmc_result()

    monkeypatch.setattr(heterojax, "fit_cmc", checked_fit_cmc, raising=False)
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "reduced χ²" in out
    assert (tmp_path / "example-results" / "nlsq.json").exists()
    assert (tmp_path / "example-results" / "maps.png").exists()
    saved = heterojax.load_result(tmp_path / "example-results")
    assert abs(saved.parameters["v0"] - 300.0) < 10.0


def test_readme_commands_match_ci():
    text = _readme()
    commands = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    assert [c.strip() for c in commands] == [
        "python -m pip install -e . && heterojax demo --output demo-output",
        'python -m pip install -e ".[test]" && python -m pytest -q -n 2',
    ]
    ci = os.path.join(ROOT, ".ci", "run")
    if os.path.exists(ci):
        with open(ci, encoding="utf-8") as stream:
            assert "python -m pytest -q -n 2" in stream.read()
