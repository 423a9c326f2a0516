"""`heterojax config new | check | import`."""

import logging
import os
import re
import sys
import traceback

import yaml

import heterojax

from .._config._calls import load_arguments
from .._config._degeneracy import config_degeneracies
from .._config._import import import_heterodyne
from .._config._load import load_config, read_yaml, validate_config
from .._config._schema import Config
from .._config._template import estimated_start, template
from .._io._atomic import check_writable, write_text_atomically
from ._config_errors import BAD_INPUT_ERRORS
from ._errors import EXIT_OK, BadInput
from ._logging import report


_LOG = logging.getLogger("heterojax.cli")


_LOAD_ARGUMENTS = "source|q|phi|frames|dt|diagonal|q_tolerance|phi_tolerance"


def config_keys(message: str, file_key: str = "data.file") -> str:
    """`message` of `heterojax.load` with its argument names (`` `source` ``, `dt=`, …) put as
    the config keys that set them (`data.file`, `data.dt`, …)."""

    def key(match: re.Match) -> str:
        name = match.group(1)
        return file_key if name == "source" else f"data.{name}"

    message = re.sub(rf"`({_LOAD_ARGUMENTS})`", key, message)
    return re.sub(rf"(?<![\w.])({_LOAD_ARGUMENTS})=(?=[\s,)]|$)", key, message)


def load_selection(config: Config, what: str = "data.file"):
    """`heterojax.load` of the config's data selection; a file that cannot be read is bad
    input (one line, exit code 2), whatever the reader raised, and the message names the
    config keys (`data.dt`), not the API's arguments (`dt=`)."""
    try:
        return heterojax.load(**load_arguments(config))
    except BAD_INPUT_ERRORS as error:
        message = config_keys(str(error), what)
        if message == str(error):
            raise
        raise BadInput(message) from error
    except Exception as error:  # a reader's error that escaped `heterojax.load`'s checks
        raise BadInput(
            f"{what} {config.data.file!r} cannot be read: {type(error).__name__}: {error}"
        ) from error


def _estimated_start(path: str) -> dict[str, float] | None:
    """Start values read off the data of `path` (default selection), or None with a warning
    when the estimate fails; a file that cannot be read is bad input."""
    config = validate_config({"data": {"file": path}})
    try:
        data = load_selection(config, "--data")
    except BadInput:
        raise
    except BAD_INPUT_ERRORS as error:
        raise BadInput(f"--data {path!r} cannot be read: {error}") from error
    try:
        estimated = estimated_start(heterojax.estimate_start(data).to_dict())
    except Exception as error:  # a start estimate is a convenience: never fatal
        _LOG.debug(traceback.format_exc())
        _LOG.warning(
            f"warning: could not estimate start values from {path} "
            f"({type(error).__name__}: {error}); writing the default values instead."
        )
        return None
    shown = ", ".join(f"{name} = {value:.4g}" for name, value in estimated.items())
    _LOG.info(
        f"start values estimated from {data.n_angles} map(s) × {data.n_times} frames: "
        f"{shown or 'none differ from the defaults'}"
    )
    return estimated


def config_new(args) -> int:
    """Writes the commented template (to stdout with `-o -`); with `--data`, start values
    estimated from that file's data (its default selection: all maps, all frames)."""
    data_file = None
    estimated = None
    if args.output != "-":
        check_writable([args.output], overwrite=args.overwrite)
    if args.data is not None:
        if not os.path.isfile(args.data):
            raise FileNotFoundError(f"--data file {args.data!r} not found.")
        data_file = os.path.abspath(args.data)
        estimated = _estimated_start(data_file)
        if args.output != "-":
            folder = os.path.dirname(os.path.abspath(args.output))
            data_file = os.path.relpath(data_file, folder)
    name = "config.yaml" if args.output == "-" else os.path.basename(args.output)
    text = template(data_file, name=name, estimated=estimated)
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    write_text_atomically(args.output, text, overwrite=args.overwrite)
    _LOG.info(f"wrote {args.output}; edit it, then: heterojax config check {args.output}")
    return EXIT_OK


def warn_degeneracies(config: Config) -> list[str]:
    """Logs a `warning:` line for each exact degeneracy among the free parameters at the
    config's start values (`_degeneracy`); returns the lines."""
    lines = [f"warning: {found.message()}" for found in config_degeneracies(config)]
    for line in lines:
        _LOG.warning(line)
    return lines


def config_check(args) -> int:
    """Validates a config and (unless --no-data) loads its data selection."""
    config = load_config(args.config)
    lines = [
        f"{args.config}: valid",
        f"  data file: {config.data.file}",
        f"  output:    {config.output.directory}",
        f"  method:    {config.method}",
    ]
    free = [n for n in heterojax.PARAMETER_NAMES if not getattr(config.parameters, n).fixed]
    lines.append(f"  free:      {', '.join(free) or 'none'}")
    if not args.no_data:
        if not os.path.isfile(config.data.file):
            raise FileNotFoundError(
                f"data.file {config.data.file!r} not found (relative paths are resolved "
                f"against the config's folder, {os.path.dirname(os.path.abspath(args.config))})."
            )
        data = load_selection(config)
        lines.append(
            f"  selection: {data.n_angles} map(s) × {data.n_times} frames, φ = "
            f"{[round(float(p), 3) for p in data.phi]} deg, q = "
            f"{sorted({round(float(q), 6) for q in data.q})} 1/Å, dt = {float(data.dt):g} s, "
            f"t = {float(data.t[0]):g}…{float(data.t[-1]):g} s"
        )
    report("\n".join(lines), quiet=args.verbosity < 0)
    warn_degeneracies(config)
    return EXIT_OK


def config_import(args) -> int:
    """Translates a heterodyne 2.x config; lists what could not be mapped."""
    raw = read_yaml(args.old)
    target = "config.yaml" if args.output == "-" else args.output
    target_dir = os.path.dirname(os.path.abspath(target))
    source_dir = os.path.dirname(os.path.abspath(args.old))
    try:
        config, notes, unmapped = import_heterodyne(
            raw, source_dir=source_dir, target_dir=target_dir
        )
    except ValueError as error:
        raise BadInput(f"{args.old}: {error}") from None
    validate_config(config, base_dir=target_dir, source=f"{args.old} (translated)")
    header = [f"# Translated by `heterojax config import` from {os.path.abspath(args.old)}."]
    header += [f"# NOTE: {note}" for note in notes]
    if unmapped:
        header.append("# Not mapped (no heterojax counterpart):")
        header += [f"#   {key}" for key in unmapped]
    header.append("# Every other key takes its default: see `heterojax config new`.")
    text = "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        write_text_atomically(args.output, text, overwrite=args.overwrite)
        _LOG.info(f"wrote {args.output}")
    for note in notes:
        _LOG.warning(f"note: {note}")
    if unmapped:
        _LOG.warning(f"not mapped ({len(unmapped)}): " + ", ".join(unmapped))
    return EXIT_OK
