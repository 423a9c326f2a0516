"""Independent host-side calls of compiled programs, run in parallel threads.

XLA:CPU runs one small program on little more than one core: a pass over the whole file's
screening problem (8 maps × 58², ROI model) kept 1.3 of this machine's 2 cores busy, 10.4 ms
a pass; the same passes called from two threads took 5.7 ms each (1.8 cores busy), and a
42 × 400² pass 0.98 s against 0.80 s. Calls dispatched asynchronously from one thread do not
overlap (9.4 ms). So work that is independent — the local fits of a screening, the maps of a
pass — is handed to as many threads as there are cores. Each call computes exactly what it
computes alone, so results do not depend on the thread count.
"""

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import jax


_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
_inside = threading.local()


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


THREADS_VARIABLE = "HETEROJAX_THREADS"


def default_threads() -> int:
    """Threads for independent work: `$HETEROJAX_THREADS` when set (a positive integer; 1
    runs everything in turn, e.g. beside other processes on the same cores), else the
    available cores on a CPU backend and 1 on an accelerator (which runs one program at a
    time and batches instead)."""
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"${THREADS_VARIABLE} must be a positive integer; got {text!r}.")
        return int(text)
    return available_cores() if jax.default_backend() == "cpu" else 1


def in_parallel(
    function: Callable[[_Item], _Result], items: Iterable[_Item], threads: int
) -> list[_Result]:
    """[function(item) for item in items], in that order, on up to `threads` threads.

    The first item runs alone, so that the programs every item calls are compiled once
    rather than by each thread at the same time. Inside a worker (a nested call) everything
    runs in turn: the cores are already busy. The first exception raised is re-raised.
    """
    items = list(items)
    if threads <= 1 or len(items) <= 1 or getattr(_inside, "active", False):
        return [function(item) for item in items]
    first = function(items[0])

    def work(item):
        _inside.active = True
        try:
            return function(item)
        finally:
            _inside.active = False

    with ThreadPoolExecutor(max_workers=min(threads, len(items) - 1)) as pool:
        rest = list(pool.map(work, items[1:]))
    return [first, *rest]


def compile_ahead(calls: Sequence[Callable[[], object]]) -> threading.Thread | None:
    """Runs `calls` (each a call of compiled programs whose results are not needed) on a
    background (daemon) thread, so that their programs are compiled while this thread does
    other work; None where there is one core only. XLA compiles a program on one core, so
    with two cores the whole file's final-stage programs (9 s of compiling) fit beside its
    screening. `join()` the thread before the programs are called: a program still compiling
    would be compiled again.
    A call that fails is dropped (the same call later reports the error)."""
    if default_threads() <= 1 or not calls:
        return None

    def run_all():
        _inside.active = True  # passes inside these calls run in turn
        for call in calls:
            try:
                jax.block_until_ready(call())
            except Exception:  # noqa: BLE001  (a warm-up: the same call later reports it)
                continue

    thread = threading.Thread(target=run_all, daemon=True)
    thread.start()
    return thread
