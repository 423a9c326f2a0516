"""The `heterojax` command: a thin shell over the public API.

Exit codes: 0 success; 1 a fit ran but failed its quality gate (results are still written);
2 bad input (invalid config, missing file, refused overwrite, data that cannot be loaded);
3 an unexpected internal error (a bug; reported with a traceback).
"""

import argparse
import logging
import sys
import textwrap
import traceback
from collections.abc import Sequence

from ._errors import EXIT_BAD_INPUT, EXIT_INTERNAL


_DESCRIPTION = """\
Heterodyne XPCS analysis: fit two-time correlation maps with the two-component model of
He et al. (PNAS 2024, 2025) by NLSQ and consensus Monte Carlo, from a YAML config.

Exit codes: 0 success; 1 a fit failed its quality gate (NLSQ not converged or its quality
report not ok — poor reduced χ², singular JᵀJ, distinct minima — or the CMC verdict failed;
results are still written); 2 bad input; 3 internal error."""

_EXAMPLES = {
    "main": """\
examples:
  heterojax demo --output demo-output          simulate, fit and plot a demo dataset
  heterojax config new --data run.h5 -o fit.yaml
  heterojax config check fit.yaml
  heterojax fit fit.yaml --method both
  heterojax plot fit heterojax-results         replot saved results
  heterojax info""",
    "fit": """\
examples:
  heterojax fit fit.yaml                       NLSQ (or the config's `method`)
  heterojax fit fit.yaml --method both -v      NLSQ, then CMC warm-started from it
  heterojax fit fit.yaml --output run2 --overwrite""",
    "batch": """\
examples:
  heterojax batch fit.yaml runs/*.h5 --output batch      every file on a local cluster
  heterojax batch fit.yaml runs/*.h5 -o batch --workers 4
  heterojax batch fit.yaml runs/*.h5 -o batch --scheduler tcp://head:8786
  (rerun the same command to resume: datasets with results are skipped; --overwrite refits)""",
    "config": """\
examples:
  heterojax config new -o fit.yaml --data /data/A001_result.hdf
  heterojax config check fit.yaml
  heterojax config import old_heterodyne.yaml -o fit.yaml""",
    "new": """\
examples:
  heterojax config new                         writes heterojax.yaml
  heterojax config new --data run.h5 -o fit.yaml   start values estimated from run.h5
  heterojax config new -o -                    print to stdout""",
    "check": """\
examples:
  heterojax config check fit.yaml              validate and load the data selection
  heterojax config check fit.yaml --no-data    validate the YAML only""",
    "import": """\
examples:
  heterojax config import heterodyne_config.yaml -o fit.yaml""",
    "plot": """\
examples:
  heterojax plot data fit.yaml                 the selected maps
  heterojax plot model fit.yaml                the model at the config values vs the data
  heterojax plot fit heterojax-results         all plots of saved results""",
    "simulate": """\
examples:
  heterojax simulate sim.yaml                  writes data.file (needs data.q, data.phi,
                                               data.frames and data.dt)
  heterojax simulate sim.yaml --output synthetic.h5 --overwrite""",
    "demo": """\
examples:
  heterojax demo --output demo-output          3 angles × 120 frames, NLSQ + short CMC
  heterojax demo --output /tmp/d --quick       a tiny version (seconds, for smoke tests)""",
    "info": """\
examples:
  heterojax info""",
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output (debug messages, tracebacks on errors)",
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", help="errors only (no summaries, no progress)"
    )
    parent.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled programs on disk (default: reuse them across runs, in "
        "$HETEROJAX_CACHE_DIR or ~/.cache/heterojax/xla)",
    )
    return parent


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """`-v`, `-q` and `--no-compile-cache` before the subcommand (`heterojax -v fit …`).

    They go to their own destinations with no default: a subcommand's parser fills in the
    defaults of its own copies, which would otherwise overwrite what was given here.
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v",
        "--verbose",
        dest="global_verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="more output (also accepted after the subcommand)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        dest="global_quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="errors only (also accepted after the subcommand)",
    )
    parser.add_argument(
        "--no-compile-cache",
        dest="global_no_compile_cache",
        action="store_true",
        default=argparse.SUPPRESS,
        help="do not keep compiled programs on disk",
    )


def _merge_global_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.verbose += getattr(args, "global_verbose", 0)
    args.quiet = args.quiet or getattr(args, "global_quiet", False)
    args.no_compile_cache = args.no_compile_cache or getattr(args, "global_no_compile_cache", False)
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `heterojax` command."""
    from .._version import __version__

    common = _common()
    parser = argparse.ArgumentParser(
        prog="heterojax",
        description=_DESCRIPTION,
        epilog=_EXAMPLES["main"],
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"heterojax {__version__}")
    _add_global_flags(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, parent=commands, help=None, **kwargs):
        return parent.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=_EXAMPLES.get(name),
            formatter_class=_Formatter,
            **kwargs,
        )

    fit = add(
        "fit",
        help="Fit the data of a config (NLSQ, CMC or both); write results, "
        "plots and a log into the output folder.",
    )
    fit.add_argument("config", help="the YAML config")
    fit.add_argument(
        "--method", choices=("nlsq", "cmc", "both"), help="override the config's `method`"
    )
    fit.add_argument("--output", "-o", help="override output.directory")
    fit.add_argument("--overwrite", action="store_true", help="replace existing results")
    fit.add_argument("--no-plots", action="store_true", help="write no PNG plots")

    batch = add(
        "batch",
        help="Fit many data files with one config, each as a task on a Dask cluster; write "
        "each file's results into its own folder and a table of all of them (summary.csv).",
    )
    batch.add_argument("config", help="the YAML config (everything but data.file)")
    batch.add_argument("files", nargs="+", metavar="FILE", help="the data files")
    batch.add_argument("--output", "-o", required=True, help="the batch's results folder")
    where = batch.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, help="processes of the local cluster (default: the CPU count)"
    )
    where.add_argument("--scheduler", help="address of a running Dask scheduler instead")
    batch.add_argument("--overwrite", action="store_true", help="refit files whose results exist")
    batch.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    batch.add_argument(
        "--retries",
        type=int,
        default=2,
        help="reruns of a file's fit on another worker when its worker dies (local cluster)",
    )

    config = commands.add_parser(
        "config",
        help="Create, check or import YAML configs.",
        description="Create, check or import YAML configs.",
        epilog=_EXAMPLES["config"],
        formatter_class=_Formatter,
    )
    _add_global_flags(config)
    config_commands = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    new = add(
        "new",
        config_commands,
        help="Write a config template with every key, its default and a comment.",
    )
    new.add_argument(
        "--data",
        help="the data file: put into data.file, and start values estimated from its data "
        "(all maps, all frames)",
    )
    new.add_argument(
        "--output",
        "-o",
        default="heterojax.yaml",
        help="where to write it ('-' for stdout; default heterojax.yaml)",
    )
    new.add_argument("--overwrite", action="store_true", help="replace an existing file")
    check = add(
        "check",
        config_commands,
        help="Validate a config, load its data selection, and warn about exactly degenerate "
        "free parameters.",
    )
    check.add_argument("config", help="the YAML config")
    check.add_argument("--no-data", action="store_true", help="do not open the data file")
    old = add(
        "import",
        config_commands,
        help="Translate a heterodyne 2.x config; lists the keys it could not map.",
    )
    old.add_argument("old", help="the heterodyne 2.x YAML config")
    old.add_argument(
        "--output",
        "-o",
        default="heterojax.yaml",
        help="where to write it ('-' for stdout; default heterojax.yaml)",
    )
    old.add_argument("--overwrite", action="store_true", help="replace an existing file")

    plot = add(
        "plot", help="Plot data, the model at the config values, or saved fit results (PNG)."
    )
    plot.add_argument(
        "what",
        choices=("data", "model", "fit"),
        help="data/model: from a config; fit: from a result folder",
    )
    plot.add_argument("source", help="a config (data, model) or a result folder (fit)")
    plot.add_argument(
        "--output",
        "-o",
        help="folder for the PNGs (default: the plots folder "
        "of the config's output directory or of the result folder)",
    )
    plot.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing PNGs (data, model; `plot fit` always replaces the PNGs it "
        "redraws from the saved results)",
    )

    simulate = add(
        "simulate",
        help="Write an APS-layout file simulated from a config's parameter values (to data.file).",
    )
    simulate.add_argument("config", help="the YAML config")
    simulate.add_argument("--output", "-o", help="write here instead of data.file")
    simulate.add_argument("--overwrite", action="store_true", help="replace an existing file")

    demo = add(
        "demo",
        help="Simulate a realistic 3-angle flow + diffusion measurement, save "
        "it as an APS file, fit it (NLSQ and a short CMC), write results and plots.",
    )
    demo.add_argument(
        "--output", "-o", default="heterojax-demo", help="output folder (default heterojax-demo)"
    )
    demo.add_argument("--quick", action="store_true", help="a tiny dataset (smoke test)")
    demo.add_argument("--no-cmc", action="store_true", help="NLSQ only")
    demo.add_argument("--overwrite", action="store_true", help="replace an earlier demo")

    add("info", help="Versions, devices and float64 status.")
    return parser


def _dispatch(args, logs) -> int:
    from . import _commands, _config_commands, _demo

    if args.command == "config":
        handler = {
            "new": _config_commands.config_new,
            "check": _config_commands.config_check,
            "import": _config_commands.config_import,
        }[args.config_command]
        return handler(args)
    if args.command == "demo":
        return _demo.run_demo(args, logs)
    if args.command == "batch":
        from ._batch import batch

        return batch(args, logs)
    return getattr(_commands, args.command)(args, logs)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `heterojax` command with `argv` (default `sys.argv[1:]`); returns the exit code.

    **Arguments:**

    - `argv`: the arguments, e.g. `["fit", "config.yaml", "--method", "both"]`.

    **Returns:** 0 success, 1 quality gate failed, 2 bad input, 3 internal error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _merge_global_flags(parser, args)
    except SystemExit as exit_:  # --help, --version, or a usage error (argparse prints it)
        return int(exit_.code or 0) if isinstance(exit_.code, int) else EXIT_BAD_INPUT
    args.verbosity = -1 if args.quiet else args.verbose
    from ._config_errors import BAD_INPUT_ERRORS
    from ._logging import Logging

    logs = Logging(args.verbosity)
    log = logging.getLogger("heterojax.cli")
    try:
        if not args.no_compile_cache and args.command in ("fit", "demo"):
            from .._cache import enable_compilation_cache

            log.debug(f"compilation cache: {enable_compilation_cache()}")
        return _dispatch(args, logs)
    except BAD_INPUT_ERRORS as error:
        message = str(error).strip() or type(error).__name__
        if isinstance(error, FileExistsError):
            message = message.replace("overwrite=True (CLI: --overwrite)", "--overwrite")
        log.debug(traceback.format_exc())
        print(f"heterojax: error: {message}", file=sys.stderr)
        if args.verbosity > 0:
            traceback.print_exc()
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("heterojax: interrupted", file=sys.stderr)
        return 130
    except Exception:
        log.debug(traceback.format_exc())
        print(
            textwrap.dedent(f"""\
            heterojax: internal error (a bug — please report it with this traceback):
            {traceback.format_exc()}"""),
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        logs.close()


if __name__ == "__main__":
    sys.exit(main())
