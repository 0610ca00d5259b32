"""The main window: wiring only. It builds the widgets and connects them; state lives in Session and
RunController, work in workers, logic in the pure modules. Each intent has its module: menus (menus.py),
dialogs (dialogs.py), corpora (corpora.py), the step shown (stepping.py), runs (runs.py, run_views.py,
run_controller.py), files (files.py), the torchrun command (train_command.py), what is remembered between
sessions (window_state.py). One refresh clock (refresh.py) drives every view during a run.
"""
from __future__ import annotations

import os

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (QDockWidget, QLabel, QMainWindow, QProgressBar, QPushButton, QScrollArea,
                               QSplitter, QTabWidget, QToolBar, QVBoxLayout, QWidget)

from nanogpt_viz.ui import dialogs, window_state
from nanogpt_viz.ui.corpora import CorpusActions, dropped_file
from nanogpt_viz.ui.files import FileActions
from nanogpt_viz.ui.menus import build_menus
from nanogpt_viz.ui.panels import PlanPanel, StepControls, TrainPanel
from nanogpt_viz.ui.plots import LossPlot, PositionLossPlot, StepPositionMap, TokenLossHeatmap
from nanogpt_viz.ui.plots import GradNormPlot  # the gradient-norm tab (issue 13)
from nanogpt_viz.ui.refresh import RefreshClock
from nanogpt_viz.ui.run_controller import GcPause
from nanogpt_viz.ui.run_views import RunViews
from nanogpt_viz.ui.runs import RunActions, runs_root
from nanogpt_viz.ui.session import Session
from nanogpt_viz.ui.stepping import Stepping
from nanogpt_viz.ui.stream_view import StreamPanel
from nanogpt_viz.ui.train_command import TrainCommand
from nanogpt_viz.ui.window_state import first_launch_size
from nanogpt_viz.ui.worker import FunctionRunner
from nanogpt_viz.ui.xy_panel import XYPanel

ORG, APP = "nanogpt-viz", "nanogpt-viz"
HINT = ("Press → to step through the batches (Space plays, Home resets). Each row of X is N consecutive tokens; "
        "its Y is the same window shifted by one. Train ▸ Start trains GPT-2 on exactly these rows.")


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, device_name: str | None = None):
        super().__init__()
        self.settings = settings or QSettings(ORG, APP)
        self.session = Session(self)
        self.clock = RefreshClock(self)
        self.tasks: list[FunctionRunner] = []
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
        self.corpora = CorpusActions(self)  # opening corpora, recent files
        self.loader = self.corpora.loader
        self.stepping = Stepping(self)  # the step shown, its readout; colour mode, jump, next epoch
        self.train_command = TrainCommand(self)  # W = GPUs x hosts; the torchrun lines shown
        # the intents the menus, the tests and the other parts call on the window
        self.load_corpus, self.recent_files = self.corpora.load, self.corpora.recent_files
        self.open_dialog, self.open_dir_dialog = self.corpora.open_dialog, self.corpora.open_dir_dialog
        self.set_color_mode, self.set_count_from_one = self.stepping.set_color_mode, self.stepping.set_count_from_one
        self.jump_dialog, self.next_epoch = self.stepping.jump_dialog, self.stepping.next_epoch
        self.world, self.gpus_changed = self.train_command.world, self.train_command.gpus_changed
        self.update_command = self.train_command.update_command
        build_menus(self)
        from nanogpt_viz.ui.keys import StepKeys

        self.keys = StepKeys(self, self.stream.stream)  # stepping keys work unless a field is being edited
        self._connect()
        GcPause(self.run)  # the window's objects outside the garbage collector while a run trains
        window_state.restore(self)
        from nanogpt_viz.ui.lenses import install_lenses

        install_lenses(self)  # top-k popover on a clicked token, Help > Tour (offered once)
        self.stream.stream.setFocus()  # the stepping keys' home

    @property
    def run(self):
        """The RunController of the run the window shows."""
        return self.runs.run

    @property
    def corpus_path(self) -> str | None:
        """The open corpus' file or folder (None: the built-in corpus)."""
        return self.corpora.path

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
        s, run, runs, views, files, stepping = self.session, self.run, self.runs, self.views, self.files, self.stepping
        s.plan_changed.connect(stepping.on_plan_changed)
        s.step_changed.connect(stepping.on_step_changed)
        s.problem.connect(self.plan_panel.set_problem)
        s.corpus_changed.connect(run.detach)  # a run belongs to its corpus: no overlay on other text
        self.plan_panel.changed.connect(s.set_plan_config)
        self.controls.next_requested.connect(s.next)
        self.controls.previous_requested.connect(s.previous)
        self.controls.reset_requested.connect(s.reset)
        self.controls.jump_requested.connect(s.set_step)
        self.stream.hovered.connect(self.xy.set_highlight)
        self.stream.step_requested.connect(stepping.on_strip_step)
        self.xy.hovered.connect(self.stream.set_highlight)
        self.xy.selection_changed.connect(views.set_selection)
        self.stream.message.connect(lambda m: self.statusBar().showMessage(m, 5000))
        tp = self.train_panel
        tp.start_requested.connect(runs.start)
        tp.fresh_requested.connect(lambda: runs.set_continuation(None))
        tp.pause_toggled.connect(lambda on: run.pause() if on else run.resume())
        tp.stop_requested.connect(runs.stop)
        tp.sample_requested.connect(files.sample_dialog)
        run.info.connect(runs.on_info)
        run.reports.connect(views.on_reports)
        run.evaluated.connect(runs.on_evaluated)
        run.ended.connect(runs.on_end)
        run.running_changed.connect(runs.on_running)
        run.snapshot.connect(files.on_snapshot)
        run.checkpoint_saved.connect(files.on_checkpoint_saved)
        run.attached.connect(lambda d: d is None and views.detached())
        self.clock.add_pump(run.pump)
        views.install(self.clock)  # the followed step and the curves, painted in turn

    # ---- settings, first corpus ------------------------------------------------------------------
    def save_settings(self) -> None:
        window_state.save(self)

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

    # ---- drag and drop ---------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if dropped_file(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = dropped_file(event.mimeData())
        if path is not None:
            event.acceptProposedAction()
            self.load_corpus(path)

    # ---- small services ----------------------------------------------------------------------
    def run_task(self, fn, on_done, error_title: str) -> None:
        task = FunctionRunner(fn, self)
        task.done.connect(on_done)
        task.failed.connect(lambda msg: self.error(error_title, msg))
        task.finished.connect(lambda t=task: self.tasks.remove(t) if t in self.tasks else None)
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
        if not self.run.close_for_exit(self):  # a torchrun job: stop it, keep it running, or cancel
            self.closing = False
            event.ignore()
            return
        self.clock.timer.stop()
        self.loader.cancel_and_wait()
        for task in list(self.tasks):
            task.wait()
        event.accept()


__all__ = ["MainWindow", "runs_root", "first_launch_size", "ORG", "APP"]
