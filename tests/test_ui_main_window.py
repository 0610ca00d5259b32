"""MainWindow end to end: real widgets, the real corpus loader and the real trainer (offscreen Qt).

Every test runs under conftest's `no_running_qthreads`: a QThread still running once the test and
its widgets are gone fails it. Runs and caches go to tmp dirs (NANOGPT_VIZ_RUNS / NANOGPT_VIZ_CACHE),
settings to a tmp INI file.
"""
from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
import torch
from PySide6.QtCore import QMimeData, QPointF, QSettings, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

from nanogpt_viz.engine.checkpoint import load_checkpoint
from nanogpt_viz.ui.main_window import MainWindow
from tests.helpers import tiny_cpu_training

LOAD_TIMEOUT = 30_000
TRAIN_TIMEOUT = 180_000  # a loaded 2-core machine: the whole-split evaluation alone can take a minute

TEXT = """\
It was a bright cold day in April, and the clocks were striking thirteen. The hallway smelt of boiled
cabbage and old rag mats. At one end of it a coloured poster, too large for indoor display, had been
tacked to the wall. Call me Ishmael. Some years ago, never mind how long precisely, having little or no
money in my purse, and nothing particular to interest me on shore, I thought I would sail about a little
and see the watery part of the world. In a hole in the ground there lived a hobbit. Not a nasty, dirty,
wet hole, filled with the ends of worms and an oozy smell, nor yet a dry, bare, sandy hole with nothing
in it to sit down on or to eat: it was a hobbit-hole, and that means comfort. 1234 + 5678 = 6912; the
quick brown fox jumps over the lazy dog while 99 bottles of beer stand on the wall.
"""


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # shared by the tests of this file so the built-in corpus is tokenized once
    return tmp_path_factory.mktemp("nanogpt_viz_cache")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch, cache_dir) -> Path:
    runs = tmp_path / "runs"
    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(runs))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(cache_dir))
    return runs


@pytest.fixture
def settings_path(tmp_path) -> Path:
    return tmp_path / "settings.ini"


@pytest.fixture
def make_window(qtbot, runs_dir, settings_path):
    def make() -> MainWindow:
        win = MainWindow(settings=QSettings(str(settings_path), QSettings.Format.IniFormat), device_name="CPU")
        qtbot.addWidget(win)
        win.show()
        qtbot.waitExposed(win)
        return win

    return make


@pytest.fixture
def win(make_window) -> MainWindow:
    return make_window()


@pytest.fixture
def text_file(tmp_path) -> Path:
    p = tmp_path / "little_corpus.txt"
    p.write_text(TEXT * 6, encoding="utf-8")
    return p


def _wait_corpus(qtbot, win: MainWindow, name: str | None = None) -> None:
    def ok() -> bool:
        c = win.session.corpus
        assert c is not None and not win.loader.is_busy()
        if name is not None:
            assert c.name == name
        assert win.session.model is not None

    qtbot.waitUntil(ok, timeout=LOAD_TIMEOUT)


def _builtin(qtbot, win: MainWindow) -> None:
    win.startup(None)
    _wait_corpus(qtbot, win)


def _patch_open_dialog(monkeypatch, path: Path) -> None:
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(path), "")))


def _visible_boxes(win: MainWindow) -> list[QMessageBox]:
    return [b for b in win.findChildren(QMessageBox) if b.isVisible()]


def _expected_current(plan, step: int, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for r in plan.rows(step):
        out.update(range(max(lo, r.start), min(hi, r.start + plan.N)))
    return out


def _marked_current(win: MainWindow) -> tuple[set[int], set[int]]:
    """(positions the stream view marks as current that are on screen, expected from the plan)."""
    view = win.stream.stream
    sl = view.visible_slice()
    lo, hi = view.visible_range()
    marked = {sl.lo + int(i) for i in np.nonzero(sl.current)[0] if lo <= sl.lo + int(i) < hi}
    return marked, _expected_current(win.session.plan, win.session.step, lo, hi)


def _check_xy(win: MainWindow) -> None:
    plan, step = win.session.plan, win.session.step
    tokens = win.session.tokens
    X, Y = win.xy.values()
    starts = plan.micro_starts(step, 0, 0)
    assert X.shape == Y.shape == (plan.B, plan.N)
    np.testing.assert_array_equal(win.xy.starts(), starts)
    for i, s in enumerate(starts):
        s = int(s)
        np.testing.assert_array_equal(X[i], np.asarray(tokens[s:s + plan.N], dtype=np.int64))
        np.testing.assert_array_equal(Y[i], np.asarray(tokens[s + 1:s + plan.N + 1], dtype=np.int64))


def _set_training(win: MainWindow, steps: int, eval_interval: int = 0) -> None:
    tiny_cpu_training(win, steps, eval_interval=eval_interval)


def _run_dir(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


# ---- opening corpora --------------------------------------------------------------------------
def test_open_corpus_through_the_dialog(qtbot, win, monkeypatch, text_file):
    _patch_open_dialog(monkeypatch, text_file)
    win.open_act.trigger()
    _wait_corpus(qtbot, win, text_file.name)
    assert win.corpus_path == str(text_file)
    assert text_file.name in win.corpus_label.text()
    assert text_file.name in win.windowTitle()
    assert win.recent_files()[0] == str(text_file)
    assert [a.text() for a in win.recent_menu.actions()] == [str(text_file)]
    assert len(win.session.tokens) > 100
    assert not _visible_boxes(win)


def test_open_corpus_by_drop(qtbot, win, text_file):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(text_file))])
    actions = Qt.DropAction.CopyAction
    enter = QDragEnterEvent(win.rect().center(), actions, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(win.rect().center()), actions, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win, drop)
    assert drop.isAccepted()
    _wait_corpus(qtbot, win, text_file.name)
    assert win.corpus_path == str(text_file)

    # something that is not a file is not accepted
    plain = QMimeData()
    plain.setText("hello")
    enter = QDragEnterEvent(win.rect().center(), actions, plain, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    enter.ignore()
    QApplication.sendEvent(win, enter)
    assert not enter.isAccepted()


# ---- stepping ---------------------------------------------------------------------------------
def test_keyboard_stepping_marks_the_plans_rows(qtbot, win):
    _builtin(qtbot, win)
    assert win.session.step == 0
    win.activateWindow()
    qtbot.waitActive(win)
    win.stream.stream.setFocus()
    for key in (Qt.Key.Key_Right, Qt.Key.Key_Right, Qt.Key.Key_Right, Qt.Key.Key_Left):
        QTest.keyClick(win.stream.stream, key)
    assert win.session.step == 2
    assert win.controls.step_box.value() == 2
    marked, expected = _marked_current(win)
    assert expected, "the current step's rows should be on screen (keep-in-view)"
    assert marked == expected
    _check_xy(win)
    # step 2 of a sequential N=16, B=4 plan starts right after steps 0 and 1
    assert int(win.xy.starts()[0]) == 2 * 4 * 16

    QTest.keyClick(win.stream.stream, Qt.Key.Key_Home)
    assert win.session.step == 0
    marked, expected = _marked_current(win)
    assert marked == expected and min(expected) == 0


def test_changing_n_and_b_rebuilds_the_plan(qtbot, win):
    win.resize(1600, 1000)  # rows as lines: a step of 3 rows of 24 is 3-9 lines, all in view
    _builtin(qtbot, win)
    win.next_act.trigger()
    win.plan_panel.n.setValue(24)
    win.plan_panel.b.setValue(3)
    plan = win.session.plan
    assert (plan.N, plan.B) == (24, 3)
    assert win.session.model.plan is plan
    assert win.session.step == 1
    marked, expected = _marked_current(win)
    assert expected and marked == expected
    assert len(expected) == 3 * 24  # three non-overlapping rows of 24
    _check_xy(win)
    assert win.xy.values()[0].shape == (3, 24)
    assert "3×24" in win.plan_panel.tokens_label.text()


def test_invalid_plan_is_explained_inline(qtbot, win):
    _builtin(qtbot, win)
    pp, start = win.plan_panel, win.train_panel.start_btn
    assert start.isEnabled()
    assert pp.problem_label.isHidden()
    pp.b.setValue(60_000)  # 60,000 rows of 17 tokens: far more than the corpus holds
    assert win.session.plan is None
    assert pp.problem_label.isVisible()
    assert "batch size" in pp.problem_label.text()
    assert not start.isEnabled()
    assert win.xy.values() == (None, None)
    assert not _visible_boxes(win)
    pp.b.setValue(4)
    assert win.session.plan is not None and win.session.plan.B == 4
    assert pp.problem_label.isHidden() and pp.problem_label.text() == ""
    assert start.isEnabled()


# ---- training ---------------------------------------------------------------------------------
def test_training_from_the_panel_fills_the_plots_and_follows(qtbot, win, runs_dir):
    _builtin(qtbot, win)
    _set_training(win, steps=15, eval_interval=5)
    seen_steps: list[int] = []
    win.session.step_changed.connect(seen_steps.append)
    ends = []
    win.run.ended.connect(ends.append)
    qtbot.mouseClick(win.train_panel.start_btn, Qt.MouseButton.LeftButton)
    assert win.run.is_running()
    assert not win.plan_panel.isEnabled()

    def plotted() -> None:
        assert len(win.loss_plot) >= 5
        assert win.heatmap.data() is not None and win.heatmap.data().shape == (4, 16)

    qtbot.waitUntil(plotted, timeout=TRAIN_TIMEOUT)
    qtbot.waitUntil(lambda: not win.run.is_running() and bool(ends), timeout=TRAIN_TIMEOUT)
    assert ends[-1].reason == "finished", ends[-1].message
    tx, ty, vx, vy = win.loss_plot.series()
    assert tx.tolist() == list(range(15)) and np.isfinite(ty).all()
    assert len(vx) >= 2 and np.isfinite(vy).all()  # evaluated every 5 steps
    assert win.session.step == 14 and max(seen_steps) == 14  # the view followed the trained steps
    assert win.plan_panel.isEnabled() and win.train_panel.start_btn.isEnabled()
    ckpt = load_checkpoint(_run_dir(runs_dir) / "ckpt.pt")
    assert ckpt.iter_num == 15
    assert ckpt.extra["plan"]["block_size"] == 16


def test_stop_button_stops_and_saves(qtbot, win, runs_dir):
    _builtin(qtbot, win)
    _set_training(win, steps=100_000)
    ends = []
    win.run.ended.connect(ends.append)
    qtbot.mouseClick(win.train_panel.start_btn, Qt.MouseButton.LeftButton)

    def plotted() -> None:
        assert len(win.loss_plot) >= 5
        assert win.heatmap.data() is not None and win.heatmap.data().shape == (4, 16)
        assert win.session.step > 0  # follows the trained step

    qtbot.waitUntil(plotted, timeout=TRAIN_TIMEOUT)
    assert win.train_panel.stop_btn.isEnabled()
    qtbot.mouseClick(win.train_panel.stop_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not win.run.is_running() and bool(ends), timeout=TRAIN_TIMEOUT)
    assert ends[-1].reason == "stopped", ends[-1].message
    path = _run_dir(runs_dir) / "ckpt.pt"
    assert ends[-1].checkpoint == str(path)
    ckpt = load_checkpoint(path)
    assert 5 <= ckpt.iter_num < 100_000
    assert win.runs.continue_from == (str(path), ckpt.iter_num)  # Start continues it, into a new directory


def test_closing_mid_training_joins_the_thread_and_saves(qtbot, win, runs_dir):
    _builtin(qtbot, win)
    _set_training(win, steps=100_000)
    qtbot.mouseClick(win.train_panel.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.run.last_report is not None, timeout=TRAIN_TIMEOUT)
    runner = win.run.worker._runner
    assert win.close()
    assert not win.run.is_running()
    assert runner.thread.isFinished()
    path = _run_dir(runs_dir) / "ckpt.pt"
    ckpt = load_checkpoint(path)  # complete: raises on a half-written file
    assert ckpt.iter_num >= 1
    assert [p.name for p in path.parent.iterdir() if ".tmp" in p.name] == []
    assert not _visible_boxes(win)  # a stop on close is not an error


# ---- errors -----------------------------------------------------------------------------------
def test_binary_file_gives_a_dialog_and_keeps_the_corpus(qtbot, win, monkeypatch, text_file, tmp_path):
    _patch_open_dialog(monkeypatch, text_file)
    win.open_act.trigger()
    _wait_corpus(qtbot, win, text_file.name)
    before = win.session.corpus
    bad = tmp_path / "image.txt"
    bad.write_bytes(b"GIF89a\x00\x01\x02\x03" * 200)
    _patch_open_dialog(monkeypatch, bad)
    win.last_error = None
    win.open_act.trigger()
    qtbot.waitUntil(lambda: getattr(win, "last_error", None) is not None and not win.loader.is_busy(),
                    timeout=LOAD_TIMEOUT)
    title, message = win.last_error
    assert title == "Cannot open corpus"
    assert "NUL" in message
    boxes = _visible_boxes(win)
    assert len(boxes) == 1 and boxes[0].windowTitle() == "Cannot open corpus"
    assert win.session.corpus is before and win.session.model is not None
    assert win.corpus_path == str(text_file)
    assert str(bad) not in win.recent_files()
    boxes[0].accept()
    # the app keeps working
    win.next_act.trigger()
    assert win.session.step == 1


class _Hostile:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_hostile_checkpoint_is_refused(qtbot, win, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Hostile(str(marker)), "iter_num": 3}, path)
    win.last_error = None
    win.files.load_checkpoint(str(path))
    qtbot.waitUntil(lambda: getattr(win, "last_error", None) is not None and not win.tasks,
                    timeout=LOAD_TIMEOUT)
    title, message = win.last_error
    assert title == "Cannot load checkpoint"
    assert "refused" in message
    assert [b.windowTitle() for b in _visible_boxes(win)] == ["Cannot load checkpoint"]
    assert not marker.exists()
    _visible_boxes(win)[0].accept()
    # the payload is live: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


# ---- settings ---------------------------------------------------------------------------------
def test_settings_persist_across_windows(qtbot, make_window):
    first = make_window()
    _builtin(qtbot, first)
    first.plan_panel.n.setValue(40)
    first.train_panel.steps.setValue(123)
    first.train_panel.dtype.setCurrentText("bfloat16")
    first.train_panel.residual.setCurrentIndex(first.train_panel.residual.findData("bfloat16"))
    assert first.close()
    second = make_window()
    assert second.plan_panel.n.value() == 40
    assert second.session.plan_config.block_size == 40
    assert second.train_panel.steps.value() == 123
    tc = second.train_panel.train_config()
    assert (tc.dtype, tc.residual_dtype) == ("bfloat16", "bfloat16")


def test_bf16_residual_with_float32_precision_is_explained_not_started(qtbot, win):
    _builtin(qtbot, win)
    tp = win.train_panel
    tp.dtype.setCurrentText("float32")
    tp.residual.setCurrentIndex(tp.residual.findData("bfloat16"))
    started = []
    tp.start_requested.connect(lambda *a: started.append(a))
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    assert not started
    assert tp.problem.isVisible() and "residual" in tp.problem.text()


def test_open_nanogpt_run_replays_its_batches(qtbot, win, tmp_path, monkeypatch):
    """File ▸ Open nanoGPT run… over the run's data folder: the view and the X/Y panel show the offsets
    that run's train.py drew (NanoGPTReplay, pinned to a train.py-style loop in test_nanogpt_replay),
    at the checkpoint's iteration, with N, B, K taken from the checkpoint."""
    from helpers import write_nanogpt_checkpoint

    from nanogpt_viz.config import ModelConfig
    from nanogpt_viz.data.corpus import write_nanogpt_bin
    from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay

    data = tmp_path / "shakespeare"
    data.mkdir()
    write_nanogpt_bin(data / "train.bin", np.random.default_rng(0).integers(0, 50257, 6000).astype(np.uint16))
    write_nanogpt_bin(data / "val.bin", np.random.default_rng(1).integers(0, 50257, 900).astype(np.uint16))
    mc = ModelConfig(block_size=32, vocab_size=50304, n_layer=1, n_head=2, n_embd=16, bias=False)
    config = dict(batch_size=3, block_size=32, gradient_accumulation_steps=2, eval_interval=4, eval_iters=2,
                  init_from="scratch", device="cuda", dropout=0.0, max_iters=9, dataset="shakespeare")
    write_nanogpt_checkpoint(tmp_path / "ckpt.pt", mc, iter_num=9, config=config)

    win.load_corpus(str(data))
    _wait_corpus(qtbot, win, "shakespeare")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(tmp_path / "ckpt.pt"), "")))
    win.files.open_nanogpt_run_dialog()
    qtbot.waitUntil(lambda: win.session.replaying, timeout=LOAD_TIMEOUT)
    plan = win.session.plan
    assert (plan.mode, plan.N, plan.B, plan.K) == ("random", 32, 3, 2)
    assert win.session.step == 9
    ref = NanoGPTReplay(train_len=6000, val_len=900, block_size=32, batch_size=3, grad_accum=2, eval_interval=4,
                        eval_iters=2, model_args=mc.to_dict())
    for step in (0, 4, 9):
        assert (plan.starts(step)[:, 0, :] == np.stack([ref.train_starts(step, m) for m in range(2)])).all()
    np.testing.assert_array_equal(win.xy.starts(), ref.train_starts(9, 0))
    assert "nanoGPT run ckpt.pt" in win.controls.readout.text()
    boxes = [b for b in _visible_boxes(win) if b.objectName() == "replay_notes"]
    assert boxes and "stop after iteration 9" in boxes[0].text()
    # opening another corpus ends the replay: a run belongs to its data
    from nanogpt_viz.data.corpus import DEFAULT_CORPUS_NAME

    win.load_corpus(None)
    _wait_corpus(qtbot, win, DEFAULT_CORPUS_NAME)  # the load is asynchronous: wait for the new corpus itself
    assert not win.session.replaying and win.session.replay is None
