"""`fit_batch`, `heterojax batch` and `plot_series` on a real Dask `LocalCluster` (2 worker
processes, one thread each); no mocks of Dask."""

import os
import signal
import threading
import time

import jax.random as jr
import numpy as np
import pandas as pd
import pytest
import yaml

import heterojax as hj
from heterojax._batch._sources import BatchSource, resolve_sources
from heterojax._cli._batch import batch_exit_code
from heterojax._cli._main import main


TRUTH = hj.HeterodyneModel.from_dict({"D0_ref": 600.0, "D0_sample": 2500.0, "v0": 300.0, "f0": 0.4})
FREE = ("D0_ref", "D0_sample", "v0", "f0")
FIXED = tuple(n for n in hj.PARAMETER_NAMES if n not in FREE)


def _write(path, v0: float, seed: int, frames: int = 32) -> str:
    data = hj.simulate(
        TRUTH.replace(v0=v0),
        0.15 * np.arange(1, frames + 1),
        q=0.01,
        phi=[0.0, 60.0],
        contrast=0.15,
        offset=1.0,
        noise=0.001,
        key=jr.key(seed),
    )
    hj.save_aps(path, data)
    return str(path)


def _files(folder, speeds=(280.0, 300.0, 320.0)) -> list[str]:
    return [_write(folder / f"run{i}.h5", v0, seed=i) for i, v0 in enumerate(speeds)]


def _bad(folder) -> str:
    path = folder / "broken.h5"
    path.write_text("not an HDF5 file")
    return str(path)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as connected,
    ):
        yield connected


def test_sources_get_distinct_folders():
    sources = resolve_sources(["a/run.h5", "b/run.h5", ("a/run.h5", 0.01), BatchSource("x.h5")])
    assert [s.name for s in sources] == ["run", "run-2", "run_q0.01", "x"]
    with pytest.raises(TypeError, match="BatchSource"):
        resolve_sources([3])
    with pytest.raises(ValueError, match="at least one"):
        resolve_sources([])
    with pytest.raises(ValueError, match="own columns"):
        BatchSource("x.h5", metadata={"status": "fine"})


def test_exit_codes_of_a_batch():
    assert batch_exit_code(["ok", "ok"]) == 0
    assert batch_exit_code(["ok", "quality"]) == 1
    assert batch_exit_code(["ok", "error"]) == 1
    assert batch_exit_code(["error", "error"]) == 2
    assert batch_exit_code([]) == 2


def test_fit_batch_fits_every_file_on_the_cluster_and_resumes(tmp_path, client):
    files = _files(tmp_path) + [_bad(tmp_path)]
    files[1] = BatchSource(files[1], metadata={"shear_rate": 0.5, "sample": "gel"})
    out = tmp_path / "batch"
    options = dict(fixed=FIXED, client=client, output=out, starts=1, progress=False)
    table = hj.fit_batch(files, TRUTH, **options)

    assert list(table["name"]) == ["run0", "run1", "run2", "broken"]
    assert table["shear_rate"].iloc[1] == 0.5 and table["sample"].iloc[1] == "gel"
    assert table["shear_rate"].isna().sum() == 3  # the other sources carry no metadata
    good, bad = table.iloc[:3], table.iloc[3]
    assert list(good["status"]) == ["ok"] * 3, good[["status", "error"]]
    for (_, row), v0 in zip(good.iterrows(), (280.0, 300.0, 320.0)):
        assert abs(row["v0"] - v0) < 5 * row["v0_err"]
        assert 0.8 < row["reduced_chi2"] < 1.2
    assert bad["status"] == "error" and "broken.h5" in bad["error"]
    workers = set(client.scheduler_info()["workers"])
    assert set(good["worker"]) <= workers
    for name in FREE:
        assert {name, f"{name}_err", f"{name}_low90", f"{name}_high90"} <= set(table.columns)
        assert np.all(good[f"{name}_low90"] <= good[name]), name
        assert np.all(good[name] <= good[f"{name}_high90"]), name
    saved = pd.read_csv(out / "summary.csv")
    assert list(saved["status"]) == list(table["status"])
    np.testing.assert_allclose(saved["v0"][:3], table["v0"][:3])
    assert hj.load_result(out / "run1").parameters["v0"] == pytest.approx(good["v0"].iloc[1])

    # A rerun skips what is done (nothing rewritten), refits a dataset left half-written (its
    # worker died between two files), retries what failed, and rebuilds the table.
    written = os.path.getmtime(out / "run0" / "nlsq.json")
    (out / "summary.csv").unlink()
    (out / "run2" / "nlsq.json").unlink()
    again = hj.fit_batch(files, TRUTH, **options)
    assert list(again["skipped"]) == [True, True, False, False]
    assert list(again["status"]) == ["ok", "ok", "ok", "error"]
    assert os.path.getmtime(out / "run0" / "nlsq.json") == written
    np.testing.assert_allclose(again["v0"][:3], table["v0"][:3])
    assert (out / "summary.csv").exists()
    refit = hj.fit_batch(files[:1], TRUTH, **options, overwrite=True)
    assert not refit["skipped"].iloc[0] and refit["status"].iloc[0] == "ok"


def _config(tmp_path) -> str:
    values = TRUTH.to_dict()
    parameters = {n: {"value": float(values[n])} for n in FREE}
    parameters.update({n: {"fixed": True} for n in FIXED})
    config = {
        "method": "nlsq",
        "parameters": parameters,
        "nlsq": {"starts": 1},
        "output": {"plots": False},
    }
    path = tmp_path / "batch.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_cli_batch_writes_a_table_and_exits_by_the_worst_row(tmp_path, client):
    config, files = _config(tmp_path), _files(tmp_path, speeds=(300.0, 310.0))
    address = client.scheduler.address
    argv = ["batch", config, "--scheduler", address, "--no-compile-cache", "-q"]
    assert main([*argv, *files, "--output", str(tmp_path / "a")]) == 0
    table = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert list(table["status"]) == ["ok", "ok"]
    assert {"at_bounds", "ridge", "bound_ridges"} <= set(table.columns)
    assert (tmp_path / "a" / "run1" / "nlsq.json").exists()
    assert (tmp_path / "a" / "run1" / "heterojax.log").exists()
    # One bad file: its row says why, the others finish, exit code 1.
    assert main([*argv, files[0], _bad(tmp_path), "--output", str(tmp_path / "b")]) == 1
    table = pd.read_csv(tmp_path / "b" / "summary.csv")
    assert list(table["status"]) == ["ok", "error"] and "broken.h5" in table["error"][1]
    # Nothing could run: exit code 2.
    assert main([*argv, _bad(tmp_path), "--output", str(tmp_path / "c")]) == 2


@pytest.mark.slow  # two worker processes compile the fit from scratch (~45 s)
def test_a_killed_worker_loses_no_dataset(tmp_path):
    """A worker process killed (SIGKILL) while it fits: Dask reruns its task on a worker that
    is alive (the nanny restarts the dead one), and every dataset ends with its row."""
    from distributed import Client, LocalCluster

    files = _files(tmp_path, speeds=(280.0, 290.0, 300.0, 310.0))
    out = tmp_path / "batch"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        outcome = {}

        def run():
            outcome["table"] = hj.fit_batch(
                files, TRUTH, fixed=FIXED, client=client, output=out, starts=1, progress=False
            )

        thread = threading.Thread(target=run)
        thread.start()
        victim = None
        for _ in range(600):  # wait until a worker is busy with a fit (they compile first)
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                victim = busy[0]
                break
            time.sleep(0.05)
        assert victim is not None
        time.sleep(1.0)
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive()
    table = outcome["table"]
    assert list(table["name"]) == ["run0", "run1", "run2", "run3"]
    assert list(table["status"]) == ["ok"] * 4, table[["status", "error"]]
    assert victim not in set(table["worker"])  # every row came from a worker that survived


def test_plot_series_draws_every_parameter_across_the_batch(tmp_path):
    table = pd.DataFrame(
        {
            "name": ["a", "b", "c", "d"],
            "file": ["/x/a.h5", "/x/b.h5", "/x/c.h5", "/x/d.h5"],
            "status": ["ok", "quality", "ok", "error"],
            "shear_rate": [0.1, 0.2, 0.4, 0.8],
            "v0": [300.0, 310.0, 320.0, np.nan],
            "v0_err": [1.0, 2.0, 1.5, np.nan],
            "f0": [0.4, 0.41, 0.39, np.nan],
            "f0_err": [0.01, 0.01, 0.02, np.nan],
        }
    )
    figure = hj.plot_series(table, path=tmp_path / "series.png")
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["v0", "f0"]
    assert os.path.getsize(tmp_path / "series.png") > 0
    table.to_csv(tmp_path / "summary.csv", index=False)
    numeric = hj.plot_series(tmp_path, x="shear_rate", parameters=["v0"])
    assert numeric.axes[0].get_xlabel() == "shear_rate"
    with pytest.raises(ValueError, match="column"):
        hj.plot_series(table, x="temperature")
