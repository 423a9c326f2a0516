"""The YAML configuration of `heterojax fit` as pydantic models (unknown keys are errors).

Every key reaches an API call (see `_calls`); defaults equal those of the functions they feed,
which a test checks against the signatures.
"""

import math
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from .._parameters import PARAMETER_NAMES, PARAMETERS


class Section(BaseModel):
    """A config section: unknown keys are errors, values are validated strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _number_list_or_none(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return list(value)
    raise ValueError("must be null, a number or a non-empty list of numbers")


class DataSection(Section):
    file: str = Field(
        description="The c2 file: APS 8-ID-I HDF5 (NeXus or legacy), flat HDF5, .npz or .npy. "
        "Relative to this file's folder."
    )
    q: float | list[float] | None = Field(
        default=None, description="q selection in Å⁻¹: null = all, a value (nearest bin) or a list."
    )
    q_tolerance: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Keep every map with |q_map − q| ≤ this (Å⁻¹) instead of the nearest.",
    )
    phi: float | list[float | tuple[float, float]] | None = Field(
        default=None,
        description="φ selection in degrees: null = all, an angle, or a list of angles and "
        "[start, stop] ranges (counter-clockwise, e.g. [[170, -170]]).",
    )
    phi_tolerance: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="Largest distance (deg) accepted for a requested angle; null = half "
        "the file's φ spacing.",
    )
    frames: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="[first, last] frame window, 1-based and inclusive; null = all."
    )
    dt: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="Frame period in s, overriding the file's; null = from the file."
    )
    diagonal: Literal["interpolate", "mask", "none"] = Field(
        default="interpolate",
        description="The shot-noise diagonal: interpolate (from neighbours), mask (excluded "
        "from fits) or none (fitted as measured).",
    )
    sigma: float | list[float] | None = Field(
        default=None,
        description="σ of every c2 entry (one value, or one per map); null = from the "
        "file, else estimated.",
    )
    roi: bool | None = Field(
        default=None,
        description="Model each map as the average over its detector bin (ROI model): null = "
        "when the file has the bins' geometry (a q map), true = required, false = bin centres.",
    )

    @pydantic.field_validator("q", "sigma", mode="before")
    @classmethod
    def _numbers(cls, value, info):
        return _number_list_or_none(value, f"data.{info.field_name}")

    @pydantic.field_validator("sigma")
    @classmethod
    def _positive(cls, value):
        values = [value] if isinstance(value, (int, float)) else (value or [])
        if any(not (v > 0 and math.isfinite(v)) for v in values):
            raise ValueError("must be positive")
        return value

    @pydantic.field_validator("frames")
    @classmethod
    def _window(cls, value):
        if value is not None and value[1] < value[0]:
            raise ValueError("must be [first, last] with first ≤ last")
        return value


class ParameterEntry(Section):
    """One physics parameter: start value, bounds and whether it is fixed."""

    value: float | None = Field(default=None, description="Start value (fixed value if fixed).")
    lower: float | None = Field(default=None, description="Lower bound; null = the default bound.")
    upper: float | None = Field(default=None, description="Upper bound; null = the default bound.")
    fixed: bool = Field(default=False, description="Hold at `value` instead of fitting.")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {"value": value}
        return value


def _check_entry(name: str, entry: "ParameterEntry | ScaleEntry", default) -> None:
    spec = PARAMETERS[name]
    lower = spec.lower if entry.lower is None else entry.lower
    upper = spec.upper if entry.upper is None else entry.upper
    if not lower <= upper:
        raise ValueError(f"lower = {lower:g} must not exceed upper = {upper:g}")
    values = entry.value if isinstance(entry.value, list) else [entry.value]
    for value in values:
        value = default if value is None else value
        if value is not None and not lower <= value <= upper:
            raise ValueError(
                f"value = {value:g} lies outside the bounds [{lower:g}, {upper:g}]; "
                "move the value or widen lower/upper"
            )


def _parameters_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        name: (
            ParameterEntry,
            Field(
                default_factory=ParameterEntry,
                description=f"{PARAMETERS[name].description} [{PARAMETERS[name].unit}]",
            ),
        )
        for name in PARAMETER_NAMES
    }

    def check(cls, entry, info):
        _check_entry(info.field_name, entry, PARAMETERS[info.field_name].default)
        return entry

    validator = pydantic.field_validator(*PARAMETER_NAMES)(classmethod(check))
    return pydantic.create_model(  # pyright: ignore[reportCallIssue]
        "ParametersSection",
        __base__=Section,
        __validators__={"_check": validator},  # pyright: ignore[reportArgumentType]
        **fields,
    )


ParametersSection = _parameters_model()


class ScaleEntry(Section):
    """Contrast or offset: start value(s), bounds and whether it is fixed."""

    value: float | list[float] | None = Field(
        default=None, description="Start value, one or one per map; null = estimated from the data."
    )
    lower: float | None = Field(default=None, description="Lower bound; null = the default bound.")
    upper: float | None = Field(default=None, description="Upper bound; null = the default bound.")
    fixed: bool = Field(default=False, description="Hold at `value` instead of fitting.")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value):
        if isinstance(value, (int, float, list)) and not isinstance(value, bool):
            return {"value": value}
        return value


class ScalingSection(Section):
    mode: Literal["auto", "individual", "constant", "fourier"] = Field(
        default="auto",
        description="Contrast/offset per map: individual, constant (one pair), fourier (series "
        "in φ) or auto (individual up to 6 maps, else fourier).",
    )
    fourier_order: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="Order of the fourier mode; null = 2."
    )
    contrast: ScaleEntry = Field(
        default_factory=ScaleEntry, description="Speckle contrast {value, lower, upper, fixed}."
    )
    offset: ScaleEntry = Field(
        default_factory=ScaleEntry, description="Baseline of c2 {value, lower, upper, fixed}."
    )

    @pydantic.field_validator("contrast", "offset")
    @classmethod
    def _check(cls, entry, info):
        _check_entry(info.field_name, entry, None)
        if entry.fixed and entry.value is None:
            raise ValueError("fixed: true needs a value")
        return entry


class NLSQSection(Section):
    starts: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="auto (data-driven starts, screened, every competitive basin polished), "
        "1 (one local fit from the values, for refits) or N > 1 (N starts screened, best 4 "
        "finished).",
    )
    errors: Literal["auto", "formal", "frame-clustered", "speckle"] = Field(
        default="frame-clustered",
        description="Error estimator: frame-clustered (default; a sandwich for the noise "
        "that neighbouring frames share), speckle (a sandwich with the speckle model's own "
        "covariance of the c2 noise, simulated at the fit), auto (speckle for maps "
        "correlated from speckle frames, such as APS result files, else frame-clustered) or "
        "formal (independent noise).",
    )
    global_search: bool = Field(default=False, description="Run a CMA-ES global search first.")
    global_evaluations: Annotated[int, Field(ge=1)] = Field(
        default=2000, description="χ² evaluations of the global search."
    )
    seed: int = Field(default=0, description="Seed of the start design and the global search.")
    rtol: Annotated[float, Field(gt=0)] = Field(
        default=1e-7, description="Relative step tolerance."
    )
    atol: Annotated[float, Field(gt=0)] = Field(default=1e-4, description="Absolute tolerance.")
    max_steps: Annotated[int, Field(ge=1)] = Field(default=256, description="Step limit per start.")
    screening_steps: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="With an integer starts > 1: LM steps every start gets before the best 4 "
        "continue; null = 30.",
    )

    @pydantic.field_validator("starts", mode="before")
    @classmethod
    def _starts(cls, value):
        if value == "auto" or (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ):
            return value
        raise ValueError('must be "auto" or an integer ≥ 1 (1 = a local fit from the values)')

    @pydantic.model_validator(mode="after")
    def _screening(self):
        if self.screening_steps is not None and not (
            isinstance(self.starts, int) and self.starts > 1
        ):
            raise ValueError(
                f"screening_steps applies only to an integer starts > 1 (got starts: "
                f"{self.starts}); remove it or set starts to the number of starts"
            )
        return self


class ThresholdsSection(Section):
    r_hat: Annotated[float, Field(gt=1)] = Field(default=1.01, description="Largest split R̂.")
    ess_bulk: Annotated[float, Field(gt=0)] = Field(default=400.0, description="Smallest bulk ESS.")
    ess_tail: Annotated[float, Field(gt=0)] = Field(default=400.0, description="Smallest tail ESS.")
    bfmi: Annotated[float, Field(gt=0)] = Field(default=0.3, description="Smallest E-BFMI.")
    divergences: Annotated[int, Field(ge=0)] = Field(
        default=0, description="Largest number of divergences per shard."
    )
    tree_depth_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.01, description="Largest fraction of transitions at the maximum tree depth."
    )
    shard_agreement: Annotated[float, Field(gt=0)] = Field(
        default=4.0,
        description="Largest distance of a shard mean from the combined mean (shard sds).",
    )


class CMCSection(Section):
    warm_start: bool = Field(
        default=True,
        description="Start and precondition the sampler from an NLSQ fit (recommended).",
    )
    shards: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Number of data shards K, or auto (≥ 20 000 points per shard, as many as run side "
            "by side on this machine's cores; one on a few cores)."
        ),
    )
    shard_strategy: Literal["random", "stratified"] = Field(
        default="random", description="random, or stratified by lag."
    )
    chains: Annotated[int, Field(ge=1)] = Field(default=4, description="Chains per shard.")
    warmup: Annotated[int, Field(ge=1)] = Field(
        default=500, description="Adaptation steps per chain."
    )
    samples: Annotated[int, Field(ge=4)] = Field(default=1000, description="Kept draws per chain.")
    max_samples: Annotated[int, Field(ge=4)] | None = Field(
        default=None,
        description="While a bulk or tail ESS falls short of its threshold, draw more per chain, "
        "up to this many in all (null = samples: no more).",
    )
    combine: Literal["consensus", "mixture"] = Field(
        default="consensus", description="How shard posteriors are combined."
    )
    priors: Literal["uniform", "informed"] = Field(
        default="uniform", description="uniform on the box, or informed (Gaussian around NLSQ)."
    )
    prior_width: Annotated[float, Field(gt=0)] = Field(
        default=2.0, description="Informed prior sd in NLSQ standard errors."
    )
    target_accept: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None, description="NUTS target acceptance rate (null = NUTS() default, 0.9)."
    )
    max_tree_depth: Annotated[int, Field(ge=1)] | None = Field(
        default=None, description="NUTS tree depth limit (null = NUTS() default, 10)."
    )
    dense_mass: bool | Literal["auto"] | None = Field(
        default=None,
        description="Adapt a dense mass matrix: true, false, or auto (≤ 16 parameters); "
        "null = NUTS() default, auto.",
    )
    init_jitter: Annotated[float, Field(ge=0)] | None = Field(
        default=None,
        description="Spread of chain starts in shard-posterior sds (null = NUTS() default, 0.5).",
    )
    adjustment: Literal["auto", "none", "curvature", "magnitude"] = Field(
        default="auto",
        description="Likelihood adjustment for correlated c2 noise: auto (curvature when the "
        "NLSQ warm start has honest (speckle or frame-clustered) errors, checked, magnitude "
        "where the likelihood is not Gaussian on the scale of those errors; else none), "
        "curvature, magnitude, none.",
    )
    chain_method: Literal["auto", "vectorized", "sequential"] = Field(
        default="auto",
        description="vectorized (vmap), sequential (one run per chain, one chain per CPU core), "
        "or auto (sequential for large "
        "shards on one CPU, else vectorized).",
    )
    seed: int = Field(default=0, description="Seed of the sampler's random key.")
    thresholds: ThresholdsSection = Field(
        default_factory=ThresholdsSection, description="Pass/fail limits of the verdict."
    )


class SimulateSection(Section):
    noise: Annotated[float, Field(ge=0)] = Field(
        default=0.001, description="σ of the Gaussian noise added to every entry."
    )
    seed: int = Field(default=0, description="Seed of the noise.")
    layout: Literal["nexus", "legacy"] = Field(
        default="nexus", description="APS file layout written."
    )
    dtype: Literal["float64", "float32"] = Field(
        default="float64", description="Storage precision (float32 as the beamline writes)."
    )


class OutputSection(Section):
    directory: str = Field(
        default="heterojax-results", description="Result folder, relative to this file's folder."
    )
    overwrite: bool = Field(default=False, description="Replace existing results (else refuse).")
    plots: bool = Field(default=True, description="Write PNG plots into <directory>/plots.")


class Config(Section):
    """A whole `heterojax` configuration."""

    method: Literal["nlsq", "cmc", "both"] = Field(
        default="nlsq",
        description="What `heterojax fit` runs: nlsq, cmc or both (--method overrides).",
    )
    data: DataSection = Field(description="Which data to fit.")
    parameters: ParametersSection = Field(  # pyright: ignore[reportInvalidTypeForm]
        default_factory=ParametersSection,
        description="Per parameter {value, lower, upper, fixed}; a bare number sets the value.",
    )
    scaling: ScalingSection = Field(
        default_factory=ScalingSection, description="Contrast and offset per map."
    )
    nlsq: NLSQSection = Field(default_factory=NLSQSection, description="fit_nlsq options.")
    cmc: CMCSection = Field(default_factory=CMCSection, description="fit_cmc options.")
    simulate: SimulateSection = Field(
        default_factory=SimulateSection,
        description="`heterojax simulate`: writes data.file from the parameter values.",
    )
    output: OutputSection = Field(default_factory=OutputSection, description="Where results go.")
