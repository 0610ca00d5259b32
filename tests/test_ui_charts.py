"""The loss chart as TensorBoard / W&B users read it (issue 12): EMA smoothing with the raw curve faint
behind, a hover read-out, whole-step ticks, log-y, the legend above the data, a message before step 0."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from nanogpt_viz.ui.plots import LossPlot, StepAxis
from nanogpt_viz.viewmodel import ema, nearest_index


def _reports(n: int = 200):
    rng = np.random.default_rng(0)
    return [SimpleNamespace(step=i, loss=float(10 * np.exp(-i / 50) + rng.normal(0, 0.3)),
                            val_loss=(float(10 * np.exp(-i / 50)) if i % 50 == 0 else None), lr=1e-3 * (i + 1) / n)
            for i in range(n)]


def test_ema_is_tensorboards_smoothing():
    y = np.array([1.0, np.nan, 3.0, 5.0])
    out = ema(y, 0.5)
    assert out[0] == 1.0 and np.isnan(out[1])  # debiased: the first point is itself
    assert out[2] == (0.5 * 0.5 * 1 + 0.5 * 3) / (1 - 0.25)
    np.testing.assert_array_equal(ema(y, 0.0), y)
    assert nearest_index(np.array([0.0, 2.0, 5.0]), 3.9) == 2 and nearest_index(np.array([]), 1) == -1


def test_empty_state_then_the_curve(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.show()
    assert lp.stack.currentWidget() is lp.empty and "Start" in lp.empty.text()
    lp.extend(_reports())
    assert lp.stack.currentWidget() is lp.plot


def test_smoothing_slider_keeps_the_raw_curve_faint_behind(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.extend(_reports())
    tx, ty, _, _ = lp.series()
    lp.set_smoothing(0.9)
    _, shown = lp.shown()
    np.testing.assert_allclose(shown, ema(ty, 0.9))
    assert lp.raw_curve.isVisible() and lp.raw_curve.opts["pen"].color().alpha() < 128
    np.testing.assert_array_equal(lp.raw_curve.getOriginalDataset()[1], ty)
    assert np.std(np.diff(shown)) < np.std(np.diff(ty))  # smoother
    lp.set_smoothing(0.0)
    np.testing.assert_array_equal(lp.shown()[1], ty)
    assert not lp.raw_curve.isVisible()
    assert "train loss" in lp.legend.text() and "val loss" in lp.legend.text()


def test_hover_reads_step_loss_val_lr(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    reps = _reports()
    lp.extend(reps)
    text = lp.hover(49.7)
    assert text.startswith("step 50 · loss ") and "smoothed" in text
    assert f"val {reps[50].val_loss:.4f}" in text and f"lr {reps[50].lr:.3g}" in text
    assert lp.readout.text() == text and lp.cursor.value() == 50
    assert "val" not in lp.hover(10.2)  # no val at step 10


def test_log_y_and_whole_step_ticks(qtbot):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.extend(_reports())
    lp.log_y.setChecked(True)
    assert lp.plot.getPlotItem().getAxis("left").logMode
    lp.log_y.setChecked(False)
    assert not lp.plot.getPlotItem().getAxis("left").logMode
    axis = lp.plot.getPlotItem().getAxis("bottom")
    assert isinstance(axis, StepAxis)
    for spacing, _ in axis.tickSpacing(0.0, 1.0, 400):  # before training pyqtgraph would tick 0.2, 0.4 …
        assert spacing >= 1 and spacing == int(spacing)
    assert axis.tickStrings([0.0, 1.0, 2000.0], 1, 1) == ["0", "1", "2,000"]
