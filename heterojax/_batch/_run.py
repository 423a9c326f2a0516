"""`fit_batch`: many datasets fitted as independent tasks on a Dask cluster."""

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from ._jobs import NLSQJob, fit_dataset, is_done
from ._sources import BatchSource, resolve_sources
from ._summary import summary_frame, write_summary


if TYPE_CHECKING:
    import pandas as pd


def _skipped_rows(job, sources, output, overwrite):
    """Rows of the datasets whose results already exist (read here, no task needed)."""
    if overwrite:
        return {}
    return {
        s.name: fit_dataset(job, s, output, overwrite)
        for s in sources
        if is_done(job, os.path.join(output, s.name))
    }


def run_batch(
    job,
    sources: list[BatchSource],
    output: str,
    *,
    client: Any = None,
    workers: int | None = None,
    overwrite: bool = False,
    retries: int = 2,
    progress: bool = True,
    cache: str | None = None,
) -> "pd.DataFrame":
    """Runs `job` on every source (one Dask task each), writes `output/summary.csv` and
    returns the table (rows in the order of `sources`).

    Phases: rows of datasets already done (skipped) → the other datasets submitted as tasks
    (rerun up to `retries` times when a worker dies) → rows collected as tasks finish, with a
    progress bar over datasets → the table.
    """
    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    rows = _skipped_rows(job, sources, output, overwrite)
    pending = [s for s in sources if s.name not in rows]
    if pending:
        from distributed import as_completed

        from ._cluster import connected

        with connected(client, workers=workers, cache=cache, retries=retries) as dask:
            futures = {
                dask.submit(
                    fit_dataset,
                    job,
                    s,
                    output,
                    overwrite,
                    pure=False,
                    key=f"heterojax-fit-{s.name}-{os.urandom(4).hex()}",
                ): s
                for s in pending
            }
            bar = tqdm(
                total=len(sources),
                initial=len(rows),
                desc="datasets",
                unit="dataset",
                disable=not progress,
            )
            with bar:
                for future in as_completed(futures):
                    rows[futures[future].name] = future.result()
                    bar.update(1)
    frame = summary_frame([rows[s.name] for s in sources])
    write_summary(frame, output)
    return frame


def _cache_folder(compilation_cache) -> str | None:
    if compilation_cache is False or compilation_cache is None:
        return None
    if compilation_cache is True:
        from .._cache import default_cache_directory

        return str(default_cache_directory())
    return os.fspath(compilation_cache)


def fit_batch(
    sources: Iterable[Any],
    model,
    *,
    fixed: Iterable[str] = (),
    client: Any = None,
    workers: int | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    retries: int = 2,
    progress: bool = True,
    compilation_cache: str | os.PathLike | bool = True,
    **fit_options: Any,
) -> "pd.DataFrame":
    """Fits many datasets by NLSQ as independent tasks on a `dask.distributed` cluster.

    Each dataset is `heterojax.load(path, q=q)` of one source, fitted by
    `fit_nlsq(model, data, fixed=fixed, **fit_options)` on a Dask worker; its results go to
    `output/<name>/` (`nlsq.json`, `nlsq.npz`, written atomically) and its row to
    `output/summary.csv`.

    **Arguments:**

    - `sources`: paths, `(path, q)` pairs (one q ring of a file) or `heterojax.BatchSource`s.
    - `model`, `fixed`, `**fit_options`: as for `fit_nlsq` (the same for every dataset).
    - `client`: `None` (default) starts an embedded `LocalCluster` of `workers` processes
      with one thread each and closes it at the end; a scheduler address (`"tcp://…:8786"`)
      or a `distributed.Client` (any cluster, e.g. `dask_jobqueue.SLURMCluster`) uses that.
      Every worker runs JAX in float64 (`_cluster.HeterojaxSetup`).
    - `output`: the results folder (default: `heterojax-batch` in the working directory).
    - `overwrite`: refit datasets whose results exist; by default they are skipped and
      their rows read back, so an interrupted batch resumes where it stopped.
    - `retries`: how often a dataset's task is rerun on another worker when the one running
      it dies (the embedded cluster's `distributed.scheduler.allowed-failures`; a cluster
      passed in keeps its own setting). A fit that fails is not rerun: its row says why.
    - `progress`: a bar over datasets with an ETA.
    - `compilation_cache`: JAX's persistent compilation cache in every worker, so workers and
      reruns share compiled fits: `True` (default) in `heterojax`'s cache folder
      (`$HETEROJAX_CACHE_DIR`, default `~/.cache/heterojax/xla`), a folder, or `False`.

    **Returns:** a pandas `DataFrame`, one row per dataset: `name`, `file`, `q`, `status`
    (`ok`: converged with a clean quality report; `quality`: fitted, but the report or the
    solver says not to trust it; `error`: could not be fitted, with the message in `error`),
    `reduced_chi2`, every free parameter and `<name>_err`, the quality flags, `wall_s`,
    `worker` (the Dask worker's address) and `skipped` (results were already there).
    One dataset's failure never stops the others.
    """
    job = NLSQJob(model=model, fixed=tuple(fixed), options=dict(fit_options))
    return run_batch(
        job,
        resolve_sources(sources),
        os.fspath(output) if output is not None else "heterojax-batch",
        client=client,
        workers=workers,
        overwrite=overwrite,
        retries=retries,
        progress=progress,
        cache=_cache_folder(compilation_cache),
    )
