"""XYPanel (X above Y of the current step) and the live training plots, on real widgets (offscreen)."""
from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pytestqt")
pytest.importorskip("pyqtgraph")

from PySide6.QtCore import QPoint  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from nanogpt_viz.data.batching import BatchPlan  # noqa: E402
from nanogpt_viz.config import PlanConfig  # noqa: E402
from nanogpt_viz.ui.plots import (LossPlot, LossPoint, PlotCoalescer, PositionLossPlot, RingSeries,  # noqa: E402
                                  TokenLossHeatmap)
from nanogpt_viz.ui.xy_panel import XYPanel  # noqa: E402
from nanogpt_viz.viewmodel import StreamModel  # noqa: E402

L = 500
N, B, K = 8, 3, 2


@pytest.fixture
def model():
    tokens = np.arange(L, dtype=np.int64)  # id == position: easy to assert
    plan = BatchPlan(PlanConfig(block_size=N, batch_size=B, grad_accum=K), L)
    return StreamModel(tokens, plan)


@pytest.fixture
def panel(qtbot, model):
    p = XYPanel()
    qtbot.addWidget(p)
    p.set_model(model)
    p.set_step(2)
    p.resize(900, 500)
    return p


# ---- XYPanel ---------------------------------------------------------------------------------


def test_xy_values_are_inputs_and_shifted_targets(panel, model):
    X, Y = panel.values()
    starts = model.plan.micro_starts(2, 0, 0)
    assert X.shape == Y.shape == (B, N)
    for i in range(B):
        s = int(starts[i])
        assert X[i].tolist() == list(range(s, s + N))  # X[i, j] = t[s+j]
        assert Y[i].tolist() == list(range(s + 1, s + N + 1))  # Y[i, j] = t[s+j+1]
    assert np.array_equal(Y[:, :-1], X[:, 1:])
    assert np.array_equal(panel.starts(), starts)
    text = panel.header_text()
    assert "Step 2" in text and "micro 0" in text and f"({B}, {N})" in text and f"{B * N}" in text


def test_y_cell_sits_below_its_x_cell(panel):
    for j in (0, 3, N - 1):
        rx, ry = panel.cell_rect("x", 1, j), panel.cell_rect("y", 1, j)
        assert rx.left() == ry.left() and rx.width() == ry.width()
        assert ry.top() > rx.bottom()
        assert panel.cell_rect("x", 2, j).top() > ry.bottom()
    assert panel.canvas.width() >= panel.cell_rect("x", 0, N - 1).right()


def test_micro_spin_shows_second_micro_batch(panel, model):
    assert panel.micro_spin.maximum() == K - 1
    assert panel.rank_spin.isHidden()  # W == 1
    with_signal = []
    panel.selection_changed.connect(lambda m, r: with_signal.append((m, r)))
    panel.micro_spin.setValue(1)
    X, Y = panel.values()
    starts = model.plan.micro_starts(2, 1, 0)
    assert X[:, 0].tolist() == starts.tolist()
    assert Y[:, -1].tolist() == (starts + N).tolist()
    assert with_signal == [(1, 0)]
    assert "micro 1" in panel.header_text()


def test_set_step_follows_the_plan(panel, model):
    panel.set_step(0)
    X, _ = panel.values()
    assert X[0, 0] == 0
    panel.set_step(1)
    X, _ = panel.values()
    assert X[0, 0] == model.plan.micro_starts(1, 0, 0)[0]


def test_hover_emits_corpus_position_and_tooltip(qtbot, panel):
    panel.show()
    qtbot.waitExposed(panel)
    starts = panel.starts()
    got = []
    panel.hovered.connect(got.append)
    qtbot.mouseMove(panel.canvas, panel.cell_rect("x", 1, 3).center())
    qtbot.waitUntil(lambda: bool(got), timeout=2000)
    assert got[-1] == starts[1] + 3
    # X[1, 4] and Y[1, 3] hold the same corpus position
    qtbot.mouseMove(panel.canvas, panel.cell_rect("y", 1, 3).center())
    qtbot.waitUntil(lambda: got[-1] == starts[1] + 4, timeout=2000)
    assert ("x", 1, 4) in panel.highlighted_cells(got[-1])
    tip = panel.tooltip_text("x", 1, 3)
    assert f"X[1, 3] = token {starts[1] + 4:,} · t[{starts[1] + 3:,}]" in tip and "predicts Y[1, 3]" in tip
    tip = panel.tooltip_text("y", 1, 3)
    assert f"Y[1, 3] = token {starts[1] + 5:,} · t[{starts[1] + 4:,}]" in tip and "target of X[1, 3]" in tip
    # leaving a cell (the gap between rows) reports -1
    gap = QPoint(panel.cell_rect("y", 1, 3).center().x(), panel.cell_rect("y", 1, 3).bottom() + 3)
    qtbot.mouseMove(panel.canvas, gap)
    qtbot.waitUntil(lambda: got[-1] == -1, timeout=2000)


def test_expand_row_lists_n_predictions(qtbot, panel):
    X, Y = panel.values()
    dlg = panel.expand_row(0)
    qtbot.addWidget(dlg)
    assert len(dlg.pairs) == N and dlg.table.rowCount() == N
    last = dlg.pairs[-1]
    assert last["target_id"] == Y[0, N - 1]
    assert last["context_end"] - last["context_start"] + 1 == N
    assert dlg.pairs[0]["context_ids"] == [int(X[0, 0])] and dlg.pairs[0]["target_id"] == Y[0, 0]
    assert str(int(Y[0, N - 1])) in dlg.table.item(N - 1, 3).text()
    assert not dlg.isModal()


def test_loss_colour_mode_and_display_table(panel):
    per_token = np.random.default_rng(0).random((K, 1, B, N)).astype(np.float32)
    panel.set_loss(per_token, (0,), 0.0, 1.0)
    panel.set_color_mode("loss")
    assert panel.loss_at(2, 5) == pytest.approx(float(per_token[0, 0, 2, 5]))
    panel.micro_spin.setValue(1)
    assert panel.loss_at(2, 5) == pytest.approx(float(per_token[1, 0, 2, 5]))
    assert "loss of this prediction" in panel.tooltip_text("y", 2, 5)
    panel.set_display_table([f"w{i}" for i in range(L + 1)])
    X, _ = panel.values()
    assert f"'w{X[0, 0]}'" in panel.tooltip_text("x", 0, 0)
    panel.canvas.grab()  # paints in loss mode without error
    panel.set_loss(None, (), 0, 0)
    assert panel.loss_at(2, 5) is None
    with pytest.raises(ValueError):
        panel.set_color_mode("rainbow")


def test_highlight_zoom_and_no_model(panel):
    s = int(panel.starts()[0])
    panel.set_highlight(s + 2)
    assert ("x", 0, 2) in panel.highlighted_cells(s + 2) and ("y", 0, 1) in panel.highlighted_cells(s + 2)
    w = panel.canvas.width()
    panel.set_cell_width(panel.cell_width() * 2)
    assert panel.canvas.width() > w
    img = panel.canvas.grab()
    assert not img.isNull()
    panel.set_model(None)
    assert panel.values() == (None, None)
    panel.canvas.grab()


# ---- plots -----------------------------------------------------------------------------------


def test_ring_series_bounded_and_keeps_last():
    r = RingSeries(capacity=100)
    for k in range(10_007):
        r.add(k, float(k))
    x, y = r.data()
    assert len(x) <= 100 and x[-1] == 10_006 and x[0] == 0
    assert np.all(np.diff(x) > 0)
    r.add(50, 1.0)  # resumed from an earlier checkpoint: later history dropped
    x, _ = r.data()
    assert x[-1] == 50 and np.all(x <= 50)


def test_loss_plot_history_bounded(qtbot):
    lp = LossPlot(capacity=20_000)
    qtbot.addWidget(lp)
    tracemalloc.start()
    for k in range(25_000):
        lp.add(k, 5.0 - k * 1e-4, 4.0 if k % 500 == 0 else None)
    mid, _ = tracemalloc.get_traced_memory()
    for k in range(25_000, 50_000):
        lp.add(k, 5.0 - k * 1e-4, 4.0 if k % 500 == 0 else None)
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert end - mid < 2_000_000  # flat: the rings are preallocated
    steps, train, vsteps, val = lp.series()
    assert len(steps) <= lp.train.capacity
    assert steps[-1] == 49_999 and train[-1] == pytest.approx(5.0 - 49_999e-4)
    assert vsteps[-1] == 49_500 and len(vsteps) == 100
    shown_x, _ = lp.shown()
    assert len(shown_x) == len(steps)


def test_loss_csv_round_trip(qtbot, tmp_path):
    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.extend([LossPoint(0, 10.5, 10.6), LossPoint(1, 9.25), LossPoint(2, 8.125, None),
               SimpleNamespace(step=3, loss=7.0, val_loss=7.5)])  # a StepReport's three fields
    path = lp.to_csv(tmp_path / "loss.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "step,train_loss,val_loss" and lines[2] == "1,9.25,"
    other = LossPlot()
    qtbot.addWidget(other)
    other.extend(LossPlot.read_csv(path))
    for a, b in zip(lp.series(), other.series()):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".loss.csv*"))  # temp file renamed away
    lp.clear_history()
    assert len(lp) == 0


def test_png_exports(qtbot, tmp_path):
    lp = LossPlot()
    hm = TokenLossHeatmap()
    pp = PositionLossPlot()
    for w in (lp, hm, pp):
        qtbot.addWidget(w)
    lp.extend([LossPoint(k, 5.0 / (k + 1), None) for k in range(20)])
    hm.set_data(np.random.default_rng(1).random((4, 16)))
    pp.set_data(np.linspace(5, 3, 16))
    for name, w in (("loss.png", lp), ("heat.png", hm), ("pos.png", pp)):
        path = w.export_png(tmp_path / name)
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
        assert not QImage(str(path)).isNull()


def test_heatmap_shape_and_hover(qtbot):
    hm = TokenLossHeatmap()
    qtbot.addWidget(hm)
    a = np.arange(64, dtype=np.float32).reshape(4, 16)
    hm.set_data(a)
    assert hm.image_shape() == (4, 16)
    np.testing.assert_array_equal(hm.data(), a)
    assert hm.levels() == (0.0, 63.0)
    assert "row i=2, position j=5" in hm.hover_text(2, 5) and "37.0" in hm.hover_text(2, 5)


def test_position_plot_ema(qtbot):
    pp = PositionLossPlot(ema_alpha=0.5)
    qtbot.addWidget(pp)
    pp.set_data(np.full(8, 4.0))
    pp.set_data(np.full(8, 2.0))
    y, ema = pp.series()
    np.testing.assert_allclose(y, 2.0)
    np.testing.assert_allclose(ema, 3.0)
    pp.set_ema_enabled(False)
    assert pp.series()[1] is None


def _report(step: int, rng: np.random.Generator) -> SimpleNamespace:
    return SimpleNamespace(step=step, loss=5.0 - step * 0.01, val_loss=None if step % 10 else 4.9,
                           per_token=rng.random((K, 1, B, N)).astype(np.float32),
                           position_loss=rng.random(N).astype(np.float32), ranks=(0,))


def test_coalescer_flush(qtbot):
    lp, hm, pp = LossPlot(), TokenLossHeatmap(), PositionLossPlot()
    for w in (lp, hm, pp):
        qtbot.addWidget(w)
    co = PlotCoalescer(lp, hm, pp)
    rng = np.random.default_rng(2)
    reports = [_report(k, rng) for k in range(100)]
    for r in reports:
        co.push(r)
    assert co.pending() == 100
    co.flush()
    steps, train, vsteps, _ = lp.series()
    assert len(steps) == 100 and steps[-1] == 99 and len(vsteps) == 10
    np.testing.assert_array_equal(hm.data(), reports[-1].per_token[0, 0])
    np.testing.assert_allclose(pp.series()[0], reports[-1].position_loss)
    assert lp.redraw_count == 1 and co.pending() == 0
    co.set_selection(1, 0)
    np.testing.assert_array_equal(hm.data(), reports[-1].per_token[1, 0])


def test_refresh_clock_flushes_the_coalescer(qtbot):
    from nanogpt_viz.ui.refresh import RefreshClock

    lp = LossPlot()
    qtbot.addWidget(lp)
    co = PlotCoalescer(lp, None, None)
    clock = RefreshClock()
    clock.add_painter(co.flush)
    rng = np.random.default_rng(3)
    for k in range(5):
        co.push(_report(k, rng))
    clock.request()
    clock.start(period_ms=100)
    qtbot.waitUntil(lambda: len(lp) == 5, timeout=2000)
    clock.timer.stop()
    assert co.flush_count == 1


def test_installed_pyside_does_not_leak_singleton_references(qtbot):
    # PySide6 6.12.0 on CPython 3.11 dropped a reference to None per void call and to True per
    # emit, aborting the app after a few thousand calls; pyproject excludes it. This catches a
    # binding with the same fault.
    import sys

    from PySide6.QtCore import QObject, QRectF, Signal

    class Emitter(QObject):
        sig = Signal()

    e = Emitter()
    r = QRectF(0, 0, 1, 1)
    for _ in range(20_000):  # far more than None's / True's unguarded refcount on CPython 3.11
        e.sig.emit()
        r.adjust(0, 0, 0, 0)
    assert sys.getrefcount(None) > 1000 and sys.getrefcount(True) > 1000
