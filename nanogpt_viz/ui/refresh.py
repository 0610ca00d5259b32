"""The window's one refresh clock: a single governor tick that drains coalesced run reports and
repaints every view at a bounded rate.

The timer runs at a fixed `TICK_MS` (30 Hz at most) and is never re-armed while it runs: in Qt,
`setInterval` on an active timer restarts it, so a timer re-armed more often than its own period
never fires (issue 14, item 13: the progress froze while the mouse moved). What adapts is the paint
period: each tick pumps the sources (cheap: a queue drained, a file polled now and then) and paints
only when something changed and the period since the last paint has passed. The period follows the
GUI thread's CPU share, so on a 2-core machine the window takes a small, bounded share from the
model it trains.

Painters take turns: a due paint runs one painter (the next with something to draw), and the paints
come `period / painters` apart, so each painter still draws once per period while no single
event-loop turn runs them all (issue 11: the followed step's views and the curves used to share one
turn, and the event latency's p99 while training went from 12.4 to 46.8 ms). `flush` runs them all.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from PySide6.QtCore import QObject, QTimer

__all__ = ["RefreshClock", "TICK_MS", "PERIOD_MIN_MS", "PERIOD_MAX_MS"]

TICK_MS = 33  # the clock: 30 Hz at most
PERIOD_MIN_MS, PERIOD_MAX_MS = 100, 3000  # the paint period while training adapts within these


class RefreshClock(QObject):
    def __init__(self, parent: QObject | None = None, budget: float = 0.03):
        super().__init__(parent)
        self.timer = QTimer(self)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self.tick)
        self.budget = budget  # target share of one core for the GUI thread while a run is live
        self.period_ms = PERIOD_MIN_MS
        self._pumps: list[Callable[[], None]] = []
        self._painters: list[Callable[[], None]] = []
        self._dirty: list[bool] = []  # per painter: something changed since it last drew
        self._turn = 0  # the painter whose turn it is
        self._next_paint = 0.0
        self._mark = (time.perf_counter(), time.thread_time())
        self.ticks = 0
        self.paints = 0
        # (painter, ms, perf_counter at its start) of the latest paints (benchmarks/gui.py reads them)
        self.paint_ms: deque[tuple[int, float, float]] = deque(maxlen=4096)

    def add_pump(self, fn: Callable[[], None]) -> None:
        """Called every tick: deliver what arrived (cheap)."""
        self._pumps.append(fn)

    def add_painter(self, fn: Callable[[], None]) -> None:
        """Called when its turn comes, a paint is due and something changed."""
        self._painters.append(fn)
        self._dirty.append(False)

    def request(self) -> None:
        """Something changed: every painter draws, in turn, from the next due tick."""
        self._dirty = [True] * len(self._painters)

    @property
    def pending(self) -> bool:
        """Whether a painter has something to draw."""
        return any(self._dirty)

    def start(self, budget: float | None = None, period_ms: int = PERIOD_MIN_MS) -> None:
        if budget is not None:
            self.budget = budget
        self.period_ms = int(period_ms)
        self._mark = (time.perf_counter(), time.thread_time())
        self._next_paint = 0.0
        if not self.timer.isActive():
            self.timer.start()

    def stop(self) -> None:
        """Stop ticking after painting what is pending."""
        self.timer.stop()
        self.flush()

    def flush(self) -> None:
        """Pump and paint now, whatever the period."""
        for pump in self._pumps:
            pump()
        self._paint()

    def tick(self) -> None:
        self.ticks += 1
        for pump in self._pumps:
            pump()
        now = time.perf_counter()
        if now >= self._next_paint and self._paint_next():
            self._next_paint = now + self.period_ms / 1000.0 / max(1, len(self._painters))
        self._adapt(now)

    def _paint_next(self) -> bool:
        """Run the next painter with something to draw (one per tick); False when none has."""
        n = len(self._painters)
        for k in range(n):
            i = (self._turn + k) % n
            if self._dirty[i]:
                self._dirty[i] = False
                self._turn = (i + 1) % n
                self.paints += 1
                t0 = time.perf_counter()
                self._painters[i]()
                self.paint_ms.append((i, (time.perf_counter() - t0) * 1e3, t0))
                return True
        return False

    def _paint(self) -> None:
        """Every painter with something to draw, now (each once)."""
        for _ in range(len(self._painters)):
            if not self._paint_next():
                break

    def _adapt(self, now: float) -> None:
        """Once a second: stretch or shrink the paint period so the GUI thread stays near its budget."""
        wall0, cpu0 = self._mark
        if now - wall0 < 1.0:
            return
        cpu = time.thread_time()  # this (the GUI) thread's CPU time
        self._mark = (now, cpu)
        share = (cpu - cpu0) / (now - wall0)
        target = self.period_ms * (share / self.budget) ** 0.7 if share > 0 else PERIOD_MIN_MS
        self.period_ms = int(min(PERIOD_MAX_MS, max(PERIOD_MIN_MS, target)))
