"""Shard draws in one labelling of the exchange symmetry reference ↔ sample.

At a constant sample fraction f, exchanging the reference and sample laws with f → 1 − f leaves
c2 unchanged (`heterojax._fit._symmetry`): a posterior then has two mirror images, and chains
(or draws of one chain) in the two labellings describe the same posterior. Split across
labellings, R̂ and ESS would read a symmetric posterior as non-convergence, and the consensus
product would average the two images. So every draw is put into the canonical labelling of
`_fit._symmetry.canonical` — the slower component (smaller J at the middle of the window) is the
reference — before it is combined or diagnosed, here vectorised over the draws.

A draw is exchanged only where the exchange is exact and representable: the fraction is
constant over the grid, the reference is the faster component, every parameter the exchange
changes is free, and the exchanged values lie inside the bounds (as `canonical` requires).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._fit._problem import FitProblem
from .._fit._symmetry import exchanged
from .._model._laws import ExponentialFraction


def _exchangeable(problem: FitProblem) -> bool:
    """Whether the template's laws admit the exchange at all (same transport types, the
    exponential fraction law)."""
    model = problem.model
    return exchanged(model, np.asarray(problem.t)) is not None and isinstance(
        model.fraction, ExponentialFraction
    )


@eqx.filter_jit
def _canonical(problem: FitProblem, theta: Float[Array, "n p"]):
    t = problem.t
    middle = t[t.shape[0] // 2 : t.shape[0] // 2 + 1]
    template = problem.model
    sizes = [len(law.parameter_specs) for law in (template.reference, template.sample)]
    n_ref, n_sample = sizes
    n_velocity = len(template.velocity.parameter_specs)
    n_fraction = len(template.fraction.parameter_specs)
    free = np.zeros(len(template.parameter_names), bool)
    free[list(problem.free_physics)] = True
    free_index = jnp.asarray(problem.free_physics, dtype=jnp.int32)
    lower, upper = problem.transform.lower, problem.transform.upper
    n_physics = problem.n_free_physics

    def one(theta):
        x = problem.transform.to_bounded(theta)
        model = problem.unpack(x)[0]
        full = model.to_vector()
        fraction = jnp.clip(model.fraction(t), 0.0, 1.0)
        constant = jnp.ptp(fraction) <= 1e-9
        share = jnp.clip(model.fraction(middle)[0], 0.0, 1.0)
        faster = model.reference(middle)[0] > model.sample(middle)[0]
        reference = full[:n_ref]
        sample = full[n_ref : n_ref + n_sample]
        rest = full[n_ref + n_sample : n_ref + n_sample + n_velocity]
        new_fraction = jnp.zeros(n_fraction).at[0].set(1.0 - share)
        target = jnp.concatenate([sample, reference, rest, new_fraction, full[-1:]])
        moved = ~jnp.isclose(target, full)
        representable = ~jnp.any(moved & ~jnp.asarray(free))
        swapped_x = x
        if n_physics:
            swapped_x = x.at[:n_physics].set(target[free_index])
        inside = jnp.all((swapped_x >= lower) & (swapped_x <= upper))
        swap = constant & faster & representable & inside
        swapped = problem.transform.to_unconstrained(swapped_x)
        return jnp.where(swap, swapped, theta), swap

    return jax.vmap(one)(theta)


def canonical_theta(
    problem: FitProblem, theta: Float[Array, "*batch p"]
) -> tuple[Float[Array, "*batch p"], Int[Array, ""]]:
    """Draws θ in the canonical labelling (module docstring) and how many were exchanged.

    **Arguments:** the `problem`; draws `theta` in its unconstrained coordinates, any leading
    batch shape.

    **Returns:** `(theta, n_exchanged)`: the draws (same shape; those already canonical, or
    whose exchange is not exact or not representable, unchanged) and the count of exchanged
    draws.
    """
    theta = jnp.asarray(theta)
    if problem.n_free_physics == 0 or not _exchangeable(problem):
        return theta, jnp.asarray(0)
    flat = theta.reshape(-1, theta.shape[-1])
    out, swapped = _canonical(problem, flat)
    return out.reshape(theta.shape), jnp.sum(swapped)
