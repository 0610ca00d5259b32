"""StreamView / OverviewBar / StreamPanel: real widgets (offscreen) over a real BatchPlan."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from nanogpt_viz.batching import BatchPlan
from nanogpt_viz.config import PlanConfig
from nanogpt_viz.ui.stream_view import SCROLL_CAP, OverviewBar, StreamPanel, StreamView
from nanogpt_viz.viewmodel import StreamModel

N, B = 16, 4


def _table() -> list[str]:
    try:
        from nanogpt_viz.tokenizer import display_table
        return display_table()
    except Exception:  # noqa: BLE001 - tokenizer files unavailable: a stand-in table
        return [f"t{i}" for i in range(50257)]


@pytest.fixture(scope="module")
def table() -> list[str]:
    return _table()


def _model(L: int = 6000, sampling: str = "sequential") -> StreamModel:
    tokens = (np.arange(L, dtype=np.int64) * 7919 % 50257).astype(np.uint16)
    plan = BatchPlan(PlanConfig(block_size=N, batch_size=B, sampling=sampling), L)
    return StreamModel(tokens, plan)


def _variance(widget) -> float:
    img = widget.grab().toImage()
    w, h = img.width(), img.height()
    pts = [img.pixel(x, y) for x in range(0, w, 7) for y in range(0, h, 7)]
    return float(np.var(np.array(pts, dtype=np.float64)))


@pytest.fixture
def panel(qtbot, table):
    p = StreamPanel()
    qtbot.addWidget(p)
    p.resize(900, 600)
    p.set_display_table(table)
    p.set_model(_model())
    p.show()
    qtbot.waitExposed(p)
    return p


def _expected_current(plan: BatchPlan, k: int, lo: int, hi: int) -> set[int]:
    out: set[int] = set()
    for r in plan.rows(k):
        out.update(range(max(lo, r.start), min(hi, r.start + plan.N)))
    return out


@pytest.mark.parametrize("k", [0, 3, 11])
def test_current_step_marks_exactly_plan_rows(panel, k):
    view = panel.stream
    plan = view.model().plan
    panel.set_step(k)
    view.ensure_step_visible()
    lo, hi = view.visible_range()
    assert lo <= plan.rows(k)[0].start < hi
    panel.grab()
    sl = view.visible_slice()
    assert sl.lo <= lo and hi <= sl.hi  # covers what is on screen, and not the whole corpus
    assert len(sl) < view.model().L
    current = set((np.nonzero(sl.current)[0] + sl.lo).tolist())
    assert current == _expected_current(plan, k, sl.lo, sl.hi)
    assert current  # the step is on screen
    # the extra target of the last row of the step is target-only
    last = max(r.start for r in plan.rows(k)) + plan.N
    if sl.lo <= last < sl.hi:
        assert sl.target_only[last - sl.lo]
    # chip geometry round-trips through position_at
    for p in (lo, plan.rows(k)[0].start, hi - 1):
        rect = view.chip_rect(p)
        assert not rect.isEmpty()
        assert view.position_at(rect.center()) == p
    assert _variance(panel) > 0


def test_hover_emits_position_and_describes_role(panel, qtbot):
    view = panel.stream
    plan = view.model().plan
    panel.set_step(2)
    view.ensure_step_visible()
    row = plan.rows(2)[1]
    p = row.start + 5
    rect = view.chip_rect(p)
    assert not rect.isEmpty()
    with qtbot.waitSignal(panel.hovered, timeout=2000) as blocker:
        qtbot.mouseMove(view.viewport(), rect.center())
    assert blocker.args == [p]
    text = view.describe(p)
    assert f"position {p:,}" in text
    assert "X[row 1, col 5] of step 2 (rank 0, micro 0)" in text
    with qtbot.waitSignal(panel.clicked, timeout=2000) as blocker:
        qtbot.mouseClick(view.viewport(), Qt.LeftButton, pos=rect.center())
    assert blocker.args == [p]
    # highlight from another view: no scrolling
    first = view.first_line()
    panel.set_highlight(p + 3)
    panel.grab()
    assert view.first_line() == first


def test_not_read_positions_are_described(qtbot, table):
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(600, 300)
    model = _model(L=1000)  # 15 steps of 64 tokens: the last 39 tokens are never read
    view.set_model(model)
    view.set_display_table(table)
    tail = model.plan.used_tokens + 1
    assert tail < model.L
    view.scroll_to_position(tail)
    view.grab()
    sl = view.visible_slice()
    assert sl.step[tail - sl.lo] == -1
    assert "not read by any step" in view.describe(tail)


def test_overview_click_jumps(panel, qtbot):
    ov = panel.overview
    L = panel.stream.model().L
    w = ov.width()
    x = w // 3
    with qtbot.waitSignal(ov.jump_requested, timeout=2000) as blocker:
        qtbot.mouseClick(ov, Qt.LeftButton, pos=QPoint(x, ov.height() // 2))
    pos = blocker.args[0]
    expected = x * L / w
    assert abs(pos - expected) <= L / w + 1
    lo, hi = panel.stream.visible_range()
    assert lo <= pos < hi  # the panel scrolled the stream there
    assert _variance(ov) > 0


def test_overview_standalone(qtbot):
    ov = OverviewBar()
    qtbot.addWidget(ov)
    ov.resize(400, 28)
    ov.set_model(_model())
    ov.set_step(5)
    ov.set_visible_range(100, 900)
    assert _variance(ov) > 0
    assert ov.height() == 28


class LazyTokens:
    """A corpus of `n` zeros that records every read."""

    def __init__(self, n: int):
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, _ = key.indices(self.n)
            self.reads.append(max(0, stop - start))
            return np.zeros(max(0, stop - start), np.uint16)
        arr = np.asarray(key)
        self.reads.append(int(arr.size))
        return np.zeros(arr.shape, np.uint16)


def test_huge_corpus_scrolls_and_reads_only_visible(qtbot, table):
    L = 10 ** 10
    tokens = LazyTokens(L)
    plan = BatchPlan(PlanConfig(block_size=1024, batch_size=8), L)
    model = StreamModel(tokens, plan)
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(800, 400)
    view.set_display_table(table)
    view.set_model(model)
    view.set_zoom(view.zoom_levels() - 1)  # few tokens per line: more lines than an int32 holds
    assert view.total_lines() > SCROLL_CAP
    sb = view.verticalScrollBar()
    assert sb.maximum() == SCROLL_CAP
    step = 1_000_000
    view.set_step(step)
    view.ensure_step_visible()
    view.grab()
    lo, hi = view.visible_range()
    assert lo <= plan.rows(step)[0].start < hi
    view.scroll_to_position(L - 1)
    view.grab()
    lo, hi = view.visible_range()
    assert hi == L
    assert sb.value() == sb.maximum()
    visible = hi - lo
    assert tokens.reads and max(tokens.reads) <= 4 * visible
    assert view.paint_stats()["chips"] == visible
    # the scrollbar maps proportionally back to lines
    sb.setValue(SCROLL_CAP // 2)
    lines_on_screen = visible // view.tokens_per_line() + 1
    assert abs(view.first_line() - view.total_lines() // 2) <= lines_on_screen
    assert _variance(view) > 0


def test_color_modes_and_messages(qtbot, table):
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(700, 400)
    view.set_display_table(table)
    model = _model()
    view.set_model(model)
    view.set_step(4)
    view.ensure_step_visible()
    base = view.grab().toImage()
    view.set_color_mode("coverage")
    cov_img = view.grab().toImage()
    assert view.visible_slice().coverage is not None
    assert cov_img != base
    per_token = np.linspace(0, 10, 1 * 1 * B * N, dtype=np.float32).reshape(1, 1, B, N)
    view.set_loss(per_token, (0,), 0.0, 10.0)
    view.set_color_mode("loss")
    assert view.grab().toImage() != cov_img
    with pytest.raises(ValueError):
        view.set_color_mode("nope")

    # coverage of millions of random rows is refused by the plan: fall back with a message
    rnd = _model(sampling="random")
    view.set_model(rnd)
    view.set_step(6_000_000)
    view.set_color_mode("coverage")
    with qtbot.waitSignal(view.message, timeout=2000) as blocker:
        view.grab()
    assert "Coverage" in blocker.args[0]
    assert view.visible_slice().coverage is None


def test_zoom_dense_mode_and_benchmark(qtbot, table):
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(1900, 1000)
    view.set_display_table(table)
    view.set_model(_model(L=200_000))
    view.set_step(7)
    tpl = view.tokens_per_line()
    view.zoom_out()
    assert view.tokens_per_line() > tpl
    view.set_zoom(2)
    assert view.is_dense()
    view.grab()
    stats = view.paint_stats()
    assert stats["chips"] > 5000 and stats["ms"] < 500
    view.set_zoom(3)
    assert not view.is_dense()
    view.grab()
    assert view.paint_stats()["chips"] > 2000


def test_placeholder_without_model(qtbot):
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(400, 200)
    view.set_placeholder("open a corpus")
    assert _variance(view) > 0
    assert view.visible_slice() is None
    assert view.position_at(QPoint(10, 10)) == -1
