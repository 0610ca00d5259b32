"""The step shown: the window's views follow the session's plan and step, the readout and coverage
lines under the step controls say where it reads (viewmodel.step_readout / coverage_text), and the
View and Go menus' intents about it (colour mode, counting tokens from 1, jump, next epoch, a click on
the overview strip).
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QInputDialog

from nanogpt_viz.viewmodel import coverage_text, step_readout


class Stepping(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win

    def on_plan_changed(self) -> None:
        win = self.win
        model = win.session.model
        win.stream.set_model(model)
        win.xy.set_model(model)
        win.train_panel.start_btn.setEnabled(model is not None and not win.run.is_running())
        win.views.update_range()
        self.on_step_changed(win.session.step)

    def on_step_changed(self, step: int) -> None:
        win = self.win
        win.controls.set_step(step)
        win.stream.set_step(step)
        if win.keep_in_view_act.isChecked():
            win.stream.stream.ensure_step_visible()
        win.xy.set_step(step)
        win.views.show_step(step)
        plan = win.session.plan
        if plan is None:
            win.controls.set_readout("")
            win.coverage_label.setText("")
            return
        s = win.session
        replay = Path(s.replay_source).name if s.replaying else ""
        win.controls.set_readout(step_readout(plan, step, win.count_from_one_act.isChecked(), replay))
        win.coverage_label.setText(coverage_text(plan, step))

    def set_count_from_one(self, on: bool) -> None:
        """View > Count tokens from 1: "token 4,097 · t[4,096]" leads with the 1-based count, else t[…]."""
        self.win.stream.stream.set_one_based(on)
        self.win.xy.set_one_based(on)
        self.on_step_changed(self.win.session.step)

    def set_color_mode(self, mode: str) -> None:
        win = self.win
        win.color_actions[mode].setChecked(True)
        win.stream.set_color_mode(mode)
        win.xy.set_color_mode("loss" if mode == "loss" else "plain")
        if mode == "loss" and win.run.last_step() is None:
            win.statusBar().showMessage("Per-token loss appears once training has run a step", 5000)

    def jump_dialog(self) -> None:
        s = self.win.session
        step, ok = QInputDialog.getInt(self.win, "Jump to step", "Step (0-based):", s.step, 0, 2 ** 31 - 1)
        if ok:
            s.set_step(step)

    def next_epoch(self) -> None:
        s = self.win.session
        if s.plan is not None:
            s.set_step(s.plan.epoch_start(s.plan.epoch(s.step) + 1))

    def on_strip_step(self, step: int) -> None:
        """A click on the overview strip: with a run shown, go to the step of the run that read there."""
        win = self.win
        last = win.run.last_step() if win.views.belongs() else None
        if last is not None and 0 <= step <= last:
            win.session.set_step(step)
