"""`heterojax demo`: simulate a realistic measurement, write it as an APS file, fit it.

The measurement is simulated at the level of the detector (`heterojax.simulate_speckle`):
photon counts of every pixel of each (q, φ) bin, correlated into c2 by a two-time correlator,
so its noise is correlated along rows and columns as on a real detector, and the fit estimates
σ and reports errors that account for it (the frame-clustered sandwich).
"""

import logging
import os
import time

import jax.random as jr
import numpy as np
import yaml

import heterojax

from .._config._load import load_config
from .._io._atomic import check_writable, write_text_atomically
from ._logging import Logging
from ._pipeline import RunOptions, planned_files, run_fit


_LOG = logging.getLogger("heterojax.cli")

# A sheared sample: a slowly diffusing reference (q²·D0_ref·T ≈ 0.36 over the window: it decays
# visibly, which is what lets speckle-level data tell it from the flowing component when every
# parameter is free; at D0_ref = 150 they cannot), a faster, superdiffusive flowing component
# (40 % of the scattering, D = 2500·t^0.6) flowing at v = 300·t^0.2 Å/s (accelerating, 300–430
# Å/s over the window); fringes are well sampled (q·v·dt ≤ 0.22 rad per frame) and decay.
# The sample's ageing is what tells the two components apart: with alpha_sample = 0.3 the
# labelling with the roles exchanged (D0_ref 3 400, D0_sample 490, f0 0.58) was only 2.8–3 sd
# of its χ² difference's noise behind (that noise measured over 30 simulated datasets).
TRUTH = {
    "D0_ref": 600.0,
    "D0_sample": 2500.0,
    "alpha_sample": 0.6,
    "v0": 300.0,
    "beta": 0.2,
    "f0": 0.4,
}
FREE = ("D0_ref", "D0_sample", "alpha_sample", "v0", "beta", "f0")
START = {
    "D0_ref": 100.0,
    "D0_sample": 1500.0,
    "alpha_sample": 0.0,
    "v0": 250.0,
    "beta": 0.0,
    "f0": 0.5,
}
# Both sizes span 6 s; the quick one with coarser frames (still q·v·dt < π).
FULL = {
    "frames": 120,
    "dt": 0.05,
    "phi": [0.0, 40.0, 80.0],
    "starts": "auto",
    # The contrast/offset/fraction ridge of three individually scaled maps is narrow: a higher
    # target acceptance than the default 0.9 keeps the short run free of divergences.
    "cmc": {"chains": 2, "warmup": 300, "samples": 300, "target_accept": 0.95},
}
QUICK = {
    "frames": 24,
    "dt": 0.25,
    "phi": [0.0, 60.0],
    "starts": 1,
    "cmc": {"chains": 2, "warmup": 20, "samples": 20},
}
Q = 0.01  # Å⁻¹
CONTRAST = (0.15, 0.14, 0.13)
# Detector-level noise: 8000 pixels per bin at 10 photons per pixel per frame gives c2 noise
# σ ≈ 0.0025 per entry (≈ 2 % of the contrast), correlated across each frame's row and column.
PIXELS = 8000
COUNTS = 10.0
SEED = 2
NOISE = 0.0007  # the same noise level for Gaussian stand-ins (tests of the CLI's first fit)


def _config(size: dict, with_cmc: bool) -> tuple[str, dict]:
    parameters = {}
    for name in heterojax.PARAMETER_NAMES:
        if name in FREE:
            parameters[name] = {"value": START[name]}
        else:
            parameters[name] = {
                "value": heterojax.PARAMETERS[name].default if name not in TRUTH else TRUTH[name],
                "fixed": True,
            }
    config = {
        "method": "both" if with_cmc else "nlsq",
        "data": {"file": "demo_data.h5", "diagonal": "interpolate"},
        "parameters": parameters,
        "nlsq": {"starts": size["starts"], "seed": 0},
        "cmc": {
            **size["cmc"],
            "seed": 0,
            # A short demonstration run: thresholds for its 600 draws, not for real analyses.
            "thresholds": {"r_hat": 1.05, "ess_bulk": 100, "ess_tail": 100},
        },
        "output": {"directory": "results", "plots": True},
    }
    truth = ", ".join(f"{k} = {v:g}" for k, v in TRUTH.items())
    header = (
        "# heterojax demo configuration (written by `heterojax demo`).\n"
        f"# The data were simulated with {truth}\n"
        f"# (other parameters at their defaults) as photon counts on {PIXELS} pixels per bin at\n"
        f"# {COUNTS:g} photons per pixel and frame, correlated into c2; σ is estimated from the\n"
        "# maps. The values below are the fit's starts.\n"
        "# The short CMC run uses relaxed thresholds; keep the defaults for real analyses.\n"
        "# Rerun with: heterojax fit demo.yaml --overwrite\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False), config


def run_demo(args, logs: Logging) -> int:
    """Simulates, saves (APS NeXus layout), reloads through the real loader, fits, plots."""
    began = time.perf_counter()
    size = QUICK if args.quick else FULL
    directory = os.path.abspath(args.output)
    with_cmc = not args.no_cmc and (
        getattr(heterojax, "fit_cmc", None) is not None or _cmc_importable()
    )
    text, config = _config(size, with_cmc)
    data_path = os.path.join(directory, "demo_data.h5")
    config_path = os.path.join(directory, "demo.yaml")
    methods = ("nlsq", "cmc") if with_cmc else ("nlsq",)
    check_writable(
        [data_path, config_path, *planned_files(os.path.join(directory, "results"), methods, True)],
        overwrite=args.overwrite,
    )
    os.makedirs(directory, exist_ok=True)
    truth = heterojax.HeterodyneModel.from_dict(TRUTH)
    t = size["dt"] * np.arange(1, size["frames"] + 1)
    phi = size["phi"]
    data = heterojax.simulate_speckle(
        truth,
        t,
        q=Q,
        phi=phi,
        key=jr.key(SEED),
        pixels=PIXELS,
        counts=COUNTS,
        contrast=list(CONTRAST[: len(phi)]),
        correlate=True,
    )
    heterojax.save_aps(data_path, data, overwrite=args.overwrite)
    write_text_atomically(config_path, text, overwrite=args.overwrite)
    _LOG.info(
        f"demo: wrote {data_path} ({len(phi)} angles × {size['frames']} frames, {PIXELS} pixels "
        f"per bin at {COUNTS:g} photons) and {config_path}"
    )
    code = run_fit(load_config(config_path), RunOptions(overwrite=args.overwrite), logs)
    _LOG.info(
        f"demo finished in {time.perf_counter() - began:.0f} s: results and plots in "
        f"{os.path.join(directory, 'results')}"
    )
    return code


def _cmc_importable() -> bool:
    try:
        from .._cmc._fit import fit_cmc  # noqa: F401
    except ImportError:
        return False
    return True
