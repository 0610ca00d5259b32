"""Numbering (issue 12): offsets shown both ways, "token 4,097 · t[4,096]", View > Count tokens from 1 picks
which form leads; the founding example (N=1024, B=4) step 2 (0-based step 1) "starts at token 4,097"."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QLabel

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.viewmodel import offset_short, offset_text


def test_offset_text_both_ways_without_qt():
    assert offset_text(4096) == "token 4,097 · t[4,096]"
    assert offset_text(4096, one_based=False) == "t[4,096] · token 4,097"
    assert offset_text(0) == "token 1 · t[0]"
    assert offset_short(2304) == "token 2,305" and offset_short(2304, False) == "t[2,304]"
    assert offset_text(np.int64(1_000_000)) == "token 1,000,001 · t[1,000,000]"


def test_readout_at_step_1_of_n1024_b4_starts_at_token_4097(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    from nanogpt_viz.ui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, device_name="CPU")
    qtbot.addWidget(win)
    win.show()
    win.startup(None)

    def loaded() -> None:
        assert win.session.corpus is not None and not win.loader.is_busy() and win.session.model is not None

    qtbot.waitUntil(loaded, timeout=30_000)
    win.session.set_plan_config(PlanConfig(block_size=1024, batch_size=4))
    win.session.set_step(1)
    assert win.count_from_one_act.isChecked(), "counting from 1 is the default (the founding note's numbering)"
    text = win.controls.readout.text()
    assert "the step starts at token 4,097 · t[4,096]" in text, text
    # the stream's tooltip and the X/Y row labels follow the same setting
    assert win.stream.stream.describe(4096).splitlines()[0] == "token 4,097 · t[4,096]"
    win.count_from_one_act.setChecked(False)
    text = win.controls.readout.text()
    assert "starts at t[4,096] · token 4,097" in text, text
    assert win.stream.stream.describe(4096).splitlines()[0] == "t[4,096] · token 4,097"
    assert win.xy.tooltip_text("x", 0, 0).startswith("X[0, 0] = t[4,096] · token 4,097")
    win.xy.labels.grab()
    dlg = win.xy.expand_row(0)  # the row's dialog says where the row starts, both ways
    assert "Row 0 starts at t[4,096] · token 4,097 (s = 4,096)" in dlg.findChild(QLabel).text()
    dlg.close()
    win.save_settings()
    assert QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat).value("count_from_one") in (False, "false")
    win.close()
