"""`heterojax plot | simulate | info | fit`."""

import logging
import os

import jax
import jax.random as jr

import heterojax

from .._config._calls import model_from_config, simulate_arguments
from .._config._load import load_config
from .._io._atomic import check_writable
from .._io._results import load_result
from .._io._versions import versions
from .._plot._maps import plot_data, plot_model
from ._config_commands import load_selection
from ._errors import EXIT_OK, BadInput
from ._logging import Logging, report
from ._pipeline import RunOptions, run_fit
from ._plots import plot_paths, write_cmc_plots, write_nlsq_plots


_LOG = logging.getLogger("heterojax.cli")


def fit(args, logs: Logging) -> int:
    config = load_config(args.config)
    options = RunOptions(
        method=args.method,
        output=args.output,
        overwrite=args.overwrite,
        plots=False if args.no_plots else None,
    )
    return run_fit(config, options, logs)


def _plot_folder(args, default: str) -> str:
    return os.path.abspath(args.output) if args.output else default


def plot(args, logs: Logging) -> int:
    if args.what in ("data", "model"):
        config = load_config(args.source)
        folder = _plot_folder(args, os.path.join(config.output.directory, "plots"))
        path = os.path.join(folder, f"{args.what}.png")
        check_writable([path], overwrite=args.overwrite)
        data = load_selection(config)
        if args.what == "data":
            plot_data(data, path=path, overwrite=args.overwrite)
        else:
            scaling = config.scaling
            contrast = heterojax.PARAMETERS["contrast"].default
            offset = heterojax.PARAMETERS["offset"].default
            plot_model(
                model_from_config(config),
                data,
                contrast=contrast if scaling.contrast.value is None else scaling.contrast.value,
                offset=offset if scaling.offset.value is None else scaling.offset.value,
                path=path,
                overwrite=args.overwrite,
            )
        _LOG.info(f"wrote {path}")
        return EXIT_OK
    directory = args.source
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Result folder {directory!r} not found.")
    folder = _plot_folder(args, os.path.join(directory, "plots"))
    methods = tuple(
        m for m in ("nlsq", "cmc") if os.path.exists(os.path.join(directory, f"{m}.json"))
    )
    if not methods:
        raise FileNotFoundError(f"No nlsq.json or cmc.json in {directory!r}.")
    # The PNGs are drawn from the saved results, which stay as they are: replacing the plots
    # `fit` wrote (the README's `fit` then `plot fit`) loses nothing.
    replace = True
    check_writable(plot_paths(folder, methods), overwrite=replace)
    reference = None
    if "nlsq" in methods:
        saved = load_result(directory, method="nlsq")
        write_nlsq_plots(saved, None, folder, overwrite=replace)
        reference = saved.parameters
    if "cmc" in methods:
        write_cmc_plots(
            load_result(directory, method="cmc"),
            folder,
            reference=reference,
            overwrite=replace,
        )
    _LOG.info(f"wrote the plots of {', '.join(methods)} into {folder}")
    return EXIT_OK


def simulate(args, logs: Logging) -> int:
    config = load_config(args.config)
    try:
        plan = simulate_arguments(config)
    except ValueError as error:
        raise BadInput(str(error)) from None
    path = os.path.abspath(args.output) if args.output else plan["path"]
    check_writable([path], overwrite=args.overwrite)
    model = model_from_config(config)
    arguments = plan["simulate"]
    t = arguments.pop("t")
    data = heterojax.simulate(model, t, key=jr.key(plan["seed"]), **arguments)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    heterojax.save_aps(path, data, overwrite=args.overwrite, **plan["save_aps"])
    _LOG.info(
        f"wrote {path}: {data.n_angles} map(s) × {data.n_times} frames "
        f"(frames {config.data.frames[0]}–{config.data.frames[1]}, dt = {float(data.dt):g} s)"
        if config.data.frames
        else f"wrote {path}"
    )
    return EXIT_OK


def info(args, logs: Logging) -> int:
    lines = ["heterojax environment"]
    for name, version in versions().items():
        lines.append(f"  {name:<12}{version}")
    lines.append(
        f"  float64     {'on' if jax.config.read('jax_enable_x64') else 'OFF'}"
        f" (JAX_ENABLE_X64={os.environ.get('JAX_ENABLE_X64', 'unset')})"
    )
    lines.append(f"  backend     {jax.default_backend()}")
    for device in jax.devices():
        lines.append(f"  device      {device.platform}:{device.id} {device.device_kind}")
    lines.append(f"  cpu cores   {os.cpu_count()}")
    cmc = getattr(heterojax, "fit_cmc", None)
    if cmc is None:
        try:
            from .._cmc._fit import fit_cmc as cmc  # noqa: F401
        except ImportError:
            cmc = None
    lines.append(f"  fit_cmc     {'available' if cmc is not None else 'not available'}")
    for module in ("yaml", "pydantic", "matplotlib", "tqdm", "arviz"):
        try:
            imported = __import__(module)
            lines.append(f"  {module:<12}{getattr(imported, '__version__', 'installed')}")
        except ImportError:
            lines.append(f"  {module:<12}not installed")
    report("\n".join(lines), quiet=False)
    return EXIT_OK
