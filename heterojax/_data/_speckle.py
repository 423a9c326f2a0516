"""`simulate_speckle`: photon-count frames of a heterodyne speckle experiment, pixel by pixel.

The reference for what measured c2 noise looks like: every entry of a row t1 of a
correlated map uses the same frame intensities I(t1), so the noise of c2 is correlated along
rows and columns. Here fields are simulated per pixel, turned into photon counts, and
correlated by `two_time` exactly as a beamline does it.
"""

import math
import numbers
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._model._bins import BinGeometry
from .._model._heterodyne import HeterodyneModel
from ._correlator import _per_bin, correlate_frames
from ._diagonal import check_diagonal_mode
from ._xpcs_data import XPCSData


# contrast ≥ 0.01 keeps the number of coherent modes per pixel (≈ 1/contrast) at ≤ 100.
MIN_CONTRAST = 0.01


def mode_weights(contrast: Float[np.ndarray, " bin"]) -> Float[np.ndarray, "bin mode"]:
    """Occupations w_m ≥ 0 of M = ⌈1/β⌉ coherent modes with Σ w_m = 1 and Σ w_m² = β.

    One mode holds w_1 = [1 + √((M − 1)(βM − 1))]/M, the other M − 1 share the rest equally
    (the root of w_1² + (1 − w_1)²/(M − 1) = β); β = 1/M gives M equal modes. Bins with fewer
    modes are padded with zero weights to the largest M.
    """
    modes = np.ceil(1.0 / contrast - 1e-9).astype(int)
    weights = np.zeros((contrast.size, int(modes.max())))
    for b, (beta, m) in enumerate(zip(contrast, modes)):
        first = (1.0 + math.sqrt(max((m - 1) * (beta * m - 1.0), 0.0))) / m
        weights[b, 0] = first
        weights[b, 1:m] = (1.0 - first) / (m - 1) if m > 1 else 0.0
    return weights


def _pixel_counts(pixels: object, n_bins: int) -> Int[np.ndarray, " bin"]:
    values = np.atleast_1d(np.asarray(pixels))
    integral = values.dtype.kind in "iu" or (
        values.dtype.kind == "f" and np.all(np.isfinite(values)) and np.all(values % 1 == 0)
    )
    if isinstance(pixels, bool) or values.dtype.kind == "b" or not integral:
        raise TypeError(f"`pixels` must be an integer or one integer per bin; got {pixels!r}.")
    if values.ndim != 1 or values.shape[0] not in (1, n_bins):
        raise ValueError(
            f"`pixels` must be an integer or one per bin ({n_bins}); got shape {values.shape}."
        )
    if np.any(values < 1):
        raise ValueError(f"`pixels` must be at least 1 per bin; got {pixels!r}.")
    return np.broadcast_to(values.astype(int), (n_bins,)).copy()


def _check_counts(counts: object) -> float | None:
    if counts is None:
        return None
    if isinstance(counts, bool) or not isinstance(counts, numbers.Real):
        raise TypeError(
            f"`counts` must be a number (mean photons per pixel per frame) or None; got {counts!r}."
        )
    value = float(counts)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"`counts` must be a positive, finite mean number of photons per pixel per frame "
            f"(e.g. 0.1 to 100); got {value}. Use counts=None for noise-free intensities."
        )
    return value


@eqx.filter_jit
def _pixel_positions(
    bins: BinGeometry | None,
    q: Float[Array, " bin"],
    phi: Float[Array, " bin"],
    n_pixels: int,
    key: PRNGKeyArray,
) -> tuple[Float[Array, "bin pixel"], Float[Array, "bin pixel"]]:
    """(q_p, φ_p) of every pixel: the bin centre, or random points of the bin's measure
    (`bins` from widths), or its rule's nodes drawn by weight (any other `bins`)."""
    n_bins = q.shape[0]
    shape = (n_bins, n_pixels)
    if bins is None:
        return (
            jnp.broadcast_to(jnp.asarray(q)[:, None], shape),
            jnp.broadcast_to(jnp.asarray(phi)[:, None], shape),
        )
    q_key, phi_key = jr.split(key)
    if bins.source == "widths" and bins.moments is not None:
        # The box q_c ± h_q, φ_c ± h_φ with density ∝ (1 + s x), x = (q − q_c)/h_q: s = h_q/q_c
        # for a flat detector's q dq dφ ("area"), s = 0 for "uniform"; s = 3·M[1, 0] either way.
        # Inverse CDF of (1 + s x)/2 on [−1, 1] in its cancellation-free form.
        slope = jnp.clip(3.0 * bins.moments[:, 1, 0], -1.0, 1.0)[:, None]
        u = jr.uniform(q_key, shape, dtype=float)
        c0 = 1.0 - slope / 2 - 2.0 * u
        x = -2.0 * c0 / (1.0 + jnp.sqrt((1.0 - slope) ** 2 + 4.0 * slope * u))
        v = jr.uniform(phi_key, shape, dtype=float)
        pixel_q = bins.q_centre[:, None] + bins.q_width[:, None] / 2 * x
        pixel_phi = bins.phi_centre[:, None] + bins.phi_width[:, None] * (v - 0.5)
        return pixel_q, pixel_phi
    # Bins known by their pixels' moments or by nodes: pixels sit on the nodes of the rule the
    # model uses, drawn with the weights as probabilities, so their mean is the bin average.
    weights = jnp.maximum(bins.weights, 0.0)
    logits = jnp.log(weights / jnp.sum(weights, axis=1, keepdims=True))
    index = jr.categorical(q_key, logits, axis=-1, shape=(n_pixels, n_bins)).T
    return (
        jnp.take_along_axis(bins.q_nodes, index, axis=1),
        jnp.take_along_axis(bins.phi_nodes, index, axis=1),
    )


def _intensity_frames(
    model: HeterodyneModel,
    t: Float[Array, " t"],
    pixel_q: Float[Array, "bin pixel"],
    pixel_phi: Float[Array, "bin pixel"],
    weights: Float[Array, "bin mode"],
    key: PRNGKeyArray,
) -> Float[Array, "bin pixel t"]:
    """Speckle intensities, ⟨I⟩ = 1, of every pixel and frame (equations: `simulate_speckle`)."""
    grid = model.grid_integrals(t)
    sample_fraction = grid.sample_fraction
    reference_fraction = 1.0 - sample_fraction
    norm = jnp.sqrt(sample_fraction**2 + reference_fraction**2)
    amplitude_ref, amplitude_sample = reference_fraction / norm, sample_fraction / norm
    increments_ref = jnp.concatenate([jnp.zeros(1), jnp.diff(grid.reference)])
    increments_sample = jnp.concatenate([jnp.zeros(1), jnp.diff(grid.sample)])
    q2 = (pixel_q**2)[..., None]
    projection = pixel_q * jnp.cos(jnp.deg2rad(pixel_phi + model.phi0))
    field_shape = (*pixel_q.shape, weights.shape[1])
    complex_dtype = jnp.result_type(pixel_q.dtype, jnp.complex64)  # complex128 under float64

    def advance(field, increment, first, key):
        # E ← ρ E + √(1 − ρ²) ξ with ρ = exp(−½ q² ΔC); at the first frame E = ξ.
        rho = jnp.where(first, 0.0, jnp.exp(-0.5 * q2 * increment))
        kick = jnp.where(first, 1.0, jnp.sqrt(-jnp.expm1(-q2 * increment)))
        noise = jr.normal(key, field_shape, dtype=complex_dtype)
        return rho * field + kick * noise

    def frame(fields, inputs):
        index, inc_ref, inc_sample, amp_ref, amp_sample, velocity_integral = inputs
        ref_key, sample_key = jr.split(jr.fold_in(key, index))
        first = index == 0
        reference = advance(fields[0], inc_ref, first, ref_key)
        sample = advance(fields[1], inc_sample, first, sample_key)
        phase = jnp.exp(1j * projection * velocity_integral)[..., None]
        total = amp_ref * reference + amp_sample * phase * sample
        intensity = jnp.sum(weights[:, None, :] * jnp.abs(total) ** 2, axis=-1)
        return (reference, sample), intensity

    zeros = jnp.zeros(field_shape, dtype=complex_dtype)
    inputs = (
        jnp.arange(t.shape[0]),
        increments_ref,
        increments_sample,
        amplitude_ref,
        amplitude_sample,
        grid.velocity,
    )
    _, intensities = jax.lax.scan(frame, (zeros, zeros), inputs)
    return jnp.moveaxis(intensities, 0, -1)


@eqx.filter_jit
def _speckle_frames(
    model: HeterodyneModel,
    t: Float[Array, " t"],
    pixel_q: Float[Array, "bin pixel"],
    pixel_phi: Float[Array, "bin pixel"],
    weights: Float[Array, "bin mode"],
    n_pixels: Int[Array, " bin"],
    photons: Float[Array, ""] | None,
    key: PRNGKeyArray,
) -> Float[Array, "bin pixel t"]:
    """Photon counts (or with `photons=None` intensities); NaN rows beyond each bin's pixels."""
    field_key, count_key = jr.split(key)
    frames = _intensity_frames(model, t, pixel_q, pixel_phi, weights, field_key)
    if photons is not None:
        frames = jr.poisson(count_key, photons * frames).astype(frames.dtype)
    present = jnp.arange(frames.shape[1])[None, :] < n_pixels[:, None]
    return jnp.where(present[..., None], frames, jnp.nan)


def speckle_frames(
    model: HeterodyneModel,
    t: Float[np.ndarray, " t"],
    *,
    q: Float[np.ndarray, " bin"],
    phi: Float[np.ndarray, " bin"],
    key: PRNGKeyArray,
    bins: BinGeometry | None,
    pixels: Int[np.ndarray, " bin"],
    photons: float | None,
    weights: Float[np.ndarray, "bin mode"],
) -> Float[Array, "bin pixel t"]:
    """The frames of `simulate_speckle` from checked inputs, with the modes' `weights` given
    (`mode_weights`): rows padded with zero weights to one mode count share one compiled
    program whatever the contrast."""
    position_key, frame_key = jr.split(key)
    grid = jnp.asarray(t)
    rule = bins
    if bins is not None and not (bins.source == "widths" and bins.moments is not None):
        rule = bins.for_model(model, grid)  # needs concrete values: outside jit
    pixel_q, pixel_phi = _pixel_positions(
        rule, jnp.asarray(q), jnp.asarray(phi), int(np.max(pixels)), position_key
    )
    return _speckle_frames(
        model,
        grid,
        pixel_q,
        pixel_phi,
        jnp.asarray(weights),
        jnp.asarray(pixels),
        None if photons is None else jnp.asarray(photons),
        frame_key,
    )


def simulate_speckle(
    model: HeterodyneModel,
    t: Float[ArrayLike, " t"],
    *,
    q: ArrayLike | Sequence[float],
    phi: ArrayLike | Sequence[float],
    key: PRNGKeyArray,
    bins: BinGeometry | None = None,
    pixels: int | Sequence[int] = 1000,
    counts: float | None = 10.0,
    contrast: ArrayLike | Sequence[float] = 0.5,
    correlate: bool = False,
    dt: float | None = None,
    diagonal: str = "mask",
) -> Float[Array, "bin pixel t"] | XPCSData:
    """Photon-count frames of a heterodyne speckle experiment, simulated field by field.

    Every pixel p of every (q, φ) bin has its own wavevector (q_p, φ_p) — the bin centre, or
    with `bins` a random point of the bin — and, per coherent mode m, a reference field
    E_r and a sample field E_s, each a complex Ornstein–Uhlenbeck (AR(1)) process over the
    frames:

        E(t_0) = ξ_0,   E(t_{k+1}) = ρ_k E(t_k) + √(1 − ρ_k²) ξ_{k+1},
        ρ_k = exp(−½ q_p² ∫_{t_k}^{t_{k+1}} J_n),

    ξ independent standard complex normals (E|ξ|² = 1) and ∫J_n the cumulative trapezoid of
    the component's transport rate (floored at 0), so ⟨E(t_i) E(t_j)*⟩ = h_n.
    The sample field is carried by the flow: it is multiplied by exp(i θ_p(t)),
    θ_p(t) = q_p cos(φ_p + φ0) ∫_{t_0}^{t} v (the phase q·Δr of a displacement Δr = ∫v along
    the flow; c2 sees only cos Φ, so the sign is a convention). The field of mode m is

        E_m = a_r E_r,m + a_s e^{iθ} E_s,m,   a_n(t) = f_n(t) / √(f_r(t)² + f_s(t)²),

    with f_s the model's sample fraction clipped to [0, 1] and f_r = 1 − f_s; the scaling by
    √(f_r² + f_s²) sets ⟨|E_m|²⟩ = 1 (c2 is blind to a per-frame factor, and `counts` is then
    the mean number of photons). For circular Gaussian fields (Siegert),
    ⟨|E|²|E'|²⟩ = 1 + |⟨E E'*⟩|² and

        |⟨E E'*⟩|² = |a_r a_r' h_r + a_s a_s' h_s e^{−iΦ}|² = num / f²  ,

    cross term 2 f_r f_s f_r' f_s' h_r h_s cos Φ included. **Partial coherence**: a pixel
    integrates M = ⌈1/β⌉ independent modes, I = Σ_m w_m |E_m|² with Σ w_m = 1 and Σ w_m² = β
    (`mode_weights`: one mode w_1, the rest equal), so that

        ⟨I(t_i) I(t_j)⟩ / (⟨I(t_i)⟩⟨I(t_j)⟩) = 1 + β · num / f²,

    the model's c2 with contrast β and offset 1 (the normalisation of a photon correlator);
    β = 1/M gives the gamma-distributed intensity of M equal modes. The cost is ∝ M.
    Finally the counts are N_p(t_k) ~ Poisson(`counts` · I_p(t_k)). Per pixel the off-diagonal
    c2 has no shot-noise term; the diagonal gains 1/⟨N⟩: ⟨N²⟩/⟨N⟩² = 1 + β + 1/`counts`.

    All pixels and modes are one array, the frames one `lax.scan` (fresh noise per frame from
    `fold_in(key, k)`, so memory is that of the output); float64, deterministic for a key.

    **Arguments:**

    - `model`: a `HeterodyneModel` (any laws).
    - `t`: strictly increasing absolute frame times in seconds (t = k·dt).
    - `q`: the bin wavevectors (Å⁻¹), a scalar or one per bin.
    - `phi`: the bin angles (degrees), one per bin.
    - `key`: a `jax.random` key (`jax.random.key(seed)`).
    - `bins`: a `BinGeometry` with one bin per angle. Bins from `BinGeometry.from_widths`
        get pixels uniform over the bin's annular sector (density ∝ q dq dφ, or uniform in q
        for `density="uniform"`: exactly the measure the model averages over); bins from
        pixels or nodes get pixels on the nodes of `bins.for_model(model, t)`, drawn with the
        rule's weights as probabilities (a negative weight, possible for an irregular pixel
        set, counts as 0). `None`: every pixel at the bin centre (q, φ).
    - `pixels`: pixels per bin, an integer or one per bin; bins with fewer pixels than the
        largest are padded with NaN frames (which `two_time` skips).
    - `counts`: mean photons per pixel per frame (> 0); `None` returns the intensities I
        (mean 1) without photon noise.
    - `contrast`: the optical contrast β in [0.01, 1], a scalar or one per bin.
    - `correlate`: return `two_time(frames, t, q=q, phi=phi, bins=bins, dt=dt,
        diagonal=diagonal)` instead of the frames.
    - `dt`, `diagonal`: passed to `two_time` when `correlate=True`.

    **Returns:**

    The frames, shape `(bins, pixels, t)` (float64 photon counts), or with `correlate=True`
    an `XPCSData` whose metadata also record the simulation (parameters, contrast, counts).
    """
    if not isinstance(model, HeterodyneModel):
        raise TypeError(f"`model` must be a heterojax.HeterodyneModel; got {type(model).__name__}.")
    if not isinstance(key, jax.Array):
        raise TypeError(f"`key` must be a jax.random key (jax.random.key(seed)); got {key!r}.")
    times = np.asarray(t, dtype=np.float64)
    if times.ndim != 1 or times.size < 2:
        raise ValueError(f"`t` must be a 1-D array of at least two times (s); got {times.shape}.")
    if not (np.all(np.isfinite(times)) and np.all(np.diff(times) > 0)):
        raise ValueError("`t` must be finite and strictly increasing (seconds, one per frame).")
    phi_values = np.atleast_1d(np.asarray(phi, dtype=np.float64))
    if phi_values.ndim != 1:
        raise ValueError(f"`phi` must be a scalar or a 1-D list of angles; got {np.shape(phi)}.")
    n_bins = phi_values.shape[0]
    q_values = _per_bin(q, n_bins, argument="q")
    if not (np.all(np.isfinite(q_values)) and np.all(q_values > 0)):
        raise ValueError(f"`q` must be positive (Å⁻¹); got {q_values}.")
    contrast_values = _per_bin(contrast, n_bins, argument="contrast")
    if not np.all((contrast_values >= MIN_CONTRAST) & (contrast_values <= 1)):
        raise ValueError(
            f"`contrast` must lie in [{MIN_CONTRAST}, 1] (the optical contrast β; the pixel "
            f"integrates ⌈1/β⌉ coherent modes); got {contrast_values}."
        )
    n_pixels = _pixel_counts(pixels, n_bins)
    photons = _check_counts(counts)
    if bins is not None:
        if not isinstance(bins, BinGeometry):
            raise TypeError(f"`bins` must be a heterojax.BinGeometry; got {type(bins).__name__}.")
        if bins.n_maps != n_bins:
            raise ValueError(f"`bins` describes {bins.n_maps} bins for {n_bins} angles.")
    diagonal = check_diagonal_mode(diagonal)
    frames = speckle_frames(
        model,
        times,
        q=q_values,
        phi=phi_values,
        key=key,
        bins=bins,
        pixels=n_pixels,
        photons=photons,
        weights=mode_weights(contrast_values),
    )
    if not correlate:
        return frames
    metadata = {
        "source": "heterojax.simulate_speckle",
        "parameters": {name: float(value) for name, value in model.to_dict().items()},
        "contrast": contrast_values,
        "offset": np.ones(n_bins),
        "counts": photons,
    }
    return correlate_frames(
        frames,
        times,
        q=q_values,
        phi=phi_values,
        bins=bins,
        dt=dt,
        diagonal=diagonal,
        metadata=metadata,
    )
