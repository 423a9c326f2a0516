"""The CMA-ES global search (pycma) over all free parameters, in unconstrained coordinates."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._problem import FitProblem


@eqx.filter_jit
def _population_chi2(problem: FitProblem, thetas):
    """χ² (the data residuals only) at every row of θ."""

    def chi2(theta):
        return jnp.sum(problem.residual_maps(problem.transform.to_bounded(theta)) ** 2)

    return jax.lax.map(chi2, thetas)


def global_search(problem: FitProblem, x0: np.ndarray, evaluations: int, seed: int) -> np.ndarray:
    """The best point CMA-ES finds within `evaluations` χ² evaluations, started at x0 with unit
    step in θ; each generation is one compiled χ² call. **Returns:** a bounded fit vector."""
    import cma

    options = {
        "seed": seed + 1,
        "maxfevals": evaluations,
        "verbose": -9,
        "tolfun": 1e-10,
        "CMA_diagonal": False,
    }
    theta0 = np.asarray(problem.transform.to_unconstrained(jnp.asarray(x0)), float)
    strategy = cma.CMAEvolutionStrategy(theta0, 1.0, options)
    while not strategy.stop():
        population = np.asarray(strategy.ask())
        losses = np.asarray(_population_chi2(problem, jnp.asarray(population)))
        strategy.tell(list(population), list(np.where(np.isfinite(losses), losses, 1e300)))
    best = jnp.asarray(np.asarray(strategy.result.xbest))
    return np.asarray(problem.transform.to_bounded(best))
