"""The Latin-hypercube part of the start designs of `_strategies` (`MultiStart`, `AutoStarts`).

The χ² surface has genuine false minima: the model is nearly symmetric under exchanging the
reference and sample components (with f_s ↔ f_r), and the two transport exponents trade off.
The fringes make the surface multimodal in the velocity too: a start whose v is off by a
factor 2 sees dephased fringes everywhere. The strategies put their anchors first (the user's
start, data-driven starts, their exchanged images, …); `start_design` fills the rest with a
Latin hypercube around a centre over the parameters that create such minima:

- transport prefactors `D0_*`: log-uniform within ×/÷ 30 of the start (or 1e-6…1e-2 of the
  upper bound when the start is 0); `v0`: log-uniform within ×/÷ 3;
- exponents (`alpha_*`, `beta`): uniform in [−1, 1];
- fraction amplitudes (`f0`, `f3`) and `phi0`: uniform over their bounds;
- any other parameter of a user-written law: uniform over the middle half of its box when the
  box is finite and at most 100 × (|start| + 1) wide; otherwise kept at its start;
- offsets (`D_offset_*`, `v_offset`, `f1`, `f2`) and contrast/offset coefficients: kept
  (`AutoStarts` then draws v0 within ×/÷ 10 and f1 over the window's time scale itself).
"""

import numpy as np


_KEPT = ("D_offset", "v_offset", "f1", "f2", "contrast", "offset")


def _sampling_rule(name: str, start: float, lower: float, upper: float):
    """('log' | 'linear' | 'keep', low, high) for one parameter."""
    if name.startswith(_KEPT) or name.startswith(("contrast", "offset")):
        return "keep", start, start
    if name.startswith(("D0", "v0")):
        factor = 3.0 if name.startswith("v0") else 30.0
        if start > 0:
            low, high = max(lower, start / factor), min(upper, start * factor)
        else:
            low, high = max(lower, upper * 1e-6), upper * 1e-2
        if low > 0 and high > low:
            return "log", low, high
        return "keep", start, start
    if name.startswith(("alpha", "beta")):
        return "linear", max(lower, -1.0), min(upper, 1.0)
    if name in ("f0", "f3", "phi0"):
        return "linear", lower, upper
    width = upper - lower
    if np.isfinite(width) and width <= 100 * (abs(start) + 1):
        return "linear", lower + width / 4, upper - width / 4
    return "keep", start, start


# Free parameters starting on (or within this fraction of the range from) a two-sided bound are
# moved this far inside: the logistic transform is flat at a bound, so a parameter started there
# never moves. D0 and v0 span decades (their transform is logarithmic near the lower bound) and
# get a smaller margin. A start the user gives (a local refit, or the truth) is only nudged off
# an exact bound (`USER_MARGIN_LOG`): near the lower bound the transform of D0 and v0 is
# logarithmic, so any positive value is a working start, and a margin of 1e-4 of the range
# (100 Å²/s for D0) would move a slow sample's start far from where the user put it.
_BOUND_MARGIN = 1e-2
_BOUND_MARGIN_LOG = 1e-4
USER_MARGIN_LOG = 1e-9


def pulled_inside(
    names: tuple[str, ...],
    x: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    user_rows: int = 0,
) -> np.ndarray:
    """Rows of start vectors with every free parameter moved off its bounds (see
    `_BOUND_MARGIN`): x ← clip(x, l + m·(u − l), u − m·(u − l)) for two-sided boxes. The
    first `user_rows` rows are the user's start: D0 and v0 there get `USER_MARGIN_LOG`."""
    x = np.array(x, float, ndmin=2)
    width = upper - lower
    user = np.arange(x.shape[0]) < user_rows
    for k, name in enumerate(names):
        if not np.isfinite(width[k]) or width[k] <= 0:
            continue
        if name.startswith(("D0", "v0")):
            fraction = np.where(user, USER_MARGIN_LOG, _BOUND_MARGIN_LOG)
        else:
            fraction = np.full(x.shape[0], _BOUND_MARGIN)
        margin = fraction * width[k]
        x[:, k] = np.clip(x[:, k], lower[k] + margin, upper[k] - margin)
    return x


def latin_hypercube(n: int, dimension: int, rng: np.random.Generator) -> np.ndarray:
    """n points in (0, 1)^dimension, one per stratum along each axis."""
    strata = np.stack([rng.permutation(n) for _ in range(dimension)], axis=1)
    return (strata + rng.uniform(size=(n, dimension))) / n


def start_design(
    names: tuple[str, ...],
    anchors: list[np.ndarray],
    centre: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    n_starts: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """`n_starts` start vectors (rows): the anchors, then a Latin hypercube around `centre`.

    f0 + f3 is kept ≤ 1 by rescaling both when a draw exceeds it.
    """
    starts = [np.clip(np.asarray(a, float), lower, upper) for a in anchors]
    x0 = np.asarray(centre, float)
    n_random = n_starts - len(starts)
    if n_random > 0:
        unit = latin_hypercube(n_random, len(names), rng)
        draws = np.tile(np.asarray(x0, float), (n_random, 1))
        for k, name in enumerate(names):
            kind, low, high = _sampling_rule(name, float(x0[k]), float(lower[k]), float(upper[k]))
            if kind == "log":
                draws[:, k] = np.exp(np.log(low) + unit[:, k] * (np.log(high) - np.log(low)))
            elif kind == "linear":
                draws[:, k] = low + unit[:, k] * (high - low)
        if "f0" in names and "f3" in names:
            i0, i3 = names.index("f0"), names.index("f3")
            total = draws[:, i0] + draws[:, i3]
            excess = np.where(total > 1, total, 1.0)
            draws[:, i0] /= excess
            draws[:, i3] /= excess
        starts.extend(np.clip(draws, lower, upper))
    return np.stack(starts[:n_starts])
