"""NLSQ at the size of a real dataset: 23 angles × 1000² points (23 M) within a 4 GiB peak RSS.

Prints one JSON object. A first child process simulates the maps with heterojax (23 angles
spread over −90…90°, 1000 frames at dt = 0.1 s, q = 0.01 Å⁻¹, every law time-dependent, contrast
varying smoothly with φ, Gaussian noise σ = 0.5 % of the contrast) a few angles at a time into a
float64 `.npy` file (184 MB), so that generating the data does not count against the fit, and the
parent stays small (a child's ru_maxrss starts from its parent's RSS at fork). A second child
then loads that file, fits it with `heterojax.fit_nlsq` (starts=1, from the truth perturbed by
20–30 % in the transport prefactors, D_offset_ref, D_offset_sample, v_offset and f2 fixed, σ per
map known and passed as `sigma`, `scaling="auto"`) and reports

- its own peak resident set size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, KiB on Linux),
  also after loading the data and before the fit;
- the wall time of the fit (data in memory → result, compile included) and the time JAX spent
  tracing, lowering and compiling;
- n_steps, success, reduced χ², the parameters' relative errors and z-scores (fit − truth)/stderr;
- the cost of one LM step, measured separately after the fit (its peak RSS is already recorded):
  one evaluation of the normal equations JᵀJ, Jᵀr, ‖r‖² over all maps, which every step does once.

The machine may be shared: the load average is recorded around the fit. `--max-steps` caps the
solver (the default, 256, is fit_nlsq's own); a capped fit reports `success: false` with the
steps it took, and the report says so.

Usage: `python benchmarks/bench_nlsq_scale.py [--frames 1000] [--angles 23] [--max-steps 256]`.
"""

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


TRUTH = {
    "D0_ref": 200.0,
    "alpha_ref": 0.2,
    "D_offset_ref": 0.0,
    "D0_sample": 2000.0,
    "alpha_sample": -0.3,
    "D_offset_sample": 0.0,
    "v0": 30.0,
    "beta": 0.2,
    "v_offset": 0.0,
    "f0": 0.1,
    "f1": 0.01,  # 1/s: f_s = 0.1·exp(0.01 t) + 0.1 grows from 0.20 to 0.37 over 100 s
    "f2": 0.0,
    "f3": 0.1,
    "phi0": 5.0,
}
START = {**TRUTH, "D0_ref": 250.0, "D0_sample": 1500.0, "v0": 33.0, "f0": 0.13}
FIXED = ("D_offset_ref", "D_offset_sample", "v_offset", "f2")
FREE = tuple(name for name in TRUTH if name not in FIXED)
Q = 0.01  # Å⁻¹
DT = 0.1  # s
NOISE_FRACTION = 0.005  # σ = 0.5 % of each map's contrast
SEED = 0
CHILD_TIMEOUT_S = 14 * 60


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _rss_MiB() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _layout(n_angles: int, n_frames: int) -> dict:
    phi = np.linspace(-90.0, 90.0, n_angles)
    contrast = 0.3 + 0.02 * np.cos(np.deg2rad(2 * phi))
    return {
        "phi": phi.tolist(),
        "t": (DT * np.arange(1, n_frames + 1)).tolist(),
        "contrast": contrast.tolist(),
        "offset": [1.0] * n_angles,
        "sigma": (NOISE_FRACTION * contrast).tolist(),
    }


# ------------------------------------------------------------------------------- parent


def _simulate(path: str, layout: dict, group: int = 4) -> None:
    """Writes the maps to a .npy file, `group` angles at a time (bounded memory).

    Runs in its own child process (`--simulate`): the parent must stay small, because a child's
    ru_maxrss starts from its parent's resident size at fork (Linux folds the old mm's
    high-water mark into it at exec), which would inflate the fit's peak RSS.
    """
    import jax

    import heterojax as hj

    model = hj.HeterodyneModel.from_dict(TRUTH)
    t = np.asarray(layout["t"])
    phi = np.asarray(layout["phi"])
    shape = (phi.size, t.size, t.size)
    maps = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=shape)
    key = jax.random.key(SEED)
    for first in range(0, phi.size, group):
        chunk = slice(first, min(first + group, phi.size))
        data = hj.simulate(
            model,
            t,
            q=Q,
            phi=phi[chunk],
            contrast=np.asarray(layout["contrast"])[chunk],
            offset=np.asarray(layout["offset"])[chunk],
            noise=np.asarray(layout["sigma"])[chunk],
            key=jax.random.fold_in(key, first),
        )
        maps[chunk] = np.asarray(data.c2)
        del data
    maps.flush()
    del maps


# ------------------------------------------------------------------------------- child


def _worker(path: str, layout_path: str, max_steps: int, step_cost: bool) -> None:
    began = time.perf_counter()
    durations = {"trace": 0.0, "lower": 0.0, "compile": 0.0}
    events = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "compile",
    }
    import jax

    def listen(event, seconds, **_):
        if event in events:
            durations[events[event]] += seconds

    jax.monitoring.register_event_duration_secs_listener(listen)
    import heterojax as hj

    layout = json.loads(Path(layout_path).read_text())
    rss_imported = _rss_MiB()
    c2 = np.load(path)
    rss_loaded = _rss_MiB()
    phi, t = np.asarray(layout["phi"]), np.asarray(layout["t"])
    sigma = np.asarray(layout["sigma"])[:, None, None]
    load = _load()
    start = time.perf_counter()
    data = hj.XPCSData(c2, t, q=Q, phi=phi, dt=DT)
    del c2  # the fit's own copy is what counts from here
    result = hj.fit_nlsq(
        hj.HeterodyneModel.from_dict(START),
        data,
        fixed=FIXED,
        sigma=sigma,
        starts=1,
        max_steps=max_steps,
    )
    fit_s = time.perf_counter() - start
    compile_totals = dict(durations)
    rss_fit = _rss_MiB()
    physics = {n: float(v) for n, v in result.model.to_dict().items()}
    relative = {n: abs(physics[n] - TRUTH[n]) / abs(TRUTH[n]) for n in FREE}
    stderr = {n: float(np.asarray(result.stderr[n]).ravel()[0]) for n in FREE}
    contrast_truth, offset_truth = np.asarray(layout["contrast"]), np.asarray(layout["offset"])
    report = {
        "import_s": time.perf_counter() - began - fit_s,
        "fit_s": fit_s,
        "result_wall_time_s": result.wall_time,
        "jax_trace_s": compile_totals["trace"],
        "jax_lower_s": compile_totals["lower"],
        "jax_compile_s": compile_totals["compile"],
        "n_steps": result.n_steps,
        "max_steps": max_steps,
        "capped": result.n_steps >= max_steps,
        "success": result.success,
        "message": result.message,
        "scaling": result.scaling,
        "n_parameters": len(result.names),
        "n_points": result.n_points,
        "chi2": result.chi2,
        "reduced_chi2": result.reduced_chi2,
        "relative_error": relative,
        "rms_relative_error_physics": math.sqrt(sum(v**2 for v in relative.values()) / len(FREE)),
        "z_score": {
            n: (physics[n] - TRUTH[n]) / s for n, s in stderr.items() if s > 0 and math.isfinite(s)
        },
        "max_abs_contrast_error": float(
            np.max(np.abs(np.asarray(result.contrast) - contrast_truth))
        ),
        "max_abs_offset_error": float(np.max(np.abs(np.asarray(result.offset) - offset_truth))),
        "fitted": {n: physics[n] for n in FREE},
        "rss_MiB": {"after_import": rss_imported, "after_load": rss_loaded, "peak_fit": rss_fit},
        "peak_rss_GiB": rss_fit / 1024,
        "load_average": [load, _load()],
        "persistent_cache_dir": jax.config.jax_compilation_cache_dir,
    }
    if step_cost:
        report["step_cost"] = _step_cost(result, data, sigma, durations)
    print(json.dumps(report))


def _step_cost(result, data, sigma, durations) -> dict:
    """Seconds of one normal-equations evaluation (the work of one LM step), warm."""
    import equinox as eqx
    import jax

    from heterojax._fit._problem import build_problem
    from heterojax._fit._scaling import resolve_scaling

    problem, _, _ = build_problem(
        result.model,
        data,
        fixed=FIXED,
        bounds=None,
        scaling=resolve_scaling(result.scaling, np.asarray(data.phi)),
        contrast=np.asarray(result.contrast),
        offset=np.asarray(result.offset),
        sigma=sigma,
    )
    normal = eqx.filter_jit(lambda p, x: p.normal_equations(x))
    x = jax.numpy.asarray(result.values)
    before = durations["compile"]
    began = time.perf_counter()
    jax.block_until_ready(normal(problem, x))
    first = time.perf_counter() - began
    times = []
    for _ in range(2):
        began = time.perf_counter()
        jax.block_until_ready(normal(problem, x))
        times.append(time.perf_counter() - began)
    return {
        "normal_equations_s": min(times),
        "normal_equations_runs_s": times,
        "first_call_s": first,
        "compile_s": durations["compile"] - before,
        "load_average": _load(),
    }


# ------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description="NLSQ at 23 angles × 1000² points")
    parser.add_argument("--angles", type=int, default=23)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--max-steps", type=int, default=256)
    parser.add_argument("--no-step-cost", action="store_true")
    parser.add_argument("--output", help="also write the JSON here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--simulate", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        _simulate(args.simulate[0], json.loads(Path(args.simulate[1]).read_text()))
        return
    if args.worker:
        _worker(*args.worker, max_steps=args.max_steps, step_cost=not args.no_step_cost)
        return

    layout = _layout(args.angles, args.frames)
    report: dict = {
        "benchmark": "nlsq_scale",
        "data": {
            "angles": args.angles,
            "frames": args.frames,
            "points": args.angles * args.frames**2,
            "bytes_float64": 8 * args.angles * args.frames**2,
            "phi_deg": [layout["phi"][0], layout["phi"][-1]],
            "t": "dt * (1, ..., N)",
            "dt_s": DT,
            "q_per_A": Q,
            "contrast": "0.3 + 0.02 cos(2 phi)",
            "offset": 1.0,
            "noise": "sigma = 0.5 % of each map's contrast, known",
        },
        "truth": TRUTH,
        "start": START,
        "fixed": FIXED,
        "environment": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_GiB": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        },
        "load_average_start": _load(),
    }
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "c2.npy")
        layout_path = os.path.join(directory, "layout.json")
        Path(layout_path).write_text(json.dumps(layout))
        began = time.perf_counter()
        command = [sys.executable, __file__, "--simulate", path, layout_path]
        subprocess.run(command, check=True, capture_output=True, text=True)
        report["simulate_s"] = time.perf_counter() - began
        report["parent_rss_MiB"] = _rss_MiB()
        report["file_MB"] = os.path.getsize(path) / 1e6
        command = [sys.executable, __file__, "--worker", path, layout_path]
        command += ["--max-steps", str(args.max_steps)]
        command += ["--no-step-cost"] if args.no_step_cost else []
        began = time.perf_counter()
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            report["heterojax"] = {"error": f"the fit did not finish in {CHILD_TIMEOUT_S} s"}
        else:
            if completed.returncode != 0:
                report["heterojax"] = {
                    "error": (completed.stderr or "").strip().splitlines()[-10:],
                    "returncode": completed.returncode,
                }
            else:
                report["heterojax"] = json.loads(completed.stdout.strip().splitlines()[-1])
        report["child_process_s"] = time.perf_counter() - began
    fit = report["heterojax"]
    if "peak_rss_GiB" in fit:
        report["peak_rss_below_4GiB"] = fit["peak_rss_GiB"] < 4.0
        steps = max(fit["n_steps"], 1)
        report["seconds_per_step_upper_bound"] = (
            fit["fit_s"] - fit["jax_trace_s"] - fit["jax_lower_s"] - fit["jax_compile_s"]
        ) / steps
    report["load_average_end"] = _load()
    text = json.dumps(report, indent=1, default=float)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
