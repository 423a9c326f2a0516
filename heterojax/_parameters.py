"""The parameter table: names, defaults, bounds and units.

The 14 physics parameters live in the model's pytree (see `HeterodyneModel`); contrast and
offset are per-angle scale factors passed to `HeterodyneModel.c2` and fitted alongside.
"""

import dataclasses
import math
import types
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """Default, box bounds and unit of one named parameter.

    **Arguments:**

    - `name`: the parameter's name, e.g. `"D0_ref"`.
    - `default`: the value used when none is given.
    - `lower`, `upper`: inclusive box bounds (`-inf`/`inf` for none).
    - `unit`: a human-readable unit string (`"-"` for dimensionless).
    - `description`: one line saying what the parameter is.
    - `period`: the model's period in this parameter (0 for none). `phi0` has 180°: c2 holds
        it only in cos(φ + φ0) inside an even function, so φ0 and φ0 + 180° give the same
        maps. Where the box spans exactly one period, fits treat the parameter as an angle
        (`BoxTransform`): no bound to stop at, and a fit may pass through ±90°.
    """

    name: str
    default: float
    lower: float = -math.inf
    upper: float = math.inf
    unit: str = "-"
    description: str = ""
    period: float = 0.0

    @property
    def wraps(self) -> bool:
        """Whether the box spans exactly one period (the parameter is then an angle)."""
        return self.period > 0 and self.upper - self.lower == self.period

    def __post_init__(self):
        if not self.lower <= self.default <= self.upper:
            raise ValueError(
                f"Parameter {self.name!r}: default {self.default} lies outside its bounds "
                f"[{self.lower}, {self.upper}]."
            )

    def renamed(self, name: str) -> "ParameterSpec":
        """The same spec under another name (used to suffix `_ref` / `_sample`)."""
        return dataclasses.replace(self, name=name)

    def with_bounds(self, lower: float, upper: float) -> "ParameterSpec":
        """The same spec with overridden bounds (the default is clipped into them)."""
        if not lower <= upper:
            raise ValueError(
                f"Bounds for {self.name!r} must satisfy lower <= upper; got [{lower}, {upper}]."
            )
        default = min(max(self.default, lower), upper)
        return dataclasses.replace(self, lower=float(lower), upper=float(upper), default=default)


def _spec(name, default, lower, upper, unit, description):
    return ParameterSpec(name, float(default), float(lower), float(upper), unit, description)


# Per-law specs. Transport names get the suffix `_ref` / `_sample` inside a model.
TRANSPORT_SPECS = (
    _spec("D0", 1e4, 0.0, 1e6, "Å²/s^(α+1)", "transport prefactor, J = D0·t^α + D_offset"),
    _spec("alpha", 0.0, -2.0, 2.0, "-", "transport exponent α"),
    _spec("D_offset", 0.0, -1e5, 1e5, "Å²/s", "constant transport rate added to D0·t^α"),
)
VELOCITY_SPECS = (
    _spec("v0", 1e3, 0.0, 1e5, "Å/s^(β+1)", "velocity prefactor, v = v0·t^β + v_offset"),
    _spec("beta", 0.0, -2.0, 2.0, "-", "velocity exponent β"),
    _spec("v_offset", 0.0, -1e4, 1e4, "Å/s", "constant velocity added to v0·t^β"),
)
FRACTION_SPECS = (
    _spec("f0", 0.5, 0.0, 1.0, "-", "sample fraction amplitude, f_s = f0·exp(f1(t−f2)) + f3"),
    _spec("f1", 0.0, -10.0, 10.0, "1/s", "sample fraction growth rate"),
    _spec("f2", 0.0, -1e4, 1e4, "s", "sample fraction time shift"),
    _spec("f3", 0.0, 0.0, 1.0, "-", "sample fraction baseline"),
)
PHI0_SPEC = dataclasses.replace(
    _spec("phi0", 0.0, -90.0, 90.0, "deg", "flow direction offset, phase ∝ cos(φ + φ0)"),
    period=180.0,
)
CONTRAST_SPEC = _spec("contrast", 0.5, 0.0, 1.0, "-", "speckle contrast (per angle)")
OFFSET_SPEC = _spec("offset", 1.0, 0.5, 1.5, "-", "baseline of c2 (per angle)")

_PHYSICS_SPECS = (
    *(s.renamed(s.name + "_ref") for s in TRANSPORT_SPECS),
    *(s.renamed(s.name + "_sample") for s in TRANSPORT_SPECS),
    *VELOCITY_SPECS,
    *FRACTION_SPECS,
    PHI0_SPEC,
)

PARAMETER_NAMES: tuple[str, ...] = tuple(s.name for s in _PHYSICS_SPECS)
"""The 14 physics parameter names in canonical order."""

PARAMETERS: Mapping[str, ParameterSpec] = types.MappingProxyType(
    {s.name: s for s in (*_PHYSICS_SPECS, CONTRAST_SPEC, OFFSET_SPEC)}
)
"""Read-only mapping name → `ParameterSpec` for the 14 physics parameters, contrast and offset."""
