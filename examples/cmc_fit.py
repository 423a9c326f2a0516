"""Posterior of a heterodyne fit by consensus Monte Carlo.

Simulates two maps, fits them by NLSQ, samples the posterior by `fit_cmc` (BlackJAX NUTS on data
shards, consensus combination) warm-started from the NLSQ fit, prints the summary and the
verdict, and saves the draws as an ArviZ NetCDF file.

Run: `python examples/cmc_fit.py` (about a minute on a laptop CPU, most of it compilation).
With `HETEROJAX_EXAMPLE_SMALL=1` (the test suite) the problem and the run are smaller and the
file goes to a temporary directory.
"""

import os
import tempfile

import jax.random as jr
import numpy as np

import heterojax as hj


SMALL = os.environ.get("HETEROJAX_EXAMPLE_SMALL") == "1"


def main() -> None:
    truth = hj.HeterodyneModel.from_dict(
        {"D0_ref": 200.0, "D0_sample": 2e3, "alpha_sample": -0.2, "v0": 60.0, "f0": 0.4}
    )
    n_frames = 32 if SMALL else 60
    t = 0.25 * np.arange(1, n_frames + 1)  # frames 1..N at dt = 0.25 s
    data = hj.simulate(
        truth,
        t,
        q=0.012,
        phi=[0.0, 50.0],
        contrast=[0.3, 0.35],
        offset=1.0,
        noise=0.02,
        key=jr.key(0),
    )

    free = ("D0_sample", "alpha_sample", "v0", "f0")
    fixed = [name for name in hj.PARAMETER_NAMES if name not in free]
    nlsq = hj.fit_nlsq(truth.replace(D0_sample=1.5e3, v0=65.0), data, fixed=fixed, starts=1)

    # Two shards of the used pairs; fixed/bounds/scaling come from the NLSQ fit.
    run = dict(warmup=150, samples=200, progress=False) if SMALL else {}
    result = hj.fit_cmc(nlsq.model, data, nlsq=nlsq, shards=2, key=jr.key(1), **run)
    print(result.summary())

    if not result.verdict.passed:
        for advice in result.verdict.failures:
            print("advice:", advice)
    path = os.path.join(tempfile.mkdtemp() if SMALL else ".", "cmc_posterior.nc")
    try:
        result.save_netcdf(path)
        print(f"draws written to {path} (arviz.from_netcdf reads them)")
    except ImportError:
        print("install arviz to export the draws")


if __name__ == "__main__":
    main()
