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

The scan covers a chunk of `CHUNK_STEPS` (50) steps; a run calls it chunk after chunk, carrying
the chains' states. Everything that differs between runs is an argument of the compiled chunk,
not a constant of it: the per-step inputs (key, Stan's window stage, whether the step adapts,
whether it is a step at all: a run is padded to whole chunks and the padding skipped), the
warmup and draw counts, and the progress flag. So a run of any length, a continuation
(`adapted`, `max_samples` in `fit_cmc`) and a run with progress lines reuse the program the
first run compiled (on `test_cmc_fit`'s problem a continuation of 100 draws took 21.7 s with its
own compilation, 8.3 s with the first run's program; a cold program costs ~3 s more to build).

Chain execution (`chain_method`):

- `"vectorized"`: `jax.vmap` over shards and chains inside `lax.scan` over steps. When
  more than one local device exists, the shard axis (or else the chain axis) is split across the
  devices with `jax.sharding` (a 1-D mesh), and XLA partitions the vmapped program.
- `"sequential"`: each chain runs the chunks on its own, the slot index traced so one
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
    target_accept: float
    max_tree_depth: int
    dense_mass: bool


def _chain_functions(log_density: Callable, settings: _Settings, n_parameters: int):
    """Single-chain `init` and `step` (warmup or draw, by a per-step flag), closed over the
    settings.

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

    def step(key, state, adaptation: _Adaptation, shard, warming, stage, is_end):
        """One transition; during warmup (`warming`) it also adapts."""
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


CHUNK_STEPS = 50


class _Steps(NamedTuple):
    """The per-step inputs of a run, padded to whole chunks of `CHUNK_STEPS` steps: the step's
    index and key, Stan's window stage (0 fast, 1 slow) and slow-window end, whether the step
    adapts (warmup), and whether it is a step of the run at all (False: padding, skipped)."""

    index: Int[Array, " steps"]
    key: PRNGKeyArray
    stage: Int[Array, " steps"]
    is_end: Bool[Array, " steps"]
    warming: Bool[Array, " steps"]
    active: Bool[Array, " steps"]


def _run_steps(key, warmup: int, samples: int) -> _Steps:
    """The inputs of every step of `warmup` + `samples` steps (`_Steps`), zeros after warmup."""
    n_steps = warmup + samples
    padded = -(-n_steps // CHUNK_STEPS) * CHUNK_STEPS
    stages = jnp.zeros(padded, jnp.int32)
    ends = jnp.zeros(padded, bool)
    if warmup > 0:
        schedule = jnp.asarray(build_schedule(warmup))
        stages = stages.at[:warmup].set(schedule[:, 0].astype(jnp.int32))
        ends = ends.at[:warmup].set(schedule[:, 1].astype(bool))
    index = jnp.arange(padded)
    return _Steps(index, jr.split(key, padded), stages, ends, index < warmup, index < n_steps)


def _chunks(steps: _Steps) -> list[_Steps]:
    """`steps` cut into chunks of `CHUNK_STEPS`: one compiled program advances any run by one
    chunk, whatever its warmup and draw counts."""
    n_chunks = steps.index.shape[0] // CHUNK_STEPS
    return [
        jax.tree.map(lambda a, c=c: a[c * CHUNK_STEPS : (c + 1) * CHUNK_STEPS], steps)
        for c in range(n_chunks)
    ]


def _over_chains(fn, n_shard_args: int = 1):
    """vmap over shards (outer) and chains (inner); the last `n_shard_args` arguments are per
    shard only, the others per shard and chain."""

    def wrapped(*args):
        n_args = len(args)
        inner = (0,) * (n_args - n_shard_args) + (None,) * n_shard_args
        return jax.vmap(jax.vmap(fn, in_axes=inner))(*args)

    return wrapped


def _progress(progress, counts, index) -> None:
    """A line at every tenth of warmup and of sampling (one callback for all chains), when
    the traced flag `progress` is on; `counts` = (warmup, samples), traced."""
    _maybe_report(progress, "warmup", counts[0], index + 1)
    _maybe_report(progress, "sampling", counts[1], index + 1 - counts[0])


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


def _chain_progress(progress, counts, run, slot, index) -> None:
    """One chain of several run side by side: its step count, at every hundredth of its steps,
    to its run's `_ChainProgress` (a line at every tenth of all chains' steps), when the
    traced flag `progress` is on."""
    n_steps = counts[0] + counts[1]
    every = jnp.maximum(n_steps // 100, 1)
    done = index + 1
    jax.lax.cond(
        progress & (done <= n_steps) & ((done % every == 0) | (done == n_steps)),
        lambda: jax.debug.callback(_chain_update, run, slot, done),
        lambda: None,
    )


def _maybe_report(progress, phase: str, total, done) -> None:
    every = jnp.maximum(total // 10, 1)
    due = progress & (done >= 1) & (done <= total) & ((done % every == 0) | (done == total))
    jax.lax.cond(
        due,
        lambda: jax.debug.callback(lambda d, t: _report(phase, int(t), int(d)), done, total),
        lambda: None,
    )


def _slot_keys(step_key, n_shards: int, n_chains: int, first, total: int | None):
    """The `(shard, chain)` keys of one step: of shards `first, …, first + n_shards − 1` of a
    run of `total` shards (`first` None: the shards given are the whole run)."""
    if first is None:
        return jr.split(step_key, (n_shards, n_chains))
    keys = jr.split(step_key, (total, n_chains))
    return jax.lax.dynamic_slice_in_dim(keys, first, n_shards)


def _skippable(advance, carry, active):
    """`advance(carry)` → `(carry, record)` where `active`; else the carry unchanged and a
    record of zeros (a padding step)."""
    record_shape = jax.eval_shape(advance, carry)[1]
    return jax.lax.cond(
        active, advance, lambda carry: (carry, _zeros_like_shapes(record_shape)), carry
    )


def _chunk_by_chunk(advance, carry, chunks: list[_Steps], axis: int):
    """`advance(carry, chunk, restart)` → `(carry, record)` over `chunks` in turn (`restart` on
    the first). **Returns:** the records joined along their step `axis`, and the adaptation of
    the last carry."""
    records = []
    for index, chunk in enumerate(chunks):
        carry, record = advance(carry, chunk, jnp.asarray(index == 0))
        records.append(record)
    return jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=axis), *records), carry[1]


def _empty_carry(log_density, settings: _Settings, positions, adapted, shard_data):
    """Zeros shaped like every chain's (state, adaptation), leaves `(shard, chain, …)`: the
    carry of a run's first chunk, which that chunk's `restart` replaces."""
    init, _, _ = _chain_functions(log_density, settings, positions.shape[-1])
    shapes = jax.eval_shape(_over_chains(init), positions, *adapted, shard_data)
    return _zeros_like_shapes(shapes)


def _zeros_like_shapes(shapes):
    """Zeros of the shapes and dtypes of a pytree of `jax.ShapeDtypeStruct`s."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@eqx.filter_jit
def _advance_vectorized(
    log_density,
    shard_data,
    carry,
    positions,
    adapted,
    steps: _Steps,
    restart,
    settings: _Settings,
    progress,
    counts,
    first=None,
    total=None,
):
    """One chunk of steps of every (shard, chain), vmapped; where `restart`, the chains start
    afresh at `positions` with the metric `adapted` (the first chunk of a run)."""
    n_shards, n_chains, n_parameters = positions.shape
    init, step, _ = _chain_functions(log_density, settings, n_parameters)
    carry = jax.lax.cond(
        restart, lambda: _over_chains(init)(positions, *adapted, shard_data), lambda: carry
    )

    def body(carry, xs: _Steps):
        def advance(carry):
            states, adaptations = carry
            keys = _slot_keys(xs.key, n_shards, n_chains, first, total)
            batched = _over_chains(
                lambda k, s, a, d: step(k, s, a, d, xs.warming, xs.stage, xs.is_end)
            )
            states, adaptations, record = batched(keys, states, adaptations, shard_data)
            return (states, adaptations), record

        carry, record = _skippable(advance, carry, xs.active)
        _progress(progress, counts, xs.index)
        return carry, record

    carry, records = jax.lax.scan(body, carry, steps)
    # (step, shard, chain, ...) → (shard, chain, step, ...)
    return carry, jax.tree.map(lambda r: jnp.moveaxis(r, 0, 2), records)


def _run_vectorized(
    log_density, shard_data, positions, adapted, steps, settings, progress, counts, first, total
):
    """Every chunk of `steps` for all chains (`_advance_vectorized`), the records joined."""
    carry = _empty_carry(log_density, settings, positions, adapted, shard_data)
    if len(positions.sharding.device_set) > 1:  # the chains split across devices
        carry = jax.device_put(carry, positions.sharding)

    def advance(carry, chunk, restart):
        return _advance_vectorized(
            log_density, shard_data, carry, positions, adapted, chunk, restart, settings,
            progress, counts, first, total,
        )  # fmt: skip

    return _chunk_by_chunk(advance, carry, _chunks(steps), axis=2)


@eqx.filter_jit
def _advance_chain(
    log_density,
    shard_data,
    carry,
    positions,
    adapted,
    steps: _Steps,
    restart,
    settings: _Settings,
    progress,
    counts,
    run,
    slot,
    first=None,
    total=None,
):
    """One chunk of steps of one (shard, chain) slot (traced: one program serves every slot),
    with the random numbers that slot draws in the vectorized run; `run` numbers its progress;
    where `restart`, the chain starts afresh (the first chunk of a run)."""
    n_shards, n_chains, n_parameters = positions.shape
    init, step, _ = _chain_functions(log_density, settings, n_parameters)
    shard_index, chain_index = slot // n_chains, slot % n_chains
    shard = jax.tree.map(lambda a: a[shard_index], shard_data)
    carry = jax.lax.cond(
        restart,
        lambda: init(
            positions[shard_index, chain_index],
            *(a[shard_index, chain_index] for a in adapted),
            shard,
        ),
        lambda: carry,
    )

    def body(carry, xs: _Steps):
        def advance(carry):
            state, adaptation = carry
            keys = _slot_keys(xs.key, n_shards, n_chains, first, total)
            state, adaptation, record = step(
                keys[shard_index, chain_index], state, adaptation, shard, xs.warming, xs.stage,
                xs.is_end,
            )  # fmt: skip
            return (state, adaptation), record

        carry, record = _skippable(advance, carry, xs.active)
        _chain_progress(progress, counts, run, slot, xs.index)
        return carry, record

    return jax.lax.scan(body, carry, steps)


def _run_sequential(
    log_density, shard_data, positions, adapted, steps, settings, progress, counts, first, total
):
    """Every (shard, chain) slot as its own run of `_advance_chain` chunks, as many side by side
    as the CPU has cores (threads: a compiled program runs without the GIL, and XLA's CPU
    programs are single-threaded for the most part, so a second chain uses a second core)."""
    n_shards, n_chains = positions.shape[:2]
    n_slots = n_shards * n_chains
    run = next(_RUN_NUMBERS)
    _CHAIN_RUNS[run] = _ChainProgress(n_slots, int(counts[0] + counts[1]), int(counts[0]))
    empty = jax.tree.map(  # one slot's
        lambda a: a[0, 0], _empty_carry(log_density, settings, positions, adapted, shard_data)
    )
    chunks = _chunks(steps)
    number = jnp.asarray(run, jnp.int32)
    shared = (log_density, shard_data)
    options = (settings, progress, counts, number)

    # Compiled here, before the threads start: when the threads' first calls compiled it,
    # the second chain waited for the first one's whole run (measured, jax 0.10: two chains
    # one after the other, not side by side).
    program = _advance_chain.lower(
        *shared, empty, positions, adapted, chunks[0], jnp.asarray(True), *options,
        jnp.asarray(0, jnp.int32), first, total,
    ).compile()  # fmt: skip

    def run_slot(slot: int):
        def advance(carry, chunk, restart):
            return program(
                *shared, carry, positions, adapted, chunk, restart, *options,
                jnp.asarray(slot, jnp.int32), first, total,
            )  # fmt: skip

        return jax.block_until_ready(_chunk_by_chunk(advance, empty, chunks, axis=0))

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
    """Warmup and NUTS draws for every (shard, chain), by one compiled program (a chunk of
    steps, module docstring) that any later run of the same shapes reuses.

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
    # Uncommitted arrays on the default device, whatever made them (an earlier run's draws and
    # metric are committed): committed ones would compile the run's program once more.
    positions, adapted = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), (positions, adapted))
    settings = _Settings(
        float(target_accept),
        int(max_tree_depth),
        bool(dense_mass),
    )
    # Traced, like the step counts and the per-step inputs (`_Steps`): runs with and without
    # progress lines, of any warmup and draw counts, share one compiled program.
    report = jnp.asarray(bool(progress))
    counts = jnp.asarray([int(warmup), int(samples)], jnp.int32)
    steps = _run_steps(key, int(warmup), int(samples))
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
            log_density, shard_data, positions, adapted, steps, settings, report, counts, first,
            total,
        )  # fmt: skip
    else:
        records, adaptations = _run_sequential(
            log_density, shard_data, positions, adapted, steps, settings, report, counts, first,
            total,
        )  # fmt: skip
    position, divergent, energy, acceptance, n_steps, depth = (np.asarray(r) for r in records)
    step_size = jax.vmap(jax.vmap(_final_step_size(settings)))(adaptations)
    warm, kept = slice(0, int(warmup)), slice(int(warmup), int(warmup) + int(samples))
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
