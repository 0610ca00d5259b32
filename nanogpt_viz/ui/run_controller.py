"""One run's lifecycle for the window: trained here (a Trainer in a QThread) or under torchrun (a
process group followed through its run directory), or a finished run reopened from disk.

Whatever the path, the window sees the same records: `RunInfo` once, `StepReport`s in batches
(`reports`), `EvalReport`, and one `RunEnd` whose reason is an `EndReason`. Nothing here owns a
timer: the window's one refresh clock calls `pump()`, which drains the engine's queue (in-process)
or polls the run directory (torchrun, at most every `POLL_S`), and emits what it found, in order.

Past steps come from the run's history (`run/history.py`): `losses_at(step)` answers from the few
latest reports kept in memory, else from the memory-mapped history on disk.
"""
from __future__ import annotations

import gc
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, Signal

from nanogpt_viz.engine.trainer import RunEnd, RunInfo, StepReport
from nanogpt_viz.run.record import EndReason, metric_record
from nanogpt_viz.ui.worker import TrainController

__all__ = ["RunController", "StepLosses", "GcPause", "RECENT_REPORTS"]

RECENT_REPORTS = 64  # latest step reports kept in memory (the history on disk has every step)


@dataclass(frozen=True)
class StepLosses:
    """The per-token losses of one step, as the views draw them."""

    step: int
    per_token: np.ndarray | None  # (K, len(ranks), B, N) float32; None when the step's rows were thinned
    ranks: tuple[int, ...]
    position: np.ndarray | None  # (N,) mean loss by position
    note: str = ""  # e.g. why the rows are missing


class RunController(QObject):
    info = Signal(object)  # RunInfo
    reports = Signal(list)  # list[StepReport], in step order
    evaluated = Signal(object)  # EvalReport
    ended = Signal(object)  # RunEnd
    snapshot = Signal(object)  # ModelSnapshot (in-process only)
    checkpoint_saved = Signal(object)  # CheckpointSaved (in-process only)
    running_changed = Signal(bool)
    attached = Signal(object)  # the run directory now shown (None: detached)

    POLL_S = 0.2  # a run directory is read at most this often

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.worker = TrainController(self, report_interval_ms=None)  # drained by pump()
        self.worker.info.connect(self._forward(self.info))
        self.worker.report.connect(self._buffer)
        self.worker.evaluated.connect(self._forward(self.evaluated))
        self.worker.ended.connect(self._on_worker_end)
        self.worker.snapshot.connect(self._forward(self.snapshot))
        self.worker.checkpoint_saved.connect(self._forward(self.checkpoint_saved))
        self.worker.running_changed.connect(self._on_worker_running)
        self.kind: str | None = None  # "local", "torchrun", "reader" (attached or reopened), None
        self.run_dir: Path | None = None
        self.process: Any = None  # run.launch.RunProcess of a torchrun job
        self.trainer: Any = None
        self.reader: Any = None  # run.reader.RunReader once run.json exists
        self.last_report: StepReport | None = None
        self.end: RunEnd | None = None
        self._batch: list[StepReport] = []
        self._recent: OrderedDict[int, StepReport] = OrderedDict()
        self._history: Any = None
        self._live = False
        self._next_poll = 0.0
        self._info_sent = False
        self._log: Any = None  # run.record.RunLog of an in-process run
        self._init_eval: Any = None

    # ---- what is shown --------------------------------------------------------------------------
    @property
    def shown(self) -> bool:
        """Whether a run is attached to the window (live or finished)."""
        return self.kind is not None

    def is_running(self) -> bool:
        """A run in progress: the thread, the torchrun job, or a followed run directory not yet ended."""
        return self._live

    @property
    def manifest(self) -> Any:
        return None if self.reader is None else self.reader.manifest

    def last_step(self) -> int | None:
        return None if self.last_report is None else int(self.last_report.step)

    # ---- starting -------------------------------------------------------------------------------
    def _begin(self, kind: str, run_dir: Path | None) -> None:
        self.detach()
        self.kind, self.run_dir = kind, None if run_dir is None else Path(run_dir)
        self._live = kind != "reader"
        self.attached.emit(self.run_dir)

    def start_local(self, trainer: Any) -> None:
        """Train `trainer` (its out_dir is the run directory) in the background."""
        from nanogpt_viz.run.record import RunLog

        self._begin("local", trainer.out_dir)
        self.trainer = trainer
        self._log = RunLog(trainer.out_dir) if trainer.out_dir is not None else None
        self.worker.start(trainer)

    def start_torchrun(self, process: Any, run_dir: str | Path) -> None:
        """Follow the torchrun job `process` (run.launch.RunProcess) writing `run_dir`."""
        self._begin("torchrun", Path(run_dir))
        self.process = process
        self.running_changed.emit(True)

    def open(self, run_dir: str | Path, reader: Any = None) -> None:
        """Show the run of `run_dir`: its steps so far, and follow it when it has not ended."""
        from nanogpt_viz.run.reader import RunReader

        reader = reader or RunReader(run_dir)
        self._begin("reader", Path(run_dir))
        self.reader = reader
        self._read_dir(final=False)
        if self.end is None and str(self._status().get("state", "")) not in {e.value for e in EndReason}:
            self._live = True
            self.running_changed.emit(True)

    def detach(self) -> None:
        """Forget the shown run (a run in progress keeps running: stop it first)."""
        if self.kind is None:
            return
        self.kind = self.run_dir = self.process = self.trainer = self.reader = None
        self.last_report = self.end = None
        self._batch.clear()
        self._recent.clear()
        self._history = None
        self._info_sent = False
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._live:
            self._live = False
            self.running_changed.emit(False)
        self.attached.emit(None)

    # ---- control ----------------------------------------------------------------------------------
    def stop(self) -> None:
        if self.kind == "local":
            self.worker.stop()
        elif self.process is not None:
            self.process.request_stop()
        elif self.run_dir is not None and self._live:
            from nanogpt_viz.run.record import STOP_REQUEST

            (self.run_dir / STOP_REQUEST).touch()

    def pause(self) -> None:
        self.worker.pause()

    def resume(self) -> None:
        self.worker.resume()

    def request(self, what: str) -> None:
        self.worker.request(what)

    def shutdown(self, grace: float = 30.0) -> None:
        """Stop and join: the thread (in-process) or the whole process group (torchrun)."""
        if self.kind == "local":
            self.worker.shutdown()
            # the thread's queued "finished" (and the engine's last events) now, not after the window is gone
            QCoreApplication.sendPostedEvents(self.worker, QEvent.Type.MetaCall)
            QCoreApplication.sendPostedEvents(self, QEvent.Type.MetaCall)
            self.pump()
        elif self.process is not None and self.process.poll() is None:
            self.process.stop(grace)
            self.pump(force=True)

    def leave_running(self) -> None:
        """The window closes and the torchrun job goes on (File ▸ Attach follows it again)."""
        self._live = False

    def close_for_exit(self, window) -> bool:
        """The window closes: a run trained here stops at a step boundary and saves its checkpoint; a
        torchrun job is stopped (every rank saves nothing half) or left running in its own process group,
        as the user answers. False: the user cancelled, keep the window."""
        from PySide6.QtWidgets import QApplication, QMessageBox

        from nanogpt_viz.ui import dialogs

        def stop_waiting() -> None:
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            try:
                self.shutdown()
            finally:
                QApplication.restoreOverrideCursor()

        if self.kind == "local" and self.is_running():
            window.statusBar().showMessage("Stopping training and saving its checkpoint…")
            stop_waiting()
        if self.kind == "torchrun" and self.process is not None and self.process.poll() is None:
            answer = dialogs.ask_keep_run(window, self.run_dir)
            if answer == QMessageBox.StandardButton.Cancel:
                return False
            if answer == QMessageBox.StandardButton.Discard:
                stop_waiting()
            else:  # File ▸ Attach follows it again
                self.leave_running()
        return True

    # ---- the refresh clock's pump -----------------------------------------------------------------
    def pump(self, force: bool = False) -> None:
        """Deliver what the run produced since the last call (GUI thread, called by the refresh clock)."""
        if self.kind == "local":
            self.worker.drain()
            self._flush()
        elif self.kind in ("torchrun", "reader") and self._live:
            now = time.monotonic()
            if force or now >= self._next_poll:
                self._next_poll = now + self.POLL_S
                self._read_dir(final=False)

    def _forward(self, signal):
        def emit(ev: Any) -> None:
            self._flush()  # the steps before it first: the order is the engine's
            self._log_event(ev)
            signal.emit(ev)

        return emit

    # ---- the in-process run's metrics.jsonl / status.json (the CLI writes the same lines) ------------
    def _log_event(self, ev: Any) -> None:
        from nanogpt_viz.engine.trainer import EvalReport

        log = self._log
        if log is None:
            return
        if isinstance(ev, RunInfo):
            log.status("running", step=ev.start_step, total_steps=ev.total_steps, device=ev.device_name,
                       world_size=ev.world_size, n_params=ev.n_params)
        elif isinstance(ev, EvalReport):
            self._init_eval = ev  # rides on the next step's line, as in the CLI
        elif isinstance(ev, RunEnd):
            log.status(str(ev.reason), step=ev.step, total_steps=getattr(self.trainer.train_config, "steps", 0),
                       message=ev.message, checkpoint=ev.checkpoint)
            log.close()
            self._log = None

    def _log_steps(self, batch: list[StepReport]) -> None:
        log = self._log
        if log is None:
            return
        for ev in batch:
            log.metric(metric_record(ev, self._init_eval))
            self._init_eval = None

    def _buffer(self, rep: StepReport) -> None:
        self._batch.append(rep)

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self.kind == "local":
            self._log_steps(batch)
        for rep in batch:
            self._remember(rep)
        self.reports.emit(batch)

    def _remember(self, rep: StepReport) -> None:
        self.last_report = rep
        if rep.per_token is not None or rep.position_loss is not None:
            self._recent[int(rep.step)] = rep
            self._recent.move_to_end(int(rep.step))
            while len(self._recent) > RECENT_REPORTS:
                self._recent.popitem(last=False)

    def _on_worker_end(self, end: RunEnd) -> None:
        self._flush()
        self._log_event(end)
        self.end = end
        self.ended.emit(end)

    def _on_worker_running(self, running: bool) -> None:
        if self.kind != "local":
            return
        self._flush()
        self._live = running
        self.running_changed.emit(running)

    def _status(self) -> dict:
        try:
            return dict(self.reader.status() or {}) if self.reader is not None else {}
        except (OSError, ValueError):
            return {}

    def _read_dir(self, final: bool) -> None:
        """Poll the run directory: new steps, then the end (or the job's exit without one)."""
        from nanogpt_viz.run.record import RunError

        if self.reader is None:
            from nanogpt_viz.run.reader import RunReader

            try:
                self.reader = RunReader(self.run_dir)  # run.json appears once the ranks have started
            except (RunError, OSError, ValueError):
                self.reader = None
        if self.reader is not None:
            if not self._info_sent:
                self._info_sent = True
                info = self._info_from_manifest()
                if info is not None:
                    self.info.emit(info)
            reports = self.reader.poll()
            if reports:
                self._batch.extend(reports)
                self._flush()
            if self._history is not None:
                self._history.refresh()
            end = self.reader.end()
        else:
            end = None
        code = self.process.poll() if self.process is not None else None
        if end is None and code is not None:
            if self.reader is not None:  # the job ended: read what it wrote last
                self._batch.extend(self.reader.poll())
                self._flush()
                end = self.reader.end()
            if end is None:
                reason = EndReason.ERROR if code else EndReason.STOPPED
                msg = f"the training processes exited with status {code}"
                if code:
                    msg += f":\n{self.process.tail_log()}"
                end = RunEnd(reason, msg, (self.last_step() or -1) + 1)
        if end is not None and (self.process is None or code is not None or not self._live):
            self.end = end
            if self._live:
                self._live = False
                self.ended.emit(end)
                self.running_changed.emit(False)

    def _info_from_manifest(self) -> RunInfo | None:
        m = self.reader.manifest
        try:
            train, plan = dict(m.train or {}), dict(m.plan or {})
            parent = m.parent or {}
            tokens = (int(plan.get("block_size", 0)) * int(plan.get("batch_size", 0))
                      * int(plan.get("grad_accum", 1)) * int(plan.get("world_size", 1)))
            return RunInfo(str(train.get("device", "")), str(train.get("device", "")), str(train.get("dtype", "")),
                           bool(train.get("compile") or False), 0, int(parent.get("step", 0) or 0),
                           int(train.get("steps", 0) or 0), tokens, int(m.world_size or 1), str(self.run_dir),
                           residual_dtype=str(train.get("residual_dtype", "float32")))
        except (TypeError, ValueError, AttributeError):
            return None

    # ---- past steps -------------------------------------------------------------------------------
    def history(self) -> Any:
        """The run's HistoryReader (None when the run has none yet)."""
        if self._history is None and self.run_dir is not None:
            from nanogpt_viz.run.history import HistoryReader

            try:
                self._history = HistoryReader(self.run_dir)
            except (OSError, ValueError, KeyError):
                return None
        if self._history is not None and self.kind == "local":
            self._history.refresh()  # the trainer appends as it goes
        return self._history

    def losses_at(self, step: int) -> StepLosses | None:
        """The exact per-token losses of `step` of this run, None when the run has not trained it."""
        step = int(step)
        rep = self._recent.get(step)
        if rep is not None:
            return StepLosses(step, rep.per_token, tuple(rep.ranks), rep.position_loss)
        last = self.last_step()
        if last is None or step > last or step < 0:
            return None
        hist = self.history()
        if hist is None:
            return None
        if not hist.has_rows(step):
            if self._history.last_step is not None and step > self._history.last_step:
                return None
            pos = hist.position_mean(step)
            if pos is None:
                return None
            note = (f"Step {step:,}: its per-token rows were thinned to keep the history within its budget; "
                    "the mean by position is kept for every step.")
            return StepLosses(step, None, (), np.asarray(pos, np.float32), hist.note or note)
        pt = hist.per_token(step)
        if pt is None:
            return None
        pt = np.asarray(pt, np.float32)
        pos = hist.position_mean(step)
        return StepLosses(step, pt, tuple(range(pt.shape[1])),
                          None if pos is None else np.asarray(pos, np.float32))

    def position_map(self, max_rows: int = 2048) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps, (n, N) mean loss by position) over the run, read from the history."""
        hist = self.history()
        last = self.last_step()
        if hist is None or last is None:
            return None
        steps, rows = hist.position_map(0, last + 1, max_rows=max_rows)
        return np.asarray(steps), np.asarray(rows, np.float32)


class GcPause(QObject):
    """The window's own ~200k long-lived objects (widgets, plot items) would be traversed by every full
    garbage collection during a run: about 60 ms holding the GIL, which stalls the trainer and the window
    alike. While a run is live they are parked outside the collector (gc.freeze), and once more after its
    first reports (what the engine's first step imported, torch internals, is long-lived too)."""

    def __init__(self, run: RunController):
        super().__init__(run)
        self.run = run
        self._frozen_first = True
        run.running_changed.connect(self._on_running)
        run.reports.connect(self._on_reports)

    def _on_running(self, running: bool) -> None:
        if running:
            self._frozen_first = False
            gc.freeze()
        else:
            gc.unfreeze()

    def _on_reports(self, _reports: list) -> None:
        if not self._frozen_first and self.run.is_running():
            self._frozen_first = True
            gc.freeze()
