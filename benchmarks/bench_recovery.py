"""NLSQ recovery suite (issue 12): how often `fit_nlsq` from a plain start reaches the global basin.

Prints one JSON object. The cases come from `tests/_recovery_cases.py` (`recovery_cases`, shared
with the slow test `tests/test_nlsq_recovery.py`): `--cases` (48) simulated datasets drawn across
the parameter box, cycling through nine categories (ageing, saturating and decaying fractions,
flow reversal, static reference, D0_ref ≈ D0_sample, few frames, high noise, many angles) with
the other features mixed in at random; 2–23 angles, 40–200 frames, Gaussian noise with σ known.
D_offset_ref, D_offset_sample, v_offset and f2 are fixed at the truth (exactly degenerate with
D0, v0, f0); the other ten physics parameters are free and start at the `HeterodyneModel()`
defaults (D0 = 1e4, v0 = 1e3, f0 = 0.5, exponents 0, …); contrast and offset per angle with the
default scaling.

Per case, in one process and in this order:

1. the *local* fit `fit_nlsq(start, data, fixed=..., starts=1)` (skipped with `--no-local`);
2. the *default* fit `fit_nlsq(start, data, fixed=..., **options)`, where the options come from
   the flags (none by default, i.e. the library's defaults; `--starts N|auto` passes `starts=`).

Wall times are those of the calls, compilation included; every case has its own shapes, and the
JAX caches are cleared between cases (`jax.clear_caches`), so each case starts cold. Programs the
two fits share are compiled in the local fit's time. `time_ratio` = default wall / local wall.
No persistent compilation cache unless `--compilation-cache DIR` asks for one.

**Criterion** (`basin_verdict` in `tests/_recovery_cases.py`). A fit reaches the global basin when

    χ²_fit ≤ χ²_truth + tol,   tol = 2·√(2·n_free) + 1   (n_free: every free fit parameter),

where χ²_truth is the χ² of the truth (physics, contrast and offset as simulated) under the same
σ and mask as the fit (pairs t1 < t2); the truth is feasible, so the global minimum lies at or
below it. In addition every free physics parameter must have |z| ≤ 5, z = (fit − truth)/stderr,
after removing the exact symmetries: phi0 modulo 180°; |v0| when v_offset = 0; at constant
fraction (f1 = 0) the reference ↔ sample exchange (f_s → 1 − f_s); with two angles and
v_offset = 0, the second phi0 (v rescaled) that fits two angles exactly as well. Whichever
labelling of the truth is closest counts, and where the truth is a set of identical models its
member closest to the fit (any split of f0 + f3 at f1 = 0, any alpha_n at D0_n = 0).
Parameters with an infinite or undefined standard error pass the z test and are listed
(`undetermined`).

Output: `rate`, `n_cases`, `n_reached`, `median_wall_s`, `median_local_wall_s`,
`median_time_ratio`, `local_rate` (the same criterion for the local fits), `category_rates`
(by the category each case was drawn for) and `feature_rates` (by every feature a case carries),
`misses` (name, Δχ² = χ²_fit − χ²_truth, the worst parameter and its z, whether the fit's
quality report said ok, fitted and true values of the free physics parameters),
`n_misses_quality_ok` (misses the quality report did not flag) and one record per case in
`cases`.

Usage: `python benchmarks/bench_recovery.py [--cases 48] [--seed 0] [--starts N|auto]
[--phi0-span 60] [--only SUBSTRING] [--skip N] [--issue-cases] [--progress] [--output FILE]`.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import jax  # noqa: E402
from _recovery_cases import (  # noqa: E402
    CATEGORIES,
    FEATURES,
    RecoveryCase,
    basin_verdict,
    issue_case_false_minimum,
    issue_case_saturating,
    recovery_cases,
    truth_chi2,
)

import heterojax as hj  # noqa: E402


def _starts_option(value: str) -> int | str:
    return int(value) if value.strip().lstrip("+-").isdigit() else value


def _fit(case: RecoveryCase, data: hj.XPCSData, options: dict) -> tuple[Any, float, str | None]:
    """(result or None, wall seconds, error message or None)."""
    began = time.perf_counter()
    try:
        result = hj.fit_nlsq(case.start(), data, fixed=case.fixed, **options)
    except Exception as error:  # a failed fit is a miss, not the end of the suite
        return None, time.perf_counter() - began, f"{type(error).__name__}: {error}"
    return result, time.perf_counter() - began, None


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {name: float(f"{value:.6g}") for name, value in values.items()}


def _verdict_record(case, result, chi2_truth: float, error: str | None) -> dict[str, Any]:
    if result is None:
        return {"reached": False, "error": error}
    verdict = basin_verdict(case, result, chi2_truth)
    return {
        "reached": verdict.reached,
        "chi2_fit": verdict.chi2_fit,
        "delta_chi2": verdict.delta_chi2,
        "tolerance": verdict.tolerance,
        "chi2_ok": verdict.chi2_ok,
        "worst": verdict.worst,
        "worst_z": verdict.worst_z,
        "undetermined": list(verdict.undetermined),
        "labelling": verdict.labelling,
        "z": _rounded(verdict.z),
        "stderr": {n: float(result.stderr[n]) for n in verdict.z},
        "fitted": _rounded(verdict.fitted),
        "truth": _rounded(verdict.truth),
        "reduced_chi2": result.reduced_chi2,
        "n_free": len(result.names),
        "n_steps": result.n_steps,
        "success": result.success,
        "quality_ok": result.quality.ok,
        "quality": result.quality.to_dict(),
    }


def _run_case(case: RecoveryCase, options: dict, local: bool) -> dict[str, Any]:
    data = case.data()
    chi2_truth = truth_chi2(case, data)
    record: dict[str, Any] = {
        "name": case.name,
        "category": case.category,
        "features": list(case.features),
        "n_angles": case.n_angles,
        "n_frames": case.n_frames,
        "q": case.q,
        "dt": case.dt,
        "noise": case.noise,
        "chi2_truth": chi2_truth,
        "n_points": int(data.n_points),
    }
    if local:
        result, wall, error = _fit(case, data, {"starts": 1})
        record["local_wall_s"] = wall
        record["local"] = _verdict_record(case, result, chi2_truth, error)
    result, wall, error = _fit(case, data, options)
    record["wall_s"] = wall
    record.update(_verdict_record(case, result, chi2_truth, error))
    if result is not None:
        record["truth_reduced_chi2"] = chi2_truth / result.dof
    if local:
        record["time_ratio"] = wall / record["local_wall_s"]
    return record


def _write(path: str, report: dict) -> None:
    """Writes the JSON atomically (a reader never sees half a file)."""
    temporary = Path(f"{path}.partial")
    temporary.write_text(json.dumps(report, indent=1, default=float) + "\n")
    temporary.replace(path)


def _load() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _rates(records: list[dict], key) -> dict[str, dict]:
    groups: dict[str, list[bool]] = {}
    for record in records:
        for label in key(record):
            groups.setdefault(label, []).append(bool(record["reached"]))
    return {
        label: {"n": len(hits), "reached": sum(hits), "rate": sum(hits) / len(hits)}
        for label, hits in groups.items()
    }


def _miss(record: dict) -> dict[str, Any]:
    keys = (
        "name",
        "delta_chi2",
        "tolerance",
        "worst",
        "worst_z",
        "undetermined",
        "quality_ok",
        "error",
    )
    miss = {k: record[k] for k in keys if k in record}
    if "fitted" in record:
        miss["fitted_vs_truth"] = {
            name: [record["fitted"][name], record["truth"][name]] for name in record["fitted"]
        }
        miss["reduced_chi2"] = record["reduced_chi2"]
    return miss


def _report(
    records: list[dict], options: dict, args: argparse.Namespace, load_start, began: float
) -> dict[str, Any]:
    """The JSON summary of the cases run so far."""
    n_reached = sum(bool(r["reached"]) for r in records)
    return {
        "benchmark": "nlsq_recovery",
        "options": {k: v for k, v in options.items()},
        "seed": args.seed,
        "phi0_span": args.phi0_span,
        "rate": n_reached / len(records) if records else None,
        "n_cases": len(records),
        "n_reached": n_reached,
        "median_wall_s": _median([r["wall_s"] for r in records]),
        "median_local_wall_s": _median([r.get("local_wall_s") for r in records]),
        "median_time_ratio": _median([r.get("time_ratio") for r in records]),
        "local_rate": (
            sum(bool(r["local"]["reached"]) for r in records) / len(records)
            if args.local and records
            else None
        ),
        # Misses the fit's own quality report did not flag (`quality.ok` True): silent failures.
        "n_misses_quality_ok": sum(
            1 for r in records if not r["reached"] and r.get("quality_ok") is True
        ),
        "median_truth_reduced_chi2": _median([r.get("truth_reduced_chi2") for r in records]),
        "total_s": time.perf_counter() - began,
        "category_rates": {
            c: v
            for c, v in sorted(
                _rates(records, lambda r: [r["category"]]).items(),
                key=lambda item: (CATEGORIES + ("issue",)).index(item[0]),
            )
        },
        "feature_rates": {
            f: v
            for f, v in sorted(
                _rates(records, lambda r: r["features"]).items(),
                key=lambda item: (FEATURES + ("issue",)).index(item[0]),
            )
        },
        "misses": [_miss(r) for r in records if not r["reached"]],
        "criterion": (
            "chi2_fit <= chi2_truth + 2*sqrt(2*n_free) + 1 and |z| <= 5 for every free physics "
            "parameter (phi0 mod 180, |v0| when v_offset = 0, ref<->sample exchange at f1 = 0, "
            "the mirrored phi0 of two-angle data; f0/f3 split at f1 = 0 and alpha_n at "
            "D0_n = 0 taken closest to the fit)"
        ),
        "environment": {
            "heterojax": hj.__version__,
            "jax": jax.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "heterojax_path": str(Path(hj.__file__).parent),
            # The machine may be shared: timings are only comparable at similar load.
            "load_average_start": load_start,
            "load_average_end": _load(),
        },
        "complete": len(records) == args.n_selected,
        "cases": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="NLSQ recovery suite (issue 12)")
    parser.add_argument("--cases", type=int, default=48, help="number of simulated cases")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draw")
    parser.add_argument(
        "--starts", type=_starts_option, help="passed as fit_nlsq(starts=...): an int or 'auto'"
    )
    parser.add_argument(
        "--local",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time a local fit (starts=1) from the same start first (default on)",
    )
    parser.add_argument(
        "--phi0-span",
        type=float,
        default=60.0,
        help="phi0 drawn in [-span, span] degrees (90: the whole period, flows near ±90° too)",
    )
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N cases (resume)")
    parser.add_argument(
        "--issue-cases",
        action="store_true",
        help="also run issue 12's two cases (false minimum; saturating, 23 angles)",
    )
    parser.add_argument(
        "--issue-frames", type=int, default=1000, help="frames of the saturating issue case"
    )
    parser.add_argument("--progress", action="store_true", help="one line per case to stderr")
    parser.add_argument("--compilation-cache", metavar="DIR", help="enable JAX's disk cache")
    parser.add_argument("--output", help="also write the JSON here")
    args = parser.parse_args()

    if args.compilation_cache:
        hj.enable_compilation_cache(args.compilation_cache)
    options: dict[str, Any] = {}
    if args.starts is not None:
        options["starts"] = args.starts
    cases = recovery_cases(args.cases, args.seed, args.phi0_span)[args.skip :]
    if args.issue_cases:
        cases += [issue_case_false_minimum(), issue_case_saturating(args.issue_frames)]
    if args.only:
        cases = [case for case in cases if args.only in case.name]

    args.n_selected = len(cases)
    load_start = _load()
    began = time.perf_counter()
    records = []
    for case in cases:
        jax.clear_caches()
        record = _run_case(case, options, args.local)
        records.append(record)
        if args.output:  # after every case, so that an interrupted run keeps what it measured
            _write(args.output, _report(records, options, args, load_start, began))
        if args.progress:
            delta = record.get("delta_chi2", math.nan)
            worst = record.get("worst_z", math.nan)
            local = ""
            if args.local:
                local = f"  local {record['local']['reached']!s:5} {record['local_wall_s']:6.1f} s"
            print(
                f"{case.name:<70} reached {record['reached']!s:5}  Δχ² {delta:10.4g}  "
                f"|z| {worst:8.3g} ({record.get('worst')})  {record['wall_s']:6.1f} s{local}"
                + (f"  error: {record['error']}" if record.get("error") else ""),
                file=sys.stderr,
                flush=True,
            )

    report = _report(records, options, args, load_start, began)
    if args.output:
        _write(args.output, report)
    print(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
