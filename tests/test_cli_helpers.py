"""Shared, cached inputs of the CLI/config/results/plot tests (no tests of its own).

One tiny demo run (2 angles × 24 frames, NLSQ only) per test process provides an APS file, its
config, a saved result folder and a live NLSQ fit; every later fit with the same shapes and
free parameters reuses the compiled program.
"""

import atexit
import functools
import os
import shutil
import tempfile
import types

import numpy as np


@functools.cache
def tiny_demo() -> str:
    """The folder of `heterojax demo --quick --no-cmc` (demo_data.h5, demo.yaml, results/)."""
    from heterojax._cli._main import main

    folder = tempfile.mkdtemp(prefix="heterojax-test-demo-")
    atexit.register(shutil.rmtree, folder, True)
    code = main(["demo", "--quick", "--no-cmc", "-q", "--output", folder])
    assert code == 0, f"tiny demo failed with exit code {code}"
    return folder


@functools.cache
def tiny_fit():
    """(data, NLSQResult, config) of the tiny demo, fitted in-process with the config's
    arguments (the same compiled program as the CLI's)."""
    import heterojax
    from heterojax._config._calls import load_arguments, model_from_config, nlsq_arguments
    from heterojax._config._load import load_config

    config = load_config(os.path.join(tiny_demo(), "demo.yaml"))
    data = heterojax.load(**load_arguments(config))
    result = heterojax.fit_nlsq(model_from_config(config), data, **nlsq_arguments(config))
    return data, result, config


def fake_cmc_result(names=("D0_sample", "v0"), n_angles=2, chains=2, draws=60, seed=0):
    """A stand-in for a `fit_cmc` result with the attributes that saving and plotting use."""
    import heterojax

    rng = np.random.default_rng(seed)
    means = {"D0_sample": 2500.0, "v0": 300.0, "f0": 0.4, "D0_ref": 150.0}
    all_names = (*names, "contrast[0]", "offset[0]")
    samples_array = np.stack(
        [means.get(n, 0.5) * (1 + 0.01 * rng.standard_normal((chains, draws))) for n in all_names],
        axis=-1,
    )
    samples = {n: samples_array[..., k] for k, n in enumerate(names)}
    samples["contrast"] = 0.15 + 0.001 * rng.standard_normal((chains, draws, n_angles))
    samples["offset"] = 1.0 + 0.001 * rng.standard_normal((chains, draws, n_angles))

    class Verdict:
        passed = True
        failures = ()

        def __init__(self):
            import dataclasses

            @dataclasses.dataclass
            class Thresholds:
                r_hat: float = 1.01

            self.thresholds = Thresholds()

        def __str__(self):
            return "PASSED"

    def table():
        return {
            n: {
                "mean": float(samples_array[..., k].mean()),
                "sd": float(samples_array[..., k].std()),
                "2.5%": 0.0,
                "50%": 0.0,
                "97.5%": 0.0,
                "r_hat": 1.0,
                "ess_bulk": 100.0,
                "ess_tail": 100.0,
            }
            for k, n in enumerate(all_names)
        }

    result = types.SimpleNamespace(
        names=all_names,
        draws=samples_array,
        shard_draws=samples_array[None],
        samples=samples,
        model=heterojax.HeterodyneModel.from_dict({n: means[n] for n in names}),
        verdict=Verdict(),
        table=table,
        summary=lambda: "fake CMC summary",
        diagnostics={
            "r_hat": {n: 1.0 for n in all_names},
            "bfmi": np.array([1.0]),
            "divergences": np.array([0]),
        },
        combined_diagnostics={"r_hat": {n: 1.0 for n in all_names}},
        combine="consensus",
        n_shards=1,
        shard_sizes=np.array([100]),
        shard_strategy="random",
        chains=chains,
        warmup=10,
        n_samples=draws,
        chain_method="vectorized",
        n_devices=1,
        priors="uniform",
        prior_width=2.0,
        sigma=np.full(n_angles, 1e-3),
        noise="nlsq",
        wall_time=1.0,
        sampling_time=0.5,
        phi=np.array([0.0, 60.0][:n_angles]),
        q=np.full(n_angles, 0.01),
    )
    result.save_netcdf = lambda path: open(path, "wb").write(b"CDF-fake")
    return result
