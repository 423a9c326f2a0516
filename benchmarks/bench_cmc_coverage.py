"""Calibration of `fit_cmc`: how often the 90 % intervals cover the truth on simulated data.

Prints one JSON object. For each of `--datasets` noise realisations (independent keys) of one
ageing heterodyne model — 2 angles × `--n-times` frames, 5 free physics parameters (D0_ref,
D0_sample, alpha_sample, v0, f0) plus contrast and offset per map (individual scaling), σ = 0.02
known — it runs `fit_nlsq` from a perturbed start, then `fit_cmc(nlsq=...)` with `--shards`
shards (consensus combination), and records for every sampled parameter whether the central
90 % interval of the combined draws (5 % and 95 % quantiles) contains the true value.

For a calibrated posterior each parameter is covered with probability 0.9, so over D datasets
and P parameters the covered fraction is 0.9 ± 0.3/√(D·P) (binomial, ignoring the correlation
between parameters of one dataset); the acceptance band of issue #5 is 75–100 %.

Size: 140 frames of dt = 0.2 s (28 s) and K = 4 give ≈ 4 900 points per shard, where every
shard posterior passes `fit_cmc`'s Gaussian-shard checks (the consensus product is exact only
for Gaussian shards). With 100 frames (≈ 2 500 points per shard) those checks already flag
D0_sample, f0, contrast and offset (shards up to 1.5× wider than their Laplace approximation,
skewness up to 0.67), and much shorter records (48 frames) are well outside that regime (see
`bench_cmc_consensus.py`).

Usage: `python benchmarks/bench_cmc_coverage.py [--datasets 20] [--shards 4] [--n-times 140]`.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.random as jr
import numpy as np

import heterojax as hj


TRUTH = {
    "D0_ref": 300.0,
    "alpha_ref": 0.3,
    "D0_sample": 2e3,
    "alpha_sample": -0.2,
    "v0": 60.0,
    "beta": 0.2,
    "f0": 0.4,
}
FREE = ("D0_ref", "D0_sample", "alpha_sample", "v0", "f0")
CONTRAST = [0.3, 0.35]
OFFSET = [1.0, 1.02]
PHI = [0.0, 50.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, default=20)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--n-times", type=int, default=140)
    parser.add_argument("--warmup", type=int, default=400)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--noise", type=float, default=0.02)
    args = parser.parse_args()

    truth_model = hj.HeterodyneModel.from_dict(TRUTH)
    truth = {name: float(value) for name, value in truth_model.to_dict().items()}
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    t = 0.2 * np.arange(1, args.n_times + 1)
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    records = []
    for d in range(args.datasets):
        data = hj.simulate(
            truth_model,
            t,
            q=0.012,
            phi=PHI,
            contrast=CONTRAST,
            offset=OFFSET,
            noise=args.noise,
            key=jr.key(1000 + d),
        )
        # A start within ~10 % of the truth, as a preceding NLSQ would find it.
        start = truth_model.replace(**{n: truth[n] * (1 + 0.1 * rng.uniform(-1, 1)) for n in FREE})
        nlsq = hj.fit_nlsq(start, data, fixed=fixed, scaling="individual", starts=1)
        fit = hj.fit_cmc(
            nlsq.model,
            data,
            nlsq=nlsq,
            shards=args.shards,
            warmup=args.warmup,
            samples=args.samples,
            key=jr.key(d),
            progress=False,
        )
        values = {**truth}
        for a, phi in enumerate(PHI):
            values[f"contrast[{phi:g}]"] = CONTRAST[a]
            values[f"offset[{phi:g}]"] = OFFSET[a]
        covered, widths = {}, {}
        for p, name in enumerate(fit.names):
            draws = fit.draws[..., p].reshape(-1)
            low, high = np.percentile(draws, [5.0, 95.0])
            covered[name] = bool(low <= values[name] <= high)
            widths[name] = float((high - low) / max(abs(values[name]), 1e-12))
        records.append(
            {
                "dataset": d,
                "covered": covered,
                "relative_width": widths,
                "nlsq_success": bool(nlsq.success),
                "verdict_passed": fit.verdict.passed,
                "verdict": str(fit.verdict),
                "max_shard_width_ratio": float(np.max(fit.shard_diagnostics["width_ratio"])),
                "max_abs_shard_skewness": float(np.max(np.abs(fit.shard_diagnostics["skewness"]))),
                "chain_method": fit.chain_method,
                "max_r_hat": max(fit.diagnostics["r_hat"].values()),
                "min_ess_bulk": min(fit.diagnostics["ess_bulk"].values()),
                "divergences": int(np.sum(fit.diagnostics["divergences"])),
                "wall_time": fit.wall_time,
            }
        )
        print(
            f"[bench_cmc_coverage] dataset {d}: covered {sum(covered.values())}/{len(covered)}"
            f", R̂ ≤ {records[-1]['max_r_hat']:.3f}, {fit.wall_time:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    names = list(records[0]["covered"])
    per_parameter = {n: float(np.mean([r["covered"][n] for r in records])) for n in names}
    hits = [r["covered"][n] for r in records for n in names]
    overall = float(np.mean(hits))
    report = {
        "benchmark": "cmc_coverage",
        "settings": {
            **vars(args),
            "truth": TRUTH,
            "free_physics": list(FREE),
            "phi": PHI,
            "contrast": CONTRAST,
            "offset": OFFSET,
            "interval": "central 90 % of the combined draws",
        },
        "n_parameters": len(names),
        "coverage_overall": overall,
        "coverage_band_expected": [0.75, 1.0],
        "coverage_within_band": 0.75 <= overall <= 1.0,
        "binomial_sd_of_overall": float(np.sqrt(0.9 * 0.1 / len(hits))),
        "coverage_per_parameter": per_parameter,
        "runs_passing_verdict": int(sum(r["verdict_passed"] for r in records)),
        "datasets": records,
        "total_time": time.perf_counter() - began,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "jax": jax.__version__,
        },
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
