"""Training plots (pyqtgraph): loss vs step, per-token loss heatmap, loss vs position in block, and
the step x position map.

Every plot item is created once and then fed with `setData` / `setImage`; nothing is cleared and
re-plotted per step. No plot owns a timer: `LossPlot.add` only appends to a bounded numpy ring, and
the window's one refresh clock (ui/refresh.py) redraws at a bounded rate.
"""
from __future__ import annotations

import math
import os
from html import escape as html_escape
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QPushButton, QSlider, QStackedLayout, QVBoxLayout,
                               QWidget)

from nanogpt_viz.atomic import atomic_path, atomic_write_text
from nanogpt_viz.ui import palette

__all__ = ["RingSeries", "LossPlot", "LossPoint", "TokenLossHeatmap", "PositionLossPlot", "PlotCoalescer",
           "StepPositionMap", "loss_colormap", "select_rows", "RunSeries", "UNITS"]

# Loss units (issue 13, item 3): nats (the cross-entropy as trained) or bits per byte (text corpora)
UNITS = {"nats": "loss (nats)", "bpb": "bits per byte"}


# Thin cosmetic pens: a 1 px line draws several times faster than a 1.5-2 px one in Qt's raster
# engine, and the plots repaint while training shares the CPU with them.
_TRAIN_PEN = pg.mkPen(palette.RANK_COLORS[0], width=1)
_VAL_PEN = pg.mkPen(palette.RANK_COLORS[1], width=1)
_VAL_BRUSH = pg.mkBrush(palette.RANK_COLORS[1])
_POS_PEN = pg.mkPen(palette.RANK_COLORS[2], width=1)
_EMA_PEN = pg.mkPen(palette.RANK_COLORS[4], width=1)
_OVERLAY_COLOR = QColor("#ff7f0e")  # a second run compared with the shown one: orange, dashed
_AFTER_EOT_COLOR = palette.RANK_COLORS[1]
_REST_COLOR = palette.RANK_COLORS[5]


class RunSeries(NamedTuple):
    """Another run's curves, read from its run record (metrics.jsonl), to overlay on the loss and
    gradient-norm plots: each pair is (steps, values) as float64 arrays."""

    label: str  # e.g. "20260102-run-b (not ÷K, K=4)"
    loss: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    bpb: tuple[np.ndarray, np.ndarray]
    val_bpb: tuple[np.ndarray, np.ndarray]
    grad_norm: tuple[np.ndarray, np.ndarray]
    clip: float | None = None


def _legend_line(color, text: str, mark: str = "&#9473;&#9473;") -> str:
    return f"<span style='color:{QColor(color).name()}'><b>{mark}</b></span> {text}"


def _compare_buttons(tip: str) -> tuple[QPushButton, QPushButton]:
    """'Compare…' (File ▸ Compare with run…) and its '✕ remove', small enough for a narrow dock."""
    b = QPushButton("Compare…")
    b.setToolTip(tip)
    b.setFlat(True)
    r = QPushButton("✕ remove")
    r.setFlat(True)
    r.hide()
    return b, r


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


class GridAxis(pg.AxisItem):
    """An axis whose grid lines are opaque: each line gets the colour its translucent pen (pyqtgraph's grid alpha)
    would give over the plot's background, blended once here. Qt's raster engine draws a translucent line about
    ten times slower than an opaque one: the grid was 26 of a 900 x 330 plot's 30 ms repaint, on every step
    drawn while training and every step scrubbed to (issue 11). The plot area is the background colour, so the
    grid looks the same."""

    _pens: dict[tuple, QPen] = {}

    def generateDrawSpecs(self, p):  # noqa: N802 (pyqtgraph's name)
        specs = super().generateDrawSpecs(p)
        if specs is None:
            return None
        axis, ticks, texts = specs
        return axis, [(_opaque_pen(pen), p1, p2) for pen, p1, p2 in ticks], texts


def _opaque_pen(pen: QPen) -> QPen:
    """`pen` with its colour blended over palette.BACKGROUND and alpha 1 (other pens unchanged)."""
    c = pen.color()
    if c.alpha() == 255 or pen.brush().style() != Qt.BrushStyle.SolidPattern:
        return pen
    key = (c.red(), c.green(), c.blue(), c.alpha(), pen.widthF(), pen.style(), pen.isCosmetic())
    got = GridAxis._pens.get(key)
    if got is None:
        a, bg = c.alphaF(), palette.BACKGROUND
        got = QPen(pen)
        got.setColor(QColor(*(round(a * v + (1 - a) * b) for v, b in
                              ((c.red(), bg.red()), (c.green(), bg.green()), (c.blue(), bg.blue())))))
        GridAxis._pens[key] = got
    return got


def show_grid(item: pg.PlotItem, alpha: float = 0.2) -> None:
    """The plot's grid, drawn beneath its curves and legend (opaque grid lines above them would cut through them)."""
    item.showGrid(x=True, y=True, alpha=alpha)
    for name in ("left", "bottom"):
        item.getAxis(name).setZValue(item.getViewBox().zValue() - 1)


def peak_per_pixel(item: pg.PlotItem) -> None:
    """Each curve of the plot, downsampled to the min and max of one bin per pixel column (pyqtgraph's default, 5
    bins per pixel, draws the same envelope from 5x the segments: a 20,000-step loss curve took 34 ms to repaint,
    now 9; issue 11, the latency while training)."""
    for curve in item.listDataItems():
        curve.opts["autoDownsampleFactor"] = 1.0
        curve.updateItems(styleUpdate=False)


def grid_axes(**axes: pg.AxisItem) -> dict[str, pg.AxisItem]:
    """axisItems for a PlotWidget: `axes` as given, GridAxis for the left and bottom axes not given."""
    return {"left": axes.pop("left", None) or GridAxis("left"),
            "bottom": axes.pop("bottom", None) or GridAxis("bottom"), **axes}


class StepAxis(GridAxis):
    """A step axis: whole steps only (no 0.2, 0.4 … before training, no fractional ticks when zoomed in)."""

    def tickSpacing(self, minVal, maxVal, size):  # noqa: N802,N803 (pyqtgraph's names)
        levels = super().tickSpacing(minVal, maxVal, size)
        return [(max(1.0, math.ceil(sp)), off) for sp, off in levels if sp >= 1.0] or [(1.0, 0.0)]

    def tickStrings(self, values, scale, spacing):  # noqa: N802
        return [f"{int(round(v)):,}" for v in values]


class _Overlaid:
    """Another run drawn over this chart (LossPlot, GradNormPlot): the legend names both runs."""

    def set_run_label(self, label: str) -> None:
        """The shown run's name in the legend when another run is overlaid."""
        self.run_label = str(label or "")
        self._update_legend()

    def set_overlay(self, series: RunSeries | None) -> None:
        """Overlay another run's curves (None removes it)."""
        self.overlay = series
        self.remove_btn.setVisible(series is not None)
        if series is not None:
            self.remove_btn.setToolTip(f"Remove the overlaid run {series.label} (File ▸ Remove comparison)")
        self._update_legend()
        self._dirty = True
        self.redraw()


class LossPlot(_Overlaid, QWidget):
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
        self.plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems=grid_axes(bottom=StepAxis("bottom")))
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "loss")
        show_grid(item)
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
        # another run overlaid (ui/runs.RunComparison): its smoothed train curve dashed, its val as triangles
        self.overlay_curve = item.plot([], [], pen=pg.mkPen(_OVERLAY_COLOR, width=2, style=Qt.PenStyle.DashLine))
        self.overlay_val_curve = item.plot([], [], pen=None, symbol="t", symbolSize=7,
                                           symbolBrush=pg.mkBrush(_OVERLAY_COLOR), symbolPen=None)
        self.overlay_val_curve.setDownsampling(auto=False)
        peak_per_pixel(item)
        self.overlay: RunSeries | None = None
        self.run_label = ""  # the shown run's name in the legend (set while another run is overlaid)
        self.units = "nats"
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
        self.compare_btn, self.remove_btn = _compare_buttons("Compare with run: overlay another run's loss curve "
                                                             "(a run directory) on this one")
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
        top.addWidget(self.compare_btn)
        top.addWidget(self.remove_btn)
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
        what = "bpb" if self.units == "bpb" else "loss"
        own = f"{html_escape(self.run_label)}: " if self.overlay is not None and self.run_label else ""
        val = self.val_label() if self.units == "nats" else self.val_label().replace("val loss", "val bpb", 1)
        parts = [_legend_line(palette.RANK_COLORS[0], f"{own}train {what} (smoothed; raw faint)"),
                 _legend_line(palette.RANK_COLORS[1], val, "&#9679;")]
        if self.overlay is not None:
            name = html_escape(self.overlay.label)
            parts.append("<br>" + _legend_line(_OVERLAY_COLOR, f"{name}: train {what} (smoothed)", "&#9476;&#9476;"))
            if len(self.overlay.val[0]):
                parts.append(_legend_line(_OVERLAY_COLOR, f"{name}: val {what}", "&#9650;"))
        self.legend.setText(" &nbsp; ".join(parts))

    # ---- units and a second run -----------------------------------------------------------------
    def set_units(self, units: str) -> None:
        """Draw the train and val curves in nats or in bits per byte (from each step's record)."""
        if units not in UNITS:
            raise ValueError(f"units must be one of {sorted(UNITS)}, not {units!r}")
        self.units = units
        self.plot.getPlotItem().setLabel("left", UNITS[units])
        self._update_legend()
        self._dirty = True
        self.redraw()

    def overlay_series(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """What the overlay draws (raw, before smoothing), in the current units: (steps, train, val steps, val)."""
        if self.overlay is None:
            return None
        o = self.overlay
        (tx, ty), (vx, vy) = (o.bpb, o.val_bpb) if self.units == "bpb" else (o.loss, o.val)
        return tx.copy(), ty.copy(), vx.copy(), vy.copy()

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
        """Bits per byte of the step (and of its val loss): the hover read-out, and the curves in bpb units."""
        x = float(step)
        for ring, v in ((self.bpb, bpb), (self.val_bpb, val_bpb)):
            if v is not None:
                if ring.last_x() == x:
                    ring.truncate_from(x)
                ring.add(x, _finite_or_nan(v))
        if self.units == "bpb":
            self._dirty = True

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

        tx, ty, vx, vy = self.drawn()
        w = self.smoothing_weight()
        self.raw_curve.setData(tx, ty, connect="finite")
        self.raw_curve.setVisible(w > 0)
        self.train_curve.setData(tx, ema(ty, w) if w > 0 else ty, connect="finite")
        self.val_curve.setData(vx, vy, connect="finite")
        over = self.overlay_series()
        if over is None:
            self.overlay_curve.setData([], [])
            self.overlay_val_curve.setData([], [])
        else:
            ox, oy, ovx, ovy = over
            self.overlay_curve.setData(ox, ema(oy, w) if w > 0 and len(oy) else oy, connect="finite")
            self.overlay_val_curve.setData(ovx, ovy)
        self.stack.setCurrentWidget(self.plot if len(tx) or len(vx) or over is not None else self.empty)
        self.redraw_count += 1

    # ---- reading back -------------------------------------------------------------------------
    def drawn(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(train steps, train, val steps, val) in the current units: the losses, or each step's bpb."""
        if self.units == "bpb":
            return (*self.bpb.data(), *self.val_bpb.data())
        return self.series()

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
        self._data: np.ndarray | None = None  # what is drawn: the losses, or their bits per byte
        self._nats: np.ndarray | None = None
        self._bpb: np.ndarray | None = None  # each target's loss / ln 2 / its bytes (NaN: <|endoftext|>)
        self.units = "nats"
        self._levels: tuple[float, float] | None = None  # None: automatic (finite min/max)
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    def set_units(self, units: str) -> None:
        """Colour the cells by loss in nats or in bits per byte (when `set_bpb` gave them)."""
        if units not in UNITS:
            raise ValueError(f"units must be one of {sorted(UNITS)}, not {units!r}")
        self.units = units
        self.colorbar.setLabel("left", "loss (nats)" if units == "nats" else "bits per byte")
        self._show()

    def set_bpb(self, per_token_bpb: np.ndarray | None) -> None:
        """The same (B, N) cells in bits per byte (None: unknown for this step)."""
        if per_token_bpb is None or self._nats is None:
            self._bpb = None
        else:
            b = np.asarray(per_token_bpb, dtype=np.float32).reshape(self._nats.shape)
            self._bpb = b.copy()
        self._show()

    def _show(self) -> None:
        src = self._bpb if self.units == "bpb" else self._nats
        if src is None:
            if self._data is not None:
                self._data = None
                self.image.clear()
                self.label.setText("no bits per byte for this step" if self._nats is not None
                                   else "no per-token losses for this step")
            return
        if src is self._data:  # already drawn (set_bpb while showing nats): no second image of the same cells
            return
        first = self._data is None or self._data.shape != src.shape
        if self._data is None and self.label.text().startswith("no "):
            self.label.setText("hover a cell: row, position, loss")
        self._data = src
        self.image.setImage(self._data, autoLevels=False)
        self.image.setRect(-0.5, -0.5, float(src.shape[1]), float(src.shape[0]))  # cell (i, j) centred on (j, i)
        self._apply_levels()
        if first:
            self.plot.getPlotItem().getViewBox().autoRange(padding=0.0)

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
        self._nats = a.copy()
        self._bpb = None  # the step's bpb, when known, follows through set_bpb
        self._show()

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
        self._data = self._nats = self._bpb = None
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
        text = f"row i={i}, position j={j}: loss {float(self._nats[i, j]):.4f} nats"
        if self._bpb is not None:
            b = float(self._bpb[i, j])
            text += f" · {b:.4f} bits per byte" if math.isfinite(b) else " · no bytes (<|endoftext|>)"
        return text

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
    exponential moving average over steps (positions late in the block see more context).

    Units: nats, or bits per byte (`set_bpb`: sum of loss / ln 2 / sum of bytes at each position). A toggle
    splits the step's curve into the targets right after an <|endoftext|> (the first token of a new
    document, with no context of its own) and the rest (`set_split`, data/documents.position_split)."""

    SPLIT_TIP = ("Split the loss by position into the targets that follow an <|endoftext|> (the first token of a "
                 "new document: the model predicts it from the end of another document) and all the others")

    def __init__(self, parent: QWidget | None = None, ema_alpha: float = 0.1):
        super().__init__(parent)
        self.ema_alpha = float(ema_alpha)
        self.units = "nats"
        self.plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems=grid_axes())
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "position in block (j)")
        item.setLabel("left", "mean loss (nats)")
        show_grid(item)
        self.legend_item = item.addLegend(offset=(-10, 10))
        self.curve = item.plot([], [], pen=_POS_PEN, name="this step")
        self.ema_curve = item.plot([], [], pen=_EMA_PEN, name="moving average")
        self.rest_curve = pg.PlotDataItem([], [], pen=pg.mkPen(_REST_COLOR, width=1))
        self.after_curve = pg.PlotDataItem([], [], pen=None, symbol="o", symbolSize=7,
                                           symbolBrush=pg.mkBrush(_AFTER_EOT_COLOR), symbolPen=None)
        self.after_curve.setDownsampling(auto=False)
        # the same split over every step shown live so far (a step holds few document starts; a run holds many)
        self.rest_run_curve = pg.PlotDataItem([], [], pen=pg.mkPen(_REST_COLOR, width=2, style=Qt.PenStyle.DashLine))
        self.after_run_curve = pg.PlotDataItem([], [], pen=None, symbol="o", symbolSize=7, symbolBrush=None,
                                               symbolPen=pg.mkPen(_AFTER_EOT_COLOR, width=1.5))  # sparse: rings
        self.after_run_curve.setDownsampling(auto=False)
        for c in (self.rest_run_curve, self.after_run_curve, self.rest_curve, self.after_curve):
            item.addItem(c)
        self.ema_check = QCheckBox("moving average over steps")
        self.ema_check.setChecked(True)
        self.ema_check.toggled.connect(self.set_ema_enabled)
        self.split_check = QCheckBox("split at <|endoftext|>")
        self.split_check.setToolTip(self.SPLIT_TIP)
        self.split_check.toggled.connect(self.set_split_enabled)
        self.split_label = QLabel()
        self.split_label.setTextFormat(Qt.TextFormat.RichText)
        self.split_label.setWordWrap(True)
        self.split_label.hide()
        row = QHBoxLayout()
        row.addWidget(self.ema_check)
        row.addWidget(self.split_check)
        row.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.split_label)
        lay.addLayout(row)
        self._y: dict[str, np.ndarray | None] = {"nats": None, "bpb": None}
        self._ema: dict[str, np.ndarray | None] = {"nats": None, "bpb": None}
        self._split: dict[str, Any] | None = None
        self._split_acc: dict[str, Any] | None = None  # data/documents.add_split over the live steps
        self._ema_enabled = True
        self._split_enabled = False
        self._legend_key: tuple[bool, bool] | None = None  # what the legend lists: rebuilt only when it changes
        self._batch = 0  # > 0 inside batch(): the setters only record, one redraw at the end
        self._batch_dirty = False
        self.redraw_count = 0

    @contextmanager
    def batch(self):
        """Several setters for one step (set_data, then set_bpb and set_split from the lenses) draw once, at
        the end: `with plot.batch(): ...`. Nested batches draw when the outermost ends."""
        self._batch += 1
        try:
            yield self
        finally:
            self._batch -= 1
            if not self._batch and self._batch_dirty:
                self._batch_dirty = False
                self._redraw()

    # ---- settings ---------------------------------------------------------------------------------
    def set_ema_enabled(self, on: bool) -> None:
        self._ema_enabled = bool(on)
        if self.ema_check.isChecked() != self._ema_enabled:
            self.ema_check.setChecked(self._ema_enabled)
        self._redraw()

    def set_split_enabled(self, on: bool) -> None:
        """Show the step's loss by position split at document boundaries (instead of the one curve)."""
        self._split_enabled = bool(on)
        if self.split_check.isChecked() != self._split_enabled:
            self.split_check.setChecked(self._split_enabled)
        self._redraw()

    def split_enabled(self) -> bool:
        return self._split_enabled

    def set_units(self, units: str) -> None:
        if units not in UNITS:
            raise ValueError(f"units must be one of {sorted(UNITS)}, not {units!r}")
        self.units = units
        self.plot.getPlotItem().setLabel("left", "mean loss (nats)" if units == "nats" else "bits per byte")
        self._redraw()

    def reset_ema(self) -> None:
        """A new run: the moving average and the split over its steps start again."""
        self._ema = {"nats": None, "bpb": None}
        self._split_acc = None
        self._redraw()

    # ---- data ---------------------------------------------------------------------------------------
    def _fold(self, units: str, y: np.ndarray, update_ema: bool) -> None:
        self._y[units] = y.copy()
        if not update_ema:
            return
        ema = self._ema[units]
        if ema is None or ema.shape != y.shape:
            self._ema[units] = y.copy()
        else:
            a = self.ema_alpha
            upd = (1.0 - a) * ema + a * y
            self._ema[units] = np.where(np.isfinite(upd), upd, np.where(np.isfinite(y), y, ema))

    def set_data(self, position_loss: np.ndarray | None, update_ema: bool = True) -> None:
        """The curve of one step (nats); `update_ema` folds it into the moving average (live steps, in
        order; a step scrubbed to is shown without touching the average). The step's bpb and boundary
        split, when known, follow through `set_bpb` / `set_split`; until then they are cleared."""
        self._y["bpb"] = None
        self._split = None
        if position_loss is None:
            self._y["nats"] = None
        else:
            self._fold("nats", np.asarray(position_loss, dtype=np.float64).ravel(), update_ema)
        self._redraw()

    def set_bpb(self, position_bpb: np.ndarray | None, update_ema: bool = True) -> None:
        """The same step's curve in bits per byte (sum of loss / ln 2 / sum of bytes at each position)."""
        if position_bpb is None:
            self._y["bpb"] = None
        else:
            self._fold("bpb", np.asarray(position_bpb, dtype=np.float64).ravel(), update_ema)
        self._redraw()

    def set_split(self, split: dict[str, Any] | None, accumulate: bool = False) -> None:
        """The step's loss by position split at <|endoftext|> (data/documents.position_split), or None;
        `accumulate` (live steps, in order) also folds it into the split over the run's steps."""
        from nanogpt_viz.data.documents import add_split

        self._split = split
        if split is not None and accumulate:
            self._split_acc = add_split(self._split_acc, split)
        self._redraw()

    def _redraw(self) -> None:
        if self._batch:
            self._batch_dirty = True
            return
        self.redraw_count += 1
        split_on = self._split_enabled
        y = self._y[self.units]
        if y is None or split_on:
            self.curve.setData([], [])
        else:
            self.curve.setData(np.arange(len(y), dtype=np.float64), y, connect="finite")
        ema = self._ema[self.units]
        show_ema = ema is not None and self._ema_enabled and not split_on
        if show_ema:
            self.ema_curve.setData(np.arange(len(ema), dtype=np.float64), ema, connect="finite")
        else:
            self.ema_curve.setData([], [])
        self._redraw_split()
        self._update_legend()

    def _running(self) -> dict[str, Any] | None:
        from nanogpt_viz.data.documents import running_split

        return None if self._split_acc is None else running_split(self._split_acc)

    def _split_arrays(self, sp: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        sp = self._split if sp is None else sp
        if sp is None:
            return None
        if self.units == "bpb":
            return (sp["after_bpb"], sp["rest_bpb"]) if "after_bpb" in sp else None
        return sp["after"], sp["rest"]

    def _redraw_split(self) -> None:
        on = self._split_enabled
        self.split_label.setVisible(on)
        running = self._running() if on else None
        run_arrays = self._split_arrays(running) if running is not None and running["steps"] > 1 else None
        if run_arrays is None:
            self.after_run_curve.setData([], [])
            self.rest_run_curve.setData([], [])
        else:
            x = np.arange(len(run_arrays[1]), dtype=np.float64)
            fin = np.isfinite(run_arrays[0])
            self.after_run_curve.setData(x[fin], run_arrays[0][fin])
            self.rest_run_curve.setData(x, run_arrays[1], connect="finite")
        arrays = self._split_arrays() if on else None
        if arrays is None:
            self.after_curve.setData([], [])
            self.rest_curve.setData([], [])
        else:
            after, rest = arrays
            x = np.arange(len(rest), dtype=np.float64)
            fin = np.isfinite(after)
            self.after_curve.setData(x[fin], after[fin])
            self.rest_curve.setData(x, rest, connect="finite")
        if not on:
            return
        sfx = "_bpb" if self.units == "bpb" else ""
        unit = " bpb" if self.units == "bpb" else ""

        def means(sp, after_mark, rest_mark) -> str:
            ma, mr = sp.get("mean_after" + sfx), sp.get("mean_rest" + sfx)
            a = (f"first token after &lt;|endoftext|&gt; <b>{ma:.3f}</b>{unit} ({sp['n_after']:,})" if ma is not None
                 else "no target after &lt;|endoftext|&gt;")
            r = f"the rest <b>{mr:.3f}</b> ({sp['n_rest']:,})" if mr is not None else "no other target"
            jump = f" · jump <b>{ma - mr:+.3f}</b>" if ma is not None and mr is not None else ""
            return (_legend_line(_AFTER_EOT_COLOR, a, after_mark) + " &nbsp; "
                    + _legend_line(_REST_COLOR, r, rest_mark) + jump)
        if arrays is None:
            lines = ["<b>This step</b>: " + ("no per-token losses to split." if self._split is None
                                             else "no bits per byte.")]
        else:
            lines = ["<b>This step</b>: " + means(self._split, "&#9679;", "&#9473;&#9473;")]
        if run_arrays is not None:
            lines.append(f"<b>Over the {running['steps']:,} steps shown live</b>: "
                         + means(running, "&#9675;", "&#9476;&#9476;"))
        self.split_label.setText("<br>".join(lines))

    def _update_legend(self) -> None:
        """The legend lists the curves shown (not their values): rebuilt only when the split or the moving average
        is switched, not on every step (a rebuild makes new LabelItems: most of a scrubbed step's time)."""
        has_ema = self._ema["nats"] is not None  # a reopened run folded no live step: no average to name
        key = (self._split_enabled, self._ema_enabled and has_ema)
        if key == self._legend_key:
            return
        self._legend_key = key
        lg = self.legend_item
        lg.clear()
        if not self._split_enabled:  # split: the label under the plot names the curves, with their means
            lg.addItem(self.curve, "this step")
            if key[1]:
                lg.addItem(self.ema_curve, "moving average")

    def clear(self) -> None:
        self._y = {"nats": None, "bpb": None}
        self._ema = {"nats": None, "bpb": None}
        self._split = self._split_acc = None
        self._redraw()

    def series(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(latest position loss, moving average or None when off), in the current units."""
        y, ema = self._y[self.units], self._ema[self.units]
        return (None if y is None else y.copy(),
                None if (ema is None or not self._ema_enabled) else ema.copy())

    def split_series(self, over_run: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """(after <|endoftext|>, the rest) by position (current units) of this step, or over the run's live
        steps so far; None when not known."""
        arrays = self._split_arrays(self._running() if over_run else None) if (
            not over_run or self._split_acc is not None) else None
        return None if arrays is None else (arrays[0].copy(), arrays[1].copy())

    def split_steps(self) -> int:
        """How many live steps the split over the run holds."""
        return 0 if self._split_acc is None else int(self._split_acc["steps"])

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
        self._stale = False  # rows set while hidden, not drawn yet
        self.plot.scene().sigMouseMoved.connect(self._on_mouse_moved)

    def set_rows(self, steps: np.ndarray, rows: np.ndarray | None) -> None:
        """One row per step shown: `steps` (n,) ascending, `rows` (n, N)."""
        if rows is None or len(steps) == 0:
            self.clear()
            return
        a = np.asarray(rows, dtype=np.float32).reshape(len(steps), -1)
        self._steps = np.asarray(steps, dtype=np.int64).copy()
        self._rows = a
        if not self.isVisible():  # a hidden tab: drawn when shown (showEvent), with the rows it holds then
            self._stale = True
            return
        self._draw()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        if self._stale:
            self._draw()

    def _draw(self) -> None:
        """The image, its place and the colour bar's levels from the rows held."""
        self._stale = False
        a = self._rows
        if a is None:
            return
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
        self._stale = False
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
        if self._stale:  # rows set while hidden: the file shows them
            self._draw()
        return _export_png(self.plot, self.plot.getPlotItem(), path, width)


# ----------------------------------------------------------------------------------------------
# Gradient norm vs step, with the clip threshold (issue 13, item 5)


class GradNormPlot(_Overlaid, QWidget):
    """The gradient norm before clipping (StepReport.grad_norm) vs step, with the run's clip threshold
    (TrainConfig.grad_clip) as a dashed horizontal line: every point above it was clipped. Summing the
    micro-batch losses without dividing by K (train --no-divide-by-k) puts every step above the line."""

    EMPTY = "No training yet: the gradient norm of each step (before clipping) is drawn here."

    def __init__(self, parent: QWidget | None = None, capacity: int = 20_000):
        super().__init__(parent)
        self.norms = RingSeries(capacity)
        self.clip: float | None = None
        self.plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems=grid_axes(bottom=StepAxis("bottom")))
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "step")
        item.setLabel("left", "gradient norm")
        show_grid(item)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        self.curve = item.plot([], [], pen=pg.mkPen(palette.RANK_COLORS[2], width=1))
        self.overlay_curve = item.plot([], [], pen=pg.mkPen(_OVERLAY_COLOR, width=2, style=Qt.PenStyle.DashLine))
        peak_per_pixel(item)
        self.overlay: RunSeries | None = None
        self.run_label = ""
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
        self.compare_btn, self.remove_btn = _compare_buttons(
            "Compare with run: overlay another run's gradient norm (a run directory) on this one; the same plan "
            "trained without dividing by K sits K times higher")
        top = QHBoxLayout()
        top.setContentsMargins(6, 0, 6, 0)
        top.addWidget(self.compare_btn)
        top.addWidget(self.remove_btn)
        top.addStretch(1)
        top.addWidget(self.log_y)
        self.stack = QStackedLayout()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.plot)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.legend)  # its own line, above the data: never covers the curve
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
        clip = (f"clip threshold {self.clip:g} (above it the step was clipped)" if self.clip is not None
                else "no clipping")
        own = f"{html_escape(self.run_label)}: " if self.overlay is not None and self.run_label else ""
        parts = [_legend_line(palette.RANK_COLORS[2], f"{own}gradient norm before clipping"),
                 _legend_line(palette.RANK_COLORS[1], clip)]
        if self.overlay is not None:
            o = self.overlay
            share = self.overlay_clipped_share()
            extra = (f", clipped on {100 * share:.0f}% of its steps" if self.clip is not None and len(o.grad_norm[0])
                     else "")
            if o.clip is not None and self.clip is not None and abs(o.clip - self.clip) > 1e-12:
                extra += f", its own clip {o.clip:g}"
            parts.append("<br>" + _legend_line(_OVERLAY_COLOR, f"{html_escape(o.label)}: gradient norm{extra}",
                                               "&#9476;&#9476;"))
        self.legend.setText(" &nbsp; ".join(parts))

    def overlay_series(self) -> tuple[np.ndarray, np.ndarray] | None:
        return None if self.overlay is None else (self.overlay.grad_norm[0].copy(), self.overlay.grad_norm[1].copy())

    def overlay_clipped_share(self) -> float:
        """The share of the overlaid run's steps above the shown run's threshold (its own when it has one)."""
        if self.overlay is None:
            return 0.0
        clip = self.overlay.clip if self.overlay.clip is not None else self.clip
        y = self.overlay.grad_norm[1]
        if clip is None or not len(y):
            return 0.0
        return float(np.mean(y > clip))

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
        over = self.overlay_series()
        self.overlay_curve.setData(*(over if over is not None else ([], [])), connect="finite")
        self.stack.setCurrentWidget(self.plot if len(x) or over is not None else self.empty)

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
        if self.overlay is not None:
            ox, oy = self.overlay.grad_norm
            j = nearest_index(ox, sx[i])
            if j >= 0 and ox[j] == sx[i]:
                text += f" · {self.overlay.label.split(' (')[0]}: {oy[j]:.4g}"
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
        self.lr_plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems=grid_axes(bottom=StepAxis("bottom")))
        self.tps_plot = pg.PlotWidget(background=palette.BACKGROUND, axisItems=grid_axes(bottom=StepAxis("bottom")))
        for pw, label in ((self.lr_plot, "learning rate"), (self.tps_plot, "tokens/s")):
            item = pw.getPlotItem()
            item.setLabel("left", label)
            show_grid(item)
            item.setClipToView(True)
            item.setDownsampling(auto=True, mode="peak")
        self.tps_plot.getPlotItem().setLabel("bottom", "step")
        self.tps_plot.setXLink(self.lr_plot)
        self.lr_curve = self.lr_plot.getPlotItem().plot([], [], pen=pg.mkPen(palette.RANK_COLORS[0], width=1.5))
        self.tps_curve = self.tps_plot.getPlotItem().plot([], [], pen=pg.mkPen(palette.RANK_COLORS[3], width=1))
        peak_per_pixel(self.lr_plot.getPlotItem())
        peak_per_pixel(self.tps_plot.getPlotItem())
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
