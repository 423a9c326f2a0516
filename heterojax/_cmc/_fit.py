"""`fit_cmc`: consensus Monte Carlo over data shards with BlackJAX NUTS.

`fit_cmc` runs in phases, each a function of this module:

1. `_problem_setup`: the fit problem (free parameters, bounds, scaling, σ) and the prior;
2. `_shards_and_coordinates`: the data split into K shards, each shard's Laplace fit and the
   whitened coordinates NUTS samples in (`_coordinates`); `shards="auto"` lowers K here while
   a shard is not Gaussian (Gaussian defect, or Laplace modes that disagree);
3. `run_nuts` (`_sampler`): warmup and draws of every shard × chain, in this process, or one
   Dask task per shard with `client` (`_dask`); with `max_samples`, more draws of every chain
   while an ESS falls short (`_sample_until_effective`);
4. `_combine_draws`: draws back in θ, put in the canonical labelling of the exchange symmetry,
   combined (consensus or mixture) and mapped to the bounded parameters;
5. `_diagnose`: per-shard R̂, ESS, E-BFMI, divergences, the Gaussian-shard checks, the verdict;
   with `shards="auto"`, draws whose shards fail those checks send the run back to phase 2
   with K / 2 (phases 3–5 are `_sample_and_diagnose`).
"""

import dataclasses
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PRNGKeyArray
from scipy import stats

from .._data._xpcs_data import XPCSData
from .._fit._nlsq_result import NLSQResult
from .._fit._problem import FitProblem, build_problem
from .._fit._roi import describe_model, fit_bins
from .._fit._scaling import estimate_contrast_offset, resolve_scaling
from .._fit._strategies import exact_two_angle_twin
from .._model._heterodyne import HeterodyneModel
from .._threads import available_cores
from ._adjustment import (
    AbstractLikelihoodAdjustment,
    describe_adjustment,
    resolve_adjustment,
)
from ._combine import consensus_combine, mixture_combine, shard_agreement, shard_moments
from ._coordinates import (
    MAX_THETA_SD,
    ShearedPosterior,
    gaussian_defect,
    offset_shear,
    shard_laplace,
    shard_preconditioners,
    sheared_laplace,
    sheared_to_theta,
)
from ._diagnostics import bfmi, ess_bulk, ess_tail, rhat
from ._labelling import canonical_theta
from ._marginal import complete_scaling
from ._posterior import (
    PreconditionedPosterior,
    ShardPosterior,
    WhitenedShard,
    gather_shard_data,
    gauss_newton_information,
)
from ._result import CMCResult
from ._sampler import CHAIN_METHODS, NUTSRun, resolve_chain_method, run_nuts
from ._settings import NUTS
from ._shards import SHARD_STRATEGIES, Shards, make_shards
from ._verdict import (
    RunSettings,
    Thresholds,
    chain_separation,
    ess_shortfall,
    make_verdict,
    samples_for_ess,
    shards_not_gaussian,
)


COMBINE_METHODS = ("consensus", "mixture")
PRIOR_KINDS = ("uniform", "informed")
# shards="auto" halves K while some shard's log density departs from its Laplace approximation
# by more than this many nats within two shard sds (`_coordinates.gaussian_defect`). A Gaussian
# gives 0; a defect of 1 nat at 2 sd changes the density there by a factor e, beyond which the
# Gaussian product of the consensus step is visibly biased.
AUTO_GAUSSIAN_DEFECT = 1.0
# Up to this many shards, phase 2 holds each shard as whole maps (`_shards_and_coordinates`):
# K full-data passes per evaluation, against one compilation per K tried.
MAPS_MAX_SHARDS = 4
# One shard's passes over the data (its Laplace fit, the adjustment's information) take the
# model's dense Jacobian over every entry of the whole maps at once. `shards="auto"` prefers one
# shard on few cores only while that Jacobian stays under this many bytes: at most what phase 2
# held before on whole maps (K ≤ 4 shards of < 100 000 pairs); larger data keep the size rule's
# tiles, K shards of ≥ 20 000 pairs (`_side_by_side_shards`).
ONE_SHARD_MAX_JACOBIAN_BYTES = 2**28


def _scaling_kind_free(names: tuple[str, ...], kind: str) -> bool:
    return any(n == kind or n.startswith((f"{kind}[", f"{kind}_")) for n in names)


def _settings_from_nlsq(nlsq: NLSQResult, model: HeterodyneModel, fixed, bounds, scaling, order):
    """fixed / bounds / scaling / Fourier order of the NLSQ fit, unless given explicitly."""
    physics = model.parameter_names
    if tuple(nlsq.model.parameter_names) != tuple(physics):
        raise ValueError(
            "`nlsq` was fitted with a model of other parameters "
            f"({nlsq.model.parameter_names}) than `model` ({physics})."
        )
    if fixed is None:
        fixed = [n for n in physics if n not in nlsq.names]
        fixed += [k for k in ("contrast", "offset") if not _scaling_kind_free(nlsq.names, k)]
    if bounds is None:
        bounds = dict(nlsq.bounds)
    if scaling is None:
        scaling = nlsq.scaling
        if scaling == "fourier" and order is None:
            n_contrast = sum(n.startswith("contrast_") for n in nlsq.names)
            n_offset = sum(n.startswith("offset_") for n in nlsq.names)
            order = (max(n_contrast, n_offset) - 1) // 2
    return fixed, bounds, scaling, order


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}; got {value!r}.")
    return int(value)


# ------------------------------------------------------------------ phase 1: the problem


class _Setup(NamedTuple):
    """What phase 1 hands on: the problem, its centre, the prior, the noise."""

    problem: FitProblem
    center_x: np.ndarray
    prior_mean: np.ndarray
    prior_precision: np.ndarray
    sigma: np.ndarray
    noise: str


def _angle_windows(model: HeterodyneModel, fixed, bounds) -> dict:
    """`bounds` with the box of every free angle (a parameter whose box is one period of the
    model, `ParameterSpec.wraps`: φ0 on [−90°, 90°)) moved to the period centred on the start
    (the NLSQ value where given): [φ̂0 − 90°, φ̂0 + 90°].

    The box of an angle is a window on a circle. Its prior (uniform over one period) is the
    same wherever the window lies, but a window whose edge cuts the posterior leaves NUTS a
    truncated piece at each end (a flow at 88° ± 3° would be sampled up to 90° and never from
    −90° on). Centred on the mode, the window's edges lie half a period from it; draws are
    reported in that window (e.g. 95° for −85°).
    """
    bounds = dict(bounds or {})
    values = model.to_dict()
    for spec in model.parameter_specs:
        if spec.name in fixed or spec.period <= 0:
            continue
        lower, upper = bounds.get(spec.name, (spec.lower, spec.upper))
        if spec.with_bounds(float(lower), float(upper)).wraps:
            centre = float(values[spec.name])
            bounds[spec.name] = (centre - spec.period / 2, centre + spec.period / 2)
    return bounds


def _problem_setup(
    model,
    data,
    nlsq,
    *,
    fixed,
    bounds,
    scaling,
    fourier_order,
    contrast,
    offset,
    sigma,
    priors,
    prior_width,
    roi,
) -> _Setup:
    """The `FitProblem`, the centre x̂ (NLSQ values where given), the (informed) prior, σ."""
    template = model
    if nlsq is not None:
        fixed, bounds, scaling, fourier_order = _settings_from_nlsq(
            nlsq, model, fixed, bounds, scaling, fourier_order
        )
        template = nlsq.model
    fixed = () if fixed is None else tuple(fixed)
    bounds = _angle_windows(template, fixed, bounds)
    scaling = "auto" if scaling is None else scaling
    phi = np.asarray(data.phi)
    resolved = resolve_scaling(scaling, phi, order=fourier_order, q=np.asarray(data.q))
    if nlsq is not None and contrast is None and offset is None:
        start_contrast, start_offset = np.asarray(nlsq.contrast), np.asarray(nlsq.offset)
    else:
        estimated = estimate_contrast_offset(np.asarray(data.c2), np.asarray(data.mask))
        start_contrast = estimated[0] if contrast is None else np.asarray(contrast, float)
        start_offset = estimated[1] if offset is None else np.asarray(offset, float)
    if sigma is not None:
        noise = "argument"
    elif data.sigma is not None:
        noise = "data"
    elif nlsq is not None:
        noise, sigma = "nlsq", np.asarray(nlsq.sigma, float)[:, None, None]
    else:
        noise = "estimated"
    problem, x0, sigma_used = build_problem(
        template,
        data,
        fixed=fixed,
        bounds=bounds,
        scaling=resolved,
        contrast=np.broadcast_to(start_contrast, phi.shape),
        offset=np.broadcast_to(start_offset, phi.shape),
        sigma=sigma,
        bins=nlsq.bins if nlsq is not None and roi is None else fit_bins(template, data, roi=roi),
        periodic=False,  # a posterior needs a bounded window: `_angle_windows` centres it
    )
    names = problem.names
    if not names:
        raise ValueError("Every parameter is fixed; free at least one to sample.")
    center_x = np.array(x0, float)
    prior_mean = np.zeros(len(names))
    prior_precision = np.zeros(len(names))
    if nlsq is not None:
        lower, upper = np.asarray(problem.transform.lower), np.asarray(problem.transform.upper)
        nlsq_values = dict(zip(nlsq.names, np.asarray(nlsq.values, float)))
        nlsq_sd = np.sqrt(np.abs(np.diagonal(np.asarray(nlsq.covariance, float))))
        nlsq_sd = dict(zip(nlsq.names, nlsq_sd))
        for p, name in enumerate(names):
            if name in nlsq_values:
                center_x[p] = np.clip(nlsq_values[name], lower[p], upper[p])
                if priors == "informed" and np.isfinite(nlsq_sd[name]) and nlsq_sd[name] > 0:
                    prior_mean[p] = nlsq_values[name]
                    prior_precision[p] = 1.0 / (float(prior_width) * nlsq_sd[name]) ** 2
    return _Setup(problem, center_x, prior_mean, prior_precision, np.asarray(sigma_used), noise)


# ------------------------------------------------------------------ phase 2: shards, coordinates


class _Coordinates(NamedTuple):
    """What phase 2 hands on: the shards, the posterior, and each shard's whitened coordinates."""

    shards: Shards
    posterior: ShearedPosterior
    whitened: WhitenedShard
    laplace_sd: np.ndarray  # (shard, p): sd of each shard's Laplace approximation in θ
    gaussian_defect: np.ndarray  # (shard,)
    reduced_from: int | None  # the K "auto" started from, when it lowered K
    laplace_agreement: np.ndarray  # (shard, p): `shard_agreement` of the Laplace Gaussians
    adjustment_review: str | None = None  # why the adjustment's review replaced it


def _nlsq_covariance(posterior, center, shard_data, nlsq, n_shards) -> np.ndarray:
    """K × the NLSQ covariance of the sampled coordinates in θ, C_θ = K · D⁻¹ C_x D⁻¹ (D = dx/dθ
    at the centre), or the Gauss–Newton one at the centre where NLSQ gives none
    (`NUTS(whitening="nlsq")`)."""
    names = posterior.sampled_names
    if nlsq is not None and all(n in nlsq.names for n in names):
        index = [nlsq.names.index(n) for n in names]
        covariance = np.asarray(nlsq.covariance, float)[np.ix_(index, index)]
        derivative = np.asarray(posterior.sampled_transform().derivative(center))
        if np.all(np.isfinite(covariance)) and np.all(derivative > 0):
            return n_shards * covariance / np.outer(derivative, derivative)
    information = np.asarray(gauss_newton_information(posterior, center, shard_data))
    information = information / n_shards + np.eye(len(names)) / MAX_THETA_SD**2
    return np.linalg.pinv(0.5 * (information + information.T), hermitian=True)


def _adjusted(adjustment, posterior, shard_data, nlsq, center):
    """The adjusted shard posterior, after the adjustment's review (`review`): (posterior, None)
    or, when the review replaced the adjustment, (the replacement's posterior, why)."""
    if nlsq is not None and not nlsq.success and adjustment.built_at_maximum:
        warnings.warn(
            f"fit_cmc: the NLSQ warm start did not converge ({nlsq.message}); the likelihood "
            "adjustment is built at its solution as if it were the maximum of the likelihood. "
            "Refit (e.g. fit_nlsq(..., max_steps=2048)) and pass the converged result.",
            stacklevel=5,
        )
    adjusted = adjustment.adjust(posterior, shard_data=shard_data, nlsq=nlsq, center=center)
    review = adjustment.review(adjusted, shard_data=shard_data, nlsq=nlsq, center=center)
    if review is None:
        return adjusted, None
    replacement, reason = review
    warnings.warn(f"fit_cmc likelihood adjustment: {reason}.", stacklevel=5)
    return replacement.adjust(posterior, shard_data=shard_data, nlsq=nlsq, center=center), reason


def _adjusted_posterior(
    setup: _Setup, data, shard_data, sampler: NUTS, adjustment, nlsq
) -> tuple[ShardPosterior, str | None]:
    """The adjusted shard posterior (`_adjusted`) and why its review replaced the adjustment.

    Neither depends on K: the adjustment is built from the full-data information (summed over
    all shards) and the untempered prior. So `shards="auto"` builds it once, for the first K,
    and the shard count only sets the tempering 1/K (`_coordinates_for`).
    """
    problem = setup.problem
    posterior = ShardPosterior(
        problem=problem,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        tempering=jnp.asarray(1.0 / shard_data.observed.shape[0]),
        prior_mean=jnp.asarray(setup.prior_mean),
        prior_precision=jnp.asarray(setup.prior_precision),
        marginal_scaling=sampler.scaling == "marginal"
        and problem.n_parameters > problem.n_free_physics,
    )
    return _adjusted(adjustment, posterior, shard_data, nlsq, _center(setup, posterior))


def _center(setup: _Setup, posterior: ShardPosterior):
    """θ̂: the full-data centre in the sampler's coordinates."""
    center = setup.problem.transform.to_unconstrained(jnp.asarray(setup.center_x))
    return center[: posterior.n_sampled]


def _coordinates_for(
    setup: _Setup, data, shards: Shards, shard_data, sampler: NUTS, adjusted, nlsq
) -> _Coordinates:
    """Each shard's Laplace fit, whitened coordinates and Gaussian defect, for the shards of
    `shards` (`shard_data` their entries) and the adjusted posterior `adjusted` = (posterior,
    review) of `_adjusted_posterior`."""
    n_shards = shards.n_shards
    posterior, review = adjusted
    posterior = dataclasses.replace(posterior, tempering=jnp.asarray(1.0 / n_shards))
    center = _center(setup, posterior)
    shear = offset_shear(
        setup.problem,
        data.t,
        data.q,
        data.phi,
        center,
        enabled=sampler.shear_offset and sampler.whitening == "shard",
    )
    if sampler.whitening == "shard":
        modes, covariances = shard_laplace(posterior, center, shard_data)
    else:
        covariance = _nlsq_covariance(posterior, center, shard_data, nlsq, n_shards)
        modes = jnp.broadcast_to(center, (n_shards, center.shape[0]))
        covariances = jnp.broadcast_to(jnp.asarray(covariance), (n_shards, *covariance.shape))
    laplace_sd = np.sqrt(np.clip(np.diagonal(np.asarray(covariances), axis1=1, axis2=2), 0, None))
    modes, covariances = sheared_laplace(shear, modes, covariances)
    preconditioner = shard_preconditioners(modes, covariances)
    sampled = ShearedPosterior(posterior, shear)
    defect = np.asarray(gaussian_defect(sampled, preconditioner, shard_data))
    return _Coordinates(
        shards,
        sampled,
        WhitenedShard(shard_data, preconditioner),
        laplace_sd,
        defect,
        None,
        shard_agreement(modes, covariances),
        review,
    )


def _whole_maps_jacobian_bytes(problem: FitProblem) -> int:
    """The bytes of the model's dense Jacobian over every entry of the whole maps (maps × N² ×
    parameters, float64): what one shard's passes over the data hold at once."""
    return 8 * int(np.prod(problem.data.shape)) * int(problem.n_parameters)


def _side_by_side_shards(client, chains: int, jacobian_bytes: int) -> int | None:
    """How many shards' chains can run at the same time where this machine's CPU cores bound
    the run: ⌊cores / chains⌋ in this process on one CPU device, or on the embedded cluster of
    `client=True`; `None` (no bound) on accelerators, on a cluster of the user's, or where one
    shard's Jacobian over the whole maps (`jacobian_bytes`, `_whole_maps_jacobian_bytes`) would
    exceed `ONE_SHARD_MAX_JACOBIAN_BYTES` (`auto_shard_count`)."""
    if jacobian_bytes > ONE_SHARD_MAX_JACOBIAN_BYTES:
        return None
    if client is None:
        devices = jax.local_devices()
        if len(devices) > 1 or devices[0].platform != "cpu":
            return None
    elif client is not True:
        return None
    return max(available_cores() // chains, 1)


def _shards_and_coordinates(
    setup: _Setup, data, *, shards, shard_strategy, seed, sampler, adjustment, nlsq, thresholds,
    side_by_side: int | None = None, adjusted=None, started_from: int | None = None,
    auto_from: int | None = None,
) -> _Coordinates:  # fmt: skip
    """Shards of the used entries and each shard's whitened coordinates; with `shards="auto"`,
    K starts from `auto_shard_count` (bounded by `side_by_side`, `_side_by_side_shards`) and is
    halved while any shard's Gaussian defect exceeds `AUTO_GAUSSIAN_DEFECT`, or its
    Laplace mode lies more than `thresholds.shard_agreement` of its Laplace sds from the
    consensus of all shards' Laplace Gaussians (the verdict's agreement check, before any
    draw; `laplace_disagree`). The adjusted posterior is built once: it does not depend on K.
    `adjusted` (posterior, review): that of an earlier call, reused; `started_from`: the K an
    earlier call started from (for `reduced_from`); `auto_from`: the K `"auto"` starts from
    here — both when this call is `fit_cmc`'s K / 2 after non-Gaussian draws.

    Up to `MAPS_MAX_SHARDS` shards, this phase holds the shards as whole maps (`ShardData`,
    `"maps"`): each shard then has the shapes of the full data, so the programs of the Laplace
    fits and the Gaussian defects compile once for every K tried (and for the adjustment's
    full-data checks). The data the sampler gets are in the layout whose gradient is cheaper
    (`_sampling_layout`)."""
    mask, c2 = np.asarray(data.mask), np.asarray(data.c2)
    first_k = shards if auto_from is None else auto_from
    index = make_shards(
        mask, first_k, strategy=shard_strategy, seed=seed, side_by_side=side_by_side
    )
    layout = "maps" if index.n_shards <= MAPS_MAX_SHARDS else "tiles"
    shard_data = gather_shard_data(index, c2, setup.sigma, layout)
    if adjusted is None:
        adjusted = _adjusted_posterior(setup, data, shard_data, sampler, adjustment, nlsq)
    coordinates = _coordinates_for(setup, data, index, shard_data, sampler, adjusted, nlsq)
    first = index.n_shards if started_from is None else started_from
    while shards == "auto" and index.n_shards > 1:
        defect = np.max(coordinates.gaussian_defect)
        if not (defect > AUTO_GAUSSIAN_DEFECT or laplace_disagree(coordinates, thresholds)):
            break
        index = make_shards(mask, index.n_shards // 2, strategy=shard_strategy, seed=seed)
        shard_data = gather_shard_data(index, c2, setup.sigma, layout)
        coordinates = _coordinates_for(setup, data, index, shard_data, sampler, adjusted, nlsq)
    if index.n_shards != first:
        coordinates = coordinates._replace(reduced_from=first)
    sampling = _sampling_layout(index.n_shards, setup.problem.bins is not None)
    if sampling != layout:
        whitened = coordinates.whitened
        sampled_data = gather_shard_data(index, c2, setup.sigma, sampling)
        coordinates = coordinates._replace(
            whitened=WhitenedShard(sampled_data, whitened.preconditioner)
        )
    return coordinates


def laplace_disagree(coordinates: _Coordinates, thresholds: Thresholds) -> bool:
    """Whether some shard's Laplace mode lies more than `thresholds.shard_agreement` of its
    Laplace sds from the consensus mean of the shards' Laplace Gaussians: the shard is not
    the Gaussian its curvature describes (measured on the 8-map ROI problem of
    `bench_cmc_roi.py`, seed 4: at K = 4 the shards' f0 modes ranged over 0.12–0.96 against
    Laplace sds of 0.7–0.9 in θ, agreement up to 4.7, while the probes of `gaussian_defect`
    found at most 0.6 nats; sampled, that K gave a consensus φ0 5.4 sd from the truth)."""
    return bool(np.nanmax(coordinates.laplace_agreement) > thresholds.shard_agreement)


def _sampling_layout(n_shards: int, roi: bool) -> str:
    """The layout of the data NUTS samples: whole maps for one shard of the ROI model, tiles
    otherwise.

    A whole-map pass evaluates every map in full (both triangles), whatever the shard holds,
    with the ROI model's node sum as a structured rank-k product; tiles evaluate only the
    shard's entries, about 1/K of the data, each entry with its own node sum. Measured inside
    NUTS, one shard: with the ROI model (8 maps × 150², 2 × 3 nodes, marginal density, one
    chain) 24 ms a leapfrog step on whole maps, 62 ms on tiles; with the bin-centre model
    (`benchmarks/bench_cmc_speed.py`, 3 maps × 200², 4 chains × (500 + 250)) 61 s a run on
    tiles, 94 s on whole maps (and 70 s for K = 3 shards on tiles). Several shards keep tiles:
    their cost falls with K."""
    return "maps" if n_shards == 1 and roi else "tiles"


# ------------------------------------------------------------------ phase 4: combination


class _Draws(NamedTuple):
    theta_shards: jax.Array  # (shard, chain, draw, p), canonical labelling
    x_shards: np.ndarray
    x_combined: np.ndarray
    samples: dict[str, np.ndarray]
    shard_samples: dict[str, np.ndarray]
    n_exchanged: int  # shard draws moved to the canonical labelling


@eqx.filter_jit
def _to_bounded(problem: FitProblem, theta):
    """x(θ) for any leading batch shape."""
    flat = theta.reshape(-1, theta.shape[-1])
    return jax.vmap(problem.transform.to_bounded)(flat).reshape(theta.shape)


@eqx.filter_jit
def _per_map_scaling(problem: FitProblem, x):
    """Contrast and offset per map of every draw, `(*batch, phi)` each."""
    flat = x.reshape(-1, x.shape[-1])
    contrast, offset = jax.vmap(lambda v: problem.unpack(v)[1:])(flat)
    shape = x.shape[:-1] + (contrast.shape[-1],)
    return contrast.reshape(shape), offset.reshape(shape)


def _shard_theta(coordinates: "_Coordinates", run: NUTSRun, key) -> tuple[jax.Array, str]:
    """Every shard's draws as full vectors in θ: the sampled coordinates mapped back, and with
    a marginalised posterior the scaling coefficients drawn from their conditional
    (`_marginal.complete_scaling`); with a warning when some of those fell outside their box
    ("" when none did)."""
    whitened = coordinates.whitened
    posterior = coordinates.posterior.posterior
    sampled = whitened.preconditioner.shards_to_theta(run.position)
    theta = sheared_to_theta(coordinates.posterior.shear, sampled)
    if not posterior.marginal_scaling:
        return theta, ""
    theta, outside = complete_scaling(posterior, theta, whitened.data, key)
    outside = int(outside)
    if not outside:
        return theta, ""
    total = int(np.prod(theta.shape[:-1])) * (theta.shape[-1] - posterior.n_sampled)
    return theta, (
        f"fit_cmc: {outside} of {total} contrast/offset draws fell outside their bounds "
        "(moved onto them): integrated out, their box prior is a Gaussian of the box's "
        "mean and variance. Widen the bounds, or sample them with NUTS(scaling='sampled')."
    )


def _sample(density, coordinates: "_Coordinates", positions, key, *, client, **options):
    """`run_nuts` of every shard × chain, in this process (`client` None) or one Dask task per
    shard: `(run, n_devices, the worker of each shard, seconds it took)`."""
    began = time.perf_counter()
    if client is None:
        run, n_devices = run_nuts(density, coordinates.whitened, positions, key, **options)
        workers = ()
    else:
        from ._dask import run_nuts_on_dask

        run, n_devices, workers = run_nuts_on_dask(
            client, density, coordinates.whitened, positions, key, **options
        )
    return run, n_devices, workers, time.perf_counter() - began


def _sample_until_effective(
    density, coordinates: "_Coordinates", start, key, assess, *, max_samples, thresholds,
    client, **options,
):  # fmt: skip
    """Phases 3–5: warmup and `samples` draws per chain, then — while a shard's bulk or tail
    ESS falls short of `thresholds` and `max_samples` allows — more draws of every chain,
    continued from its last draw with its adapted step size and metric, as many as the
    shortfall asks (`samples_for_ess`, the number the verdict would advise), at most
    `max_samples` per chain in all. `assess(run)` is phases 4–5 of the draws so far
    (`_Assessed`); no more are drawn once it asks for fewer shards.

    **Returns:** `(run, assessed, n_devices, workers, seconds of warmup and draws)`.
    """
    run, n_devices, workers, seconds = _sample(
        density, coordinates, start, key, client=client, **options
    )
    drawn, extensions = options["samples"], 0
    while True:
        assessed = assess(run)
        shortfall = ess_shortfall(assessed.diagnosed.shard_diagnostics, thresholds)
        wanted = min(samples_for_ess(drawn, shortfall), max_samples)
        if assessed.fewer_shards or shortfall <= 1.0 or wanted <= drawn:
            return run, assessed, n_devices, workers, seconds
        if options["progress"]:
            print(
                f"[heterojax.fit_cmc] an ESS {shortfall:.2f}× short of its threshold: "
                f"{wanted - drawn} more draws per chain ({wanted} in all)",
                file=sys.stderr,
                flush=True,
            )
        extensions += 1
        continuation = {**options, "warmup": 0, "samples": wanted - drawn}
        more, _, _, more_seconds = _sample(
            density, coordinates, run.position[:, :, -1], jr.fold_in(key, extensions),
            client=client, adapted=run.adapted(), **continuation,
        )  # fmt: skip
        run, drawn, seconds = run.followed_by(more), wanted, seconds + more_seconds


def _combine_draws(problem: FitProblem, theta_shards, combine, key):
    """Shard draws in θ (canonical labelling), combined; both also as bounded parameters."""
    theta_shards, exchanged = canonical_theta(problem, theta_shards)
    if combine == "consensus":
        theta_combined = consensus_combine(theta_shards)
    else:
        theta_combined = mixture_combine(theta_shards, key)
    x_shards = np.asarray(_to_bounded(problem, theta_shards))
    x_combined = np.asarray(_to_bounded(problem, theta_combined))
    samples, shard_samples = {}, {}
    for p, name in enumerate(problem.names):
        if name in ("contrast", "offset"):
            continue
        samples[name] = x_combined[..., p]
        shard_samples[name] = x_shards[..., p]
    for target, values in ((samples, x_combined), (shard_samples, x_shards)):
        contrast_values, offset_values = _per_map_scaling(problem, jnp.asarray(values))
        target["contrast"] = np.asarray(contrast_values)
        target["offset"] = np.asarray(offset_values)
    return _Draws(theta_shards, x_shards, x_combined, samples, shard_samples, int(exchanged))


# ------------------------------------------------------------------ phase 5: diagnostics


def _per_shard_diagnostics(draws: np.ndarray) -> dict[str, np.ndarray]:
    """R̂, bulk and tail ESS of `(shard, chain, draw, p)` draws, `(shard, p)` each."""
    n_shards, _, _, n_parameters = draws.shape
    out = {k: np.empty((n_shards, n_parameters)) for k in ("r_hat", "ess_bulk", "ess_tail")}
    for k in range(n_shards):
        for p in range(n_parameters):
            chains = draws[k, :, :, p]
            out["r_hat"][k, p] = rhat(chains)
            out["ess_bulk"][k, p] = ess_bulk(chains)
            out["ess_tail"][k, p] = ess_tail(chains)
    return out


class _Diagnosed(NamedTuple):
    """What phase 5 hands on (`_diagnose`)."""

    diagnostics: dict
    shard_diagnostics: dict
    combined_diagnostics: dict
    verdict: Any
    not_gaussian: str | None  # the first failed check of the consensus product


def _diagnose(
    names, draws: _Draws, run: NUTSRun, coordinates: _Coordinates, thresholds, settings, twin
) -> _Diagnosed:
    """Per-shard diagnostics (after canonicalisation), their worst values, those of the combined
    draws, the verdict (`twin`: the second flow of two-angle data, which no chain visits), and
    the first failed check of the consensus product (`shards_not_gaussian`; None for K = 1)."""
    n_shards = draws.x_shards.shape[0]
    n_parameters = len(names)
    per_shard = _per_shard_diagnostics(draws.x_shards)
    per_shard["chain_separation"] = chain_separation(draws.x_shards)
    energy = np.asarray(run.energy)
    divergent = np.asarray(run.divergent)
    depth = np.asarray(run.tree_depth)
    theta_flat = np.asarray(draws.theta_shards).reshape(n_shards, -1, n_parameters)
    expected_sd = np.full((n_shards, n_parameters), np.nan)  # unknown for drawn coefficients
    expected_sd[:, : coordinates.laplace_sd.shape[1]] = coordinates.laplace_sd
    shard_diagnostics = {
        **per_shard,
        # The Gaussian-shard checks of the consensus product, in the unconstrained θ.
        "width_ratio": theta_flat.std(axis=1) / np.where(expected_sd > 0, expected_sd, np.inf),
        "skewness": np.asarray(stats.skew(theta_flat, axis=1)),
        "gaussian_defect": coordinates.gaussian_defect,
        "bfmi": np.stack([bfmi(energy[k]) for k in range(n_shards)]),
        "divergences": divergent.sum(axis=(1, 2)),
        "warmup_divergences": np.asarray(run.warmup_divergences).sum(axis=1),
        "tree_depth_saturation": (depth >= settings.max_tree_depth).mean(axis=(1, 2)),
        "acceptance": np.asarray(run.acceptance).mean(axis=(1, 2)),
        "integration_steps": np.asarray(run.n_steps).mean(axis=(1, 2)),
        "step_size": np.asarray(run.step_size),
    }
    diagnostics = {
        "r_hat": {n: float(np.nanmax(per_shard["r_hat"][:, p])) for p, n in enumerate(names)},
        "ess_bulk": {n: float(np.nanmin(per_shard["ess_bulk"][:, p])) for p, n in enumerate(names)},
        "ess_tail": {n: float(np.nanmin(per_shard["ess_tail"][:, p])) for p, n in enumerate(names)},
        "bfmi": shard_diagnostics["bfmi"].min(axis=1),
        "divergences": shard_diagnostics["divergences"],
    }
    x_combined = draws.x_combined
    combined_diagnostics = {
        "r_hat": {n: rhat(x_combined[..., p]) for p, n in enumerate(names)},
        "ess_bulk": {n: ess_bulk(x_combined[..., p]) for p, n in enumerate(names)},
        "ess_tail": {n: ess_tail(x_combined[..., p]) for p, n in enumerate(names)},
    }
    agreement = shard_agreement(*shard_moments(draws.theta_shards))
    verdict = make_verdict(
        names=names,
        shard_diagnostics=shard_diagnostics,
        agreement=agreement,
        thresholds=thresholds,
        settings=settings,
        adjustment_review=coordinates.adjustment_review,
        twin=twin,
    )
    not_gaussian = None
    if n_shards > 1:
        not_gaussian = shards_not_gaussian(names, shard_diagnostics, agreement, thresholds)
    return _Diagnosed(diagnostics, shard_diagnostics, combined_diagnostics, verdict, not_gaussian)


class _Assessed(NamedTuple):
    """Phases 4–5 of the draws so far: the combined `draws`, a warning ("" for none), the
    diagnostics, and whether `shards="auto"` should sample again with K / 2."""

    draws: "_Draws"
    warning: str
    diagnosed: _Diagnosed
    fewer_shards: bool


class _Sampled(NamedTuple):
    """What phases 3–5 hand on."""

    run: NUTSRun
    assessed: _Assessed
    n_devices: int
    shard_workers: tuple[str, ...]
    chain_method: str
    sampling_time: float  # seconds of warmup and draws (every round of draws)


def _sample_and_diagnose(
    setup: _Setup, coordinates: _Coordinates, sampler: NUTS, *, chains, warmup, samples,
    max_samples, combine, chain_method, progress, thresholds, client, shards_auto, nlsq,
    shard_strategy, twin, keys,
):  # fmt: skip
    """Phases 3–5 for the shards and coordinates of phase 2: NUTS from jittered starts (more
    draws while an ESS falls short, `_sample_until_effective`), the combination, and the
    diagnostics and verdict (`_Assessed.fewer_shards` asks `shards="auto"` for K / 2: then no
    more draws are spent on these shards)."""
    problem = setup.problem
    init_key, sample_key, mixture_key = keys
    n_shards = coordinates.shards.n_shards
    n_sampled = coordinates.posterior.posterior.n_sampled
    start = sampler.init_jitter * jr.normal(init_key, (n_shards, chains, n_sampled))
    chain_method = resolve_chain_method(chain_method, coordinates.whitened)
    nuts_options = dict(
        warmup=warmup,
        samples=samples,
        target_accept=float(sampler.target_accept),
        max_tree_depth=int(sampler.max_tree_depth),
        dense_mass=sampler.dense(n_sampled),
        chain_method=chain_method,
    )
    density = PreconditionedPosterior(coordinates.posterior)

    def assess(run: NUTSRun) -> _Assessed:  # 4. combination and 5. diagnostics
        theta_shards, warning = _shard_theta(coordinates, run, jr.fold_in(mixture_key, 1))
        draws = _combine_draws(problem, theta_shards, combine, mixture_key)
        settings = RunSettings(
            warmup=warmup,
            samples=int(run.position.shape[2]),
            chains=chains,
            n_shards=n_shards,
            shards_auto=shards_auto,
            reduced_from=coordinates.reduced_from,
            target_accept=float(sampler.target_accept),
            max_tree_depth=int(sampler.max_tree_depth),
            dense_mass=sampler.dense(n_sampled),
            nlsq=nlsq,
            shard_strategy=shard_strategy,
        )
        diagnosed = _diagnose(problem.names, draws, run, coordinates, thresholds, settings, twin)
        fewer_shards = shards_auto and diagnosed.not_gaussian is not None
        return _Assessed(draws, warning, diagnosed, fewer_shards)

    sampled = _sample_until_effective(
        density, coordinates, start, sample_key, assess,
        max_samples=samples if max_samples is None else max_samples, thresholds=thresholds,
        client=client, progress=progress, **nuts_options,
    )  # fmt: skip
    run, assessed, n_devices, shard_workers, sampling_time = sampled
    return _Sampled(run, assessed, n_devices, shard_workers, chain_method, sampling_time)


# ------------------------------------------------------------------ the entry point


def _resolve_sampler(sampler, target_accept, max_tree_depth, dense_mass, init_jitter) -> NUTS:
    if sampler is None:
        sampler = NUTS()
    if not isinstance(sampler, NUTS):
        raise TypeError(f"`sampler` must be a heterojax.NUTS; got {type(sampler).__name__}.")
    changes = {
        name: value
        for name, value in (
            ("target_accept", target_accept),
            ("max_tree_depth", max_tree_depth),
            ("dense_mass", dense_mass),
            ("init_jitter", init_jitter),
        )
        if value is not None
    }
    if not changes:
        return sampler
    fields = {
        name: getattr(sampler, name)
        for name in (
            "target_accept",
            "max_tree_depth",
            "dense_mass",
            "init_jitter",
            "whitening",
            "shear_offset",
        )
    }
    return NUTS(**{**fields, **changes})  # validated by NUTS.__check_init__


def _check_client(client) -> None:
    """`client` is None, True, a scheduler address or a `distributed.Client` (checked before
    the problem is set up, not when the shards are sent)."""
    if client is None or client is True or isinstance(client, str):
        return
    from distributed import Client

    if not isinstance(client, Client):
        raise TypeError(
            "`client` must be None, True, a scheduler address or a distributed.Client; "
            f"got {client!r}."
        )


def _checked_arguments(
    model, data, nlsq, *, chains, warmup, samples, max_samples, combine, shard_strategy,
    chain_method, priors, prior_width, client,
) -> tuple[int, int, int, int | None]:  # fmt: skip
    """`fit_cmc`'s arguments checked (a clear error for each wrong one); returns the counts
    (chains, warmup, samples, max_samples) as ints."""
    if not isinstance(model, HeterodyneModel):
        raise TypeError(f"`model` must be a heterojax.HeterodyneModel; got {type(model).__name__}.")
    if not isinstance(data, XPCSData):
        raise TypeError(f"`data` must be a heterojax.XPCSData; got {type(data).__name__}.")
    if nlsq is not None and not isinstance(nlsq, NLSQResult):
        raise TypeError(
            f"`nlsq` must be a heterojax.NLSQResult or None; got {type(nlsq).__name__}."
        )
    chains = _check_positive_int("chains", chains)
    warmup = _check_positive_int("warmup", warmup, 1)
    samples = _check_positive_int("samples", samples, 4)
    if max_samples is not None:
        max_samples = _check_positive_int("max_samples", max_samples, samples)
    for name, value, allowed in (
        ("combine", combine, COMBINE_METHODS),
        ("shard_strategy", shard_strategy, SHARD_STRATEGIES),
        ("chain_method", chain_method, CHAIN_METHODS),
        ("priors", priors, PRIOR_KINDS),
    ):
        if value not in allowed:
            raise ValueError(f"`{name}` must be one of {allowed}; got {value!r}.")
    if priors == "informed" and nlsq is None:
        raise ValueError("priors='informed' needs an NLSQ result: pass nlsq=fit_nlsq(...).")
    if not float(prior_width) > 0:
        raise ValueError(f"`prior_width` must be positive; got {prior_width!r}.")
    _check_client(client)
    return chains, warmup, samples, max_samples


def _sample_while_not_gaussian(
    setup: _Setup, data, coordinates: _Coordinates, sampler, phase_two: dict, run_options: dict,
) -> tuple[_Coordinates, _Sampled, float]:  # fmt: skip
    """Phases 3–5 (sampling, combination, diagnostics); with `shards="auto"`, while the draws
    show a shard that is not Gaussian (the consensus product would be biased), again with
    K / 2. Returns the last coordinates and run, and the sampling time of every K sampled."""
    sampled = _sample_and_diagnose(setup, coordinates, sampler, **run_options)
    sampling_time = sampled.sampling_time
    while sampled.assessed.fewer_shards:
        fewer = coordinates.shards.n_shards // 2
        if run_options["progress"]:
            print(
                f"[heterojax.fit_cmc] K = {coordinates.shards.n_shards} shards are not "
                f"Gaussian ({sampled.assessed.diagnosed.not_gaussian}): sampling again with "
                f"K = {fewer}",
                file=sys.stderr,
                flush=True,
            )
        coordinates = _shards_and_coordinates(
            setup, data, shards="auto", **phase_two, auto_from=fewer,
            adjusted=(coordinates.posterior.posterior, coordinates.adjustment_review),
            started_from=coordinates.reduced_from or coordinates.shards.n_shards,
        )  # fmt: skip
        sampled = _sample_and_diagnose(setup, coordinates, sampler, **run_options)
        sampling_time += sampled.sampling_time
    return coordinates, sampled, sampling_time


def _cmc_result(
    setup: _Setup, data, coordinates: _Coordinates, sampled: _Sampled, *, combine,
    shard_strategy, chains, warmup, priors, prior_width, wall_time, sampling_time,
) -> CMCResult:  # fmt: skip
    """The `CMCResult` of a finished run: draws, the model at the combined mean, diagnostics,
    sampler statistics and the settings that produced them."""
    problem = setup.problem
    names = problem.names
    run, draws, diagnosed = sampled.run, sampled.assessed.draws, sampled.assessed.diagnosed
    x_mean = jnp.asarray(draws.x_combined.reshape(-1, len(names)).mean(0))
    return CMCResult(
        names=names,
        samples=draws.samples,
        shard_samples=draws.shard_samples,
        draws=draws.x_combined,
        shard_draws=draws.x_shards,
        model=problem.unpack(x_mean)[0],
        combine=combine,
        diagnostics=diagnosed.diagnostics,
        shard_diagnostics=diagnosed.shard_diagnostics,
        combined_diagnostics=diagnosed.combined_diagnostics,
        verdict=diagnosed.verdict,
        sample_stats={
            "diverging": np.asarray(run.divergent),
            "energy": np.asarray(run.energy),
            "acceptance_rate": np.asarray(run.acceptance),
            "tree_depth": np.asarray(run.tree_depth),
            "n_steps": np.asarray(run.n_steps),
        },
        phi=np.asarray(data.phi),
        q=np.asarray(data.q),
        n_shards=coordinates.shards.n_shards,
        shard_sizes=coordinates.shards.counts(),
        shard_strategy=shard_strategy,
        chains=chains,
        warmup=warmup,
        n_samples=int(run.position.shape[2]),
        chain_method=sampled.chain_method,
        n_devices=sampled.n_devices,
        priors=priors,
        prior_width=float(prior_width),
        sigma=np.sqrt(np.mean(setup.sigma**2, axis=(1, 2))),
        noise=setup.noise,
        wall_time=wall_time,
        sampling_time=sampling_time,
        metadata=dict(data.metadata),
        model_description=describe_model(problem.bins),
        exchanged_draws=draws.n_exchanged,
        adjustment=describe_adjustment(coordinates.posterior.posterior),
        shard_workers=sampled.shard_workers,
    )


def fit_cmc(
    model: HeterodyneModel,
    data: XPCSData,
    *,
    key: PRNGKeyArray,
    nlsq: NLSQResult | None = None,
    shards: int | str = "auto",
    shard_strategy: str = "random",
    chains: int = 4,
    warmup: int = 500,
    samples: int = 1000,
    max_samples: int | None = None,
    combine: str = "consensus",
    fixed: Iterable[str] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    scaling: str | None = None,
    fourier_order: int | None = None,
    contrast=None,
    offset=None,
    sigma=None,
    priors: str = "uniform",
    prior_width: float = 2.0,
    sampler: NUTS | None = None,
    adjustment: AbstractLikelihoodAdjustment | str = "auto",
    target_accept: float | None = None,
    max_tree_depth: int | None = None,
    dense_mass: bool | str | None = None,
    init_jitter: float | None = None,
    chain_method: str = "auto",
    progress: bool = True,
    thresholds: Thresholds | None = None,
    roi: bool | None = None,
    client: Any = None,
) -> CMCResult:
    """Posterior of `model` given `data` by consensus Monte Carlo (Scott et al. 2016).

    The used entries of the data (pairs t1 < t2 of every map, plus the diagonal only when the
    data keep it) are split into K shards. Shard k is sampled from

        p_k(θ) ∝ p(θ)^{1/K} · Π_{(a,i,j) ∈ shard k} N(c2_aij | model(θ), σ_aij²),

    in unconstrained coordinates θ (x = x(θ) the bounded parameters; the tempered prior includes
    the log-Jacobian), by BlackJAX NUTS with Stan's window adaptation, each shard whitened by the
    Laplace approximation at its own mode (`NUTS.whitening`). At a constant fraction the exchange
    reference ↔ sample (f ↔ 1 − f) is an exact symmetry; draws are reported in the canonical
    labelling (the slower component is the reference) before they are combined and diagnosed.
    By default NUTS samples the free physics alone: the contrast/offset coefficients enter c2
    linearly and are integrated out of each shard's likelihood in closed form, then drawn from
    their exact conditional for every draw (`NUTS(scaling="marginal")`, `_marginal`).
    The shard posteriors are then combined: `"consensus"` (precision-weighted
    Gaussian product with full covariances, draw by draw) or `"mixture"` (pooled draws). The
    model is evaluated only at each shard's pairs (never as an N × N map).

    **Choices that matter:**

    - Pass `nlsq=fit_nlsq(...)`: each shard's mode is then sought from its solution (chains start
      there, jittered by `init_jitter` shard sds), and `fixed`, `bounds`, `scaling` default to
      the NLSQ fit's. Without it the search starts at `model`'s values — fine near the optimum,
      unreliable far from it (the likelihood has false minima).
    - `shards="auto"` takes K = clip(⌊n / 20 000⌋, 1, 64) for n used entries, so each shard keeps
      ≥ 20 000 points and small data are not split — but where this machine's cores bound the
      run (in this process on the CPU, or `client=True`) and one shard's Jacobian over the
      whole maps fits in 256 MiB, at most ⌊cores / chains⌋ shards, and
      one shard when fewer than 4 would run side by side: shards waiting for each other's
      cores save no time (with the ROI model they cost ~2.6× more: one shard is sampled on
      whole maps), and one shard's posterior is exact (`auto_shard_count`). Then, while a
      shard's log density departs from its Laplace approximation by more than
      `AUTO_GAUSSIAN_DEFECT` nats within two sds (`_coordinates.gaussian_defect`), or its
      Laplace mode lies more than
      `Thresholds.shard_agreement` of its Laplace sds from the consensus of the shards'
      Laplace Gaussians (`laplace_disagree`), K is halved: the consensus product is exact only
      for Gaussian shards. After sampling, while the draws show a shard that is not Gaussian (the
      verdict's checks of the consensus product: a shard's mean more than
      `Thresholds.shard_agreement` sds from the combined mean, a shard too wide for its Laplace
      approximation, or skewed), the run samples again with K / 2. An explicit K is used as
      given (the verdict reports non-Gaussian shards).

    **Arguments:**

    - `model`: the model (its laws; values of fixed parameters and the start when `nlsq` is not
        given).
    - `data`: an `XPCSData`.
    - `key`: a `jax.random` key (shard assignment, starting jitter, NUTS, mixture resampling).
    - `nlsq`: an `NLSQResult` of the same model and data (recommended).
    - `shards`: K, or `"auto"` (above).
    - `shard_strategy`: `"random"` or `"stratified"` (by lag; every shard sees every lag range).
    - `chains`, `warmup`, `samples`: chains per shard, adaptation steps and kept draws per chain.
    - `max_samples`: when given (≥ `samples`), a run whose bulk or tail ESS falls short of
        `thresholds` in some shard draws more: every chain continues from its last draw with
        its adapted step size and metric, as many draws as the verdict would advise (ESS
        grows in proportion to the draws; `samples_for_ess`), until the ESS holds or each
        chain has `max_samples` (the result's `n_samples`). Default: `samples`, no more.
        With `client`, each round of draws is a round of Dask tasks.
    - `combine`: `"consensus"` or `"mixture"`.
    - `fixed`, `bounds`, `scaling`, `fourier_order`, `contrast`, `offset`: as in `fit_nlsq`;
        default: those of `nlsq`, else nothing fixed, default bounds, `"auto"` scaling and
        contrast/offset estimated from the data. A free φ0 on its whole period is sampled on
        the period centred on its start, [φ̂0 − 90°, φ̂0 + 90°] (`_angle_windows`), so that no
        box edge cuts its posterior; its draws are reported in that window.
    - `sigma`: σ per entry or per map; default `data.sigma`, else the σ per map of `nlsq`, else
        a noise estimate from the maps.
    - `priors`: `"uniform"` (on the box, default) or `"informed"` (Gaussian around the NLSQ
        values with sd = `prior_width` × NLSQ standard error; needs `nlsq`).
    - `sampler`: the `NUTS` settings (target acceptance 0.9, tree depth 10, dense metric for
        ≤ 16 sampled parameters, per-shard whitening, contrast/offset integrated out:
        `NUTS.scaling`); `target_accept`, `max_tree_depth`, `dense_mass`, `init_jitter`, when
        given, replace the field of the same name.
    - `adjustment`: how the likelihood, which treats c2 entries as independent, is adjusted
        for their correlation (a composite likelihood; see `CurvatureAdjustment`): an
        `AbstractLikelihoodAdjustment`, `"none"`, `"curvature"`, `"magnitude"`, or `"auto"`
        (default): `CheckedCurvatureAdjustment()` when `nlsq` carries honest errors (an
        estimator other than `FormalErrors`, e.g. the default frame-clustered sandwich), so
        that the posterior has the NLSQ fit's honest covariance near its mode — or, where the
        likelihood is not Gaussian on that scale (the box narrows the honest Gaussian, or the
        adjusted posterior's Laplace approximation misses it, by more than 2× in sd), the
        magnitude-adjusted one, with a warning; else
        `NoAdjustment()` (exact for independent noise of known σ, as `simulate` makes).
    - `chain_method`: `"vectorized"` (vmap over shards × chains; split across devices when
        several exist), `"sequential"` (one compiled run per chain, as many side by side as
        the CPU has cores; memory is theirs alone), or `"auto"`:
        sequential on a single CPU device when every shard holds ≥ 2048
        entries (there, lock-step vmapped NUTS waits for each step's longest trajectory, which
        costs more than batching gains), vectorized otherwise. The result records the one used.
    - `progress`: print progress to stderr at every tenth of warmup and of sampling
        (vectorized), or at every tenth of all chains' steps (sequential).
    - `thresholds`: the `Thresholds` of the verdict (default: R̂ ≤ 1.01, ESS ≥ 400, E-BFMI ≥ 0.3,
        no divergences).
    - `roi`: the model of each map's detector bin, as in `fit_nlsq`: `None` (default) follows
        the NLSQ result when one is given, else the bin average (ROI) when `data.bins` is
        present; `False`: bin centres; `True`: the ROI model (needs `data.bins`).
    - `client`: where the shards are sampled. `None` (default): in this process, all shards in
        one compiled program. Otherwise each shard is one task on a `dask.distributed` cluster
        (warmup and draws of its chains, `chain_method` as resolved here), and the draws are
        combined and diagnosed here as in-process: `True` starts an embedded `LocalCluster` of
        min(K, CPU count) worker processes and closes it at the end; a scheduler address
        (`"tcp://host:8786"`) or a `distributed.Client` (e.g. of a
        `dask_jobqueue.SLURMCluster`) uses that cluster. Every worker runs JAX in float64
        (`HeterojaxSetup`). Shard k's chains draw the random numbers they draw in-process: with
        `chain_method="sequential"` the draws are those of `client=None` exactly (on the same
        hardware and JAX); vectorized, one shard's batch rounds differently from K shards'
        (~1e-16 a step, which NUTS amplifies: the same chains to ~1e-6 over short runs, the
        same posterior over long ones). Worth it when sampling dominates the run:
        large shards (each task then compiles its program once per worker and sends one shard's
        data), several machines, or more shards than one machine has cores; for small shards
        the cluster's start and the transfers cost more than they save. The result records the
        worker of each shard (`CMCResult.shard_workers`); `progress` then prints a line per
        finished shard (workers print nothing).

    **Returns:** a `CMCResult`.
    """
    began = time.perf_counter()
    chains, warmup, samples, max_samples = _checked_arguments(
        model, data, nlsq, chains=chains, warmup=warmup, samples=samples,
        max_samples=max_samples, combine=combine, shard_strategy=shard_strategy,
        chain_method=chain_method, priors=priors, prior_width=prior_width, client=client,
    )  # fmt: skip
    sampler = _resolve_sampler(sampler, target_accept, max_tree_depth, dense_mass, init_jitter)
    adjustment = resolve_adjustment(adjustment, nlsq)
    thresholds = Thresholds() if thresholds is None else thresholds

    # 1. the problem
    setup = _problem_setup(
        model, data, nlsq, fixed=fixed, bounds=bounds, scaling=scaling,
        fourier_order=fourier_order, contrast=contrast, offset=offset, sigma=sigma,
        priors=priors, prior_width=prior_width, roi=roi,
    )  # fmt: skip
    problem = setup.problem

    # 2. shards and coordinates
    shard_key, init_key, sample_key, mixture_key = jr.split(key, 4)
    seed = int(jr.randint(shard_key, (), 0, 2**31 - 1))
    phase_two = dict(
        shard_strategy=shard_strategy, seed=seed, sampler=sampler, adjustment=adjustment,
        nlsq=nlsq, thresholds=thresholds,
        side_by_side=_side_by_side_shards(client, chains, _whole_maps_jacobian_bytes(problem)),
    )  # fmt: skip
    coordinates = _shards_and_coordinates(setup, data, shards=shards, **phase_two)
    twin = exact_two_angle_twin(problem, problem.unpack(jnp.asarray(setup.center_x))[0])
    run_options = dict(
        chains=chains, warmup=warmup, samples=samples, max_samples=max_samples, combine=combine,
        chain_method=chain_method, progress=progress, thresholds=thresholds, client=client,
        shards_auto=shards == "auto", nlsq=nlsq is not None, shard_strategy=shard_strategy,
        twin=twin, keys=(init_key, sample_key, mixture_key),
    )  # fmt: skip
    # 3.–5. sampling, combination, diagnostics; with shards="auto", while the draws show a
    # shard that is not Gaussian (the consensus product would be biased), again with K / 2.
    coordinates, sampled, sampling_time = _sample_while_not_gaussian(
        setup, data, coordinates, sampler, phase_two, run_options
    )
    if sampled.assessed.warning:
        warnings.warn(sampled.assessed.warning, stacklevel=2)
    return _cmc_result(
        setup, data, coordinates, sampled, combine=combine, shard_strategy=shard_strategy,
        chains=chains, warmup=warmup, priors=priors, prior_width=prior_width,
        wall_time=time.perf_counter() - began, sampling_time=sampling_time,
    )  # fmt: skip
