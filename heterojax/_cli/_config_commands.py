"""`heterojax config new | check | import`."""

import logging
import os
import sys

import yaml

import heterojax

from .._config._calls import load_arguments
from .._config._import import import_heterodyne
from .._config._load import load_config, read_yaml, validate_config
from .._config._template import template
from .._io._atomic import write_text_atomically
from ._errors import EXIT_OK, BadInput
from ._logging import report


_LOG = logging.getLogger("heterojax.cli")


def config_new(args) -> int:
    """Writes the commented template (to stdout with `-o -`)."""
    data_file = None
    if args.data is not None:
        if not os.path.isfile(args.data):
            raise FileNotFoundError(f"--data file {args.data!r} not found.")
        data_file = os.path.abspath(args.data)
        if args.output != "-":
            folder = os.path.dirname(os.path.abspath(args.output))
            data_file = os.path.relpath(data_file, folder)
    name = "config.yaml" if args.output == "-" else os.path.basename(args.output)
    text = template(data_file, name=name)
    if args.output == "-":
        sys.stdout.write(text)
        return EXIT_OK
    write_text_atomically(args.output, text, overwrite=args.overwrite)
    _LOG.info(f"wrote {args.output}; edit it, then: heterojax config check {args.output}")
    return EXIT_OK


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
        data = heterojax.load(**load_arguments(config))
        lines.append(
            f"  selection: {data.n_angles} map(s) × {data.n_times} frames, φ = "
            f"{[round(float(p), 3) for p in data.phi]} deg, q = "
            f"{sorted({round(float(q), 6) for q in data.q})} 1/Å, dt = {float(data.dt):g} s, "
            f"t = {float(data.t[0]):g}…{float(data.t[-1]):g} s"
        )
    report("\n".join(lines), quiet=args.verbosity < 0)
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
