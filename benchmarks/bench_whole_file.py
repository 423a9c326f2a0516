"""A whole correlator-written file fitted jointly, cold (issue 17 §2: 42 maps × 400² in < 60 s).

Prints one JSON object. The file has the layout of an APS 8-ID-I result file: 6 q rings × 8 φ
sectors of 45° with one sector empty (42 maps), each bin drawn on a synthetic detector by
`hj.save_aps` (its q/φ maps and pixel geometry are written, so `load_aps` rebuilds the bins
from the pixels). The maps come from `hj.simulate_speckle(..., bins=..., correlate=True)`:
photon counts of every pixel of each bin, correlated into c2 by the two-time correlator. The
sample is `bench_cmc_roi.py`'s (its `TRUTH` and `FREE`): it flows and diffuses, with a static
reference (D0_ref = 0); D0_sample, v0, f0 and phi0 are free, contrast and offset individual
per map (84 more parameters).

A child interpreter (so that every compilation counts) loads the file with `hj.load_aps`
(timed apart) and fits it with `hj.fit_nlsq(start, data, fixed=..., scaling="individual")`,
the library's defaults otherwise (the ROI model, the default start strategy), from the truth
perturbed by 20–30 %: the **cold** wall time from data in memory to the result. With `--warm`
it then fits again in the same process (the **warm** time: compiled programs reused).
Reported: the times, the time spent compiling and tracing in the cold fit (JAX's own log of
compile events), steps, success, reduced χ², the
model description (node counts), and (fit − truth)/stderr for the free physics parameters.

Usage: `python benchmarks/bench_whole_file.py [--frames 400] [--pixels 400] [--counts 5]
[--seed 0] [--warm] [--output FILE]`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.random as jr
import numpy as np

import heterojax as hj


jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cmc_roi import FREE, TRUTH, truth_z  # noqa: E402  (the same sample, its z-scores)


START = {"D0_sample": 0.7, "v0": 1.2, "f0": 1.3, "phi0": 1.2}  # factors on the truth
Q_RINGS = np.linspace(0.006, 0.011, 6)
Q_WIDTH, PHI_WIDTH, EMPTY_SECTOR = 0.0008, 45.0, 7
DT = 0.05

CHILD = """
import json, logging, sys, time
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
import heterojax as hj
compiled = []
class Compiles(logging.Handler):
    def emit(self, record):
        message = record.getMessage()
        if "Finished XLA compilation" in message or "Finished tracing" in message:
            compiled.append(float(message.rsplit(" in ", 1)[1].split(" sec")[0]))
jax.config.update("jax_log_compiles", True)
logging.getLogger("jax").addHandler(Compiles())
logging.getLogger("jax").setLevel(logging.WARNING)
path, start, fixed = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
began = time.perf_counter()
data = hj.load_aps(path)
load_s = time.perf_counter() - began
model = hj.HeterodyneModel.from_dict(start)
for run in ("cold", "warm")[: 1 + int(sys.argv[4])]:
    began = time.perf_counter()
    result = hj.fit_nlsq(model, data, fixed=fixed, scaling="individual")
    print(json.dumps({
        "run": run, "maps": int(data.c2.shape[0]), "frames": int(data.c2.shape[1]),
        "load_s": load_s, "wall_s": time.perf_counter() - began,
        "compile_and_trace_s": sum(compiled), "n_steps": int(result.n_steps),
        "success": bool(result.success), "reduced_chi2": float(result.reduced_chi2),
        "model": result.model_description,
        "values": dict(zip(result.names, map(float, result.values))),
        "stderr": {n: float(result.stderr[n]) for n in result.names},
        "quality_ok": bool(result.quality.ok), "warnings": list(result.quality.warnings),
        "starts_chi2_above_best": sorted(
            float(c - np.min(result.starts.chi2)) for c in result.starts.chi2
        )[:12],
    }), flush=True)
    compiled.clear()
"""


def make_file(path: str, args) -> None:
    """The 42-map file: 6 q rings × 8 φ sectors, one sector empty, speckle maps, saved."""
    phi_all = -180.0 + PHI_WIDTH * (np.arange(8) + 0.5)
    phi_ring = np.delete(phi_all, EMPTY_SECTOR)
    q = np.repeat(Q_RINGS, phi_ring.size)
    phi = np.tile(phi_ring, Q_RINGS.size)
    bins = hj.BinGeometry.from_widths(q, phi, Q_WIDTH, PHI_WIDTH)
    truth = hj.HeterodyneModel.from_dict(TRUTH)
    t = DT * np.arange(1, args.frames + 1)
    data = hj.simulate_speckle(
        truth, t, q=q, phi=phi, bins=bins, pixels=args.pixels, counts=args.counts,
        contrast=0.3, correlate=True, key=jr.key(args.seed),
    )  # fmt: skip
    hj.save_aps(path, data, overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--pixels", type=int, default=400)
    parser.add_argument("--counts", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warm", action="store_true", help="fit a second time, warm")
    parser.add_argument("--output")
    args = parser.parse_args()
    start = {**TRUTH, **{n: TRUTH[n] * f for n, f in START.items()}}
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "whole_result.hdf")
        began = time.perf_counter()
        make_file(path, args)
        simulate_s = time.perf_counter() - began
        load_before = os.getloadavg()
        child = subprocess.run(
            [
                sys.executable, "-c", CHILD, path, json.dumps(start), json.dumps(fixed),
                str(int(args.warm)),
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    runs = [json.loads(line) for line in child.stdout.strip().splitlines()]
    fit = runs[0]
    z = truth_z(fit["values"], fit["stderr"])
    record = {
        "benchmark": "whole_file",
        "settings": vars(args),
        "simulate_and_save_s": round(simulate_s, 1),
        **{k: v for k, v in fit.items() if k not in ("values", "stderr", "run", "wall_s")},
        "cold_s": fit["wall_s"],
        "warm_s": runs[1]["wall_s"] if len(runs) > 1 else None,
        "target_cold_s": 60.0,
        "physics": {n: round(fit["values"][n], 4) for n in FREE},
        "truth": {n: TRUTH[n] for n in FREE},
        "z": z,
        "cpu_count": os.cpu_count(),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
    }
    text = json.dumps(record, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as stream:
            stream.write(text)


if __name__ == "__main__":
    main()
