"""`heterojax batch --workers N` against a serial loop in one process (issue 16).

Prints one JSON object. `--files` APS files of `--maps` maps × `--frames` frames are simulated
(one q ring, φ spread over 180°; the same flowing, diffusing sample at a velocity that differs
from file to file) with `heterojax.simulate`, and one config fits them (NLSQ, auto starts,
individual contrast/offset, four physics parameters free, no plots). Then, each in a fresh
interpreter so that both pay their compilations:

- `batch`: `heterojax batch CONFIG FILE... --output DIR --workers N --no-compile-cache`
  (an embedded Dask LocalCluster of N processes);
- `serial`: one Python process fitting the files one after another with the same code path
  (`heterojax._batch._jobs.ConfigJob`), no Dask.

Reported: wall time of each, the speed-up, each dataset's own time (load, fit, save) both
ways and which worker ran it, and the largest difference of any fitted parameter
between the two (relative to its standard error): the same fits, so it should be ~0.

Usage: `python benchmarks/bench_batch.py [--files 8] [--maps 7] [--frames 200] [--workers 2]
[--output FILE]`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax.random as jr
import numpy as np
import pandas as pd
import yaml

import heterojax as hj


FREE = ("D0_ref", "D0_sample", "v0", "f0")
TRUTH = {"D0_ref": 600.0, "D0_sample": 2500.0, "v0": 300.0, "f0": 0.4}
SERIAL = """
import sys, json, time
from heterojax._batch._jobs import ConfigJob, fit_dataset
from heterojax._batch._sources import resolve_sources
from heterojax._cli._batch import batch_config
config, output, files = sys.argv[1], sys.argv[2], sys.argv[3:]
job = ConfigJob(batch_config(config), plots=False)
walls = []
for source in resolve_sources(files):
    began = time.perf_counter()
    fit_dataset(job, source, output, overwrite=True)
    walls.append(time.perf_counter() - began)
print(json.dumps(walls))
"""


def _files(folder: str, n: int, maps: int, frames: int) -> list[str]:
    paths = []
    phi = list(np.linspace(0.0, 180.0, maps, endpoint=False))
    for i in range(n):
        model = hj.HeterodyneModel.from_dict({**TRUTH, "v0": 250.0 + 15.0 * i})
        data = hj.simulate(
            model,
            0.02 * np.arange(1, frames + 1),
            q=0.01,
            phi=phi,
            contrast=0.15,
            offset=1.0,
            noise=0.001,
            key=jr.key(i),
        )
        path = os.path.join(folder, f"run{i:02d}.h5")
        hj.save_aps(path, data, overwrite=True)
        paths.append(path)
    return paths


def _config(folder: str) -> str:
    parameters = {n: {"value": 0.8 * v} for n, v in TRUTH.items()}
    parameters.update({n: {"fixed": True} for n in hj.PARAMETER_NAMES if n not in FREE})
    config = {
        "method": "nlsq",
        "parameters": parameters,
        "scaling": {"mode": "individual"},
        "nlsq": {"starts": "auto"},
        "output": {"plots": False},
    }
    path = os.path.join(folder, "batch.yaml")
    with open(path, "w") as stream:
        yaml.safe_dump(config, stream)
    return path


def _timed(argv: list[str]) -> tuple[float, str]:
    """Wall time of a child process, and its standard output."""
    began = time.perf_counter()
    child = subprocess.run(argv, check=False, stdout=subprocess.PIPE, text=True)
    return time.perf_counter() - began, child.stdout


def _parameters(folder: str, names: list[str]) -> pd.DataFrame:
    rows = []
    for name in names:
        saved = hj.load_result(os.path.join(folder, name))
        rows.append(
            {
                **{n: saved.parameters[n] for n in FREE},
                **{f"{n}_err": saved.errors[n] for n in FREE},
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--maps", type=int, default=7)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = _files(folder, args.files, args.maps, args.frames)
        config = _config(folder)
        batch_dir, serial_dir = os.path.join(folder, "batch"), os.path.join(folder, "serial")
        batch_s, _ = _timed(
            [
                sys.executable,
                "-m",
                "heterojax",
                "batch",
                config,
                *files,
                "--output",
                batch_dir,
                "--workers",
                str(args.workers),
                "--no-compile-cache",
                "-q",
            ]
        )
        os.makedirs(serial_dir)
        serial_s, printed = _timed([sys.executable, "-c", SERIAL, config, serial_dir, *files])
        serial_fits = json.loads(printed.strip().splitlines()[-1])
        table = pd.read_csv(os.path.join(batch_dir, "summary.csv"))
        names = list(table["name"])
        batch, serial = _parameters(batch_dir, names), _parameters(serial_dir, names)
        shift = max(float(np.max(np.abs(batch[n] - serial[n]) / serial[f"{n}_err"])) for n in FREE)
    record = {
        "benchmark": "batch",
        "files": args.files,
        "maps": args.maps,
        "frames": args.frames,
        "workers": args.workers,
        "batch_wall_s": batch_s,
        "serial_wall_s": serial_s,
        "speedup": serial_s / batch_s,
        # Per dataset (load, fit, save): the batch's from summary.csv's wall_s, on its workers.
        "batch_dataset_s": [round(float(v), 1) for v in table["wall_s"]],
        "batch_workers": table["worker"].value_counts().to_dict(),
        "serial_dataset_s": [round(v, 1) for v in serial_fits],
        "statuses": table["status"].value_counts().to_dict(),
        "max_parameter_difference_in_stderr": shift,
        "cpu_count": os.cpu_count(),
        "load_average_end": list(os.getloadavg()),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w") as stream:
            stream.write(text)


if __name__ == "__main__":
    main()
