"""What a batch does to each dataset, as picklable jobs that Dask ships to its workers.

A job writes a dataset's results into its folder (`run`); `fit_dataset` wraps it into the
task every worker runs: skip the dataset when its results exist, run the job, and read the
row back from what was written, so that a row always describes files on disk.
"""

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

from .._cache import release_compiled_programs_if_crowded
from .._io._results import load_result, result_files, save_result
from ._sources import BatchSource
from ._summary import error_row, row_from_saved


@dataclasses.dataclass(frozen=True)
class NLSQJob:
    """`heterojax.fit_nlsq(model, load(path, q=q), fixed=fixed, **options)`, then
    `save_result` (`nlsq.json`, `nlsq.npz`)."""

    model: Any
    fixed: tuple[str, ...] = ()
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def run(self, source: BatchSource, directory: str, overwrite: bool) -> int | None:
        import heterojax

        data = heterojax.load(source.path, q=source.q)
        result = heterojax.fit_nlsq(self.model, data, fixed=self.fixed, **dict(self.options))
        save_result(result, data, directory, overwrite=overwrite)
        return None

    def expected_files(self, directory: str) -> list[str]:
        return [os.path.join(directory, n) for n in result_files("nlsq")]


@dataclasses.dataclass(frozen=True)
class ConfigJob:
    """`heterojax fit` of a config with `data.file` (and `data.q`) replaced by the dataset's:
    results, plots and log as the CLI writes them. The log goes through the process-wide
    `heterojax.cli` logger: on workers with several threads, concurrent datasets would share
    it, so batches run one thread per worker (the embedded cluster does)."""

    config: Any
    plots: bool | None = None

    def expected_files(self, directory: str) -> list[str]:
        from .._cli._pipeline import methods_of, planned_files

        plots = self.config.output.plots if self.plots is None else self.plots
        return planned_files(directory, methods_of(self.config.method), plots)

    def run(self, source: BatchSource, directory: str, overwrite: bool) -> int:
        """Returns `heterojax fit`'s exit code (1: a quality gate, NLSQ or CMC, failed)."""
        from .._cli._logging import Logging
        from .._cli._pipeline import RunOptions, run_fit

        data = {"file": os.path.abspath(source.path)}
        if source.q is not None:
            data["q"] = source.q
        config = self.config.model_copy(update={"data": self.config.data.model_copy(update=data)})
        logs = Logging(-1)
        try:
            return run_fit(
                config, RunOptions(output=directory, overwrite=overwrite, plots=self.plots), logs
            )
        finally:
            logs.close()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return "local"


def is_done(job, directory: str) -> bool:
    """Whether every file the job writes exists (results written atomically; plots too for
    `ConfigJob`): a dataset whose worker died half-way is not done."""
    return all(os.path.exists(path) for path in job.expected_files(directory))


def fit_dataset(job, source: BatchSource, output: str, overwrite: bool) -> dict[str, Any]:
    """The task of one dataset: its row (`_summary`), never an exception.

    A dataset whose files all exist is not refitted (unless `overwrite`); its row is read
    back. Otherwise it is fitted and its files are replaced: a dataset with some files only
    (its worker died half-way, and Dask reruns the task) has no complete record to protect.
    """
    directory = os.path.join(output, source.name)
    base = {
        "name": source.name,
        "file": source.path,
        "q": "" if source.q is None else str(source.q),
        "directory": directory,
        "worker": _worker_address(),
        "skipped": False,
        **dict(source.metadata or {}),
    }
    began = time.perf_counter()
    code = None
    try:
        if is_done(job, directory) and not overwrite:
            base["skipped"] = True
        else:
            os.makedirs(directory, exist_ok=True)
            code = job.run(source, directory, True)
        row = row_from_saved(load_result(directory, method="nlsq"), base)
        if code and row["status"] == "ok":  # e.g. the CMC verdict of `heterojax fit`
            row["status"] = "quality"
    except Exception as error:  # recorded in the row: the other datasets go on
        row = error_row(base, error)
    row["wall_s"] = time.perf_counter() - began
    release_compiled_programs_if_crowded()  # a worker fits dataset after dataset
    return row
