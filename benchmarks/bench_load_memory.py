"""Peak memory of `heterojax.load_aps` when a few maps are selected from a large file.

Writes a temporary NeXus-layout file (by default 100 maps of 2000 × 2000, float32 upper
triangles without compression, as boost-corr writes them: ~1.6 GB), then, in a fresh Python
process, loads 10 of the maps (one q bin, all its φ) and measures the peak resident memory
during the load against a baseline taken just before it (after imports and JAX start-up). The
selected data are 10 · 2000² · 8 bytes = 320 MB as float64; the issue asks for a peak within
about 2× that. Prints one JSON object and deletes the file.

    python benchmarks/bench_load_memory.py [--maps 100] [--side 2000] [--select 10]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np


_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, time
    import numpy as np
    import jax
    import heterojax as hj

    path, q = sys.argv[1], float(sys.argv[2])

    def rss():
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM")}

    jax.device_put(np.zeros(8)).block_until_ready()  # start the JAX runtime before the baseline
    baseline = rss()["VmRSS"]
    try:  # reset the peak-RSS counter (Linux ≥ 4.0) so the peak is the load's own
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    start = time.perf_counter()
    data = hj.load_aps(path, q=q)
    data.c2.block_until_ready()
    seconds = time.perf_counter() - start
    after = rss()
    peak = after["VmHWM"] if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "rss_after_bytes": after["VmRSS"],
        "peak_reset": reset,
        "load_seconds": seconds,
        "loaded_shape": list(data.c2.shape),
        "loaded_dtype": str(data.c2.dtype),
    }))
    """
)


def _write_file(path: str, n_maps: int, side: int, select: int) -> tuple[float, float]:
    from heterojax._data._writer import write_result_file

    n_q = n_maps // select
    q_grid = 0.001 * np.arange(1, n_q + 1)
    phi_grid = np.linspace(-180.0, 180.0, select, endpoint=False)
    q = np.repeat(q_grid, select)
    phi = np.tile(phi_grid, n_q)
    lag = np.abs(np.subtract.outer(np.arange(side), np.arange(side))).astype(np.float64)
    decay = np.exp(-lag / (0.1 * side))

    def read_map(index: int) -> np.ndarray:
        return 1.0 + (0.2 + 0.001 * index) * decay

    write_result_file(path, read_map, q=q, phi=phi, n_frames=side, dt=1e-3, dtype="float32")
    return float(q_grid[n_q // 2]), os.path.getsize(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=100, help="maps in the file")
    parser.add_argument("--side", type=int, default=2000, help="frames per map side")
    parser.add_argument("--select", type=int, default=10, help="maps to load (φ bins per q)")
    parser.add_argument("--dir", default=None, help="folder for the temporary file")
    args = parser.parse_args()
    if args.maps % args.select:
        parser.error("--maps must be a multiple of --select")

    folder = tempfile.mkdtemp(prefix="heterojax-bench-", dir=args.dir)
    path = os.path.join(folder, "bench_results.hdf")
    try:
        start = time.perf_counter()
        q, file_bytes = _write_file(path, args.maps, args.side, args.select)
        write_seconds = time.perf_counter() - start
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, path, repr(q)],
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            raise SystemExit(child.returncode)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(folder)

    selected_bytes = args.select * args.side**2 * 8
    growth = measured["peak_rss_bytes"] - measured["baseline_rss_bytes"]
    print(
        json.dumps(
            {
                "benchmark": "load_aps peak memory",
                "file_maps": args.maps,
                "map_side": args.side,
                "file_storage": "float32 upper triangle, no compression, one chunk per map",
                "file_bytes": file_bytes,
                "write_seconds": round(write_seconds, 2),
                "selected_maps": args.select,
                "selected_bytes_float64": selected_bytes,
                **measured,
                "peak_minus_baseline_bytes": growth,
                "peak_over_selected": round(growth / selected_bytes, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
