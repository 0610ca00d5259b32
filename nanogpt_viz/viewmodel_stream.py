"""The token stream's arithmetic, pure (numpy only, no Qt): what `ui/stream_view.py` and
`ui/overview_bar.py` paint, computed without a font or a painter.

- `StreamLayout`: the geometry of one zoom level at one viewport width. Positions flow as fixed-width
  chips, `tpl` per line, so position p sits at line p // tpl, column p % tpl; every rectangle is a
  plain `(x, y, w, h)` tuple of ints (the view turns it into a QRect).
- Scrolling: a scroll bar holds at most `SCROLL_CAP`; beyond it value -> line is proportional.
- Colours: chip backgrounds as ARGB32 arrays (uint32, 0xAARRGGBB), from the palette's tables.
- Chip text: a token's display text, elided to a chip's characters, as UTF-32 rows that draw one
  string per line; which texts fit the monospace grid is asked of the caller (it has the font).
- The overview strip: one bin per pixel column, as an RGBA image array.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["ZOOM_LEVELS", "DEFAULT_ZOOM", "SCROLL_CAP", "COLOR_MODES", "MARGIN_X", "MARGIN_Y", "ELLIPSIS",
           "StreamLayout", "rows_aligned", "line_to_value", "value_to_line", "scrollbar_steps",
           "scroll_first_line", "step_scroll_target", "argb", "rgb_of_argb", "step_argb", "loss_argb",
           "lut_argb", "stripe_odd_rows", "dark_backgrounds", "text_styles", "display_text", "chip_text",
           "ChipCodes", "style_lines", "current_runs", "overview_position_at_x", "overview_tick_xs",
           "overview_rgba", "overview_view_xs", "overview_drift_x"]

# Zoom levels: ("dense", cell pitch px) draw coloured cells without text; an int is the number of
# characters a chip shows (chip pitch = (chars + 1) * char advance, about 21..119 px).
ZOOM_LEVELS: list[Any] = [("dense", 6), ("dense", 10), ("dense", 14), 2, 3, 4, 6, 8, 11, 16]
DEFAULT_ZOOM = 6
SCROLL_CAP = 1_000_000_000  # the scrollbar's max; beyond it value -> line is proportional
COLOR_MODES = ("step", "coverage", "loss", "documents")
MARGIN_X = 4
MARGIN_Y = 2
ELLIPSIS = "\u2026"
SPACE = 32

Rect = tuple[int, int, int, int]  # x, y, w, h


# ---- layout ------------------------------------------------------------------------------------
class StreamLayout:
    """Geometry of one zoom level at one viewport width (all ints, pixel units).

    `adv` is the monospace advance of one character, `text_h` / `label_h` the heights of the chip
    font and of the row-label font. `row_n` = N asks for one row per line (when the plan's rows start
    at multiples of N); `bars` = rows per step of a sliding plan (each gets a thin bar under the line).
    """

    def __init__(self, level: Any, adv: int, text_h: int, label_h: int, width: int,
                 row_n: int | None = None, bars: int = 0):
        self.dense = isinstance(level, tuple)
        if self.dense:
            self.chars = 0
            self.pitch = int(level[1])
            self.gap = 1
            self.chip_w = self.pitch - self.gap
            self.chip_h = self.pitch - 1
            self.band = 0
            self.line_h = self.pitch
        else:
            self.chars = int(level)
            self.pitch = (self.chars + 1) * adv
            self.gap = 2
            self.chip_w = self.pitch - self.gap
            self.chip_h = text_h + 4
            self.band = label_h
            self.line_h = self.band + self.chip_h + 2
        self.adv = adv
        fit = max(1, (width - 2 * MARGIN_X) // self.pitch)
        self.tpl = fit
        self.ghost = False  # one row per line, with a column for Y's extra target at the end
        self.row_n = 0  # rows as lines: N (each row starts a line); 0: the stream flows line to line
        if row_n and self.dense and row_n < fit // 2:
            row_n = None  # a dense overview of short rows: the stream flows, lines full
        if row_n:
            if row_n + 1 <= fit:
                self.tpl, self.ghost, self.row_n = row_n, True, row_n
            else:  # a long row wraps onto whole lines: the largest divisor of N that fits
                d = max(d for d in range(1, min(fit, row_n) + 1) if row_n % d == 0)
                if d >= max(2, fit // 2):
                    self.tpl, self.row_n = d, row_n
        # sliding windows on the flowing stream: each current row its own thin bar under the tokens
        # (one slot per row, up to 8), so overlapping rows stay visible
        self.bars = 0 if self.row_n else max(0, min(int(bars), 8))
        self.bar_h = 1 if self.dense else 2
        self.line_h += self.bars * (self.bar_h + 1)
        # the text of a chip starts here inside it (chars*adv wide, centred in the chip)
        self.text_dx = max(0, (self.chip_w - self.chars * adv) // 2)

    # lines
    def line_col(self, position: int) -> tuple[int, int]:
        """(line, column) of a corpus position."""
        return divmod(int(position), self.tpl)

    def total_lines(self, L: int) -> int:
        return -(-int(L) // self.tpl)

    def full_lines(self, height: int) -> int:
        """Lines wholly visible in a viewport `height` px tall (at least one)."""
        return max(1, (height - MARGIN_Y) // self.line_h)

    def drawn_lines(self, height: int) -> int:
        """Lines painted in a viewport `height` px tall, the partly visible last one included."""
        return max(1, -(-(height - MARGIN_Y) // self.line_h))

    def visible_range(self, first_line: int, drawn: int, L: int) -> tuple[int, int]:
        """[lo, hi) of the positions on the `drawn` lines from `first_line`."""
        lo = first_line * self.tpl
        hi = min(L, (first_line + drawn) * self.tpl)
        return lo, max(lo, hi)

    # positions <-> pixels
    def line_y(self, li: int) -> int:
        """Top of line `li` (counted from the first line on screen)."""
        return MARGIN_Y + li * self.line_h

    def chip_x(self, col: int) -> int:
        return MARGIN_X + col * self.pitch

    def chip_y(self, li: int) -> int:
        """Top of the chips of line `li` (below its label band)."""
        return MARGIN_Y + li * self.line_h + self.band

    def position_at(self, x: int, y: int, first_line: int, L: int) -> int:
        """Corpus position of the chip at viewport point (x, y), -1 for none."""
        x, y = x - MARGIN_X, y - MARGIN_Y
        if x < 0 or y < 0:
            return -1
        col = x // self.pitch
        if col >= self.tpl:
            return -1
        p = (first_line + y // self.line_h) * self.tpl + col
        return int(p) if p < L else -1

    def chip_rect(self, position: int, first_line: int, drawn: int, L: int) -> Rect | None:
        """Viewport rectangle of a position's chip; None when it is not on the `drawn` lines."""
        if not 0 <= position < L:
            return None
        line, col = self.line_col(position)
        li = line - first_line
        if li < 0 or li >= drawn:
            return None
        return self.chip_x(col), self.chip_y(li), self.chip_w, self.chip_h

    def span_rect(self, li: int, c0: int, c1: int) -> Rect:
        """The chips of columns c0..c1 (inclusive) of line `li` as one rectangle."""
        return self.chip_x(c0), self.chip_y(li), (c1 - c0 + 1) * self.pitch - self.gap, self.chip_h

    def run_rects(self, runs: Sequence[tuple[int, int]], first_line: int, drawn: int) -> list[Rect]:
        """Chip-row rectangles covering stream runs [a, b) on screen, one per line each run spans."""
        tpl = self.tpl
        out = []
        for a, b in runs:
            la, lb = a // tpl, (b - 1) // tpl
            for line in range(max(la, first_line), min(lb, first_line + drawn - 1) + 1):
                c0 = a - line * tpl if line == la else 0
                c1 = b - 1 - line * tpl if line == lb else tpl - 1
                out.append(self.span_rect(line - first_line, c0, c1))
        return out

    def bar_rects(self, start: int, n: int, lo: int, hi: int, first_line: int, slot: int) -> list[Rect]:
        """A sliding row [start, start+n) as its thin bar in `slot`, one segment per line in [lo, hi)."""
        tpl = self.tpl
        segs = []
        pos, end_all = max(lo, int(start)), min(hi, int(start) + n)
        while pos < end_all:
            line = pos // tpl
            end = min(end_all, (line + 1) * tpl)
            y = self.chip_y(line - first_line) + self.chip_h + 1 + slot * (self.bar_h + 1)
            segs.append((self.chip_x(pos % tpl), y, (end - pos) * self.pitch - self.gap, self.bar_h))
            pos = end
        return segs

    BOUNDARY_W = 2  # px: a shard boundary's stroke

    def _boundary_xy(self, q: int, first_line: int) -> tuple[int, int, int]:
        line, c = self.line_col(q)
        x = self.chip_x(c) - (self.gap + self.BOUNDARY_W) // 2
        return x, self.line_y(line - first_line), c

    def boundary_segments(self, q: int, first_line: int) -> list[Rect]:
        """The staircase line before position q (a shard's first token), in the gaps between chips:
        over the new shard's part of its line, down before its first chip, under the old shard's part
        (none at position 0)."""
        w = self.BOUNDARY_W
        x, y, c = self._boundary_xy(q, first_line)
        right = self.chip_x(self.tpl)
        top = y - (1 if self.dense else w)
        bottom = top + self.line_h
        if q <= 0:
            return []
        segs = [(x, top, right - x, w)]
        if c > 0:
            segs.append((x, top, w, self.line_h + w))
            segs.append((MARGIN_X, bottom, x - MARGIN_X + w, w))
        return segs

    def tag_rect(self, q: int, first_line: int, text_w: int, label_h: int) -> Rect:
        """The name tag of the shard starting at q (`text_w` px wide with its padding): right of the
        boundary, flush left of the line's end when the boundary is near it."""
        x, y, _c = self._boundary_xy(q, first_line)
        right = self.chip_x(self.tpl)
        left = max(MARGIN_X, min(x + self.BOUNDARY_W, right - text_w))
        return left, y if not self.dense else y + 1, min(text_w, right - left), label_h + (2 if self.dense else 0)


def rows_aligned(model: Any) -> bool:
    """Rows that start at multiples of N (the sequential loaders on one shard): each can start a line."""
    if model is None or model.plan.mode not in ("sequential", "llmc", "shuffled"):
        return False
    N = model.plan.N
    try:
        return all(int(s) % N == 0 for k in (0, 1) for s in model.current_rows(k)[0])
    except Exception:  # a plan too short for two steps
        return False


# ---- scrolling -----------------------------------------------------------------------------------
def line_to_value(line: int, max_first: int) -> int:
    """Scroll-bar value of a first line (proportional past SCROLL_CAP lines)."""
    return line if max_first <= SCROLL_CAP else line * SCROLL_CAP // max_first


def value_to_line(value: int, max_first: int) -> int:
    return value if max_first <= SCROLL_CAP else value * max_first // SCROLL_CAP


def scrollbar_steps(max_first: int, full_lines: int) -> tuple[int, int, int]:
    """(maximum, page step, single step) of the scroll bar."""
    if max_first <= SCROLL_CAP:
        return max_first, full_lines, 1
    return SCROLL_CAP, max(1, full_lines * SCROLL_CAP // max_first), max(1, SCROLL_CAP // max_first)


def scroll_first_line(p: int, tpl: int, full_lines: int, center: bool = True) -> int:
    """The first line that shows position p: centred, else with one line of context above."""
    line = p // tpl
    if center:
        return line - full_lines // 2
    return line - (1 if line > 0 else 0)


def step_scroll_target(starts: np.ndarray, N: int, lo: int, hi: int, tpl: int, full_lines: int,
                       random: bool) -> int | None:
    """Where to scroll so the current step is in view (None: it already is). A step that fits is shown
    whole, scrolling only when part of it is off screen; otherwise its first row's start is kept in view."""
    if not len(starts):
        return None
    first = int(np.min(starts))
    end = int(np.max(starts)) + N + 1  # through the last row's extra target
    fits = (end - first) <= max(tpl, (full_lines - 1) * tpl)
    if fits and not random:
        return None if (lo <= first and end <= hi - tpl) else first
    return None if lo <= first < hi - tpl else first


# ---- colours (ARGB32) ----------------------------------------------------------------------------
def argb(rgb: Sequence[int], alpha: int = 255) -> int:
    r, g, b = (int(v) for v in rgb[:3])
    return (alpha << 24) | (r << 16) | (g << 8) | b


def rgb_of_argb(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (a >> 16) & 0xFF, (a >> 8) & 0xFF, a & 0xFF


def _table_argb(table: np.ndarray) -> np.ndarray:
    t = np.asarray(table).astype(np.uint32)
    return np.uint32(0xFF000000) | (t[:, 0] << 16) | (t[:, 1] << 8) | t[:, 2]


def step_argb(steps: np.ndarray, table: np.ndarray, unused: int) -> np.ndarray:
    """Step k's hue is table[k % len(table)] ((n, 3) RGB); a position no step reads (-1) gets `unused`."""
    hues = _table_argb(table)
    steps = np.asarray(steps)
    out = hues[np.mod(steps, len(hues))]
    return np.where(steps >= 0, out, np.uint32(unused)).astype(np.uint32)


def loss_argb(vals: np.ndarray, vmin: float, vmax: float, lut: np.ndarray, unused: int) -> np.ndarray:
    """Losses on the ramp `lut` ((n, 3) RGB) from vmin to vmax (clipped); NaN (no loss) gets `unused`."""
    vals = np.asarray(vals)
    hues = _table_argb(lut)
    t = np.zeros(len(vals)) if vmax <= vmin else (np.nan_to_num(vals) - vmin) / (vmax - vmin)
    idx = (np.clip(t, 0.0, 1.0) * (len(hues) - 1)).astype(np.int64)
    return np.where(np.isfinite(vals), hues[idx], np.uint32(unused)).astype(np.uint32)


def lut_argb(values: np.ndarray, color_of: Callable[[int], int]) -> np.ndarray:
    """ARGB of integer `values` through `color_of`, called once per distinct value (coverage counts)."""
    uniq, inv = np.unique(np.asarray(values), return_inverse=True)
    lut = np.array([color_of(int(c)) for c in uniq], np.uint32)
    return lut[inv.reshape(-1)]


def stripe_odd_rows(colors: np.ndarray, current: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The current step's odd rows 1/8 darker, so neighbouring rows of one step read apart."""
    odd = current & (rows % 2 == 1)
    if not odd.any():
        return colors
    r, g, b = rgb_of_argb(colors[odd])
    out = colors.copy()
    out[odd] = (np.uint32(0xFF000000) | ((r * 7 // 8) << 16) | ((g * 7 // 8) << 8) | (b * 7 // 8)).astype(np.uint32)
    return out


def dark_backgrounds(colors: np.ndarray) -> np.ndarray:
    """Backgrounds dark enough for white text (luma below about 120 of 255)."""
    r, g, b = rgb_of_argb(colors)
    return (r * 299 + g * 587 + b * 114) < 120_000


def text_styles(current: np.ndarray, steps: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Per chip: 0 text, 1 bold (the current step), 2 unused (read by no step), 3 light, 4 light bold
    (0 and 1 on a dark background)."""
    style = np.where(current, 1, np.where(steps < 0, 2, 0))
    return np.where(dark_backgrounds(colors) & (style < 2), style + 3, style)


# ---- chip text -----------------------------------------------------------------------------------
def display_text(table: Sequence[str] | None, token_id: int) -> str:
    """A token's text from the display table; without a table its id; outside it `<?id>`."""
    if table is not None and 0 <= token_id < len(table):
        return table[token_id]
    return str(token_id) if table is None else f"<?{token_id}>"


def chip_text(text: str, chars: int) -> str:
    """`text` in a chip of `chars` characters: cut with an ellipsis in the last one when longer."""
    if len(text) > chars:
        return text[:max(0, chars - 1)] + ELLIPSIS
    return text


class ChipCodes:
    """The chips' padded texts as UTF-32 code points, one (chars + 1) row per token id, filled on
    demand. `fits(text)` says whether the font draws `text` on the monospace grid; a token whose text
    does not (wide or combining characters, an id outside the table) is marked unsafe (drawn one by one)."""

    def __init__(self, chars: int, table: Sequence[str] | None, fits: Callable[[str], bool]):
        self.chars = int(chars)
        self.table = table
        self.fits = fits
        self.V = len(table) if table is not None else 65536  # no table: ids as numbers
        cap = self.V + 1  # last slot: ids outside the table
        self.codes = np.full((cap, self.chars + 1), SPACE, np.uint32)
        self.ok = np.zeros(cap, bool)
        self.unsafe = np.zeros(cap, bool)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """((n, chars+1) code points, (n,) unsafe mask) of the tokens `ids`."""
        V = self.V
        inside = (ids >= 0) & (ids < V)
        slot = np.where(inside, ids, V)
        for i in np.unique(slot[~self.ok[slot]]).tolist():
            if i != V:
                self._fill(i)
        return self.codes[slot], self.unsafe[slot] | ~inside

    def _fill(self, token_id: int) -> None:
        text = chip_text(display_text(self.table, token_id), self.chars)
        self.ok[token_id] = True
        if text and self.fits(text):
            self.codes[token_id, :len(text)] = [ord(c) for c in text]
        else:
            self.unsafe[token_id] = True


def style_lines(codes: np.ndarray, sel: np.ndarray, nlines: int, tpl: int) -> list[tuple[int, str]]:
    """(line, text) of every line holding a selected chip: each line one string, the unselected chips
    blank, so one drawText per line puts every selected chip's text in its cell."""
    n, width = codes.shape
    pad = nlines * tpl - n
    arr = np.where(sel[:, None], codes, np.uint32(SPACE))
    if pad:
        arr = np.concatenate([arr, np.full((pad, width), SPACE, np.uint32)])
    arr = arr.reshape(nlines, tpl * width)
    any_line = np.concatenate([sel, np.zeros(pad, bool)]).reshape(nlines, tpl).any(axis=1)
    return [(li, arr[li].tobytes().decode("utf-32-le").rstrip()) for li in np.nonzero(any_line)[0].tolist()]


def current_runs(current: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) index of each run of current-step chips that are one row on one line (`cols` =
    the column on screen: a run breaks at a line's start)."""
    idx = np.nonzero(current)[0]
    if not len(idx):
        return idx, idx
    brk = np.ones(len(idx), bool)
    brk[1:] = (np.diff(idx) != 1) | (rows[idx[1:]] != rows[idx[:-1]]) | (cols[idx[1:]] == 0)
    return idx[brk], np.append(idx[np.nonzero(brk)[0][1:] - 1], idx[-1])


# ---- the overview strip --------------------------------------------------------------------------
def overview_position_at_x(x: float, w: int, L: int) -> int:
    """The corpus position in the middle of pixel column x's bin (w columns over L positions)."""
    w = max(1, w)
    x = max(0, min(w - 1, int(x)))
    return int(min(L - 1, (2 * x + 1) * L // (2 * w)))


def overview_tick_xs(starts: np.ndarray, L: int, w: int, gap: int) -> np.ndarray:
    """Pixel columns of the shard boundaries (`starts[1:]`); when they crowd (more than one per 2*gap
    px) snapped to a `gap` px comb."""
    xs = np.unique(np.asarray(starts[1:], np.int64) * w // L)
    if len(xs) > w // (2 * gap):
        xs = np.unique(xs // gap * gap)
    return xs[(xs >= 0) & (xs < w)]


def overview_rgba(steps: np.ndarray, current: np.ndarray, h: int, table: np.ndarray, unused: Sequence[int],
                  background: Sequence[int], mark: int, ticks: np.ndarray, tick_rgb: Sequence[int],
                  crowded: bool) -> np.ndarray:
    """(h, w, 4) RGBA of the strip: each column the hue of the step that reads its bin (`unused` for
    none), with `mark` rows above and below that are red over the current step's bins; shard ticks
    1 px wide (`crowded`: on the lower half only, blended into the body, so many read as a comb)."""
    steps = np.asarray(steps)
    w = len(steps)
    body = np.where((steps >= 0)[:, None], np.asarray(table, np.uint8)[np.mod(steps, len(table))],
                    np.asarray(unused, np.uint8)[None, :])
    buf = np.empty((h, w, 4), np.uint8)
    buf[..., 3] = 255
    buf[:, :, :3] = body[None, :, :]
    red = np.array([255, 0, 0], np.uint8)
    marks = np.where(np.asarray(current, bool)[:, None], red[None, :], np.asarray(background, np.uint8)[None, :])
    buf[:mark, :, :3] = marks[None]
    buf[h - mark:, :, :3] = marks[None]
    if len(ticks):
        col = np.asarray(tick_rgb, np.uint8)
        top = mark + (h - 2 * mark) // 2 if crowded else mark
        buf[top:h - mark, ticks, :3] = col if not crowded else (0.55 * col + 0.45 * body[ticks][None]).astype(np.uint8)
    return np.ascontiguousarray(buf)


def overview_view_xs(lo: int, hi: int, L: int, w: int) -> tuple[int, int]:
    """[x0, x1) of the box that marks the stream's visible range [lo, hi) (at least 3 px wide)."""
    x0 = int(lo * w // L)
    return x0, max(x0 + 3, int(-(-hi * w // L)))


def overview_drift_x(position: int, L: int, w: int) -> int:
    """Pixel column of corpus `position` (the ranks' drift marker)."""
    return int(min(w - 1, position * w // L))
