"""The main window: wiring only. State lives in Session and RunController, work in workers, logic in
the pure modules; menus (menus.py), dialogs (dialogs.py), runs (runs.py, run_views.py) and files
(files.py) each have their own module. One refresh clock (refresh.py) drives every view during a run.
"""
from __future__ import annotations

import gc
import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow,
                               QMessageBox, QProgressBar, QPushButton, QScrollArea, QSplitter, QTabWidget,
                               QToolBar, QVBoxLayout, QWidget)

from nanogpt_viz.config import LOADER_MODES, PlanConfig
from nanogpt_viz.ui import dialogs
from nanogpt_viz.ui.files import FileActions
from nanogpt_viz.ui.menus import build_menus
from nanogpt_viz.ui.panels import PlanPanel, StepControls, TrainPanel
from nanogpt_viz.ui.plots import LossPlot, PositionLossPlot, StepPositionMap, TokenLossHeatmap
from nanogpt_viz.ui.plots import GradNormPlot  # the gradient-norm tab (issue 13)
from nanogpt_viz.ui.refresh import RefreshClock
from nanogpt_viz.ui.run_views import RunViews
from nanogpt_viz.ui.runs import RunActions, runs_root
from nanogpt_viz.ui.session import Session
from nanogpt_viz.ui.stream_view import StreamPanel
from nanogpt_viz.ui.worker import CorpusLoader, FunctionRunner
from nanogpt_viz.ui.xy_panel import XYPanel
from nanogpt_viz.viewmodel import offset_short, offset_text, step_summary

ORG, APP = "nanogpt-viz", "nanogpt-viz"
MAX_RECENT = 8
HINT = ("Press → to step through the batches (Space plays, Home resets). Each row of X is N consecutive tokens; "
        "its Y is the same window shifted by one. Train ▸ Start trains GPT-2 on exactly these rows.")
TEXT_FILTER = ("Corpora (*.txt *.md *.bin *.npy *.json *.jsonl *.csv *.py);;Token files (*.bin *.npy);;"
               "All files (*)")


def first_launch_size(avail) -> tuple[int, int]:
    """The first launch uses the screen: all of a laptop's (up to 1600 px wide), 92% of a larger one's."""
    if avail is None:
        return 1500, 920
    w, h = avail.width(), avail.height()
    if w > 1600:
        return int(w * 0.92), int(h * 0.92)
    return w, h - 30  # room for a window manager's title bar


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, device_name: str | None = None):
        super().__init__()
        self.settings = settings or QSettings(ORG, APP)
        self.session = Session(self)
        self.loader = CorpusLoader(self)
        self.clock = RefreshClock(self)
        self.tasks: list[FunctionRunner] = []
        self.corpus_path: str | None = None
        self.closing = False
        self.last_error: tuple[str, str] | None = None
        from nanogpt_viz.data.tokenizer import display_table

        self.display_table = display_table()
        if device_name is None:
            from nanogpt_viz.engine.trainer import detect_device

            device_name = detect_device("auto")[1]
        self.device_name = device_name
        import torch

        self.setWindowTitle("nanogpt-viz")
        self.setAcceptDrops(True)
        self._build_widgets(device_name, torch.cuda.device_count() if torch.cuda.is_available() else 0)
        self.runs = RunActions(self)
        self.files = FileActions(self)
        self.views = RunViews(self)
        build_menus(self)
        from nanogpt_viz.ui.keys import StepKeys

        self.keys = StepKeys(self, self.stream.stream)  # stepping keys work unless a field is being edited
        self._connect()
        self._restore_settings()
        from nanogpt_viz.ui.lenses import install_lenses

        install_lenses(self)  # top-k popover on a clicked token, Help > Tour (offered once)
        self.stream.stream.setFocus()  # the stepping keys' home

    @property
    def run(self):
        """The RunController of the run the window shows."""
        return self.runs.run

    # ---- construction --------------------------------------------------------------------------
    def _build_widgets(self, device_name: str, gpus: int) -> None:
        self.controls = StepControls()
        self.stream = StreamPanel()
        self.stream.set_display_table(self.display_table)
        self.xy = XYPanel()
        self.xy.set_display_table(self.display_table)
        self.hint = QLabel(HINT)
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet("padding: 4px 8px; background: #eef6ff; color: #123;")
        self.loss_note = QLabel()  # e.g. a step whose per-token rows were thinned
        self.loss_note.setWordWrap(True)
        self.loss_note.setStyleSheet("padding: 2px 8px; background: #fff4e0; color: #432;")
        self.loss_note.hide()

        center = QWidget()
        lay = QVBoxLayout(center)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.hint)
        lay.addWidget(self.controls)
        lay.addWidget(self.loss_note)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.stream)
        self.splitter.addWidget(self.xy)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([560, 330])
        lay.addWidget(self.splitter, 1)
        self.setCentralWidget(center)

        self.plan_panel = PlanPanel()
        self.plan_dock = self._dock("Batch plan", "plan_dock", self.plan_panel, 230,
                                    Qt.DockWidgetArea.LeftDockWidgetArea)
        self.train_panel = TrainPanel(device_name, gpus)
        self.train_dock = self._dock("Training", "train_dock", self.train_panel, 260,
                                     Qt.DockWidgetArea.RightDockWidgetArea)
        # the run bar (Start / Pause / Stop, progress, the live line) is a fixed header across the window:
        # never scrolled away inside the Training dock, in view whatever the window's size
        self.run_toolbar = QToolBar("Run", self)
        self.run_toolbar.setObjectName("run_toolbar")
        self.run_toolbar.setMovable(False)
        self.run_toolbar.setFloatable(False)
        self.run_toolbar.toggleViewAction().setVisible(False)  # not hideable from the context menu
        self.run_toolbar.addWidget(self.train_panel.run_bar)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, self.run_toolbar)

        self.loss_plot = LossPlot()
        self.heatmap = TokenLossHeatmap()
        self.position_plot = PositionLossPlot()
        self.position_map = StepPositionMap()
        self.plots = QTabWidget()
        self.plots.addTab(self.loss_plot, "Loss")
        self.grad_plot = GradNormPlot()
        self.plots.addTab(self.grad_plot, "Gradient norm")
        from nanogpt_viz.ui.plots import RatePlot  # learning rate and tokens/s per step (issue 12)

        self.rate_plot = RatePlot()
        self.plots.addTab(self.rate_plot, "LR · tokens/s")
        self.plots.addTab(self.heatmap, "Per-token loss (B×N)")
        self.plots.addTab(self.position_plot, "Loss by position")
        self.plots.addTab(self.position_map, "Step × position")
        self.plot_dock = QDockWidget("Plots", self)
        self.plot_dock.setObjectName("plot_dock")
        self.plot_dock.setWidget(self.plots)
        self.plots.setMinimumWidth(200)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.plot_dock)

        self.corpus_label = QLabel("No corpus")
        self.coverage_label = QLabel()
        self.load_progress = QProgressBar()
        self.load_progress.setMaximumWidth(220)
        self.load_progress.hide()
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.hide()
        sb = self.statusBar()
        sb.addWidget(self.corpus_label, 1)
        sb.addWidget(self.coverage_label)
        sb.addPermanentWidget(self.load_progress)
        sb.addPermanentWidget(self.cancel_btn)

    def _dock(self, title: str, name: str, panel: QWidget, min_width: int, area) -> QDockWidget:
        """A dock holding `panel` in a vertical-only scroll area (it wraps to the dock's width)."""
        scroll = QScrollArea()
        bar = scroll.style().pixelMetric(scroll.style().PixelMetric.PM_ScrollBarExtent)
        # never narrower than the panel (with its vertical scroll bar): a field must not be cut off
        scroll.setMinimumWidth(max(min_width, panel.minimumSizeHint().width() + bar + 2 * scroll.frameWidth()))
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def _connect(self) -> None:
        s, run, runs, views, files = self.session, self.run, self.runs, self.views, self.files
        s.plan_changed.connect(self._on_plan_changed)
        s.step_changed.connect(self._on_step_changed)
        s.problem.connect(self.plan_panel.set_problem)
        s.corpus_changed.connect(run.detach)  # a run belongs to its corpus: no overlay on other text
        self.plan_panel.changed.connect(s.set_plan_config)
        self.controls.next_requested.connect(s.next)
        self.controls.previous_requested.connect(s.previous)
        self.controls.reset_requested.connect(s.reset)
        self.controls.jump_requested.connect(s.set_step)
        self.stream.hovered.connect(self.xy.set_highlight)
        self.stream.step_requested.connect(self._on_strip_step)
        self.xy.hovered.connect(self.stream.set_highlight)
        self.xy.selection_changed.connect(views.set_selection)
        self.stream.message.connect(lambda m: self.statusBar().showMessage(m, 5000))
        self.loader.progress.connect(self._on_load_progress)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_load_failed)
        self.loader.cancelled.connect(lambda p: self.statusBar().showMessage(f"Cancelled opening {p}", 5000))
        self.loader.busy_changed.connect(self._on_loader_busy)
        self.cancel_btn.clicked.connect(self.loader.cancel)
        tp = self.train_panel
        tp.start_requested.connect(runs.start)
        tp.settings_changed.connect(self.update_command)
        tp.gpus.valueChanged.connect(self.gpus_changed)
        tp.hosts.textChanged.connect(self.gpus_changed)
        tp.fresh_requested.connect(lambda: runs.set_continuation(None))
        s.plan_changed.connect(self.update_command)
        tp.pause_toggled.connect(lambda on: run.pause() if on else run.resume())
        tp.stop_requested.connect(runs.stop)
        tp.sample_requested.connect(files.sample_dialog)
        run.info.connect(runs.on_info)
        run.reports.connect(views.on_reports)
        run.reports.connect(self._freeze_once)
        run.evaluated.connect(runs.on_evaluated)
        run.ended.connect(runs.on_end)
        run.running_changed.connect(runs.on_running)
        run.running_changed.connect(self._on_running_gc)
        run.snapshot.connect(files.on_snapshot)
        run.checkpoint_saved.connect(files.on_checkpoint_saved)
        run.attached.connect(lambda d: d is None and views.detached())
        self.clock.add_pump(run.pump)
        self.clock.add_painter(views.paint)

    # ---- settings ----------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        st = self.settings
        geo = st.value("geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        else:
            self.resize(*first_launch_size(self.screen().availableGeometry() if self.screen() else None))
        state = st.value("window_state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        else:
            self.resizeDocks([self.plan_dock, self.train_dock], [320, 380], Qt.Orientation.Horizontal)
            self.resizeDocks([self.train_dock, self.plot_dock], [430, 420], Qt.Orientation.Vertical)
        self.keep_in_view_act.setChecked(st.value("keep_in_view", "true") in (True, "true"))
        self.count_from_one_act.setChecked(st.value("count_from_one", "true") in (True, "true"))
        try:
            pc = PlanConfig.from_dict(json.loads(st.value("plan", "") or "{}")) if st.value("plan") else None
            if pc is not None and pc.problems():
                pc = None
        except (ValueError, TypeError):
            pc = None
        pc = pc or PlanConfig(block_size=16, batch_size=4)
        self.plan_panel.set_config(pc)
        self.session.set_plan_config(pc)
        try:
            self.train_panel.restore(json.loads(st.value("train", "") or "{}"))
        except (ValueError, TypeError):
            pass
        zoom = st.value("zoom")
        if zoom is not None:
            try:
                self.stream.stream.set_zoom(int(zoom))
            except (TypeError, ValueError):
                pass
        self._refresh_recent()

    def save_settings(self) -> None:
        st = self.settings
        st.setValue("geometry", self.saveGeometry())
        st.setValue("window_state", self.saveState())
        st.setValue("plan", json.dumps(self.session.plan_config.to_dict()))
        st.setValue("train", json.dumps(self.train_panel.settings()))
        st.setValue("last_corpus", self.corpus_path or "")
        st.setValue("keep_in_view", self.keep_in_view_act.isChecked())
        st.setValue("count_from_one", self.count_from_one_act.isChecked())
        zoom = getattr(self.stream.stream, "zoom_level", None)
        if zoom is not None:
            st.setValue("zoom", int(zoom() if callable(zoom) else zoom))
        st.sync()

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [p for p in (value or []) if isinstance(p, str)]

    def _add_recent(self, path: str) -> None:
        items = [path] + [p for p in self.recent_files() if p != path]
        self.settings.setValue("recent", items[:MAX_RECENT])
        self._refresh_recent()

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        files = self.recent_files()
        for p in files:
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda checked=False, path=p: self.load_corpus(path))
        self.recent_menu.setEnabled(bool(files))

    def startup(self, corpus: str | None, run_dir: str | None = None) -> None:
        """What to open first: the command line's run (with its corpus) or corpus, else the last corpus,
        else the built-in one."""
        if run_dir:
            self.runs.open_run(run_dir)
            return
        if corpus:
            self.load_corpus(corpus)
            return
        last = self.settings.value("last_corpus", "")
        self.load_corpus(last if isinstance(last, str) and last and os.path.exists(last) else None)

    # ---- corpus ------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = os.path.dirname(self.corpus_path) if self.corpus_path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, "Open corpus", start, TEXT_FILTER)
        if path:
            self.load_corpus(path)

    def open_dir_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a data directory (train.bin / shards)")
        if path:
            self.load_corpus(path)

    def load_corpus(self, path: str | None) -> None:
        if self.run.is_running():
            self.error("Training in progress", "A run belongs to its corpus: stop it before opening another.")
            return
        if path is not None and not os.path.exists(path):
            self.error("Cannot open corpus", f"{path} does not exist.")
            return
        self.statusBar().showMessage(f"Opening {path or 'the built-in corpus'}…")
        self.load_progress.setRange(0, 0)
        self.loader.load(path)

    def _on_loader_busy(self, busy: bool) -> None:
        self.load_progress.setVisible(busy)
        self.cancel_btn.setVisible(busy)
        if not busy:
            self.load_progress.setRange(0, 1)

    def _on_load_progress(self, done: int, total: int) -> None:
        if total > 0:
            self.load_progress.setRange(0, 1000)
            self.load_progress.setValue(int(1000 * done / total))
            self.load_progress.setFormat(f"tokenizing {100 * done / total:.0f}%")

    def _on_loaded(self, corpus: Any, path: str) -> None:
        if not self.runs.corpus_loaded(corpus):  # not the text of the run being opened: kept out
            self.statusBar().clearMessage()
            return
        self.corpus_path = path or None
        self.session.set_corpus(corpus)
        n_val = len(corpus.split("val")) if corpus.has_split("val") else 0
        notes = "\n".join(corpus.notes) if getattr(corpus, "notes", None) else ""
        self.corpus_label.setText(f"<b>{corpus.name}</b> · {corpus.fmt} · {len(corpus):,} train tokens"
                                  + (f" · {n_val:,} val" if n_val else ""))
        self.corpus_label.setToolTip(f"{corpus.path}\n{notes}".strip())
        self.setWindowTitle(f"nanogpt-viz — {corpus.name}")
        self.statusBar().showMessage(f"Opened {corpus.name}", 4000)
        if path:
            self._add_recent(path)
        self.runs.after_corpus()

    def _on_load_failed(self, message: str, path: str) -> None:
        self.statusBar().clearMessage()
        self.runs._opening = None
        self.error("Cannot open corpus", message)

    # ---- drag and drop ---------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile():
                event.acceptProposedAction()
                self.load_corpus(url.toLocalFile())
                return

    # ---- stepping ----------------------------------------------------------------------------
    def _on_plan_changed(self) -> None:
        model = self.session.model
        self.stream.set_model(model)
        self.xy.set_model(model)
        self.train_panel.start_btn.setEnabled(model is not None and not self.run.is_running())
        self.views.update_range()
        self._on_step_changed(self.session.step)

    def set_count_from_one(self, on: bool) -> None:
        """View > Count tokens from 1: "token 4,097 · t[4,096]" leads with the 1-based count, else t[…]."""
        self.stream.stream.set_one_based(on)
        self.xy.set_one_based(on)
        self._on_step_changed(self.session.step)

    def _on_step_changed(self, step: int) -> None:
        self.controls.set_step(step)
        self.stream.set_step(step)
        if self.keep_in_view_act.isChecked():
            self.stream.stream.ensure_step_visible()
        self.xy.set_step(step)
        self.views.show_step(step)
        plan = self.session.plan
        if plan is None:
            self.controls.set_readout("")
            self.coverage_label.setText("")
            return
        info = step_summary(plan, step)
        one = self.count_from_one_act.isChecked()
        first, last = offset_text(info["first"], one), offset_short(info["last"], one)
        where = (f"the step starts at {first}…, inputs to {offset_short(info['last'] - 1, one)}, targets to "
                 f"{last}" if plan.mode in LOADER_MODES else
                 "rows at random offsets" if plan.mode == "random" else
                 f"rows {first}…{last}")
        src = f" ({info['where']})" if info["where"] else ""
        if info["drift"]:  # the stream's banner says which rank reads which shard
            src += " · <b>ranks out of step</b>"
        if self.session.replaying:
            src += f" · the batches the nanoGPT run {Path(self.session.replay_source).name} drew"
        self.controls.set_readout(
            f"epoch <b>{info['epoch']}</b>{src} · {where} · <b>{plan.tokens_per_step:,}</b> tokens/step = "
            f"{info['formula']}")
        try:
            seen = plan.fraction_seen(step)
            txt = f"seen {100 * seen:.1f}% of the corpus"
            if plan.mode == "random":
                txt += f" (expected for random offsets: {100 * plan.expected_random_fraction(step):.1f}%)"
        except Exception:  # exact random coverage too costly: show the expectation only
            txt = f"expected coverage: {100 * plan.expected_random_fraction(step):.1f}%"
        if plan.mode != "random" and plan.dropped_tail:
            txt += f" · dropped tail {plan.dropped_tail:,} tokens"
        self.coverage_label.setText(txt)

    def jump_dialog(self) -> None:
        step, ok = QInputDialog.getInt(self, "Jump to step", "Step (0-based):", self.session.step, 0, 2 ** 31 - 1)
        if ok:
            self.session.set_step(step)

    def next_epoch(self) -> None:
        plan = self.session.plan
        if plan is not None:
            self.session.set_step(plan.epoch_start(plan.epoch(self.session.step) + 1))

    def _on_strip_step(self, step: int) -> None:
        """A click on the overview strip: with a run shown, go to the step of the run that read there."""
        last = self.run.last_step() if self.views.belongs() else None
        if last is not None and 0 <= step <= last:
            self.session.set_step(step)

    def set_color_mode(self, mode: str) -> None:
        self.color_actions[mode].setChecked(True)
        self.stream.set_color_mode(mode)
        self.xy.set_color_mode("loss" if mode == "loss" else "plain")
        if mode == "loss" and self.run.last_step() is None:
            self.statusBar().showMessage("Per-token loss appears once training has run a step", 5000)

    # ---- training settings -------------------------------------------------------------------
    def world(self) -> int:
        tp = self.train_panel
        return tp.gpus.value() * max(1, len(tp.hosts_list()))

    def gpus_changed(self) -> None:
        """W in the plan is the number of processes torchrun starts: keep the two the same."""
        world = self.world()
        if world > 1 and self.session.plan_config.world_size != world:
            pc = self.session.plan_config.with_(world_size=world)
            self.plan_panel.set_config(pc)
            self.session.set_plan_config(pc)

    def update_command(self) -> None:
        tp = self.train_panel
        if not tp.distributed() or self.session.corpus is None:
            tp.set_command([])
            return
        from nanogpt_viz.run.launch import shell_line, torchrun_command

        try:
            tc = tp.train_config()
        except ValueError:
            return
        args = self.runs.command_args(tp.preset.currentText(), tp.model_config(0), tc,
                                      runs_root() / "<timestamp>", self.runs.continue_from is not None)
        hosts = tp.hosts_list()
        nodes = range(len(hosts)) if len(hosts) > 1 else [0]
        tp.set_command([shell_line(torchrun_command(args, tp.gpus.value(), hosts, node_rank=i, python="python"))
                        for i in nodes])

    def _on_running_gc(self, running: bool) -> None:
        # The window's own ~200k long-lived objects (widgets, plot items) would be traversed by every
        # full garbage collection during the run: about 60 ms holding the GIL, which stalls the trainer
        # and the window alike. Park them outside the collector meanwhile.
        if running:
            self._frozen_first = False
            gc.freeze()
        else:
            gc.unfreeze()

    def _freeze_once(self, _reports: list) -> None:
        if not getattr(self, "_frozen_first", True) and self.run.is_running():
            self._frozen_first = True
            gc.freeze()  # again: what the engine's first step imported (torch internals) is long-lived too

    # ---- small services ----------------------------------------------------------------------
    def run_task(self, fn, on_done, error_title: str) -> None:
        task = FunctionRunner(fn, self)
        task.done.connect(on_done)
        task.failed.connect(lambda msg: self.error(error_title, msg))
        task._runner.finished.connect(lambda t=task: self.tasks.remove(t) if t in self.tasks else None)
        self.tasks.append(task)
        task.start()

    def error(self, title: str, message: str) -> None:
        self.last_error = (title, message)
        self.error_box = dialogs.warning_box(self, title, message)

    # ---- closing -----------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self.closing = True
        self.controls.set_playing(False)
        self.save_settings()
        run = self.run
        if run.kind == "local" and run.is_running():
            self.statusBar().showMessage("Stopping training and saving its checkpoint…")
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                run.shutdown()
            finally:
                QApplication.restoreOverrideCursor()
        if run.kind == "torchrun" and run.process is not None and run.process.poll() is None:
            answer = dialogs.ask_keep_run(self, run.run_dir)
            if answer == QMessageBox.StandardButton.Cancel:
                self.closing = False
                event.ignore()
                return
            if answer == QMessageBox.StandardButton.Discard:  # stop it: every rank saves nothing half
                QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
                try:
                    run.shutdown()
                finally:
                    QApplication.restoreOverrideCursor()
            else:  # keep it running in its own process group; File ▸ Attach follows it again
                run.leave_running()
        self.clock.timer.stop()
        self.loader.cancel_and_wait()
        for task in list(self.tasks):
            task.wait()
        event.accept()


__all__ = ["MainWindow", "runs_root", "ORG", "APP"]
