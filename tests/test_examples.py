"""Every script in examples/ runs to completion (as a user would run it, in a subprocess).

Scripts read `HETEROJAX_EXAMPLE_SMALL=1` to shrink their problem sizes for this test. The
timeout only guards against hangs; an example's own run time is its author's to keep short.
"""

import os
import pathlib
import subprocess
import sys

import pytest


EXAMPLES = sorted((pathlib.Path(__file__).parent.parent / "examples").glob("*.py"))


def test_examples_exist():
    assert EXAMPLES, "examples/ holds no scripts"


# The CMC example samples for minutes even in small mode, and the file example (~40 s) repeats
# what the README example test and tests/test_cli.py run in the default set: both run with the
# slow tests.
_SLOW_EXAMPLES = {"cmc_fit.py", "fit_from_file.py"}
_CASES = [
    pytest.param(path, marks=pytest.mark.slow) if path.name in _SLOW_EXAMPLES else path
    for path in EXAMPLES
]


@pytest.mark.parametrize("script", _CASES, ids=[path.name for path in EXAMPLES])
def test_example_runs(script):
    environment = os.environ | {"HETEROJAX_EXAMPLE_SMALL": "1", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=script.parent.parent,
        timeout=900,
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
