"""A run is a record, in the window (issue 11): the five faults, scrubbing, the step x position map,
and the one refresh clock (issue 14, item 13). Real widgets, the real trainer (tiny preset, CPU)."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from nanogpt_viz.engine.checkpoint import load_checkpoint
from nanogpt_viz.run.history import HistoryReader
from nanogpt_viz.run.record import read_manifest
from nanogpt_viz.ui.main_window import MainWindow
from nanogpt_viz.ui.refresh import PERIOD_MAX_MS, TICK_MS, RefreshClock
from tests.helpers import tiny_cpu_training

LOAD = 60_000
TRAIN = 240_000  # a loaded 2-core machine

TEXT = ("The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks "
        "were striking thirteen. Call me Ishmael. In a hole in the ground there lived a hobbit. ") * 20
OTHER = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
         "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation. ") * 20


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT, encoding="utf-8")
    b.write_text(OTHER, encoding="utf-8")
    return tmp_path


@pytest.fixture
def make_window(qtbot, env):
    def make() -> MainWindow:
        w = MainWindow(settings=QSettings(str(env / "s.ini"), QSettings.Format.IniFormat), device_name="CPU")
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        return w

    return make


def _open(qtbot, win, path) -> None:
    win.load_corpus(str(path))
    qtbot.waitUntil(lambda: win.session.model is not None and not win.loader.is_busy()
                    and win.corpus_path == str(path), timeout=LOAD)


def _train(qtbot, win, steps: int, *, continue_ok: bool = False) -> Path:
    """Train the tiny model for `steps` from the panel; returns the run directory."""
    tp = tiny_cpu_training(win, steps)
    if not continue_ok:
        win.runs.set_continuation(None)
    ends = []
    win.run.ended.connect(ends.append)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(ends) and not win.run.is_running(), timeout=TRAIN)
    assert ends[-1].reason == "finished", ends[-1].message
    return win.run.run_dir


def _hist(run_dir: Path) -> HistoryReader:
    return HistoryReader(run_dir)


def _visible(win, name: str) -> list[QMessageBox]:
    return [b for b in win.findChildren(QMessageBox) if b.isVisible() and b.objectName() == name]


# ---- fault 1: File ▸ Open detaches the run ------------------------------------------------------
def test_opening_another_corpus_drops_the_runs_losses(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    _train(qtbot, win, 3)
    assert win.heatmap.data() is not None and win.xy.loss_at(0, 0) is not None
    dlg = win.xy.expand_row(0)
    assert all(p["loss"] is not None for p in dlg.pairs)
    dlg.close()
    win.set_color_mode("loss")
    _open(qtbot, win, env / "b.txt")
    assert not win.run.shown
    assert win.heatmap.data() is None
    assert win.xy.loss_at(0, 0) is None
    assert win.stream.stream.loss() is None
    assert len(win.loss_plot) == 0 and win.position_map.rows()[1] is None
    dlg = win.xy.expand_row(0)  # "Explain row" has no losses for text the run was not computed on
    assert all(p["loss"] is None for p in dlg.pairs) and dlg.table.isColumnHidden(4)
    dlg.close()
    for step in (0, 1, 2):
        win.session.set_step(step)
        assert win.heatmap.data() is None and win.xy.loss_at(0, 0) is None


# ---- fault 2: a run of other data is not drawn over this corpus --------------------------------------
def test_opening_a_run_whose_corpus_changed_or_vanished_warns(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    run_dir = _train(qtbot, win, 2)
    _open(qtbot, win, env / "b.txt")
    (env / "a.txt").write_text(OTHER[:len(TEXT)] + TEXT[len(OTHER):], encoding="utf-8")  # other content
    win.runs.open_run(str(run_dir))
    qtbot.waitUntil(lambda: bool(_visible(win, "run_corpus_dialog")), timeout=LOAD)
    text = _visible(win, "run_corpus_dialog")[0].text()
    assert "a.txt" in text and ("different" in text or "differ" in text)
    assert win.corpus_path == str(env / "b.txt") and not win.run.shown
    assert win.heatmap.data() is None
    _visible(win, "run_corpus_dialog")[0].reject()
    (env / "a.txt").unlink()
    win.runs.open_run(str(run_dir))
    boxes = _visible(win, "run_corpus_dialog")
    assert boxes and "missing" in boxes[0].text()
    assert boxes[0].button(QMessageBox.StandardButton.Open).text() == "Pick the file…"
    assert not win.run.shown


def test_opening_a_run_opens_its_corpus_and_plan(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    win.plan_panel.n.setValue(24)
    run_dir = _train(qtbot, win, 2)
    _open(qtbot, win, env / "b.txt")
    win.plan_panel.n.setValue(16)
    win.runs.open_run(str(run_dir))
    qtbot.waitUntil(lambda: win.run.shown and win.corpus_path == str(env / "a.txt"), timeout=LOAD)
    assert win.session.plan_config.block_size == 24
    assert win.heatmap.data().shape == (4, 24)


# ---- fault 3: Load checkpoint + Start writes a new run, the file stays ---------------------------------
def test_load_checkpoint_then_start_continues_into_a_new_directory(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    first = _train(qtbot, win, 3)
    ckpt = first / "ckpt.pt"
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    win.files.load_checkpoint(str(ckpt))
    qtbot.waitUntil(lambda: win.runs.continue_from == (str(ckpt), 3), timeout=LOAD)
    win.train_panel.steps.setValue(2)
    assert win.train_panel.steps_range.text() == "3 → 5"
    assert "continues" in win.train_panel.continue_label.text()
    second = _train(qtbot, win, 2, continue_ok=True)
    assert second != first and second.parent == first.parent
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before  # the loaded file, byte for byte
    assert load_checkpoint(ckpt).iter_num == 3
    assert load_checkpoint(second / "ckpt.pt").iter_num == 5
    m = read_manifest(second)
    assert m.parent == {"checkpoint": str(ckpt.resolve()), "step": 3}
    assert "continued from" in m.continued_note()
    assert win.loss_plot.series()[0].tolist() == [0, 1, 2, 3, 4]  # the checkpoint's curve, then the new steps


# ---- fault 4: one step back shows that step's exact losses ---------------------------------------------
def test_a_past_step_shows_its_exact_losses_from_the_history(qtbot, make_window, env, monkeypatch):
    import nanogpt_viz.ui.run_controller as rc

    monkeypatch.setattr(rc, "RECENT_REPORTS", 1)  # every past step must come from the disk
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    run_dir = _train(qtbot, win, 6)
    assert win.session.step == 5
    hist = _hist(run_dir)
    win.prev_act.trigger()
    assert win.session.step == 4
    want = hist.per_token(4)  # (K, W, B, N)
    np.testing.assert_array_equal(win.heatmap.data(), want[0, 0])
    assert win.xy.loss_at(1, 3) == pytest.approx(float(want[0, 0, 1, 3]))
    np.testing.assert_allclose(win.position_plot.series()[0], hist.position_mean(4), rtol=1e-6)
    np.testing.assert_array_equal(win.stream.stream.loss(), want)
    # scrub with the slider to random past steps
    rng = random.Random(0)
    for _ in range(4):
        k = rng.randrange(0, 6)
        win.controls.step_slider.setValue(k)
        assert win.session.step == k and win.controls.step_box.value() == k
        np.testing.assert_array_equal(win.heatmap.data(), hist.per_token(k)[0, 0])
    assert win.controls.step_slider.maximum() == 5
    # beyond the run: nothing
    win.session.set_step(7)
    assert win.heatmap.data() is None and win.xy.loss_at(0, 0) is None


# ---- fault 5: a finished run reopens complete -------------------------------------------------------
def test_a_finished_run_reopens_with_its_curves_and_per_token_views(qtbot, make_window, env):
    first = make_window()
    _open(qtbot, first, env / "a.txt")
    run_dir = _train(qtbot, first, 5)
    steps, losses, _, _ = first.loss_plot.series()
    assert first.close()
    win = make_window()
    _open(qtbot, win, env / "b.txt")
    win.runs.open_run(str(run_dir))
    qtbot.waitUntil(lambda: win.run.shown and win.corpus_path == str(env / "a.txt"), timeout=LOAD)
    s2, l2, _, _ = win.loss_plot.series()
    np.testing.assert_array_equal(s2, steps)
    np.testing.assert_allclose(l2, losses, rtol=1e-6)
    assert win.session.step == 4
    hist = _hist(run_dir)
    np.testing.assert_array_equal(win.heatmap.data(), hist.per_token(4)[0, 0])
    map_steps, rows = win.position_map.rows()
    assert map_steps.tolist() == [0, 1, 2, 3, 4] and rows.shape == (5, 16)
    win.session.set_step(1)
    np.testing.assert_array_equal(win.heatmap.data(), hist.per_token(1)[0, 0])
    assert win.runs.continue_from == (str(run_dir / "ckpt.pt"), 5)


# ---- the step x position map --------------------------------------------------------------------------
def test_step_position_map_has_one_row_per_step(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    run_dir = _train(qtbot, win, 7)
    steps, rows = win.position_map.rows()
    assert steps.tolist() == list(range(7))
    hs, hrows = _hist(run_dir).position_map(0, 7)
    assert hs.tolist() == list(range(7))
    np.testing.assert_allclose(rows, hrows, rtol=1e-3, atol=1e-3)  # live rows (float32) vs history (float16)
    win.plots.setCurrentWidget(win.position_map)  # its image is drawn while its tab is shown
    assert win.position_map.image.image.shape == (7, 16)


# ---- one refresh clock (issue 14, item 13) ---------------------------------------------------------------
def test_the_view_advances_while_events_flood_for_longer_than_the_longest_refresh(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "a.txt")
    tp = win.train_panel
    tp.preset.setCurrentText("tiny")
    tp.steps.setValue(1_000_000)
    tp.eval_interval.setValue(0)
    tp.device.setCurrentIndex(tp.device.findData("cpu"))
    tp.compile.setCurrentText("off")
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.session.step >= 1, timeout=TRAIN)
    interval = win.clock.timer.interval()
    view = win.stream.stream
    seen_steps, seen_progress = {win.session.step}, {tp.progress.value()}
    import time

    end = time.monotonic() + 2 * PERIOD_MAX_MS / 1000 + 2
    x = 0
    while time.monotonic() < end:  # the mouse never stops moving over the stream
        x = (x + 7) % max(10, view.width() - 10)
        QTest.mouseMove(view.viewport(), QPoint(5 + x, 20 + x % 50))
        qtbot.wait(15)
        seen_steps.add(win.session.step)
        seen_progress.add(tp.progress.value())
        assert win.clock.timer.isActive() and win.clock.timer.interval() == interval == TICK_MS
    win.runs.stop()
    qtbot.waitUntil(lambda: not win.run.is_running(), timeout=TRAIN)
    assert len(seen_steps) >= 3 and len(seen_progress) >= 3  # it advanced during the flood


def test_refresh_clock_paints_at_a_bounded_rate_without_rearming(qtbot):
    clock = RefreshClock()
    painted, pumped = [], []
    clock.add_pump(lambda: pumped.append(1))
    clock.add_painter(lambda: painted.append(1))
    clock.start(period_ms=200)
    for _ in range(10):
        clock.request()
        qtbot.wait(50)
    clock.timer.stop()
    assert len(pumped) >= 8  # every tick pumps
    assert 1 <= len(painted) <= 4  # paints at most once per period
    assert clock.timer.interval() == TICK_MS
