"""The datasets of a batch: a file, optionally with a q selection, and the folder name its
results go to."""

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ._summary import LEADING_COLUMNS, TRAILING_COLUMNS


RESERVED_COLUMNS = LEADING_COLUMNS + TRAILING_COLUMNS


@dataclasses.dataclass(frozen=True)
class BatchSource:
    """One dataset of `fit_batch`: the file and an optional q selection (`heterojax.load`'s
    `q=`: a value, the nearest q ring, or a list), `name`, the folder of its results
    (default: the file's stem, with the q selection appended), and `metadata`, values that
    describe the dataset (a shear rate, a temperature, an age), copied into its row of the
    summary as columns of those names, so that `plot_series(summary, x="shear_rate")` can
    draw the parameters against them."""

    path: str
    q: Any = None
    name: str | None = None
    metadata: Mapping[str, Any] | None = dataclasses.field(default=None, hash=False)

    def __post_init__(self):
        reserved = set(RESERVED_COLUMNS) & set(self.metadata or {})
        if reserved:
            raise ValueError(
                f"BatchSource metadata may not use the summary's own columns {sorted(reserved)}."
            )

    def folder(self) -> str:
        if self.name is not None:
            return self.name
        stem = os.path.splitext(os.path.basename(self.path))[0]
        if self.q is None:
            return stem
        return f"{stem}_q{re.sub(r'[^0-9A-Za-z.+-]+', '_', str(self.q)).strip('_')}"


def resolve_sources(sources: Iterable[Any]) -> list[BatchSource]:
    """`BatchSource`s from paths, `(path, q)` pairs or `BatchSource`s, with distinct folder
    names (a repeated name gets `-2`, `-3`, … in order).

    **Raises:** `TypeError` for anything else, `ValueError` for an empty batch.
    """
    resolved = []
    for source in sources:
        if isinstance(source, BatchSource):
            resolved.append(source)
        elif isinstance(source, (str, os.PathLike)):
            resolved.append(BatchSource(os.fspath(source)))
        elif isinstance(source, tuple) and len(source) == 2:
            resolved.append(BatchSource(os.fspath(source[0]), q=source[1]))
        else:
            raise TypeError(
                "A batch source is a path, a (path, q) pair or a heterojax.BatchSource; "
                f"got {source!r}."
            )
    if not resolved:
        raise ValueError("fit_batch needs at least one source.")
    seen: dict[str, int] = {}
    named = []
    for source in resolved:
        folder = source.folder()
        seen[folder] = seen.get(folder, 0) + 1
        if seen[folder] > 1:
            folder = f"{folder}-{seen[folder]}"
        named.append(dataclasses.replace(source, name=folder))
    return named
