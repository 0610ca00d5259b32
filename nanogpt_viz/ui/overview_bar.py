"""The overview strip above the token stream: the whole corpus at a glance, one bin per pixel column
coloured by the step that reads it, the current step marked in red, a box over what the stream shows,
a tick per shard boundary and a purple marker where DataLoaderLite's ranks first read different shards.
Click or drag to jump. The image's data is computed in `viewmodel_stream` (pure); this module paints it.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen, QPolygon
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from nanogpt_viz.ui import palette
from nanogpt_viz.viewmodel import ShardMarks, StreamModel
from nanogpt_viz.viewmodel_stream import (overview_drift_x, overview_position_at_x, overview_rgba,
                                          overview_tick_xs, overview_view_xs)

__all__ = ["OverviewBar", "BOUNDARY", "DRIFT"]

BOUNDARY = QColor("#263238")  # a shard boundary (here a tick, in the stream a line and a name tag)
DRIFT = QColor("#8e24aa")  # the ranks out of step (here a marker, above the stream a banner)


def _rgb(c: QColor) -> tuple[int, int, int]:
    return c.red(), c.green(), c.blue()


class OverviewBar(QWidget):
    """The whole corpus at a glance: one bin per pixel column, the current step and the view."""

    jump_requested = Signal("qlonglong")
    MARK = 4  # rows of the current-step marker above and below
    TICK_GAP = 3  # px: boundary ticks closer than this are thinned out (hundreds of shards)
    HELP = ("The whole corpus: colour = step that reads it, red marks = current step, box = what the "
            "stream shows, dark ticks = shard boundaries, purple triangle = ranks out of step. "
            "Click or drag to jump.")

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._model: StreamModel | None = None
        self._marks: ShardMarks | None = None
        self._ticks = np.zeros(0, np.int64)
        self._model_gen = 0
        self._step = 0
        self._range: tuple[int, int] | None = None
        self._img: QImage | None = None
        self._img_buf: np.ndarray | None = None
        self._img_key: tuple | None = None
        self.setFixedHeight(28)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setCursor(Qt.PointingHandCursor)
        self.setToolTip(self.HELP)

    def set_model(self, model: StreamModel | None) -> None:
        self._model = model
        self._marks = ShardMarks(model.plan) if model is not None else None
        self._model_gen += 1
        self._img_key = None
        self.update()

    def set_step(self, step: int) -> None:
        self._step = max(0, int(step))
        self.update()

    def set_visible_range(self, lo: int, hi: int) -> None:
        self._range = (int(lo), int(hi))
        self.update()

    def position_at_x(self, x: float) -> int:
        if self._model is None:
            return -1
        return overview_position_at_x(x, self.width(), self._model.L)  # the middle of the pixel's bin

    def _image(self) -> QImage | None:
        w, h = self.width(), self.height()
        if self._model is None or w <= 0:
            return None
        key = (self._step, w, h, self._model_gen)
        if key == self._img_key and self._img is not None:
            return self._img
        steps, cur = self._model.overview(self._step, bins=w)
        steps = np.asarray(steps)[:w]
        cur = np.asarray(cur, bool)[:w]
        mk = min(self.MARK, h // 4)
        # shard boundaries: a 1 px tick each; when they crowd, thinned to one per TICK_GAP px and
        # shortened to the lower half, so hundreds of shards read as a comb rather than a dark bar
        xs = self.boundary_xs(w)
        self._ticks = xs
        self._img_buf = overview_rgba(steps, cur, h, palette.step_rgb_table(), _rgb(palette.UNUSED),
                                      _rgb(palette.BACKGROUND), mk, xs, _rgb(BOUNDARY),
                                      crowded=len(xs) > w // (2 * self.TICK_GAP))
        self._img = QImage(self._img_buf.data, w, h, w * 4, QImage.Format_RGBA8888)
        self._img_key = key
        return self._img

    def boundary_xs(self, w: int | None = None) -> np.ndarray:
        """Pixel columns of the shard-boundary ticks (thinned to one per TICK_GAP px when crowded)."""
        if self._model is None or self._marks is None or self._model.plan.n_shards <= 1:
            return np.zeros(0, np.int64)
        w = self.width() if w is None else w
        return overview_tick_xs(self._marks.starts, self._model.L, w, self.TICK_GAP)

    def drift_x(self) -> int | None:
        """Pixel column of the drift marker (where DataLoaderLite's ranks first read different
        shards), None when they never do."""
        if self._marks is None or self._model is None or self._model.L <= 0:
            return None
        d = self._marks.drift()
        if d is None:
            return None
        return overview_drift_x(d[1], self._model.L, self.width())

    def describe_x(self, x: int) -> str:
        """Tooltip text at a pixel column: the shard there and, near its marker, the drift."""
        if self._model is None:
            return self.HELP
        pos = self.position_at_x(x)
        plan = self._model.plan
        lines = []
        if plan.n_shards > 1:
            s = min(int(plan.shard_of([pos])[0]), plan.n_shards - 1)
            lines.append(f"{plan.shard_names[s]} (shard {s + 1}/{plan.n_shards}), position {pos:,}")
        dx = self.drift_x()
        if dx is not None and abs(x - dx) <= 4:
            step, _, note = self._marks.drift()
            lines.append(f"ranks out of step from step {step:,}: {note}")
        lines.append(self.HELP)
        return "\n".join(lines)

    def event(self, event) -> bool:  # noqa: D401 - Qt override
        if event.type() == QEvent.ToolTip and self._model is not None:
            QToolTip.showText(event.globalPos(), self.describe_x(event.pos().x()), self)
            return True
        return super().event(event)

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), palette.BACKGROUND)
        img = self._image()
        if img is not None:
            p.drawImage(0, 0, img)
            if self._range is not None and self._model is not None and self._model.L > 0:
                x0, x1 = overview_view_xs(*self._range, self._model.L, self.width())
                r = QRect(x0, 0, x1 - x0, self.height() - 1)
                p.fillRect(r, QColor(0, 0, 0, 55))
                p.setPen(QPen(QColor(0, 0, 0, 200), 1))
                p.drawRect(r)
            dx = self.drift_x()
            if dx is not None:  # a purple triangle over the top marker row and a dotted line
                p.setPen(QPen(DRIFT, 1, Qt.DotLine))
                p.drawLine(dx, 0, dx, self.height() - 1)
                p.setPen(Qt.NoPen)
                p.setBrush(DRIFT)
                p.drawPolygon(QPolygon([QPoint(dx - 5, 0), QPoint(dx + 5, 0), QPoint(dx, 7)]))
                p.setBrush(Qt.NoBrush)
        else:
            p.setPen(palette.UNUSED_TEXT)
            p.drawText(self.rect(), Qt.AlignCenter, "no corpus")
        p.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton and self._model is not None:
            self.jump_requested.emit(self.position_at_x(event.position().x()))

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if event.buttons() & Qt.LeftButton and self._model is not None:
            self.jump_requested.emit(self.position_at_x(event.position().x()))
