"""Speed of c2 for several angles: heterojax (structured and direct) against heterodyne 2.0.1.

Prints one JSON object. For each grid size N and three angles it reports, in milliseconds, the
median (and minimum) of repeated jitted evaluations after warm-up of

- heterojax `HeterodyneModel.c2(method="structured")` and `method="direct"`, float64;
- heterodyne 2.0.1 `compute_c2_heterodyne` called once per angle ("loop") and
  `compute_c2_heterodyne_multiphi` ("multiphi"), in its own interpreter (`_predecessor.py`);

plus the speed-up of the structured kernel over the faster of the two heterodyne variants, the
largest difference between the two packages' maps on identical inputs, first-call (trace and
compile) times, XLA's memory analysis of the compiled c2 (temporary buffers counted in N×N float64
arrays per angle), the time of merely writing an output of that shape (`write_floor`) and of
writing it by one fused rank-9 product offset + Σ_k row_k(t1)·column_k(t2) (`rank_k_floor`, with
`structured_over_rank_k_floor`, issue 17 §4: target ≤ 1.5), the cost
of forward-mode (jvp) and reverse-mode (gradient of the summed maps) derivatives through both
kernels, and float32 timings and accuracy (a child process run with `JAX_ENABLE_X64=0`).

Both packages run in the same invocation, on the same machine, with the same `XLA_FLAGS` (the
predecessor's own import-time additions are undone) and default thread settings; timing rounds of
the two interpreters alternate, so background load affects both alike. The machine's CPU count,
affinity and load average are recorded. When no Python >= 3.12 is available the heterodyne
figures are replaced by `{"skipped": reason}`.

Usage: `python benchmarks/bench_c2.py [--sizes 500 1000 2000] [--repeats 30]`.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import heterojax as hj


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _predecessor import PredecessorSession, PredecessorUnavailable  # noqa: E402


# An ageing model with every law active, inside the well-conditioned region (SPEC §2): the
# sample fraction stays within [0.25, 0.75], where heterodyne's soft clip of f_s is the identity
# to ~1e-8, and phases per frame stay far below π (no aliasing).
PARAMETERS = {
    "D0_ref": 300.0,
    "alpha_ref": 0.7,
    "D_offset_ref": 20.0,
    "D0_sample": 2e3,
    "alpha_sample": -0.4,
    "D_offset_sample": 50.0,
    "v0": 40.0,
    "beta": 0.3,
    "v_offset": -15.0,
    "f0": 0.2,
    "f1": 0.004,
    "f2": 50.0,
    "f3": 0.3,
    "phi0": 17.0,
}
Q = 0.005  # Å⁻¹
DT = 0.1  # s
PHI = (0.0, 45.0, 90.0)  # deg
# Issue 17 §4: c2 within 1.5× of writing the maps by one rank-k product (the issue used k = 9).
RANK_FLOOR = 9
CONTRAST = (0.3, 0.4, 0.5)
OFFSET = (1.0, 1.02, 0.98)


def _grid(n: int) -> np.ndarray:
    # Frames are 1-based: frame k sits at t = k·dt (SPEC §2).
    return DT * np.arange(1, n + 1, dtype=np.float64)


def _ms(seconds: list[float]) -> dict[str, float]:
    return {
        "median_ms": 1e3 * statistics.median(seconds),
        "min_ms": 1e3 * min(seconds),
        "runs": len(seconds),
    }


def _time_calls(function, number: int) -> list[float]:
    times = []
    for _ in range(number):
        start = time.perf_counter()
        jax.block_until_ready(function())
        times.append(time.perf_counter() - start)
    return times


def _arrays_per_angle(n_bytes: float, n: int, itemsize: int) -> float:
    return n_bytes / (len(PHI) * n * n * itemsize)


def _c2_function(method: str):
    def c2(model, t, q, phi, contrast, offset):
        return model.c2(t, q=q, phi=phi, contrast=contrast, offset=offset, method=method)

    return jax.jit(c2)


def _heterojax_case(n: int):
    model = hj.HeterodyneModel.from_dict(PARAMETERS)
    arguments = (
        model,
        jnp.asarray(_grid(n)),
        jnp.full(len(PHI), Q),
        jnp.asarray(PHI),
        jnp.asarray(CONTRAST),
        jnp.asarray(OFFSET),
    )
    return model, arguments


def _compiled(function, arguments):
    """The function's first-call costs and XLA's memory analysis; returns (info, output)."""
    start = time.perf_counter()
    lowered = function.lower(*arguments)
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    output = jax.block_until_ready(compiled(*arguments))
    memory = compiled.memory_analysis()
    info = {"trace_s": traced - start, "compile_s": done - traced}
    if memory is not None:
        info["temp_bytes"] = int(memory.temp_size_in_bytes)
        info["output_bytes"] = int(memory.output_size_in_bytes)
    return info, compiled, output


# ------------------------------------------------------------------------------- heterodyne

_PREDECESSOR_SETUP = r"""
import os, sys, time
import numpy as np
import heterodyne
from heterodyne.core.jax_backend import compute_c2_heterodyne, compute_c2_heterodyne_multiphi
import jax
restore_xla_flags()  # before JAX's first computation: heterojax's XLA settings, not heterodyne's
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp

_p = payload
params = jnp.asarray(_p["params"])
t = jnp.asarray(np.load(_p["grid"])["t"])
q, dt = float(_p["q"]), float(_p["dt"])
phi = [float(x) for x in _p["phi"]]
contrast = [float(x) for x in _p["contrast"]]
offset = [float(x) for x in _p["offset"]]
phi_array, contrast_array, offset_array = map(jnp.asarray, (phi, contrast, offset))

def _loop():
    # What a user of heterodyne does for several angles: one call per angle.
    return [
        compute_c2_heterodyne(params, t, q, dt, a, c, o) for a, c, o in zip(phi, contrast, offset)
    ]

def _multiphi():
    return compute_c2_heterodyne_multiphi(params, t, q, dt, phi_array, contrast_array, offset_array)

variants = {"loop": _loop, "multiphi": _multiphi}
first_call_s = {}
for _name, _f in variants.items():
    _start = time.perf_counter()
    jax.block_until_ready(_f())
    first_call_s[_name] = time.perf_counter() - _start
np.savez(
    _p["output"], loop=np.stack([np.asarray(x) for x in _loop()]), multiphi=np.asarray(_multiphi())
)
_memory = jax.jit(compute_c2_heterodyne_multiphi).lower(
    params, t, q, dt, phi_array, contrast_array, offset_array
).compile().memory_analysis()
result = {
    "first_call_s": first_call_s,
    "multiphi_jit_temp_bytes": None if _memory is None else int(_memory.temp_size_in_bytes),
    "environment": {
        "python": sys.version.split()[0],
        "heterodyne": heterodyne.__version__,
        "jax": jax.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "devices": [str(d) for d in jax.devices()],
    },
}
"""

_PREDECESSOR_TIME = r"""
_f = variants[payload["variant"]]
_times = []
for _ in range(payload["number"]):
    _start = time.perf_counter()
    jax.block_until_ready(_f())
    _times.append(time.perf_counter() - _start)
result = {"times": _times}
"""


# ------------------------------------------------------------------------------- derivatives


def _derivative_costs(n: int, repeats: int) -> dict:
    """jvp (one tangent), vjp of the summed maps (as asked), and vjp of a least-squares loss
    against data passed in as an argument (a cotangent XLA cannot constant-fold, as in fits)."""
    model, arguments = _heterojax_case(n)
    rest = arguments[1:]
    tangent = jax.tree.map(lambda x: jnp.asarray(0.01) * (1 + jnp.abs(x)), model)
    data = _c2_function("direct")(*arguments) + 0.01 * jax.random.normal(
        jax.random.key(0), (len(PHI), n, n)
    )
    report = {}
    for method in ("structured", "direct"):
        c2 = _c2_function(method)
        jvp = jax.jit(lambda m, v: jax.jvp(lambda m_: c2(m_, *rest), (m,), (v,)))
        grad = jax.jit(jax.grad(lambda m: jnp.sum(c2(m, *rest))))
        loss = jax.jit(jax.grad(lambda m, d: 0.5 * jnp.sum((c2(m, *rest) - d) ** 2)))
        entry = {}
        cases = (
            ("jvp", jvp, (model, tangent)),
            ("vjp", grad, (model,)),
            ("vjp_least_squares", loss, (model, data)),
        )
        for name, function, args in cases:
            info, compiled, output = _compiled(function, args)
            finite = all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(output))
            entry[name] = {
                **_ms(_time_calls(lambda: compiled(*args), repeats)),
                "first_call_s": info["trace_s"] + info["compile_s"],
                "temp_arrays_per_angle": _arrays_per_angle(info.get("temp_bytes", 0), n, 8),
                "finite": finite,
            }
        report[method] = entry
    for name in ("jvp", "vjp", "vjp_least_squares"):
        report[f"{name}_structured_over_direct"] = (
            report["structured"][name]["median_ms"] / report["direct"][name]["median_ms"]
        )
    return report


# ------------------------------------------------------------------------------- float32


def _float32_worker(sizes: list[int], repeats: int, directory: str) -> None:
    """Child process (JAX_ENABLE_X64=0): float32 maps and timings, saved for the parent."""
    report: dict = {"x64": bool(jax.config.read("jax_enable_x64"))}
    for n in sizes:
        _, arguments = _heterojax_case(n)
        entry = {}
        for method in ("structured", "direct"):
            _, compiled, output = _compiled(_c2_function(method), arguments)
            entry[method] = {**_ms(_time_calls(lambda: compiled(*arguments), repeats))}
            entry[method]["dtype"] = str(output.dtype)
            np.save(os.path.join(directory, f"{method}-{n}.npy"), np.asarray(output))
        report[str(n)] = entry
    print(json.dumps(report))


def _float32_report(sizes, repeats, reference: dict[int, np.ndarray]) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        environment = {**os.environ, "JAX_ENABLE_X64": "0"}
        command = [sys.executable, __file__, "--float32-worker", directory]
        command += ["--repeats", str(repeats), "--sizes", *map(str, sizes)]
        completed = subprocess.run(command, capture_output=True, text=True, env=environment)
        if completed.returncode != 0:
            return {"error": (completed.stderr or "").strip().splitlines()[-5:]}
        report = json.loads((completed.stdout or "").strip().splitlines()[-1])
        for n in sizes:
            for method in ("structured", "direct"):
                values = np.load(os.path.join(directory, f"{method}-{n}.npy")).astype(np.float64)
                report[str(n)][method]["max_abs_diff_vs_float64"] = float(
                    np.max(np.abs(values - reference[n]))
                )
    return report


# ------------------------------------------------------------------------------- main


def _environment() -> dict:
    return {
        "python": sys.version.split()[0],
        "heterojax": hj.__version__,
        "jax": jax.__version__,
        "x64": bool(jax.config.read("jax_enable_x64")),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
        "devices": [str(d) for d in jax.devices()],
    }


def _load() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def main() -> None:
    parser = argparse.ArgumentParser(description="c2 speed: heterojax against heterodyne 2.0.1")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per variant (>= 20)")
    parser.add_argument("--rounds", type=int, default=6, help="alternations of the two packages")
    parser.add_argument("--derivative-repeats", type=int, default=10)
    parser.add_argument("--no-predecessor", action="store_true")
    parser.add_argument("--no-derivatives", action="store_true")
    parser.add_argument("--no-float32", action="store_true")
    parser.add_argument("--float32-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.float32_worker:
        _float32_worker(args.sizes, args.repeats, args.float32_worker)
        return
    if not jax.config.read("jax_enable_x64"):
        raise SystemExit("bench_c2 compares float64 maps; unset JAX_ENABLE_X64=0.")

    report: dict = {
        "benchmark": "c2",
        "angles": len(PHI),
        "parameters": PARAMETERS,
        "q": Q,
        "dt": DT,
        "phi": PHI,
        "grid": "t = dt * (1, ..., N)",
        "environment": _environment(),
        "load_average_start": _load(),
        "sizes": {},
    }
    session = None
    if args.no_predecessor:
        report["predecessor"] = {"skipped": "--no-predecessor"}
    else:
        try:
            session = PredecessorSession()
        except PredecessorUnavailable as error:
            report["predecessor"] = {"skipped": str(error)}

    per_round = max(1, -(-args.repeats // args.rounds))
    reference = {}
    try:
        with tempfile.TemporaryDirectory() as directory:
            for n in args.sizes:
                _, arguments = _heterojax_case(n)
                entry: dict = {"N": n}
                compiled, outputs = {}, {}
                for method in ("structured", "direct"):
                    info, compiled[method], outputs[method] = _compiled(
                        _c2_function(method), arguments
                    )
                    entry[method] = {
                        "first_call_s": info["trace_s"] + info["compile_s"],
                        "trace_s": info["trace_s"],
                        "compile_s": info["compile_s"],
                        "temp_arrays_per_angle": _arrays_per_angle(info.get("temp_bytes", 0), n, 8),
                        "output_arrays_per_angle": _arrays_per_angle(
                            info.get("output_bytes", 0), n, 8
                        ),
                    }
                reference[n] = np.asarray(outputs["structured"])
                entry["max_abs_diff_structured_vs_direct"] = float(
                    jnp.max(jnp.abs(outputs["structured"] - outputs["direct"]))
                )

                predecessor_output = None
                if session is not None:
                    grid_file = os.path.join(directory, f"grid-{n}.npz")
                    output_file = os.path.join(directory, f"heterodyne-{n}.npz")
                    np.savez(grid_file, t=_grid(n))
                    setup = session.run(
                        _PREDECESSOR_SETUP,
                        {
                            "params": [PARAMETERS[name] for name in hj.PARAMETER_NAMES],
                            "grid": grid_file,
                            "q": Q,
                            "dt": DT,
                            "phi": PHI,
                            "contrast": CONTRAST,
                            "offset": OFFSET,
                            "output": output_file,
                        },
                    )
                    report.setdefault("predecessor", {"environment": setup["environment"]})
                    predecessor_output = np.load(output_file)
                    entry["heterodyne"] = {
                        "first_call_s": setup["first_call_s"],
                        "multiphi_jit_temp_arrays_per_angle": None
                        if setup["multiphi_jit_temp_bytes"] is None
                        else _arrays_per_angle(setup["multiphi_jit_temp_bytes"], n, 8),
                    }

                # The floor: writing the output alone (a jitted fill of the same shape; for large
                # maps the first touch of a fresh output buffer is most of it).
                fill = jax.jit(
                    lambda o, n=n: jnp.broadcast_to(o[:, None, None], (len(PHI), n, n)) + 0.0
                )
                jax.block_until_ready(fill(arguments[-1]))
                compiled["write_floor"] = lambda *a: fill(a[-1])
                # The floor of issue 17 §4: the same output written by one fused rank-k product,
                # offset + Σ_k row_k(t1) · column_k(t2) with k = RANK_FLOOR per angle.
                factors = jnp.asarray(
                    np.random.default_rng(0).normal(size=(2, len(PHI), RANK_FLOOR, n))
                )
                rank_k = jax.jit(
                    lambda o, f: o[:, None, None] + jnp.einsum("akt,aks->ats", f[0], f[1])
                )
                jax.block_until_ready(rank_k(arguments[-1], factors))
                compiled["rank_k_floor"] = lambda *a, f=factors: rank_k(a[-1], f)
                # Alternate the packages round by round so that load changes hit both alike.
                local = ("structured", "direct", "write_floor", "rank_k_floor")
                names = (*local, "loop", "multiphi")
                times: dict[str, list[float]] = {name: [] for name in names}
                for _ in range(args.rounds):
                    for method in local:
                        times[method] += _time_calls(
                            lambda m=method: compiled[m](*arguments), per_round
                        )
                    if session is not None:
                        for variant in ("loop", "multiphi"):
                            times[variant] += session.run(
                                _PREDECESSOR_TIME, {"variant": variant, "number": per_round}
                            )["times"]
                for method in ("structured", "direct"):
                    entry[method].update(_ms(times[method]))
                entry["write_floor"] = _ms(times["write_floor"])
                entry["rank_k_floor"] = {"rank": RANK_FLOOR, **_ms(times["rank_k_floor"])}
                entry["structured_over_rank_k_floor"] = statistics.median(
                    times["structured"]
                ) / statistics.median(times["rank_k_floor"])

                if session is not None and predecessor_output is not None:
                    for variant in ("loop", "multiphi"):
                        entry["heterodyne"][variant] = {
                            **_ms(times[variant]),
                            "max_abs_diff_vs_heterojax": float(
                                np.max(np.abs(predecessor_output[variant] - reference[n]))
                            ),
                        }
                    baseline = min(("loop", "multiphi"), key=lambda v: statistics.median(times[v]))
                    entry["heterodyne"]["baseline"] = baseline
                    entry["speedup_structured_vs_heterodyne"] = statistics.median(
                        times[baseline]
                    ) / statistics.median(times["structured"])
                    entry["speedup_structured_vs_heterodyne_min"] = min(times[baseline]) / min(
                        times["structured"]
                    )
                entry["speedup_structured_vs_direct"] = statistics.median(
                    times["direct"]
                ) / statistics.median(times["structured"])
                if not args.no_derivatives:
                    entry["derivatives"] = _derivative_costs(n, args.derivative_repeats)
                report["sizes"][str(n)] = entry
    finally:
        if session is not None:
            session.close()

    if not args.no_float32:
        report["float32"] = _float32_report(args.sizes, args.repeats, reference)
    report["load_average_end"] = _load()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
