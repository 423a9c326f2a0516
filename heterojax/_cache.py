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

    Programs with host callbacks are never cached by JAX (`fit_nlsq(progress=...)`,
    `fit_cmc(progress=True)`).

    **Arguments:** `directory`: where to keep the entries (default `default_cache_directory()`).

    **Returns:** the directory used.
    """
    path = Path(directory).expanduser() if directory is not None else default_cache_directory()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECONDS)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
