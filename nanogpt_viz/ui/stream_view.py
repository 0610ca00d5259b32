"""The token stream: a virtualized view of the corpus, coloured by the step that reads each token.

`StreamView` paints only the lines it can see. Positions flow as fixed-width chips, a fixed number
per line (`tokens_per_line`), so position p sits at line p // tpl, column p % tpl: layout is O(1)
and a 10^10-token corpus scrolls like a small one. The data painted is a `StreamSlice` of the visible
range (plus a margin), cached and recomputed only when the range, the step, the mode or the model
changes.

Painting is batched: chip backgrounds are one small image (one pixel per chip) scaled up per line,
and chip texts are drawn one string per line and per text style (the font is monospace with an
integral advance, so every chip's text lands in its cell). Tokens whose glyphs do not fit the
monospace grid (wide or combining characters) are drawn one by one.

Shards: the stream is the split's shards end to end. Each shard's first token gets a staircase line
(the boundary between the two shards in the flowing layout) and a tag with its file name; each shard's
dropped tail is tinted and hatched, and its tooltip says why the loader never reads it. Boundaries and
tails on screen are found with searchsorted (`ShardMarks`), never by a loop over positions.

`OverviewBar` (ui/overview_bar.py) shows the whole corpus, one bin per pixel column, with a tick per
shard boundary and a marker where DataLoaderLite's ranks first read different shards; `StreamPanel`
composes both with a drift banner, a legend and zoom buttons.

The arithmetic (the layout of a zoom level, positions <-> lines and rectangles, scrolling, the chip
colours as ARGB arrays, chip texts) is pure and lives in `nanogpt_viz/viewmodel_stream.py`; this
module paints and handles events.

Positions are 64-bit: signals carrying positions are declared 'qlonglong' (Python receivers get int).
"""
from __future__ import annotations

import html
import math
import time
from typing import Any

import numpy as np
from PySide6.QtCore import QPoint, QPointF, QRect, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontDatabase, QFontMetricsF, QImage, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QAbstractScrollArea, QHBoxLayout, QLabel, QToolButton, QToolTip, QVBoxLayout, QWidget

from nanogpt_viz.data.batching import PlanError
from nanogpt_viz.ui import palette
from nanogpt_viz.ui.overview_bar import BOUNDARY, DRIFT, OverviewBar
from nanogpt_viz.viewmodel import (ShardMarks, StreamModel, StreamSlice, dropped_tail_note, loss_at_targets,
                                   ranks_banner)
from nanogpt_viz.viewmodel import GPT2_EOT, DocumentIndex  # documents mode, EOT marks (issue 13)
from nanogpt_viz.viewmodel_stream import (COLOR_MODES, DEFAULT_ZOOM, MARGIN_X, MARGIN_Y, SCROLL_CAP, ZOOM_LEVELS,
                                          ChipCodes, StreamLayout, argb, current_runs, display_text,
                                          line_to_value, loss_argb, lut_argb, rows_aligned, scroll_first_line,
                                          scrollbar_steps, step_argb, step_scroll_target, stripe_odd_rows,
                                          style_lines, text_styles, value_to_line)

# documents mode: one tint per document, cycling (neighbours always differ); <|endoftext|> chips marked
DOC_COLORS = [QColor(c) for c in ("#cfe3f7", "#f9dcc4", "#d4edd0", "#eadcf3", "#f6efc2", "#d0eeee")]
EOT_MARK = QColor("#1b1b1b")
# shards: the dropped tails' tint and hatch (the boundary line and the drift marker: overview_bar.py)
DROPPED_BG = QColor("#dcd2cc")
DROPPED_HATCH = QColor("#9c8577")
BOUNDARY_TAG_TEXT = QColor("#ffffff")
MAX_TAGS = 200  # shard-name tags drawn per paint at most (boundary lines are always drawn)


def _argb(c: QColor, alpha: int = 255) -> int:
    return argb((c.red(), c.green(), c.blue()), alpha)


def _rect(r: tuple[int, int, int, int] | None) -> QRect:
    return QRect() if r is None else QRect(*r)


class StreamView(QAbstractScrollArea):
    """Virtualized token stream: chips coloured by step / coverage / loss, current step marked."""

    hovered = Signal("qlonglong")  # corpus position under the mouse, -1 when none
    clicked = Signal("qlonglong")
    message = Signal(str)
    visible_range_changed = Signal("qlonglong", "qlonglong")  # [lo, hi) of painted positions
    zoom_changed = Signal(int)
    layout_changed = Signal()  # rows as lines on or off (the width, the zoom or the plan decided)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._model: StreamModel | None = None
        self._marks: ShardMarks | None = None
        self._model_gen = 0
        self._step = 0
        self._table: list[str] | None = None
        self._mode = "step"
        self._loss: np.ndarray | None = None
        self._loss_ranks: tuple[int, ...] = ()
        self._loss_range = (0.0, 1.0)
        self._loss_gen = 0
        self._zoom = DEFAULT_ZOOM
        self._first_line = 0
        self._syncing = False
        self._highlight = -1
        self._hover = -1
        self._placeholder = "No corpus loaded: open a corpus to see how batches are cut from it."
        self._slice: StreamSlice | None = None
        self._slice_key: tuple | None = None
        self._slice_cov_failed = False
        self._cov_msg_key: tuple | None = None
        self._stats = {"ms": 0.0, "chips": 0, "lines": 0, "tokens_per_line": 0, "text_runs": 0,
                       "boundaries": 0, "dropped_runs": 0}
        self._last_range: tuple[int, int] | None = None
        self._rows_as_lines = True
        self._aligned = False  # the plan's rows start at multiples of N (rows as lines possible)

        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOn)
        self.viewport().setMouseTracking(True)
        self.viewport().setAutoFillBackground(False)
        self.setFocusPolicy(Qt.StrongFocus)
        self.verticalScrollBar().valueChanged.connect(self._on_scrollbar)
        self._setup_fonts()
        self._layout = self._make_layout()
        self._sync_scrollbar()

    # ---- fonts, text cache -----------------------------------------------------------------------
    def _setup_fonts(self) -> None:
        base = QFont("DejaVu Sans Mono")
        if not QFontDatabase.isFixedPitch(base.family()):
            base = QFontDatabase.systemFont(QFontDatabase.FixedFont)
        base.setStyleHint(QFont.Monospace)
        base.setPixelSize(11)
        base.setKerning(False)
        base.setStyleStrategy(QFont.PreferNoShaping)
        adv = QFontMetricsF(base).horizontalAdvance("M")
        self._adv = int(math.ceil(adv - 1e-6))
        base.setLetterSpacing(QFont.AbsoluteSpacing, self._adv - adv)
        bold = QFont(base)
        bold.setBold(True)
        bold.setLetterSpacing(QFont.AbsoluteSpacing, 0.0)
        badv = QFontMetricsF(bold).horizontalAdvance("M")
        bold.setLetterSpacing(QFont.AbsoluteSpacing, self._adv - badv)
        self._font, self._bold = base, bold
        self._fm = QFontMetricsF(base)
        self._fm_bold = QFontMetricsF(bold)
        label = QFont(self.font())
        label.setPixelSize(8)
        self._label_font = label
        self._label_fm = QFontMetricsF(label)
        self._text_h = int(math.ceil(self._fm.height()))
        self._ascent = self._fm.ascent()
        self._label_h = int(math.ceil(self._label_fm.height()))
        self._codes: ChipCodes | None = None
        self._elide_cache: dict[tuple[int, int], str] = {}

    def _display(self, token_id: int) -> str:
        return display_text(self._table, token_id)

    def _elided(self, token_id: int, width: int) -> str:
        key = (token_id, width)
        s = self._elide_cache.get(key)
        if s is None:
            if len(self._elide_cache) > 200_000:
                self._elide_cache.clear()
            s = self._fm.elidedText(self._display(token_id), Qt.ElideRight, width)
            self._elide_cache[key] = s
        return s

    def _fits_grid(self, text: str) -> bool:
        """Whether `text` lands on the monospace grid in both weights (else it is drawn on its own)."""
        n = len(text) * self._adv
        return abs(self._fm.horizontalAdvance(text) - n) < 0.5 and abs(self._fm_bold.horizontalAdvance(text) - n) < 0.5

    def _code_rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, chars+1) UTF-32 code points of the chips' padded texts, and a mask of tokens whose
        text does not fit the monospace grid (drawn one by one)."""
        if self._codes is None or self._codes.chars != self._layout.chars:
            self._codes = ChipCodes(self._layout.chars, self._table, self._fits_grid)
        return self._codes.rows(ids)

    # ---- public API ------------------------------------------------------------------------------
    def set_model(self, model: StreamModel | None) -> None:
        self._model = model
        self._marks = ShardMarks(model.plan) if model is not None else None
        self._docs = DocumentIndex(model.tokens) if model is not None else None
        self._aligned = rows_aligned(model)
        self._model_gen += 1
        self._slice = None
        self._slice_key = None
        self._first_line = 0
        self._hover = -1
        self._relayout(keep=None)

    def model(self) -> StreamModel | None:
        return self._model

    def set_rows_as_lines(self, on: bool) -> None:
        """One row per line (the default where the plan allows it) or the stream flowing line to line."""
        self._rows_as_lines = bool(on)
        self._relayout(keep=self._center_position())

    def rows_as_lines(self) -> bool:
        """True when the lines shown are the plan's rows (one row per line, or a long row on whole lines)."""
        return bool(self._layout.row_n)

    def rows_layout(self) -> str:
        """'row' (one row per line, Y's extra target at its end), 'wrapped' (a row on whole lines), 'flow'."""
        return "row" if self._layout.ghost else "wrapped" if self._layout.row_n else "flow"

    def shard_marks(self) -> ShardMarks | None:
        """The model's shard boundaries, dropped tails and drift start (None without a model)."""
        return self._marks

    def set_step(self, step: int) -> None:
        step = max(0, int(step))
        if step != self._step:
            self._step = step
            self.viewport().update()

    def step(self) -> int:
        return self._step

    def set_display_table(self, table: list[str] | None) -> None:
        self._table = table
        self._codes = None
        self._elide_cache.clear()
        self.viewport().update()

    def set_color_mode(self, mode: str) -> None:
        if mode not in COLOR_MODES:
            raise ValueError(f"colour mode must be one of {', '.join(COLOR_MODES)} (got {mode!r})")
        if mode != self._mode:
            self._mode = mode
            self._cov_msg_key = None
            if mode == "loss" and self._loss is None:
                self.message.emit("No per-token loss for this step yet: positions are shown grey.")
            self.viewport().update()

    def color_mode(self) -> str:
        return self._mode

    def set_loss(self, per_token: np.ndarray | None, ranks: tuple = (0,), vmin: float = 0.0,
                 vmax: float = 11.0) -> None:
        self._loss = None if per_token is None else np.asarray(per_token)
        self._loss_ranks = tuple(int(r) for r in ranks)
        self._loss_range = (float(vmin), float(vmax))
        self._loss_gen += 1
        if self._mode == "loss":
            self.viewport().update()

    def loss(self) -> np.ndarray | None:
        """The per-token losses the view colours by (None: none for the step shown)."""
        return self._loss

    def loss_range(self) -> tuple[float, float]:
        """The loss values at the two ends of the colour ramp."""
        return self._loss_range

    def set_placeholder(self, text: str) -> None:
        self._placeholder = text
        self.viewport().update()

    def set_highlight(self, position: int) -> None:
        position = int(position)
        if position != self._highlight:
            self._highlight = position
            self.viewport().update()

    # zoom
    def zoom_level(self) -> int:
        return self._zoom

    def zoom_levels(self) -> int:
        return len(ZOOM_LEVELS)

    def set_zoom(self, level: int) -> None:
        level = max(0, min(len(ZOOM_LEVELS) - 1, int(level)))
        if level == self._zoom:
            return
        anchor = self._center_position()
        self._zoom = level
        self._codes = None
        self._relayout(keep=anchor)
        self.zoom_changed.emit(level)

    def zoom_in(self) -> None:
        self.set_zoom(self._zoom + 1)

    def zoom_out(self) -> None:
        self.set_zoom(self._zoom - 1)

    def is_dense(self) -> bool:
        return self._layout.dense

    def tokens_per_line(self) -> int:
        return self._layout.tpl

    def chip_width(self) -> int:
        return self._layout.pitch

    # scrolling
    def first_line(self) -> int:
        return self._first_line

    def total_lines(self) -> int:
        return self._layout.total_lines(self._model.L if self._model is not None else 0)

    def scroll_to_position(self, p: int, center: bool = True) -> None:
        if self._model is None:
            return
        p = max(0, min(int(p), self._model.L - 1))
        self._set_first_line(scroll_first_line(p, self._layout.tpl, self._full_lines(), center))

    def ensure_step_visible(self) -> None:
        if self._model is None:
            return
        target = step_scroll_target(self._model.current_rows(self._step)[0], self._model.plan.N,
                                    *self.visible_range(), self._layout.tpl, self._full_lines(),
                                    self._model.plan.mode == "random")
        if target is not None:
            self.scroll_to_position(target, center=False)

    def visible_range(self) -> tuple[int, int]:
        """[lo, hi) of the corpus positions drawn (partially visible last line included)."""
        if self._model is None:
            return 0, 0
        return self._layout.visible_range(self._first_line, self._drawn_lines(), self._model.L)

    def visible_slice(self) -> StreamSlice | None:
        """The cached StreamSlice that covers the visible range (computed if needed)."""
        return self._ensure_slice()

    def position_at(self, point: QPoint) -> int:
        """Corpus position of the chip under a viewport point, -1 for none."""
        if self._model is None:
            return -1
        return self._layout.position_at(point.x(), point.y(), self._first_line, self._model.L)

    def chip_rect(self, position: int) -> QRect:
        """Viewport rectangle of a position's chip (empty QRect when it is not on screen)."""
        if self._model is None:
            return QRect()
        return _rect(self._layout.chip_rect(int(position), self._first_line, self._drawn_lines(), self._model.L))

    def paint_stats(self) -> dict[str, Any]:
        return dict(self._stats)

    def sizeHint(self) -> QSize:
        return QSize(800, 400)

    # ---- layout / scrolling internals ------------------------------------------------------------
    def _make_layout(self) -> StreamLayout:
        row_n = self._model.plan.N if (self._rows_as_lines and self._aligned and self._model is not None) else None
        bars = 0
        if self._model is not None and self._model.plan.mode == "sliding":
            bars = int(np.prod(self._model.plan.starts(0).shape))  # K x W x B rows per step
        return StreamLayout(ZOOM_LEVELS[self._zoom], self._adv, self._text_h, self._label_h,
                       self.viewport().width(), row_n, bars)

    def _full_lines(self) -> int:
        return self._layout.full_lines(self.viewport().height())

    def _drawn_lines(self) -> int:
        return self._layout.drawn_lines(self.viewport().height())

    def _max_first(self) -> int:
        return max(0, self.total_lines() - self._full_lines())

    def _center_position(self) -> int | None:
        if self._model is None:
            return None
        lo, hi = self.visible_range()
        return (lo + hi) // 2

    def _relayout(self, keep: int | None) -> None:
        was = self._layout.ghost
        self._layout = self._make_layout()
        if self._layout.ghost != was:
            self.layout_changed.emit()
        if keep is not None:
            line = keep // self._layout.tpl - self._full_lines() // 2
            self._first_line = max(0, min(line, self._max_first()))
        else:
            self._first_line = max(0, min(self._first_line, self._max_first()))
        self._sync_scrollbar()
        self._range_changed()
        self.viewport().update()

    def _line_to_value(self, line: int) -> int:
        return line_to_value(line, self._max_first())

    def _value_to_line(self, value: int) -> int:
        return value_to_line(value, self._max_first())

    def _sync_scrollbar(self) -> None:
        sb = self.verticalScrollBar()
        maximum, page, single = scrollbar_steps(self._max_first(), self._full_lines())
        self._syncing = True
        try:
            sb.setRange(0, maximum)
            sb.setPageStep(page)
            sb.setSingleStep(single)
            sb.setValue(self._line_to_value(self._first_line))
        finally:
            self._syncing = False

    def _set_first_line(self, line: int) -> None:
        line = max(0, min(int(line), self._max_first()))
        if line == self._first_line:
            return
        self._first_line = line
        self._sync_scrollbar()
        self._range_changed()
        self.viewport().update()

    def _on_scrollbar(self, value: int) -> None:
        if self._syncing:
            return
        line = self._value_to_line(value)
        if line != self._first_line:
            self._first_line = max(0, min(line, self._max_first()))
            self._range_changed()
            self.viewport().update()

    def _range_changed(self) -> None:
        r = self.visible_range()
        if r != self._last_range:
            self._last_range = r
            self.visible_range_changed.emit(r[0], r[1])

    # ---- data ------------------------------------------------------------------------------------
    def _ensure_slice(self) -> StreamSlice | None:
        if self._model is None:
            return None
        lo, hi = self.visible_range()
        want_cov = self._mode == "coverage"
        k = self._slice_key
        if (self._slice is not None and k is not None and k[0] <= lo and hi <= k[1]
                and k[2] == self._step and k[3] == self._mode and k[4] == self._model_gen):
            return self._slice
        margin = max(self._layout.tpl, (hi - lo) // 4)
        clo, chi = max(0, lo - margin), min(self._model.L, hi + margin)
        failed = False
        if want_cov:
            try:
                sl = self._model.slice(clo, chi, self._step, with_coverage=True)
            except PlanError as e:
                failed = True
                sl = self._model.slice(clo, chi, self._step)
                msg_key = (self._model_gen, self._step)
                if self._cov_msg_key != msg_key:
                    self._cov_msg_key = msg_key
                    self.message.emit(f"Coverage is not shown: {e}. Showing step colours instead.")
        else:
            sl = self._model.slice(clo, chi, self._step)
        self._slice = sl
        self._slice_cov_failed = failed
        self._slice_key = (clo, chi, self._step, self._mode, self._model_gen)
        return sl

    def _colors(self, sl: StreamSlice, a: int, b: int) -> np.ndarray:
        """ARGB32 background of positions sl.lo+a .. sl.lo+b (uint32)."""
        steps = sl.step[a:b]
        mode = self._mode
        if mode == "coverage" and sl.coverage is not None and not self._slice_cov_failed:
            cov = sl.coverage[a:b]
            plan = self._model.plan
            mx = plan.epoch(self._step) + 1 if plan.mode != "random" else int(cov.max(initial=1))
            return lut_argb(cov, lambda c: _argb(palette.coverage_color(c, mx)))
        if mode == "loss":
            vals = np.full(b - a, np.nan, np.float32)
            if self._loss is not None:
                try:
                    vals = loss_at_targets(sl, self._loss, self._loss_ranks)[a:b]
                except (IndexError, ValueError) as e:  # a report that does not match the plan
                    self._loss = None
                    self.message.emit(f"The per-token loss does not match this plan ({e}); not shown.")
            return loss_argb(vals, *self._loss_range, palette.loss_lut(256), _argb(palette.UNUSED))
        if mode == "documents" and getattr(self, "_docs", None) is not None:
            doc = self._docs.indices(sl.lo + a, sl.lo + b)
            lut = np.array([_argb(c) for c in DOC_COLORS], np.uint32)
            return lut[doc % len(lut)]
        return step_argb(steps, palette.step_rgb_table(), _argb(palette.UNUSED))

    # ---- painting --------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802
        t0 = time.perf_counter()
        vp = self.viewport()
        p = QPainter(vp)
        p.fillRect(vp.rect(), palette.BACKGROUND)
        if self._model is None or self._model.L == 0:
            p.setPen(palette.UNUSED_TEXT)
            p.drawText(vp.rect().adjusted(20, 20, -20, -20), Qt.AlignCenter | Qt.TextWordWrap,
                       self._placeholder)
            p.end()
            self._stats = {"ms": (time.perf_counter() - t0) * 1e3, "chips": 0, "lines": 0,
                           "tokens_per_line": self._layout.tpl, "text_runs": 0, "boundaries": 0,
                           "dropped_runs": 0}
            return
        try:
            chips, runs, nb, nd = self._paint_stream(p)
        finally:
            p.end()
        self._stats = {"ms": (time.perf_counter() - t0) * 1e3, "chips": chips,
                       "lines": self._drawn_lines(), "tokens_per_line": self._layout.tpl,
                       "text_runs": runs, "boundaries": nb, "dropped_runs": nd}

    def _paint_stream(self, p: QPainter) -> tuple[int, int, int, int]:
        lay = self._layout
        sl = self._ensure_slice()
        lo, hi = self.visible_range()
        n = hi - lo
        if sl is None or n <= 0:
            return 0, 0, 0, 0
        a, b = lo - sl.lo, hi - sl.lo
        tpl, pitch = lay.tpl, lay.pitch
        nlines = -(-n // tpl)
        cur = sl.current[a:b]
        steps = sl.step[a:b]
        rows = sl.row[a:b]
        ids = sl.ids[a:b]

        # 1) backgrounds: one pixel per chip, scaled to the chip cells line by line
        colors = stripe_odd_rows(self._colors(sl, a, b), cur, rows)  # a subtle stripe on the step's rows
        dropped = self._marks.dropped(lo, hi) if self._marks is not None else []
        if dropped:  # each shard's dropped tail: its own tint (hatched below)
            colors = colors.copy()
            for da, db in dropped:
                colors[da - lo:db - lo] = np.uint32(_argb(DROPPED_BG))
        grid = np.zeros(nlines * tpl, np.uint32)  # alpha 0 past the end of the corpus
        grid[:n] = colors
        grid = np.ascontiguousarray(grid.reshape(nlines, tpl))
        img = QImage(grid.data, tpl, nlines, tpl * 4, QImage.Format_ARGB32)
        full_w = tpl * pitch
        for li in range(nlines):
            p.drawImage(QRect(MARGIN_X, lay.chip_y(li), full_w, lay.chip_h), img, QRect(0, li, tpl, 1))
        del img
        gap_h = nlines * lay.line_h
        for c in range(1, tpl + 1):
            p.fillRect(QRect(lay.chip_x(c) - lay.gap, MARGIN_Y, lay.gap, gap_h),
                       palette.BACKGROUND)
        drop_rects = self._run_rects(dropped)
        if drop_rects:
            brush = QBrush(DROPPED_HATCH, Qt.BDiagPattern)
            for r in drop_rects:
                p.fillRect(r, brush)

        # 2) texts: one string per line and per style (monospace grid), odd glyphs one by one
        text_runs = 0
        if not lay.dense:
            text_runs = self._paint_texts(p, ids, steps, cur, colors, n, nlines)

        # 3) marks of the current step
        self._paint_marks(p, sl, a, b, lo)
        self._paint_eot(p, ids, lo)
        if lay.row_n:
            self._paint_rows(p, sl, lo, hi, nlines)
        self._paint_row_bars(p, lo, hi)

        # 4) shard boundaries and their names
        nb = self._paint_boundaries(p, sl, lo, hi)
        return n, text_runs, nb, len(drop_rects)

    def row_bars(self) -> list[tuple[int, int, list[QRect]]]:
        """The bars of the last paint (sliding windows): (row start, slot, its rectangles on screen)."""
        return list(getattr(self, "_row_bars", []))

    def _paint_row_bars(self, p: QPainter, lo: int, hi: int) -> None:
        """Sliding windows: each of the step's rows as its own thin bar in the rank colour under its N
        inputs, one slot per row (shade by the row within its micro-batch), so stride < N overlap shows."""
        lay = self._layout
        self._row_bars = []
        if not lay.bars or self._model is None:
            return
        starts, _m, ranks, brow = self._model.current_rows(self._step)
        N = self._model.plan.N
        for j, s in enumerate(starts.tolist()):
            slot = j % lay.bars
            color = palette.rank_color(int(ranks[j])).darker(100 + 30 * (int(brow[j]) % 4))
            segs = [QRect(*r) for r in lay.bar_rects(s, N, lo, hi, self._first_line, slot)]
            for r in segs:
                p.fillRect(r, color)
            self._row_bars.append((int(s), slot, segs))

    def _paint_rows(self, p: QPainter, sl: StreamSlice, lo: int, hi: int, nlines: int) -> None:
        """Rows as lines: Y's extra target at the end of each row (a faint copy of the next row's first
        token), or, for a row wrapped onto several lines, a separator above it and a bracket at its left."""
        lay = self._layout
        tpl, pitch, N = lay.tpl, lay.pitch, lay.row_n
        L = self._model.L
        if lay.ghost:
            x = lay.chip_x(tpl)
            for li in range(nlines):
                q = lo + (li + 1) * tpl  # the token after this row: its Y's last target
                if q >= L or not (sl.lo <= q < sl.lo + len(sl.ids)):
                    continue
                i = q - sl.lo
                rect = QRect(x, lay.chip_y(li), lay.chip_w, lay.chip_h)
                c = QColor.fromRgba(int(self._colors(sl, i, i + 1)[0]))
                c.setAlpha(90)
                p.fillRect(rect, c)
                is_cur = bool(sl.current[i - 1]) if i >= 1 else False
                p.setPen(QPen(palette.TARGET_ONLY.darker(130) if is_cur else palette.UNUSED_TEXT, 1, Qt.DashLine))
                p.drawRect(rect.adjusted(0, 0, -1, -1))
                if not lay.dense:
                    p.setFont(self._font)
                    p.setPen(palette.UNUSED_TEXT)
                    p.drawText(rect, Qt.AlignCenter, self._elided(int(sl.ids[i]), lay.chip_w))
            return
        # a long row on several lines: a line above each row's first line, a bracket down its lines
        full_w = tpl * pitch
        for li in range(nlines):
            start = lo + li * tpl
            y = lay.line_y(li)
            if start % N == 0 and li > 0:
                p.fillRect(QRect(MARGIN_X, y, full_w, 1), palette.UNUSED_TEXT)
            i = start - sl.lo
            if 0 <= i < len(sl.current) and sl.current[i]:
                p.fillRect(QRect(0, y + lay.band, 3, lay.line_h - 1),
                           palette.rank_color(int(sl.rank[i])))
                if start % N != 0 and li == 0 and not lay.dense:  # the row's label, repeated on top
                    p.setFont(self._label_font)
                    p.setPen(palette.rank_color(int(sl.rank[i])))
                    p.drawText(QRect(MARGIN_X, y, pitch * 8, lay.band), Qt.AlignLeft | Qt.AlignBottom,
                               f"r{int(sl.rank[i])} m{int(sl.micro[i])} b{int(sl.brow[i])} (cont.)")

    # ---- shards ----------------------------------------------------------------------------------
    def _run_rects(self, runs: list[tuple[int, int]]) -> list[QRect]:
        """Chip-row rectangles covering stream runs [a, b) on screen, one per line each run spans."""
        return [QRect(*r) for r in self._layout.run_rects(runs, self._first_line, self._drawn_lines())]

    def shard_boundaries(self) -> list[dict[str, Any]]:
        """The shard boundaries on screen as painted: for each shard's first token in view (the first
        shard's too, for its name tag), its position, shard index, file name, the line segments of the
        boundary (QRects, empty at position 0) and the tag rectangle."""
        if self._model is None or self._marks is None:
            return []
        lo, hi = self.visible_range()
        lay = self._layout
        pos, idx = self._marks.boundaries(max(0, lo - lay.tpl), hi)  # a line above: its lower edge shows
        names = self._model.plan.shard_names
        S = self._model.plan.n_shards
        out = []
        for q, s in zip(pos.tolist(), idx.tolist()):
            segs = [QRect(*r) for r in lay.boundary_segments(q, self._first_line)]
            tag = QRect()
            if q >= lo:
                tw = int(math.ceil(self._label_fm.horizontalAdvance(f"{names[s]}  ({s + 1}/{S})"))) + 6
                tag = QRect(*lay.tag_rect(q, self._first_line, tw, self._label_h))
            out.append({"position": q, "shard": s, "name": names[s], "segments": segs, "tag": tag})
        return out

    def _paint_boundaries(self, p: QPainter, sl: StreamSlice, lo: int, hi: int) -> int:
        marks = self.shard_boundaries()
        if not marks:
            return 0
        lay = self._layout
        for m in marks:
            for r in m["segments"]:
                p.fillRect(r, BOUNDARY)
        # name tags, after the lines; in text zooms a current row's "r0 m0 b0" label moves right of it
        p.setFont(self._label_font)
        last_right: dict[int, int] = {}
        drawn = 0
        for m in marks:
            tag: QRect = m["tag"]
            if tag.isEmpty() or drawn >= MAX_TAGS:
                continue
            if last_right.get(tag.y(), -1) > tag.x():
                continue  # would cover the previous tag on this line
            label = f"{m['name']}  ({m['shard'] + 1}/{self._model.plan.n_shards})"
            p.fillRect(tag, BOUNDARY)
            p.setPen(BOUNDARY_TAG_TEXT)
            text = self._label_fm.elidedText(label, Qt.ElideMiddle, tag.width() - 6)
            p.drawText(tag.adjusted(3, 0, -3, 0), Qt.AlignLeft | Qt.AlignVCenter, text)
            last_right[tag.y()] = tag.right() + 4
            drawn += 1
            i = m["position"] - sl.lo
            if not lay.dense and 0 <= i < len(sl) and sl.current[i] and sl.col[i] == 0:
                label = f"r{int(sl.rank[i])} m{int(sl.micro[i])} b{int(sl.brow[i])}"
                p.setPen(palette.rank_color(int(sl.rank[i])))
                p.drawText(QRect(tag.right() + 4, tag.y(), lay.pitch * 6, lay.band),
                           Qt.AlignLeft | Qt.AlignBottom, label)
        return len(marks)

    def dropped_rects(self) -> list[QRect]:
        """The hatched rectangles of the dropped tails on screen (one per line a tail spans)."""
        if self._marks is None:
            return []
        return self._run_rects(self._marks.dropped(*self.visible_range()))

    def _paint_texts(self, p: QPainter, ids, steps, cur, colors, n: int, nlines: int) -> int:
        lay = self._layout
        tpl = lay.tpl
        codes, unsafe = self._code_rows(ids)
        style = text_styles(cur, steps, colors)  # 0 text, 1 bold, 2 unused, 3 light, 4 light bold
        light = QColor("#ffffff")
        pens = {0: (self._font, palette.TEXT), 1: (self._bold, palette.TEXT),
                2: (self._font, palette.UNUSED_TEXT), 3: (self._font, light), 4: (self._bold, light)}
        safe = ~unsafe
        x0 = MARGIN_X + lay.text_dx
        y_text = lay.chip_y(0) + (lay.chip_h - self._text_h) / 2 + self._ascent
        runs = 0
        for s in np.unique(style[safe]).tolist():
            font, color = pens[s]
            p.setFont(font)
            p.setPen(color)
            for li, text in style_lines(codes, safe & (style == s), nlines, tpl):
                p.drawText(QPointF(x0, y_text + li * lay.line_h), text)
                runs += 1
        # tokens whose glyphs break the grid: one elided drawText each
        idx = np.nonzero(unsafe)[0]
        if len(idx):
            w = max(4, lay.chip_w - 2)
            for i in idx.tolist():
                s = int(style[i])
                font, color = pens[s]
                p.setFont(font)
                p.setPen(color)
                li, col = divmod(i, tpl)
                rect = QRect(lay.chip_x(col) + 1, lay.chip_y(li), w, lay.chip_h)
                p.drawText(rect, Qt.AlignLeft | Qt.AlignVCenter, self._elided(int(ids[i]), w))
                runs += 1
        return runs

    def _paint_eot(self, p: QPainter, ids: np.ndarray, lo: int) -> None:
        """<|endoftext|> chips, in every colour mode: a dark outline and a bar down the chip's right edge
        (a document ends here; the next token starts another)."""
        idx = np.nonzero(np.asarray(ids) == GPT2_EOT)[0]
        self._eot_marked = [int(lo + i) for i in idx[:10_000].tolist()]
        if not len(idx):
            return
        dense = self._layout.dense
        p.setBrush(Qt.NoBrush)
        p.setPen(QPen(EOT_MARK, 1, Qt.DotLine))
        for q in self._eot_marked:
            r = self.chip_rect(q)
            if r.isNull():
                continue
            if not dense:
                p.drawRect(r.adjusted(0, 0, -1, -1))
            p.fillRect(QRect(r.right() - (1 if dense else 2), r.top(), 2 if dense else 3, r.height()), EOT_MARK)

    def eot_marked(self) -> list[int]:
        """The <|endoftext|> positions the last paint marked."""
        return list(getattr(self, "_eot_marked", []))

    def _paint_marks(self, p: QPainter, sl: StreamSlice, a: int, b: int, lo: int) -> None:
        lay = self._layout
        tpl, pitch = lay.tpl, lay.pitch
        cur = sl.current[a:b]
        pos = np.arange(lo, lo + (b - a), dtype=np.int64)
        col_all = pos % tpl
        line_all = pos // tpl - self._first_line

        def rect_of(i: int, j: int | None = None) -> QRect:
            return QRect(*lay.span_rect(int(line_all[i]), int(col_all[i]), int(col_all[i if j is None else j])))

        p.setBrush(Qt.NoBrush)
        # runs of one row on one line get one outline in the rank colour
        idx = np.nonzero(cur)[0]
        if len(idx):
            starts, ends = current_runs(cur, sl.row[a:b], col_all)
            width = 1 if lay.dense else 2
            ranks = sl.rank[a:b]
            for s, e in zip(starts.tolist(), ends.tolist()):
                pen = QPen(palette.rank_color(int(ranks[s])), width)
                pen.setJoinStyle(Qt.MiterJoin)
                p.setPen(pen)
                r = rect_of(s, e)
                p.drawRect(r.adjusted(0, 0, -1, -1) if width == 1 else r.adjusted(1, 1, -1, -1))
            # labels "r0 m1 b2" above the first chip of each current row
            if not lay.dense:
                cols = sl.col[a:b]
                p.setFont(self._label_font)
                first = idx[cols[idx] == 0]
                for i in first.tolist():
                    label = f"r{int(sl.rank[a + i])} m{int(sl.micro[a + i])} b{int(sl.brow[a + i])}"
                    p.setPen(palette.rank_color(int(sl.rank[a + i])))
                    x, y = lay.chip_x(int(col_all[i])), lay.line_y(int(line_all[i]))
                    p.drawText(QRect(x, y, pitch * 6, lay.band), Qt.AlignLeft | Qt.AlignBottom, label)
        # the extra target of each current row: dashed
        tgt = np.nonzero(sl.target_only[a:b])[0]
        if len(tgt):
            pen = QPen(palette.TARGET_ONLY.darker(115), 1 if lay.dense else 2, Qt.DashLine)
            p.setPen(pen)
            for i in tgt.tolist():
                p.drawRect(rect_of(i).adjusted(1, 1, -1, -1))
        # highlight from other views
        h = self._highlight
        if lo <= h < lo + (b - a):
            p.setPen(QPen(palette.CURRENT_OUTLINE, 3))
            p.drawRect(rect_of(h - lo).adjusted(-2, -2, 2, 2))

    # ---- tooltips / events -----------------------------------------------------------------------
    def set_one_based(self, on: bool) -> None:
        """Count tokens from 1 (View menu): which form of an offset leads in the tooltip."""
        self._one_based = bool(on)

    def describe(self, position: int) -> str:
        """Tooltip text for one position."""
        if self._model is None or not (0 <= position < self._model.L):
            return ""
        from nanogpt_viz.viewmodel import offset_text

        tid = int(np.asarray(self._model.tokens[position:position + 1])[0])
        lines = [offset_text(position, getattr(self, "_one_based", True)), f"token id {tid}",
                 f"text {self._display(tid)!r}"]
        try:
            from nanogpt_viz.data import tokenizer as _tok
            lines.append("bytes " + _tok.token_bytes(tid).hex(" "))
        except Exception:  # noqa: BLE001 - tokenizer missing or id outside GPT-2's vocabulary
            pass
        plan = self._model.plan
        if plan.n_shards > 1:
            s = min(int(plan.shard_of([position])[0]), plan.n_shards - 1)
            lines.append(f"shard {plan.shard_names[s]} ({s + 1}/{plan.n_shards}), position "
                         f"{position - int(plan.shard_starts[s]):,} in it")
        lines.append(self._role(position))
        return "\n".join(lines)

    def _role(self, position: int) -> str:
        sl = self._ensure_slice()
        k = self._step
        if sl is not None and sl.lo <= position < sl.hi:
            i = position - sl.lo
            if sl.current[i]:
                return (f"X[row {int(sl.brow[i])}, col {int(sl.col[i])}] of step {k} "
                        f"(rank {int(sl.rank[i])}, micro {int(sl.micro[i])})")
            if sl.target_only[i]:
                starts, m, r, b = self._model.current_rows(k)
                j = np.nonzero(starts + self._model.plan.N == position)[0]
                if len(j):
                    j = int(j[0])
                    return (f"target only: Y[row {int(b[j])}, col {self._model.plan.N - 1}] of step {k} "
                            f"(rank {int(r[j])}, micro {int(m[j])})")
                return "target only"
            s = int(sl.step[i])
            if s < 0 and self._marks is not None and self._marks.is_dropped(position):
                plan = self._model.plan
                shard = min(int(plan.shard_of([position])[0]), plan.n_shards - 1)
                return "not read by any step: " + (dropped_tail_note(plan, shard) or "dropped tail")
            if s < 0:
                return "not read by any step"
            return f"read by step {s}"
        return ""

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = self.position_at(event.position().toPoint())
        if pos != self._hover:
            self._hover = pos
            self.hovered.emit(pos)
            if pos >= 0:
                QToolTip.showText(event.globalPosition().toPoint(), self.describe(pos), self.viewport())
            else:
                QToolTip.hideText()
        super().mouseMoveEvent(event)

    def leaveEvent(self, event) -> None:  # noqa: N802
        if self._hover != -1:
            self._hover = -1
            self.hovered.emit(-1)
        super().leaveEvent(event)

    def mousePressEvent(self, event) -> None:  # noqa: N802
        if event.button() == Qt.LeftButton:
            pos = self.position_at(event.position().toPoint())
            if pos >= 0:
                self.clicked.emit(pos)
        super().mousePressEvent(event)

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        dy = event.angleDelta().y()
        if event.modifiers() & Qt.ControlModifier:
            if dy > 0:
                self.zoom_in()
            elif dy < 0:
                self.zoom_out()
            event.accept()
            return
        if dy:
            lines = -int(round(dy / 120 * 3)) or (-1 if dy > 0 else 1)
            self._set_first_line(self._first_line + lines)
        event.accept()

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if event.modifiers() & Qt.ControlModifier and event.key() in (Qt.Key_Plus, Qt.Key_Equal):
            self.zoom_in()
        elif event.modifiers() & Qt.ControlModifier and event.key() == Qt.Key_Minus:
            self.zoom_out()
        elif event.key() == Qt.Key_Home:
            self._set_first_line(0)
        elif event.key() == Qt.Key_End:
            self._set_first_line(self._max_first())
        else:
            super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        old = self._layout
        anchor = self._first_line * old.tpl if self._model is not None else None
        self._layout = self._make_layout()
        if anchor is not None and self._layout.tpl != old.tpl:
            self._first_line = anchor // self._layout.tpl
        self._relayout(keep=None)
        if old.ghost != self._layout.ghost:
            self.layout_changed.emit()


def _legend_html(shards: bool = False, mode: str = "step", cov_max: int | None = None,
                 loss_range: tuple[float, float] = (0.0, 11.0), rows: bool = False) -> str:
    """The legend under the stream: it follows the colour mode (step hues; coverage with its count scale;
    loss with its colour bar), then the marks every mode shares (rank outlines, Y's extra target)."""
    def sw(color: QColor, border: QColor | None = None) -> str:
        return (f"<span style='background-color:{color.name()};color:{(border or color).name()}'>"
                f"&nbsp;&nbsp;&nbsp;</span>")
    if mode == "coverage":
        mx = max(1, int(cov_max or 4))
        counts = sorted({1, (mx + 1) // 2, mx}) if mx > 3 else list(range(1, mx + 1))
        scale = " ".join(f"{sw(palette.coverage_color(c, mx))} {c}×" for c in counts)
        head = f"coverage, times read: {sw(palette.UNUSED)} 0× &nbsp; {scale}"
    elif mode == "loss":
        lo, hi = loss_range
        lut = palette.loss_lut(8)
        bar = "".join(sw(QColor(int(r), int(g), int(b))) for r, g, b in lut)
        head = (f"per-token loss of the target (nats): {lo:.2f} {bar} {hi:.2f} &nbsp; "
                f"{sw(palette.UNUSED)} no loss yet")
    elif mode == "documents":
        tints = "".join(sw(c) for c in DOC_COLORS[:4])
        head = (f"{tints} documents (one tint each, split at &lt;|endoftext|&gt;) &nbsp; "
                f"<b style='color:{EOT_MARK.name()}'>&#9614;</b> &lt;|endoftext|&gt; token (a document ends)")
    elif mode == "step":
        steps = "".join(sw(palette.step_color(k)) for k in range(4))
        head = f"{steps} step k colours (the step that reads a token) &nbsp; {sw(palette.UNUSED)} unused"
    else:  # a mode another view added: its name, the shared marks below
        head = f"colour: {html.escape(mode)}"
    ranks = "".join(f"<b style='color:{palette.rank_color(r).name()}'>&#9635;</b>" for r in range(3))
    out = (f"{head} &nbsp;&nbsp; {ranks} current step rows (outline = rank)"
           f" &nbsp;&nbsp; <b style='color:{palette.TARGET_ONLY.darker(115).name()}'>&#9637;</b>"
           f" target only")
    if rows:
        out += " (faint last column: Y's extra target, the next row's first token)"
    if shards:
        out += (f" &nbsp;&nbsp; <span style='background-color:{DROPPED_BG.name()};"
                f"color:{DROPPED_HATCH.name()}'>&#9636;&#9636;</span> dropped tail"
                f" &nbsp;&nbsp; <b style='color:{BOUNDARY.name()}'>&#9475;</b> shard boundary")
    return out


def _banner_style(active: bool = True) -> str:
    if active:
        return (f"QLabel {{ background: #f6ecf8; color: #3b1f47; border-left: 4px solid {DRIFT.name()};"
                f" padding: 2px 6px; }}")
    return "QLabel { background: #f3f3f3; color: #555555; border-left: 4px solid #bdbdbd; padding: 2px 6px; }"


class StreamPanel(QWidget):
    """OverviewBar + StreamView + legend and zoom buttons, wired together."""

    hovered = Signal("qlonglong")
    clicked = Signal("qlonglong")
    message = Signal(str)
    step_requested = Signal("qlonglong")  # the overview strip was clicked where that step read

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.overview = OverviewBar(self)
        self.stream = StreamView(self)
        # DataLoaderLite's ranks reading different shards at the current step: one line, else hidden
        self.drift_label = QLabel(self)
        self.drift_label.setObjectName("driftBanner")
        self.drift_label.setStyleSheet(_banner_style())
        self.drift_label.setWordWrap(True)
        self.drift_label.setToolTip("Under DataLoaderLite every rank keeps its own position and moves to "
                                    "the next shard on its own test, so near a shard's end a higher rank "
                                    "can move on before rank 0 and the ranks stay out of step.")
        self.drift_label.hide()
        self._step = 0
        self._drift_active = False
        self._drift_plain = ""
        self.drift_label.setTextFormat(Qt.RichText)
        self.legend = QLabel(_legend_html(), self)
        self.legend.setTextFormat(Qt.RichText)
        self.legend.setWordWrap(True)  # narrow windows: a second line rather than a clipped legend
        f = self.legend.font()
        f.setPointSizeF(max(6.0, f.pointSizeF() * 0.85))
        self.legend.setFont(f)
        self.zoom_out_button = QToolButton(self)
        self.zoom_out_button.setText("\u2212")
        self.zoom_out_button.setToolTip("Zoom out (Ctrl+wheel)")
        self.zoom_in_button = QToolButton(self)
        self.zoom_in_button.setText("+")
        self.zoom_in_button.setToolTip("Zoom in (Ctrl+wheel)")

        bottom = QHBoxLayout()
        bottom.setContentsMargins(2, 0, 2, 0)
        bottom.addWidget(self.legend, 1)
        bottom.addWidget(self.zoom_out_button)
        bottom.addWidget(self.zoom_in_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.overview)
        lay.addWidget(self.drift_label)
        lay.addWidget(self.stream, 1)
        lay.addLayout(bottom)

        self.zoom_in_button.clicked.connect(self.stream.zoom_in)
        self.zoom_out_button.clicked.connect(self.stream.zoom_out)
        self.overview.jump_requested.connect(self._on_strip)
        self.stream.visible_range_changed.connect(self.overview.set_visible_range)
        self.stream.hovered.connect(self.hovered)
        self.stream.clicked.connect(self.clicked)
        self.stream.message.connect(self.message)
        self.stream.zoom_changed.connect(self._update_zoom_buttons)
        self.stream.layout_changed.connect(self._update_legend)
        self._update_zoom_buttons(self.stream.zoom_level())

    def _on_strip(self, position: int) -> None:
        self.stream.scroll_to_position(position, center=True)
        model = self.stream.model()
        if model is not None:
            step = model.step_reading(position, self._step)
            if step >= 0:
                self.step_requested.emit(step)

    def _update_zoom_buttons(self, level: int) -> None:
        self.zoom_out_button.setEnabled(level > 0)
        self.zoom_in_button.setEnabled(level < self.stream.zoom_levels() - 1)

    def set_model(self, model: StreamModel | None) -> None:
        self.overview.set_model(model)
        self.stream.set_model(model)
        self.overview.set_visible_range(*self.stream.visible_range())
        self._update_legend()
        self._update_drift()

    def _update_legend(self) -> None:
        view = self.stream
        model = view.model()
        mode = view.color_mode()
        cov_max = None
        if model is not None and mode == "coverage" and model.plan.mode != "random":
            cov_max = model.plan.epoch(self._step) + 1
        text = _legend_html(model is not None and model.plan.n_shards > 1, mode, cov_max, view.loss_range(),
                            view.rows_layout() == "row")
        if text != self.legend.text():
            self.legend.setText(text)

    def legend_text(self) -> str:
        """The legend as plain text (what it says, without the swatches)."""
        import re

        return html.unescape(re.sub(r"<[^>]+>", "", self.legend.text())).replace("\xa0", " ")

    def set_step(self, step: int) -> None:
        self._step = max(0, int(step))
        self.overview.set_step(step)
        self.stream.set_step(step)
        self._update_drift()
        if self.stream.color_mode() == "coverage":
            self._update_legend()

    def drift_text(self) -> str:
        """The banner's text ('' when it is hidden)."""
        return self._drift_plain if not self.drift_label.isHidden() else ""

    def drift_active(self) -> bool:
        """Whether the ranks read different shards at the current step (the banner's alarm state)."""
        return self._drift_active

    def _update_drift(self) -> None:
        """The banner shows for every plan whose ranks ever drift (so the stream does not jump when
        they fall in and out of step): the drift sentence when they differ, else where they all are."""
        marks = self.stream.shard_marks()
        first = marks.drift() if marks is not None else None
        text, self._drift_active = ranks_banner(marks.plan, self._step, first) if first is not None else ("", False)
        self.drift_label.setStyleSheet(_banner_style(self._drift_active))
        self._drift_plain = text
        head, sep, rest = text.partition(":")
        self.drift_label.setText(f"<b>{html.escape(head)}</b>{sep}{html.escape(rest)}" if sep else html.escape(text))
        self.drift_label.setVisible(bool(text))

    def set_display_table(self, table: list[str] | None) -> None:
        self.stream.set_display_table(table)

    def set_color_mode(self, mode: str) -> None:
        self.stream.set_color_mode(mode)
        self._update_legend()

    def set_loss(self, per_token, ranks: tuple = (0,), vmin: float = 0.0, vmax: float = 11.0) -> None:
        self.stream.set_loss(per_token, ranks, vmin, vmax)
        if self.stream.color_mode() == "loss":
            self._update_legend()

    def set_highlight(self, position: int) -> None:
        self.stream.set_highlight(position)

    def set_placeholder(self, text: str) -> None:
        self.stream.set_placeholder(text)


__all__ = ["StreamView", "OverviewBar", "StreamPanel", "ZOOM_LEVELS", "COLOR_MODES", "DEFAULT_ZOOM", "SCROLL_CAP",
           "BOUNDARY", "DRIFT", "DROPPED_BG", "DROPPED_HATCH", "DOC_COLORS", "EOT_MARK"]
