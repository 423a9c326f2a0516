"""The Dask client a batch runs on: an embedded `LocalCluster`, a scheduler address, or the
caller's `Client`."""

import contextlib
import os
from typing import Any

import dask
from distributed import Client, LocalCluster, WorkerPlugin

from .._threads import THREADS_VARIABLE, available_cores


class HeterojaxSetup(WorkerPlugin):
    """Sets up every worker (those that join later too, e.g. one restarted after a crash):
    float64 JAX; with `cache`, JAX's persistent compilation cache in that folder, so that
    compiled fits are shared between workers and reruns; with `threads`, the threads a fit
    may use for its independent work (`$HETEROJAX_THREADS`, unless the worker's environment
    already sets it), so that workers sharing a machine do not each start one a core."""

    name = "heterojax-setup"

    def __init__(self, cache: str | None = None, threads: int | None = None):
        self.cache = cache
        self.threads = threads

    def setup(self, worker) -> None:
        import jax

        jax.config.update("jax_enable_x64", True)
        if self.threads is not None:
            os.environ.setdefault(THREADS_VARIABLE, str(int(self.threads)))
        if self.cache:
            import heterojax

            heterojax.enable_compilation_cache(self.cache)


@contextlib.contextmanager
def connected(
    client: Any = None, *, workers: int | None = None, cache: str | None = None, retries: int = 2
):
    """Yields a `distributed.Client` set up with `HeterojaxSetup`.

    - `client=None`: a `LocalCluster` of `workers` processes (default: the CPU count) with one
      Dask thread each, closed on exit; its scheduler reruns a task whose worker died up to
      `retries` times (`allowed-failures`). XLA inside a worker still uses the machine's
      cores for its kernels (measured on 2 cores, 8 files × 7 maps × 200²: limiting each
      worker to one XLA thread made the batch 0.87× a serial loop, leaving XLA alone 1.04×);
      a fit's own threads (`heterojax._threads`) are the worker's share of the cores;
    - a string: the address of a running scheduler (`"tcp://host:8786"`), disconnected on exit;
    - a `Client` (e.g. of a `dask_jobqueue.SLURMCluster`): used as it is, never closed here.
    """
    owned, threads = [], None
    if client is None:
        n_workers = workers or max(os.cpu_count() or 1, 1)
        threads = max(available_cores() // n_workers, 1)
        with dask.config.set({"distributed.scheduler.allowed-failures": int(retries)}):
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
        owned.append(cluster)
        client = Client(cluster)
        owned.append(client)
    elif isinstance(client, str):
        client = Client(client)
        owned.append(client)
    elif not isinstance(client, Client):
        raise TypeError(
            f"`client` must be None, a scheduler address or a distributed.Client; got {client!r}."
        )
    try:
        client.register_plugin(HeterojaxSetup(cache, threads))
        yield client
    finally:
        for thing in reversed(owned):
            thing.close()
