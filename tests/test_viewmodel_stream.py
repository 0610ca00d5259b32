"""The stream's pure arithmetic (nanogpt_viz/viewmodel_stream.py): hand-derived cases, no Qt.

The text level used throughout: 6 characters a chip at an advance of 7 px, text 13 px and labels
10 px high, a viewport 500 px wide. Then pitch = (6 + 1) * 7 = 49, chip 47 x 17 (text + 4), the label
band 10, a line 10 + 17 + 2 = 29 px, and (500 - 2 * 4) // 49 = 10 tokens per line.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from nanogpt_viz.viewmodel_stream import (ELLIPSIS, SCROLL_CAP, ChipCodes, StreamLayout, chip_text,
                                          current_runs, display_text, line_to_value, loss_argb,
                                          overview_position_at_x, overview_rgba, overview_tick_xs,
                                          overview_view_xs, scroll_first_line, scrollbar_steps, step_argb,
                                          step_scroll_target, stripe_odd_rows, style_lines, text_styles,
                                          value_to_line)


def _text(width: int = 500, row_n: int | None = None, bars: int = 0) -> StreamLayout:
    return StreamLayout(6, 7, 13, 10, width, row_n, bars)


def test_the_module_imports_no_qt():
    code = ("import sys, nanogpt_viz.viewmodel_stream; "
            "print([m for m in sys.modules if m.startswith(('PySide6', 'shiboken', 'pyqtgraph'))])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_text_layout_geometry():
    lay = _text()
    assert (lay.pitch, lay.chip_w, lay.chip_h, lay.band, lay.line_h, lay.tpl) == (49, 47, 17, 10, 29, 10)
    assert lay.text_dx == (47 - 42) // 2 == 2
    assert lay.line_col(23) == (2, 3)
    assert lay.total_lines(100) == 10 and lay.total_lines(101) == 11
    # a viewport 100 px high: (100 - 2) // 29 = 3 whole lines, 4 drawn (the last one partly)
    assert lay.full_lines(100) == 3 and lay.drawn_lines(100) == 4
    assert lay.visible_range(first_line=5, drawn=4, L=83) == (50, 83)


def test_position_and_rect_map_both_ways():
    lay = _text()
    # position 23 at line 2, column 3: x = 4 + 3 * 49 = 151, the chip's top y = 2 + 2 * 29 + 10 = 70
    assert lay.position_at(151 + 5, 70 + 2, first_line=0, L=100) == 23
    assert lay.position_at(151 + 5, 70 + 2, first_line=5, L=100) == 73
    assert lay.position_at(151 + 5, 70 + 2, first_line=8, L=100) == -1  # past the corpus' end
    assert lay.position_at(2, 40, first_line=0, L=100) == -1  # in the left margin
    assert lay.position_at(4 + 10 * 49 + 1, 40, first_line=0, L=100) == -1  # right of the last column
    assert lay.chip_rect(23, first_line=1, drawn=5, L=100) == (151, 41, 47, 17)
    assert lay.chip_rect(23, first_line=3, drawn=5, L=100) is None  # scrolled off above
    assert lay.chip_rect(100, first_line=0, drawn=50, L=100) is None
    for p in (0, 9, 10, 57, 99):
        x, y, w, h = lay.chip_rect(p, first_line=0, drawn=10, L=100)
        assert lay.position_at(x + w // 2, y + h // 2, first_line=0, L=100) == p


def test_rows_as_lines():
    lay = _text(row_n=8)  # a row of 8 and its extra target fit a line of 10
    assert (lay.tpl, lay.ghost, lay.row_n) == (8, True, 8)
    lay = _text(row_n=16)  # too long: on whole lines of the largest divisor of 16 that fits, 8
    assert (lay.tpl, lay.ghost, lay.row_n) == (8, False, 16)
    lay = _text(row_n=13)  # prime: only 1 divides it, under half a line: the stream flows
    assert (lay.tpl, lay.ghost, lay.row_n) == (10, False, 0)
    dense = StreamLayout(("dense", 6), 7, 13, 10, 500, row_n=16)
    assert (dense.pitch, dense.line_h, dense.tpl, dense.row_n) == (6, 6, 82, 0)  # 16 < 82 // 2: flows
    bars = _text(bars=12)  # sliding rows: at most 8 bar slots of 2 px + 1 px gap under each line
    assert (bars.bars, bars.line_h) == (8, 29 + 8 * 3)


def test_run_and_bar_rects():
    lay = _text()
    # the run [8, 23) spans columns 8..9 of line 0, all of line 1, columns 0..2 of line 2
    assert lay.run_rects([(8, 23)], first_line=0, drawn=5) == [(396, 12, 96, 17), (4, 41, 488, 17),
                                                                (4, 70, 145, 17)]
    assert lay.run_rects([(8, 23)], first_line=1, drawn=1) == [(4, 12, 488, 17)]
    # a sliding row [15, 25) in slot 1 under lines 1 and 2: y = chip top + 17 + 1 + 1 * 3
    lay = _text(bars=2)
    assert lay.line_h == 35
    assert lay.bar_rects(15, 10, 0, 100, first_line=0, slot=1) == [(4 + 5 * 49, 2 + 35 + 10 + 21, 5 * 49 - 2, 2),
                                                                    (4, 2 + 70 + 10 + 21, 5 * 49 - 2, 2)]


def test_shard_boundary_staircase():
    lay = _text()
    # a shard starting at 23 (line 2, column 3): x = 151 - (2 + 2) // 2 = 149, the line's top y = 60
    segs = lay.boundary_segments(23, first_line=0)
    assert segs == [(149, 58, 4 + 490 - 149, 2), (149, 58, 2, 31), (4, 58 + 29, 149 - 4 + 2, 2)]
    assert lay.boundary_segments(0, first_line=0) == []
    assert lay.boundary_segments(30, first_line=0) == [(4 + 0 - 2, 2 + 87 - 2, 494 - 2, 2)]  # column 0
    assert lay.tag_rect(23, 0, text_w=80, label_h=10) == (151, 60, 80, 10)
    assert lay.tag_rect(29, 0, text_w=80, label_h=10) == (494 - 80, 60, 80, 10)  # flush left of the end


def test_scrolling_maths():
    assert line_to_value(5, 100) == 5 and value_to_line(5, 100) == 5
    mf = 4 * SCROLL_CAP  # four lines a scroll-bar unit
    assert line_to_value(8, mf) == 2 and value_to_line(2, mf) == 8
    assert scrollbar_steps(100, 6) == (100, 6, 1)
    assert scrollbar_steps(mf, 20) == (SCROLL_CAP, 5, 1)
    assert scroll_first_line(105, 10, 6, center=True) == 7
    assert scroll_first_line(105, 10, 6, center=False) == 9
    assert scroll_first_line(5, 10, 6, center=False) == 0


def test_step_scroll_target():
    starts = np.array([40, 56])  # a step of two rows of N = 16: positions 40..72 with the extra target
    # it fits in 6 lines of 10 and is wholly in view [30, 100) (73 <= 100 - 10): no scroll
    assert step_scroll_target(starts, 16, 30, 100, 10, 6, random=False) is None
    assert step_scroll_target(starts, 16, 50, 120, 10, 6, random=False) == 40  # its start is above
    assert step_scroll_target(starts, 16, 0, 70, 10, 6, random=False) == 40  # its end is below
    # random rows: only the first start needs to be in view
    assert step_scroll_target(starts, 16, 0, 70, 10, 6, random=True) is None
    assert step_scroll_target(np.array([], np.int64), 16, 0, 70, 10, 6, random=False) is None


def test_colours_of_steps_losses_and_stripes():
    table = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    got = step_argb(np.array([0, 1, 2, -1]), table, unused=0xFFD0D0D0)
    assert got.tolist() == [0xFF010203, 0xFF040506, 0xFF010203, 0xFFD0D0D0] and got.dtype == np.uint32
    lut = np.array([[0, 0, 0], [128, 128, 128], [255, 255, 255]], np.uint8)
    got = loss_argb(np.array([0.0, 0.5, 1.0, np.nan, 2.0]), 0.0, 1.0, lut, unused=7)
    assert got.tolist() == [0xFF000000, 0xFF808080, 0xFFFFFFFF, 7, 0xFFFFFFFF]
    assert loss_argb(np.array([3.0]), 1.0, 1.0, lut, unused=7).tolist() == [0xFF000000]  # empty range
    colors = np.array([0xFF808080] * 3, np.uint32)
    out = stripe_odd_rows(colors, np.array([True, True, False]), np.array([0, 1, 1]))
    assert out.tolist() == [0xFF808080, 0xFF707070, 0xFF808080]  # 128 * 7 // 8 = 112 = 0x70
    styles = text_styles(np.array([True, False, False, False, True]), np.array([0, -1, 3, 3, 3]),
                         np.array([0xFFFFFFFF] * 3 + [0xFF000000] * 2, np.uint32))
    assert styles.tolist() == [1, 2, 0, 3, 4]


def test_chip_texts():
    assert chip_text("hello", 3) == "he" + ELLIPSIS and chip_text("hi", 3) == "hi"
    assert chip_text("ab", 1) == ELLIPSIS
    assert display_text(["a", "b"], 1) == "b" and display_text(["a", "b"], 5) == "<?5>"
    assert display_text(None, 5) == "5"
    codes = ChipCodes(2, ["a", "bcd", "w"], fits=lambda t: t != "w")
    rows, unsafe = codes.rows(np.array([0, 1, 2, 9]))
    assert [bytes(r.astype("<u4").tobytes()).decode("utf-32-le") for r in rows[:2]] == ["a  ", "b" + ELLIPSIS + " "]
    assert unsafe.tolist() == [False, False, True, True]  # "w" does not fit the grid; 9 is outside the table
    # lines of two chips of (2 + 1) code points: token 1's text on line 0, token 0's on line 1
    lines = style_lines(rows[[0, 1, 0]], np.array([False, True, True]), nlines=2, tpl=2)
    assert lines == [(0, "   b" + ELLIPSIS), (1, "a")]


def test_current_runs_break_at_rows_and_lines():
    cur = np.array([False, True, True, True, False, True, True])
    rows = np.array([-1, 0, 0, 1, -1, 1, 1])
    cols = np.array([0, 1, 2, 3, 4, 0, 1])  # position 5 starts a line
    starts, ends = current_runs(cur, rows, cols)
    assert starts.tolist() == [1, 3, 5] and ends.tolist() == [2, 3, 6]


def test_overview_strip():
    assert overview_position_at_x(0, 100, 1000) == 5  # the middle of the first 10-token bin
    assert overview_position_at_x(99, 100, 1000) == 995
    assert overview_position_at_x(500, 100, 10) == 9  # clamped to the last column and position
    assert overview_tick_xs(np.array([0, 500, 501, 750]), 1000, 100, 3).tolist() == [50, 75]
    crowded = overview_tick_xs(np.arange(0, 1000, 20), 1000, 100, 3)  # 49 ticks > 100 // 6: a comb
    assert crowded.tolist() == list(range(0, 99, 3))
    assert overview_view_xs(100, 201, 1000, 100) == (10, 21)
    assert overview_view_xs(100, 105, 1000, 100) == (10, 13)  # at least 3 px
    img = overview_rgba(np.array([0, -1]), np.array([True, False]), 4, np.array([[1, 2, 3]]), (9, 9, 9),
                        (8, 8, 8), 1, np.zeros(0, np.int64), (0, 0, 0), crowded=False)
    assert img.shape == (4, 2, 4) and (img[..., 3] == 255).all()
    assert img[0, :, :3].tolist() == [[255, 0, 0], [8, 8, 8]] == img[3, :, :3].tolist()  # the step marks
    assert img[1, :, :3].tolist() == [[1, 2, 3], [9, 9, 9]] == img[2, :, :3].tolist()
    ticked = overview_rgba(np.array([0, 0, 0]), np.zeros(3, bool), 4, np.array([[1, 2, 3]]), (9, 9, 9),
                           (8, 8, 8), 1, np.array([1]), (200, 0, 0), crowded=False)
    assert ticked[1:3, 1, :3].tolist() == [[200, 0, 0]] * 2 and ticked[1, 0, :3].tolist() == [1, 2, 3]
