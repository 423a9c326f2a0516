"""Pass/fail verdict on a CMC run: one line per failing parameter (its worst shard, the figure,
one piece of advice that applies to this run), then one per failing run-level check."""

import dataclasses
import math

import numpy as np

from .._fit._quality import describe_twin


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The limits a CMC run must meet to pass.

    **Fields:**

    - `r_hat`: largest acceptable rank-normalised split R̂ (every parameter, every shard);
        1.01 (Vehtari et al. 2021).
    - `ess_bulk`, `ess_tail`: smallest acceptable bulk and tail ESS per shard; 400 (100 per
        chain for 4 chains, Vehtari et al. 2021).
    - `bfmi`: smallest acceptable E-BFMI of any chain; 0.3 (Betancourt 2016).
    - `divergences`: largest acceptable number of divergent transitions per shard; 0 (any
        divergence means the sampler missed part of the posterior).
    - `tree_depth_fraction`: largest acceptable fraction of transitions that hit the maximum
        tree depth; 0.01.
    - `shard_agreement`: largest acceptable |μ_k − μ*| / sd_k, the distance of a shard's mean
        from the combined mean in units of the shard's sd; 4 (beyond it the shards describe
        different posteriors and the Gaussian product is not to be trusted).
    - `shard_width`: largest acceptable ratio of a shard posterior's sd (in the sampler's
        unconstrained coordinates) to the sd of its Gaussian (Laplace) approximation, √K × the
        full-data NLSQ standard error (or the Gauss–Newton one); 1.5. A shard much wider than
        that is not in its Gaussian regime — typically a direction the shard's data barely
        determine — and the consensus product, exact only for Gaussian shards, is biased.
        (Well-determined shards measure 0.8–1.25 on the validation problem of issue #5; only
        the wider side is checked, since informed priors legitimately narrow a shard.)
    - `shard_skewness`: largest acceptable |skewness| of any shard marginal in the sampler's
        coordinates; 0.5 (a Gaussian has 0; the sampling sd of the skewness at 400 effective
        draws is 0.12).
    - `chain_separation`: where R̂ fails and the chains' means lie further apart than this many
        within-chain sds (`chain_separation`), the chains sit in separate modes: the verdict says
        so instead of advising a longer warmup, which cannot join them; 4.
    """

    r_hat: float = 1.01
    ess_bulk: float = 400.0
    ess_tail: float = 400.0
    bfmi: float = 0.3
    divergences: int = 0
    tree_depth_fraction: float = 0.01
    shard_agreement: float = 4.0
    shard_width: float = 1.5
    shard_skewness: float = 0.5
    chain_separation: float = 4.0


@dataclasses.dataclass(frozen=True)
class CMCVerdict:
    """Whether a CMC run meets its `Thresholds`, and what to do when it does not.

    **Fields:** `passed`; `failures`, one line per failing parameter or run-level check (figures
    and one piece of advice); `thresholds`.
    """

    passed: bool
    failures: tuple[str, ...]
    thresholds: Thresholds

    def __str__(self) -> str:
        if self.passed:
            t = self.thresholds
            return (
                f"PASSED: R̂ ≤ {t.r_hat}, ESS bulk ≥ {t.ess_bulk:g} and tail ≥ {t.ess_tail:g}, "
                f"E-BFMI ≥ {t.bfmi}, divergences ≤ {t.divergences} in every shard."
            )
        return "FAILED:\n" + "\n".join(f"- {failure}" for failure in self.failures)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What the run did, so that advice never repeats it (see `make_verdict`)."""

    warmup: int
    samples: int
    chains: int
    n_shards: int
    shards_auto: bool
    reduced_from: int | None
    target_accept: float
    max_tree_depth: int
    dense_mass: bool
    nlsq: bool
    shard_strategy: str


def samples_for_ess(samples: int, shortfall: float) -> int:
    """Draws per chain that bring an ESS `shortfall` times short of its threshold (threshold /
    ESS) up to it, from a run of `samples`: ESS grows in proportion to the draws; 20 % more for
    the scatter of ESS estimates, rounded up to a hundred."""
    return int(math.ceil(1.2 * samples * shortfall / 100) * 100)


def ess_shortfall(diagnostics: dict[str, np.ndarray], thresholds: Thresholds) -> float:
    """The largest threshold / ESS of any parameter in any shard, bulk or tail (≤ 1: none is
    short); `diagnostics` holds `"ess_bulk"` and `"ess_tail"` `(shard, p)`."""
    ratios = [1.0]
    for kind, limit in (("ess_bulk", thresholds.ess_bulk), ("ess_tail", thresholds.ess_tail)):
        values = np.asarray(diagnostics[kind], float)
        values = values[np.isfinite(values)]
        if values.size:
            ratios.append(limit / max(float(values.min()), 1.0))
    return max(ratios)


def _worst(values: np.ndarray, larger_is_worse: bool) -> tuple[int, float]:
    """(shard index, value) of the worst finite entry of a per-shard vector."""
    finite = np.where(np.isfinite(values), values, -np.inf if larger_is_worse else np.inf)
    index = int(np.argmax(finite) if larger_is_worse else np.argmin(finite))
    return index, float(values[index])


def _fewer_shards(run: RunSettings) -> str:
    return f"use fewer shards (shards={max(run.n_shards // 2, 1)})"


def _parameter_advice(kinds: set[str], run: RunSettings, ess_wanted: int) -> str:
    """One piece of advice for a parameter's failed checks that this run has not already taken.

    Shard disagreement or non-Gaussian shards come first (more draws do not fix a biased
    product), then chains in separate modes (no sampler setting joins them), then chains that
    disagree (a start or geometry problem), then too few draws.
    """
    if kinds & {"agreement", "gaussian"} and run.n_shards > 1:
        return _fewer_shards(run)
    if "modes" in kinds:
        return (
            "the data do not decide between these modes: fix a parameter it trades off against "
            "(fit_nlsq's quality report names competing minima), or measure more frames or pixels"
        )
    if "r_hat" in kinds:
        if not run.nlsq:
            return "start from an NLSQ fit (nlsq=fit_nlsq(...))"
        if run.n_shards > 1:
            return _fewer_shards(run)
        if not run.dense_mass:
            return "adapt a dense metric (dense_mass=True)"
        return f"run a longer warmup (warmup={2 * run.warmup})"
    if kinds & {"ess_bulk", "ess_tail"}:
        return f"draw more samples (samples={ess_wanted})"
    return "fix it or a parameter it trades off against"


def _shard_checks(p: int, diagnostics, agreement, t: Thresholds) -> list[tuple[str, str]]:
    """The failed checks of the consensus product for parameter `p` (K > 1), as (kind, figure):
    `"agreement"` (a shard's mean too far from the combined mean) or `"gaussian"` (a shard too
    wide for its Laplace approximation, or skewed)."""
    failed = []
    shard, value = _worst(agreement[:, p], larger_is_worse=True)
    if value > t.shard_agreement:
        failed.append(
            (
                "agreement",
                f"shard {shard} mean {value:.1f} sd from the combined mean "
                f"(> {t.shard_agreement:g})",
            )
        )
    for key, limit, text in (
        (
            "width_ratio",
            t.shard_width,
            "shard {shard} {value:.1f}× as wide as its Laplace approximation (> {limit:g})",
        ),
        ("skewness", t.shard_skewness, "skewness {value:.2f} in shard {shard} (> {limit:g})"),
    ):
        if diagnostics.get(key) is None:
            continue
        shard, value = _worst(np.abs(diagnostics[key][:, p]), larger_is_worse=True)
        if value > limit:
            failed.append(("gaussian", text.format(shard=shard, value=value, limit=limit)))
    return failed


def shards_not_gaussian(
    names: tuple[str, ...], diagnostics: dict[str, np.ndarray], agreement, t: Thresholds
) -> str | None:
    """The first failed check of the consensus product ("name: figure"), None when every
    shard's draws agree with the combined mean and look Gaussian (`_shard_checks`)."""
    for p, name in enumerate(names):
        failed = _shard_checks(p, diagnostics, agreement, t)
        if failed:
            return f"{name}: {failed[0][1]}"
    return None


def _parameter_line(name: str, p: int, diagnostics, agreement, t: Thresholds, run: RunSettings):
    """The one line of a parameter with failed checks (None when it passes them all)."""
    figures, kinds, ratios = [], set(), [1.0]
    shard, value = _worst(diagnostics["r_hat"][:, p], larger_is_worse=True)
    if not value <= t.r_hat:
        figures.append(f"R̂ {value:.3f} in shard {shard} (> {t.r_hat:g})")
        kinds.add("r_hat")
        separation = diagnostics.get("chain_separation")
        if separation is not None and separation[shard, p] > t.chain_separation:
            figures.append(
                f"its chains sit in separate modes, {separation[shard, p]:.0f} within-chain sds "
                "apart"
            )
            kinds.add("modes")
    for kind, limit, label in (("ess_bulk", t.ess_bulk, "bulk"), ("ess_tail", t.ess_tail, "tail")):
        shard, value = _worst(diagnostics[kind][:, p], larger_is_worse=False)
        if not value >= limit:
            figures.append(f"{label} ESS {value:.0f} in shard {shard} (< {limit:g})")
            kinds.add(kind)
            ratios.append(limit / max(value, 1.0))
    if run.n_shards > 1:
        for kind, figure in _shard_checks(p, diagnostics, agreement, t):
            figures.append(figure)
            kinds.add(kind)
    if not figures:
        return None
    wanted = samples_for_ess(run.samples, max(ratios))
    return f"{name}: {'; '.join(figures)} → {_parameter_advice(kinds, run, wanted)}."


def make_verdict(
    *,
    names: tuple[str, ...],
    shard_diagnostics: dict[str, np.ndarray],
    agreement: np.ndarray,
    thresholds: Thresholds,
    settings: RunSettings,
    adjustment_review: str | None = None,
    twin: dict[str, float] | None = None,
) -> CMCVerdict:
    """Checks every threshold and writes one line per failing parameter, then one per failing
    run-level check (divergences, tree depth, E-BFMI), each with one piece of advice that this
    run has not already taken (`settings`).

    **Arguments:** the parameter `names`; `shard_diagnostics` with `"r_hat"`, `"ess_bulk"`,
    `"ess_tail"` `(shard, p)`, `"bfmi"` `(shard, chain)`, `"divergences"` `(shard,)`,
    `"tree_depth_saturation"` `(shard,)`, and optionally `"width_ratio"` and `"skewness"`
    `(shard, p)` (the Gaussian-shard checks, made when K > 1); `agreement` `(shard, p)`,
    |μ_k − μ*| / sd_k; the thresholds; the run's `settings`; `adjustment_review`, why the
    likelihood adjustment was replaced (`AbstractLikelihoodAdjustment.review`), a failure: the
    intervals then rest on a likelihood that is not Gaussian on the scale of the honest errors;
    `twin`, the flow (φ0, v0, …) of the second solution that two angles leave
    (`_fit._strategies.exact_two_angle_twin`), a failure: the posterior has a second mode there,
    as high as the first, and chains started in one mode do not cross to the other.
    """
    t, run = thresholds, settings
    failures = []
    for p, name in enumerate(names):
        line = _parameter_line(name, p, shard_diagnostics, agreement, t, run)
        if line is not None:
            failures.append(line)
    divergences = shard_diagnostics["divergences"]
    if np.any(divergences > t.divergences):
        shard = int(np.argmax(divergences))
        if run.target_accept < 0.97:
            advice = f"raise the target acceptance (target_accept={_higher(run.target_accept)})"
        elif run.n_shards > 1:
            advice = _fewer_shards(run)
        else:
            advice = "fix a parameter the data cannot determine"
        failures.append(
            f"divergences: {int(divergences.sum())} ({int(divergences[shard])} in shard {shard}, "
            f"> {t.divergences}) → {advice}."
        )
    saturation = shard_diagnostics["tree_depth_saturation"]
    if np.any(saturation > t.tree_depth_fraction):
        shard = int(np.argmax(saturation))
        advice = (
            "adapt a dense metric (dense_mass=True)"
            if not run.dense_mass
            else f"allow deeper trees (max_tree_depth={run.max_tree_depth + 2})"
        )
        failures.append(
            f"tree depth: {100 * float(saturation[shard]):.1f} % of transitions in shard {shard} "
            f"at the maximum ({run.max_tree_depth}; > {100 * t.tree_depth_fraction:g} %) → "
            f"{advice}."
        )
    bfmi = shard_diagnostics["bfmi"]
    if bfmi.size and not np.nanmin(bfmi) >= t.bfmi:
        shard, chain = np.unravel_index(int(np.nanargmin(bfmi)), bfmi.shape)
        failures.append(
            f"E-BFMI: {float(bfmi[shard, chain]):.2f} in shard {shard}, chain {chain} "
            f"(< {t.bfmi}) → run a longer warmup (warmup={2 * run.warmup})."
        )
    if adjustment_review is not None:
        failures.append(
            f"adjustment: {adjustment_review} → fix a parameter the data cannot determine, or "
            "measure more frames or pixels; the intervals are approximate."
        )
    if twin is not None:
        failures.append(
            f"{', '.join(twin)}: two angles fit a second flow exactly alike "
            f"({describe_twin(twin)}), a second "
            "mode of the posterior that the chains do not visit; the intervals hold one of the "
            "two answers → fix phi0 or measure a third angle."
        )
    return CMCVerdict(passed=not failures, failures=tuple(failures), thresholds=thresholds)


def _higher(target_accept: float) -> str:
    return f"{min(0.99, max(0.95, target_accept + 0.05)):.2f}"


def chain_separation(draws: np.ndarray) -> np.ndarray:
    """(max − min of the chain means) / the median within-chain sd, per shard and parameter,
    of `(shard, chain, draw, p)` draws: ≫ 1 when chains sit in separate modes (0 for one
    chain)."""
    means = draws.mean(axis=2)
    spread = means.max(axis=1) - means.min(axis=1)
    within = np.median(draws.std(axis=2), axis=1)
    return np.where(within > 0, spread / np.where(within > 0, within, 1.0), 0.0)
