"""Exact degeneracies of the default laws among the free parameters, at given start values.

Four parameters of the default model are exactly degenerate with another one over
part of the parameter space, so that freeing both leaves a flat direction of χ² (a singular
JᵀJ: no standard errors, and a fit that wanders along the ridge):

- `D_offset_n` with `D0_n` while `alpha_n = 0`: J_n = D0_n + D_offset_n, only the sum counts.
- `v_offset` with `v0` while `beta = 0`: v = v0 + v_offset.
- `f2` with `f0`: f0·exp(f1·(t − f2)) = [f0·e^{−f1·f2}]·e^{f1·t} for every f1, and at f1 = 0
  f2 has no effect at all.
- `f3` with `f0` while `f1 = 0`: f_s = f0 + f3.

`heterojax config new` writes D_offset_ref, D_offset_sample, v_offset, f2 and f3 fixed at 0
(`DEFAULT_FIXED`, with the reason as a comment; f3 because a constant fraction, the common case,
makes it degenerate with f0 at the solution) and `heterojax config check` reports any of the
four rules met by a config (`degeneracies`); both read the rules from here.
"""

from collections.abc import Collection, Mapping
from typing import Any, NamedTuple

from .._parameters import PARAMETER_NAMES, PARAMETERS
from ._schema import Config


class Degeneracy(NamedTuple):
    """A free parameter that the data cannot tell apart from others at the start values.

    `parameter` is the one to fix, `partners` the free parameters it trades with (empty when
    it has no effect at all), `reason` one sentence on why.
    """

    parameter: str
    partners: tuple[str, ...]
    reason: str

    def message(self) -> str:
        """One line for a user: the parameters, why, and which to fix."""
        if self.partners:
            names = " and ".join((self.parameter, *self.partners))
            return (
                f"{names} are both free but exactly degenerate at the start values "
                f"({self.reason}); fix {self.parameter} (e.g. `{self.parameter}: "
                f"{{value: 0, fixed: true}}`)."
            )
        return (
            f"{self.parameter} is free but has no effect ({self.reason}); fix it "
            f"(e.g. `{self.parameter}: {{value: 0, fixed: true}}`)."
        )


# The offsets `heterojax config new` holds fixed at 0, each with the comment written beside it.
DEFAULT_FIXED = {
    "D_offset_ref": "fixed: with alpha_ref = 0, J_ref = D0_ref + D_offset_ref and only the sum "
    "is determined; free it only together with an alpha_ref ≠ 0",
    "D_offset_sample": "fixed: with alpha_sample = 0, J_sample = D0_sample + D_offset_sample and "
    "only the sum is determined; free it only together with an alpha_sample ≠ 0",
    "v_offset": "fixed: with beta = 0, v = v0 + v_offset and only the sum is determined; free "
    "it only together with a beta ≠ 0",
    "f2": "fixed: f0·exp(f1·(t − f2)) = [f0·e^(−f1·f2)]·e^(f1·t), so f2 only rescales f0 "
    "(and has no effect at f1 = 0); keep it fixed",
    # Not degenerate for every f1, but a constant fraction is common and makes f0 + f3 the only
    # determined combination: JᵀJ is then singular at the solution and the fit fails its gate.
    "f3": "fixed: with a constant fraction (f1 = 0, the common case) f_s = f0 + f3 and only "
    "the sum is determined; free it only for a fraction that clearly changes (f1 ≠ 0)",
}


def degeneracies(values: Mapping[str, Any], fixed: Collection[str]) -> list[Degeneracy]:
    """The exact degeneracies among the free parameters of the default laws (module docstring).

    **Arguments:**

    - `values`: parameter name → start value (a number; the held value when fixed), for the
      14 physics parameters.
    - `fixed`: the names held fixed.

    **Returns:** a list of `Degeneracy`, empty when the free set has none; each names the
    parameter to fix.
    """
    fixed = set(fixed)

    def free(name: str) -> bool:
        return name in values and name not in fixed

    def zero(name: str) -> bool:
        return float(values.get(name, 0.0)) == 0.0

    found = []
    for component in ("ref", "sample"):
        offset, d0, alpha = f"D_offset_{component}", f"D0_{component}", f"alpha_{component}"
        if free(offset) and free(d0) and zero(alpha):
            state = "fixed at 0" if alpha in fixed else "starting at 0"
            found.append(Degeneracy(offset, (d0,), f"{alpha} {state}, so J = {d0} + {offset}"))
    if free("v_offset") and free("v0") and zero("beta"):
        state = "fixed at 0" if "beta" in fixed else "starting at 0"
        found.append(Degeneracy("v_offset", ("v0",), f"beta {state}, so v = v0 + v_offset"))
    f1_held_at_zero = "f1" in fixed and zero("f1")
    if free("f2") and f1_held_at_zero:
        found.append(Degeneracy("f2", (), "f1 is fixed at 0, and f2 enters only as f1·(t − f2)"))
    elif free("f2") and free("f0"):
        found.append(
            Degeneracy(
                "f2", ("f0",), "f0·exp(f1·(t − f2)) = [f0·e^(−f1·f2)]·e^(f1·t): f2 only rescales f0"
            )
        )
    if free("f3") and free("f0") and f1_held_at_zero:
        found.append(Degeneracy("f3", ("f0",), "f1 is fixed at 0, so f_s = f0 + f3"))
    return found


def config_degeneracies(config: Config) -> list[Degeneracy]:
    """`degeneracies` of a validated config: its start values (defaults where `null`) and its
    fixed set."""
    values, fixed = {}, []
    for name in PARAMETER_NAMES:
        entry = getattr(config.parameters, name)
        values[name] = PARAMETERS[name].default if entry.value is None else entry.value
        if entry.fixed:
            fixed.append(name)
    return degeneracies(values, fixed)
