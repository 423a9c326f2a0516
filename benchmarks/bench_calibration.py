"""Error calibration on speckle-level data (issue 13): do the NLSQ error bars cover the truth?

Prints one JSON object. The cases come from `tests/_calibration_cases.py` (`calibration_cases`,
shared with the slow test `tests/test_nlsq_calibration.py`): `--cases` (40) datasets made by
`hj.simulate_speckle(..., correlate=True)` — Poisson counts on speckle fields, a plain two-time
correlator — drawn across the box of the issue: stationary and time-varying physics, static or
moving reference, 2–8 angles, 100–400 frames, 100–2000 pixels per bin, 1–50 counts per pixel
(`--detector photon-starved`: the same draws with 1 000–10 000 pixels and 0.01–1 counts).
The noise on c2 is therefore the real one (correlated along rows, columns and neighbouring
frames), and σ is not known: every fit estimates it (`noise="estimated"`).

Per case one fit, `fit_nlsq(truth, data, fixed=case.fixed, starts=1, **options)` — started at
the truth, so that the error bars are judged in the right basin (finding it is issue 12's suite;
`--starts auto` runs the default start strategy instead). From that one fit:

- `z = (estimate − truth) / stderr` for every free physics parameter, with `stderr` the default
  error estimator's (`--errors NAME` chooses another), and `z_formal` with the independent-noise
  error `result.formal_stderr` (what the fits reported before issue 13);
- the reduced χ² of the truth (its physics, contrast β and offset 1) under the fit's σ
  (`truth_reduced_chi2`), and under the local second-difference estimate σ̂ of
  `estimate_noise` alone (`truth_reduced_chi2_local_sigma`, the estimate used before).

Output: `coverage` (fraction of |z| ≤ 1 and ≤ 1.645, the nominal 68 % and 90 % intervals, and
the median |z|) over all parameters and per parameter; `interval_coverage`, the fraction of
truths inside `result.intervals(level)` at 68 % and 90 % (θ ± zσ, reaching up to the
log-normal upper end for a power law's prefactor with its exponent free:
`NLSQResult.intervals`); `coverage` for the formal errors
(`coverage_formal`), the median reduced χ² of the truth under both σ, median wall time, the
target of the issue (90 % intervals cover 82–96 %, median |z| 0.5–0.85) and one record per case.

Usage: `python benchmarks/bench_calibration.py [--cases 40] [--seed 0] [--detector NAME]
[--phi0-span 60] [--starts N|auto] [--errors NAME] [--only SUBSTRING] [--skip N] [--progress]
[--output FILE]`.
"""

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _calibration_cases import (  # noqa: E402
    DETECTORS,
    CalibrationCase,
    calibration_cases,
    coverage,
    interval_hits,
    z_scores,
)

import heterojax as hj  # noqa: E402
from heterojax._cache import release_compiled_programs_if_crowded  # noqa: E402
from heterojax._fit._problem import estimate_noise  # noqa: E402


def _truth_reduced_chi2(case: CalibrationCase, data: hj.XPCSData, sigma) -> float:
    """χ²/n of the truth (contrast β, offset 1) over the used entries, σ per map."""
    clean = np.asarray(
        case.truth.c2(case.t, q=case.q, phi=case.phi, contrast=case.contrast, offset=1.0)
    )
    mask = np.asarray(data.mask)
    scaled = (np.asarray(data.c2) - clean) / np.asarray(sigma, float).reshape(-1, 1, 1)
    return float(np.mean(scaled[mask] ** 2))


def _run_case(case: CalibrationCase, options: dict[str, Any]) -> dict[str, Any]:
    data = case.data()
    began = time.perf_counter()
    result = hj.fit_nlsq(case.truth, data, fixed=list(case.fixed), **options)
    wall = time.perf_counter() - began
    z = z_scores(case, result)
    formal = {name: z[name] * result.stderr[name] / result.formal_stderr[name] for name in z}
    local_sigma = estimate_noise(np.asarray(data.c2), np.asarray(data.mask))
    return {
        "name": case.name,
        "free": list(case.free),
        "z": z,
        "estimate": {n: result.parameters()[n] for n in case.free},
        "truth": {n: float(case.truth.to_dict()[n]) for n in case.free},
        "stderr": {n: float(result.stderr[n]) for n in case.free},
        "z_formal": formal,
        "interval_hits": {level: interval_hits(case, result, float(level)) for level in LEVELS},
        "errors": result.errors,
        "stderr_over_formal": {n: result.stderr[n] / result.formal_stderr[n] for n in z},
        "reduced_chi2": result.reduced_chi2,
        "truth_reduced_chi2": _truth_reduced_chi2(case, data, result.sigma),
        "truth_reduced_chi2_local_sigma": _truth_reduced_chi2(case, data, local_sigma),
        "quality_ok": bool(result.quality.ok),
        "quality": result.quality.to_dict(),
        "wall_s": wall,
    }


LEVELS = ("0.68", "0.9")


def _interval_coverage(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Fraction of truths inside `result.intervals(level)`, overall and per parameter."""
    figures: dict[str, Any] = {}
    for level in LEVELS:
        hits = [(n, h) for r in records for n, h in r["interval_hits"][level].items()]
        names = sorted({n for n, _ in hits}, key=hj.PARAMETER_NAMES.index)
        figures[level] = {
            "all": float(np.mean([h for _, h in hits])) if hits else float("nan"),
            **{n: float(np.mean([h for m, h in hits if m == n])) for n in names},
        }
    return figures


def _coverage_by_parameter(records: list[dict[str, Any]], key: str) -> dict[str, Any]:
    names = sorted({n for r in records for n in r[key]}, key=hj.PARAMETER_NAMES.index)
    return {n: coverage([r[key][n] for r in records if n in r[key]]) for n in names}


def _summary(records: list[dict[str, Any]], args) -> dict[str, Any]:
    every = lambda key: [v for r in records for v in r[key].values()]  # noqa: E731
    return {
        "benchmark": "calibration",
        "n_cases": len(records),
        "seed": args.seed,
        "detector": {"name": args.detector, **DETECTORS[args.detector]},
        "phi0_span": args.phi0_span,
        "options": {"starts": args.starts or "truth (starts=1)", "errors": args.errors},
        "coverage": coverage(every("z")),
        "coverage_by_parameter": _coverage_by_parameter(records, "z"),
        "interval_coverage": _interval_coverage(records),
        "coverage_formal": coverage(every("z_formal")),
        "coverage_formal_by_parameter": _coverage_by_parameter(records, "z_formal"),
        "median_truth_reduced_chi2": statistics.median(r["truth_reduced_chi2"] for r in records),
        "median_truth_reduced_chi2_local_sigma": statistics.median(
            r["truth_reduced_chi2_local_sigma"] for r in records
        ),
        "median_wall_s": statistics.median(r["wall_s"] for r in records),
        "target": "90 % intervals cover 82–96 %; median |z| in 0.5–0.85",
        "device": str(jax.devices()[0]),
        "python": platform.python_version(),
        "cases": records,
    }


def _starts_option(text: str):
    return text if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description="NLSQ error calibration on speckle data")
    parser.add_argument("--cases", type=int, default=40, help="number of speckle datasets")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case draw")
    parser.add_argument(
        "--detector",
        choices=tuple(DETECTORS),
        default="speckle",
        help="pixels and counts of the draw (photon-starved: 0.01–1 counts a pixel)",
    )
    parser.add_argument(
        "--phi0-span",
        type=float,
        default=60.0,
        help="phi0 drawn in [-span, span] degrees (90: the whole period, flows near ±90° too)",
    )
    parser.add_argument("--starts", type=_starts_option, help="fit_nlsq(starts=...) (default 1)")
    parser.add_argument("--errors", help="fit_nlsq(errors=...) (default: the library's)")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--skip", type=int, default=0, help="skip the first N cases (resume)")
    parser.add_argument("--progress", action="store_true", help="one line per case to stderr")
    parser.add_argument("--output", help="also write the JSON here (after every case)")
    args = parser.parse_args()

    options: dict[str, Any] = {"starts": 1 if args.starts is None else args.starts}
    if args.errors:
        options["errors"] = args.errors
    cases = calibration_cases(args.cases, args.seed, args.detector, args.phi0_span)
    cases = cases[args.skip :]
    if args.only:
        cases = [case for case in cases if args.only in case.name]
    records = []
    for case in cases:
        records.append(_run_case(case, options))
        release_compiled_programs_if_crowded()  # 40 shapes of programs in one process
        if args.progress:
            worst = max(records[-1]["z"].items(), key=lambda item: abs(item[1]))
            print(
                f"{case.name}: worst z {worst[0]} {worst[1]:+.2f}, {records[-1]['wall_s']:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if args.output:
            Path(args.output).write_text(json.dumps(_summary(records, args), indent=1))
    print(json.dumps(_summary(records, args), indent=1))


if __name__ == "__main__":
    main()
