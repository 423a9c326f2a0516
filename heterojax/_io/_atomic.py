"""Atomic file writes: a crash never leaves a half-written file; no silent overwrites."""

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable


def check_writable(paths: Iterable[str | os.PathLike], *, overwrite: bool) -> None:
    """Refuses at once when any of `paths` exists and `overwrite` is false.

    Checked for the whole set before anything is written, so a refused call writes nothing.

    **Arguments:**

    - `paths`: the files about to be written.
    - `overwrite`: allow replacing existing files.

    **Raises:** `FileExistsError` naming the existing files.
    """
    if overwrite:
        return
    existing = sorted(os.fspath(p) for p in paths if os.path.exists(p))
    if existing:
        listed = ", ".join(repr(p) for p in existing)
        raise FileExistsError(
            f"Refusing to overwrite existing result file(s) {listed}; pass overwrite=True "
            "(CLI: --overwrite) to replace them, or choose another output folder."
        )


def umask_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask.

    The umask can only be read by setting it; it is put back at once.
    """
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def new_temporary(path: str) -> str:
    """An empty temporary file next to `path`, keeping its extension, with the mode `open()`
    would give `path` (`tempfile.mkstemp` makes it 0600, and the rename would keep that)."""
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _, extension = os.path.splitext(base)
    handle, temporary = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{extension}", dir=folder)
    try:
        os.fchmod(handle, umask_mode())
    finally:
        os.close(handle)
    return temporary


def write_atomically(
    path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool = False
) -> str:
    """Writes `path` through a temporary file in the same folder, fsync and `os.replace`.

    **Arguments:**

    - `path`: the file to create.
    - `write`: called with the temporary file name; it writes the complete content there.
        The temporary name keeps the extension of `path` (some writers insist on it).
    - `overwrite`: replace an existing `path`; otherwise `FileExistsError`.

    The file gets the mode `open()` would give it (0o666 less the umask).

    **Returns:** `path` as a string.
    """
    path = os.fspath(path)
    check_writable([path], overwrite=overwrite)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = new_temporary(path)
    try:
        write(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def write_text_atomically(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> str:
    """`write_atomically` for a UTF-8 text file."""

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)

    return write_atomically(path, write, overwrite=overwrite)
