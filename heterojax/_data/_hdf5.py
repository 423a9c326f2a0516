"""Read-only access to HDF5 files: opening with clear errors, required keys, scalars, suffixes."""

import contextlib
import os
import re
import zipfile
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np


def check_path(path: Any, *, argument: str = "path") -> str:
    """Checks that `path` names an existing regular file and returns it as a string.

    **Arguments:**

    - `path`: a `str` or `os.PathLike`.
    - `argument`: the argument name used in error messages.

    **Returns:**

    The path as a string. Raises `TypeError` for a non-path, `FileNotFoundError` for a missing
    file and `ValueError` for a directory.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{argument}` must be a file path (str or os.PathLike); got {type(path).__name__}."
        )
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"`{argument}` must be a text path; got bytes {path!r}.")
    if not os.path.exists(path):
        raise FileNotFoundError(f"`{argument}`: no such file {path!r}; check the path.")
    if os.path.isdir(path):
        raise ValueError(f"`{argument}` must be a file; {path!r} is a directory.")
    return path


_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def damaged_file_message(path: str, error: BaseException, kind: str = "HDF5") -> str:
    """One line saying that `path` cannot be read, and why, from what h5py raised."""
    name = os.path.basename(path)
    detail = str(error).strip().strip("'\"") or type(error).__name__
    truncated = _TRUNCATED.search(detail)
    if truncated and int(truncated.group(2)) > int(truncated.group(1)):
        return (
            f"{name!r} is truncated: it ends at byte {int(truncated.group(1)):,} of "
            f"{int(truncated.group(2)):,} (an incomplete copy or download?); copy the file again."
        )
    if isinstance(error, PermissionError):
        return f"{name!r} cannot be read: permission denied ({path})."
    return f"{name!r} is damaged and cannot be read as {kind} ({detail}); copy the file again" + (
        " or check it with h5dump." if kind == "HDF5" else "."
    )


@contextlib.contextmanager
def reading(path: str, kind: str = "HDF5") -> Iterator[None]:
    """Reads from the file `path` with one kind of error: a `ValueError` naming the file.

    Around code that only reads the file's content (no user arguments are checked inside):
    what h5py and NumPy raise on a truncated or damaged file (`OSError`, `RuntimeError`,
    `KeyError`, `TypeError`, …) becomes a `ValueError` saying so, and a `ValueError` that does
    not name the file gets its name in front.
    """
    name = os.path.basename(path)
    try:
        yield
    except ValueError as error:
        if name in str(error):
            raise
        raise ValueError(f"{name!r}: {error}") from error
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        IndexError,
        AttributeError,
        EOFError,
        zipfile.BadZipFile,
    ) as error:
        raise ValueError(damaged_file_message(path, error, kind)) from error


def open_hdf5(path: str) -> h5py.File:
    """Opens an existing HDF5 file read-only (nothing is ever written to the input).

    **Arguments:**

    - `path`: an existing file (see `check_path`).

    **Returns:**

    An open `h5py.File` in mode `"r"`; use it as a context manager. Raises `ValueError` when
    the file is not HDF5 or is truncated or damaged, `PermissionError` when it cannot be read.
    """
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise PermissionError(f"{path!r} cannot be read: permission denied.") from None
    if not h5py.is_hdf5(path):
        raise ValueError(
            f"{path!r} is not an HDF5 file; heterojax reads APS 8-ID-I result files (.hdf/.h5), "
            "flat HDF5 files with c2/t/q/phi, and NumPy .npz/.npy files."
        )
    with reading(path):
        return h5py.File(path, "r")


def describe_tree(h5: h5py.File, depth: int = 3, limit: int = 40) -> str:
    """A short listing of the groups and datasets near the root of a file, for error messages.

    **Arguments:**

    - `h5`: the open file.
    - `depth`: how many levels below the root to list.
    - `limit`: the most entries to list.

    **Returns:**

    A comma-separated list like `"/exchange/ (group), /exchange/c2 (dataset 10x10)"`.
    """
    entries: list[str] = []

    def walk(group: h5py.Group, prefix: str, level: int) -> None:
        for name in group:
            if len(entries) >= limit:
                return
            item = group.get(name)
            path = f"{prefix}/{name}"
            if isinstance(item, h5py.Group):
                entries.append(f"{path}/ (group)")
                if level < depth:
                    walk(item, path, level + 1)
            elif isinstance(item, h5py.Dataset):
                shape = "x".join(str(n) for n in item.shape) or "scalar"
                entries.append(f"{path} (dataset {shape})")

    walk(h5, "", 1)
    if not entries:
        return "nothing (the file is empty)"
    more = " …" if len(entries) >= limit else ""
    return ", ".join(entries) + more


def lookup(h5: h5py.File | h5py.Group, key: str) -> Any:
    """The object at `key`, or `None` when there is no such link.

    Unlike `h5.get(key)`, which also gives `None` for an object that exists but cannot be
    opened (a damaged object header), this raises then (`KeyError`; see `reading`).
    """
    if key not in h5:
        return None
    return h5[key]


def require(h5: h5py.File, key: str, *, layout: str) -> h5py.Dataset:
    """The dataset `key`, or a `ValueError` naming the layout, the missing key and what exists.

    **Arguments:**

    - `h5`: the open file.
    - `key`: an absolute dataset path.
    - `layout`: the layout being read, for the message.

    **Returns:**

    The `h5py.Dataset` (not read yet).
    """
    item = lookup(h5, key)
    if not isinstance(item, h5py.Dataset):
        parent = key.rsplit("/", 1)[0] or "/"
        near = lookup(h5, parent)
        found = (
            ", ".join(sorted(near.keys())) if isinstance(near, h5py.Group) else describe_tree(h5)
        )
        raise ValueError(
            f"{os.path.basename(h5.filename)!r} looks like the APS {layout} layout but has no "
            f"dataset {key!r}; {parent!r} holds: {found or 'nothing'}. The file is incomplete or "
            "was written by another program; pass `dt=`/other arguments where the error allows, "
            "or convert it to the flat layout (c2, t, q, phi) and use heterojax.load."
        )
    return item


def read_array(h5: h5py.File, key: str, *, layout: str) -> np.ndarray:
    """The whole (small) dataset `key` as a NumPy array; a clear error when it is missing."""
    return np.asarray(require(h5, key, layout=layout)[()])


def read_numbers(h5: h5py.File, key: str, *, layout: str) -> np.ndarray:
    """The dataset `key` as a flat float64 array; `ValueError` unless it holds at least one
    value, all real finite numbers."""
    values = read_array(h5, key, layout=layout)
    return check_numbers(values, key=key, filename=os.path.basename(h5.filename))


def check_numbers(values: np.ndarray, *, key: str, filename: str) -> np.ndarray:
    """`values` as a flat float64 array; `ValueError` unless they are real finite numbers
    (at least one)."""
    values = np.asarray(values)
    if values.dtype.kind not in "fiu":
        raise ValueError(
            f"{key!r} in {filename!r} should hold numbers; got {values.dtype} values "
            f"{values.ravel()[:5].tolist()}."
        )
    values = values.astype(np.float64).ravel()
    if values.size == 0:
        raise ValueError(f"{key!r} in {filename!r} is empty.")
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"{key!r} in {filename!r} holds NaN/Inf values: {values[:10].tolist()}; the file "
            "is damaged or was written by a failed run."
        )
    return values


def read_scalar(h5: h5py.File, key: str, default: float | None = None) -> float | None:
    """A scalar stored as a 0-d, (1,) or (1, 1) dataset, or `default` when the key is absent.

    Strings holding a number (some writers store the configuration as text) are converted; a
    dataset that exists but does not hold exactly one number raises `ValueError`.
    """
    item = lookup(h5, key)
    if not isinstance(item, h5py.Dataset):
        return default
    value = np.asarray(item[()])
    if value.size != 1:
        raise ValueError(
            f"{key!r} in {os.path.basename(h5.filename)!r} should hold one number; "
            f"got shape {value.shape}."
        )
    value = value.reshape(()).item()
    if isinstance(value, bytes):
        value = value.decode()
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{key!r} in {os.path.basename(h5.filename)!r} should hold a number; got {value!r}."
        ) from None


def read_strings(h5: h5py.File, key: str) -> tuple[str, ...] | None:
    """A string or array of strings as a tuple of `str`, or `None` when the key is absent."""
    item = lookup(h5, key)
    if not isinstance(item, h5py.Dataset):
        return None
    value = np.atleast_1d(np.asarray(item[()])).ravel()
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in value)


_SUFFIX = re.compile(r"_(\d+)$")


def integer_suffix(name: str) -> int | None:
    """The integer after the last underscore of a dataset name (`"c2_00010"` → 10), else `None`.

    Names are always ordered by this number, never as strings ("g2_10" sorts after "g2_9").
    """
    match = _SUFFIX.search(name)
    return None if match is None else int(match.group(1))


def numbered_members(group: h5py.Group, *, layout: str) -> tuple[tuple[str, ...], np.ndarray]:
    """The datasets of `group` named `<prefix>_<integer>`, ordered by the integer.

    **Returns:**

    `(names, numbers)`: the dataset names and their integer suffixes, ascending. Raises
    `ValueError` when the group holds no such dataset, an unnumbered dataset, or two datasets
    with the same number.
    """
    names, numbers = [], []
    for name in group:
        if not isinstance(name, str) or not isinstance(group[name], h5py.Dataset):
            continue
        number = integer_suffix(name)
        if number is None:
            raise ValueError(
                f"{group.name!r} ({layout} layout) holds {name!r}, which is not named "
                "<prefix>_<integer> like 'c2_00001' or 'g2_00001'; cannot tell which bin it is."
            )
        names.append(name)
        numbers.append(number)
    if not names:
        raise ValueError(f"{group.name!r} ({layout} layout) holds no correlation maps.")
    order = np.argsort(numbers, kind="stable")
    numbers_sorted = np.asarray(numbers, dtype=np.int64)[order]
    if np.any(np.diff(numbers_sorted) == 0):
        raise ValueError(
            f"{group.name!r} ({layout} layout) holds two maps with the same number; "
            f"names: {sorted(names)}."
        )
    return tuple(names[k] for k in order), numbers_sorted
