"""Consensus against full-data NUTS on a problem small enough to sample whole (issue #5, 6a).

Prints one JSON object. On simulated data (2 angles × `--n-times` frames, 4 free physics
parameters plus contrast and offset per map, σ known) it runs, from the same NLSQ fit,

- full-data NUTS: `fit_cmc(shards=1)` — one shard is the whole likelihood with the whole prior;
- consensus Monte Carlo: `fit_cmc(shards=K)` (K = 4 by default), consensus combination,

and reports for every parameter the distance of the consensus mean from the full-data mean in
full-data posterior sds (acceptance: < 0.3) and the ratio of the posterior sds (acceptance: within
25 %), with the Monte Carlo standard error of the full-data mean for scale.

Usage: `python benchmarks/bench_cmc_consensus.py [--n-times 60] [--shards 4] [--samples 2000]`.
"""

import argparse
import json
import os
import sys

import jax
import jax.random as jr
import numpy as np

import heterojax as hj


TRUTH = {"D0_ref": 200.0, "D0_sample": 2e3, "alpha_sample": -0.2, "v0": 60.0, "f0": 0.4}
FREE = ("D0_sample", "alpha_sample", "v0", "f0")


def compare(n_times: int, shards: int, warmup: int, samples: int, seed: int = 0) -> dict:
    """Full-data NUTS and consensus on the same data; the figures of the module docstring."""
    truth = hj.HeterodyneModel.from_dict(TRUTH)
    t = 0.25 * np.arange(1, n_times + 1)
    data = hj.simulate(
        truth,
        t,
        q=0.012,
        phi=[0.0, 50.0],
        contrast=[0.3, 0.35],
        offset=[1.0, 1.02],
        noise=0.02,
        key=jr.key(seed),
    )
    fixed = [n for n in hj.PARAMETER_NAMES if n not in FREE]
    nlsq = hj.fit_nlsq(truth.replace(D0_sample=1.8e3, v0=62.0), data, fixed=fixed)
    settings = dict(nlsq=nlsq, warmup=warmup, samples=samples, progress=False)
    full = hj.fit_cmc(nlsq.model, data, shards=1, key=jr.key(seed + 1), **settings)
    consensus = hj.fit_cmc(nlsq.model, data, shards=shards, key=jr.key(seed + 2), **settings)
    rows = {}
    for name in full.names:
        a, b = full.table()[name], consensus.table()[name]
        rows[name] = {
            "full_mean": a["mean"],
            "full_sd": a["sd"],
            "consensus_mean": b["mean"],
            "consensus_sd": b["sd"],
            "mean_shift_in_sd": abs(b["mean"] - a["mean"]) / a["sd"],
            "sd_ratio": b["sd"] / a["sd"],
            "full_mcse_in_sd": 1 / np.sqrt(a["ess_bulk"]),
        }
    worst_shift = max(r["mean_shift_in_sd"] for r in rows.values())
    worst_ratio = max(abs(r["sd_ratio"] - 1) for r in rows.values())
    return {
        "n_points": int(data.n_points),
        "n_shards": consensus.n_shards,
        "shard_sizes": consensus.shard_sizes.tolist(),
        "parameters": rows,
        "max_mean_shift_in_sd": worst_shift,
        "max_sd_ratio_deviation": worst_ratio,
        "passes": bool(worst_shift < 0.3 and worst_ratio < 0.25),
        "full_verdict": str(full.verdict),
        "consensus_verdict": str(consensus.verdict),
        "full_wall_time": full.wall_time,
        "consensus_wall_time": consensus.wall_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-times", type=int, default=60)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = {
        "benchmark": "cmc_consensus_vs_full",
        "settings": {**vars(args), "truth": TRUTH, "free_physics": list(FREE)},
        "criteria": {"mean_shift_in_sd_below": 0.3, "sd_ratio_within": 0.25},
        **compare(args.n_times, args.shards, args.warmup, args.samples, args.seed),
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "jax": jax.__version__,
        },
    }
    print(json.dumps(report, indent=2))
    print(f"[bench_cmc_consensus] passes: {report['passes']}", file=sys.stderr)


if __name__ == "__main__":
    main()
