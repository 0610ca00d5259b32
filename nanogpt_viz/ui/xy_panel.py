"""The X / Y matrices of the current step, for one (micro-batch, rank) at a time.

Each row i of the micro-batch is drawn as two lines of N chips: the inputs X[i, :] = t[s : s+N] and,
right below, the targets Y[i, :] = t[s+1 : s+N+1], so X[i, j] sits directly above the token the model
must predict from it. Faint diagonals link Y[i, j] to X[i, j+1] (the same corpus token): Y is X
shifted left by one. Only the visible chips are painted, so N = 1024 scrolls smoothly.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QRect, QSize, Qt, Signal
from PySide6.QtGui import QAction, QColor, QFont, QFontDatabase, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import (QAbstractItemView, QApplication, QComboBox, QDialog, QDialogButtonBox, QHBoxLayout,
                               QHeaderView, QLabel, QMenu, QPushButton, QScrollArea, QSpinBox,
                               QTableWidget, QTableWidgetItem, QToolTip, QVBoxLayout, QWidget)

from nanogpt_viz.data.documents import bpb_text
from nanogpt_viz.ui import palette
from nanogpt_viz.viewmodel import offset_short, offset_text
from nanogpt_viz.viewmodel_xy import MAX_CELL_W, MIN_CELL_W, XYGeometry, XYState, row_predictions


__all__ = ["XYPanel", "RowExplainDialog"]



def _mix(a: QColor, b: QColor, t: float) -> QColor:
    """a*(1-t) + b*t."""
    return QColor(round(a.red() * (1 - t) + b.red() * t), round(a.green() * (1 - t) + b.green() * t),
                  round(a.blue() * (1 - t) + b.blue() * t))


def _text_on(bg: QColor) -> QColor:
    return palette.TEXT if bg.lightnessF() > 0.55 else QColor("#ffffff")


def _mono_font(point_delta: float = -1.0) -> QFont:
    f = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
    if f.pointSizeF() > 0:
        f.setPointSizeF(max(6.0, f.pointSizeF() + point_delta))
    return f


# ----------------------------------------------------------------------------------------------


class _Canvas(QWidget):
    """The painted chips, placed by `XYGeometry`. It reads the panel's `XYState` and reports what the
    mouse does through its signals; the panel decides."""

    hovered_cell = Signal(object)  # (which, i, j) under the mouse, None on leave
    row_pressed = Signal(int)
    cell_clicked = Signal(int, int)  # (i, j): the prediction from X[i, j]
    row_activated = Signal(int)  # a double click: explain the row
    row_menu_requested = Signal(int, QPoint)  # (row, global position)
    zoom_requested = Signal(float, float)  # (factor, canvas x under the mouse)

    def __init__(self, state: XYState, display_text, tooltip_text, parent: QWidget | None = None):
        super().__init__(parent)
        self.state = state
        self.display_text = display_text  # token id -> its text
        self.tooltip_text = tooltip_text  # (which, i, j) -> the cell's tooltip
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setFocusPolicy(Qt.FocusPolicy.WheelFocus)
        self.font_ = _mono_font()
        self.fm = QFontMetrics(self.font_)
        self.geometry_ = XYGeometry(self.fm.height() + 6, state)
        self.cell_h = self.geometry_.cell_h
        self._elided: dict[int, str] = {}
        self._elided_w = -1

    # ---- geometry -----------------------------------------------------------------------------
    @property
    def cell_w(self) -> int:
        return self.state.cell_w

    @property
    def row_h(self) -> int:
        return self.geometry_.row_h

    def row_top(self, i: int) -> int:
        return self.geometry_.row_top(i)

    def cell_rect(self, which: str, i: int, j: int) -> QRect:
        return QRect(*self.geometry_.cell_rect(which, i, j))

    def cell_at(self, pos: QPoint) -> tuple[str, int, int] | None:
        return self.geometry_.cell_at(pos.x(), pos.y())

    def row_at_y(self, y: int) -> int:
        return self.geometry_.row_at_y(y)

    def content_size(self) -> QSize:
        return QSize(*self.geometry_.content_size())

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.content_size()

    def relayout(self) -> None:
        self.resize(self.content_size())
        self.updateGeometry()
        self.update()

    def clear_text_cache(self) -> None:
        self._elided.clear()

    # ---- painting -----------------------------------------------------------------------------
    def _elide(self, tid: int) -> str:
        cw = self.cell_w
        if cw != self._elided_w:
            self._elided.clear()
            self._elided_w = cw
        s = self._elided.get(tid)
        if s is None:
            if len(self._elided) > 50_000:
                self._elided.clear()
            s = self.fm.elidedText(self.display_text(tid), Qt.TextElideMode.ElideRight, cw - 4)
            self._elided[tid] = s
        return s

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        r = event.rect()
        p.fillRect(r, palette.BACKGROUND)
        st, geo = self.state, self.geometry_
        X, Y, starts = st.X, st.Y, st.starts
        if X is None:
            p.setPen(palette.UNUSED_TEXT)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no plan")
            return
        N = X.shape[1]
        cw, ch = self.cell_w, self.cell_h
        j0, j1 = geo.cols_between(r.left(), r.right())
        i0, i1 = geo.rows_between(r.top(), r.bottom())
        if j0 >= j1 or i0 >= i1:
            return
        p.setFont(self.font_)
        x_bg = palette.step_color(st.step)
        y_bg = _mix(x_bg, QColor("#ffffff"), 0.55)
        x_fg, y_fg = _text_on(x_bg), _text_on(y_bg)
        left_mid = Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft
        loss = st.visible_loss() if st.color_mode == "loss" else None
        show_text = cw >= 10
        hl = st.highlight
        hover = st.hover_pos
        link_pen = QPen(QColor(0, 0, 0, 60), 1)
        hover_link_pen = QPen(palette.CURRENT_OUTLINE, 2)
        outline_pen = QPen(palette.CURRENT_OUTLINE, 2)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        for i in range(i0, i1):
            s = int(starts[i])
            top = geo.row_top(i)
            ytop = geo.y_top(i)
            # X line then Y line
            for j in range(j0, j1):
                x = geo.LEFT + j * cw
                p.fillRect(x, top, cw - 1, ch, x_bg)
                if loss is not None:
                    v = float(loss[i, j])
                    bg = palette.loss_color(v, st.vmin, st.vmax) if math.isfinite(v) else y_bg
                else:
                    bg = y_bg
                p.fillRect(x, ytop, cw - 1, ch, bg)
                if show_text:
                    p.setPen(x_fg)
                    p.drawText(QRect(x + 2, top, cw - 4, ch), left_mid, self._elide(int(X[i, j])))
                    p.setPen(_text_on(bg) if loss is not None else y_fg)
                    p.drawText(QRect(x + 2, ytop, cw - 4, ch), left_mid, self._elide(int(Y[i, j])))
            # the shift: Y[i, j] is the token X[i, j+1]
            if cw >= 8:
                p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
                p.setPen(link_pen)
                for j in range(j0, j1):
                    xa = geo.LEFT + j * cw + cw // 2
                    p.drawLine(QPointF(xa, ytop - 0.5), QPointF(xa + cw, top + ch + 0.5))
                p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
            # highlights: any cell holding the hovered / highlighted corpus position
            for pos, fill, is_hover in ((hl, None, False), (hover, palette.TARGET_ONLY, True)):
                if pos is None or pos < 0:
                    continue
                for which, j in (("x", pos - s), ("y", pos - s - 1)):
                    if 0 <= j < N and j0 - 1 <= j <= j1:
                        cr = self.cell_rect(which, i, j).adjusted(1, 1, -2, -1)
                        if fill is not None:
                            p.fillRect(cr, fill)
                            if show_text:
                                p.setPen(palette.TEXT)
                                tid = int(X[i, j] if which == "x" else Y[i, j])
                                p.drawText(cr.adjusted(1, 0, -1, 0), left_mid, self._elide(tid))
                        p.setPen(outline_pen)
                        p.setBrush(Qt.BrushStyle.NoBrush)
                        p.drawRect(cr)
                if is_hover and 0 <= pos - s - 1 < N:  # emphasise the pair link of the hovered token
                    j = pos - s - 1
                    xa = geo.LEFT + j * cw + cw // 2
                    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
                    p.setPen(hover_link_pen)
                    p.drawLine(QPointF(xa, ytop - 0.5), QPointF(xa + cw, top + ch + 0.5))
                    p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        p.end()

    # ---- interaction --------------------------------------------------------------------------
    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        self.hovered_cell.emit(self.cell_at(event.position().toPoint()))
        super().mouseMoveEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.hovered_cell.emit(None)
        super().leaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        cell = self.cell_at(event.position().toPoint())
        if cell is not None:
            self.row_pressed.emit(cell[1])
            self.cell_clicked.emit(cell[1], cell[2])
        super().mousePressEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        cell = self.cell_at(event.position().toPoint())
        if cell is not None:
            self.row_activated.emit(cell[1])
        else:
            super().mouseDoubleClickEvent(event)

    def event(self, ev) -> bool:
        if ev.type() == QEvent.Type.ToolTip:
            cell = self.cell_at(ev.pos())
            if cell is None:
                QToolTip.hideText()
                ev.ignore()
            else:
                QToolTip.showText(ev.globalPos(), self.tooltip_text(*cell), self, self.cell_rect(*cell))
            return True
        return super().event(ev)

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        i = self.row_at_y(event.pos().y())
        if i >= 0:
            self.row_menu_requested.emit(i, event.globalPos())

    def wheelEvent(self, event) -> None:  # noqa: N802
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            dy = event.angleDelta().y()
            if dy:
                self.zoom_requested.emit(1.15 ** (dy / 120.0), event.position().x())
            event.accept()
            return
        event.ignore()


class _RowLabels(QWidget):
    """The label column ("row i", "s=…", X / Y tags); follows the canvas' vertical scroll bar."""

    WIDTH = 132
    row_pressed = Signal(int)
    row_activated = Signal(int)
    row_menu_requested = Signal(int, QPoint)

    def __init__(self, state: XYState, geometry: XYGeometry, scroll_bar, parent: QWidget | None = None):
        super().__init__(parent)
        self.state, self.geo, self.scroll_bar = state, geometry, scroll_bar
        self.setFixedWidth(self.WIDTH)
        self.font_ = _mono_font()
        self.tag_font = QFont(self.font_)
        self.tag_font.setBold(True)
        self.setToolTip("double-click a row to list its N (context → next token) predictions")

    def _offset(self) -> int:
        return self.scroll_bar.value()

    def row_at_y(self, y: int) -> int:
        return self.geo.row_at_y(y + self._offset())

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(event.rect(), palette.BACKGROUND)
        st, geo = self.state, self.geo
        if st.X is None:
            return
        off = self._offset()
        ch = geo.cell_h
        band = palette.rank_color(st.rank)
        i0, i1 = geo.rows_between(off, off + self.height())
        tag_w = 34
        for i in range(i0, i1):
            top = geo.row_top(i) - off
            ytop = top + ch + geo.ARROW_GAP
            if i == st.selected_row:
                p.fillRect(QRect(0, top - 2, self.width(), 2 * ch + geo.ARROW_GAP + 4), QColor(0, 0, 0, 18))
            p.fillRect(QRect(0, top, 3, 2 * ch + geo.ARROW_GAP), band)
            p.setFont(self.font_)
            p.setPen(palette.TEXT)
            text_rect_w = self.width() - tag_w - 8
            p.drawText(QRect(6, top, text_rect_w, ch), Qt.AlignmentFlag.AlignVCenter, f"row {i}")
            p.setPen(palette.UNUSED_TEXT)
            start, one = int(st.starts[i]), st.one_based
            label = offset_short(start, one)
            if p.fontMetrics().horizontalAdvance(label) > text_rect_w:  # a long corpus: the compact form
                label = f"#{start + 1:,}" if one else f"s={start:,}"
            p.drawText(QRect(6, ytop, text_rect_w, ch), Qt.AlignmentFlag.AlignVCenter, label)
            p.setFont(self.tag_font)
            p.setPen(palette.TEXT)
            tx = self.width() - tag_w - 2
            p.fillRect(QRect(tx, top, tag_w, ch), palette.step_color(st.step))
            p.drawText(QRect(tx, top, tag_w, ch), Qt.AlignmentFlag.AlignCenter, "X")
            p.fillRect(QRect(tx, ytop, tag_w, ch), _mix(palette.step_color(st.step), QColor("#ffffff"), 0.55))
            p.drawText(QRect(tx, ytop, tag_w, ch), Qt.AlignmentFlag.AlignCenter, "Y ←1")
        p.end()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        i = self.row_at_y(int(event.position().y()))
        if i >= 0:
            self.row_pressed.emit(i)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        i = self.row_at_y(int(event.position().y()))
        if i >= 0:
            self.row_activated.emit(i)

    def contextMenuEvent(self, event) -> None:  # noqa: N802
        i = self.row_at_y(event.pos().y())
        if i >= 0:
            self.row_menu_requested.emit(i, event.globalPos())

    def wheelEvent(self, event) -> None:  # noqa: N802
        QApplication.sendEvent(self.scroll_bar, event)  # scroll the rows like the canvas


# ----------------------------------------------------------------------------------------------


class RowExplainDialog(QDialog):
    """A row as its N (context → next token) predictions. `pairs[j]` is a dict with keys
    j, context_start, context_end (inclusive positions), context_ids (the last shown ids),
    target_pos, target_id, loss (float or None)."""

    COLUMNS = ("j", "context t[a..b]", "context tokens (last 8)", "→ next token Y[i, j]", "loss")

    def __init__(self, parent: QWidget | None, title: str, intro: str, pairs: list[dict[str, Any]],
                 display_text):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.pairs = pairs
        lay = QVBoxLayout(self)
        label = QLabel(intro)
        label.setWordWrap(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(label)
        self.table = QTableWidget(len(pairs), len(self.COLUMNS), self)
        self.table.setHorizontalHeaderLabels(list(self.COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setFont(_mono_font(0))
        self.table.setWordWrap(False)
        has_loss = any(pr["loss"] is not None for pr in pairs)
        for r, pr in enumerate(pairs):
            ctx = [display_text(t) for t in pr["context_ids"]]
            n_ctx = pr["context_end"] - pr["context_start"] + 1
            ctx_text = ("… " if n_ctx > len(ctx) else "") + " ".join(f"[{c}]" for c in ctx)
            cells = (str(pr["j"]),
                     f"t[{pr['context_start']:,}..{pr['context_end']:,}]  ({n_ctx} token{'s' if n_ctx != 1 else ''})",
                     ctx_text,
                     f"→ [{display_text(pr['target_id'])}]  (t[{pr['target_pos']:,}], id {pr['target_id']})",
                     "" if pr["loss"] is None else f"{pr['loss']:.4f}")
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c in (0, 4):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(r, c, item)
        self.table.setColumnHidden(4, not has_loss)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        lay.addWidget(self.table, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.close)
        lay.addWidget(buttons)
        self.resize(860, 480)


# ----------------------------------------------------------------------------------------------


class XYPanel(QWidget):
    """X above Y for each row of one (micro-batch, rank) of the current step.

    Signals: `hovered(int)` corpus position under the mouse (-1 on leave);
    `selection_changed(int, int)` (micro, rank) picked with the spin boxes.
    """

    hovered = Signal(int)
    selection_changed = Signal(int, int)
    prediction_clicked = Signal("qlonglong", "qlonglong")  # a cell clicked: (input position, its row's start)

    def __init__(self, parent: QWidget | None = None, cell_width: int = 44):
        super().__init__(parent)
        self._model = None
        self._table: Sequence[str] | None = None
        self.state = XYState(cell_w=int(np.clip(cell_width, MIN_CELL_W, MAX_CELL_W)))
        self._dialogs: list[QDialog] = []

        self.header = QLabel()
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.micro_label = QLabel("micro")
        self.micro_label.setToolTip("gradient-accumulation micro-batch m (0..K-1)")
        self.micro_spin = QSpinBox()
        self.micro_spin.setAccessibleName("micro-batch")
        self.micro_spin.setToolTip("gradient-accumulation micro-batch m (0..K-1)")
        self.rank_label = QLabel("rank")
        self.rank_spin = QSpinBox()
        self.rank_spin.setAccessibleName("rank")
        self.rank_spin.setToolTip("DDP rank r (0..W-1)")
        self.color_combo = QComboBox()
        self.color_combo.addItem("colour: step", "plain")
        self.color_combo.addItem("colour Y: per-token loss", "loss")
        self.color_combo.setToolTip("colour each target by the loss of predicting it (needs a trained step)")
        # may show its text elided: with the micro-batch and rank boxes (K > 1, W > 1) the row must still fit
        # the central column of a 1280 px window
        self.color_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.color_combo.setMinimumContentsLength(10)
        self.explain_button = QPushButton("Explain row 0")
        self.explain_button.setToolTip("list the row's N (context → next token) predictions")
        self.micro_spin.valueChanged.connect(self._on_spin)
        self.rank_spin.valueChanged.connect(self._on_spin)
        self.color_combo.currentIndexChanged.connect(
            lambda _i: self.set_color_mode(self.color_combo.currentData()))
        self.explain_button.clicked.connect(lambda: self.expand_row(self.state.selected_row))

        controls = QHBoxLayout()
        for w in (self.micro_label, self.micro_spin, self.rank_label, self.rank_spin):
            controls.addWidget(w)
            w.hide()  # shown by set_model when K > 1 / W > 1; counted hidden, they would widen the first window
        controls.addStretch(1)
        controls.addWidget(self.color_combo)
        controls.addWidget(self.explain_button)

        self.canvas = _Canvas(self.state, self.display_text, self.tooltip_text, self)
        self.scroll = QScrollArea()
        self.scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        self.scroll.setWidgetResizable(False)
        self.scroll.setWidget(self.canvas)
        self.scroll.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.labels = _RowLabels(self.state, self.canvas.geometry_, self.scroll.verticalScrollBar(), self)
        self.scroll.verticalScrollBar().valueChanged.connect(self.labels.update)
        for child in (self.canvas, self.labels):
            child.row_pressed.connect(self._select_row)
            child.row_activated.connect(self.expand_row)
            child.row_menu_requested.connect(self._row_menu)
        self.canvas.hovered_cell.connect(self._hover_cell)
        self.canvas.cell_clicked.connect(self._on_cell_clicked)
        self.canvas.zoom_requested.connect(self._zoom_at)

        body = QHBoxLayout()
        body.setSpacing(0)
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.labels)
        body.addWidget(self.scroll, 1)
        lay = QVBoxLayout(self)
        lay.addWidget(self.header)
        lay.addLayout(controls)
        lay.addLayout(body, 1)
        self._refresh()

    # ---- public API ---------------------------------------------------------------------------
    def set_one_based(self, on: bool) -> None:
        """Count tokens from 1 (View menu): row labels read "token 2,305" instead of "t[2,304]"."""
        self.state.one_based = bool(on)
        self.labels.update()

    def set_model(self, model) -> None:
        """A StreamModel (or None to clear)."""
        self._model = model
        plan = getattr(model, "plan", None)
        K = plan.K if plan is not None else 1
        W = plan.W if plan is not None else 1
        for spin, n, label in ((self.micro_spin, K, self.micro_label), (self.rank_spin, W, self.rank_label)):
            spin.blockSignals(True)
            spin.setRange(0, max(0, n - 1))
            spin.blockSignals(False)
            spin.setVisible(n > 1)
            label.setVisible(n > 1)
        self.state.micro = min(self.state.micro, K - 1)
        self.state.rank = min(self.state.rank, W - 1)
        self.state.hover_pos = None
        self.state.hover = None
        self._refresh()

    def set_step(self, step: int) -> None:
        step = max(0, int(step))
        if step == self.state.step and self.state.X is not None:
            return
        self.state.step = step
        self._refresh()

    def set_micro_rank(self, micro: int, rank: int) -> None:
        """Select the (micro-batch, rank) shown (same as moving the spin boxes)."""
        self.micro_spin.blockSignals(True)
        self.rank_spin.blockSignals(True)
        self.micro_spin.setValue(int(micro))
        self.rank_spin.setValue(int(rank))
        self.micro_spin.blockSignals(False)
        self.rank_spin.blockSignals(False)
        self._on_spin()

    def set_display_table(self, table: Sequence[str] | None) -> None:
        """Display text per token id (tokenizer.display_table()); None: show ids."""
        self._table = table
        self.canvas.clear_text_cache()
        self.canvas.update()

    def set_loss(self, per_token: np.ndarray | None, ranks: Sequence[int] = (), vmin: float = 0.0,
                 vmax: float = 0.0, step: int | None = None) -> None:
        """Per-token losses (K, len(ranks), B, N) of a trained step; None clears. With `step`, the
        losses are only shown while that step is the current one."""
        self.state.set_loss(per_token, ranks, vmin, vmax, step)
        self.canvas.update()

    def set_color_mode(self, mode: str) -> None:
        if mode not in ("plain", "loss"):
            raise ValueError(f"colour mode must be 'plain' or 'loss' (got {mode!r})")
        self.state.color_mode = mode
        idx = self.color_combo.findData(mode)
        if idx != self.color_combo.currentIndex():
            self.color_combo.blockSignals(True)
            self.color_combo.setCurrentIndex(idx)
            self.color_combo.blockSignals(False)
        self.canvas.update()

    def color_mode(self) -> str:
        return self.state.color_mode

    def set_highlight(self, position: int | None) -> None:
        """Outline every X / Y cell holding corpus `position` (None or -1: none). Emits nothing."""
        position = None if position is None or int(position) < 0 else int(position)
        if position != self.state.highlight:
            self.state.highlight = position
            self.canvas.update()

    def set_cell_width(self, width: int) -> None:
        width = int(np.clip(int(width), MIN_CELL_W, MAX_CELL_W))
        if width != self.state.cell_w:
            self.state.cell_w = width
            self.canvas.relayout()
            self.labels.update()

    def cell_width(self) -> int:
        return self.state.cell_w

    def cell_rect(self, which: str, i: int, j: int) -> QRect:
        """Rectangle of X[i, j] (which="x") or Y[i, j] ("y") in `.canvas` coordinates."""
        if which not in ("x", "y"):
            raise ValueError("which must be 'x' or 'y'")
        return self.canvas.cell_rect(which, int(i), int(j))

    def values(self) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """(X, Y) shown, each (B, N); (None, None) without a model."""
        if self.state.X is None:
            return None, None
        return self.state.X.copy(), self.state.Y.copy()

    def starts(self) -> np.ndarray | None:
        return None if self.state.starts is None else self.state.starts.copy()

    def selection(self) -> tuple[int, int, int]:
        """(step, micro, rank) shown."""
        return self.state.step, self.state.micro, self.state.rank

    def position_of(self, which: str, i: int, j: int) -> int:
        """Corpus position held by X[i, j] (starts[i]+j) or Y[i, j] (starts[i]+j+1)."""
        return self.state.position_of(which, i, j)

    def highlighted_cells(self, position: int) -> list[tuple[str, int, int]]:
        """Every (which, i, j) holding corpus `position`."""
        return self.state.highlighted_cells(position)

    def header_text(self) -> str:
        return self.header.text()

    def display_text(self, tid: int) -> str:
        t = self._table
        if t is not None and 0 <= tid < len(t):
            return t[tid]
        return str(tid)

    def loss_at(self, i: int, j: int) -> float | None:
        """Loss of predicting Y[i, j] in the shown (micro, rank), None when not available."""
        return self.state.loss_at(i, j)

    def tooltip_text(self, which: str, i: int, j: int) -> str:
        X, Y = self.state.X, self.state.Y
        if X is None:
            return ""
        pos = self.position_of(which, i, j)
        tid = int(X[i, j] if which == "x" else Y[i, j])
        name = "X" if which == "x" else "Y"
        lines = [f"{name}[{i}, {j}] = {offset_text(pos, self.state.one_based)}", f"id {tid}   text '{self.display_text(tid)}'"]
        hx = self._bytes_hex(tid)
        if hx:
            lines.append(f"bytes {hx}")
        if which == "x":
            lines.append(f"predicts Y[{i}, {j}] = '{self.display_text(int(Y[i, j]))}'  (t[{pos + 1:,}])")
        else:
            lines.append(f"target of X[{i}, {j}] = '{self.display_text(int(X[i, j]))}'  (t[{pos - 1:,}])")
        loss = self.loss_at(i, j)
        if loss is not None:
            units = getattr(self.window(), "units", None)  # bits per byte where the bytes are known (ui/lenses.py)
            bpb = bpb_text(loss, int(Y[i, j])) if units is not None and units.problem is None else ""
            lines.append(f"loss of this prediction {loss:.4f} nats{bpb}")
        return "\n".join(lines)

    def expand_row(self, i: int) -> QDialog:
        """Open (non-modal) and return a dialog listing row i's N (context → next token) pairs."""
        if self.state.X is None:
            raise ValueError("no plan to explain")
        i = int(i)
        B, N = self.state.X.shape
        if not 0 <= i < B:
            raise IndexError(f"row {i} is outside 0..{B - 1}")
        s = int(self.state.starts[i])
        pairs = row_predictions(self.state, i)
        title = f"Row {i} of step {self.state.step:,} · micro {self.state.micro} · rank {self.state.rank}: {N} predictions"
        intro = (f"Row {i} starts at {offset_text(s, self.state.one_based)} (s = {s:,}): X[{i}] = t[{s:,}..{s + N - 1:,}] and Y[{i}] = t[{s + 1:,}.."
                 f"{s + N:,}]. One row is not one example but N = {N} of them: with causal attention, "
                 f"position j sees only the j+1 tokens t[s..s+j] and is trained to predict the next one, "
                 f"Y[{i}, j] = t[s+j+1]. All B×N = {B * N:,} predictions of the micro-batch are averaged "
                 f"into one loss.")
        dlg = RowExplainDialog(self, title, intro, pairs, self.display_text)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        dlg.setModal(False)
        self._dialogs = [d for d in self._dialogs if _alive(d)]
        self._dialogs.append(dlg)
        dlg.destroyed.connect(lambda *_a, d=dlg: self._forget_dialog(d))
        dlg.show()
        return dlg

    # ---- internals ----------------------------------------------------------------------------
    def _forget_dialog(self, d: QDialog) -> None:
        self._dialogs = [x for x in self._dialogs if x is not d]

    def _bytes_hex(self, tid: int) -> str:
        if self._table is None:
            return ""
        try:
            from nanogpt_viz.data.tokenizer import token_bytes

            return token_bytes(tid).hex(" ")
        except Exception:
            return ""

    def _on_spin(self, *_args) -> None:
        micro, rank = self.micro_spin.value(), self.rank_spin.value()
        if (micro, rank) != (self.state.micro, self.state.rank):
            self.state.micro, self.state.rank = micro, rank
            self._refresh()
            self.selection_changed.emit(micro, rank)

    def _refresh(self) -> None:
        m = self._model
        if m is None:
            self.state.starts = self.state.X = self.state.Y = None
        else:
            try:
                self.state.starts, self.state.X, self.state.Y = m.xy(self.state.step, self.state.micro, self.state.rank)
            except (ValueError, IndexError):
                self.state.starts = self.state.X = self.state.Y = None
        if self.state.X is not None and self.state.selected_row >= self.state.X.shape[0]:
            self.state.selected_row = 0
        self._update_header()
        self.canvas.relayout()
        self.labels.update()
        self.explain_button.setEnabled(self.state.X is not None)
        self.explain_button.setText(f"Explain row {self.state.selected_row}")
        if self.state.hover is not None and self.state.X is not None:
            which, i, j = self.state.hover
            if i < self.state.X.shape[0] and j < self.state.X.shape[1]:
                self._set_hover_pos(self.position_of(which, i, j))

    def _update_header(self) -> None:
        if self.state.X is None:
            self.header.setText("No plan: load a corpus to see the X / Y matrices of a step.")
            return
        B, N = self.state.X.shape
        text = (f"Step {self.state.step:,} · micro {self.state.micro} · rank {self.state.rank} · X, Y shape ({B}, {N}) · "
                f"B×N = {B * N:,} predictions averaged into one loss")
        plan = getattr(self._model, "plan", None)
        if plan is not None and plan.K * plan.W > 1:
            text += f" (the step: K×W×B×N = {plan.K}×{plan.W}×{B}×{N} = {plan.tokens_per_step:,})"
        self.header.setText(text)

    def _set_hover_pos(self, pos: int | None) -> None:
        if pos != self.state.hover_pos:
            self.state.hover_pos = pos
            self.canvas.update()
            self.hovered.emit(-1 if pos is None else pos)

    def _hover_cell(self, cell: tuple[str, int, int] | None) -> None:
        self.state.hover = cell
        self._set_hover_pos(None if cell is None else self.position_of(*cell))

    def _on_cell_clicked(self, i: int, j: int) -> None:
        start = int(self.state.starts[i])  # X[i, j] and Y[i, j]: the prediction from input j
        self.prediction_clicked.emit(start + int(j), start)

    def _select_row(self, i: int) -> None:
        if i != self.state.selected_row:
            self.state.selected_row = i
            self.explain_button.setText(f"Explain row {i}")
            self.labels.update()

    def _row_menu(self, i: int, global_pos: QPoint) -> None:
        self._select_row(i)
        menu = QMenu(self)
        act = QAction(f"Explain row {i} ({self.state.X.shape[1]} predictions)", menu)
        act.triggered.connect(lambda: self.expand_row(i))
        menu.addAction(act)
        menu.exec(global_pos)

    def _zoom_at(self, factor: float, canvas_x: float) -> None:
        """Change the cell width keeping the column under `canvas_x` under the mouse."""
        bar = self.scroll.horizontalScrollBar()
        old = self.state.cell_w
        view_x = canvas_x - bar.value()
        new = int(round(old * factor))
        if new == old:
            new = old + (1 if factor > 1 else -1)
        self.set_cell_width(new)
        bar.setValue(self.canvas.geometry_.zoomed_scroll(old, canvas_x, view_x))


def _alive(obj) -> bool:
    try:
        obj.objectName()
        return True
    except RuntimeError:
        return False
