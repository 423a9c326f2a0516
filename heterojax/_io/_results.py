"""`save_result` / `load_result`: a fit's record on disk (JSON + NPZ, written atomically).

Files in the result folder:

- NLSQ: `nlsq.json` (parameters, standard errors, correlation, χ², quality report, data
  selection, versions, config, seed) and `nlsq.npz` (data c2, fitted c2, residuals, σ, mask,
  t, q, φ).
- CMC: `cmc.json` (posterior table, diagnostics, verdict, settings, versions, config, seed),
  `cmc_samples.npz` (draws) and `cmc.nc` (ArviZ NetCDF; written when ArviZ is installed).
"""

import dataclasses
import datetime
import io
import json
import os
from typing import Any

import numpy as np
from jaxtyping import Float

from .._data._xpcs_data import XPCSData
from .._fit._nlsq_result import NLSQResult
from .._parameters import PARAMETER_NAMES, PARAMETERS
from ._atomic import check_writable, write_atomically
from ._jsonable import jsonable
from ._versions import versions


FORMAT_VERSION = 1
NLSQ_FILES = ("nlsq.json", "nlsq.npz")
CMC_FILES = ("cmc.json", "cmc_samples.npz", "cmc.nc")


def _is_cmc(result: Any) -> bool:
    return all(hasattr(result, name) for name in ("draws", "verdict", "samples", "names"))


def _data_record(data: XPCSData) -> dict[str, Any]:
    t = np.asarray(data.t)
    return {
        "q": np.asarray(data.q),
        "phi": np.asarray(data.phi),
        "dt": float(data.dt),
        "n_times": int(data.n_times),
        "t_first": float(t[0]),
        "t_last": float(t[-1]),
        "diagonal": data.diagonal,
        "n_points": int(data.n_points),
    }


def _selection_record(metadata: dict[str, Any]) -> dict[str, Any]:
    """The data's metadata, with what was asked for under `request` (not
    `selection.selection`)."""
    record = dict(metadata)
    if "selection" in record:
        record["request"] = record.pop("selection")
    return record


def _model_name(description: str) -> str:
    """ "model = bin centre" → "bin centre": the key already says what the value is."""
    return (
        description.split("=", 1)[1].strip() if description.startswith("model =") else description
    )


def _unit(name: str) -> str:
    spec = PARAMETERS.get(name.split("[", 1)[0])
    return "-" if spec is None else spec.unit


def _units(result: Any) -> dict[str, Any]:
    """The unit of every quantity in the record ("-": dimensionless; "count": a number of
    things). Parameters, their values and errors share the parameter's unit."""
    names = list(dict.fromkeys([*result.parameters(), *result.names]))
    return {
        "parameters": {name: _unit(name) for name in names},
        "values, stderr, formal_stderr, intervals_90, bounds, scaling_coefficients": (
            "as parameters"
        ),
        "contrast, offset, sigma, c2": "-",
        "chi2, reduced_chi2, correlation": "-",
        "covariance": "product of the two parameters' units",
        "dof, n_points, n_steps, starts.n_steps": "count",
        "wall_time": "s",
        "data.q, selection q": "1/Å",
        "data.phi, selection phi": "deg",
        "data.dt, data.t_first, data.t_last": "s",
    }


def _common(data: XPCSData, config: Any, seed: int | None, method: str) -> dict[str, Any]:
    return {
        "format": f"heterojax.{method}/{FORMAT_VERSION}",
        "method": method,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "config": config,
        "seed": seed,
        "selection": _selection_record(dict(data.metadata)),
        "data": _data_record(data),
    }


def _bins_record(bins: Any) -> dict[str, Any] | None:
    """The bin geometry a fit used (ROI model), or None (bin centres)."""
    if bins is None:
        return None
    return {
        "q_centre": np.asarray(bins.q_centre),
        "q_width": np.asarray(bins.q_width),
        "phi_centre": np.asarray(bins.phi_centre),
        "phi_width": np.asarray(bins.phi_width),
        "nodes_per_map": int(np.asarray(bins.weights).shape[-1]),
    }


def _start_outcomes(result: NLSQResult) -> dict[str, Any]:
    """Per local fit: `converged` (the solver met its tolerances) and `success` (converged
    *and* reached the kept solution: χ² within 3·√(2·dof), the spread of χ² itself, of the
    best). A start that converged to another basin is not a success."""
    chi2 = np.asarray(result.starts.chi2, dtype=np.float64)
    converged = np.asarray(result.starts.success, dtype=bool)
    tolerance = 3.0 * np.sqrt(2.0 * max(int(result.dof), 1))
    best = float(np.min(np.where(np.isfinite(chi2), chi2, np.inf)))
    return {
        "converged": converged,
        "success": converged & np.isfinite(chi2) & (chi2 - best <= tolerance),
        "success_rule": f"converged and χ² − min χ² ≤ 3·√(2·dof) = {tolerance:.4g}",
    }


def _nlsq_record(result: NLSQResult) -> dict[str, Any]:
    quality = result.quality
    physics = result.parameters()
    stderr = {name: result.stderr[name] for name in result.names if name in result.stderr}
    scaling_values = {n: float(v) for n, v in zip(result.names, result.values) if n not in physics}
    return {
        "parameters": physics,
        "free": list(result.names),
        "fixed": [name for name in physics if name not in result.names],
        "values": dict(zip(result.names, np.asarray(result.values, float).tolist())),
        "stderr": stderr,
        "intervals_90": {name: list(ends) for name, ends in result.intervals(0.9).items()},
        "errors": result.errors,
        "formal_stderr": {
            name: (result.formal_stderr or result.stderr)[name]
            for name in result.names
            if name in (result.formal_stderr or result.stderr)
        },
        "scaling_coefficients": scaling_values,
        "contrast": np.asarray(result.contrast),
        "offset": np.asarray(result.offset),
        "contrast_stderr": result.stderr.get("contrast"),
        "offset_stderr": result.stderr.get("offset"),
        "correlation": {"names": list(result.names), "matrix": result.correlation},
        "covariance": {"names": list(result.names), "matrix": result.covariance},
        "bounds": {name: list(bounds) for name, bounds in result.bounds.items()},
        "chi2": result.chi2,
        "reduced_chi2": result.reduced_chi2,
        "dof": result.dof,
        "n_points": result.n_points,
        "success": result.success,
        "message": result.message,
        "n_steps": result.n_steps,
        "wall_time": result.wall_time,
        "sigma": np.asarray(result.sigma),
        "noise": result.noise,
        "scaling": result.scaling,
        "diagonal": result.diagonal,
        "singular": result.singular,
        "model": _model_name(result.model_description),
        "bins": _bins_record(result.bins),
        "quality": quality.to_dict(),
        "units": _units(result),
        "starts": {
            "chi2": np.asarray(result.starts.chi2),
            "n_steps": np.asarray(result.starts.n_steps),
            **_start_outcomes(result),
            "best": int(result.starts.best),
            "strategy": result.starts.strategy,
            "screening_chi2": result.starts.screening_chi2,
        },
    }


def _cmc_record(result: Any) -> dict[str, Any]:
    table = result.table()
    physics = {name: float(value) for name, value in result.model.to_dict().items()}
    verdict = result.verdict
    contrast = np.asarray(result.samples["contrast"])
    offset = np.asarray(result.samples["offset"])
    return {
        "parameters": physics,
        "free": list(result.names),
        "fixed": [name for name in physics if name not in result.names],
        "posterior": table,
        "stderr": {name: row["sd"] for name, row in table.items()},
        "contrast": contrast.reshape(-1, contrast.shape[-1]).mean(axis=0),
        "offset": offset.reshape(-1, offset.shape[-1]).mean(axis=0),
        "verdict": {
            "passed": bool(verdict.passed),
            "failures": list(verdict.failures),
            "thresholds": dataclasses.asdict(verdict.thresholds),
        },
        "diagnostics": result.diagnostics,
        "combined_diagnostics": result.combined_diagnostics,
        "settings": {
            "combine": result.combine,
            "model": _model_name(getattr(result, "model_description", "bin centre")),
            "n_shards": int(result.n_shards),
            "shard_sizes": np.asarray(result.shard_sizes),
            "shard_strategy": result.shard_strategy,
            "chains": int(result.chains),
            "warmup": int(result.warmup),
            "samples": int(result.n_samples),
            "chain_method": result.chain_method,
            "n_devices": int(result.n_devices),
            "shard_workers": list(getattr(result, "shard_workers", ())),
            "priors": result.priors,
            "prior_width": float(result.prior_width),
        },
        "sigma": np.asarray(result.sigma),
        "noise": result.noise,
        "wall_time": float(result.wall_time),
        "sampling_time": float(result.sampling_time),
    }


def _json_writer(record: dict[str, Any]):
    text = json.dumps(jsonable(record), sort_keys=True, indent=2, allow_nan=False) + "\n"

    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(text)

    return write


def _npz_writer(arrays: dict[str, np.ndarray]):
    def write(temporary: str) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # pyright: ignore[reportArgumentType]
        with open(temporary, "wb") as stream:
            stream.write(buffer.getvalue())

    return write


def _fit_arrays(data: XPCSData, fitted: Float[np.ndarray, "phi t t"], sigma) -> dict:
    c2 = np.asarray(data.c2)
    mask = np.asarray(data.mask)
    return {
        "c2": c2,
        "fitted_c2": fitted,
        "residuals": c2 - fitted,
        "mask": mask,
        "sigma": np.asarray(sigma, float),
        "t": np.asarray(data.t),
        "q": np.asarray(data.q),
        "phi": np.asarray(data.phi),
        "dt": np.asarray(float(data.dt)),
    }


def result_files(method: str) -> tuple[str, ...]:
    """The file names `save_result` writes for `"nlsq"` or `"cmc"` (`cmc.nc` only with ArviZ)."""
    if method == "nlsq":
        return NLSQ_FILES
    if method == "cmc":
        return CMC_FILES
    raise ValueError(f"`method` must be 'nlsq' or 'cmc'; got {method!r}.")


def save_result(
    result: Any,
    data: XPCSData,
    directory: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> tuple[str, ...]:
    """Writes a fit's record to `directory`, every file atomically.

    For an `NLSQResult`: `nlsq.json` (every physics parameter, the free ones' standard errors,
    contrast/offset per map, correlation and covariance, χ², dof, the quality report, start
    summary, the data selection from `data.metadata`, versions, `config`, `seed`) and
    `nlsq.npz` (`c2`, `fitted_c2`, `residuals` = c2 − fitted_c2, `mask` of the fitted entries,
    `sigma` per map, `t`, `q`, `phi`, `dt`).

    For a CMC result (`fit_cmc`): `cmc.json` (posterior mean/sd/quantiles, R̂ and ESS per
    parameter, the verdict, diagnostics, settings, …), `cmc_samples.npz` (`names`, `draws`
    `(chain, draw, p)`, `shard_draws`, and `samples_<name>` for every name, contrast and
    offset included) and `cmc.nc` (`result.to_arviz()` as NetCDF; skipped with no ArviZ).

    JSON keys are sorted; non-finite numbers (an undetermined standard error) are `null`.
    Every file goes to a temporary name in the same folder, is fsynced and renamed, so a crash
    never leaves a half-written file. All target files are checked before the first is
    written: with `overwrite=False` an existing one raises `FileExistsError` and nothing is
    written.

    **Arguments:**

    - `result`: an `NLSQResult` or the result of `fit_cmc`.
    - `data`: the `XPCSData` that was fitted.
    - `directory`: the output folder (created if needed).
    - `config`: the run's configuration (a plain dict), stored for provenance.
    - `seed`: the random seed of the run, stored for provenance.
    - `overwrite`: replace existing result files.

    **Returns:** the paths written.
    """
    if not isinstance(data, XPCSData):
        raise TypeError(f"`data` must be a heterojax.XPCSData; got {type(data).__name__}.")
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"`directory` must be a folder; {directory!r} is a file.")
    if isinstance(result, NLSQResult):
        method = "nlsq"
        record = {**_common(data, config, seed, method), **_nlsq_record(result)}
        arrays = _fit_arrays(data, np.asarray(result.fitted_c2), result.sigma)
        writers = {"nlsq.json": _json_writer(record), "nlsq.npz": _npz_writer(arrays)}
    elif _is_cmc(result):
        method = "cmc"
        record = {**_common(data, config, seed, method), **_cmc_record(result)}
        arrays = {
            "names": np.asarray(result.names, dtype=str),
            "draws": np.asarray(result.draws),
            "shard_draws": np.asarray(result.shard_draws),
            "phi": np.asarray(result.phi),
            "q": np.asarray(result.q),
            **{f"samples_{n}": np.asarray(v) for n, v in result.samples.items()},
        }
        writers = {"cmc_samples.npz": _npz_writer(arrays)}
        try:
            import arviz  # noqa: F401

            writers["cmc.nc"] = lambda temporary: result.save_netcdf(temporary)
            record["netcdf"] = "cmc.nc"
        except ImportError:
            record["netcdf"] = None  # ArviZ is not installed
        writers = {"cmc.json": _json_writer(record), **writers}
    else:
        raise TypeError(
            "`result` must be a heterojax.NLSQResult or a fit_cmc result; "
            f"got {type(result).__name__}."
        )
    paths = {name: os.path.join(directory, name) for name in writers}
    check_writable(paths.values(), overwrite=overwrite)
    os.makedirs(directory, exist_ok=True)
    # JSON last: its presence marks a complete record.
    order = sorted(writers, key=lambda name: name.endswith(".json"))
    for name in order:
        write_atomically(paths[name], writers[name], overwrite=overwrite)
    return tuple(paths[name] for name in writers)


@dataclasses.dataclass(frozen=True)
class SavedResult:
    """A fit record read back by `load_result`.

    **Fields:**

    - `method`: `"nlsq"` or `"cmc"`.
    - `directory`: the folder it was read from.
    - `parameters`: name → value of every physics parameter (CMC: posterior means).
    - `errors`: name → standard error (CMC: posterior sd) of every free parameter; `None`
        where the error is undetermined.
    - `info`: the whole JSON record (quality report, selection, versions, config, …).
    - `arrays`: the NPZ arrays: `c2`, `fitted_c2`, `residuals`, `mask`, `sigma`, `t`, `q`,
        `phi`, `dt` (NLSQ) or `names`, `draws`, `shard_draws`, `samples_<name>` (CMC).
    """

    method: str
    directory: str
    parameters: dict[str, float]
    errors: dict[str, float | None]
    info: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def samples(self) -> dict[str, np.ndarray]:
        """CMC only: name → draws `(chain, draw)` (contrast/offset: `(chain, draw, phi)`)."""
        prefix = "samples_"
        return {k[len(prefix) :]: v for k, v in self.arrays.items() if k.startswith(prefix)}

    def summary(self) -> str:
        """Parameter values and errors, and the fit's verdict, as a readable table."""
        lines = [f"{'parameter':<22}{'value':>14}{'error':>14}", "-" * 50]
        for name, value in self.parameters.items():
            error = self.errors.get(name, "fixed")
            text = (
                "fixed"
                if error == "fixed"
                else ("undetermined" if error is None else f"{error:.3g}")
            )
            lines.append(f"{name:<22}{value:>14.6g}{text:>14}")
        if self.method == "nlsq":
            quality = self.info.get("quality", {})
            lines.append(
                f"reduced χ² = {self.info.get('reduced_chi2')}  band = {quality.get('band')}  "
                f"quality report ok = {quality.get('ok')}  "
                f"solver converged = {self.info.get('success')}"
            )
        else:
            lines.append(f"verdict passed = {self.info.get('verdict', {}).get('passed')}")
        return "\n".join(lines)


def load_result(directory: str | os.PathLike, *, method: str | None = None) -> SavedResult:
    """Reads a fit record written by `save_result` (or by `heterojax fit`).

    **Arguments:**

    - `directory`: the result folder.
    - `method`: `"nlsq"` or `"cmc"`; `None` takes NLSQ when `nlsq.json` exists, else CMC.

    **Returns:** a `SavedResult`.

    **Raises:** `FileNotFoundError` when the folder holds no (complete) record of that method.
    """
    directory = os.fspath(directory)
    if method is None:
        method = "nlsq" if os.path.exists(os.path.join(directory, "nlsq.json")) else "cmc"
    if method not in ("nlsq", "cmc"):
        raise ValueError(f"`method` must be 'nlsq', 'cmc' or None; got {method!r}.")
    json_name, npz_name = (
        ("nlsq.json", "nlsq.npz")
        if method == "nlsq"
        else (
            "cmc.json",
            "cmc_samples.npz",
        )
    )
    json_path, npz_path = os.path.join(directory, json_name), os.path.join(directory, npz_name)
    for path in (json_path, npz_path):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"No {method.upper()} result in {directory!r}: {os.path.basename(path)} is "
                "missing (write one with heterojax.save_result or `heterojax fit`)."
            )
    with open(json_path, encoding="utf-8") as stream:
        info = json.load(stream)
    with np.load(npz_path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    order = {name: k for k, name in enumerate(PARAMETER_NAMES)}
    info["parameters"] = dict(
        sorted(info["parameters"].items(), key=lambda item: order.get(item[0], len(order)))
    )
    free = sorted(info.get("free", []), key=lambda name: order.get(name, len(order)))
    errors = {name: info.get("stderr", {}).get(name) for name in free}
    return SavedResult(
        method=method,
        directory=directory,
        parameters={k: float(v) for k, v in info["parameters"].items()},
        errors=errors,
        info=info,
        arrays=arrays,
    )
