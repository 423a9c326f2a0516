"""BlackJAX NUTS with Stan's window adaptation, run for every shard × chain in one program.

Each chain runs NUTS (`blackjax.nuts`) on its shard's density. Warmup is Stan's windowed
adaptation exactly as `blackjax.window_adaptation` does it, built from the same BlackJAX parts
(`build_schedule`, dual averaging of the step size towards `target_accept`, Welford estimates of
the inverse mass matrix in doubling slow windows): an initial fast window adapting the step size,
slow windows adapting both (the step size restarts from the current average at each window end),
a final fast window; draws then use the last window's average step size and metric. It is written
out here, rather than calling `window_adaptation(...).run`, so that the loop over steps is
outermost and the vmap over shards × chains sits inside it: one compiled step advances every
chain, a progress report is emitted once per step for all of them (a callback inside a vmapped
`run` fires once per chain), and warmup and draws share one NUTS kernel in one `lax.scan` (two
scans would compile the NUTS tree builder and the model gradient twice).

Chain execution (`chain_method`):

- `"vectorized"`: `jax.vmap` over shards and chains inside `lax.scan` over steps. When
  more than one local device exists, the shard axis (or else the chain axis) is split across the
  devices with `jax.sharding` (a 1-D mesh), and XLA partitions the vmapped program.
- `"sequential"`: one compiled run (warmup and draws) per chain, the slot index traced so one
  program serves all; the chains run side by side, one per CPU core (threads: a compiled
  program runs without the GIL), and the others wait their turn. Memory is that many chains'
  working sets. The program is compiled before the threads start (compiled by their first
  calls, the chains ran one after another). Progress is reported at every tenth of all chains'
  steps together, naming where each running chain is. Measured on 2 cores (8 maps × 150², ROI,
  60 + 60 draws): two chains in 1.3× the time of one; vectorized, 2.1×.
- `"auto"` (default): `"sequential"` on a single CPU device when every shard holds at least
  `SEQUENTIAL_MIN_ENTRIES` (2048) entries, `"vectorized"` otherwise. Vectorized NUTS advances all
  chains in lock step, so each step costs the longest trajectory of any chain (measured: about
  1.4–1.7× the mean one); on a CPU a shard of a few thousand entries already fills the vector
  units, so batching chains gains nothing to pay for that, while small shards and accelerators
  gain from the batch.

Every chain draws its randomness from the key of its step and its (shard, chain) slot, so both
methods use the same random numbers. A run of some of the shards (`key_shards`, as `fit_cmc`
does for each Dask task) draws those slots' numbers of the whole run, so a run split by shards
uses the random numbers of the whole run too.
"""

import concurrent.futures
import itertools
import sys
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from blackjax.adaptation.mass_matrix import mass_matrix_adaptation
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.adaptation.window_adaptation import build_schedule
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .._threads import available_cores
from ._posterior import ShardData, WhitenedShard


CHAIN_METHODS = ("auto", "vectorized", "sequential")
SEQUENTIAL_MIN_ENTRIES = 2048
_INITIAL_STEP_SIZE = 1.0  # in the preconditioned coordinates z, where the scale is ~1
_CLOCK = {"start": 0.0}


class NUTSRun(eqx.Module):
    """Draws and per-transition statistics of all chains (sampling phase only).

    **Fields:**

    - `position`: draws in the sampler's coordinates, `(shard, chain, draw, p)`.
    - `divergent`, `energy`, `acceptance`, `n_steps`, `tree_depth`: per transition,
        `(shard, chain, draw)`.
    - `step_size`: the adapted step size of each chain, `(shard, chain)`.
    - `inverse_mass_matrix`: the adapted metric of each chain, `(shard, chain, p)` (diagonal)
        or `(shard, chain, p, p)` (dense).
    - `warmup_divergences`: divergent transitions during warmup, `(shard, chain)`.
    """

    position: Float[Array, "shard chain draw p"]
    divergent: Bool[Array, "shard chain draw"]
    energy: Float[Array, "shard chain draw"]
    acceptance: Float[Array, "shard chain draw"]
    n_steps: Int[Array, "shard chain draw"]
    tree_depth: Int[Array, "shard chain draw"]
    step_size: Float[Array, "shard chain"]
    inverse_mass_matrix: Float[Array, "shard chain p *p"]
    warmup_divergences: Int[Array, "shard chain"]

    def adapted(self) -> "AdaptedMetric":
        """The step size and metric the draws used, to draw more with them (`run_nuts`)."""
        return AdaptedMetric(self.step_size, self.inverse_mass_matrix)

    def followed_by(self, more: "NUTSRun") -> "NUTSRun":
        """This run's draws followed by those of `more`, a continuation (`run_nuts` with
        `adapted=self.adapted()` from the last draws): per-transition records joined along the
        draw axis; step size, metric and warmup divergences are this run's."""
        per_draw = ("position", "divergent", "energy", "acceptance", "n_steps", "tree_depth")
        return eqx.tree_at(
            lambda run: tuple(getattr(run, name) for name in per_draw),
            self,
            tuple(
                jnp.concatenate([getattr(self, name), getattr(more, name)], axis=2)
                for name in per_draw
            ),
        )


class AdaptedMetric(NamedTuple):
    """The step size `(shard, chain)` and inverse mass matrix `(shard, chain, p[, p])` of every
    chain, as warmup adapted them."""

    step_size: Float[Array, "shard chain"]
    inverse_mass_matrix: Float[Array, "shard chain p *p"]


class _Adaptation(NamedTuple):
    step_state: object
    mass_state: object
    step_size: Array
    inverse_mass_matrix: Array


def _report(phase: str, total: int, done) -> None:
    elapsed = time.perf_counter() - _CLOCK["start"]
    done = int(done)
    print(
        f"[heterojax.fit_cmc] {phase}: {done}/{total} ({100 * done / total:3.0f} %)  "
        f"{elapsed:7.1f} s",
        file=sys.stderr,
        flush=True,
    )


class _Settings(NamedTuple):
    warmup: int
    samples: int
    target_accept: float
    max_tree_depth: int
    dense_mass: bool


def _chain_functions(log_density: Callable, settings: _Settings, n_parameters: int):
    """Single-chain `init` and `step` (warmup or draw, by step index), closed over the settings.

    Warmup and draws share one NUTS kernel in one `lax.scan` (a second scan would compile the
    whole NUTS tree builder and model gradient twice).
    """
    kernel = blackjax.nuts.build_kernel()
    mass_init, mass_update, mass_final = mass_matrix_adaptation(
        is_diagonal_matrix=not settings.dense_mass
    )
    step_init, step_update, step_final = dual_averaging_adaptation(settings.target_accept)

    def density(shard):
        return lambda z: log_density(z, shard)

    def init(position, step_size, inverse_mass_matrix, shard):
        """The NUTS state at `position` and the adaptation starting from `step_size` and
        `inverse_mass_matrix`; draws without warmup use them as they are."""
        state = blackjax.nuts.init(position, density(shard))
        mass_state = mass_init(n_parameters, inverse_mass_matrix)
        step_state = step_init(step_size)
        # The draws' step size is the dual-averaging mean (`step_final`): it starts at this one.
        step_state = step_state._replace(log_step_size_avg=jnp.log(step_size))
        adaptation = _Adaptation(step_state, mass_state, step_size, inverse_mass_matrix)
        return state, adaptation

    def window_end(adaptation: _Adaptation) -> _Adaptation:
        mass_state = mass_final(adaptation.mass_state)
        step_state = step_init(step_final(adaptation.step_state))
        return _Adaptation(
            step_state,
            mass_state,
            jnp.exp(step_state.log_step_size),
            mass_state.inverse_mass_matrix,
        )

    def adapt(adaptation: _Adaptation, position, acceptance, stage, is_end) -> _Adaptation:
        step_state = step_update(adaptation.step_state, acceptance)
        mass_state = jax.lax.cond(
            stage == 1,
            lambda m: mass_update(m, position),
            lambda m: m,
            adaptation.mass_state,
        )
        adaptation = _Adaptation(
            step_state,
            mass_state,
            jnp.exp(step_state.log_step_size),
            adaptation.inverse_mass_matrix,
        )
        return jax.lax.cond(is_end, window_end, lambda a: a, adaptation)

    def step(key, state, adaptation: _Adaptation, shard, index, stage, is_end):
        """One transition; during warmup (index < warmup) it also adapts."""
        warming = index < settings.warmup
        # After warmup: the average step size of the last window (Stan), the last metric.
        step_size = jnp.where(warming, adaptation.step_size, step_final(adaptation.step_state))
        state, info = kernel(
            key,
            state,
            density(shard),
            step_size,
            adaptation.inverse_mass_matrix,
            max_num_doublings=settings.max_tree_depth,
        )
        adaptation = jax.lax.cond(
            warming,
            lambda a: adapt(a, state.position, info.acceptance_rate, stage, is_end),
            lambda a: a,
            adaptation,
        )
        record = (
            state.position,
            info.is_divergent,
            info.energy,
            info.acceptance_rate,
            info.num_integration_steps,
            info.num_trajectory_expansions,
        )
        return state, adaptation, record

    return init, step, step_final


def _schedule(warmup: int, samples: int) -> tuple[Int[Array, " steps"], Bool[Array, " steps"]]:
    """Stan's schedule (stage 0 fast / 1 slow, slow window ends) per step, zeros after warmup."""
    stages = jnp.zeros(warmup + samples, jnp.int32)
    ends = jnp.zeros(warmup + samples, bool)
    if warmup > 0:
        schedule = jnp.asarray(build_schedule(warmup))
        stages = stages.at[:warmup].set(schedule[:, 0].astype(jnp.int32))
        ends = ends.at[:warmup].set(schedule[:, 1].astype(bool))
    return stages, ends


def _over_chains(fn, n_shard_args: int = 1):
    """vmap over shards (outer) and chains (inner); the last `n_shard_args` arguments are per
    shard only, the others per shard and chain."""

    def wrapped(*args):
        n_args = len(args)
        inner = (0,) * (n_args - n_shard_args) + (None,) * n_shard_args
        return jax.vmap(jax.vmap(fn, in_axes=inner))(*args)

    return wrapped


def _progress(settings: _Settings, progress, index) -> None:
    """A line at every tenth of warmup and of sampling (one callback for all chains), when
    the traced flag `progress` is on."""
    if settings.warmup:
        _maybe_report(progress, "warmup", settings.warmup, index + 1)
    _maybe_report(progress, "sampling", settings.samples, index + 1 - settings.warmup)


class _ChainProgress:
    """Progress of chains that run side by side (`"sequential"`): every chain reports its step
    count now and then (`_chain_progress`); a line is printed each time all chains' steps
    together pass another tenth of their total, naming where each unfinished chain is."""

    def __init__(self, n_chains: int, n_steps: int, warmup: int):
        self._lock = threading.Lock()
        self.n_chains, self.n_steps, self.warmup = n_chains, n_steps, warmup
        self.done = [0] * n_chains
        self.reported = 0  # tenths

    def _where(self, slot: int) -> str:
        done = self.done[slot]
        if done <= self.warmup:
            return f"chain {slot + 1}: warmup {done}/{self.warmup}"
        return f"chain {slot + 1}: sampling {done - self.warmup}/{self.n_steps - self.warmup}"

    def update(self, slot, done) -> None:
        with self._lock:
            self.done[int(slot)] = int(done)
            total = self.n_chains * self.n_steps
            tenths = 10 * sum(self.done) // total
            if tenths <= self.reported:
                return
            self.reported = tenths
            running = [
                self._where(s) for s in range(self.n_chains) if 0 < self.done[s] < self.n_steps
            ]
            elapsed = time.perf_counter() - _CLOCK["start"]
            detail = f"  ({'; '.join(running)})" if running else ""
            print(
                f"[heterojax.fit_cmc] chains: {sum(self.done)}/{total} steps "
                f"({10 * tenths:3d} %){detail}  {elapsed:7.1f} s",
                file=sys.stderr,
                flush=True,
            )


# The progress of each run of `_run_sequential` in this process, by a run number that the
# compiled program carries as a traced argument (so concurrent runs never share a count).
_CHAIN_RUNS: dict[int, _ChainProgress] = {}
_RUN_NUMBERS = itertools.count()


def _chain_update(run, slot, done) -> None:
    progress = _CHAIN_RUNS.get(int(run))
    if progress is not None:
        progress.update(slot, done)


def _chain_progress(settings: _Settings, progress, run, slot, index) -> None:
    """One chain of several run side by side: its step count, at every hundredth of its steps,
    to its run's `_ChainProgress` (a line at every tenth of all chains' steps), when the
    traced flag `progress` is on."""
    n_steps = settings.warmup + settings.samples
    every = max(n_steps // 100, 1)
    done = index + 1
    jax.lax.cond(
        progress & ((done % every == 0) | (done == n_steps)),
        lambda: jax.debug.callback(_chain_update, run, slot, done),
        lambda: None,
    )


def _maybe_report(progress, phase: str, total: int, done) -> None:
    if total == 0:
        return
    every = max(total // 10, 1)
    due = progress & (done >= 1) & (done <= total) & ((done % every == 0) | (done == total))
    jax.lax.cond(
        due,
        lambda: jax.debug.callback(lambda d: _report(phase, total, d), done),
        lambda: None,
    )


def _slot_keys(step_key, n_shards: int, n_chains: int, first, total: int | None):
    """The `(shard, chain)` keys of one step: of shards `first, …, first + n_shards − 1` of a
    run of `total` shards (`first` None: the shards given are the whole run)."""
    if first is None:
        return jr.split(step_key, (n_shards, n_chains))
    keys = jr.split(step_key, (total, n_chains))
    return jax.lax.dynamic_slice_in_dim(keys, first, n_shards)


@eqx.filter_jit
def _run_vectorized(
    log_density,
    shard_data,
    positions,
    adapted,
    key,
    settings: _Settings,
    progress,
    first=None,
    total=None,
):
    n_shards, n_chains, n_parameters = positions.shape
    init, step, _ = _chain_functions(log_density, settings, n_parameters)
    n_steps = settings.warmup + settings.samples
    stages, ends = _schedule(settings.warmup, settings.samples)
    states, adaptations = _over_chains(init)(positions, *adapted, shard_data)

    def body(carry, xs):
        states, adaptations = carry
        index, step_key, stage, is_end = xs
        keys = _slot_keys(step_key, n_shards, n_chains, first, total)
        batched = _over_chains(lambda k, s, a, d: step(k, s, a, d, index, stage, is_end))
        states, adaptations, record = batched(keys, states, adaptations, shard_data)
        _progress(settings, progress, index)
        return (states, adaptations), record

    (_, adaptations), records = jax.lax.scan(
        body,
        (states, adaptations),
        (jnp.arange(n_steps), jr.split(key, n_steps), stages, ends),
    )
    # (step, shard, chain, ...) → (shard, chain, step, ...)
    records = jax.tree.map(lambda r: jnp.moveaxis(r, 0, 2), records)
    return records, adaptations


@eqx.filter_jit
def _run_chain(
    log_density,
    shard_data,
    positions,
    adapted,
    key,
    settings: _Settings,
    progress,
    run,
    slot,
    first=None,
    total=None,
):
    """Warmup and draws of one (shard, chain) slot (traced: one program serves every slot),
    with the random numbers that slot draws in the vectorized run; `run` numbers its progress."""
    n_shards, n_chains, n_parameters = positions.shape
    init, step, _ = _chain_functions(log_density, settings, n_parameters)
    n_steps = settings.warmup + settings.samples
    stages, ends = _schedule(settings.warmup, settings.samples)
    shard_index, chain_index = slot // n_chains, slot % n_chains
    shard = jax.tree.map(lambda a: a[shard_index], shard_data)
    state, adaptation = init(
        positions[shard_index, chain_index],
        *(a[shard_index, chain_index] for a in adapted),
        shard,
    )

    def body(carry, xs):
        state, adaptation = carry
        index, step_key, stage, is_end = xs
        keys = _slot_keys(step_key, n_shards, n_chains, first, total)
        state, adaptation, record = step(
            keys[shard_index, chain_index], state, adaptation, shard, index, stage, is_end
        )
        _chain_progress(settings, progress, run, slot, index)
        return (state, adaptation), record

    (_, adaptation), record = jax.lax.scan(
        body, (state, adaptation), (jnp.arange(n_steps), jr.split(key, n_steps), stages, ends)
    )
    return record, adaptation


def _run_sequential(
    log_density,
    shard_data,
    positions,
    adapted,
    key,
    settings: _Settings,
    progress,
    first=None,
    total=None,
):
    """Every (shard, chain) slot as its own run of `_run_chain`, as many side by side as the
    CPU has cores (threads: a compiled program runs without the GIL, and XLA's CPU programs
    are single-threaded for the most part, so a second chain uses a second core)."""
    n_shards, n_chains = positions.shape[:2]
    n_slots = n_shards * n_chains
    n_steps = settings.warmup + settings.samples
    run = next(_RUN_NUMBERS)
    _CHAIN_RUNS[run] = _ChainProgress(n_slots, n_steps, settings.warmup)
    number = jnp.asarray(run, jnp.int32)
    arguments = (log_density, shard_data, positions, adapted, key, settings, progress, number)
    # Compiled here, before the threads start: when the threads' first calls compiled it,
    # the second chain waited for the first one's whole run (measured, jax 0.10: two chains
    # one after the other, not side by side).
    program = _run_chain.lower(*arguments, jnp.asarray(0, jnp.int32), first, total).compile()

    def run_slot(slot: int):
        out = program(*arguments, jnp.asarray(slot, jnp.int32), first, total)
        return jax.block_until_ready(out)

    try:
        with concurrent.futures.ThreadPoolExecutor(min(n_slots, available_cores())) as pool:
            outputs = list(pool.map(run_slot, range(n_slots)))
    finally:
        jax.effects_barrier()  # every progress callback has run
        del _CHAIN_RUNS[run]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *outputs)
    reshape = lambda r: r.reshape((n_shards, n_chains) + r.shape[1:])  # noqa: E731
    records, adaptations = stacked
    return jax.tree.map(reshape, records), jax.tree.map(reshape, adaptations)


def _place_on_devices(shard_data: ShardData | WhitenedShard, positions, adapted):
    """Splits the shard (or chain) axis across local devices when more than one exists."""
    devices = jax.local_devices()
    n_devices = len(devices)
    n_shards, n_chains = positions.shape[:2]
    if n_devices < 2:
        return shard_data, positions, adapted, 1
    mesh = jax.sharding.Mesh(np.array(devices), ("devices",))
    spec = jax.sharding.PartitionSpec
    if n_shards % n_devices == 0:
        shard_spec, position_spec = spec("devices"), spec("devices")
    elif n_chains % n_devices == 0:
        shard_spec, position_spec = spec(), spec(None, "devices")
    else:
        return shard_data, positions, adapted, 1
    shard_data = jax.device_put(shard_data, jax.sharding.NamedSharding(mesh, shard_spec))
    positions, adapted = jax.device_put(
        (positions, adapted), jax.sharding.NamedSharding(mesh, position_spec)
    )
    return shard_data, positions, adapted, n_devices


def resolve_chain_method(chain_method: str, shard_data: ShardData | WhitenedShard) -> str:
    """The chain execution `"auto"` stands for (module docstring); others unchanged."""
    if chain_method not in CHAIN_METHODS:
        raise ValueError(f"`chain_method` must be one of {CHAIN_METHODS}; got {chain_method!r}.")
    if chain_method != "auto":
        return chain_method
    devices = jax.local_devices()
    data = shard_data.data if isinstance(shard_data, WhitenedShard) else shard_data
    entries = int(np.prod(data.observed.shape[-3:]))
    if len(devices) == 1 and devices[0].platform == "cpu" and entries >= SEQUENTIAL_MIN_ENTRIES:
        return "sequential"
    return "vectorized"


def run_nuts(
    log_density: Callable[[Float[Array, " p"], ShardData], Float[Array, ""]],
    shard_data: ShardData | WhitenedShard,
    positions: Float[Array, "shard chain p"],
    key: PRNGKeyArray,
    *,
    warmup: int,
    samples: int,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    chain_method: str = "auto",
    progress: bool = True,
    key_shards: tuple[int, int] | None = None,
    adapted: AdaptedMetric | None = None,
) -> tuple[NUTSRun, int]:
    """Warmup and NUTS draws for every (shard, chain), all in one compiled program.

    **Arguments:**

    - `log_density`: `(z, shard) ↦ log p_k(z)`, a pytree (e.g. an `eqx.Module`) so that its
        arrays are arguments of the compiled program, not constants.
    - `shard_data`: what `log_density` takes as its second argument, for all shards (a
        leading shard axis): a `ShardData`, or a `WhitenedShard` (data and coordinates).
    - `positions`: starting points `(shard, chain, p)`.
    - `key`: a `jax.random` key.
    - `warmup`, `samples`: adaptation steps and kept draws per chain.
    - `target_accept`: the acceptance rate the step size is tuned to.
    - `max_tree_depth`: the NUTS trajectory doubling limit (≤ 2^depth − 1 leapfrog steps).
    - `dense_mass`: adapt a dense (rather than diagonal) inverse mass matrix.
    - `chain_method`: `"auto"`, `"vectorized"` or `"sequential"` (module docstring).
    - `progress`: print a line at every tenth of the warmup and of the sampling steps
        (`"sequential"`: at every tenth of all chains' steps, naming each running chain's phase).
    - `key_shards`: `(first, total)` when the shards given are shards `first, first + 1, …` of
        a run of `total` shards: their chains then draw the random numbers they draw in that
        run (`fit_cmc` runs each shard as a Dask task this way). Default: the whole run.
    - `adapted`: the step size and metric of every chain (`NUTSRun.adapted()` of an earlier
        run) to start from; with `warmup=0` the draws use them unchanged, so that a run from
        an earlier run's last draws continues its chains (`NUTSRun.followed_by`). Default: a
        unit step size and metric, as Stan's warmup starts.

    **Returns:** `(run, n_devices)`: a `NUTSRun` and the number of devices used.
    """
    chain_method = resolve_chain_method(chain_method, shard_data)
    if warmup == 0 and adapted is None:
        raise ValueError("`warmup=0` draws with an adapted metric: pass `adapted`.")
    adapted = _starting_metric(positions, dense_mass) if adapted is None else adapted
    settings = _Settings(
        int(warmup),
        int(samples),
        float(target_accept),
        int(max_tree_depth),
        bool(dense_mass),
    )
    # Traced, so that a run with and without progress lines shares one compiled program.
    report = jnp.asarray(bool(progress))
    first, total = None, None
    if key_shards is not None:
        first, total = (int(k) for k in key_shards)
        if not 0 <= first <= total - positions.shape[0]:
            raise ValueError(
                f"`key_shards` {key_shards!r} does not hold {positions.shape[0]} shard(s)."
            )
        # Traced, so that every shard of a split run shares one compiled program.
        first = jnp.asarray(first, jnp.int32)
    _CLOCK["start"] = time.perf_counter()
    n_devices = 1
    if chain_method == "vectorized":
        shard_data, positions, adapted, n_devices = _place_on_devices(
            shard_data, positions, adapted
        )
        records, adaptations = _run_vectorized(
            log_density, shard_data, positions, adapted, key, settings, report, first, total
        )
    else:
        records, adaptations = _run_sequential(
            log_density, shard_data, positions, adapted, key, settings, report, first, total
        )
    position, divergent, energy, acceptance, n_steps, depth = (np.asarray(r) for r in records)
    step_size = jax.vmap(jax.vmap(_final_step_size(settings)))(adaptations)
    warm, kept = slice(0, settings.warmup), slice(settings.warmup, None)
    run = NUTSRun(
        position=jnp.asarray(position[:, :, kept]),
        divergent=jnp.asarray(divergent[:, :, kept]),
        energy=jnp.asarray(energy[:, :, kept]),
        acceptance=jnp.asarray(acceptance[:, :, kept]),
        n_steps=jnp.asarray(n_steps[:, :, kept], jnp.int32),
        tree_depth=jnp.asarray(depth[:, :, kept], jnp.int32),
        step_size=step_size,
        inverse_mass_matrix=adaptations.inverse_mass_matrix,
        warmup_divergences=jnp.asarray(divergent[:, :, warm].sum(axis=2), jnp.int32),
    )
    return run, n_devices


def _starting_metric(positions: Float[Array, "shard chain p"], dense: bool) -> AdaptedMetric:
    """Stan's start of warmup: a unit step size and metric for every chain."""
    n_shards, n_chains, p = positions.shape
    unit = jnp.eye(p, dtype=positions.dtype) if dense else jnp.ones(p, positions.dtype)
    return AdaptedMetric(
        jnp.full((n_shards, n_chains), _INITIAL_STEP_SIZE, positions.dtype),
        jnp.broadcast_to(unit, (n_shards, n_chains) + unit.shape),
    )


def _final_step_size(settings: _Settings):
    _, _, step_final = dual_averaging_adaptation(settings.target_accept)
    return lambda adaptation: step_final(adaptation.step_state)
