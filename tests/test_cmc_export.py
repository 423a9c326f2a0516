"""The ArviZ export works with ArviZ 0.2x (InferenceData) and 1.x (xarray DataTree).

`_cmc/_export.py` needs no JAX, so besides the installed ArviZ the same checks run in another
interpreter with the other ArviZ line when one is named by `HETEROJAX_OTHER_ARVIZ_PYTHON`
(a Python with ArviZ, xarray and h5netcdf, e.g. a Python ≥ 3.12 venv with `arviz>=1`).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


EXPORT = Path(__file__).resolve().parents[1] / "heterojax" / "_cmc" / "_export.py"

CHECK = textwrap.dedent(
    """
    import importlib.util, sys, tempfile, os
    import numpy as np
    import xarray as xr
    import arviz as az

    spec = importlib.util.spec_from_file_location("_export", sys.argv[1])
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)

    rng = np.random.default_rng(0)
    coords = {"chain": np.arange(2), "draw": np.arange(50), "shard": np.arange(3),
              "angle": np.array([0.0, 60.0])}
    groups = {
        "posterior": xr.Dataset({"v0": (("chain", "draw"), rng.normal(size=(2, 50))),
                                 "contrast": (("chain", "draw", "angle"),
                                              rng.normal(size=(2, 50, 2)))},
                                coords={k: coords[k] for k in ("chain", "draw", "angle")},
                                attrs={"verdict": "PASSED"}),
        "sample_stats": xr.Dataset({"diverging": (("chain", "draw", "shard"),
                                                  np.zeros((2, 50, 3), bool))},
                                   coords={k: coords[k] for k in ("chain", "draw", "shard")}),
        "shard_posterior": xr.Dataset({"v0": (("chain", "draw", "shard"),
                                              rng.normal(size=(2, 50, 3)))},
                                      coords={k: coords[k] for k in ("chain", "draw", "shard")}),
    }
    container = export.inference_container(groups)
    major = export.arviz_major(az)
    assert (type(container).__name__ == "DataTree") == (major >= 1), (major, type(container))
    assert export.group_names(container) == set(groups), export.group_names(container)
    path = os.path.join(tempfile.mkdtemp(), "cmc.nc")
    container.to_netcdf(path)
    loaded = az.from_netcdf(path)
    assert export.group_names(loaded) >= set(groups)
    np.testing.assert_allclose(loaded.posterior["v0"].values, groups["posterior"]["v0"].values)
    assert loaded.shard_posterior["v0"].shape == (2, 50, 3)
    assert loaded.posterior.attrs["verdict"] == "PASSED"
    # The statistics of the installed line read the container.
    summary = az.summary(loaded, var_names=["v0"]) if major < 1 else az.summary(loaded)
    assert len(summary) >= 1
    print("ok", major)
    """
)


def _run(python: str) -> str:
    completed = subprocess.run(
        [python, "-c", CHECK, str(EXPORT)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_export_with_installed_arviz():
    pytest.importorskip("arviz")
    assert "ok" in _run(sys.executable)


@pytest.mark.skipif(
    not os.environ.get("HETEROJAX_OTHER_ARVIZ_PYTHON"),
    reason="set HETEROJAX_OTHER_ARVIZ_PYTHON to a Python with the other ArviZ line",
)
def test_export_with_other_arviz_line():
    assert "ok" in _run(os.environ["HETEROJAX_OTHER_ARVIZ_PYTHON"])
