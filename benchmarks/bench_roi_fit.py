"""NLSQ with the ROI model against the bin-centre model, on the same data and starts (issue 17, §1).

Prints one JSON object. The data are those of `bench_cmc_roi.py` (its `make_data`): one q ring
cut into eight 45° sectors (wide bins: the sector average dephases the fringes), speckle-level
noise from `hj.simulate_speckle(..., bins=..., correlate=True)`, `--frames` frames, a static
reference (D0_ref = 0 fixed) and D0_sample, v0, f0, phi0 free, a contrast and an offset per
map. Each fit is `fit_nlsq` with the library's defaults (`starts="auto"`), started from a
perturbed truth, once with the ROI model (`roi=None`, the default for data with bins) and once
with the bin centres (`roi=False`), each twice in a row: `cold` includes compiling its
programs, `warm` reuses them. The issue's target is `warm_ratio` = ROI warm / centre warm ≤ 2.

`--aps-file RING` fits one q bin of a correlator-written file instead (the issue's example: 7
maps): `bench_whole_file.py`'s 42-map file (6 q rings × 8 sectors, one empty, written by
`hj.save_aps` with its pixel geometry), read back with `hj.load_aps(path, q=...)` at ring RING
(0–5), its bins rebuilt from the pixels.

Reported per model: wall times (cold, warm), reduced χ², LM steps, the node rule of the ROI
model; then the ratios and the machine's load average.

Usage: `python benchmarks/bench_roi_fit.py [--frames 150] [--pixels 400] [--counts 5] [--v0 20]
[--starts auto|N] [--aps-file RING]` (the issue's example: `--frames 400 --starts 8
--aps-file 2`).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import jax

import heterojax as hj


jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cmc_roi import FREE, TRUTH, make_data  # noqa: E402  (the same problem)


def fit_twice(truth, data, roi: bool, seed: int, starts="auto") -> dict:
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    start = truth.replace(D0_sample=0.7 * TRUTH["D0_sample"], v0=1.1 * TRUTH["v0"], f0=0.5)
    walls, result = [], None
    for _ in range(2):
        began = time.perf_counter()
        result = hj.fit_nlsq(
            start, data, fixed=fixed, scaling="individual", roi=roi, seed=seed, starts=starts
        )
        walls.append(time.perf_counter() - began)
    return {
        "model": "roi" if roi else "bin centre",
        "cold_s": round(walls[0], 2),
        "warm_s": round(walls[1], 2),
        "reduced_chi2": float(result.reduced_chi2),
        "n_steps": int(result.n_steps),
        "success": bool(result.success),
        "bins": None if result.bins is None else result.bins.describe(),
    }


def file_bin(args):
    """The truth and q ring `args.aps_file` of `bench_whole_file.py`'s file, read back."""
    from bench_whole_file import Q_RINGS, make_file

    TRUTH["v0"] = args.v0  # (shared with make_file, as make_data sets it)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "file.h5")
        make_file(path, args)
        data = hj.load_aps(path, q=float(Q_RINGS[args.aps_file]))
    return hj.HeterodyneModel.from_dict(TRUTH), data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--pixels", type=int, default=400, help="pixels per bin")
    parser.add_argument("--counts", type=float, default=5.0, help="mean photons per pixel")
    parser.add_argument("--v0", type=float, default=20.0, help="true flow, Å/s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--starts", default="auto", help="fit_nlsq(starts=...): 'auto' (default) or a number"
    )
    parser.add_argument(
        "--aps-file", type=int, metavar="RING", help="fit q ring RING of a correlator-written file"
    )
    args = parser.parse_args()
    starts = args.starts if args.starts == "auto" else int(args.starts)
    load_before = os.getloadavg()[0]
    truth, data = make_data(args) if args.aps_file is None else file_bin(args)
    roi = fit_twice(truth, data, True, args.seed, starts)
    centre = fit_twice(truth, data, False, args.seed, starts)
    report = {
        "benchmark": "roi_fit",
        "settings": vars(args) | {"free": FREE, "truth": TRUTH, "maps": len(data.phi)},
        "device": str(jax.devices()[0]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "runs": [roi, centre],
        "warm_ratio": round(roi["warm_s"] / centre["warm_s"], 2),
        "cold_ratio": round(roi["cold_s"] / centre["cold_s"], 2),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
