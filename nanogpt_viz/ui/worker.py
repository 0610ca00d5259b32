"""Background work for the window: tokenizing a corpus and training, each in its own QThread.

Pattern (after superqt's thread worker): a plain generator is driven by a QObject living in a
QThread, and each item it yields becomes a queued signal to the GUI thread. Stop and pause are
thread-safe flags set directly from the GUI thread (a queued slot would never run while the worker
is busy in its loop). Finishing quits the thread; the controller waits for it before forgetting it,
so no "QThread: Destroyed while thread is still running".
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, QThread, QTimer, Signal, Slot

from nanogpt_viz.engine.trainer import (CheckpointSaved, EvalReport, ModelSnapshot, RunEnd, RunInfo, StepReport,
                                 TrainControl, Trainer)


class _GeneratorWorker(QObject):
    item = Signal(object)
    done = Signal()

    def __init__(self, make_items: Callable[[], Any]):
        super().__init__()
        self._make_items = make_items

    @Slot()
    def run(self) -> None:
        try:
            for obj in self._make_items():
                self.item.emit(obj)
        finally:
            self.done.emit()


class _Runner(QObject):
    """Owns one QThread running one generator; `stop()` + `wait()` always leave no thread behind."""

    def __init__(self, make_items: Callable[[], Any], on_item: Callable[[Any], None], name: str,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.thread = QThread()
        self.thread.setObjectName(name)
        self.worker = _GeneratorWorker(make_items)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        self.worker.item.connect(on_item)  # queued: delivered in the GUI thread
        # Direct: quit() is thread-safe, and a queued quit would wait for the GUI thread's event loop,
        # which is blocked in wait() when the window closes (a deadlock until the wait times out).
        self.worker.done.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)
        self.finished = self.thread.finished

    def start(self) -> None:
        self.thread.start()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def wait(self, ms: int = 30_000) -> bool:
        return self.thread.wait(ms)


class TrainController(QObject):
    """Runs a Trainer in a background thread and re-emits its events as signals, in order.

    Step reports are not signalled one by one: the engine's thread appends them to a queue and the
    GUI thread drains it every `report_interval_ms`, or whenever its owner calls `drain()` (None: the
    window's one refresh clock does), and at once when any other event arrives.
    A small model on a CPU can make a hundred steps a second; waking the GUI thread for each
    would take the cores the model trains on, and the window only redraws at its refresh rate.
    """

    info = Signal(object)  # RunInfo
    report = Signal(object)  # StepReport
    snapshot = Signal(object)  # ModelSnapshot
    checkpoint_saved = Signal(object)  # CheckpointSaved
    evaluated = Signal(object)  # EvalReport: the evaluation before the first step
    ended = Signal(object)  # RunEnd
    running_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None, report_interval_ms: int | None = 100):
        super().__init__(parent)
        self._interval = report_interval_ms  # None: the owner drains (the window's refresh clock)
        self._runner: _Runner | None = None
        self.trainer: Trainer | None = None
        self.control: TrainControl | None = None
        self._queue: deque = deque()  # appended by the engine's thread, drained by the GUI thread
        self._drain_timer = QTimer(self)
        self._drain_timer.setInterval(max(1, report_interval_ms or 1))
        self._drain_timer.timeout.connect(self.drain)

    def is_running(self) -> bool:
        return self._runner is not None and self._runner.is_running()

    def start(self, trainer: Trainer) -> None:
        if self.is_running():
            raise RuntimeError("a training run is already in progress")
        self.trainer = trainer
        self.control = trainer.control
        self._queue.clear()
        queue = self._queue

        def events():
            for ev in trainer.run():
                queue.append(ev)
                if not isinstance(ev, StepReport):
                    yield None  # anything but a step report is delivered right away

        # a bound method of this (GUI-thread) object, so the wake-up is queued to the GUI thread
        self._runner = _Runner(events, self._on_wake, "nanogpt-viz-train", self)
        self._runner.finished.connect(self._on_thread_finished)
        self._runner.start()
        if self._interval is not None:
            self._drain_timer.start()
        self.running_changed.emit(True)

    def _on_wake(self, _none: Any) -> None:
        self.drain()

    def drain(self) -> None:
        """Deliver every queued event (GUI thread)."""
        while self._queue:
            self._dispatch(self._queue.popleft())

    def _dispatch(self, ev: Any) -> None:
        if isinstance(ev, StepReport):
            self.report.emit(ev)
        elif isinstance(ev, RunInfo):
            self.info.emit(ev)
        elif isinstance(ev, ModelSnapshot):
            self.snapshot.emit(ev)
        elif isinstance(ev, CheckpointSaved):
            self.checkpoint_saved.emit(ev)
        elif isinstance(ev, RunEnd):
            self.ended.emit(ev)
        elif isinstance(ev, EvalReport):
            self.evaluated.emit(ev)

    def _on_thread_finished(self) -> None:
        self._drain_timer.stop()
        self.drain()
        self.running_changed.emit(False)

    def pause(self) -> None:
        if self.control:
            self.control.pause()

    def resume(self) -> None:
        if self.control:
            self.control.resume()

    def request(self, what: str) -> None:
        if self.control and self.is_running():
            self.control.request(what)

    def stop(self) -> None:
        if self.control:
            self.control.stop()

    def shutdown(self, ms: int = 60_000) -> bool:
        """Stop and join the thread (used when the window closes)."""
        self.stop()
        if self._runner is not None:
            return self._runner.wait(ms)
        return True


class CorpusLoader(QObject):
    """Opens (and if needed tokenizes) a corpus in a background thread, with progress and cancel."""

    progress = Signal(int, int)
    loaded = Signal(object, str)  # TokenCorpus, path
    failed = Signal(str, str)  # message, path
    cancelled = Signal(str)
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._runner: _Runner | None = None
        self._cancel = threading.Event()
        self._path = ""

    def is_busy(self) -> bool:
        return self._runner is not None and self._runner.is_running()

    def load(self, path: str | None, val_fraction: float = 0.1) -> None:
        """Open `path` (None: the built-in corpus). A load in progress is cancelled first."""
        self.cancel_and_wait()
        self._cancel = threading.Event()
        cancel = self._cancel
        self._path = path or ""

        def items():
            from nanogpt_viz.data.corpus import Cancelled, CorpusError, default_corpus, open_corpus
            from nanogpt_viz.data.tokenizer import TokenizerError

            try:
                if path is None:
                    corpus = default_corpus(progress=self._emit_progress)
                else:
                    corpus = open_corpus(path, val_fraction=val_fraction, progress=self._emit_progress,
                                         cancel=cancel.is_set)
                yield ("loaded", corpus)
            except Cancelled:
                yield ("cancelled", None)
            except (CorpusError, TokenizerError, OSError, ValueError) as exc:
                yield ("failed", str(exc))
            except MemoryError:
                yield ("failed", "out of memory while opening the corpus")

        self._runner = _Runner(items, self._dispatch, "nanogpt-viz-corpus", self)
        self._runner.finished.connect(lambda: self.busy_changed.emit(False))
        self._runner.start()
        self.busy_changed.emit(True)

    def _emit_progress(self, done: int, total: int) -> None:
        self.progress.emit(int(done), int(total))  # queued across threads

    def _dispatch(self, item: Any) -> None:
        kind, value = item
        if kind == "loaded":
            self.loaded.emit(value, self._path)
        elif kind == "failed":
            self.failed.emit(value, self._path)
        elif kind == "cancelled":
            self.cancelled.emit(self._path)

    def cancel(self) -> None:
        self._cancel.set()

    def cancel_and_wait(self, ms: int = 30_000) -> None:
        self._cancel.set()
        if self._runner is not None:
            self._runner.wait(ms)


class FunctionRunner(QObject):
    """Runs one function in a background thread; emits `done(result)` or `failed(message)`."""

    done = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[], Any], parent: QObject | None = None):
        super().__init__(parent)

        def items():
            try:
                yield ("done", fn())
            except Exception as exc:  # reported as a dialog by the caller
                yield ("failed", f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))

        self._runner = _Runner(items, self._dispatch, "nanogpt-viz-task", self)
        self.finished = self._runner.finished  # the thread has ended (after done/failed)

    def _dispatch(self, item: Any) -> None:
        kind, value = item
        (self.done if kind == "done" else self.failed).emit(value)

    def start(self) -> None:
        self._runner.start()

    def is_running(self) -> bool:
        return self._runner.is_running()

    def wait(self, ms: int = 30_000) -> bool:
        return self._runner.wait(ms)
