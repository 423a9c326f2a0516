"""heterojax: heterodyne XPCS under nonequilibrium conditions, in JAX.

Importing heterojax turns on JAX's float64 mode (parameters span ~10 decades) unless the
environment variable `JAX_ENABLE_X64` is set explicitly, in which case that setting is kept.
"""

import os as _os

import jax as _jax


if _os.environ.get("JAX_ENABLE_X64") is None:
    _jax.config.update("jax_enable_x64", True)

from ._batch._run import fit_batch as fit_batch
from ._batch._sources import BatchSource as BatchSource
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._cmc._adjustment import (
    AbstractLikelihoodAdjustment as AbstractLikelihoodAdjustment,
    CheckedCurvatureAdjustment as CheckedCurvatureAdjustment,
    CurvatureAdjustment as CurvatureAdjustment,
    MagnitudeAdjustment as MagnitudeAdjustment,
    NoAdjustment as NoAdjustment,
)
from ._cmc._combine import (
    consensus_combine as consensus_combine,
    mixture_combine as mixture_combine,
)
from ._cmc._fit import fit_cmc as fit_cmc
from ._cmc._result import CMCResult as CMCResult
from ._cmc._settings import NUTS as NUTS
from ._cmc._verdict import CMCVerdict as CMCVerdict, Thresholds as Thresholds
from ._data._aps import load_aps as load_aps
from ._data._correlator import two_time as two_time
from ._data._flat import load as load
from ._data._simulate import simulate as simulate
from ._data._speckle import simulate_speckle as simulate_speckle
from ._data._writer import save_aps as save_aps
from ._data._xpcs_data import XPCSData as XPCSData
from ._fit._by_q import QDependence as QDependence, fit_by_q as fit_by_q
from ._fit._estimate import estimate_start as estimate_start
from ._fit._nlsq import fit_nlsq as fit_nlsq
from ._fit._nlsq_result import NLSQResult as NLSQResult
from ._fit._quality import QualityReport as QualityReport
from ._fit._speckle_errors import SpeckleErrors as SpeckleErrors
from ._fit._strategies import (
    AbstractStarts as AbstractStarts,
    AutoStarts as AutoStarts,
    LocalStart as LocalStart,
    MultiStart as MultiStart,
)
from ._fit._uncertainty import (
    AbstractErrors as AbstractErrors,
    FormalErrors as FormalErrors,
    FrameClusteredErrors as FrameClusteredErrors,
)
from ._io._results import (
    SavedResult as SavedResult,
    load_result as load_result,
    save_result as save_result,
)
from ._model._bins import BinGeometry as BinGeometry
from ._model._heterodyne import HeterodyneModel as HeterodyneModel
from ._model._laws import (
    AbstractFraction as AbstractFraction,
    AbstractLaw as AbstractLaw,
    AbstractTransport as AbstractTransport,
    AbstractVelocity as AbstractVelocity,
    ExponentialFraction as ExponentialFraction,
    PowerLawTransport as PowerLawTransport,
    PowerLawVelocity as PowerLawVelocity,
)
from ._model._numerics import cumulative_trapezoid as cumulative_trapezoid
from ._model._one_time import one_time as one_time
from ._parameters import (
    PARAMETER_NAMES as PARAMETER_NAMES,
    PARAMETERS as PARAMETERS,
    ParameterSpec as ParameterSpec,
)
from ._plot._maps import (
    plot_data as plot_data,
    plot_maps as plot_maps,
    plot_model as plot_model,
)
from ._plot._one_time import plot_one_time as plot_one_time
from ._plot._posterior import (
    plot_posterior as plot_posterior,
    plot_traces as plot_traces,
)
from ._plot._q_dependence import plot_q_dependence as plot_q_dependence
from ._plot._residuals import plot_residual_histogram as plot_residual_histogram
from ._plot._series import plot_series as plot_series
from ._version import __version__ as __version__
