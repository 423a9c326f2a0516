"""Plots: PNG files of the expected size from live and saved results; shared colour limits."""

import struct

import numpy as np
import pytest
from test_cli_helpers import fake_cmc_result, tiny_fit

import heterojax
from heterojax._io._results import load_result, save_result
from heterojax._plot._maps import plot_data, plot_maps, plot_model
from heterojax._plot._one_time import plot_one_time
from heterojax._plot._posterior import plot_posterior, plot_traces
from heterojax._plot._residuals import plot_residual_histogram


def _png_size(path) -> tuple[int, int]:
    with open(path, "rb") as stream:
        head = stream.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


def _expected(figure, dpi):
    width, height = figure.get_size_inches()
    return round(width * dpi), round(height * dpi)


def test_fit_plots_from_a_live_result(tmp_path):
    data, result, _ = tiny_fit()
    for name, make in (
        ("maps", plot_maps),
        ("one_time", plot_one_time),
        ("residuals", plot_residual_histogram),
    ):
        path = tmp_path / f"{name}.png"
        figure = make(result, data, path=path, dpi=60)
        assert path.stat().st_size > 5_000
        width, height = _png_size(path)
        expected = _expected(figure, 60)
        assert abs(width - expected[0]) <= 2 and abs(height - expected[1]) <= 2


def test_maps_share_colour_limits_and_label_time_axes():
    data, result, _ = tiny_fit()
    figure = plot_maps(result, data)
    axes = figure.axes
    images = [ax.images[0] for ax in axes if ax.images]
    assert len(images) == 3 * data.n_angles
    for row in range(data.n_angles):
        data_image, fit_image, residual_image = images[3 * row : 3 * row + 3]
        assert data_image.get_clim() == fit_image.get_clim()
        low, high = residual_image.get_clim()
        assert low == pytest.approx(-high)
    labelled = [ax for ax in axes if ax.images]
    # t₂ under the bottom row only (above another row the label meets that row's titles)
    assert all(ax.get_xlabel() == "t₂ (s)" for ax in labelled[-3:])
    assert all(ax.get_xlabel() == "" for ax in labelled[:-3])
    assert labelled[0].get_ylabel() == "t₁ (s)"
    extent = labelled[0].images[0].get_extent()
    t = np.asarray(data.t)
    assert extent[0] < t[0] < extent[1] and extent[1] > t[-1]


def test_plots_from_a_saved_record_match(tmp_path):
    data, result, _ = tiny_fit()
    save_result(result, data, tmp_path)
    saved = load_result(tmp_path)
    live = plot_maps(result, data)
    again = plot_maps(saved)
    for a, b in zip(live.axes, again.axes):
        if a.images:
            np.testing.assert_allclose(a.images[0].get_array(), b.images[0].get_array())
            assert a.images[0].get_clim() == b.images[0].get_clim()
    plot_one_time(saved, ages=[float(data.t[2])], path=tmp_path / "cuts.png")
    assert _png_size(tmp_path / "cuts.png")[0] > 100


def test_data_and_model_plots(tmp_path):
    data, result, _ = tiny_fit()
    plot_data(data, path=tmp_path / "data.png")
    plot_model(
        result.model,
        data,
        contrast=np.asarray(result.contrast),
        offset=np.asarray(result.offset),
        path=tmp_path / "model.png",
    )
    assert _png_size(tmp_path / "data.png")[0] > 300
    assert _png_size(tmp_path / "model.png")[0] > 300
    with pytest.raises(ValueError, match="angles"):
        plot_data(data, angles=[5])


def test_posterior_plots(tmp_path):
    fake = fake_cmc_result(names=("D0_sample", "v0", "f0"))
    figure = plot_posterior(fake, reference={"v0": 300.0}, path=tmp_path / "corner.png")
    # 3 physics parameters + contrast + offset: the 5 × 5 lower triangle
    assert len([ax for ax in figure.axes if ax.get_visible()]) == 15
    plot_traces(fake, path=tmp_path / "traces.png")
    for name in ("corner.png", "traces.png"):
        assert (tmp_path / name).stat().st_size > 5_000
    with pytest.raises(ValueError, match="Unknown parameter"):
        plot_posterior(fake, parameters=["nope"])


def test_plot_overwrite_is_explicit(tmp_path):
    data, result, _ = tiny_fit()
    path = tmp_path / "hist.png"
    plot_residual_histogram(result, data, path=path, overwrite=False)
    with pytest.raises(FileExistsError):
        plot_residual_histogram(result, data, path=path, overwrite=False)


def test_public_plot_functions_are_exported():
    for name in (
        "plot_maps",
        "plot_one_time",
        "plot_residual_histogram",
        "plot_posterior",
        "plot_traces",
        "plot_data",
        "plot_model",
        "save_result",
        "load_result",
    ):
        assert callable(getattr(heterojax, name)), name


def test_q_dependence_bars_are_the_one_sigma_intervals(tmp_path):
    """The bars are `intervals` at ±1σ: asymmetric for D0_sample (its exponent is free), the
    plain ± error for f0."""
    from heterojax._fit._by_q import QDependence
    from heterojax._plot._q_dependence import ONE_SIGMA

    _, result, _ = tiny_fit()
    names = ("D0_sample", "f0")
    values = np.array([[result.parameters()[n] for n in names]] * 2)
    errors = np.array([[float(result.stderr[n]) for n in names]] * 2)
    check = QDependence(
        q=np.array([0.008, 0.012]),
        names=names,
        values=values,
        errors=errors,
        mean=values[0],
        joint_values=values[0],
        joint_errors=errors[0],
        chi2=np.zeros(2),
        dof=np.ones(2),
        p_value=np.ones(2),
        alpha=0.05,
        drifting=(),
        ring_results=(result, result),
        joint=result,
    )
    figure = heterojax.plot_q_dependence(check, path=tmp_path / "q.png")
    intervals = result.intervals(ONE_SIGMA)
    for ax, name in zip(figure.axes, names):
        segment = ax.containers[0].lines[2][0].get_segments()[0]  # the first ring's bar
        low, high = sorted(segment[:, 1])
        assert (low, high) == pytest.approx(intervals[name])
    d0_low, d0_high = intervals["D0_sample"]
    assert d0_high - values[0, 0] > values[0, 0] - d0_low  # log-scale: longer upwards
    f0_low, f0_high = intervals["f0"]
    assert f0_high - values[0, 1] == pytest.approx(errors[0, 1])
    assert f0_high - values[0, 1] == pytest.approx(values[0, 1] - f0_low)
