"""`fit_cmc`: consensus Monte Carlo over data shards with BlackJAX NUTS."""

import time
from collections.abc import Iterable, Mapping

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
from .._model._heterodyne import HeterodyneModel
from ._combine import consensus_combine, consensus_gaussian, mixture_combine, shard_moments
from ._diagnostics import bfmi, ess_bulk, ess_tail, rhat
from ._posterior import (
    AffinePreconditioner,
    PreconditionedPosterior,
    ShardPosterior,
    gather_shard_data,
    gauss_newton_information,
)
from ._result import CMCResult
from ._sampler import CHAIN_METHODS, resolve_chain_method, run_nuts
from ._shards import SHARD_STRATEGIES, make_shards
from ._verdict import Thresholds, make_verdict


COMBINE_METHODS = ("consensus", "mixture")
PRIOR_KINDS = ("uniform", "informed")
# The preconditioner never assumes a shard sd above this many units of θ: beyond ~3 a
# sigmoid-bounded parameter already spans its whole box.
_MAX_THETA_SD = 3.0


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


def _theta_covariance(
    problem: FitProblem,
    posterior: ShardPosterior,
    center: jax.Array,
    shard_data,
    nlsq: NLSQResult | None,
    n_shards: int,
) -> tuple[np.ndarray, str]:
    """The expected covariance of one shard posterior in θ, and where it came from.

    From the NLSQ covariance C_x (full data) when it is finite for every parameter:
    C_θ = K · D⁻¹ C_x D⁻¹ with D = dx/dθ at the centre (a shard holds 1/K of the data).
    Otherwise from the Gauss–Newton information of the likelihood and the curvature of the
    tempered prior at the centre: C_θ = (F / K − (1/K) ∇² log p(θ))⁻¹.
    """
    names = problem.names
    if nlsq is not None and all(n in nlsq.names for n in names):
        index = [nlsq.names.index(n) for n in names]
        covariance = np.asarray(nlsq.covariance, float)[np.ix_(index, index)]
        if np.all(np.isfinite(covariance)):
            derivative = np.diag(np.asarray(jax.jacfwd(problem.transform.to_bounded)(center)))
            if np.all(derivative > 0):
                scaled = covariance / np.outer(derivative, derivative)
                return n_shards * scaled, "nlsq"
    information, prior_curvature = _curvatures(posterior, center, shard_data)
    information, prior_curvature = np.asarray(information), np.asarray(prior_curvature)
    shard_information = (information + prior_curvature) / n_shards
    shard_information += np.eye(len(names)) / _MAX_THETA_SD**2
    return np.linalg.pinv(0.5 * (shard_information + shard_information.T), hermitian=True), "gn"


@eqx.filter_jit
def _curvatures(posterior: ShardPosterior, center, shard_data):
    """Gauss–Newton information of the whole likelihood and −∇² log p(θ) at the centre."""
    information = gauss_newton_information(posterior, center, shard_data)
    return information, -jax.hessian(posterior.log_prior)(center)


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


def _preconditioner(center: jax.Array, covariance: np.ndarray) -> AffinePreconditioner:
    """θ = center + L z with L Lᵀ the covariance, its spread capped along every direction.

    The cap acts on eigenvalues (sd ≤ `_MAX_THETA_SD` along any direction, and a floor of 1e-10
    of the largest), not on marginal sds: rescaling a coordinate of a strongly correlated pair
    would misplace its narrow direction, which sets the step size.
    """
    covariance = 0.5 * (covariance + covariance.T)
    values, vectors = np.linalg.eigh(covariance)
    values = np.clip(values, 0.0, _MAX_THETA_SD**2)
    values = np.clip(values, 1e-10 * np.max(values), None)
    factor = np.linalg.cholesky((vectors * values) @ vectors.T)
    return AffinePreconditioner(center=center, factor=jnp.asarray(factor))


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


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"`{name}` must be an integer ≥ {minimum}; got {value!r}.")
    return int(value)


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
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    init_jitter: float = 0.5,
    chain_method: str = "auto",
    progress: bool = True,
    thresholds: Thresholds | None = None,
    roi: bool | None = None,
) -> CMCResult:
    """Posterior of `model` given `data` by consensus Monte Carlo (Scott et al. 2016).

    The used entries of the data (pairs t1 < t2 of every map, plus the diagonal only when the
    data keep it) are split into K shards. Shard k is sampled from

        p_k(θ) ∝ p(θ)^{1/K} · Π_{(a,i,j) ∈ shard k} N(c2_aij | model(θ), σ_aij²),

    in unconstrained coordinates θ (x = x(θ) the bounded parameters; the tempered prior includes
    the log-Jacobian), by BlackJAX NUTS with Stan's window adaptation, every shard × chain in one
    vmapped program. The shard posteriors are then combined: `"consensus"` (precision-weighted
    Gaussian product with full covariances, draw by draw) or `"mixture"` (pooled draws). The
    model is evaluated only at each shard's pairs (never as an N × N map).

    **Choices that matter:**

    - Pass `nlsq=fit_nlsq(...)`: chains then start at its solution (jittered by `init_jitter`
      shard sds), the sampler is preconditioned by its covariance (scaled by K), and `fixed`,
      `bounds`, `scaling` default to the NLSQ fit's. Without it, chains start at `model`'s values
      and the preconditioner is a Gauss–Newton estimate there — fine near the optimum, unreliable
      far from it (the likelihood has false minima).
    - `shards="auto"` takes K = clip(⌊n / 20 000⌋, 1, 64) for n used entries, so each shard keeps
      ≥ 20 000 points and small data are not split. More shards parallelise better but make each
      subposterior wider and less Gaussian; lower K if the verdict reports shard disagreement.

    **Arguments:**

    - `model`: the model (its laws; values of fixed parameters and the start when `nlsq` is not
        given).
    - `data`: an `XPCSData`.
    - `key`: a `jax.random` key (shard assignment, starting jitter, NUTS, mixture resampling).
    - `nlsq`: an `NLSQResult` of the same model and data (recommended).
    - `shards`: K, or `"auto"` (above).
    - `shard_strategy`: `"random"` or `"stratified"` (by lag; every shard sees every lag range).
    - `chains`, `warmup`, `samples`: chains per shard, adaptation steps and kept draws per chain.
    - `combine`: `"consensus"` or `"mixture"`.
    - `fixed`, `bounds`, `scaling`, `fourier_order`, `contrast`, `offset`: as in `fit_nlsq`;
        default: those of `nlsq`, else nothing fixed, default bounds, `"auto"` scaling and
        contrast/offset estimated from the data.
    - `sigma`: σ per entry or per map; default `data.sigma`, else the σ per map of `nlsq`, else
        a noise estimate from the maps.
    - `priors`: `"uniform"` (on the box, default) or `"informed"` (Gaussian around the NLSQ
        values with sd = `prior_width` × NLSQ standard error; needs `nlsq`).
    - `target_accept`, `max_tree_depth`, `dense_mass`: NUTS settings.
    - `init_jitter`: spread of the starting points in shard-posterior sds.
    - `chain_method`: `"vectorized"` (vmap over shards × chains; split across devices when
        several exist), `"sequential"` (one chain after another, low memory), or `"auto"`:
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

    **Returns:** a `CMCResult`.
    """
    began = time.perf_counter()
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
    max_tree_depth = _check_positive_int("max_tree_depth", max_tree_depth, 1)
    if combine not in COMBINE_METHODS:
        raise ValueError(f"`combine` must be one of {COMBINE_METHODS}; got {combine!r}.")
    if shard_strategy not in SHARD_STRATEGIES:
        raise ValueError(
            f"`shard_strategy` must be one of {SHARD_STRATEGIES}; got {shard_strategy!r}."
        )
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"`chain_method` must be one of {CHAIN_METHODS}; got {chain_method!r}.")
    if priors not in PRIOR_KINDS:
        raise ValueError(f"`priors` must be one of {PRIOR_KINDS}; got {priors!r}.")
    if priors == "informed" and nlsq is None:
        raise ValueError("priors='informed' needs an NLSQ result: pass nlsq=fit_nlsq(...).")
    if not 0.0 < float(target_accept) < 1.0:
        raise ValueError(f"`target_accept` must lie in (0, 1); got {target_accept!r}.")
    if not float(prior_width) > 0:
        raise ValueError(f"`prior_width` must be positive; got {prior_width!r}.")
    if not float(init_jitter) >= 0:
        raise ValueError(f"`init_jitter` must be non-negative; got {init_jitter!r}.")
    thresholds = Thresholds() if thresholds is None else thresholds

    # ---------------------------------------------------------------- the problem
    template = model
    if nlsq is not None:
        fixed, bounds, scaling, fourier_order = _settings_from_nlsq(
            nlsq, model, fixed, bounds, scaling, fourier_order
        )
        template = nlsq.model
    fixed = () if fixed is None else tuple(fixed)
    scaling = "auto" if scaling is None else scaling
    phi = np.asarray(data.phi)
    resolved = resolve_scaling(scaling, phi, order=fourier_order)
    mask = np.asarray(data.mask)
    if nlsq is not None and contrast is None and offset is None:
        start_contrast, start_offset = np.asarray(nlsq.contrast), np.asarray(nlsq.offset)
    else:
        estimated = estimate_contrast_offset(np.asarray(data.c2), mask)
        start_contrast = estimated[0] if contrast is None else np.asarray(contrast, float)
        start_offset = estimated[1] if offset is None else np.asarray(offset, float)
    start_contrast = np.broadcast_to(start_contrast, phi.shape)
    start_offset = np.broadcast_to(start_offset, phi.shape)
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
        contrast=start_contrast,
        offset=start_offset,
        sigma=sigma,
        bins=nlsq.bins if nlsq is not None and roi is None else fit_bins(template, data, roi=roi),
    )
    names = problem.names
    if not names:
        raise ValueError("Every parameter is fixed; free at least one to sample.")
    n_parameters = len(names)
    center_x = np.array(x0, float)
    prior_mean = np.zeros(n_parameters)
    prior_precision = np.zeros(n_parameters)
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

    # ---------------------------------------------------------------- shards and posterior
    shard_key, init_key, sample_key, mixture_key = jr.split(key, 4)
    seed = int(jr.randint(shard_key, (), 0, 2**31 - 1))
    shard_index = make_shards(mask, shards, strategy=shard_strategy, seed=seed)
    n_shards = shard_index.n_shards
    shard_data = gather_shard_data(shard_index, np.asarray(data.c2), np.asarray(sigma_used))
    posterior = ShardPosterior(
        problem=problem,
        t=jnp.asarray(data.t),
        q=jnp.asarray(data.q),
        phi=jnp.asarray(data.phi),
        tempering=jnp.asarray(1.0 / n_shards),
        prior_mean=jnp.asarray(prior_mean),
        prior_precision=jnp.asarray(prior_precision),
    )
    center = problem.transform.to_unconstrained(jnp.asarray(center_x))
    covariance, _ = _theta_covariance(problem, posterior, center, shard_data, nlsq, n_shards)
    expected_sd = np.sqrt(np.clip(np.diagonal(covariance), 0.0, None))
    preconditioner = _preconditioner(center, covariance)
    log_density = PreconditionedPosterior(posterior, preconditioner)
    start = float(init_jitter) * jr.normal(init_key, (n_shards, chains, n_parameters))
    chain_method = resolve_chain_method(chain_method, shard_data)

    # ---------------------------------------------------------------- sampling
    sampling_began = time.perf_counter()
    run, n_devices = run_nuts(
        log_density,
        shard_data,
        start,
        sample_key,
        warmup=warmup,
        samples=samples,
        target_accept=float(target_accept),
        max_tree_depth=max_tree_depth,
        dense_mass=bool(dense_mass),
        chain_method=chain_method,
        progress=progress,
    )
    sampling_time = time.perf_counter() - sampling_began

    # ---------------------------------------------------------------- combination
    theta_shards = preconditioner.to_theta(run.position)
    if combine == "consensus":
        theta_combined = consensus_combine(theta_shards)
    else:
        theta_combined = mixture_combine(theta_shards, mixture_key)
    x_shards = np.asarray(_to_bounded(problem, theta_shards))
    x_combined = np.asarray(_to_bounded(problem, theta_combined))
    samples_out, shard_samples_out = {}, {}
    for p, name in enumerate(names):
        if name in ("contrast", "offset"):
            continue
        samples_out[name] = x_combined[..., p]
        shard_samples_out[name] = x_shards[..., p]
    for target, values in ((samples_out, x_combined), (shard_samples_out, x_shards)):
        contrast_values, offset_values = _per_map_scaling(problem, jnp.asarray(values))
        target["contrast"] = np.asarray(contrast_values)
        target["offset"] = np.asarray(offset_values)

    # ---------------------------------------------------------------- diagnostics
    per_shard = _per_shard_diagnostics(x_shards)
    energy = np.asarray(run.energy)
    divergent = np.asarray(run.divergent)
    depth = np.asarray(run.tree_depth)
    theta_flat = np.asarray(theta_shards).reshape(n_shards, -1, n_parameters)
    shard_diagnostics = {
        **per_shard,
        # The Gaussian-shard checks of the consensus product, in the sampler's coordinates θ.
        "width_ratio": theta_flat.std(axis=1) / np.where(expected_sd > 0, expected_sd, np.inf),
        "skewness": np.asarray(stats.skew(theta_flat, axis=1)),
        "bfmi": np.stack([bfmi(energy[k]) for k in range(n_shards)]),
        "divergences": divergent.sum(axis=(1, 2)),
        "warmup_divergences": np.asarray(run.warmup_divergences).sum(axis=1),
        "tree_depth_saturation": (depth >= max_tree_depth).mean(axis=(1, 2)),
        "acceptance": np.asarray(run.acceptance).mean(axis=(1, 2)),
        "step_size": np.asarray(run.step_size),
    }
    diagnostics = {
        "r_hat": {n: float(np.nanmax(per_shard["r_hat"][:, p])) for p, n in enumerate(names)},
        "ess_bulk": {n: float(np.nanmin(per_shard["ess_bulk"][:, p])) for p, n in enumerate(names)},
        "ess_tail": {n: float(np.nanmin(per_shard["ess_tail"][:, p])) for p, n in enumerate(names)},
        "bfmi": shard_diagnostics["bfmi"].min(axis=1),
        "divergences": shard_diagnostics["divergences"],
    }
    combined_diagnostics = {
        "r_hat": {n: rhat(x_combined[..., p]) for p, n in enumerate(names)},
        "ess_bulk": {n: ess_bulk(x_combined[..., p]) for p, n in enumerate(names)},
        "ess_tail": {n: ess_tail(x_combined[..., p]) for p, n in enumerate(names)},
    }
    means, covariances = shard_moments(theta_shards)
    means, covariances = np.asarray(means), np.asarray(covariances)
    combined_mean = np.asarray(consensus_gaussian(means, covariances)[0])
    shard_sd = np.sqrt(np.diagonal(covariances, axis1=1, axis2=2))
    agreement = np.abs(means - combined_mean) / np.where(shard_sd > 0, shard_sd, np.inf)
    widest = names[int(np.argmax(shard_sd.mean(axis=0)))]
    verdict = make_verdict(
        names=names,
        shard_diagnostics=shard_diagnostics,
        agreement=agreement,
        widest=widest,
        thresholds=thresholds,
        warmup=warmup,
        samples=samples,
        target_accept=float(target_accept),
        max_tree_depth=max_tree_depth,
        n_shards=n_shards,
    )
    posterior_model = problem.unpack(jnp.asarray(x_combined.reshape(-1, n_parameters).mean(0)))[0]
    return CMCResult(
        names=names,
        samples=samples_out,
        shard_samples=shard_samples_out,
        draws=x_combined,
        shard_draws=x_shards,
        model=posterior_model,
        combine=combine,
        diagnostics=diagnostics,
        shard_diagnostics=shard_diagnostics,
        combined_diagnostics=combined_diagnostics,
        verdict=verdict,
        sample_stats={
            "diverging": divergent,
            "energy": energy,
            "acceptance_rate": np.asarray(run.acceptance),
            "tree_depth": depth,
            "n_steps": np.asarray(run.n_steps),
        },
        phi=phi,
        q=np.asarray(data.q),
        n_shards=n_shards,
        shard_sizes=shard_index.counts(),
        shard_strategy=shard_strategy,
        chains=chains,
        warmup=warmup,
        n_samples=samples,
        chain_method=chain_method,
        n_devices=n_devices,
        priors=priors,
        prior_width=float(prior_width),
        sigma=np.sqrt(np.mean(np.asarray(sigma_used) ** 2, axis=(1, 2))),
        noise=noise,
        wall_time=time.perf_counter() - began,
        sampling_time=sampling_time,
        metadata=dict(data.metadata),
        model_description=describe_model(problem.bins),
    )
