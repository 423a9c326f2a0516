"""One row per dataset, and the batch's table (`summary.csv`)."""

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io._atomic import write_text_atomically
from .._io._results import SavedResult


if TYPE_CHECKING:
    import pandas as pd


STATUSES = ("ok", "quality", "error")
LEADING_COLUMNS = ("name", "file", "q", "status", "reduced_chi2")
TRAILING_COLUMNS = (
    "success",
    "quality_ok",
    "band",
    "at_bounds",
    "unconstrained",
    "correlated_pairs",
    "competing_minima",
    "ridge",
    "bound_ridges",
    "chi2_excess",
    "warnings",
    "wall_s",
    "worker",
    "skipped",
    "directory",
    "error",
)


def _flag_list(values) -> str:
    return ";".join(str(v) for v in values or ())


def row_from_saved(saved: SavedResult, base: dict[str, Any]) -> dict[str, Any]:
    """The row of a dataset whose NLSQ record was written: status `ok` when the solver
    converged and the quality report is ok, else `quality`; every free parameter and its
    error as `<name>` and `<name>_err`, and its 90 % interval (`NLSQResult.intervals`) as
    `<name>_low90` and `<name>_high90`; the quality flags."""
    info = saved.info
    quality = info.get("quality", {}) or {}
    success = bool(info.get("success"))
    ok = success and bool(quality.get("ok"))
    row = dict(base)
    row.update(status="ok" if ok else "quality", reduced_chi2=info.get("reduced_chi2"))
    for name in info.get("free", []):
        if name in saved.parameters:
            error = saved.errors.get(name)
            row[name] = saved.parameters[name]
            row[f"{name}_err"] = np.nan if error is None else error
            low, high = (info.get("intervals_90") or {}).get(name, (np.nan, np.nan))
            row.update({f"{name}_low90": low, f"{name}_high90": high})
    ridge = quality.get("ridge")
    row.update(
        success=success,
        quality_ok=bool(quality.get("ok")),
        band=quality.get("band"),
        at_bounds=_flag_list(quality.get("at_bounds")),
        unconstrained=_flag_list(quality.get("unconstrained")),
        correlated_pairs=len(quality.get("correlated_pairs") or ()),
        competing_minima=len(quality.get("distinct_minima") or ()),
        ridge="" if not ridge else f"{ridge[0]}-{ridge[1]}",
        bound_ridges=_flag_list(f"{a}-{b}" for a, b, _ in quality.get("bound_ridges") or ()),
        chi2_excess=quality.get("chi2_excess"),
        warnings=len(quality.get("warnings") or ()),
        error="",
    )
    return row


def error_row(base: dict[str, Any], error: BaseException) -> dict[str, Any]:
    """The row of a dataset that could not be fitted: status `error` and the message."""
    row = dict(base)
    row.update(status="error", error=f"{type(error).__name__}: {error}")
    return row


def summary_frame(rows: list[dict[str, Any]]) -> "pd.DataFrame":
    """The rows as a table: name, file, q, status, reduced χ², then every parameter with its
    error (in order of first appearance), then the flags, wall time and worker."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    leading = [c for c in LEADING_COLUMNS if c in frame.columns]
    trailing = [c for c in TRAILING_COLUMNS if c in frame.columns]
    middle = [c for c in frame.columns if c not in leading and c not in trailing]
    return frame[leading + middle + trailing]


def write_summary(frame: "pd.DataFrame", directory: str) -> str:
    """Writes `directory/summary.csv` atomically (replacing an earlier table)."""
    path = os.path.join(directory, "summary.csv")
    return write_text_atomically(path, frame.to_csv(index=False), overwrite=True)
