"""Feeding the views from the shown run, at the pace of the window's one refresh clock.

Reports arrive in batches (RunController.reports) and only update state here: the loss curve's
rings, the step x position map's rows, the step to follow, the progress line. The clock's paint then
draws them. The step shown (live, scrubbed to, or reopened) gets its exact per-token losses from
`RunController.losses_at`: the latest reports in memory, any other step from the run's history.
A run's losses are drawn only over the corpus and plan it was trained on.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
from PySide6.QtCore import QObject

from nanogpt_viz.run.record import format_eta
from nanogpt_viz.ui.plots import LossPoint, select_rows
from nanogpt_viz.viewmodel import PositionMapBuffer


class RunViews(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.run = win.runs.run
        self.map_rows = PositionMapBuffer()
        self.run_plan: Any = None  # the PlanConfig the shown run trained on
        self.total_steps = 1
        self.first_step: int | None = None
        self._t_start = 0.0
        self._follow: int | None = None
        self._progress: tuple[int, int, str] | None = None
        self._map_dirty = False
        self._shown_losses: Any = None
        self.micro, self.rank = 0, 0

    # ---- a run starts / is opened / goes -------------------------------------------------------
    def reset(self, run_plan: Any, total_steps: int = 1) -> None:
        w = self.win
        self.run_plan = run_plan
        self.total_steps = max(1, int(total_steps))
        self.first_step = None
        self._t_start = time.monotonic()
        self._follow = self._progress = None
        self.map_rows.clear()
        w.position_map.clear()
        w.loss_plot.clear_history()
        w.grad_plot.clear_history()
        w.rate_plot.clear_history()
        w.grad_plot.set_clip(self.grad_clip())
        w.position_plot.reset_ema()
        self.show_step(w.session.step)

    def detached(self) -> None:
        self.run_plan = None
        self.map_rows.clear()
        self.win.position_map.clear()
        self.win.loss_plot.clear_history()
        self.win.grad_plot.clear_history()
        self.win.rate_plot.clear_history()
        self.win.grad_plot.set_clip(None)
        self.win.position_plot.clear()
        self.show_step(self.win.session.step)
        self.update_range()

    def load_map(self) -> None:
        """A reopened run: the whole step x position map from its history."""
        got = self.run.position_map()
        if got is not None and len(got[0]):
            self.map_rows.load(*got)
            self._map_dirty = True

    def belongs(self) -> bool:
        """Whether the shown run was trained on what the window shows (its corpus and plan)."""
        return self.run.shown and self.run_plan is not None and self.win.session.plan_config == self.run_plan

    def grad_clip(self) -> float | None:
        """The shown run's clip threshold (TrainConfig.grad_clip): the trainer's, or the manifest's."""
        trainer = self.run.trainer
        if trainer is not None:
            return float(trainer.train_config.grad_clip)
        m = self.run.manifest
        try:
            return float((m.train or {}).get("grad_clip", 1.0))
        except (AttributeError, TypeError, ValueError):
            return None

    # ---- reports (state only; drawn by paint) --------------------------------------------------
    def on_info(self, info) -> None:
        self.first_step = info.start_step
        self.total_steps = max(1, info.total_steps)
        trainer = self.run.trainer
        if trainer is not None:  # a continued checkpoint's plan is the run's own
            self.run_plan = trainer.plan_config
        self.win.grad_plot.set_clip(self.grad_clip())
        if info.history:  # a continued run: its earlier losses, snapshotted by the engine's thread
            self.win.loss_plot.clear_history()
            self.win.loss_plot.extend(LossPoint.from_history(info.history))

    def on_reports(self, reports: list) -> None:
        w = self.win
        lp = w.loss_plot
        for rep in reports:
            lp.add(rep.step, rep.loss, rep.val_loss)
            w.grad_plot.add(rep.step, getattr(rep, "grad_norm", None))
            w.rate_plot.add(rep.step, getattr(rep, "lr", None), getattr(rep, "tokens_per_s", None))
            lp.add_bpb(rep.step, getattr(rep, "bpb", None), getattr(rep, "val_bpb", None))
            if rep.val_protocol is not None:
                lp.set_val_label(rep.val_protocol, rep.val_tokens)
            self.map_rows.add(rep.step, rep.position_loss)
        self._map_dirty = True
        last = reports[-1]
        if self.first_step is None:
            self.first_step = int(reports[0].step)
        if self.run.is_running() and w.train_panel.follow.isChecked():
            self._follow = int(last.step)
        done = last.step + 1
        elapsed = time.monotonic() - self._t_start
        eta = elapsed / max(1, done - self.first_step) * (self.total_steps - done)
        mfu = f" · MFU {100 * last.mfu:.1f}%" if last.mfu is not None else ""
        val = f" · val {last.val_loss:.3f}" if last.val_loss is not None else ""
        if getattr(last, "val_bpb", None) is not None:
            val += f" ({last.val_bpb:.3f} bpb)"
        bpb = f" ({last.bpb:.3f} bpb)" if getattr(last, "bpb", None) is not None else ""
        world = f" · {last.world_size} ranks" if last.world_size > 1 else ""
        self._progress = (done, self.total_steps, f"step {last.step} · loss {last.loss:.3f}{bpb}{val} · "
                          f"{last.tokens_per_s:,.0f} tok/s{mfu}{world} · ETA {format_eta(eta)}")
        w.clock.request()

    def install(self, clock) -> None:
        """Two painters on the refresh clock, which runs one per paint in turn (ui/refresh.py): the followed
        step (every per-token view, then their repaint) and the curves (and the map) never share one
        event-loop turn, so no single turn runs both (issue 11: the event latency while training)."""
        clock.add_painter(self.paint_step)
        clock.add_painter(self.paint_plots)

    def paint(self) -> None:
        """Everything now: curves, map, the followed step (its losses), progress."""
        self.paint_plots()
        self.paint_step()

    def paint_plots(self) -> None:
        """The curves and the step x position map (drawn when its tab is shown: StepPositionMap.set_rows)."""
        w = self.win
        w.loss_plot.redraw()
        w.grad_plot.redraw()
        w.rate_plot.redraw()
        if self._map_dirty:
            self._map_dirty = False
            w.position_map.set_rows(*self.map_rows.data())
            self.update_range()

    def paint_step(self) -> None:
        """The followed step (its exact losses in every per-token view) and the progress line."""
        w = self.win
        if self._follow is not None:
            step, self._follow = self._follow, None
            if step == w.session.step:
                self.show_step(step)
            else:
                w.session.set_step(step)  # step_changed -> show_step
        if self._progress is not None:
            done, total, text = self._progress
            self._progress = None
            w.train_panel.set_progress(done, total, text)

    def update_range(self) -> None:
        """The step slider spans the run's steps (or the plan's first epoch without a run)."""
        w = self.win
        last = self.run.last_step() if self.run.shown else None
        if last is not None:
            w.controls.set_step_range(last, f"of {last:,}", f"The run's steps: 0 → {last:,}. The slider scrubs "
                                      "through them; each shows its exact per-token losses.")
            return
        plan = w.session.plan
        try:
            n = plan.epoch_start(1) - 1 if plan is not None and plan.mode != "random" else 999
        except Exception:
            n = 999
        w.controls.set_step_range(min(max(n, 1), 10 ** 7), "")

    # ---- the step shown --------------------------------------------------------------------------
    def set_selection(self, micro: int, rank: int) -> None:
        self.micro, self.rank = int(micro), int(rank)
        self.show_step(self.win.session.step)

    def refresh_lenses(self) -> None:
        """The lenses' views of the step shown again (ui/lenses.UnitsLens.show_step; nothing folded into the
        moving averages): the heatmap's bits per byte are derived only while the units are bpb."""
        units = getattr(self.win, "units", None)
        if units is None:
            return
        losses = self._shown_losses if self.belongs() else None  # never a run's losses over another corpus
        with self.win.position_plot.batch():
            units.show_step(self.win.session.step, losses, self.micro, self.rank, update_ema=False)

    def show_step(self, step: int) -> None:
        """Every per-token view shows `step`'s exact losses, or none when the run has none for it."""
        w = self.win
        losses = self.run.losses_at(step) if self.belongs() else None
        self._shown_losses = losses
        note = ""
        if losses is None or losses.per_token is None:
            w.stream.set_loss(None, (), 0.0, 1.0)
            w.xy.set_loss(None, (), 0.0, 1.0)
            w.heatmap.clear()
            if losses is not None:
                note = losses.note
        else:
            pt = losses.per_token
            fin = pt[np.isfinite(pt)]
            vmin, vmax = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
            w.stream.set_loss(pt, losses.ranks, vmin, vmax)
            w.xy.set_loss(pt, losses.ranks, vmin, vmax, step=step)
            sel = select_rows(pt, losses.ranks, self.micro, self.rank)
            if sel is not None:
                w.heatmap.set_data(sel)
        live = self.run.is_running() and step == self.run.last_step()
        units = getattr(w, "units", None)
        with w.position_plot.batch():  # its nats, bpb and split setters draw once, at the end
            w.position_plot.set_data(None if losses is None else losses.position, update_ema=live)
            if units is not None:  # the same losses in bits per byte, and split at <|endoftext|> (ui/lenses.py)
                units.show_step(step, losses, self.micro, self.rank, update_ema=live)
        w.position_map.set_current(step if losses is not None else None)
        w.heatmap.label.setText(note or w.heatmap.label.text())
        w.loss_note.setText(note)
        w.loss_note.setVisible(bool(note))
