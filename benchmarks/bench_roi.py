"""Cost and accuracy of the ROI (bin-averaged) model against the bin-centre model.

Prints one JSON object. For 3 angles × N² (N = 1000 by default) and each bin shape it reports,
in milliseconds, the median (and minimum) of repeated jitted evaluations after warm-up of

- `HeterodyneModel.c2` at the bin centres (the structured point kernel);
- `HeterodyneModel.c2(..., bins=...)` with the rule `BinGeometry.for_model` chooses for 1e-4
  (the structured ROI kernel), with its node count and rank (2 per q node + 2 per node);
- the ROI model at fixed node counts, to show the cost growing linearly with the nodes;
- one forward-mode derivative (jvp) of each, as fits use;

and the accuracy of the ROI model against the exact pixel average: the point model evaluated
at every pixel of each bin (pixels of a synthetic detector, APS q/φ convention) and averaged,
on all pairs of a strided subgrid of the map (every `stride`-th frame, so every lag range is
covered), next to the error of the bin-centre model. The machine's load average is recorded
before and after.

Usage: `python benchmarks/bench_roi.py [--n 1000] [--repeats 10] [--stride 10]`.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import heterojax as hj
from heterojax._data._qmap import pixel_q_phi


# The ageing model of bench_c2 (every law active): q·∫v reaches ~60 rad over 100 s at
# q = 0.005 Å⁻¹, so bins dephase the fringes strongly. PHI are the bin centres.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_c2 import CONTRAST, DT, OFFSET, PARAMETERS, PHI, Q  # noqa: E402


BIN_SHAPES = {  # name: (full relative q width, full φ width in degrees)
    "45deg_q15pct": (0.30, 45.0),
    "10deg_q10pct": (0.20, 10.0),
}
FIXED_NODES = ((1, 1), (2, 4), (4, 8), (8, 16))


def _ms(seconds):
    return {"median_ms": 1e3 * statistics.median(seconds), "min_ms": 1e3 * min(seconds)}


def _time(function, arguments, repeats):
    jax.block_until_ready(function(*arguments))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(function(*arguments))
        times.append(time.perf_counter() - start)
    return _ms(times)


def _pixels(relative_width: float, phi_width: float):
    """Pixel q and φ of each bin on a synthetic detector: 10 keV, 75 µm pixels, 0.1 µm⁻¹… so
    that the bins hold a few thousand pixels each."""
    energy, pixel = 10.0, 0.075
    q_low, q_high = Q * (1 - relative_width / 2), Q * (1 + relative_width / 2)
    distance = 2 * np.pi * energy / 12.398 * pixel / (Q * relative_width / 40)  # ~40 px across
    side = int(2 * q_high / (Q * relative_width / 40)) + 5
    q, phi = pixel_q_phi(
        (side, side),
        beam_center_x=side / 2 + 0.31,
        beam_center_y=side / 2 - 0.27,
        pixel_size=pixel,
        detector_distance=distance,
        energy=energy,
    )
    bins_q, bins_phi = [], []
    for centre in PHI:
        offset = (phi - centre + 180.0) % 360.0 - 180.0
        inside = (q >= q_low) & (q < q_high) & (np.abs(offset) < phi_width / 2)
        bins_q.append(q[inside])
        bins_phi.append(phi[inside])
    return bins_q, bins_phi


def _pixel_average(model, t, bins_q, bins_phi, i, j, chunk=512):
    """The point model at every pixel of each bin, averaged, at the pairs (i, j)."""
    pairs = jax.jit(
        lambda q, phi, c, o: model.c2_pairs(
            t,
            jnp.tile(i, q.shape[0]),
            jnp.tile(j, q.shape[0]),
            jnp.repeat(jnp.arange(q.shape[0]), i.shape[0]),
            q=q,
            phi=phi,
            contrast=c,
            offset=o,
        ).reshape(q.shape[0], -1)
    )
    averages = []
    for a, (q, phi) in enumerate(zip(bins_q, bins_phi)):
        total = np.zeros(i.shape[0])
        for start in range(0, q.size, chunk):
            qs, ps = q[start : start + chunk], phi[start : start + chunk]
            pad = chunk - qs.size  # one compiled shape: pad with the first pixel, weight 0
            values = pairs(
                jnp.asarray(np.pad(qs, (0, pad), mode="edge")),
                jnp.asarray(np.pad(ps, (0, pad), mode="edge")),
                jnp.full(chunk, CONTRAST[a]),
                jnp.full(chunk, OFFSET[a]),
            )
            total += np.asarray(values)[: qs.size].sum(axis=0)
        averages.append(total / q.size)
    return np.stack(averages)


def _environment():
    return {
        "python": sys.version.split()[0],
        "heterojax": hj.__version__,
        "jax": jax.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "devices": [str(d) for d in jax.devices()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="ROI model: cost and accuracy")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--stride", type=int, default=10)
    args = parser.parse_args()
    if not jax.config.read("jax_enable_x64"):
        raise SystemExit("bench_roi compares float64 maps; unset JAX_ENABLE_X64=0.")
    report: dict = {
        "benchmark": "roi",
        "angles": len(PHI),
        "N": args.n,
        "parameters": PARAMETERS,
        "q": Q,
        "dt": DT,
        "phi": PHI,
        "environment": _environment(),
        "load_average_start": list(os.getloadavg()),
        "bins": {},
    }
    model = hj.HeterodyneModel.from_dict(PARAMETERS)
    t = jnp.asarray(DT * np.arange(1, args.n + 1))
    q, phi = jnp.full(len(PHI), Q), jnp.asarray(PHI)
    contrast, offset = jnp.asarray(CONTRAST), jnp.asarray(OFFSET)
    c2 = jax.jit(lambda m, b: m.c2(t, q=q, phi=phi, contrast=contrast, offset=offset, bins=b))
    tangent = jax.tree.map(lambda x: jnp.asarray(0.01) * (1 + jnp.abs(x)), model)
    jvp = jax.jit(lambda m, b: jax.jvp(lambda m_: c2(m_, b), (m,), (tangent,)))
    centre = _time(c2, (model, None), args.repeats)
    report["bin_centre"] = {**centre, "jvp": _time(jvp, (model, None), args.repeats)}
    sub = np.arange(0, args.n, args.stride)
    i, j = (jnp.asarray(x.ravel()) for x in np.meshgrid(sub, sub, indexing="ij"))
    centre_maps = np.asarray(c2(model, None))[:, sub][:, :, sub].reshape(len(PHI), -1)

    for name, (relative_width, phi_width) in BIN_SHAPES.items():
        bins_q, bins_phi = _pixels(relative_width, phi_width)
        geometry = hj.BinGeometry.from_pixels(bins_q, bins_phi, phi_centre=PHI)
        rule = geometry.for_model(model, t)
        assert rule.grid is not None
        n_q, n_phi = rule.grid
        entry: dict = {
            "q_width_relative": relative_width,
            "phi_width_deg": phi_width,
            "pixels_per_bin": [int(x.size) for x in bins_q],
            "nodes": [n_q, n_phi],
            "n_nodes": rule.n_nodes,
            "rank_per_row_block": 2 * n_q + 2 * rule.n_nodes,
            "roi": _time(c2, (model, rule), args.repeats),
            "roi_jvp": _time(jvp, (model, rule), args.repeats),
        }
        entry["roi_over_centre"] = entry["roi"]["median_ms"] / centre["median_ms"]
        entry["fixed_nodes"] = {
            f"{a}x{b}": {
                "n_nodes": a * b,
                **_time(c2, (model, geometry.with_nodes(a, b)), max(3, args.repeats // 2)),
            }
            for a, b in FIXED_NODES
        }
        exact = _pixel_average(model, t, bins_q, bins_phi, i, j)
        roi_maps = np.asarray(c2(model, rule))[:, sub][:, :, sub].reshape(len(PHI), -1)
        entry["accuracy"] = {
            "pairs_checked_per_angle": int(sub.size**2),
            "max_abs_error_roi": float(np.max(np.abs(roi_maps - exact))),
            "max_abs_error_bin_centre": float(np.max(np.abs(centre_maps - exact))),
            "stated_tolerance": 1e-4,
        }
        report["bins"][name] = entry
    report["load_average_end"] = list(os.getloadavg())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
