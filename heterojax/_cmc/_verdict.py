"""Pass/fail verdict on a CMC run, with one sentence of advice per failure."""

import dataclasses
import math

import numpy as np


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


@dataclasses.dataclass(frozen=True)
class CMCVerdict:
    """Whether a CMC run meets its `Thresholds`, and what to do when it does not.

    **Fields:** `passed`; `failures`, one sentence of advice per failed check; `thresholds`.
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


def _worst(values: np.ndarray, larger_is_worse: bool) -> tuple[int, float]:
    """(shard index, value) of the worst finite entry of a per-shard vector."""
    finite = np.where(np.isfinite(values), values, -np.inf if larger_is_worse else np.inf)
    index = int(np.argmax(finite) if larger_is_worse else np.argmin(finite))
    return index, float(values[index])


def make_verdict(
    *,
    names: tuple[str, ...],
    shard_diagnostics: dict[str, np.ndarray],
    agreement: np.ndarray,
    widest: str,
    thresholds: Thresholds,
    warmup: int,
    samples: int,
    target_accept: float,
    max_tree_depth: int,
    n_shards: int,
) -> CMCVerdict:
    """Checks every threshold and writes the advice (see `Thresholds`).

    **Arguments:** the parameter `names`; `shard_diagnostics` with `"r_hat"`, `"ess_bulk"`,
    `"ess_tail"` `(shard, p)`, `"bfmi"` `(shard, chain)`, `"divergences"` `(shard,)`,
    `"tree_depth_saturation"` `(shard,)`, and optionally `"width_ratio"` and `"skewness"`
    `(shard, p)` (the Gaussian-shard checks, made when K > 1); `agreement` `(shard, p)`,
    |μ_k − μ*| / sd_k; `widest`, the name of the least constrained parameter; the thresholds
    and the run's settings.
    """
    t = thresholds
    failures = []
    for p, name in enumerate(names):
        shard, value = _worst(shard_diagnostics["r_hat"][:, p], larger_is_worse=True)
        if not value <= t.r_hat:
            failures.append(
                f"R̂ of {name} is {value:.3f} in shard {shard} (> {t.r_hat}): the chains disagree. "
                f"Run more warmup (e.g. warmup={2 * warmup}) or start from an NLSQ result "
                f"(nlsq=...); if it persists the posterior may be multimodal — fix {name} or "
                "narrow its bounds."
            )
        for kind, limit, what in (
            ("ess_bulk", t.ess_bulk, "the posterior mean and sd"),
            ("ess_tail", t.ess_tail, "the interval ends"),
        ):
            shard, value = _worst(shard_diagnostics[kind][:, p], larger_is_worse=False)
            if not value >= limit:
                wanted = int(math.ceil(1.2 * samples * limit / max(value, 1.0) / 100) * 100)
                failures.append(
                    f"{'Bulk' if kind == 'ess_bulk' else 'Tail'} ESS of {name} is {value:.0f} in "
                    f"shard {shard} (< {limit:g}), so {what} are not yet reliable: draw more "
                    f"samples (e.g. samples={wanted}) or run more chains."
                )
    bfmi = shard_diagnostics["bfmi"]
    if bfmi.size and not np.nanmin(bfmi) >= t.bfmi:
        shard, chain = np.unravel_index(int(np.nanargmin(bfmi)), bfmi.shape)
        failures.append(
            f"E-BFMI is {float(bfmi[shard, chain]):.2f} in shard {shard}, chain {chain} "
            f"(< {t.bfmi}): the sampler explores the energy levels poorly (heavy tails or a "
            f"funnel). Run more warmup (warmup={2 * warmup}), try dense_mass=True, or fix the "
            f"least constrained parameter ({widest})."
        )
    divergences = shard_diagnostics["divergences"]
    if np.any(divergences > t.divergences):
        shard = int(np.argmax(divergences))
        higher = min(0.99, max(0.95, target_accept + 0.1))
        advice = (
            f"use fewer shards (now {n_shards}; each shard posterior is then better identified) "
            if n_shards > 1
            else ""
        )
        failures.append(
            f"{int(divergences.sum())} divergent transitions ({int(divergences[shard])} in shard "
            f"{shard}): raise the target acceptance (target_accept={higher:.2f}); if they persist, "
            f"{advice}{'or ' if advice else ''}fix a parameter the data cannot determine "
            f"(least constrained: {widest})."
        )
    saturation = shard_diagnostics["tree_depth_saturation"]
    if np.any(saturation > t.tree_depth_fraction):
        shard = int(np.argmax(saturation))
        failures.append(
            f"{100 * float(saturation[shard]):.1f} % of transitions in shard {shard} hit the "
            f"maximum tree depth ({max_tree_depth}): the posterior is strongly correlated or "
            f"badly scaled. Try dense_mass=True or max_tree_depth={max_tree_depth + 2}."
        )
    if n_shards > 1:
        for p, name in enumerate(names):
            shard, value = _worst(agreement[:, p], larger_is_worse=True)
            if value > t.shard_agreement:
                failures.append(
                    f"Shard {shard} places {name} {value:.1f} of its sds away from the combined "
                    f"mean (> {t.shard_agreement:g}): the shards disagree, so the consensus "
                    "product is not to be trusted. Use fewer shards, shard_strategy='stratified', "
                    "or check the model against the data."
                )
        failures.extend(_gaussian_shard_failures(names, shard_diagnostics, t, n_shards))
    return CMCVerdict(passed=not failures, failures=tuple(failures), thresholds=thresholds)


def _gaussian_shard_failures(names, shard_diagnostics, t: Thresholds, n_shards: int) -> list:
    """The consensus product assumes Gaussian shard posteriors: one sentence per parameter
    whose shards are too wide for their Laplace approximation or too skewed."""
    failures = []
    width = shard_diagnostics.get("width_ratio")
    skewness = shard_diagnostics.get("skewness")
    for p, name in enumerate(names):
        problems = []
        if width is not None:
            shard, value = _worst(width[:, p], larger_is_worse=True)
            if value > t.shard_width:
                problems.append(
                    f"in shard {shard} it is {value:.1f}× as wide as its Gaussian (Laplace) "
                    f"approximation (> {t.shard_width:g})"
                )
        if skewness is not None:
            shard, value = _worst(np.abs(skewness[:, p]), larger_is_worse=True)
            if value > t.shard_skewness:
                problems.append(
                    f"its skewness in shard {shard} is {value:.2f} (> {t.shard_skewness:g})"
                )
        if problems:
            failures.append(
                f"The shard posteriors of {name} are not Gaussian: {'; '.join(problems)}. The "
                "consensus product is exact only for Gaussian shards, so its mean and sd may be "
                f"biased. Use fewer shards (now {n_shards}; each then holds more data), or fix "
                f"{name} or a parameter it trades off against."
            )
    return failures
