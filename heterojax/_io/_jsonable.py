"""Conversion of results to JSON-ready values (finite floats, lists, plain dicts)."""

import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """`value` as JSON-ready Python: arrays → (nested) lists, NumPy scalars → Python scalars,
    tuples → lists, and non-finite floats → `None` (JSON has no NaN or infinity: an undetermined
    standard error, stored as inf in memory, is `null` on disk)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__array__") and not isinstance(value, (str, bytes)):
        array = np.asarray(value)
        if array.ndim == 0:
            return jsonable(array.item())
        return [jsonable(v) for v in array.tolist()]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return str(value)
