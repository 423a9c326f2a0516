"""`config import`: translate a heterodyne 2.x YAML config into a heterojax config.

The mapping follows the documented behaviour of heterodyne 2.0.1 (grouped `parameters.*`
entries override the flat `initial_parameters`, legacy aliases, `temporal` migration). Keys
with no heterojax counterpart are listed, never silently dropped; where heterodyne ignored a
key that states a clear intent (e.g. `vary` of contrast/offset, `fixed_parameters`), the intent
is kept and a note says so.
"""

import os
from typing import Any

from .._parameters import PARAMETER_NAMES


_ALIASES = {
    "D0_reference": "D0_ref",
    "alpha_reference": "alpha_ref",
    "D_offset_reference": "D_offset_ref",
    "velocity": "v0",
    "v_0": "v0",
    "angle_phi0": "phi0",
    **{f"fraction_{k}": f"f{k}" for k in range(4)},
}
_SCALING = ("contrast", "offset")
_CMC_KEYS = {
    "num_warmup": "warmup",
    "num_samples": "samples",
    "num_chains": "chains",
    "target_accept_prob": "target_accept",
    "target_accept": "target_accept",
    "max_tree_depth": "max_tree_depth",
    "dense_mass": "dense_mass",
    "seed": "seed",
    "num_shards": "shards",
    "use_nlsq_warmstart": "warm_start",
    "nlsq_prior_width_factor": "prior_width",
    "prior_width_factor": "prior_width",
}
_CMC_THRESHOLDS = {
    "max_r_hat": ("r_hat",),
    "r_hat_threshold": ("r_hat",),
    "min_ess": ("ess_bulk", "ess_tail"),
    "min_bfmi": ("bfmi",),
}


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(_leaves(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


class _Translation:
    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        self.leaves = _leaves(raw)
        self.used: set[str] = set()
        self.notes: list[str] = []
        self.config: dict[str, Any] = {}

    def get(self, path: str, default: Any = None) -> Any:
        node: Any = self.raw
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def use(self, path: str) -> Any:
        """The value at `path`, marking it and everything below it as translated."""
        self.used.update(p for p in self.leaves if p == path or p.startswith(path + "."))
        return self.get(path)

    def put(self, path: str, value: Any) -> None:
        node = self.config
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value


def _data(tr: _Translation, source_dir: str, target_dir: str) -> None:
    file = tr.use("experimental_data.file_path")
    folder, name = (
        tr.use("experimental_data.data_folder_path"),
        tr.use("experimental_data.data_file_name"),
    )
    if not file and name:
        file = os.path.join(folder or "", name)
        tr.notes.append(
            "experimental_data.data_folder_path + data_file_name were joined into data.file "
            "(heterodyne 2.x required file_path and did not join them)."
        )
    if file:
        absolute = os.path.normpath(os.path.join(source_dir, os.path.expanduser(str(file))))
        tr.put(
            "data.file", file if os.path.isabs(str(file)) else os.path.relpath(absolute, target_dir)
        )
        if not os.path.isabs(str(file)):
            tr.notes.append(
                f"data.file: the relative path {file!r} is now resolved against the config's "
                "folder (heterodyne 2.x used the working directory); check it."
            )
    else:
        tr.put("data.file", "data.h5")
        tr.notes.append("No experimental_data.file_path: data.file is a placeholder to edit.")

    analyzer = "analyzer_parameters"
    dt = tr.use(f"{analyzer}.dt")
    start, end = tr.use(f"{analyzer}.start_frame"), tr.use(f"{analyzer}.end_frame")
    q = tr.use(f"{analyzer}.scattering.wavevector_q")
    phi = tr.use(f"{analyzer}.scattering.phi_angles")
    if tr.get("temporal") is not None:  # the legacy layout, migrated as heterodyne did
        dt = tr.use("temporal.dt") if dt is None else dt
        t_start, length = tr.use("temporal.t_start"), tr.use("temporal.time_length")
        if start is None and t_start is not None:
            start = int(t_start) + 1  # a 0-based frame index
        if end is None and t_start is not None and length is not None:
            end = int(t_start) + int(length)
    if tr.get("scattering") is not None:
        q = tr.use("scattering.wavevector_q") if q is None else q
        phi = tr.use("scattering.phi_angles") if phi is None else phi
    if dt is not None:
        tr.put("data.dt", float(dt))
    if start is not None or end is not None:
        first = int(start or 1)
        if end is None:
            tr.notes.append("Only start_frame was given: data.frames needs both; edit it.")
        else:
            tr.put("data.frames", [first, int(end)])
    if q is not None:
        tr.put("data.q", float(q))
    if phi is not None:
        tr.put("data.phi", [float(a) for a in (phi if isinstance(phi, list) else [phi])])
    elif tr.get("phi_filtering.enabled"):
        ranges = []
        tolerance = float(tr.get("phi_filtering.tolerance", 5.0))
        for target in tr.use("phi_filtering.target_ranges") or []:
            if isinstance(target, dict):
                ranges.append(
                    [float(target.get("min_angle", -10)), float(target.get("max_angle", 10))]
                )
            elif isinstance(target, list) and len(target) == 2:
                ranges.append([float(target[0]), float(target[1])])
            else:
                centre = float(str(target))
                ranges.append([centre - tolerance, centre + tolerance])
        tr.use("phi_filtering.enabled")
        tr.use("phi_filtering.tolerance")
        if ranges:
            tr.put("data.phi", ranges)
            tr.notes.append(
                "phi_filtering.target_ranges became data.phi ranges; heterojax raises an error "
                "when none matches (heterodyne's fallback_to_all_angles is not kept)."
            )


def _parameters(tr: _Translation) -> None:
    entries: dict[str, dict[str, Any]] = {}

    def canonical(name: str) -> str | None:
        name = _ALIASES.get(name, name)
        return name if name in PARAMETER_NAMES or name in _SCALING else None

    names = tr.use("initial_parameters.parameter_names")
    values = tr.use("initial_parameters.values")
    if names and values:
        for name, value in zip(names, values):
            target = canonical(str(name))
            if target is None:
                tr.notes.append(f"initial_parameters: unknown parameter {name!r} skipped.")
            elif value is not None:
                entries.setdefault(target, {})["value"] = float(value)
    active = tr.use("initial_parameters.active_parameters")
    if active:
        active_names = {canonical(str(a)) for a in active}
        for name in (*PARAMETER_NAMES, *_SCALING):
            if name not in active_names:
                entries.setdefault(name, {})["fixed"] = True
        tr.notes.append(
            "initial_parameters.active_parameters: every parameter not listed (contrast and "
            "offset included, as in heterodyne) is fixed."
        )
    fixed = tr.use("initial_parameters.fixed_parameters")
    if fixed:
        for name in fixed:
            target = canonical(str(name))
            if target is not None:
                entries.setdefault(target, {})["fixed"] = True
        tr.notes.append(
            "initial_parameters.fixed_parameters is now honoured (heterodyne 2.x ignored it)."
        )
    per_angle = tr.use("initial_parameters.per_angle_scaling")
    if isinstance(per_angle, dict):
        for name in _SCALING:
            if per_angle.get(name) is not None:
                entries.setdefault(name, {})["value"] = per_angle[name]
        if any(per_angle.get(n) is not None for n in _SCALING):
            tr.notes.append(
                "initial_parameters.per_angle_scaling is now used as the contrast/offset start "
                "(heterodyne 2.x ignored it)."
            )
    groups = tr.get("parameters") or {}
    for group, members in groups.items() if isinstance(groups, dict) else ():
        if not isinstance(members, dict):
            continue
        for name, spec in members.items():
            target = canonical(str(name))
            path = f"parameters.{group}.{name}"
            if target is None or not isinstance(spec, dict):
                continue  # left unused: listed as not mapped
            entry = entries.setdefault(target, {})
            if spec.get("value") is not None:
                entry["value"] = float(tr.use(f"{path}.value"))
            if spec.get("min") is not None and spec.get("max") is not None:
                entry["lower"], entry["upper"] = (
                    float(tr.use(f"{path}.min")),
                    float(tr.use(f"{path}.max")),
                )
            if "vary" in spec:
                entry["fixed"] = not bool(tr.use(f"{path}.vary"))
    for name in _SCALING:
        if name in entries and not entries[name].get("fixed", False):
            if any(p.startswith(f"parameters.scaling.{name}.vary") for p in tr.used):
                tr.notes.append(
                    f"{name}: heterodyne 2.x never fitted it (it held the config value); "
                    "heterojax fits it — set scaling."
                    f"{name}.fixed: true to reproduce the old behaviour."
                )
    for name, entry in entries.items():
        section = "scaling" if name in _SCALING else "parameters"
        if entry.get("fixed") and entry.get("value") is None and name in _SCALING:
            entry.pop("fixed")
            tr.notes.append(f"{name} was fixed without a value; it is fitted instead.")
        if entry:
            tr.put(f"{section}.{name}", entry)


def _optimization(tr: _Translation) -> None:
    method = tr.use("optimization.method")
    if method in ("nlsq", "cmc"):
        tr.put("method", method)
    nlsq = "optimization.nlsq"
    if tr.get(f"{nlsq}.multistart"):
        tr.put("nlsq.starts", int(tr.get(f"{nlsq}.multistart_n", 10)))
        tr.use(f"{nlsq}.multistart_n")
    if tr.get(f"{nlsq}.multistart") is not None:
        tr.use(f"{nlsq}.multistart")
    if tr.get(f"{nlsq}.max_iterations") is not None:
        tr.put("nlsq.max_steps", int(tr.use(f"{nlsq}.max_iterations")))
    if tr.get(f"{nlsq}.enable_cmaes") is not None:
        tr.put("nlsq.global_search", bool(tr.use(f"{nlsq}.enable_cmaes")))
    mode = tr.get(f"{nlsq}.per_angle_mode")
    if mode in ("auto", "fourier"):
        tr.put("scaling.mode", tr.use(f"{nlsq}.per_angle_mode"))
    if tr.get(f"{nlsq}.fourier_order") is not None:
        tr.put("scaling.fourier_order", int(tr.use(f"{nlsq}.fourier_order")))
    cmc = tr.get("optimization.cmc")
    if isinstance(cmc, dict):
        for path, value in _leaves(cmc, "optimization.cmc").items():
            key = path.rsplit(".", 1)[-1]
            if key in _CMC_KEYS and value is not None:
                tr.use(path)
                tr.put(f"cmc.{_CMC_KEYS[key]}", value)
            elif key in _CMC_THRESHOLDS and value is not None:
                tr.use(path)
                for target in _CMC_THRESHOLDS[key]:
                    tr.put(f"cmc.thresholds.{target}", value)
            elif key == "use_nlsq_informed_priors" and value is not None:
                tr.use(path)
                tr.put("cmc.priors", "informed" if value else "uniform")
            elif key in ("sharding_strategy", "strategy") and value in ("random", "stratified"):
                tr.use(path)
                tr.put("cmc.shard_strategy", value)
            elif key in ("combination_method", "method") and "consensus" in str(value):
                tr.use(path)
                tr.put("cmc.combine", "consensus")
    if tr.get("output.output_dir") is not None:
        tr.put("output.directory", str(tr.use("output.output_dir")))


def import_heterodyne(
    raw: dict[str, Any], *, source_dir: str = ".", target_dir: str = "."
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Translates a parsed heterodyne 2.x config.

    **Arguments:**

    - `raw`: the parsed YAML of the old config.
    - `source_dir`: the old config's folder (relative data paths are taken from there).
    - `target_dir`: the new config's folder (data.file is written relative to it).

    **Returns:** `(config, notes, unmapped)`: the heterojax config as a plain dict (validate it
    with `validate_config`), notes on changed semantics, and the dotted keys of the old config
    that have no heterojax counterpart.
    """
    if not isinstance(raw, dict):
        raise ValueError("The heterodyne config must be a YAML mapping of sections.")
    tr = _Translation(raw)
    tr.use("metadata")  # documentation only, in heterodyne too
    _data(tr, source_dir, target_dir)
    _parameters(tr)
    _optimization(tr)
    unmapped = sorted(
        p for p, v in tr.leaves.items() if p and p not in tr.used and v not in (None, "", [], {})
    )
    return tr.config, tr.notes, unmapped
