"""`heterojax fit`: config → data → NLSQ and/or CMC → results, plots, log; the quality gate.

Only public API calls happen here; the arguments come from `heterojax._config._calls`.
"""

import dataclasses
import inspect
import logging
import os
from typing import Any

import jax.random as jr

import heterojax

from .._config._calls import (
    cmc_arguments,
    model_from_config,
    nlsq_arguments,
    output_settings,
)
from .._config._schema import Config
from .._io._atomic import check_writable
from .._io._results import result_files, save_result
from ._config_commands import load_selection, warn_degeneracies
from ._errors import EXIT_OK, EXIT_QUALITY, BadInput
from ._logging import Logging, report
from ._plots import plot_paths, write_cmc_plots, write_nlsq_plots
from ._progress import nlsq_progress, sampler_progress


_LOG = logging.getLogger("heterojax.cli")


@dataclasses.dataclass
class RunOptions:
    """Command-line overrides of a config: method, output folder, overwrite, plots."""

    method: str | None = None
    output: str | None = None
    overwrite: bool = False
    plots: bool | None = None


def cmc_function():
    """`heterojax.fit_cmc`, bound late so the CLI works before and after CMC lands."""
    function = getattr(heterojax, "fit_cmc", None)
    if function is None:
        try:
            from .._cmc._fit import fit_cmc as function
        except ImportError:
            function = None
    if function is None:
        raise BadInput(
            "CMC is not available in this heterojax installation (no heterojax.fit_cmc); "
            "run with --method nlsq."
        )
    return function


def _thresholds(values: dict[str, Any]):
    try:
        from .._cmc._verdict import Thresholds
    except ImportError:
        _LOG.warning("CMC thresholds cannot be set here (no Thresholds class); using defaults.")
        return None
    return Thresholds(**values)


def _call(function, *args, **kwargs):
    """Calls a public API function, dropping nothing: an argument it does not take is a bug of
    this layer, reported as such rather than as bad input."""
    accepted = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return function(*args, **kwargs)
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise RuntimeError(f"{function.__name__} does not take {unknown}; the CLI is out of date.")
    return function(*args, **kwargs)


def starts_label(starts: Any) -> str:
    """How the progress line names a start strategy: `"auto"`, an int, or a Module."""
    if isinstance(starts, str):
        return f"{starts} starts"
    if isinstance(starts, int):
        return f"{starts} start{'s' if starts > 1 else ''}"
    count = getattr(starts, "n", None)
    name = type(starts).__name__
    return f"{name}, {count} starts" if isinstance(count, int) else name


def methods_of(method: str) -> tuple[str, ...]:
    return ("nlsq", "cmc") if method == "both" else (method,)


def planned_files(directory: str, methods: tuple[str, ...], plots: bool) -> list[str]:
    files = [os.path.join(directory, n) for m in methods for n in result_files(m)]
    if plots:
        files += plot_paths(os.path.join(directory, "plots"), methods)
    return files


def run_fit(config: Config, options: RunOptions, logs: Logging) -> int:
    """Runs the configured fit(s), writes results and plots, returns the exit code.

    Exit code 1 (quality gate) when the NLSQ fit did not succeed or its quality report is not
    ok (poor reduced χ², singular JᵀJ, or other starts reaching a different solution with a
    similar χ²), or when the CMC verdict failed; results and plots are written either way.
    """
    settings = output_settings(config)
    method = options.method or settings["method"]
    directory = os.path.abspath(options.output or settings["directory"])
    overwrite = options.overwrite or settings["overwrite"]
    plots = settings["plots"] if options.plots is None else options.plots
    methods = methods_of(method)
    quiet = logs.verbosity < 0
    fit_cmc = cmc_function() if "cmc" in methods else None
    check_writable(planned_files(directory, methods, plots), overwrite=overwrite)
    # Bad data input fails here, before anything is written.
    data = load_selection(config)
    log_path = logs.to_file(directory)
    _LOG.info(f"heterojax {heterojax.__version__}: fit ({method}) → {directory}")
    _LOG.debug(f"log file {log_path}")
    record = config.model_dump(mode="json")
    _LOG.info(
        f"data: {data.n_angles} map(s), {data.n_times} frames, φ = "
        f"{[round(float(p), 3) for p in data.phi]} deg, q = "
        f"{sorted({round(float(q), 6) for q in data.q})} 1/Å, dt = {float(data.dt):g} s"
    )
    warn_degeneracies(config)
    model = model_from_config(config)
    passed = True
    nlsq_result = None
    if "nlsq" in methods or config.cmc.warm_start:
        arguments = nlsq_arguments(config)
        label = f"NLSQ fit ({starts_label(arguments['starts'])})"
        budget = arguments.get("max_steps", 256)
        with nlsq_progress(label, budget, enabled=not quiet) as progress:
            nlsq_result = _call(heterojax.fit_nlsq, model, data, progress=progress, **arguments)
        report(nlsq_result.summary(), quiet=quiet or "nlsq" not in methods)
        if "nlsq" in methods:
            ok = bool(nlsq_result.success and nlsq_result.quality.ok)
            passed &= ok
            paths = save_result(
                nlsq_result,
                data,
                directory,
                config=record,
                seed=config.nlsq.seed,
                overwrite=overwrite,
            )
            _LOG.info(f"wrote {', '.join(paths)}")
            if plots:
                write_nlsq_plots(
                    nlsq_result, data, os.path.join(directory, "plots"), overwrite=overwrite
                )
            _gate("NLSQ", ok, _nlsq_reasons(nlsq_result))
    if fit_cmc is not None:
        arguments = cmc_arguments(config, warm_start=config.cmc.warm_start)
        seed = arguments.pop("seed")
        arguments["thresholds"] = _thresholds(arguments.pop("thresholds"))
        if arguments["thresholds"] is None:
            arguments.pop("thresholds")
        arguments["progress"] = not quiet
        with sampler_progress(arguments["warmup"], arguments["samples"], enabled=not quiet):
            cmc_result = _call(
                fit_cmc, model, data, key=jr.key(seed), nlsq=nlsq_result, **arguments
            )
        report(cmc_result.summary(), quiet=quiet)
        ok = bool(cmc_result.verdict.passed)
        passed &= ok
        paths = save_result(
            cmc_result, data, directory, config=record, seed=seed, overwrite=overwrite
        )
        _LOG.info(f"wrote {', '.join(paths)}")
        if plots:
            reference = nlsq_result.parameters() if nlsq_result is not None else None
            write_cmc_plots(
                cmc_result,
                os.path.join(directory, "plots"),
                reference=reference,
                overwrite=overwrite,
            )
        failures = list(cmc_result.verdict.failures)
        _gate("CMC", ok, [f"{len(failures)} check(s) failed (see the verdict above)"])
    return EXIT_OK if passed else EXIT_QUALITY


def _nlsq_reasons(result: Any) -> list[str]:
    solver = [] if result.success else [f"solver did not converge: {result.message}"]
    return solver + list(result.quality.failures)


def _gate(name: str, ok: bool, reasons: list[str]) -> None:
    if ok:
        _LOG.info(f"{name} quality gate: passed")
    else:
        _LOG.warning(f"{name} quality gate: FAILED — " + "; ".join(reasons))
