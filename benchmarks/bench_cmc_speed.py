"""Time to a converged posterior: heterojax `fit_cmc` against heterodyne 2.0.1 `fit_cmc_jax`.

Prints one JSON object. Both packages sample the same simulated data — 3 angles × N² frames
(N = 200 by default), an ageing model with 7 free physics parameters (D0_ref, alpha_ref,
D0_sample, alpha_sample, v0, beta, f0), noise σ = 0.01 known to both — in the same invocation on
the same machine, and each is run with growing numbers of draws per chain until every parameter
has R̂ < 1.01 and bulk ESS ≥ 400. The reported time to target is the wall time (compilation
included, as a user sees it) of the first run that meets it.

- heterojax: `fit_nlsq` (from a perturbed start) then `fit_cmc(nlsq=..., shards="auto")`, joint
  over the three maps, contrast and offset sampled per map (6 more parameters), 4 chains per
  shard, 500 warmup steps. The criterion uses the worst shard (largest R̂, smallest ESS), which is
  stricter than the combined draws' diagnostics (also reported).
- heterodyne 2.0.1 (in its own interpreter, `_predecessor.py`): what its CLI runs — `fit_cmc_jax`
  once per angle on the full N × N matrix, contrast and offset fixed at their true values (its
  CLI freezes them; here they are given the truth, an advantage), warm-started from heterojax's
  NLSQ values and standard errors, its default `CMCConfig` (4 chains, 1500 warmup steps — its
  floor with its default dense mass matrix —, target acceptance 0.9), σ given. Its time is the
  sum over the three angles (the CLI runs them in turn); the criterion must hold for every angle.
  It runs with the XLA flags its import sets (4 host devices, so NumPyro runs the 4 chains in
  parallel, as its users get them). A rung stops at the first angle that misses the target (the
  next rung runs every angle again); the time to target is that of a rung whose three angles
  all meet it.
- Budget (`--budget`, per package): no new rung starts once the package's rungs have taken
  longer than that; a package that has not met the target by then is reported as not converged,
  with the time it spent (a lower bound on its time to target).

Both ladders also report the cumulative time of all their runs. Progress: `fit_cmc` prints a line
to stderr at every tenth of the sampling work (with `chain_method="auto"` on one CPU device the
chains run side by side, one per core, and the line names each running chain and its phase).

Measured (heterojax alone, `--no-predecessor`, 2 cores, the machine otherwise idle): the first
rung (250 draws a chain) meets the target in 61.8 s, R̂ 1.0077, bulk ESS 1 424, no divergence —
one shard sampled on tiles (`shards="auto"` on 2 cores); with K = 3 shards (the size rule alone)
70.2 s, R̂ 1.0097, ESS 1 280, and 94.2 s for one shard on whole maps.

Usage: `python benchmarks/bench_cmc_speed.py [--n-times 200] [--samples 250 500 1000 2000]
[--budget 1500] [--no-predecessor]`. The machine's CPU count and load average are recorded:
on a shared machine timings scale with the load.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.random as jr
import numpy as np

import heterojax as hj


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _predecessor import PredecessorSession, PredecessorUnavailable  # noqa: E402


TRUTH = {
    "D0_ref": 300.0,
    "alpha_ref": 0.2,
    "D0_sample": 1e3,
    "alpha_sample": 0.1,
    "v0": 100.0,
    "beta": 0.2,
    "f0": 0.4,
}
START = {**TRUTH, "D0_ref": 350.0, "D0_sample": 900.0, "v0": 98.0, "f0": 0.42}
PHI = [0.0, 30.0, 60.0]
Q, DT, NOISE, CONTRAST, OFFSET = 0.01, 0.1, 0.01, 0.3, 1.0
TARGET_RHAT, TARGET_ESS = 1.01, 400.0

_PREDECESSOR_CODE = r"""
import time
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import logging
logging.disable(logging.WARNING)
from heterodyne.core.heterodyne_model import HeterodyneModel
from heterodyne.optimization.cmc.config import CMCConfig
from heterodyne.optimization.cmc.core import fit_cmc_jax
from heterodyne.optimization.nlsq.results import NLSQResult

GROUPS = {
    "reference": ["D0_ref", "alpha_ref", "D_offset_ref"],
    "sample": ["D0_sample", "alpha_sample", "D_offset_sample"],
    "velocity": ["v0", "beta", "v_offset"],
    "fraction": ["f0", "f1", "f2", "f3"],
    "angle": ["phi0"],
}
arrays = np.load(payload["npz"])
c2, phis = arrays["c2"], arrays["phi"]
free = payload["free"]
angles = []
for a, phi in enumerate(phis):
    parameters = {
        group: {n: {"value": float(payload["values"][n]), "vary": n in free} for n in names}
        for group, names in GROUPS.items()
    }
    parameters["scaling"] = {
        "contrast": {"value": payload["contrast"], "vary": False},
        "offset": {"value": payload["offset"], "vary": False},
    }
    config = {
        "analyzer_parameters": {
            "dt": payload["dt"], "start_frame": 1, "end_frame": int(c2.shape[-1]),
            "scattering": {"wavevector_q": payload["q"]},
        },
        "parameters": parameters,
    }
    model = HeterodyneModel.from_config(config)
    warm = NLSQResult(
        parameters=np.array([payload["nlsq"][n] for n in free]), parameter_names=list(free),
        success=True, message="heterojax fit_nlsq",
        uncertainties=np.array([payload["nlsq_sd"][n] for n in free]),
    )
    settings = CMCConfig(num_samples=payload["samples"], seed=payload["seed"] + a)
    began = time.perf_counter()
    fit = fit_cmc_jax(model, c2[a], phi_angle=float(phi), config=settings,
                      sigma=payload["sigma"], nlsq_result=warm)
    angles.append({
        "phi": float(phi), "wall_time": time.perf_counter() - began,
        "names": list(fit.parameter_names),
        "mean": [float(x) for x in fit.posterior_mean],
        "sd": [float(x) for x in fit.posterior_std],
        "r_hat": [float(x) for x in fit.r_hat], "ess_bulk": [float(x) for x in fit.ess_bulk],
        "divergences": int(fit.divergences),
        "settings": {"warmup": settings.num_warmup, "chains": settings.num_chains,
                     "target_accept": settings.target_accept_prob,
                     "dense_mass": settings.dense_mass},
        "t_first_last": [float(model.t[0]), float(model.t[-1])],
    })
    # A rung fails as soon as one angle misses the target: the other angles would be run
    # again at the next rung anyway.
    if max(angles[-1]["r_hat"]) >= payload["target_r_hat"] or (
        min(angles[-1]["ess_bulk"]) < payload["target_ess"]
    ):
        break
result = {"angles": angles}
"""


def _log(message: str) -> None:
    print(f"[bench_cmc_speed] {message}", file=sys.stderr, flush=True)


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def simulate(n_times: int):
    model = hj.HeterodyneModel.from_dict(TRUTH)
    t = DT * np.arange(1, n_times + 1)
    return model, hj.simulate(
        model, t, q=Q, phi=PHI, contrast=CONTRAST, offset=OFFSET, noise=NOISE, key=jr.key(0)
    )


def run_heterojax(data, ladder, budget: float) -> dict:
    fixed = [n for n in hj.PARAMETER_NAMES if n not in TRUTH]
    began = time.perf_counter()
    nlsq = hj.fit_nlsq(hj.HeterodyneModel.from_dict(START), data, fixed=fixed, starts=1)
    out = {"nlsq_wall_time": time.perf_counter() - began, "nlsq_values": {}, "runs": []}
    out["nlsq_values"] = dict(zip(nlsq.names, map(float, nlsq.values)))
    spent = 0.0
    for samples in ladder:
        _log(f"heterojax: samples={samples}")
        fit = hj.fit_cmc(
            nlsq.model, data, nlsq=nlsq, key=jr.key(samples), samples=samples, warmup=500
        )
        run = {
            "samples": samples,
            "warmup": fit.warmup,
            "chains": fit.chains,
            "n_shards": fit.n_shards,
            "shard_sizes": fit.shard_sizes.tolist(),
            "n_parameters": len(fit.names),
            "wall_time": fit.wall_time,
            "sampling_time": fit.sampling_time,
            "max_r_hat": max(fit.diagnostics["r_hat"].values()),
            "min_ess_bulk": min(fit.diagnostics["ess_bulk"].values()),
            "combined_max_r_hat": max(fit.combined_diagnostics["r_hat"].values()),
            "combined_min_ess_bulk": min(fit.combined_diagnostics["ess_bulk"].values()),
            "divergences": int(np.sum(fit.diagnostics["divergences"])),
            "verdict_passed": fit.verdict.passed,
            "chain_method": fit.chain_method,
            "mean_tree_depth": float(np.mean(fit.sample_stats["tree_depth"])),
            "max_shard_width_ratio": float(np.max(fit.shard_diagnostics["width_ratio"])),
            "posterior": {n: {"mean": r["mean"], "sd": r["sd"]} for n, r in fit.table().items()},
        }
        run["converged"] = run["max_r_hat"] < TARGET_RHAT and run["min_ess_bulk"] >= TARGET_ESS
        out["runs"].append(run)
        spent += fit.wall_time
        _log(
            f"heterojax: wall={run['wall_time']:.0f}s R̂={run['max_r_hat']:.4f} "
            f"ESS={run['min_ess_bulk']:.0f}"
        )
        if run["converged"] or spent > budget:
            break
    converged = [r for r in out["runs"] if r["converged"]]
    out["time_to_target"] = converged[0]["wall_time"] if converged else None
    out["ladder_total_time"] = spent
    if not converged:
        out["not_converged_reason"] = f"no run up to samples={ladder[-1]} (or the budget) met it"
    out["nlsq_for_predecessor"] = (nlsq.names, nlsq.values, np.sqrt(np.diag(nlsq.covariance)))
    return out


def run_predecessor(data, nlsq_info, ladder, budget: float) -> dict:
    names, values, stderr = nlsq_info
    physics = hj.HeterodyneModel.from_dict(TRUTH).to_dict()
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "c2.npz")
        np.savez(path, c2=np.asarray(data.c2), phi=np.asarray(data.phi))
        payload = {
            "npz": path,
            "values": {n: float(v) for n, v in physics.items()},
            "free": list(TRUTH),
            "contrast": CONTRAST,
            "offset": OFFSET,
            "dt": DT,
            "q": Q,
            "sigma": NOISE,
            "nlsq": {n: float(v) for n, v in zip(names, values) if n in TRUTH},
            "nlsq_sd": {n: float(s) for n, s in zip(names, stderr) if n in TRUTH},
        }
        out = {"runs": []}
        with PredecessorSession() as session:
            out["environment"] = session.run(
                "import os, heterodyne, numpyro, jax\n"
                "result = {'heterodyne': heterodyne.__version__,"
                " 'numpyro': numpyro.__version__, 'jax': jax.__version__,"
                " 'XLA_FLAGS': os.environ.get('XLA_FLAGS'), 'devices': jax.local_device_count()}",
                {},
            )
            spent = 0.0
            for samples in ladder:
                _log(f"heterodyne: samples={samples}")
                request = {
                    **payload,
                    "samples": samples,
                    "seed": 7,
                    "target_r_hat": TARGET_RHAT,
                    "target_ess": TARGET_ESS,
                }
                angles = session.run(_PREDECESSOR_CODE, request)["angles"]
                run = {
                    "samples": samples,
                    "per_angle": angles,
                    "angles_run": len(angles),
                    "wall_time": sum(a["wall_time"] for a in angles),
                    "max_r_hat": max(max(a["r_hat"]) for a in angles),
                    "min_ess_bulk": min(min(a["ess_bulk"]) for a in angles),
                    "divergences": sum(a["divergences"] for a in angles),
                }
                run["converged"] = (
                    len(angles) == len(PHI)
                    and run["max_r_hat"] < TARGET_RHAT
                    and run["min_ess_bulk"] >= TARGET_ESS
                )
                out["runs"].append(run)
                spent += run["wall_time"]
                _log(
                    f"heterodyne: wall={run['wall_time']:.0f}s R̂={run['max_r_hat']:.4f} "
                    f"ESS={run['min_ess_bulk']:.0f}"
                )
                if run["converged"] or spent > budget:
                    break
    converged = [r for r in out["runs"] if r["converged"]]
    out["time_to_target"] = converged[0]["wall_time"] if converged else None
    out["ladder_total_time"] = spent
    if not converged:
        out["not_converged_reason"] = f"no run up to samples={ladder[-1]} (or the budget) met it"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-times", type=int, default=200)
    parser.add_argument("--samples", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument(
        "--predecessor-samples", type=int, nargs="+", default=[250, 500, 1000, 1500]
    )
    parser.add_argument("--budget", type=float, default=1500.0, help="seconds per package")
    parser.add_argument("--no-predecessor", action="store_true")
    args = parser.parse_args()
    report = {
        "benchmark": "cmc_speed",
        "target": {"r_hat_below": TARGET_RHAT, "ess_bulk_at_least": TARGET_ESS},
        "machine": _machine(),
    }
    _, data = simulate(args.n_times)
    report["data"] = {
        "n_times": args.n_times,
        "phi": PHI,
        "q": Q,
        "dt": DT,
        "noise": NOISE,
        "n_points_used": int(data.n_points),
        "truth": TRUTH,
        "free_physics": list(TRUTH),
    }
    heterojax_out = run_heterojax(data, args.samples, args.budget)
    nlsq_info = heterojax_out.pop("nlsq_for_predecessor")
    report["heterojax"] = heterojax_out
    if args.no_predecessor:
        report["predecessor"] = {"skipped": "--no-predecessor"}
    else:
        try:
            report["predecessor"] = run_predecessor(
                data, nlsq_info, args.predecessor_samples, args.budget
            )
        except PredecessorUnavailable as error:
            report["predecessor"] = {"skipped": str(error)}
    ours = report["heterojax"].get("time_to_target")
    theirs = report["predecessor"].get("time_to_target")
    report["speedup"] = theirs / ours if ours and theirs else None
    report["machine"]["load_average_end"] = list(os.getloadavg())
    print(json.dumps(report, indent=2, default=lambda o: np.asarray(o).tolist()))


if __name__ == "__main__":
    main()
