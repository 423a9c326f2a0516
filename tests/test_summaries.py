"""Readable summaries and records (issue 15, point 5): table columns that never run into each
other, the solver's outcome and the quality report told apart and in words about this fit,
and an `nlsq.json` with units, plain values and honest per-start outcomes."""

import json
import re

import equinox as eqx
import numpy as np
import optimistix as optx
import pytest
from test_cli_helpers import tiny_fit

import heterojax as hj
from heterojax._fit._solve import result_message


def test_relative_error_column_never_runs_into_the_others():
    _, result, _ = tiny_fit()
    huge = {name: np.asarray(error) * 1e6 for name, error in result.stderr.items()}
    table = eqx.tree_at(lambda r: r.stderr, result, huge).summary()
    rows = [
        line for line in table.splitlines() if line.split()[:1] and line.split()[0] in result.names
    ]
    assert rows
    for row in rows:
        fields = re.split(r"\s{2,}", row.strip())
        assert len(fields) >= 3, row  # name, value, error [, rel.]: two spaces between each
        assert "%" not in fields[1] and "%" not in fields[2], row


def test_solver_outcome_and_quality_report_are_told_apart():
    _, result, _ = tiny_fit()
    text = result.summary()
    assert "success = " not in text
    assert re.search(r"^solver: (converged|did not converge: .+)$", text, re.M), text
    assert re.search(r"^quality report: (ok|NOT ok)", text, re.M), text


@pytest.mark.parametrize("name", [n for n in optx.RESULTS._name_to_item if n != "successful"])
def test_solver_outcomes_in_words_about_this_fit(name):
    code = int(optx.RESULTS._name_to_item[name]._value)
    message = result_message(code)
    assert message and "root-find" not in message and "Lineax" not in message
    assert "bug upstream" not in message and "GMRES" not in message
    if "max_steps" in name:
        assert "max_steps" in message and "minimum" in message


def test_nlsq_json_units_plain_values_and_start_outcomes(tmp_path):
    data, result, _ = tiny_fit()
    starts = result.starts
    best = float(np.min(starts.chi2))
    fake = eqx.tree_at(
        lambda s: (s.chi2, s.success, s.n_steps, s.values),
        starts,
        (
            np.array([best, best + 1000.0 * np.sqrt(2.0 * result.dof)]),
            np.array([True, True]),
            np.array([5, 7]),
            np.repeat(np.asarray(starts.values)[:1], 2, axis=0),
        ),
    )
    hj.save_result(eqx.tree_at(lambda r: r.starts, result, fake), data, tmp_path)
    record = json.load(open(tmp_path / "nlsq.json", encoding="utf-8"))
    for name in [*record["parameters"], *record["free"]]:
        assert name in record["units"]["parameters"], name
    assert record["units"]["parameters"]["v0"] == hj.PARAMETERS["v0"].unit
    assert not record["model"].startswith("model")  # no key repeated inside its value
    assert "selection" not in record["selection"] and "request" in record["selection"]
    assert record["starts"]["converged"] == [True, True]
    assert record["starts"]["success"] == [True, False]  # χ² far above the best: not a success


def test_doubled_keys_nowhere_in_nlsq_json(tmp_path):
    data, result, _ = tiny_fit()
    hj.save_result(result, data, tmp_path)
    record = json.load(open(tmp_path / "nlsq.json", encoding="utf-8"))
    doubled = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if path and path[-1] == key:
                    doubled.append(".".join([*path, key]))
                if key != "config":  # the user's config, recorded as given
                    walk(value, [*path, key])

    walk(record, [])
    assert not doubled, doubled


def _rendered(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return canvas.get_renderer()


def test_corner_plot_plain_ticks_with_contrast_and_offset():
    import types

    from test_cli_helpers import fake_cmc_result

    fake = fake_cmc_result(names=("D0_sample", "v0"))
    draws = np.array(fake.draws)
    v0 = list(fake.names).index("v0")
    draws[..., v0] = 300.0 + 1e-3 * (draws[..., v0] - 300.0)  # narrow: tempts an offset
    result = types.SimpleNamespace(**{**vars(fake), "draws": draws})
    figure = hj.plot_posterior(result)
    _rendered(figure)
    offsets = [
        axis.get_major_formatter().get_offset()
        for ax in figure.axes
        if ax.get_visible()
        for axis in (ax.xaxis, ax.yaxis)
    ]
    assert not any(offsets), offsets
    labels = " ".join(ax.get_xlabel() for ax in figure.axes if ax.get_visible())
    assert "contrast" in labels and "offset" in labels and "v0" in labels, labels


def test_map_titles_do_not_collide_with_the_row_above():
    data, result, _ = tiny_fit()
    assert data.n_angles >= 2  # two rows
    for figure in (hj.plot_maps(result, data), hj.plot_data(data)):
        renderer = _rendered(figure)
        axes = [ax for ax in figure.axes if ax.get_visible() and ax.get_title()]
        for ax in axes:
            title = ax.title.get_window_extent(renderer)
            for other in figure.axes:
                if other is ax:
                    continue
                texts = [other.xaxis.label, other.yaxis.label, other.title]
                texts += list(other.get_xticklabels()) + list(other.get_yticklabels())
                for text in texts:
                    if text.get_text() and text.get_visible():
                        extent = text.get_window_extent(renderer)
                        assert not title.overlaps(extent), (ax.get_title(), text.get_text())
