"""Shared jaxtyping aliases.

Shape names used throughout: ``t`` (time points), ``phi`` (one entry per correlation map,
i.e. per (q, φ) bin), ``pair`` (selected (t1, t2) pairs), ``p`` (parameters).
"""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, Int


Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = Float[ArrayLike, ""]
TimeGrid: TypeAlias = Float[Array, " t"]
TimeGridLike: TypeAlias = Float[ArrayLike, " t"]
PerAngle: TypeAlias = Float[Array, " phi"]
PerAngleLike: TypeAlias = Float[ArrayLike, "*phi"]
CorrelationMaps: TypeAlias = Float[Array, "phi t t"]
CorrelationMap: TypeAlias = Float[Array, "t t"]
PairValues: TypeAlias = Float[Array, " pair"]
PairIndices: TypeAlias = Int[ArrayLike, " pair"]
ParameterVector: TypeAlias = Float[Array, " p"]
