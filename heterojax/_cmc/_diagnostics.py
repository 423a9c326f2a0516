"""Convergence diagnostics of MCMC draws (Vehtari et al. 2021, Betancourt 2016), in NumPy.

All functions take draws of one quantity shaped `(chain, draw)`.

**Split chains.** Each chain is cut into halves, giving 2M chains of n = ⌊N/2⌋ draws, so that a
trend within a chain shows up as disagreement between chains.

**Rank normalisation.** Draws are replaced by z-scores of their pooled ranks r (average ranks for
ties), z = Φ⁻¹((r − 3/8)/(S − 1/4 + 1/2)) with S the total number of draws; this makes R̂ and
ESS well defined for heavy tails and invariant to monotone transforms.

**R̂** of split chains with within-chain variance W and between-chain variance B/n:

    var⁺ = (n − 1)/n · W + B/n,    R̂ = √(var⁺ / W).

The reported R̂ is max(R̂ of the rank-normalised draws, R̂ of the rank-normalised folded draws
|θ − median θ|), which also catches chains that differ in scale only.

**ESS** from the chain autocorrelations ρ_t (FFT), combined across chains as
ρ̂_t = 1 − (W − mean_m(acov_{m,t})) / var⁺, truncated by Geyer's initial positive sequence and made
monotone (initial monotone sequence): ESS = M n / τ̂, τ̂ = −1 + 2 Σ_{t} ρ̂_t. Bulk ESS is the ESS of
the rank-normalised split draws; tail ESS is the smaller ESS of the indicators 1{θ ≤ q₀.₀₅} and
1{θ ≤ q₀.₉₅}.

**E-BFMI** of one chain's NUTS energies E_s: mean_s (E_s − E_{s−1})² / var_s(E) (unbiased);
below 0.3 the momentum resampling cannot move the chain across the posterior's energy levels.

These follow the reference implementation of the paper (as in ArviZ `rhat`, `ess`, `bfmi`); the
tests compare against ArviZ when it is installed.
"""

import numpy as np
from scipy import special, stats


def _as_chains(draws) -> np.ndarray:
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 1:
        draws = draws[None]
    if draws.ndim != 2:
        raise ValueError(f"draws must have shape (chain, draw); got {draws.shape}.")
    return draws


def _split(draws: np.ndarray) -> np.ndarray:
    n = draws.shape[1] // 2
    if n < 2:
        return draws
    return np.concatenate([draws[:, :n], draws[:, -n:]], axis=0)


def _rank_normalise(draws: np.ndarray) -> np.ndarray:
    size = draws.size
    ranks = stats.rankdata(draws, method="average").reshape(draws.shape)
    return special.ndtri((ranks - 0.375) / (size + 0.25))


def _is_constant(draws: np.ndarray) -> bool:
    return bool(np.ptp(draws) < np.finfo(float).resolution * max(1.0, np.max(np.abs(draws))))


def _rhat_basic(draws: np.ndarray) -> float:
    n_chains, n = draws.shape
    within = np.mean(np.var(draws, axis=1, ddof=1))
    between_over_n = np.var(np.mean(draws, axis=1), ddof=1) if n_chains > 1 else 0.0
    variance_plus = (n - 1) / n * within + between_over_n
    return float(np.sqrt(variance_plus / within)) if within > 0 else np.nan


def rhat(draws) -> float:
    """Rank-normalised split R̂ (Vehtari et al. 2021), max of bulk and folded (module doc).

    **Arguments:** `draws`, shape `(chain, draw)`.

    **Returns:** R̂ (1 for well-mixed chains; NaN for constant draws or fewer than 4 draws).
    """
    draws = _as_chains(draws)
    if draws.shape[1] < 4 or _is_constant(draws) or not np.all(np.isfinite(draws)):
        return np.nan
    bulk = _rhat_basic(_rank_normalise(_split(draws)))
    folded = _rhat_basic(_rank_normalise(_split(np.abs(draws - np.median(draws)))))
    return float(max(bulk, folded))


def _autocovariance(draws: np.ndarray) -> np.ndarray:
    """Biased autocovariance of every chain at every lag, by FFT."""
    n = draws.shape[1]
    centred = draws - draws.mean(axis=1, keepdims=True)
    size = 2 ** int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(centred, n=size, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=size, axis=1)[:, :n] / n


def _ess_basic(draws: np.ndarray) -> float:
    n_chains, n = draws.shape
    if _is_constant(draws):
        return float(draws.size)
    acov = _autocovariance(draws)
    mean_variance = np.mean(acov[:, 0]) * n / (n - 1)
    variance_plus = mean_variance * (n - 1) / n
    if n_chains > 1:
        variance_plus += np.var(draws.mean(axis=1), ddof=1)

    def rho(lag: int) -> float:
        return 1.0 - (mean_variance - np.mean(acov[:, lag])) / variance_plus

    # Geyer's initial positive sequence over pairs (ρ_{2m}, ρ_{2m+1}); stops at the first pair
    # whose sum is not positive (usually after a few lags, so the loop is short).
    rho_hat = np.zeros(n)
    rho_even, rho_odd = 1.0, rho(1)
    rho_hat[0], rho_hat[1] = rho_even, rho_odd
    t = 1
    while t < n - 3 and rho_even + rho_odd > 0.0:
        rho_even, rho_odd = rho(t + 1), rho(t + 2)
        if rho_even + rho_odd >= 0:
            rho_hat[t + 1], rho_hat[t + 2] = rho_even, rho_odd
        t += 2
    last = t - 2
    if rho_even > 0:
        rho_hat[last + 1] = rho_even
    # Initial monotone sequence: no pair sum may exceed the previous one.
    t = 1
    while t <= last - 2:
        if rho_hat[t + 1] + rho_hat[t + 2] > rho_hat[t - 1] + rho_hat[t]:
            rho_hat[t + 1] = rho_hat[t + 2] = (rho_hat[t - 1] + rho_hat[t]) / 2.0
        t += 2
    tau = -1.0 + 2.0 * np.sum(rho_hat[: last + 1]) + np.sum(rho_hat[last + 1 : last + 2])
    tau = max(tau, 1.0 / np.log10(draws.size))
    return float(draws.size / tau)


def ess_bulk(draws) -> float:
    """Bulk effective sample size: ESS of the rank-normalised split chains.

    **Arguments:** `draws`, shape `(chain, draw)`. **Returns:** the ESS (NaN if undefined).
    """
    draws = _as_chains(draws)
    if draws.shape[1] < 4 or not np.all(np.isfinite(draws)):
        return np.nan
    if _is_constant(draws):
        return float(draws.size)
    return _ess_basic(_rank_normalise(_split(draws)))


def ess_tail(draws) -> float:
    """Tail effective sample size: min over the 5 % and 95 % quantile indicators (split chains).

    **Arguments:** `draws`, shape `(chain, draw)`. **Returns:** the ESS (NaN if undefined).
    """
    draws = _as_chains(draws)
    if draws.shape[1] < 4 or not np.all(np.isfinite(draws)):
        return np.nan
    if _is_constant(draws):
        return float(draws.size)
    values = []
    for probability in (0.05, 0.95):
        indicator = (draws <= np.quantile(draws, probability)).astype(float)
        values.append(_ess_basic(_split(indicator)))
    return float(min(values))


def bfmi(energy) -> np.ndarray:
    """E-BFMI of every chain from its NUTS energies (module doc).

    **Arguments:** `energy`, shape `(chain, draw)`. **Returns:** one value per chain.
    """
    energy = _as_chains(energy)
    numerator = np.mean(np.diff(energy, axis=1) ** 2, axis=1)
    denominator = np.var(energy, axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / denominator, 1.0)
