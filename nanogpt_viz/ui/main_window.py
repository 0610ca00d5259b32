"""The main window: wiring only. State lives in Session, work in workers, logic in the pure modules."""
from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QDockWidget, QFileDialog,
                               QInputDialog, QLabel, QMainWindow, QMessageBox, QPlainTextEdit, QProgressBar,
                               QPushButton, QScrollArea, QSplitter, QTabWidget, QVBoxLayout, QWidget)

from nanogpt_viz.config import LOADER_MODES, PlanConfig
from nanogpt_viz.ui.panels import PlanPanel, StepControls, TrainPanel
from nanogpt_viz.ui.plots import LossPlot, PlotCoalescer, PositionLossPlot, TokenLossHeatmap
from nanogpt_viz.ui.session import Session
from nanogpt_viz.ui.stream_view import StreamPanel
from nanogpt_viz.ui.worker import CorpusLoader, FunctionRunner, TrainController
from nanogpt_viz.ui.xy_panel import XYPanel
from nanogpt_viz.run.record import format_eta
from nanogpt_viz.viewmodel import step_summary

ORG, APP = "nanogpt-viz", "nanogpt-viz"
REFRESH_MIN_MS, REFRESH_MAX_MS = 100, 3000  # view/plot refresh period while training (10 Hz at most)
MAX_RECENT = 8
HINT = ("Press → to step through the batches (Space plays, Home resets). Each row of X is N consecutive tokens; "
        "its Y is the same window shifted by one. Train ▸ Start trains GPT-2 on exactly these rows.")
TEXT_FILTER = ("Corpora (*.txt *.md *.bin *.npy *.json *.jsonl *.csv *.py);;Token files (*.bin *.npy);;"
               "All files (*)")


def runs_root() -> Path:
    base = os.environ.get("NANOGPT_VIZ_RUNS") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share"), "nanogpt-viz", "runs")
    return Path(base)


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None, device_name: str | None = None):
        super().__init__()
        self.settings = settings or QSettings(ORG, APP)
        self.session = Session(self)
        self.loader = CorpusLoader(self)
        self.trainer_ctl = TrainController(self)
        self.tasks: list[FunctionRunner] = []
        self.corpus_path: str | None = None
        self.resume_dir: Path | None = None
        self.last_report: Any = None
        self.last_trainer: Any = None
        self._pending_save: str | None = None
        self._pending_sample: str | None = None
        self._follow_step: int | None = None
        self._progress: tuple[int, int, str] | None = None
        self._t_start = 0.0
        self._closing = False
        self.monitor = None  # RunMonitor of a torchrun (multi-GPU) run or an attached run directory
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
        self._build_actions()
        self._connect()
        self._restore_settings()

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

        center = QWidget()
        lay = QVBoxLayout(center)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.hint)
        lay.addWidget(self.controls)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.stream)
        self.splitter.addWidget(self.xy)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.splitter.setSizes([560, 330])
        lay.addWidget(self.splitter, 1)
        self.setCentralWidget(center)

        self.plan_panel = PlanPanel()
        self.plan_dock = self._dock("Batch plan", "plan_dock", self.plan_panel, 300,
                                    Qt.DockWidgetArea.LeftDockWidgetArea)
        self.train_panel = TrainPanel(device_name, gpus)
        self.train_dock = self._dock("Training", "train_dock", self.train_panel, 330,
                                     Qt.DockWidgetArea.RightDockWidgetArea)

        self.loss_plot = LossPlot()
        self.heatmap = TokenLossHeatmap()
        self.position_plot = PositionLossPlot()
        self.plots = QTabWidget()
        self.plots.addTab(self.loss_plot, "Loss")
        self.plots.addTab(self.heatmap, "Per-token loss (B×N)")
        self.plots.addTab(self.position_plot, "Loss by position")
        self.plot_dock = QDockWidget("Live plots", self)
        self.plot_dock.setObjectName("plot_dock")
        self.plot_dock.setWidget(self.plots)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.plot_dock)
        # plots and the followed step refresh at 10 Hz: enough to watch, cheap beside training
        self.coalescer = PlotCoalescer(self.loss_plot, self.heatmap, self.position_plot,
                                       interval_ms=REFRESH_MIN_MS, parent=self)

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
        self.follow_timer = QTimer(self)
        self.follow_timer.setInterval(REFRESH_MIN_MS)
        self.follow_timer.timeout.connect(self._refresh_tick)
        self._tick = 0
        # While training, the window's own CPU use is measured every second and the refresh period
        # of the view and plots adapted so the window stays within a small share of the CPU: on a
        # 2-core machine every millisecond painted is taken from the model.
        self.load_meter = QTimer(self)
        self.load_meter.setInterval(1000)
        self.load_meter.timeout.connect(self._adapt_refresh)
        self._cpu_mark = (0.0, 0.0)
        self._gui_budget = 0.03

    def _dock(self, title: str, name: str, panel: QWidget, min_width: int, area) -> QDockWidget:
        """A dock holding `panel` in a vertical-only scroll area (it wraps to the dock's width)."""
        scroll = QScrollArea()
        scroll.setMinimumWidth(min_width)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            seqs = shortcut if isinstance(shortcut, list) else [shortcut]
            act.setShortcuts([QKeySequence(s) for s in seqs])
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _build_actions(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self.open_act = self._action(f, "&Open corpus…", self.open_dialog, QKeySequence.StandardKey.Open,
                                     "Open a text file or the token files nanoGPT / llm.c / build-nanogpt write")
        self.open_dir_act = self._action(f, "Open data &directory…", self.open_dir_dialog)
        self.recent_menu = f.addMenu("Open &recent")
        self._action(f, "Open &built-in corpus", lambda: self.load_corpus(None))
        f.addSeparator()
        self._action(f, "&Load checkpoint…", self.load_checkpoint_dialog)
        self._action(f, "Open &nanoGPT run…", self.open_nanogpt_run_dialog,
                     tip="The batches a nanoGPT train.py run drew, replayed exactly, with its checkpoint's weights")
        self._action(f, "&Attach to a run directory…", self.attach_dialog,
                     tip="Follow a run started from the command line or by an earlier window")
        self.save_ckpt_act = self._action(f, "&Save checkpoint as…", self.save_checkpoint_dialog,
                                          QKeySequence.StandardKey.Save)
        f.addSeparator()
        self._action(f, "Export loss history as &CSV…", self.export_csv)
        png = f.addMenu("Export plot as &PNG")
        self._action(png, "Loss curve…", lambda: self.export_png(self.loss_plot, "loss"))
        self._action(png, "Per-token loss heatmap…", lambda: self.export_png(self.heatmap, "per_token_loss"))
        self._action(png, "Loss by position…", lambda: self.export_png(self.position_plot, "position_loss"))
        f.addSeparator()
        quit_seq = QKeySequence(QKeySequence.StandardKey.Quit)
        self.quit_act = self._action(f, "&Quit", self.close,
                                     [quit_seq, QKeySequence("Ctrl+Q")] if not quit_seq.isEmpty()
                                     and quit_seq != QKeySequence("Ctrl+Q") else QKeySequence("Ctrl+Q"))

        v = mb.addMenu("&View")
        self._action(v, "Zoom &in", lambda: self.stream.stream.zoom_in(), QKeySequence.StandardKey.ZoomIn)
        self._action(v, "Zoom &out", lambda: self.stream.stream.zoom_out(), QKeySequence.StandardKey.ZoomOut)
        self._action(v, "Show the current step", lambda: self.stream.stream.ensure_step_visible(), "Ctrl+L")
        v.addSeparator()
        group = QActionGroup(self)
        self.color_actions = {}
        for mode, label in (("step", "Colour by &step"), ("coverage", "Colour by &coverage"),
                            ("loss", "Colour by per-token &loss")):
            act = self._action(v, label, lambda checked=False, m=mode: self.set_color_mode(m))
            act.setCheckable(True)
            group.addAction(act)
            self.color_actions[mode] = act
        self.color_actions["step"].setChecked(True)
        v.addSeparator()
        self.keep_in_view_act = QAction("&Keep the current step in view", self, checkable=True, checked=True)
        self.keep_in_view_act.toggled.connect(lambda on: on and self.stream.stream.ensure_step_visible())
        v.addAction(self.keep_in_view_act)
        v.addSeparator()
        v.addAction(self.plan_dock.toggleViewAction())
        v.addAction(self.train_dock.toggleViewAction())
        v.addAction(self.plot_dock.toggleViewAction())

        g = mb.addMenu("&Go")
        self.next_act = self._action(g, "&Next step", self.session.next, Qt.Key.Key_Right)
        self.prev_act = self._action(g, "&Previous step", self.session.previous, Qt.Key.Key_Left)
        self.play_act = self._action(g, "Play / &pause", self.controls.toggle_play, Qt.Key.Key_Space)
        self.home_act = self._action(g, "&First step", self.session.reset, Qt.Key.Key_Home)
        self._action(g, "&Jump to step…", self.jump_dialog, "Ctrl+G")
        self._action(g, "Next &epoch", self.next_epoch, "Ctrl+Right")

        t = mb.addMenu("&Train")
        self.start_act = self._action(t, "&Start", self.train_panel.start_btn.click, "Ctrl+Return")
        self._action(t, "&Pause / resume", self.train_panel.pause_btn.toggle, "Ctrl+P")
        self._action(t, "S&top", self.stop_training, "Ctrl+.")
        self._action(t, "Sample &text…", self.sample_dialog, "Ctrl+E")

        h = mb.addMenu("&Help")
        self._action(h, "What am I seeing?", self.explain)
        self._action(h, "&About nanogpt-viz", self.about)

    def _connect(self) -> None:
        s = self.session
        s.plan_changed.connect(self._on_plan_changed)
        s.step_changed.connect(self._on_step_changed)
        s.problem.connect(self.plan_panel.set_problem)
        self.plan_panel.changed.connect(s.set_plan_config)
        self.controls.next_requested.connect(s.next)
        self.controls.previous_requested.connect(s.previous)
        self.controls.reset_requested.connect(s.reset)
        self.controls.jump_requested.connect(s.set_step)
        self.stream.hovered.connect(self.xy.set_highlight)
        self.xy.hovered.connect(self.stream.set_highlight)
        self.xy.selection_changed.connect(self.coalescer.set_selection)
        self.stream.message.connect(lambda m: self.statusBar().showMessage(m, 5000))
        self.loader.progress.connect(self._on_load_progress)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_load_failed)
        self.loader.cancelled.connect(lambda p: self.statusBar().showMessage(f"Cancelled opening {p}", 5000))
        self.loader.busy_changed.connect(self._on_loader_busy)
        self.cancel_btn.clicked.connect(self.loader.cancel)
        tp = self.train_panel
        tp.start_requested.connect(self.start_training)
        tp.settings_changed.connect(self._update_command)
        tp.gpus.valueChanged.connect(self._gpus_changed)
        tp.hosts.textChanged.connect(self._gpus_changed)
        self.session.plan_changed.connect(self._update_command)
        tp.pause_toggled.connect(lambda on: self.trainer_ctl.pause() if on else self.trainer_ctl.resume())
        tp.stop_requested.connect(self.stop_training)
        tp.sample_requested.connect(self.sample_dialog)
        ctl = self.trainer_ctl
        ctl.info.connect(self._on_train_info)
        ctl.report.connect(self._on_report)
        ctl.evaluated.connect(self._on_evaluated)
        ctl.ended.connect(self._on_train_end)
        ctl.running_changed.connect(self._on_running_changed)
        ctl.snapshot.connect(self._on_snapshot)
        ctl.checkpoint_saved.connect(self._on_checkpoint_saved)

    # ---- settings ----------------------------------------------------------------------------
    def _restore_settings(self) -> None:
        st = self.settings
        geo = st.value("geometry")
        if isinstance(geo, QByteArray) and not geo.isEmpty():
            self.restoreGeometry(geo)
        else:
            self.resize(1500, 920)
        state = st.value("window_state")
        if isinstance(state, QByteArray) and not state.isEmpty():
            self.restoreState(state)
        else:
            self.resizeDocks([self.plan_dock, self.train_dock], [320, 380], Qt.Orientation.Horizontal)
            self.resizeDocks([self.train_dock, self.plot_dock], [430, 420], Qt.Orientation.Vertical)
        self.keep_in_view_act.setChecked(st.value("keep_in_view", "true") in (True, "true"))
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

    def startup(self, corpus: str | None) -> None:
        """What to open first: the command line's corpus, else the last one, else the built-in one."""
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
        self.resume_dir = None

    def _on_load_failed(self, message: str, path: str) -> None:
        self.statusBar().clearMessage()
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
        self.train_panel.start_btn.setEnabled(model is not None and not self.trainer_ctl.is_running())
        self._on_step_changed(self.session.step)

    def _on_step_changed(self, step: int) -> None:
        self.controls.set_step(step)
        self.stream.set_step(step)
        if self.keep_in_view_act.isChecked():
            self.stream.stream.ensure_step_visible()
        self.xy.set_step(step)
        plan = self.session.plan
        if plan is None:
            self.controls.set_readout("")
            self.coverage_label.setText("")
            return
        info = step_summary(plan, step)
        where = (f"rows start at t[{info['first']:,}]…, inputs to t[{info['last'] - 1:,}], targets to "
                 f"t[{info['last']:,}]" if plan.mode in LOADER_MODES else
                 "rows at random offsets" if plan.mode == "random" else
                 f"rows t[{info['first']:,}]…t[{info['last']:,}]")
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
        self._apply_loss_overlay()

    def jump_dialog(self) -> None:
        step, ok = QInputDialog.getInt(self, "Jump to step", "Step (0-based):", self.session.step, 0, 2 ** 31 - 1)
        if ok:
            self.session.set_step(step)

    def next_epoch(self) -> None:
        plan = self.session.plan
        if plan is not None:
            self.session.set_step(plan.epoch_start(plan.epoch(self.session.step) + 1))

    def set_color_mode(self, mode: str) -> None:
        self.color_actions[mode].setChecked(True)
        self.stream.set_color_mode(mode)
        self.xy.set_color_mode("loss" if mode == "loss" else "plain")
        if mode == "loss" and self.last_report is None:
            self.statusBar().showMessage("Per-token loss appears once training has run a step", 5000)
        self._apply_loss_overlay()

    def _apply_loss_overlay(self) -> None:
        rep = self.last_report
        if rep is None or rep.per_token is None or rep.step != self.session.step:
            self.stream.set_loss(None, (), 0.0, 1.0)
            self.xy.set_loss(None, (), 0.0, 1.0)
            return
        vmin, vmax = float(np.nanmin(rep.per_token)), float(np.nanmax(rep.per_token))
        self.stream.set_loss(rep.per_token, rep.ranks, vmin, vmax)
        self.xy.set_loss(rep.per_token, rep.ranks, vmin, vmax, step=rep.step)

    # ---- training ----------------------------------------------------------------------------
    def build_trainer(self, preset: str, mc, tc):
        from nanogpt_viz.engine.trainer import Trainer

        s = self.session
        corpus = s.corpus
        val = corpus.split("val") if corpus.has_split("val") and s.plan_config.split == "train" else None
        if self.resume_dir is not None and (self.resume_dir / "ckpt.pt").exists():
            out_dir, resume = self.resume_dir, True
        else:
            out_dir, resume = runs_root() / time.strftime("%Y%m%d-%H%M%S"), False
        mc, tc = self._run_configs(mc, tc)
        return Trainer(s.tokens, val, s.plan_config, mc,
                       tc, out_dir=out_dir, resume=resume, model_preset=preset,
                       corpus_info={"path": str(self.corpus_path or corpus.path), "name": corpus.name,
                                    "tokens": len(s.tokens), "vocab_size": corpus.vocab_size})

    def _world(self) -> int:
        tp = self.train_panel
        return tp.gpus.value() * max(1, len(tp.hosts_list()))

    def _gpus_changed(self) -> None:
        """W in the plan is the number of processes torchrun starts: keep the two the same."""
        world = self._world()
        if world > 1 and self.session.plan_config.world_size != world:
            pc = self.session.plan_config.with_(world_size=world)
            self.plan_panel.set_config(pc)
            self.session.set_plan_config(pc)

    def _distributed_args(self, preset: str, mc, tc, out_dir: Path, resume: bool) -> list[str]:
        from nanogpt_viz.run.launch import train_args

        s = self.session
        source = self.corpus_path or str(s.corpus.path)
        mc, tc = self._run_configs(mc, tc)
        return train_args(source, s.plan_config, preset, mc, tc, out_dir, resume=resume)

    def _run_configs(self, mc, tc):
        """One block size unless the panel sets the model's context apart; 'auto' validation resolved."""
        from nanogpt_viz.config import PLAN_PRESETS
        from nanogpt_viz.data.evaluation import window_protocol

        pc = self.session.plan_config
        mc = mc.with_(block_size=self.train_panel.context.value() or pc.block_size)
        if tc.eval_protocol == "auto":
            tc = tc.with_(eval_protocol=window_protocol(pc, PLAN_PRESETS))
        return mc, tc

    def _on_evaluated(self, ev) -> None:
        """The evaluation before the first step: at x = -1 (a report's val follows step x, i.e. x+1 steps)."""
        self.loss_plot.add(-1, None, ev.val_loss)
        self.loss_plot.set_val_label(ev.val_protocol, ev.val_tokens)

    def _update_command(self) -> None:
        tp = self.train_panel
        if not tp.distributed() or self.session.corpus is None:
            tp.set_command([])
            return
        from nanogpt_viz.run.launch import shell_line, torchrun_command

        try:
            lr = float(tp.lr.text())
            tc = tp.train_config().with_(learning_rate=lr)
        except ValueError:
            return
        args = self._distributed_args(tp.preset.currentText(), tp.model_config(0), tc,
                                      runs_root() / "<timestamp>", False)
        hosts = tp.hosts_list()
        nodes = range(len(hosts)) if len(hosts) > 1 else [0]
        tp.set_command([shell_line(torchrun_command(args, tp.gpus.value(), hosts, node_rank=i, python="python"))
                        for i in nodes])

    def start_training(self, preset: str, mc, tc) -> None:
        if self.session.model is None:
            self.error("Cannot train", self.session.last_problem or "Open a corpus first.")
            return
        if self.trainer_ctl.is_running() or (self.monitor is not None and self.monitor.active):
            return
        if self.train_panel.distributed():
            self.start_distributed(preset, mc, tc)
            return
        trainer = self.build_trainer(preset, mc, tc)
        # on a CPU the window competes with the model for cores; beside a GPU it may refresh more
        on_cpu = "CPU" in self.device_name or tc.device == "cpu"
        self._gui_budget = 0.01 if on_cpu else 0.15
        # Beside a GPU the trainer thread mostly runs Python between kernel launches: hand the GIL
        # over every 1 ms (not 5) so a window event waits at most about that long. On a CPU the
        # extra hand-overs only cost the model time.
        sys.setswitchinterval(0.005 if on_cpu else 0.001)
        if not trainer.resume:
            self.loss_plot.clear_history()
        self.coalescer.reset()
        self.position_plot.reset_ema()
        self.last_trainer = trainer
        self._t_start = time.monotonic()
        self._first_step = None
        self.trainer_ctl.start(trainer)
        self.statusBar().showMessage(f"Training in {trainer.out_dir}", 5000)

    def start_distributed(self, preset: str, mc, tc) -> None:
        """More than one GPU: run torchrun in its own process group and follow its run directory."""
        from nanogpt_viz.run.launch import RunProcess, torchrun_command
        from nanogpt_viz.ui.run_monitor import RunMonitor

        if self.session.plan_config.world_size != self._world():
            self._gpus_changed()
        if self.resume_dir is not None and (self.resume_dir / "ckpt.pt").exists():
            out_dir, resume = self.resume_dir, True
        else:
            out_dir, resume = runs_root() / time.strftime("%Y%m%d-%H%M%S"), False
        tp = self.train_panel
        hosts = tp.hosts_list()
        cmd = torchrun_command(self._distributed_args(preset, mc, tc, out_dir, resume), tp.gpus.value(), hosts)
        try:
            proc = RunProcess(cmd, out_dir)
        except OSError as exc:
            self.error("Cannot start torchrun", str(exc))
            return
        if not resume:
            self.loss_plot.clear_history()
        self.coalescer.reset()
        self._attach_monitor(RunMonitor(out_dir, proc, self), tc.steps)
        self.statusBar().showMessage(f"torchrun started ({self._world()} processes), run directory {out_dir}", 8000)

    def attach_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Attach to a run directory", str(runs_root()))
        if path:
            self.attach_run(path)

    def attach_run(self, path: str) -> None:
        from nanogpt_viz.run.record import read_status
        from nanogpt_viz.ui.run_monitor import RunMonitor

        run = Path(path)
        if not (run / "metrics.jsonl").exists():
            self.error("Not a run directory", f"{run} has no metrics.jsonl; pick the --out directory of a run.")
            return
        if self.trainer_ctl.is_running() or (self.monitor is not None and self.monitor.active):
            self.error("Training in progress", "Stop the current run before attaching to another one.")
            return
        status = read_status(run) or {}
        self.loss_plot.clear_history()
        self.coalescer.reset()
        self._attach_monitor(RunMonitor(run, None, self), int(status.get("total_steps") or 0))
        if (run / "ckpt.pt").exists():
            self.resume_dir = run

    def _attach_monitor(self, monitor, total_steps: int) -> None:
        self.monitor = monitor
        self._total_steps = max(1, total_steps)
        self._t_start = time.monotonic()
        self._first_step = None
        monitor.records.connect(self._on_run_records)
        monitor.status_changed.connect(self._on_run_status)
        monitor.ended.connect(self._on_run_ended)
        self._on_running_changed(True)
        self.train_panel.pause_btn.setEnabled(False)  # torchrun jobs stop, they do not pause
        monitor.start()

    def _on_run_records(self, records: list) -> None:
        self.loss_plot.extend(records)
        for rec in records:
            if rec.get("val_protocol"):
                self.loss_plot.set_val_label(rec["val_protocol"], rec.get("val_tokens", 0))
        last = records[-1]
        if self._first_step is None:
            self._first_step = int(records[0].get("step", 0))
        if self.train_panel.follow.isChecked():
            self._follow_step = int(last["step"])
        done = int(last["step"]) + 1
        elapsed = time.monotonic() - self._t_start
        eta = elapsed / max(1, done - self._first_step) * (self._total_steps - done)
        mfu = f" · MFU {100 * last['mfu']:.1f}%" if last.get("mfu") is not None else ""
        world = f" · {last.get('world_size', 1)} ranks" if last.get("world_size", 1) > 1 else ""
        self._progress = (done, self._total_steps, f"step {last['step']} · loss {last['loss']:.3f} · "
                          f"{last.get('tokens_per_s') or 0:,.0f} tok/s{mfu}{world} · ETA {format_eta(eta)}")

    def _on_run_status(self, status: dict) -> None:
        if status.get("total_steps"):
            self._total_steps = int(status["total_steps"])

    def _on_run_ended(self, status: dict) -> None:
        self._on_running_changed(False)
        state = status.get("state", "")
        ckpt = status.get("checkpoint")
        if ckpt:
            self.resume_dir = Path(ckpt).parent
        if state in ("finished", "stopped"):
            self.statusBar().showMessage(f"{status.get('message', state)}" + (f"; checkpoint {ckpt}" if ckpt else ""),
                                         10000)
        elif not self._closing:
            self.error("Training failed", str(status.get("message") or state))

    def stop_training(self) -> None:
        if self.monitor is not None and self.monitor.active:
            self.monitor.stop()
            self.statusBar().showMessage("Stopping every rank after its current step…", 8000)
        self.trainer_ctl.stop()

    def _on_running_changed(self, running: bool) -> None:
        self.train_panel.set_running(running)
        self.train_panel.start_btn.setEnabled(not running and self.session.model is not None)
        self.plan_panel.setEnabled(not running)
        if running:
            self._tick = 0
            # start where a CPU run usually settles (the meter adapts it within seconds)
            self._set_refresh(REFRESH_MIN_MS if self._gui_budget > 0.05 else 5 * REFRESH_MIN_MS)
            self._cpu_mark = (time.perf_counter(), time.thread_time())
            self.follow_timer.start()
            self.load_meter.start()
            # The window's own ~200k long-lived objects (widgets, plot items) would be traversed by
            # every full garbage collection during the run: about 60 ms holding the GIL, which
            # stalls the trainer and the window alike. Park them outside the collector meanwhile.
            gc.freeze()
        else:
            gc.unfreeze()
            self.follow_timer.stop()
            self.load_meter.stop()
            self.coalescer.set_interval(REFRESH_MIN_MS)
            self.coalescer.flush()
            self._apply_follow()

    def _on_train_info(self, info) -> None:
        self._first_step = info.start_step
        self._total_steps = info.total_steps
        comp = (", bf16 residual" if info.residual_dtype == "bfloat16" else "") + (", compiled" if info.compiled else "")
        self.train_panel.set_progress(info.start_step, info.total_steps,
                                      f"{info.device_name} · {info.dtype}{comp} · {info.n_params / 1e6:.2f}M params"
                                      + (f" · resumed at step {info.start_step}" if info.start_step else ""))
        if info.history:  # a resumed run: its earlier losses, snapshotted by the engine's thread
            self.loss_plot.clear_history()
            self.loss_plot.extend([(a, b, None if math.isnan(c) else c) for a, b, c in info.history])

    def _on_report(self, rep) -> None:
        if rep.step == self._first_step:
            gc.freeze()  # again: what the engine's first step imported (torch internals) is long-lived too
        if rep.val_protocol is not None:
            self.loss_plot.set_val_label(rep.val_protocol, rep.val_tokens)
        self.last_report = rep
        self.coalescer.push(rep)
        if self.train_panel.follow.isChecked():
            self._follow_step = rep.step
        done = rep.step + 1
        elapsed = time.monotonic() - self._t_start
        first = self._first_step or 0
        eta = elapsed / max(1, done - first) * (self._total_steps - done)
        mfu = f" · MFU {100 * rep.mfu:.1f}%" if rep.mfu is not None else ""
        val = f" · val {rep.val_loss:.3f}" if rep.val_loss is not None else ""
        text = (f"step {rep.step} · loss {rep.loss:.3f}{val} · {rep.tokens_per_s:,.0f} tok/s{mfu} · "
                               f"ETA {format_eta(eta)}")
        self._progress = (done, self._total_steps, text)  # shown on the next refresh

    def _apply_follow(self) -> None:
        if self._follow_step is not None:
            step, self._follow_step = self._follow_step, None
            self.session.set_step(step)
        if self._progress is not None:
            done, total, text = self._progress
            self._progress = None
            self.train_panel.set_progress(done, total, text)

    def _refresh_tick(self) -> None:
        """While training, alternate the two refreshes (the followed step, then the plots) so each
        repaint pass of the window paints one group only and no single event runs long."""
        self._tick += 1
        self.trainer_ctl.drain()  # the step reports queued since the last tick
        if self._tick % 2:
            self._apply_follow()
        else:
            self.coalescer.flush()

    def _set_refresh(self, ms: int) -> None:
        """Each group refreshes every `ms`: the tick runs twice as often and alternates."""
        self.follow_timer.setInterval(max(1, ms // 2))
        self.trainer_ctl.set_report_interval(ms)  # a fallback: the tick drains the reports first
        self.coalescer.set_interval(10 ** 8)  # flushed by the tick, never on its own timer

    def _adapt_refresh(self) -> None:
        """Keep the GUI thread's CPU share near its budget by stretching or shrinking the refresh."""
        wall0, cpu0 = self._cpu_mark
        wall, cpu = time.perf_counter(), time.thread_time()  # this (the GUI) thread's CPU time
        self._cpu_mark = (wall, cpu)
        if wall <= wall0:
            return
        share = (cpu - cpu0) / (wall - wall0)
        current = 2 * self.follow_timer.interval()
        target = current * (share / self._gui_budget) ** 0.7 if share > 0 else REFRESH_MIN_MS
        self._set_refresh(int(min(REFRESH_MAX_MS, max(REFRESH_MIN_MS, target))))

    def _on_train_end(self, end) -> None:
        self._apply_follow()
        if end.reason in ("finished", "stopped"):
            msg = end.message + (f"; checkpoint {end.checkpoint}" if end.checkpoint else "")
            self.statusBar().showMessage(msg, 10000)
            if end.checkpoint:
                self.resume_dir = Path(end.checkpoint).parent
        elif not self._closing:
            title = {"oom": "Out of memory", "nonfinite": "Training diverged"}.get(end.reason, "Training failed")
            self.error(title, end.message + (f"\n\nCheckpoint: {end.checkpoint}" if end.checkpoint else ""))

    # ---- checkpoints and samples ---------------------------------------------------------------
    def save_checkpoint_dialog(self) -> None:
        if self.last_trainer is None or getattr(self.last_trainer, "raw_model", None) is None:
            self.error("Nothing to save", "Train a model first (Train ▸ Start); then save its checkpoint.")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save checkpoint", str(Path.home() / "ckpt.pt"),
                                              "PyTorch checkpoint (*.pt)")
        if not path:
            return
        if self.trainer_ctl.is_running():
            self._pending_save = path
            self.trainer_ctl.request("checkpoint")
            self.statusBar().showMessage("Saving at the next step boundary…", 5000)
        else:
            self._run_task(lambda: self._save_copy(self.last_trainer.save_checkpoint(), path),
                           lambda p: self.statusBar().showMessage(f"Saved {p}", 8000), "Cannot save checkpoint")

    @staticmethod
    def _save_copy(src: str | None, dst: str) -> str:
        if not src:
            raise OSError("the run has no checkpoint to copy")
        tmp = f"{dst}.tmp-{os.getpid()}"
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dst

    def _on_checkpoint_saved(self, ev) -> None:
        if self._pending_save:
            dst, self._pending_save = self._pending_save, None
            self._run_task(lambda: self._save_copy(ev.path, dst),
                           lambda p: self.statusBar().showMessage(f"Saved {p} (step {ev.step})", 8000),
                           "Cannot save checkpoint")

    def load_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load checkpoint", str(Path.home()),
                                              "PyTorch checkpoint (*.pt);;All files (*)")
        if path:
            self.load_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        from nanogpt_viz.engine.checkpoint import load_checkpoint

        if self.trainer_ctl.is_running():
            self.error("Training in progress", "Stop the current run before loading a checkpoint.")
            return
        self._run_task(lambda: load_checkpoint(path), lambda ck: self._on_checkpoint_loaded(ck, path),
                       "Cannot load checkpoint")

    def _on_checkpoint_loaded(self, ckpt, path: str) -> None:
        extra = ckpt.extra or {}
        if "plan" in extra:
            pc = PlanConfig.from_dict(extra["plan"])
            self.plan_panel.set_config(pc)
            self.session.set_plan_config(pc)
        ma = ckpt.model_args
        tp = self.train_panel
        if extra.get("model_preset") in (tp.preset.itemText(i) for i in range(tp.preset.count())):
            tp.preset.setCurrentText(extra["model_preset"])
        tp.n_layer.setValue(ma["n_layer"])
        tp.n_head.setValue(ma["n_head"])
        tp.n_embd.setValue(ma["n_embd"])
        tp.steps.setValue(max(tp.steps.value(), ckpt.iter_num + 1))
        self.loaded_checkpoint = ckpt
        hist = extra.get("history")
        if hist is not None:
            self.loss_plot.clear_history()
            self.loss_plot.extend([(int(a), float(b), None if math.isnan(c) else float(c)) for a, b, c in hist.tolist()])
        resumable = Path(path).name == "ckpt.pt" and "plan" in extra
        self.resume_dir = Path(path).parent if resumable else None
        self.session.set_step(ckpt.iter_num)
        self.statusBar().showMessage(
            f"Loaded {path}: step {ckpt.iter_num}" + ("; Train ▸ Start resumes it" if resumable else ""), 10000)

    def open_nanogpt_run_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open nanoGPT run (its ckpt.pt)", str(Path.home()),
                                              "PyTorch checkpoint (*.pt);;All files (*)")
        if path:
            self.open_nanogpt_run(path)

    def open_nanogpt_run(self, path: str, resumed_at: int | None = None) -> None:
        """Replay the batches the nanoGPT run of `path` drew over the open corpus (its data folder)."""
        from nanogpt_viz.engine.checkpoint import load_checkpoint

        if self.trainer_ctl.is_running():
            self.error("Training in progress", "Stop the current run before opening a nanoGPT run.")
            return
        corpus = self.session.corpus
        if corpus is None or not corpus.has_split("val"):
            self.error("Open the run's data first", "A nanoGPT run is replayed over the data it trained on: open "
                       "its data folder (File ▸ Open data directory…, the one holding train.bin and val.bin), then "
                       "open the run.")
            return
        W = self.plan_panel.config().world_size

        def work():
            from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay, RunDraws, plan_settings

            ckpt = load_checkpoint(path)
            settings = plan_settings(ckpt, W)
            config = ckpt.config if isinstance(ckpt.config, dict) else {}
            if config.get("init_from") == "resume" and resumed_at is None:
                return ckpt, None, settings
            replay = NanoGPTReplay.from_checkpoint(ckpt, train_len=len(corpus.train), val_len=len(corpus.val),
                                                   world_size=W, resumed_at=resumed_at)
            return ckpt, RunDraws(replay), settings

        self._run_task(work, lambda res: self._on_nanogpt_run(path, *res), "Cannot replay this nanoGPT run")

    def _on_nanogpt_run(self, path: str, ckpt, draws, settings) -> None:
        if draws is None:  # resumed with init_from='resume': nanoGPT does not record where
            it, ok = QInputDialog.getInt(
                self, "Resumed run", "This run was resumed (init_from='resume'), and nanoGPT does not record the "
                "iteration it resumed at.\nIteration it resumed at:", 0, 0, 2 ** 31 - 1)
            if ok:
                self.open_nanogpt_run(path, resumed_at=it)
            return
        dataset = (ckpt.config or {}).get("dataset") if isinstance(ckpt.config, dict) else None
        corpus = self.session.corpus
        pc = self.plan_panel.config().with_(sampling="random", seed=None, split="train", **settings)
        self.plan_panel.set_config(pc)
        self.session.set_replay(draws, pc, path)
        self._on_checkpoint_loaded(ckpt, path)
        notes = list(draws.notes)
        if dataset and dataset not in (corpus.name, corpus.path.name):
            notes.insert(0, f"The run's config names the dataset {dataset!r}; the open corpus is {corpus.name}. "
                            f"The offsets are those the run drew, but the tokens shown are this corpus's.")
        self.replay_notes = notes
        self.statusBar().showMessage(f"Replaying the nanoGPT run {path}: N={pc.block_size}, B={pc.batch_size}, "
                                     f"K={pc.grad_accum} per rank, W={pc.world_size}", 15000)
        if notes:
            box = QMessageBox(QMessageBox.Icon.Information, "nanoGPT run replayed",
                              "The batches of every iteration are those this run's train.py drew.\n\n"
                              + "\n\n".join(notes), QMessageBox.StandardButton.Ok, self)
            box.setObjectName("replay_notes")
            box.open()
            self.replay_box = box

    def sample_dialog(self) -> None:
        prompt, ok = QInputDialog.getMultiLineText(self, "Sample text", "Prompt:", "\n")
        if not ok:
            return
        if self.trainer_ctl.is_running():
            self._pending_sample = prompt
            self.trainer_ctl.request("snapshot")
            return
        trainer = self.last_trainer
        if trainer is not None and getattr(trainer, "raw_model", None) is not None:
            state = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
            self._sample_from(trainer.model_config.to_dict(), state, prompt)
        elif getattr(self, "loaded_checkpoint", None) is not None:
            ck = self.loaded_checkpoint
            self._sample_from(ck.model_args, ck.model_state, prompt)
        else:
            self.error("No model yet", "Train a model or load a checkpoint first, then sample from it.")

    def _on_snapshot(self, snap) -> None:
        if self._pending_sample is not None:
            prompt, self._pending_sample = self._pending_sample, None
            self._sample_from(snap.model_args, snap.state, prompt)

    def _sample_from(self, model_args: dict, state: dict, prompt: str) -> None:
        def work() -> str:
            from nanogpt_viz.config import ModelConfig
            from nanogpt_viz.engine.model import GPT
            from nanogpt_viz.data.tokenizer import decode, encode
            from nanogpt_viz.engine.trainer import sample_text

            model = GPT(ModelConfig.from_dict(model_args))
            model.load_state_dict(state)
            return prompt + decode(sample_text(model, encode(prompt), 200, seed=int(time.time()) % 100000))

        self.statusBar().showMessage("Sampling…")
        self._run_task(work, self._show_sample, "Cannot sample")

    def _show_sample(self, text: str) -> None:
        self.statusBar().clearMessage()
        dlg = QDialog(self)
        dlg.setWindowTitle("Sample from the current model")
        lay = QVBoxLayout(dlg)
        view = QPlainTextEdit(text)
        view.setReadOnly(True)
        lay.addWidget(view)
        box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        box.rejected.connect(dlg.close)
        lay.addWidget(box)
        dlg.resize(700, 400)
        dlg.show()
        self.sample_window = dlg

    def _run_task(self, fn, on_done, error_title: str) -> None:
        task = FunctionRunner(fn, self)
        task.done.connect(on_done)
        task.failed.connect(lambda msg: self.error(error_title, msg))
        task._runner.finished.connect(lambda t=task: self.tasks.remove(t) if t in self.tasks else None)
        self.tasks.append(task)
        task.start()

    # ---- export ------------------------------------------------------------------------------
    def export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export loss history", str(Path.home() / "loss.csv"),
                                              "CSV (*.csv)")
        if path:
            try:
                self.loss_plot.to_csv(path)
                self.statusBar().showMessage(f"Wrote {path}", 5000)
            except OSError as exc:
                self.error("Cannot export", str(exc))

    def export_png(self, plot, name: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export plot", str(Path.home() / f"{name}.png"), "PNG (*.png)")
        if path:
            try:
                plot.export_png(path)
                self.statusBar().showMessage(f"Wrote {path}", 5000)
            except (OSError, RuntimeError) as exc:
                self.error("Cannot export", str(exc))

    # ---- dialogs -----------------------------------------------------------------------------
    def error(self, title: str, message: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setObjectName("error_dialog")
        box.open()  # window-modal, does not block the event loop
        self.last_error = (title, message)
        self.error_box = box

    def explain(self) -> None:
        QMessageBox.information(self, "What am I seeing?", (
            "<p>The corpus is one long stream of GPT-2 tokens t[0], t[1], …</p>"
            "<p>A step feeds the model a (B, N) tensor X: B rows of N consecutive tokens. Y is the same window "
            "shifted left by one token, so X[i, j] is asked to predict Y[i, j] = the next token. The B×N "
            "per-token cross-entropies are averaged into the loss of the step.</p>"
            "<p><b>Sequential</b> (build-nanogpt, llm.c): rows are back to back; with N=1024, B=4, step 0 reads "
            "t[0..4095] (targets to t[4096]) and step 1 starts at t[4096]. <b>Random</b> (nanoGPT's get_batch): "
            "B random offsets per step, overlapping, with gaps. <b>Shuffled</b> (llm.c): sequential blocks in a "
            "random step order. <b>Sliding</b>: rows every S tokens; S=1 with B>1 is a misconception.</p>"
            "<p>Gradient accumulation K runs K micro-batches before one update, and W DDP ranks each read their "
            "own rows: K×W×B×N tokens per step.</p>"))

    def about(self) -> None:
        from nanogpt_viz import __version__

        QMessageBox.about(self, "About nanogpt-viz", f"<b>nanogpt-viz {__version__}</b><p>See how GPT-2 training "
                          "cuts batches out of a corpus, then train the real model on exactly those batches.</p>")

    def ask_keep_run(self) -> QMessageBox.StandardButton:
        """Closing during a torchrun job: Discard stops it, Ignore keeps it running, Cancel stays."""
        box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                          "A multi-GPU run is in progress. Stop it (the checkpoint is saved), or keep it "
                          f"running and re-attach later with File ▸ Attach ({self.monitor.run_dir})?",
                          QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Ignore
                          | QMessageBox.StandardButton.Cancel, self)
        box.button(QMessageBox.StandardButton.Discard).setText("Stop the run")
        box.button(QMessageBox.StandardButton.Ignore).setText("Keep it running")
        box.setDefaultButton(QMessageBox.StandardButton.Discard)
        return QMessageBox.StandardButton(box.exec())

    # ---- closing -----------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        self._closing = True
        self.controls.set_playing(False)
        self.save_settings()
        if self.trainer_ctl.is_running():
            self.statusBar().showMessage("Stopping training and saving its checkpoint…")
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                self.trainer_ctl.shutdown()
            finally:
                QApplication.restoreOverrideCursor()
        if self.monitor is not None and self.monitor.active and self.monitor.process is not None:
            answer = self.ask_keep_run()
            if answer == QMessageBox.StandardButton.Cancel:
                self._closing = False
                event.ignore()
                return
            if answer == QMessageBox.StandardButton.Discard:  # stop it: every rank saves nothing half
                QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
                try:
                    self.monitor.shutdown()
                finally:
                    QApplication.restoreOverrideCursor()
            else:  # keep it running in its own process group; File ▸ Attach follows it again
                self.monitor.timer.stop()
        self.loader.cancel_and_wait()
        for task in list(self.tasks):
            task.wait()
        event.accept()


__all__ = ["MainWindow", "runs_root", "ORG", "APP"]
