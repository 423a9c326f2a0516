"""From a validated `Config` to the keyword arguments of the public API calls.

This is the only place where config keys meet API arguments; the CLI calls these and then the
public functions (`load`, `fit_nlsq`, `fit_cmc`, `simulate`, `save_aps`). A test checks that
every key of the schema changes what one of these returns.
"""

from typing import Any

import numpy as np

from .._fit._strategies import MultiStart
from .._model._heterodyne import HeterodyneModel
from .._parameters import PARAMETER_NAMES, PARAMETERS
from ._schema import Config


def _selection(value: Any) -> Any:
    if isinstance(value, list):
        return [tuple(v) if isinstance(v, (list, tuple)) else v for v in value]
    return value


def load_arguments(config: Config) -> dict[str, Any]:
    """`heterojax.load(**arguments)`: the file and the q/φ/frame selection, dt and diagonal."""
    data = config.data
    return {
        "source": data.file,
        "q": _selection(data.q),
        "q_tolerance": data.q_tolerance,
        "phi": _selection(data.phi),
        "phi_tolerance": data.phi_tolerance,
        "frames": None if data.frames is None else tuple(data.frames),
        "dt": data.dt,
        "diagonal": data.diagonal,
    }


def model_from_config(config: Config) -> HeterodyneModel:
    """The default-law `HeterodyneModel` at the configured values (defaults where `null`)."""
    values = []
    for name in PARAMETER_NAMES:
        entry = getattr(config.parameters, name)
        values.append(PARAMETERS[name].default if entry.value is None else entry.value)
    return HeterodyneModel.from_vector(np.asarray(values, dtype=np.float64))


def _fixed_and_bounds(config: Config) -> tuple[list[str], dict[str, tuple[float, float]]]:
    fixed, bounds = [], {}
    entries = {name: getattr(config.parameters, name) for name in PARAMETER_NAMES}
    entries["contrast"] = config.scaling.contrast
    entries["offset"] = config.scaling.offset
    for name, entry in entries.items():
        if entry.fixed:
            fixed.append(name)
        if entry.lower is not None or entry.upper is not None:
            spec = PARAMETERS[name]
            lower = spec.lower if entry.lower is None else entry.lower
            upper = spec.upper if entry.upper is None else entry.upper
            bounds[name] = (float(lower), float(upper))
    return fixed, bounds


def _sigma(config: Config) -> Any:
    sigma = config.data.sigma
    if isinstance(sigma, list):
        return np.asarray(sigma, float)[:, None, None]  # one σ per map
    return sigma


def _scale_value(value: Any) -> Any:
    return np.asarray(value, float) if isinstance(value, list) else value


def _problem_arguments(config: Config) -> dict[str, Any]:
    fixed, bounds = _fixed_and_bounds(config)
    return {
        "fixed": fixed,
        "bounds": bounds,
        "scaling": config.scaling.mode,
        "fourier_order": config.scaling.fourier_order,
        "contrast": _scale_value(config.scaling.contrast.value),
        "offset": _scale_value(config.scaling.offset.value),
        "sigma": _sigma(config),
        "roi": config.data.roi,
    }


def nlsq_arguments(config: Config) -> dict[str, Any]:
    """`fit_nlsq(model, data, **arguments)`: fixed/bounds/scaling/σ and the `nlsq` options.

    `starts` passes through as `"auto"` or an int, except that an integer `starts > 1` with
    `screening_steps` set becomes `MultiStart(starts, screening_steps=...)` (`fit_nlsq` takes
    the screening length only inside the strategy).
    """
    options = config.nlsq.model_dump()
    screening_steps = options.pop("screening_steps")
    if screening_steps is not None:  # the schema allows it only with an integer starts > 1
        options["starts"] = MultiStart(options["starts"], screening_steps=screening_steps)
    return {**_problem_arguments(config), **options}


def cmc_arguments(config: Config, *, warm_start: bool) -> dict[str, Any]:
    """`fit_cmc(model, data, key=…, nlsq=…, **arguments)` without `key` and `nlsq`.

    With a warm start, fixed/bounds/scaling are the NLSQ fit's (the same config values) and the
    contrast/offset starts are its solution, so the config's start values are not passed.
    The seed is returned as `"seed"` for the caller to turn into a key, and the thresholds as a
    plain dict under `"thresholds"` (the caller builds the verdict's `Thresholds`).
    """
    options = config.cmc.model_dump()
    options.pop("warm_start")
    problem = _problem_arguments(config)
    if warm_start:
        problem.pop("contrast")
        problem.pop("offset")
    return {**problem, **options}


def simulate_arguments(config: Config) -> dict[str, Any]:
    """`simulate(model, t, **arguments)` with `"t"` included, and the `save_aps` options.

    The frame window (`data.frames`) and period (`data.dt`) give t = dt·(first … last); the
    angles come from `data.phi` (a list of angles) and q from `data.q`; contrast and offset
    from the scaling values (defaults where `null`).

    **Returns:** `{"simulate": {...}, "save_aps": {...}, "seed": int, "path": str}`.

    **Raises:** `ValueError` naming the key when the config lacks what a simulation needs.
    """
    data = config.data
    if data.frames is None or data.dt is None:
        raise ValueError(
            "`heterojax simulate` needs data.frames ([first, last]) and data.dt (s) in the "
            "config to build the time grid."
        )
    if data.q is None:
        raise ValueError("`heterojax simulate` needs data.q (Å⁻¹): one value or one per angle.")
    phi = data.phi
    angles = [phi] if isinstance(phi, (int, float)) else phi
    if not angles or any(not isinstance(a, (int, float)) for a in angles):
        raise ValueError(
            "`heterojax simulate` needs data.phi as a list of angles in degrees (no ranges); "
            f"got {phi!r}."
        )
    first, last = data.frames
    t = data.dt * np.arange(first, last + 1, dtype=np.float64)
    contrast = config.scaling.contrast.value
    offset = config.scaling.offset.value
    q = data.q if isinstance(data.q, (int, float)) else np.asarray(data.q, float)
    return {
        "simulate": {
            "t": t,
            "q": q,
            "phi": np.asarray(angles, float),
            "contrast": PARAMETERS["contrast"].default
            if contrast is None
            else _scale_value(contrast),
            "offset": PARAMETERS["offset"].default if offset is None else _scale_value(offset),
            "noise": config.simulate.noise,
            "dt": data.dt,
        },
        "save_aps": {"layout": config.simulate.layout, "dtype": config.simulate.dtype},
        "seed": config.simulate.seed,
        "path": data.file,
    }


def output_settings(config: Config) -> dict[str, Any]:
    """The output folder, whether to overwrite, whether to plot, and the method to run."""
    return {
        "directory": config.output.directory,
        "overwrite": config.output.overwrite,
        "plots": config.output.plots,
        "method": config.method,
    }
