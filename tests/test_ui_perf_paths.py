"""The window's cheap paths (issue 11, speed): what they skip and when they catch up, checked by what is drawn,
never by timing. Loss by position draws once per step and keeps its legend while scrubbing; the step x position
map draws while its tab is shown and catches up when shown; the refresh clock's painters take turns."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QTabWidget, QWidget

from nanogpt_viz.ui.main_window import MainWindow
from nanogpt_viz.ui.plots import PositionLossPlot, StepPositionMap
from nanogpt_viz.ui.refresh import RefreshClock
from tests.helpers import tiny_cpu_training

LOAD = 60_000
TRAIN = 240_000

TEXT = ("The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks "
        "were striking thirteen.<|endoftext|>Call me Ishmael. In a hole in the ground there lived a hobbit. ") * 20


def _legend(plot: PositionLossPlot) -> list[tuple[object, object, str]]:
    """(sample, label, text) of every legend entry: the objects themselves, to see a rebuild."""
    return [(s, lab, lab.text) for s, lab in plot.legend_item.items]


# ---- loss by position --------------------------------------------------------------------------------
def test_position_plot_batch_draws_once_with_the_last_values_and_keeps_its_legend(qtbot):
    plot = PositionLossPlot()
    qtbot.addWidget(plot)
    rng = np.random.default_rng(0)
    plot.set_data(rng.random(8))
    legend = _legend(plot)
    assert [t for _, _, t in legend] == ["this step", "moving average"]
    for _ in range(5):
        nats, bpb = rng.random(8), rng.random(8)
        before = plot.redraw_count
        with plot.batch():
            plot.set_data(nats, update_ema=False)
            plot.set_bpb(bpb, update_ema=False)
            plot.set_split(None)
            assert plot.redraw_count == before  # nothing drawn inside the batch
        assert plot.redraw_count == before + 1
        np.testing.assert_array_equal(plot.curve.getOriginalDataset()[1], nats)
        plot.set_units("bpb")
        np.testing.assert_array_equal(plot.curve.getOriginalDataset()[1], bpb)
        plot.set_units("nats")
        assert _legend(plot) == legend  # the same LabelItems: not rebuilt for new values or units
    plot.set_ema_enabled(False)  # what the legend lists changed: rebuilt
    assert [t for _, _, t in _legend(plot)] == ["this step"]
    plot.set_split_enabled(True)
    assert _legend(plot) == []
    plot.set_split_enabled(False)
    plot.set_ema_enabled(True)
    assert [t for _, _, t in _legend(plot)] == ["this step", "moving average"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "a.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


def _trained_window(qtbot, env, steps: int) -> MainWindow:
    win = MainWindow(settings=QSettings(str(env / "s.ini"), QSettings.Format.IniFormat), device_name="CPU")
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.load_corpus(str(env / "a.txt"))
    qtbot.waitUntil(lambda: win.session.model is not None and not win.loader.is_busy(), timeout=LOAD)
    tp = tiny_cpu_training(win, steps)
    ends = []
    win.run.ended.connect(ends.append)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(ends) and not win.run.is_running(), timeout=TRAIN)
    assert ends[-1].reason == "finished", ends[-1].message
    return win


def test_scrubbing_draws_loss_by_position_once_per_step_with_the_same_legend(qtbot, env):
    win = _trained_window(qtbot, env, 6)
    pp = win.position_plot
    win.plots.setCurrentWidget(pp)
    assert win.units.problem is None  # GPT-2 text: the bpb and the split are derived for every step
    win.session.set_step(5)
    legend = _legend(pp)
    for step in (0, 3, 1, 4, 2):
        before = pp.redraw_count
        win.session.set_step(step)
        assert pp.redraw_count == before + 1  # set_data, set_bpb and set_split: one draw
        assert _legend(pp) == legend
        losses = win.run.losses_at(step)
        np.testing.assert_allclose(pp.curve.getOriginalDataset()[1], losses.position, rtol=1e-6)
        assert pp.series()[0] is not None and pp.split_series() is not None  # this step's split, drawn on
    pp.set_split_enabled(True)  # the split drawn: this step's own, with its label under the plot
    win.session.set_step(1)
    after, rest = pp.split_series()
    x, y = pp.rest_curve.getOriginalDataset()
    np.testing.assert_array_equal(y, rest)
    assert "This step" in pp.split_label.text()


def test_heatmap_draws_a_step_once_in_nats_and_switches_to_its_bpb(qtbot):
    from nanogpt_viz.ui.plots import TokenLossHeatmap

    hm = TokenLossHeatmap()
    qtbot.addWidget(hm)
    rng = np.random.default_rng(2)
    nats, bpb = rng.random((3, 8)).astype(np.float32), rng.random((3, 8)).astype(np.float32)
    made = []
    hm.image.sigImageChanged.connect(lambda: made.append(1))
    hm.set_data(nats)
    assert len(made) == 1
    hm.set_bpb(bpb)  # nats shown: the image is not made again
    assert len(made) == 1
    np.testing.assert_array_equal(hm.data(), nats)
    hm.set_units("bpb")
    np.testing.assert_array_equal(hm.data(), bpb)
    np.testing.assert_array_equal(hm.image.image, bpb)
    hm.set_units("nats")
    np.testing.assert_array_equal(hm.image.image, nats)


# ---- the step x position map -----------------------------------------------------------------------------
def test_hidden_position_map_catches_up_when_shown(qtbot):
    tabs = QTabWidget()
    qtbot.addWidget(tabs)
    first, pmap = QWidget(), StepPositionMap()
    tabs.addTab(first, "first")
    tabs.addTab(pmap, "map")
    tabs.show()
    qtbot.waitExposed(tabs)
    rng = np.random.default_rng(1)
    rows = rng.random((5, 12)).astype(np.float32)
    pmap.set_rows(np.arange(3), rows[:3])
    pmap.set_rows(np.arange(5), rows)
    assert pmap.image.image is None  # hidden: not drawn
    steps, held = pmap.rows()
    assert steps.tolist() == list(range(5))
    np.testing.assert_array_equal(held, rows)  # but it holds the rows (hover read-out, tests)
    tabs.setCurrentWidget(pmap)
    np.testing.assert_array_equal(pmap.image.image, rows)  # caught up with the latest rows
    assert pmap.colorbar.levels() == pytest.approx((float(rows.min()), float(rows.max())))
    more = rng.random((7, 12)).astype(np.float32)
    pmap.set_rows(np.arange(7), more)  # shown: drawn at once
    np.testing.assert_array_equal(pmap.image.image, more)
    tabs.setCurrentWidget(first)
    pmap.set_rows(np.arange(3), more[:3])
    np.testing.assert_array_equal(pmap.image.image, more)  # hidden again: the last drawn image stays
    tabs.setCurrentWidget(pmap)
    np.testing.assert_array_equal(pmap.image.image, more[:3])
    pmap.clear()
    tabs.setCurrentWidget(first)
    tabs.setCurrentWidget(pmap)
    assert pmap.image.image is None  # cleared: nothing to catch up with


def test_window_position_map_drawn_when_its_tab_is_shown(qtbot, env):
    win = _trained_window(qtbot, env, 4)
    pmap = win.position_map
    assert not pmap.isVisible()
    steps, rows = pmap.rows()
    assert steps.tolist() == [0, 1, 2, 3] and pmap.image.image is None
    win.plots.setCurrentWidget(pmap)
    np.testing.assert_array_equal(pmap.image.image, rows)


# ---- the refresh clock -------------------------------------------------------------------------------
def test_refresh_clock_painters_take_turns_and_flush_runs_all(qtbot):
    clock = RefreshClock()
    drawn: list[str] = []
    clock.add_painter(lambda: drawn.append("step"))
    clock.add_painter(lambda: drawn.append("plots"))
    clock.start(period_ms=0)  # every tick is due: the turns, not the period, are what is checked
    clock.timer.stop()
    clock.request()
    clock.tick()
    assert drawn == ["step"]
    clock.tick()
    assert drawn == ["step", "plots"]
    clock.tick()
    assert drawn == ["step", "plots"]  # nothing requested since
    clock.request()
    clock.tick()
    assert drawn[-1] == "step"
    clock.flush()  # what is pending, now
    assert drawn == ["step", "plots", "step", "plots"]
    clock.flush()
    assert len(drawn) == 4 and not clock.pending
    assert [i for i, _, _ in clock.paint_ms] == [0, 1, 0, 1]  # each paint's time, by painter (benchmarks/gui.py)


# ---- the plots' grid ---------------------------------------------------------------------------------
def test_every_curve_plot_draws_an_opaque_grid_beneath_its_curves(qtbot):
    """Grid lines are opaque (a translucent line is ~10x slower to draw), in the colour the translucent one had over
    the background, and beneath the curves and the legend (an opaque line above would cut through them)."""
    from PySide6.QtGui import QImage, QPainter

    from nanogpt_viz.ui import palette
    from nanogpt_viz.ui.plots import GradNormPlot, LossPlot, RatePlot

    plots, widgets = [], []
    for cls in (PositionLossPlot, LossPlot, GradNormPlot, RatePlot):
        w = cls()
        widgets.append(w)
        qtbot.addWidget(w)
        w.resize(600, 300)
        w.show()
        plots += [w.plot] if hasattr(w, "plot") else [w.lr_plot, w.tps_plot]
    qtbot.wait(20)
    bg = palette.BACKGROUND
    image = QImage(10, 10, QImage.Format.Format_ARGB32)
    for pw in plots:
        item = pw.getPlotItem()
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            assert axis.grid, "the grid is shown"
            assert axis.zValue() < item.getViewBox().zValue(), "drawn beneath the view box's curves and legend"
            painter = QPainter(image)
            _, ticks, _ = axis.generateDrawSpecs(painter)
            painter.end()
            assert ticks
            for pen, _, _ in ticks:
                c = pen.color()
                assert c.alpha() == 255
                # a light line over the background: between the axis colour's blend and the background
                assert c.red() <= bg.red() and c.green() <= bg.green() and c.blue() <= bg.blue()
    # the blend itself, by hand: grey 150 at alpha 51/255 over #fafafa (250) -> 0.2 * 150 + 0.8 * 250 = 230
    from PySide6.QtGui import QColor, QPen
    from nanogpt_viz.ui.plots import _opaque_pen
    got = _opaque_pen(QPen(QColor(150, 150, 150, 51))).color()
    assert (got.red(), got.green(), got.blue(), got.alpha()) == (230, 230, 230, 255)


def test_long_curves_draw_one_min_max_pair_per_pixel_column_and_keep_their_envelope(qtbot):
    """A 20,000-step run's loss and gradient-norm curves draw about two points per pixel column (not ten), and what is
    drawn still reaches the data's extremes: the highest and lowest step of the run are on screen."""
    from nanogpt_viz.ui.plots import GradNormPlot, LossPlot

    loss, grad = LossPlot(), GradNormPlot()
    for w in (loss, grad):
        qtbot.addWidget(w)
        w.resize(700, 300)
        w.show()
    rng = np.random.default_rng(1)
    n = 20_000
    values = 5 + rng.standard_normal(n)
    for i in range(n):
        loss.add(i, float(values[i]), None)
        grad.add(i, float(values[i]))
    loss.redraw()
    grad.redraw()
    qtbot.wait(50)
    for w, curve in ((loss, loss.raw_curve), (grad, grad.curve)):
        width = w.plot.getPlotItem().getViewBox().width()
        x, y = curve.curve.getData()  # what the curve item draws, after downsampling
        assert 0 < len(x) <= 2 * width + 4, (len(x), width)
        assert y.max() == values.max() and y.min() == values.min()  # peak mode: the envelope survives


def test_position_plot_names_the_moving_average_only_once_it_has_one(qtbot):
    """A reopened run's step is shown without folding it into the moving average: the legend does not name an
    average that is not drawn; the first live step adds it."""
    plot = PositionLossPlot()
    qtbot.addWidget(plot)
    plot.set_data(np.arange(8.0), update_ema=False)  # a scrubbed or reopened step
    assert [t for _, _, t in _legend(plot)] == ["this step"]
    plot.set_data(np.arange(8.0), update_ema=True)  # a live step
    assert [t for _, _, t in _legend(plot)] == ["this step", "moving average"]
