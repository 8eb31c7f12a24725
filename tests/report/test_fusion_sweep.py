"""The neuron-fusion sweep's report (report/fusion_sweep.py) on hand-made results with known numbers."""

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer

from keras_lottery.experiments import fusion_sweep
from keras_lottery.report import fusion_sweep as fusion_sweep_report

SETTINGS = {"methods": ["exact", "l1", "data_free"], "fractions": [0.0, 0.5], "fine_tune_iterations": 3,
            "fine_tune_learning_rate": None, "calibration_examples": 100, "test_examples": None, "seed": 0}


def _record(fusion, fraction, accuracy, width, tuned):
    return {"fusion": fusion, "fraction": fraction, "test_accuracy": accuracy, "test_loss": 1.0,
            "multiply_adds": 10 * width + 20, "params": 12 * width, "units_removed": 8 - width, "fuse_seconds": 0.5,
            "widths": [["fc1", width], ["out", 2]],
            "fine_tune": {"test_accuracy": tuned, "test_loss": 0.5, "seconds": 1.5, "iterations": 3}}


def _entry(seed, round_index, weights, ticket, l1, tuned):
    fusions = [_record("exact", 0.0, ticket, 8, ticket + 0.01), _record("l1", 0.5, l1, 4, tuned),
               {"fusion": "data_free", "fraction": 0.5, "error": "The data_free merge needs ReLU"}]
    return {"run": f"runs/seed{seed}", "kind": "imp", "method": "magnitude IMP (ticket)", "round": round_index,
            "level": round_index, "config": {"dataset": "fashion_mnist", "model": "lenet_300_100", "seed": seed},
            "weights_remaining": weights, "fusions": fusions,
            "ticket": {"test_accuracy": ticket, "test_loss": 0.3, "multiply_adds": 100, "params": 96,
                       "multiply_adds_nonzero": round(100 * weights), "params_nonzero": round(96 * weights),
                       "widths": [["fc1", 8], ["out", 2]]}}


RESULTS = {"settings": SETTINGS, "entries": [
    _entry(0, 0, 1.0, 0.90, 0.60, 0.85), _entry(1, 0, 1.0, 0.92, 0.70, 0.87),
    _entry(0, 1, 0.5, 0.88, 0.40, 0.80), _entry(1, 1, 0.5, 0.86, 0.50, 0.84)]}


def _data(container):
    """(x, y) of an errorbar's line, as float arrays."""
    return [np.asarray(values, float) for values in container.lines[0].get_data()]


def test_the_table_shows_each_level_and_fusion_over_seeds(tmp_path):
    written = fusion_sweep_report.write_report(RESULTS, str(tmp_path))
    markdown = open(written["markdown"]).read()
    mean, std = np.mean([40.0, 50.0]), np.std([40.0, 50.0], ddof=1)
    ticket = f"{np.mean([88.0, 86.0]):.2f} ± {np.std([88.0, 86.0], ddof=1):.2f} (2)"
    # l1 at 50% weights: the mean ± std over both seeds, 60 multiply-adds of the dense 100, the layer narrowed 8 -> 4.
    assert (f"| 50 | l1 50% | {ticket} | {mean:.2f} ± {std:.2f} (2) | 82.00 ± 2.83 (2) [3 it] | 60 (0.600x) "
            f"| 50 (0.500x) | 48 / 48 / 96 | fc1 8→4 | 0.5 + 1.5 |") in markdown
    assert "| 100 (dense) | exact | 91.00 ± 1.41 (2) | 91.00 ± 1.41 (2) |" in markdown
    assert "| 100 (dense) | data_free 50% | 91.00 ± 1.41 (2) | failed: see below |" in markdown
    assert "- data_free: The data_free merge needs ReLU" in markdown and "none narrower" in markdown
    assert len(written["plots"]) == 2
    for path in written["plots"]:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_units_plot_draws_each_method_with_error_bars_per_level():
    group = fusion_sweep.summarize(RESULTS)
    figure = fusion_sweep_report.units_figure(group)
    panels = [axes for axes in figure.axes if axes.get_title()]
    assert [axes.get_title() for axes in panels] == ["100% weights (dense)", "50% weights"]
    lines = {container.get_label(): container for container in panels[1].containers
             if isinstance(container, ErrorbarContainer)}
    assert set(lines) == {"l1", "l1, fine-tuned"}  # data_free failed everywhere: not drawn, named in the panel
    x, y = _data(lines["l1"])
    np.testing.assert_allclose(x, [0, 50])
    np.testing.assert_allclose(y, [87.0, 45.0])  # exact at 0 (the ticket), l1's mean at 50%
    assert any("failed (see the table): data_free" in text.get_text() for text in panels[1].texts)


def test_the_multiply_adds_plot_puts_the_masked_ticket_at_its_nonzero_count():
    figure = fusion_sweep_report.multiply_adds_figure(fusion_sweep.summarize(RESULTS))
    panel = next(axes for axes in figure.axes if axes.get_title() == "fused by l1")
    lines = {container.get_label(): container for container in panel.containers}
    np.testing.assert_allclose(_data(lines["masked ticket (nonzero multiply-adds)"]), [[50, 100], [87.0, 91.0]])
    np.testing.assert_allclose(_data(lines["50% units removed"])[0], [60, 60])
    assert list(_data(lines["dense network"])[0]) == pytest.approx([100])
