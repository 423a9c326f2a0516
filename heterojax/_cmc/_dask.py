"""Phase 3 of `fit_cmc` on a Dask cluster: one task per shard.

Each task runs `run_nuts` on one shard (a leading shard axis of length 1) with
`key_shards=(k, K)`, so its chains draw the random numbers they draw in the in-process run of
all K shards. Sequential chains run the same program per chain whatever K, so their draws are
those of `fit_cmc(client=None)` exactly; vectorized ones vmap over one shard instead of K, which
XLA rounds differently (~1e-16 a step, amplified by NUTS to ~1e-6 over short runs), so their
draws are those of the in-process run up to that, the same posterior in any case. What
goes to the workers is plain data: the shard density (an `eqx.Module`; its arrays as NumPy
arrays, sent once and shared by the tasks), each shard's slice of the whitened data and of the
chain starts, the sampling key and the settings. What comes back is the shard's `NUTSRun`
(NumPy arrays), the devices it used and the worker's address; the client concatenates the
shards in order, and `fit_cmc` carries on with the same pure functions as in-process.
"""

import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._sampler import AdaptedMetric, NUTSRun, run_nuts


def _to_numpy(tree):
    """`tree` with its JAX arrays as NumPy arrays (typed PRNG keys left as they are)."""

    def convert(leaf):
        if isinstance(leaf, jax.Array) and not jax.dtypes.issubdtype(
            leaf.dtype, jax.dtypes.prng_key
        ):
            return np.asarray(leaf)
        return leaf

    return jax.tree.map(convert, tree)


def sample_shard(
    log_density, shard_data, positions, adapted, key, index: int, n_shards: int, options
):
    """The Dask task of shard `index` of `n_shards`: `(run, n_devices, worker address)`."""
    from distributed import get_worker

    run, n_devices = run_nuts(
        log_density,
        shard_data,
        positions,
        key,
        key_shards=(index, n_shards),
        progress=False,
        adapted=adapted,
        **options,
    )
    return _to_numpy(run), n_devices, get_worker().address


def _shard(tree, k: int):
    """Shard `k` of a pytree with a leading shard axis (kept, of length 1), as NumPy."""
    return _to_numpy(jax.tree.map(lambda a: a[k : k + 1], tree))


def _concatenate(runs: list[NUTSRun]) -> NUTSRun:
    return jax.tree.map(lambda *parts: jnp.asarray(np.concatenate(parts, axis=0)), *runs)


def run_nuts_on_dask(
    client: Any,
    log_density,
    shard_data,
    positions,
    key,
    *,
    progress: bool,
    adapted: AdaptedMetric | None = None,
    **options,
) -> tuple[NUTSRun, int, tuple[str, ...]]:
    """`run_nuts` of every shard as a Dask task on `client` (`True`: an embedded
    `LocalCluster` of min(K, CPU count) worker processes; otherwise as `_batch._cluster.
    connected` takes it).

    **Returns:** `(run, n_devices, workers)`: the `NUTSRun` of all shards, the most devices a
    task used, and the address of the worker that sampled each shard.
    """
    from distributed import as_completed

    from .._batch._cluster import connected

    n_shards = int(positions.shape[0])
    workers = None
    if client is True:
        client, workers = None, max(min(n_shards, os.cpu_count() or 1), 1)
    tag = os.urandom(4).hex()
    began = time.perf_counter()
    # Workers share the caller's persistent compilation cache, when one is set.
    cache = jax.config.jax_compilation_cache_dir or None
    with connected(client, workers=workers, cache=cache) as dask:
        density = dask.scatter(_to_numpy(log_density), hash=False)
        futures = {
            dask.submit(
                sample_shard,
                density,
                _shard(shard_data, k),
                np.asarray(positions[k : k + 1]),
                None if adapted is None else _shard(adapted, k),
                key,
                k,
                n_shards,
                options,
                pure=False,
                key=f"heterojax-cmc-shard-{k}-{tag}",
            ): k
            for k in range(n_shards)
        }
        results: dict[int, tuple] = {}
        for future in as_completed(futures):
            k = futures[future]
            results[k] = future.result()
            if progress:
                print(
                    f"[heterojax.fit_cmc] shard {k + 1}/{n_shards} sampled on "
                    f"{results[k][2]} ({len(results)}/{n_shards} done)  "
                    f"{time.perf_counter() - began:7.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    ordered = [results[k] for k in range(n_shards)]
    run = _concatenate([r[0] for r in ordered])
    return run, max(r[1] for r in ordered), tuple(r[2] for r in ordered)
