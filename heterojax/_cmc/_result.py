"""The result of `fit_cmc`: combined and per-shard draws, diagnostics, verdict, ArviZ export."""

from typing import Any

import equinox as eqx
import numpy as np

from .._model._heterodyne import HeterodyneModel
from ._export import inference_container
from ._verdict import CMCVerdict


_QUANTILES = (2.5, 50.0, 97.5)


class CMCResult(eqx.Module):
    """Posterior draws of a consensus Monte Carlo fit (`fit_cmc`).

    **Fields:**

    - `names`: the sampled parameters (free physics, then contrast/offset coefficients), as in
        `NLSQResult.names`.
    - `samples`: name → draws of the combined posterior, shape `(chain, draw)` for every name of
        `names`, plus `"contrast"` and `"offset"` per map, shape `(chain, draw, phi)` (derived
        from the coefficients draw by draw; in `"constant"` scaling the coefficient of the same
        name is the per-map value repeated).
    - `shard_samples`: the same names → draws of each shard posterior, shape
        `(shard, chain, draw)` (and `(shard, chain, draw, phi)` for contrast/offset).
    - `draws`, `shard_draws`: the same draws as arrays over `names`, `(chain, draw, p)` and
        `(shard, chain, draw, p)`.
    - `model`: the template model with the free physics parameters at their posterior means.
    - `combine`: `"consensus"` or `"mixture"`.
    - `diagnostics`: `"r_hat"`, `"ess_bulk"`, `"ess_tail"` → {name: worst value over shards}
        (largest R̂, smallest ESS); `"bfmi"` → the smallest E-BFMI over each shard's chains,
        `"divergences"` → divergent transitions, both one value per shard (they describe
        transitions, not parameters).
    - `shard_diagnostics`: every diagnostic per shard: `"r_hat"`, `"ess_bulk"`, `"ess_tail"`
        `(shard, p)`, `"bfmi"` `(shard, chain)`, `"divergences"`, `"warmup_divergences"`,
        `"tree_depth_saturation"`, `"acceptance"`, `"integration_steps"` (leapfrog steps per
        draw, the cost: one gradient each) `(shard,)`, `"step_size"` `(shard, chain)`,
        and the Gaussian-shard checks `"width_ratio"` (shard sd over the sd of its Laplace
        approximation) and `"skewness"`, both `(shard, p)` in the sampler's unconstrained
        coordinates (see `Thresholds`).
    - `combined_diagnostics`: `"r_hat"`, `"ess_bulk"`, `"ess_tail"` → {name: value} of the
        combined draws (chains of the combination are formed from the shards' chains).
    - `verdict`: a `CMCVerdict` (pass/fail and advice).
    - `sample_stats`: per transition, `(shard, chain, draw)`: `"diverging"`, `"energy"`,
        `"acceptance_rate"`, `"tree_depth"`, `"n_steps"`.
    - `phi`, `q`: the maps' angles (deg) and wavevectors.
    - `n_shards`, `shard_sizes` (real entries per shard), `shard_strategy`, `chains`, `warmup`,
        `n_samples` (draws per chain), `chain_method`, `n_devices`.
    - `priors`: `"uniform"` or `"informed"`; `prior_width`: the width factor of informed priors.
    - `sigma`: the RMS σ per map used in the likelihood; `noise`: where σ came from (`"data"`,
        `"argument"`, `"nlsq"`, `"estimated"`).
    - `wall_time`: seconds for the whole call; `sampling_time`: seconds of warmup and sampling
        (compilation included).
    - `metadata`: the data's metadata.
    - `model_description`: which model of the detector bins was fitted.
    - `exchanged_draws`: shard draws moved to the canonical labelling of the exchange symmetry
        reference ↔ sample (the slower component is the reference) before they were combined
        and diagnosed; 0 unless the fraction is constant and the exchange exact.
    - `adjustment`: the likelihood adjustment sampled (`"none"`, `"curvature"`, or
        `"magnitude (k = …)"`; see `CurvatureAdjustment`).
    - `shard_workers`: the address of the Dask worker that sampled each shard
        (`fit_cmc(client=...)`); empty when the shards were sampled in-process.
    """

    names: tuple[str, ...]
    samples: dict[str, np.ndarray]
    shard_samples: dict[str, np.ndarray]
    draws: np.ndarray
    shard_draws: np.ndarray
    model: HeterodyneModel
    combine: str
    diagnostics: dict[str, Any]
    shard_diagnostics: dict[str, np.ndarray]
    combined_diagnostics: dict[str, dict[str, float]]
    verdict: CMCVerdict
    sample_stats: dict[str, np.ndarray]
    phi: np.ndarray
    q: np.ndarray
    n_shards: int
    shard_sizes: np.ndarray
    shard_strategy: str
    chains: int
    warmup: int
    n_samples: int
    chain_method: str
    n_devices: int
    priors: str
    prior_width: float
    sigma: np.ndarray
    noise: str
    wall_time: float
    sampling_time: float
    metadata: dict[str, Any]
    model_description: str = "model = bin centre"
    exchanged_draws: int = 0
    adjustment: str = "none"
    shard_workers: tuple[str, ...] = ()

    # ----------------------------------------------------------------- summaries

    def table(self) -> dict[str, dict[str, float]]:
        """name → {"mean", "sd", "2.5%", "50%", "97.5%", "r_hat", "ess_bulk", "ess_tail"}.

        Moments and quantiles are of the combined posterior; R̂ and ESS are the worst over the
        shards (the combined draws inherit the shards' mixing).
        """
        rows = {}
        for p, name in enumerate(self.names):
            values = self.draws[..., p].reshape(-1)
            quantiles = np.percentile(values, _QUANTILES)
            rows[name] = {
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)),
                "2.5%": float(quantiles[0]),
                "50%": float(quantiles[1]),
                "97.5%": float(quantiles[2]),
                "r_hat": float(self.diagnostics["r_hat"][name]),
                "ess_bulk": float(self.diagnostics["ess_bulk"][name]),
                "ess_tail": float(self.diagnostics["ess_tail"][name]),
            }
        return rows

    def summary(self) -> str:
        """A readable table (mean, sd, 2.5/50/97.5 %, R̂, ESS bulk/tail), settings and verdict."""
        header = (
            f"{'parameter':<20}{'mean':>13}{'sd':>11}{'2.5%':>13}{'50%':>13}{'97.5%':>13}"
            f"{'R̂':>8}{'ESS bulk':>10}{'ESS tail':>10}"
        )
        lines = [header, "-" * len(header)]
        for name, row in self.table().items():
            lines.append(
                f"{name:<20}{row['mean']:>13.6g}{row['sd']:>11.3g}{row['2.5%']:>13.6g}"
                f"{row['50%']:>13.6g}{row['97.5%']:>13.6g}{row['r_hat']:>8.3f}"
                f"{row['ess_bulk']:>10.0f}{row['ess_tail']:>10.0f}"
            )
        lines.append("")
        lines.append(
            f"combine = {self.combine}   shards = {self.n_shards} ({self.shard_strategy}, "
            f"{int(np.min(self.shard_sizes))}–{int(np.max(self.shard_sizes))} points)   "
            f"chains = {self.chains}   warmup = {self.warmup}   samples = {self.n_samples}"
        )
        lines.append(
            f"priors = {self.priors}   noise = {self.noise}   "
            f"adjustment = {self.adjustment}   chain_method = {self.chain_method} "
            f"({self.n_devices} device{'s' if self.n_devices > 1 else ''})   "
            f"divergences = {int(np.sum(self.diagnostics['divergences']))}   "
            f"min E-BFMI = {float(np.min(self.diagnostics['bfmi'])):.2f}   "
            f"time = {self.wall_time:.1f} s"
        )
        if self.shard_workers:
            lines.append(
                f"shards sampled on {len(set(self.shard_workers))} Dask worker"
                f"{'s' if len(set(self.shard_workers)) > 1 else ''}"
            )
        lines.append(self.model_description)
        lines.append(str(self.verdict))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    # ----------------------------------------------------------------- export

    def _datasets(self):
        import xarray as xr

        angle = {"angle": np.asarray(self.phi, float)}
        shard = {"shard": np.arange(self.n_shards)}
        posterior, shards = {}, {}
        for name in self.samples:
            combined, per_shard = self.samples[name], self.shard_samples[name]
            # Shard axis last, so every group keeps ArviZ's leading (chain, draw) dimensions.
            per_shard = np.moveaxis(per_shard, 0, 2)
            if combined.ndim == 3:
                posterior[name] = (("chain", "draw", "angle"), combined)
                shards[name] = (("chain", "draw", "shard", "angle"), per_shard)
            else:
                posterior[name] = (("chain", "draw"), combined)
                shards[name] = (("chain", "draw", "shard"), per_shard)
        stats = {
            key: (("chain", "draw", "shard"), np.moveaxis(value, 0, 2))
            for key, value in self.sample_stats.items()
        }
        attrs = {
            "inference_library": "heterojax (BlackJAX NUTS, consensus Monte Carlo)",
            "combine": self.combine,
            "n_shards": self.n_shards,
            "shard_strategy": self.shard_strategy,
            "priors": self.priors,
            "adjustment": self.adjustment,
            "verdict": str(self.verdict),
        }
        coords_p = {"chain": np.arange(self.chains), "draw": np.arange(self.n_samples)}
        return {
            "posterior": xr.Dataset(posterior, coords={**coords_p, **angle}, attrs=attrs),
            "sample_stats": xr.Dataset(stats, coords={**coords_p, **shard}, attrs=attrs),
            "shard_posterior": xr.Dataset(
                shards, coords={**coords_p, **shard, **angle}, attrs=attrs
            ),
        }

    def to_arviz(self):
        """The draws as an ArviZ object: `posterior` (combined), `shard_posterior` (one more
        dimension, `shard`) and `sample_stats` (per shard: diverging, energy, acceptance_rate,
        tree_depth, n_steps).

        **Returns:** an `arviz.InferenceData` (ArviZ 0.x) or an `xarray.DataTree` with one child
        per group (ArviZ ≥ 1, whose containers are DataTrees). Needs `arviz` installed.
        """
        return inference_container(self._datasets())

    def save_netcdf(self, path) -> None:
        """Writes `to_arviz()` to a NetCDF file, one group per ArviZ group (readable with
        `arviz.from_netcdf` of ArviZ 0.x and 1.x)."""
        self.to_arviz().to_netcdf(str(path))
