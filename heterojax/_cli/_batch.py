"""`heterojax batch`: one config, many files, a Dask cluster; a table of the results."""

import logging
import os

from .._batch._jobs import ConfigJob
from .._batch._run import run_batch
from .._batch._sources import resolve_sources
from .._cache import default_cache_directory
from .._config._load import read_yaml, validate_config
from ._errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_QUALITY, BadInput
from ._logging import Logging


_LOG = logging.getLogger("heterojax.cli")


def batch_exit_code(statuses) -> int:
    """0 when every dataset is `ok`, 2 when none could be fitted (all `error`), else 1."""
    statuses = list(statuses)
    if not statuses or all(s == "error" for s in statuses):
        return EXIT_BAD_INPUT
    return EXIT_OK if all(s == "ok" for s in statuses) else EXIT_QUALITY


def batch_config(path: str):
    """The config of a batch: `data.file` may be left out (each FILE replaces it)."""
    raw = read_yaml(path)
    if isinstance(raw, dict):
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        raw = {**raw, "data": {"file": "(each batch file)", **(data or {})}}
    return validate_config(raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path)


def batch(args, logs: Logging) -> int:
    config = batch_config(args.config)
    if config.method == "cmc":
        raise BadInput("heterojax batch tabulates NLSQ fits: set method to nlsq or both.")
    if args.workers is not None and args.workers < 1:
        raise BadInput(f"--workers must be at least 1; got {args.workers}.")
    frame = run_batch(
        ConfigJob(config, plots=False if args.no_plots else None),
        resolve_sources(args.files),
        args.output,
        client=args.scheduler,
        workers=args.workers,
        overwrite=args.overwrite,
        retries=args.retries,
        progress=logs.verbosity >= 0,
        cache=None if args.no_compile_cache else str(default_cache_directory()),
    )
    counts = frame["status"].value_counts().to_dict()
    _LOG.info(
        f"batch: {len(frame)} file(s): "
        + ", ".join(f"{counts.get(s, 0)} {s}" for s in ("ok", "quality", "error"))
        + f"; table in {args.output}/summary.csv"
    )
    for row in frame[frame["status"] == "error"].itertuples():
        _LOG.warning(f"{row.file}: {row.error}")
    return batch_exit_code(frame["status"])
