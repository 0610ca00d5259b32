"""Training plots (pyqtgraph): loss vs step, per-token loss heatmap, loss vs position in block, and
the step x position map.

Every plot item is created once and then fed with `setData` / `setImage`; nothing is cleared and
re-plotted per step. No plot owns a timer: `LossPlot.add` only appends to a bounded numpy ring, and
the window's one refresh clock (ui/refresh.py) redraws at a bounded rate.
"""
from __future__ import annotations

import math
import os
import threading
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QSlider, QStackedLayout, QVBoxLayout, QWidget

from nanogpt_viz.atomic import atomic_path, atomic_write_text
from nanogpt_viz.ui import palette

__all__ = ["RingSeries", "LossPlot", "LossPoint", "TokenLossHeatmap", "PositionLossPlot", "PlotCoalescer",
           "StepPositionMap", "loss_colormap", "select_rows"]


# Thin cosmetic pens: a 1 px line draws several times faster than a 1.5-2 px one in Qt's raster
# engine, and the plots repaint while training shares the CPU with them.
_TRAIN_PEN = pg.mkPen(palette.RANK_COLORS[0], width=1)
_VAL_PEN = pg.mkPen(palette.RANK_COLORS[1], width=1)
_VAL_BRUSH = pg.mkBrush(palette.RANK_COLORS[1])
_POS_PEN = pg.mkPen(palette.RANK_COLORS[2], width=1)
_EMA_PEN = pg.mkPen(palette.RANK_COLORS[4], width=1)


# ----------------------------------------------------------------------------------------------
# Bounded history


class RingSeries:
    """A bounded (x, y) history in preallocated float64 arrays.

    When the buffer is full it is decimated by two (every other point kept), and from then on only
    every `stride`-th incoming point is kept, so the whole run stays visible at uniform density with
    memory fixed at `capacity` points. The most recent point is always present: an incoming point
    that is off the stride grid is kept as a provisional tail and replaced by the next one.
    Points must arrive with non-decreasing x; `add` with a smaller x first drops every point at or
    after it (a run resumed from an earlier checkpoint).
    """

    def __init__(self, capacity: int = 20_000):
        capacity = max(4, int(capacity))
        self.capacity = capacity - (capacity % 2)
        self._x = np.empty(self.capacity, np.float64)
        self._y = np.empty(self.capacity, np.float64)
        self._n = 0
        self._stride = 1
        self._count = 0  # ordinal of the next incoming point (grid: multiples of stride)
        self._tail_extra = False

    def __len__(self) -> int:
        return self._n

    @property
    def stride(self) -> int:
        return self._stride

    @property
    def nbytes(self) -> int:
        return self._x.nbytes + self._y.nbytes

    def clear(self) -> None:
        self._n = 0
        self._stride = 1
        self._count = 0
        self._tail_extra = False

    def last_x(self) -> float | None:
        return float(self._x[self._n - 1]) if self._n else None

    def truncate_from(self, x: float) -> None:
        """Drop every point with x' >= x."""
        k = int(np.searchsorted(self._x[:self._n], x, side="left"))
        if k < self._n:
            self._n = k
            self._tail_extra = False
            self._count = k * self._stride

    def add(self, x: float, y: float) -> None:
        if self._n and x < self._x[self._n - 1]:
            self.truncate_from(x)
        if self._tail_extra:
            self._n -= 1  # replace the provisional tail
        if self._n == self.capacity:
            self._decimate()
        self._x[self._n] = x
        self._y[self._n] = y
        self._n += 1
        self._tail_extra = (self._count % self._stride) != 0
        self._count += 1

    def _decimate(self) -> None:
        half = self._n // 2
        self._x[:half] = self._x[0:self._n:2]
        self._y[:half] = self._y[0:self._n:2]
        self._n = half
        self._stride *= 2
        self._count = half * self._stride

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (x, y) of the stored points."""
        return self._x[:self._n].copy(), self._y[:self._n].copy()

    def views(self) -> tuple[np.ndarray, np.ndarray]:
        """Views (no copy) of the stored points; invalid after the next add."""
        return self._x[:self._n], self._y[:self._n]


# ----------------------------------------------------------------------------------------------
# Helpers


def loss_colormap() -> pg.ColorMap:
    lut = palette.loss_lut()
    return pg.ColorMap(np.linspace(0.0, 1.0, len(lut)), lut, name="nanogpt-loss")


def _export_png(widget: QWidget, plot_item: Any, path: str | os.PathLike, width: int | None = None) -> Path:
    """Write a PNG of `plot_item` (pyqtgraph ImageExporter), falling back to a widget grab; atomic."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp.png") as tmp:  # the exporter picks the format by the suffix
        if not widget.isVisible():  # never shown (offscreen / headless export): lay it out first
            if widget.width() < 200 or widget.height() < 150:
                widget.resize(max(widget.width(), 640), max(widget.height(), 420))
            lay = widget.layout()
            if lay is not None:
                lay.activate()
            gl = getattr(plot_item, "layout", None)
            if gl is not None:
                gl.activate()
        ok = False
        try:
            import pyqtgraph.exporters as exporters

            exp = exporters.ImageExporter(plot_item)
            w = int(width or max(640, widget.width()))
            exp.parameters()["width"] = w
            exp.export(tmp)
            ok = os.path.getsize(tmp) > 0
        except Exception:
            ok = False
        if not ok:
            if widget.width() < 50 or widget.height() < 50:
                widget.resize(max(widget.width(), 640), max(widget.height(), 400))
            ok = widget.grab().save(tmp, "PNG")
        if not ok or os.path.getsize(tmp) == 0:
            raise OSError(f"could not render a PNG for {path}")
    return path


def _finite_or_nan(v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ----------------------------------------------------------------------------------------------
# Loss vs step


class LossPoint(NamedTuple):
    """A loss curve's point where no StepReport exists (a CSV, a checkpoint's history): the same
    three fields a StepReport has, read the same way."""

    step: int
    loss: float | None
    val_loss: float | None = None

    @staticmethod
    def from_history(rows: Iterable[Any]) -> list["LossPoint"]:
        """(step, train, val) rows of a checkpoint's history, NaN meaning absent."""
        return [LossPoint(int(a), None if math.isnan(b) else float(b), None if math.isnan(c) else float(c))
                for a, b, c in rows]


class StepAxis(pg.AxisItem):
    """A step axis: whole steps only (no 0.2, 0.4 … before training, no fractional ticks when zoomed in)."""

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802,N803 (pyqtgraph's names)
        levels = super().tickSpacing(minVal, maxVal, size)
        return [(max(1.0, math.ceil(sp)), off) for sp, off in levels if sp >= 1.0] or [(1.0, 0.0)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [f"{int(round(v)):,}" for v in values]


class LossPlot(QWidget):
    """Mean train loss (raw: faint; smoothed: an EMA with a slider, as TensorBoard) and val loss (symbols)
    vs optimizer step; a hover read-out, log-y, the legend above the data, a message before the first step."""

    EMPTY = "No training yet: Train ▸ Start (Ctrl+Return) draws the loss here, step by step."

    def __init__(self, parent: QWidget | None = None, capacity: int = 20_000, val_capacity: int = 5_000):
        super().__init__(parent)
        self.train = RingSeries(capacity)
        self.val = RingSeries(val_capacity)
        self.lr = RingSeries(capacity)
        self.bpb = RingSeries(capacity)  # bits per byte of each step (text corpora; issue 13)
        self.val_bpb = RingSeries(val_capacity)
        self.plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems={"bottom": StepAxis("bottom")})
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss")
        item.showGrid(x=True, y=True, alpha=0.2)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        raw = QColor(palette.RANK_COLORS[0])
        raw.setAlpha(70)
        self.raw_curve = item.plot([], [], pen=pg.mkPen(raw, width=1))  # faint, behind the smoothed line
        self.train_curve = item.plot([], [], pen=pg.mkPen(palette.RANK_COLORS[0], width=2),
                                     name="train loss (mean of the step)")
        self.val_curve = item.plot([], [], pen=_VAL_PEN, symbol="o", symbolSize=6, symbolBrush=_VAL_BRUSH,
                                   symbolPen=None, name="val loss")
        self.val_curve.setDownsampling(auto=False)  # sparse: keep every symbol
        self.cursor = pg.InfiniteLine(angle=90, pen=pg.mkPen("#999999", style=Qt.PenStyle.DashLine))
        self.cursor.hide()
        item.addItem(self.cursor, ignoreBounds=True)
        self.smoothing = QSlider(Qt.Orientation.Horizontal)
        self.smoothing.setRange(0, 99)
        self.smoothing.setValue(60)
        self.smoothing.setMinimumWidth(80)
        self.smoothing.setMaximumWidth(160)
        self.smoothing.setToolTip("EMA smoothing of the train loss (0: raw); the raw curve stays faint behind")
        self.smoothing_label = QLabel()
        self.log_y = QCheckBox("log y")
        self.log_y.setToolTip("Logarithmic loss axis")
        self.legend = QLabel()  # outside the data: never covers the curve
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.readout = QLabel(" ")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty = QLabel(self.EMPTY)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #666; font-size: 13px; padding: 20px;")
        self.legend.setWordWrap(True)  # a narrow dock: two lines, never a clipped legend
        top = QHBoxLayout()
        top.setContentsMargins(6, 0, 6, 0)
        top.addStretch(1)
        top.addWidget(QLabel("smoothing"))
        top.addWidget(self.smoothing)
        top.addWidget(self.smoothing_label)
        top.addWidget(self.log_y)
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.plot)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.legend.setContentsMargins(6, 2, 6, 0)
        lay.addWidget(self.legend)
        lay.addLayout(top)
        lay.addLayout(self.stack, 1)
        lay.addWidget(self.readout)
        self._dirty = False
        self.redraw_count = 0
        self.smoothing.valueChanged.connect(self._on_smoothing)
        self.log_y.toggled.connect(lambda on: item.setLogMode(y=on))
        self.plot.scene().sigMouseMoved.connect(self._on_mouse)
        self.smoothing_label.setText(f"{self.smoothing_weight():.2f}")
        self._update_legend()

    def _update_legend(self) -> None:
        def line(color, text, dot=False):
            mark = "&#9679;" if dot else "&#9473;&#9473;"
            return f"<span style='color:{QColor(color).name()}'><b>{mark}</b></span> {text}"
        self.legend.setText(" &nbsp; ".join((line(palette.RANK_COLORS[0], "train loss (smoothed; raw faint)"),
                                             line(palette.RANK_COLORS[1], self.val_label(), True))))

    def _on_smoothing(self, value: int) -> None:
        self.smoothing_label.setText(f"{value / 100:.2f}")
        self._dirty = True
        self.redraw()

    def smoothing_weight(self) -> float:
        return self.smoothing.value() / 100

    def set_smoothing(self, weight: float) -> None:
        self.smoothing.setValue(int(round(weight * 100)))

    def _on_mouse(self, pos) -> None:
        vb = self.plot.getPlotItem().vb
        if not self.plot.sceneBoundingRect().contains(pos) or len(self.train) == 0:
            return
        self.hover(vb.mapSceneToView(pos).x())

    def hover(self, x: float) -> str:
        """The read-out for the step nearest x: step, loss (raw and smoothed), val loss, lr."""
        from nanogpt_viz.viewmodel import nearest_index

        tx, ty = self.train.data()
        i = nearest_index(tx, x)
        if i < 0:
            return ""
        step = int(tx[i])
        sm = self.train_curve.getOriginalDataset()[1]
        parts = [f"step {step:,}", f"loss {ty[i]:.4f}"]
        if sm is not None and i < len(sm) and self.smoothing_weight() > 0:
            parts.append(f"smoothed {sm[i]:.4f}")
        vx, vy = self.val.data()
        j = nearest_index(vx, step)
        if j >= 0 and abs(vx[j] - step) < 0.5:
            parts.append(f"val {vy[j]:.4f}")
        lx, ly = self.lr.data()
        k = nearest_index(lx, step)
        if k >= 0 and lx[k] == step:
            parts.append(f"lr {ly[k]:.3g}")
        for ring, name in ((self.bpb, "bpb"), (self.val_bpb, "val bpb")):
            bx, by = ring.data()
            b = nearest_index(bx, step)
            if b >= 0 and bx[b] == step:
                parts.append(f"{name} {by[b]:.4f}")
        text = " · ".join(parts)
        self.readout.setText(text)
        self.cursor.setPos(step)
        self.cursor.show()
        return text

    def set_val_label(self, protocol: str | None, tokens: int = 0) -> None:
        """Name the val curve after how it was measured: the protocol and the val targets it covered."""
        name = "val loss" if not protocol else f"val loss ({protocol}, {int(tokens):,} targets)"
        self.val_curve.opts["name"] = name
        self._update_legend()

    def val_label(self) -> str:
        return str(self.val_curve.opts.get("name", ""))

    # ---- feeding ------------------------------------------------------------------------------
    def add(self, step: int, loss: float | None, val_loss: float | None = None) -> None:
        """Append one point; drawn by the next `redraw` (the window's refresh clock calls it)."""
        self._append(step, loss, val_loss)

    def extend(self, reports: Iterable[Any]) -> None:
        """Bulk append StepReports (or LossPoints: the same .step, .loss, .val_loss). One redraw."""
        for rep in reports:
            self._append(rep.step, rep.loss, rep.val_loss)
            lr = getattr(rep, "lr", None)
            if lr is not None and rep.loss is not None:
                self.lr.add(float(rep.step), float(lr))
            self.add_bpb(rep.step, getattr(rep, "bpb", None) if rep.loss is not None else None,
                         getattr(rep, "val_bpb", None))
        self.redraw()

    def add_bpb(self, step: int, bpb: float | None, val_bpb: float | None = None) -> None:
        """Bits per byte of the step (and of its val loss), shown by the hover read-out when known."""
        x = float(step)
        for ring, v in ((self.bpb, bpb), (self.val_bpb, val_bpb)):
            if v is not None:
                if ring.last_x() == x:
                    ring.truncate_from(x)
                ring.add(x, _finite_or_nan(v))

    def _append(self, step: int, loss: float | None, val_loss: float | None) -> None:
        x = float(step)
        last = self.train.last_x()
        if last is not None and x < last:  # resumed from an earlier checkpoint: history after it is void
            self.train.truncate_from(x)
            self.val.truncate_from(x)
            self.lr.truncate_from(x)
            self.bpb.truncate_from(x)
            self.val_bpb.truncate_from(x)
        if loss is not None:
            self.train.add(x, _finite_or_nan(loss))
        if val_loss is not None:
            v = _finite_or_nan(val_loss)
            if self.val.last_x() == x:
                self.val.truncate_from(x)
            self.val.add(x, v)
        self._dirty = True

    def clear_history(self) -> None:
        self.train.clear()
        self.val.clear()
        self.lr.clear()
        self.bpb.clear()
        self.val_bpb.clear()
        self.readout.setText(" ")
        self.cursor.hide()
        self._dirty = True
        self.redraw()

    def redraw(self) -> None:
        """Push the ring contents into the curves now (when anything changed)."""
        if not self._dirty:
            return
        self._dirty = False
        from nanogpt_viz.viewmodel import ema

        tx, ty = self.train.data()
        vx, vy = self.val.data()
        w = self.smoothing_weight()
        self.raw_curve.setData(tx, ty, connect="finite")
        self.raw_curve.setVisible(w > 0)
        self.train_curve.setData(tx, ema(ty, w) if w > 0 else ty, connect="finite")
        self.val_curve.setData(vx, vy, connect="finite")
        self.stack.setCurrentWidget(self.plot if len(tx) or len(vx) else self.empty)
        self.redraw_count += 1

    # ---- reading back -------------------------------------------------------------------------
    def series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train_steps, train_loss, val_steps, val_loss) as stored (float64 copies)."""
        tx, ty = self.train.data()
        vx, vy = self.val.data()
        return tx, ty, vx, vy

    def shown(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """What the train curve currently draws (after any pending redraw)."""
        self.redraw()
        return self.train_curve.getOriginalDataset()

    def __len__(self) -> int:
        return len(self.train)

    # ---- export -------------------------------------------------------------------------------
    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write `step,train_loss,val_loss` (union of steps; empty cell when absent), atomically."""
        tx, ty, vx, vy = self.series()
        steps = np.union1d(tx, vx)
        train = dict(zip(tx.tolist(), ty.tolist()))
        val = dict(zip(vx.tolist(), vy.tolist()))

        def fmt(v: float | None) -> str:
            return "" if v is None else repr(float(v))

        lines = ["step,train_loss,val_loss"]
        for s in steps.tolist():
            lines.append(f"{int(s) if float(s).is_integer() else s},{fmt(train.get(s))},{fmt(val.get(s))}")
        path = Path(path)
        atomic_write_text(path, "\n".join(lines) + "\n")
        return path

    @staticmethod
    def read_csv(path: str | os.PathLike) -> list["LossPoint"]:
        """The points of a CSV written by `to_csv` (feed them to `extend`)."""
        out = []
        with open(path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
            if header != ["step", "train_loss", "val_loss"]:
                raise ValueError(f"{path} is not a loss CSV (header {header})")
            for line in f:
                parts = line.strip().split(",")
                if len(parts) != 3:
                    continue
                out.append(LossPoint(int(float(parts[0])), float(parts[1]) if parts[1] else None,
                                     float(parts[2]) if parts[2] else None))
        return out

    def export_png(self, path: str | os.PathLike, width: int | None = None) -> Path:
        self.redraw()
        return _export_png(self, self.plot.getPlotItem(), path, width)


# ----------------------------------------------------------------------------------------------
# Per-token loss heatmap


class _IntAxis(pg.AxisItem):
    """An axis that only labels whole numbers (row and column indices)."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802 (pyqtgraph's name)
        out = []
        for spacing, values in super().tickValues(minVal, maxVal, size):
            vals = [v for v in values if abs(v - round(v)) < 1e-9]
            if vals:
                out.append((max(1.0, spacing), vals))
        return out

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [str(int(round(v))) for v in values]


def _loss_image(left: str, bar: str) -> tuple[pg.PlotWidget, pg.ImageItem, pg.ColorBarItem]:
    """A plot of losses as an image: positions in the block across, `left` down (top first), a colour bar."""
    plot = pg.PlotWidget(background=palette.BACKGROUND,
                         axisItems={"bottom": _IntAxis("bottom"), "left": _IntAxis("left")})
    item = plot.getPlotItem()
    item.setLabel("bottom", "position in block (j)")
    item.setLabel("left", left)
    item.invertY(True)
    item.setMenuEnabled(False)
    image = pg.ImageItem(axisOrder="row-major")
    item.addItem(image)
    colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=loss_colormap(), label=bar, interactive=False, width=14)
    colorbar.setImageItem(image, insert_in=item)
    return plot, image, colorbar


class TokenLossHeatmap(QWidget):
    """The (B, N) per-token losses of one micro-batch of the current step as an image."""

    hovered = Signal(int, int, float)  # row, column, loss (row -1 when the mouse leaves the image)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot, self.image, self.colorbar = _loss_image("row (i)", "loss")
        self.label = QLabel("hover a cell: row, position, loss")
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.label)
        self._data: np.ndarray | None = None
        self._levels: tuple[float, float] | None = None  # None: automatic (finite min/max)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    def set_levels(self, levels: tuple[float, float] | None) -> None:
        """Fix the colour range (vmin, vmax), or None for the data's finite min..max."""
        self._levels = None if levels is None else (float(levels[0]), float(levels[1]))
        if self._data is not None:
            self._apply_levels()

    def set_data(self, per_token_BN: np.ndarray | None) -> None:
        if per_token_BN is None:
            self.clear()
            return
        a = np.asarray(per_token_BN, dtype=np.float32)
        if a.ndim == 1:
            a = a[None, :]
        elif a.ndim > 2:
            a = a.reshape(-1, a.shape[-1])
        first = self._data is None or self._data.shape != a.shape
        self._data = a.copy()
        self.image.setImage(self._data, autoLevels=False)
        self.image.setRect(-0.5, -0.5, float(a.shape[1]), float(a.shape[0]))  # cell (i, j) centred on (j, i)
        self._apply_levels()
        if first:
            self.plot.getPlotItem().getViewBox().autoRange(padding=0.0)

    def _apply_levels(self) -> None:
        if self._levels is not None:
            lo, hi = self._levels
        else:
            fin = self._data[np.isfinite(self._data)] if self._data is not None else np.zeros(0)
            lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1e-6
        self.colorbar.setLevels((lo, hi))

    def clear(self) -> None:
        self._data = None
        self.image.clear()
        self.label.setText("no per-token losses for this step")

    def data(self) -> np.ndarray | None:
        """The (B, N) array shown (a copy), None when empty."""
        return None if self._data is None else self._data.copy()

    def image_shape(self) -> tuple[int, ...] | None:
        img = self.image.image
        return None if img is None else tuple(img.shape)

    def levels(self) -> tuple[float, float]:
        lo, hi = self.colorbar.levels()
        return float(lo), float(hi)

    def hover_text(self, i: int, j: int) -> str:
        if self._data is None or not (0 <= i < self._data.shape[0] and 0 <= j < self._data.shape[1]):
            return ""
        return f"row i={i}, position j={j}: loss {float(self._data[i, j]):.4f}"

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        if self._data is None:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return
        p = vb.mapSceneToView(scene_pos)
        j, i = int(math.floor(p.x() + 0.5)), int(math.floor(p.y() + 0.5))
        text = self.hover_text(i, j)
        if text:
            self.label.setText(text)
            self.hovered.emit(i, j, float(self._data[i, j]))
        else:
            self.hovered.emit(-1, -1, math.nan)

    def export_png(self, path: str | os.PathLike, width: int | None = None) -> Path:
        return _export_png(self.plot, self.plot.getPlotItem(), path, width)


# ----------------------------------------------------------------------------------------------
# Loss vs position in the block


class PositionLossPlot(QWidget):
    """Mean loss at each position j of the block (N,) for the latest step, plus an optional
    exponential moving average over steps (positions late in the block see more context)."""

    def __init__(self, parent: QWidget | None = None, ema_alpha: float = 0.1):
        super().__init__(parent)
        self.ema_alpha = float(ema_alpha)
        self.plot = pg.PlotWidget(background=palette.BACKGROUND)
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "position in block (j)")
        item.setLabel("left", "mean loss")
        item.showGrid(x=True, y=True, alpha=0.2)
        item.addLegend(offset=(-10, 10))
        self.curve = item.plot([], [], pen=_POS_PEN, name="this step")
        self.ema_curve = item.plot([], [], pen=_EMA_PEN, name="moving average")
        self.ema_check = QCheckBox("moving average over steps")
        self.ema_check.setChecked(True)
        self.ema_check.toggled.connect(self.set_ema_enabled)
        row = QHBoxLayout()
        row.addWidget(self.ema_check)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addLayout(row)
        self._y: np.ndarray | None = None
        self._ema: np.ndarray | None = None
        self._ema_enabled = True

    def set_ema_enabled(self, on: bool) -> None:
        self._ema_enabled = bool(on)
        if self.ema_check.isChecked() != self._ema_enabled:
            self.ema_check.setChecked(self._ema_enabled)
        self.ema_curve.setVisible(self._ema_enabled)
        self._redraw_ema()

    def reset_ema(self) -> None:
        self._ema = None
        self._redraw_ema()

    def set_data(self, position_loss: np.ndarray | None, update_ema: bool = True) -> None:
        """The curve of one step; `update_ema` folds it into the moving average (live steps, in
        order; a step scrubbed to is shown without touching the average)."""
        if position_loss is None:
            self._y = None
            self.curve.setData([], [])
            return
        y = np.asarray(position_loss, dtype=np.float64).ravel()
        self._y = y.copy()
        x = np.arange(len(y), dtype=np.float64)
        self.curve.setData(x, y, connect="finite")
        if not update_ema:
            return
        if self._ema is None or self._ema.shape != y.shape:
            self._ema = y.copy()
        else:
            a = self.ema_alpha
            upd = (1.0 - a) * self._ema + a * y
            self._ema = np.where(np.isfinite(upd), upd, np.where(np.isfinite(y), y, self._ema))
        self._redraw_ema()

    def _redraw_ema(self) -> None:
        if self._ema is None or not self._ema_enabled:
            self.ema_curve.setData([], [])
            return
        self.ema_curve.setData(np.arange(len(self._ema), dtype=np.float64), self._ema, connect="finite")

    def clear(self) -> None:
        self._y = None
        self._ema = None
        self.curve.setData([], [])
        self.ema_curve.setData([], [])

    def series(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(latest position loss, moving average or None when off)."""
        y = None if self._y is None else self._y.copy()
        ema = None if (self._ema is None or not self._ema_enabled) else self._ema.copy()
        return y, ema

    def export_png(self, path: str | os.PathLike, width: int | None = None) -> Path:
        return _export_png(self, self.plot.getPlotItem(), path, width)


# ----------------------------------------------------------------------------------------------
# Rate limiting


def select_rows(per_token: np.ndarray | None, ranks: tuple, micro: int, rank: int) -> np.ndarray | None:
    """The (B, N) rows of micro-batch `micro` of rank `rank` from (K, len(ranks), B, N) losses."""
    if per_token is None:
        return None
    pt = np.asarray(per_token)
    if pt.ndim == 2:
        return pt
    if pt.ndim != 4:
        return pt.reshape(-1, pt.shape[-1])
    ranks = tuple(ranks or range(pt.shape[1]))
    r = ranks.index(rank) if rank in ranks else 0
    m = min(max(int(micro), 0), pt.shape[0] - 1)
    return pt[m, r]


class PlotCoalescer(QObject):
    """Turns a fast stream of `StepReport`s into one redraw per refresh.

    `push(report)` (any rate, any thread) appends the scalars to a pending list and keeps only the
    latest per-token / position losses; `flush()`, called by the window's refresh clock (it has no
    timer of its own), draws all pending scalars into `LossPlot` in one redraw and the latest arrays
    into the heatmap and the position plot. The heatmap shows micro-batch `micro` of rank `rank`
    (`set_selection`).
    """

    flushed = Signal(int)  # step of the latest report flushed

    def __init__(self, loss_plot: LossPlot | None = None, heatmap: TokenLossHeatmap | None = None,
                 position_plot: PositionLossPlot | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.loss_plot = loss_plot
        self.heatmap = heatmap
        self.position_plot = position_plot
        self.micro = 0
        self.rank = 0
        self._lock = threading.Lock()
        self._pending: list[Any] = []
        self._latest: Any = None  # latest report carrying per_token / position_loss
        self._last_step = -1
        self._dirty = False
        self.flush_count = 0

    def set_selection(self, micro: int, rank: int) -> None:
        """Which (micro, rank) of the per-token losses the heatmap shows; re-shows the latest."""
        self.micro, self.rank = int(micro), int(rank)
        with self._lock:
            latest = self._latest
        if latest is not None and self.heatmap is not None:
            self.heatmap.set_data(self._select(latest))

    def push(self, report: Any) -> None:
        with self._lock:
            self._pending.append(report)
            if getattr(report, "per_token", None) is not None or getattr(report, "position_loss", None) is not None:
                self._latest = report
            self._dirty = True

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def reset(self) -> None:
        """Drop whatever is pending (a new run)."""
        with self._lock:
            self._pending.clear()
            self._latest = None
            self._dirty = False
        self._last_step = -1

    def _select(self, report: Any) -> np.ndarray | None:
        return select_rows(getattr(report, "per_token", None), tuple(getattr(report, "ranks", ()) or ()),
                           self.micro, self.rank)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            latest = self._latest
            dirty = self._dirty
            self._dirty = False
        if not dirty and not pending:
            return
        if pending and self.loss_plot is not None:
            self.loss_plot.extend(pending)
        if latest is not None and int(latest.step) != self._last_step:
            self._last_step = int(latest.step)
            if self.heatmap is not None:
                sel = self._select(latest)
                if sel is not None:
                    self.heatmap.set_data(sel)
            pl = getattr(latest, "position_loss", None)
            if self.position_plot is not None and pl is not None:
                self.position_plot.set_data(pl)
        self.flush_count += 1
        if pending:
            self.flushed.emit(int(pending[-1].step))


# ----------------------------------------------------------------------------------------------
# Step x position map


class StepPositionMap(QWidget):
    """Steps down, positions 0..N-1 across, colour = mean loss at that position in that step: the
    loss falling along each row over training is in-context learning becoming visible."""

    hovered = Signal(int, int, float)  # step, position, loss

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.plot, self.image, self.colorbar = _loss_image("step", "mean loss")
        item = self.plot.getPlotItem()
        self.cursor = pg.InfiniteLine(angle=0, pen=pg.mkPen(palette.RANK_COLORS[0], width=1))
        self.cursor.setVisible(False)
        item.addItem(self.cursor)
        self.label = QLabel("the mean loss at each position of each trained step")
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.label)
        self._steps = np.zeros(0, np.int64)
        self._rows: np.ndarray | None = None
        self._shape: tuple[int, int] | None = None
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    def set_rows(self, steps: np.ndarray, rows: np.ndarray | None) -> None:
        """One row per step shown: `steps` (n,) ascending, `rows` (n, N)."""
        if rows is None or len(steps) == 0:
            self.clear()
            return
        a = np.asarray(rows, dtype=np.float32).reshape(len(steps), -1)
        self._steps = np.asarray(steps, dtype=np.int64).copy()
        self._rows = a
        self.image.setImage(a, autoLevels=False)
        lo_step, hi_step = int(self._steps[0]), int(self._steps[-1])
        span = max(1, hi_step - lo_step + 1)
        self.image.setRect(-0.5, lo_step - 0.5, float(a.shape[1]), float(span))
        fin = a[np.isfinite(a)]
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
        self.colorbar.setLevels((lo, max(hi, lo + 1e-6)))
        shape = (a.shape[1], span)
        if shape != self._shape:
            self._shape = shape
            self.plot.getPlotItem().getViewBox().autoRange(padding=0.0)

    def set_current(self, step: int | None) -> None:
        """Mark the step the other views show."""
        self.cursor.setVisible(step is not None and self._rows is not None)
        if step is not None:
            self.cursor.setValue(float(step))

    def clear(self) -> None:
        self._steps = np.zeros(0, np.int64)
        self._rows = None
        self._shape = None
        self.image.clear()
        self.cursor.setVisible(False)

    def rows(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(steps, (n, N) rows) shown (copies)."""
        return self._steps.copy(), None if self._rows is None else self._rows.copy()

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        if self._rows is None:
            return
        vb = self.plot.getPlotItem().getViewBox()
        if not vb.sceneBoundingRect().contains(scene_pos):
            return
        p = vb.mapSceneToView(scene_pos)
        j = int(math.floor(p.x() + 0.5))
        k = int(np.searchsorted(self._steps, p.y() + 0.5, side="right")) - 1
        if 0 <= k < len(self._steps) and 0 <= j < self._rows.shape[1]:
            v = float(self._rows[k, j])
            self.label.setText(f"step {int(self._steps[k]):,}, position j={j}: mean loss {v:.4f}")
            self.hovered.emit(int(self._steps[k]), j, v)

    def export_png(self, path: str | os.PathLike, width: int | None = None) -> Path:
        return _export_png(self.plot, self.plot.getPlotItem(), path, width)


# ----------------------------------------------------------------------------------------------
# Gradient norm vs step, with the clip threshold (issue 13, item 5)


class GradNormPlot(QWidget):
    """The gradient norm before clipping (StepReport.grad_norm) vs step, with the run's clip threshold
    (TrainConfig.grad_clip) as a dashed horizontal line: every point above it was clipped. Summing the
    micro-batch losses without dividing by K (train --no-divide-by-k) puts every step above the line."""

    EMPTY = "No training yet: the gradient norm of each step (before clipping) is drawn here."

    def __init__(self, parent: QWidget | None = None, capacity: int = 20_000):
        super().__init__(parent)
        self.norms = RingSeries(capacity)
        self.clip: float | None = None
        self.plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems={"bottom": StepAxis("bottom")})
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "gradient norm")
        item.showGrid(x=True, y=True, alpha=0.2)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.curve = item.plot([], [], pen=pg.mkPen(palette.RANK_COLORS[2], width=1))
        self.clip_line = pg.InfiniteLine(angle=0, movable=False,
                                         pen=pg.mkPen(palette.RANK_COLORS[1], width=1, style=Qt.PenStyle.DashLine))
        self.clip_line.hide()
        item.addItem(self.clip_line)
        self.log_y = QCheckBox("log y")
        self.log_y.setToolTip("Logarithmic gradient-norm axis")
        self.log_y.toggled.connect(self._on_log)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        self.legend.setContentsMargins(6, 2, 6, 0)
        self.readout = QLabel(" ")
        self.empty = QLabel(self.EMPTY)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #666; font-size: 13px; padding: 20px;")
        top = QHBoxLayout()
        top.setContentsMargins(6, 0, 6, 0)
        top.addWidget(self.legend, 1)
        top.addWidget(self.log_y)
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.plot)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(top)
        lay.addLayout(self.stack, 1)
        lay.addWidget(self.readout)
        self._dirty = False
        self.plot.scene().sigMouseMoved.connect(self._on_mouse)
        self._update_legend()

    def _on_log(self, on: bool) -> None:
        self.plot.getPlotItem().setLogMode(y=on)
        self._place_line()

    def _place_line(self) -> None:
        if self.clip is None:
            self.clip_line.hide()
            return
        self.clip_line.setPos(math.log10(self.clip) if self.log_y.isChecked() else self.clip)
        self.clip_line.show()

    def _update_legend(self) -> None:
        def line(color, text):
            return f"<span style='color:{QColor(color).name()}'><b>&#9473;&#9473;</b></span> {text}"
        clip = (f"clip threshold {self.clip:g} (above it the step was clipped)" if self.clip is not None
                else "no clipping")
        self.legend.setText(" &nbsp; ".join((line(palette.RANK_COLORS[2], "gradient norm before clipping"),
                                             line(palette.RANK_COLORS[1], clip))))

    def set_clip(self, grad_clip: float | None) -> None:
        """The run's TrainConfig.grad_clip (0 or None: no clipping, no line)."""
        g = _finite_or_nan(grad_clip)
        self.clip = g if g > 0 else None
        self._place_line()
        self._update_legend()

    def clip_level(self) -> float | None:
        """Where the threshold line sits, in gradient-norm units (None when hidden)."""
        if not self.clip_line.isVisible():
            return None
        y = float(self.clip_line.value())
        return 10 ** y if self.log_y.isChecked() else y

    def add(self, step: int, grad_norm: float | None) -> None:
        if grad_norm is None:
            return
        x = float(step)
        last = self.norms.last_x()
        if last is not None and x <= last:  # resumed from an earlier step: what came after it is void
            self.norms.truncate_from(x)
        self.norms.add(x, _finite_or_nan(grad_norm))
        self._dirty = True

    def extend(self, reports: Iterable[Any]) -> None:
        for rep in reports:
            self.add(rep.step, getattr(rep, "grad_norm", None))
        self.redraw()

    def clear_history(self) -> None:
        self.norms.clear()
        self.readout.setText(" ")
        self._dirty = True
        self.redraw()

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        x, y = self.norms.data()
        self.curve.setData(x, y, connect="finite")
        self.stack.setCurrentWidget(self.plot if len(x) else self.empty)

    def series(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, grad norms) as stored."""
        return self.norms.data()

    def clipped_share(self) -> float:
        """The share of steps whose norm exceeded the threshold (0 without one)."""
        _, y = self.norms.data()
        if self.clip is None or not len(y):
            return 0.0
        return float(np.mean(y > self.clip))

    def _on_mouse(self, pos) -> None:
        if not self.plot.sceneBoundingRect().contains(pos) or len(self.norms) == 0:
            return
        self.hover(self.plot.getPlotItem().vb.mapSceneToView(pos).x())

    def hover(self, x: float) -> str:
        from nanogpt_viz.viewmodel import nearest_index

        sx, sy = self.norms.data()
        i = nearest_index(sx, x)
        if i < 0:
            return ""
        text = f"step {int(sx[i]):,} · grad norm {sy[i]:.4g}"
        if self.clip is not None:
            text += f" · clipped to {self.clip:g}" if sy[i] > self.clip else " · not clipped"
        self.readout.setText(text)
        return text

    def __len__(self) -> int:
        return len(self.norms)

    def export_png(self, path: str | os.PathLike, width: int | None = None) -> Path:
        self.redraw()
        return _export_png(self, self.plot.getPlotItem(), path, width)


# ----------------------------------------------------------------------------------------------
# Learning rate and throughput vs step (issue 12: "a second axis or tab for learning rate and tokens/s")


class RatePlot(QWidget):
    """Two x-linked panes of one tab: the learning rate of each step (StepReport.lr: warmup, cosine decay)
    above, the tokens per second (StepReport.tokens_per_s) below; fed from the same reports as the loss."""

    EMPTY = "No training yet: the learning rate and tokens/s of each step are drawn here."

    def __init__(self, parent: QWidget | None = None, capacity: int = 20_000):
        super().__init__(parent)
        self.lr = RingSeries(capacity)
        self.tps = RingSeries(capacity)
        self.lr_plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems={"bottom": StepAxis("bottom")})
        self.tps_plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems={"bottom": StepAxis("bottom")})
        for pw, label in ((self.lr_plot, "learning rate"), (self.tps_plot, "tokens/s")):
            item = pw.getPlotItem()
            item.setLabel("left", label)
            item.showGrid(x=True, y=True, alpha=0.2)
            item.setClipToView(True)
            item.setDownsampling(auto=True, mode="peak")
        self.tps_plot.getPlotItem().setLabel("bottom", "step")
        self.tps_plot.setXLink(self.lr_plot)
        self.lr_curve = self.lr_plot.getPlotItem().plot([], [], pen=pg.mkPen(palette.RANK_COLORS[0], width=1.5))
        self.tps_curve = self.tps_plot.getPlotItem().plot([], [], pen=pg.mkPen(palette.RANK_COLORS[3], width=1))
        self.readout = QLabel(" ")
        self.empty = QLabel(self.EMPTY)
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty.setWordWrap(True)
        self.empty.setStyleSheet("color: #666; font-size: 13px; padding: 20px;")
        panes = QWidget()
        pl = QVBoxLayout(panes)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.setSpacing(0)
        pl.addWidget(self.lr_plot, 1)
        pl.addWidget(self.tps_plot, 1)
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(panes)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(self.stack, 1)
        lay.addWidget(self.readout)
        self._dirty = False
        self.lr_plot.scene().sigMouseMoved.connect(lambda pos: self._on_mouse(self.lr_plot, pos))
        self.tps_plot.scene().sigMouseMoved.connect(lambda pos: self._on_mouse(self.tps_plot, pos))

    @staticmethod
    def _put(ring: RingSeries, x: float, v: float | None) -> None:
        if v is None:
            return
        last = ring.last_x()
        if last is not None and x <= last:  # resumed from an earlier step: what came after it is void
            ring.truncate_from(x)
        ring.add(x, _finite_or_nan(v))

    def add(self, step: int, lr: float | None, tokens_per_s: float | None) -> None:
        x = float(step)
        self._put(self.lr, x, lr)
        self._put(self.tps, x, tokens_per_s)
        self._dirty = True

    def extend(self, reports: Iterable[Any]) -> None:
        for rep in reports:
            self.add(rep.step, getattr(rep, "lr", None), getattr(rep, "tokens_per_s", None))
        self.redraw()

    def clear_history(self) -> None:
        self.lr.clear()
        self.tps.clear()
        self.readout.setText(" ")
        self._dirty = True
        self.redraw()

    def redraw(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        x, y = self.lr.data()
        self.lr_curve.setData(x, y, connect="finite")
        tx, ty = self.tps.data()
        self.tps_curve.setData(tx, ty, connect="finite")
        self.stack.setCurrentIndex(1 if len(x) or len(tx) else 0)

    def series(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """((steps, lr), (steps, tokens/s)) as stored."""
        return self.lr.data(), self.tps.data()

    def _on_mouse(self, pw, pos) -> None:
        if not pw.sceneBoundingRect().contains(pos) or (len(self.lr) == 0 and len(self.tps) == 0):
            return
        self.hover(pw.getPlotItem().vb.mapSceneToView(pos).x())

    def hover(self, x: float) -> str:
        from nanogpt_viz.viewmodel import nearest_index

        parts = []
        for ring, fmt in ((self.lr, lambda v: f"lr {v:.4g}"), (self.tps, lambda v: f"{v:,.0f} tok/s")):
            sx, sy = ring.data()
            i = nearest_index(sx, x)
            if i >= 0:
                if not parts:
                    parts.append(f"step {int(sx[i]):,}")
                parts.append(fmt(sy[i]))
        text = " · ".join(parts)
        self.readout.setText(text or " ")
        return text

    def __len__(self) -> int:
        return max(len(self.lr), len(self.tps))

    def export_png(self, path: str | os.PathLike, width: int | None = None) -> Path:
        self.redraw()
        return _export_png(self, self.lr_plot.getPlotItem(), path, width)
