"""Opt-in persistent compilation cache: compiled fits are reused across processes."""

import os
from pathlib import Path

import jax


# Programs that compile faster than this are not worth a disk entry (reading one back costs a
# few milliseconds; the small programs of a fit compile in 30–300 ms each).
_MIN_COMPILE_SECONDS = 0.05


def default_cache_directory() -> Path:
    """`$HETEROJAX_CACHE_DIR`, else `$XDG_CACHE_HOME/heterojax/xla` (default `~/.cache/...`)."""
    explicit = os.environ.get("HETEROJAX_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "heterojax" / "xla"


def enable_compilation_cache(directory: str | os.PathLike | None = None) -> Path:
    """Turns on JAX's persistent compilation cache in `directory` for this process.

    XLA compilation dominates the first fit of a given data shape (several seconds on a
    laptop CPU, more than the solve itself for ≤ 1000² maps). With the cache, the compiled
    programs are written to disk and loaded by every later process that fits data of the same
    shapes with the same options (tracing still happens; only compilation is skipped). The
    `heterojax` command turns it on (unless `--no-compile-cache`); a library does not change
    JAX's process-wide settings on import, so Python users call this themselves.

    Programs with host callbacks are never cached by JAX (`fit_cmc(progress=True)`);
    `fit_nlsq` reports progress from its Python step loop and keeps none.

    **Arguments:** `directory`: where to keep the entries (default `default_cache_directory()`).

    **Returns:** the directory used.
    """
    path = Path(directory).expanduser() if directory is not None else default_cache_directory()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# Linux refuses new memory maps past `vm.max_map_count` (65 530 by default); every compiled
# XLA program holds some, and JAX keeps every program it compiled for the life of the process.
# Measured: a process fitting speckle datasets in turn grew by about 7 000 maps a dataset and
# died at ~65 000 with "LLVM compilation error: Cannot allocate memory" and a segfault.
CROWDED_MAPS = 40_000


def memory_map_count() -> int | None:
    """The number of memory maps of this process (`/proc/self/maps`), or None off Linux."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return sum(1 for _ in maps)
    except OSError:
        return None


def release_compiled_programs_if_crowded(limit: int = CROWDED_MAPS) -> bool:
    """Drops JAX's in-memory compiled programs (`jax.clear_caches`) when this process holds more
    than `limit` memory maps, so that a long run of fits in one process (a batch worker, a
    benchmark) does not reach the kernel's map limit and crash. Later fits compile again (from
    the persistent cache when it is on). Returns whether it dropped them."""
    count = memory_map_count()
    if count is None or count <= limit:
        return False
    jax.clear_caches()
    return True
