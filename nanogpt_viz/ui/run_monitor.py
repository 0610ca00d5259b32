"""Watch a run directory written by `nanogpt-viz train` (torchrun or a detached run).

Polls metrics.jsonl (append-only) and status.json on a QTimer in the GUI thread: reading a few
new lines every 200 ms costs microseconds, so no thread is needed. Works for a run the window
launched (multi-GPU) and for one it re-attaches to after a restart.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from nanogpt_viz.run.record import STOP_REQUEST
from nanogpt_viz.run.launch import RunProcess
from nanogpt_viz.run.record import read_metrics, read_status

FINAL_STATES = ("finished", "stopped", "nonfinite", "oom", "error")


class RunMonitor(QObject):
    records = Signal(list)  # new metrics.jsonl records (dicts)
    status_changed = Signal(dict)
    ended = Signal(dict)  # final status (or a synthesised one when the process died without one)

    def __init__(self, run_dir: str | Path, process: RunProcess | None = None, parent: QObject | None = None,
                 interval_ms: int = 200):
        super().__init__(parent)
        self.run_dir = Path(run_dir)
        self.process = process
        self._offset = 0
        self._last_status: dict[str, Any] | None = None
        self._done = False
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.poll)

    def start(self) -> None:
        self.timer.start()
        self.poll()

    @property
    def active(self) -> bool:
        return not self._done

    def poll(self) -> None:
        if self._done:
            return
        recs, self._offset = read_metrics(self.run_dir / "metrics.jsonl", self._offset)
        if recs:
            self.records.emit(recs)
        status = read_status(self.run_dir)
        if status and status != self._last_status:
            self._last_status = status
            self.status_changed.emit(status)
        exited = self.process is not None and self.process.poll() is not None
        final = status is not None and status.get("state") in FINAL_STATES
        if final and (self.process is None or exited):
            self._finish(status)
        elif exited:
            code = self.process.poll()
            self._finish({"state": "error" if code else "stopped",
                          "message": f"the training processes exited with status {code}"
                                     + (f":\n{self.process.tail_log()}" if code else "")})

    def _finish(self, status: dict) -> None:
        recs, self._offset = read_metrics(self.run_dir / "metrics.jsonl", self._offset)
        if recs:
            self.records.emit(recs)
        self._done = True
        self.timer.stop()
        self.ended.emit(status)

    def stop(self) -> None:
        """Ask the job to stop (clean: every rank finishes its step, rank 0 writes the checkpoint)."""
        if self.process is not None:
            self.process.request_stop()
        else:
            (self.run_dir / STOP_REQUEST).touch()

    def shutdown(self, grace: float = 30.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stop(grace)
        self.timer.stop()
