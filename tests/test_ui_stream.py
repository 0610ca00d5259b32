"""StreamView / OverviewBar / StreamPanel: real widgets (offscreen) over a real BatchPlan."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.config import PlanConfig
from nanogpt_viz.ui.stream_view import (BOUNDARY, DEFAULT_ZOOM, DRIFT, DROPPED_BG, DROPPED_HATCH, SCROLL_CAP,
                                       OverviewBar, StreamPanel, StreamView)
from nanogpt_viz.viewmodel import StreamModel

N, B = 16, 4


def _table() -> list[str]:
    try:
        from nanogpt_viz.data.tokenizer import display_table
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
    assert text.splitlines()[0] == f"token {p + 1:,} · t[{p:,}]"  # both ways, counting from 1 leads
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
    view.set_rows_as_lines(False)  # the flowing stream: full lines (rows as lines: test_ui_rows.py)
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


# ---- shards: boundaries, dropped tails, ranks out of step ------------------------------------------

from nanogpt_viz.viewmodel import (ShardMarks, drift_banner, drift_start, dropped_note_at,  # noqa: E402
                                   dropped_tail_note, rank_shards_text)


def _shard_model(cfg: PlanConfig, shards) -> StreamModel:
    L = sum(n for _, n in shards)
    tokens = (np.arange(L, dtype=np.int64) * 7919 % 50257).astype(np.uint16)
    return StreamModel(tokens, BatchPlan(cfg, shards))


TWO_SHARDS = [("a_train_0.npy", 100), ("a_train_1.npy", 100)]


def test_dropped_tail_sentences_are_pure_and_exact():
    seq = BatchPlan(PlanConfig(block_size=16, batch_size=2), TWO_SHARDS)
    assert seq.dropped_ranges() == [(97, 100), (197, 200)]
    note = dropped_tail_note(seq, 0)
    assert note.startswith("dropped tail of a_train_0.npy: 3 tokens")
    assert "position + B·N·W + 1 > shard length (here 96 + 33 > 100)" in note
    assert dropped_note_at(seq, 198) == dropped_tail_note(seq, 1)
    assert "a_train_1.npy" in dropped_note_at(seq, 198)
    assert dropped_note_at(seq, 96) is None and dropped_note_at(seq, 100) is None
    llmc = BatchPlan(PlanConfig(block_size=16, batch_size=2, sampling="llmc"), TWO_SHARDS)
    note = dropped_tail_note(llmc, 1)
    assert "(ntok − 1) // (W·B·N)" in note and "(100 − 1) // 32 = 3 samples fit" in note
    assert note.endswith("the remaining 3 tokens are never read")
    # each rank its own position: both tests shown
    w2 = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2), [("a", 25), ("b", 25)])
    note = dropped_note_at(w2, 22)
    assert note.startswith("dropped tail of a: 4 tokens")
    assert "rank 0: 24 + 9 > 25, rank 1: 20 + 9 > 25" in note
    assert dropped_tail_note(BatchPlan(PlanConfig(block_size=16, batch_size=2, sampling="random"),
                                       TWO_SHARDS), 0) is None
    # the marks the view queries per visible range
    marks = ShardMarks(seq)
    pos, idx = marks.boundaries(50, 150)
    assert pos.tolist() == [100] and idx.tolist() == [1]
    assert marks.dropped(0, 200) == [(97, 100), (197, 200)]
    assert marks.dropped(98, 198) == [(98, 100), (197, 198)]
    assert marks.is_dropped(97) and not marks.is_dropped(96) and not marks.is_dropped(100)


def test_drift_sentences():
    plan = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2), [("a", 25), ("b", 25)])
    assert plan.rank_shards(2) == [0, 1]
    text = drift_banner(plan, 2)
    assert text.startswith("Ranks out of step at step 2: ")
    assert text == "Ranks out of step at step 2: " + plan.drift_note(2)
    assert rank_shards_text(plan, 2) == "rank 0 in a · rank 1 in b" and rank_shards_text(plan, 1) == ""
    assert drift_banner(plan, 1) == ""
    w4 = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=4), [("a", 41), ("b", 41)])
    assert drift_banner(w4, 1).endswith("(ranks 0–2 in a · rank 3 in b)")
    step, pos, note = drift_start(plan)
    assert step == 2 and pos == plan.start(2, rank=1) == 29 and note == plan.drift_note(2)
    assert drift_start(BatchPlan(PlanConfig(block_size=16, batch_size=2), TWO_SHARDS)) is None


@pytest.mark.parametrize("zoom", [0, DEFAULT_ZOOM])
def test_shard_boundary_painted_where_shards_meet(qtbot, table, zoom):
    model = _shard_model(PlanConfig(block_size=16, batch_size=2), TWO_SHARDS)
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.set_display_table(table)
    view.set_model(model)
    view.set_zoom(zoom)
    view.set_step(3)  # the first step in a_train_1.npy
    view.scroll_to_position(100)
    view.grab()
    lo, hi = view.visible_range()
    assert lo <= 100 < hi
    marks = {m["position"]: m for m in view.shard_boundaries()}
    assert view.paint_stats()["boundaries"] == len(marks) >= 1
    b = marks[100]
    assert b["shard"] == 1 and b["name"] == "a_train_1.npy"
    first = view.chip_rect(100)
    last_old = view.chip_rect(99)
    segs = b["segments"]
    assert segs
    tpl = view.tokens_per_line()
    if 100 % tpl:  # a vertical stroke in the gap between the two shards' chips
        vert = [r for r in segs if r.height() > r.width()]
        assert vert and last_old.right() <= vert[0].center().x() <= first.left()
        assert vert[0].top() <= first.top() and vert[0].bottom() >= first.bottom()
    # a horizontal stroke over the new shard's part of its first line
    assert any(r.width() > r.height() and r.bottom() <= first.top() and r.left() <= first.left()
               for r in segs)
    # the tag with the file name sits at the shard's first token (or ends at the line's end, over it)
    tag = b["tag"]
    assert not tag.isEmpty() and tag.left() <= first.left() + 4 and tag.right() >= first.left()
    img = view.viewport().grab().toImage()
    stroke = segs[0].center()
    assert img.pixelColor(stroke).name() == BOUNDARY.name()
    # position 0 carries the first shard's name; no line there
    view.scroll_to_position(0)
    view.grab()
    m0 = {m["position"]: m for m in view.shard_boundaries()}[0]
    assert m0["name"] == "a_train_0.npy" and m0["segments"] == [] and not m0["tag"].isEmpty()


def test_dropped_tail_hatched_and_explained(qtbot, table):
    model = _shard_model(PlanConfig(block_size=16, batch_size=2), TWO_SHARDS)
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(700, 500)
    view.set_display_table(table)
    view.set_model(model)
    view.set_step(0)
    view.scroll_to_position(98)
    view.grab()
    rects = view.dropped_rects()
    assert rects and view.paint_stats()["dropped_runs"] == len(rects)
    for p in (97, 98, 99):
        c = view.chip_rect(p)
        assert any(r.contains(c.center()) for r in rects)
    assert not any(r.contains(view.chip_rect(96).center()) for r in rects)
    assert not any(r.contains(view.chip_rect(100).center()) for r in rects)
    # tinted and hatched: the dropped chips are neither the unused grey nor a step colour
    img = view.viewport().grab().toImage()
    c = view.chip_rect(98)
    colors = {img.pixelColor(x, y).name() for x in range(c.left(), c.right()) for y in range(c.top(), c.bottom())}
    assert DROPPED_BG.name() in colors and DROPPED_HATCH.name() in colors
    assert view.visible_slice().step[98 - view.visible_slice().lo] == -1
    text = view.describe(98)
    assert "shard a_train_0.npy (1/2), position 98 in it" in text
    assert "not read by any step: dropped tail of a_train_0.npy: 3 tokens" in text
    assert "(here 96 + 33 > 100)" in text
    assert "dropped tail" not in view.describe(96)


def test_drift_banner_and_overview_marker(qtbot, table):
    model = _shard_model(PlanConfig(block_size=4, batch_size=1, world_size=2), [("a", 25), ("b", 25)])
    panel = StreamPanel()
    qtbot.addWidget(panel)
    panel.resize(800, 400)
    panel.set_display_table(table)
    panel.set_model(model)
    panel.show()
    qtbot.waitExposed(panel)
    panel.set_step(1)
    assert not panel.drift_active()
    assert panel.drift_text().startswith("Ranks in step at step 1: all read a")
    panel.set_step(2)
    assert panel.drift_active() and panel.drift_label.isVisible()
    assert panel.drift_text() == ("Ranks out of step at step 2: rank 1 moved to b at step 2; rank 0 is "
                                  "still in a")
    ov = panel.overview
    x = ov.drift_x()
    assert x == 29 * ov.width() // 50
    assert "ranks out of step from step 2" in ov.describe_x(x)
    assert "b (shard 2/2)" in ov.describe_x(ov.width() - 1)
    img = ov.grab().toImage()
    assert img.pixelColor(x, 1).name() == DRIFT.name()
    # the boundary tick between a and b
    assert ov.boundary_xs().tolist() == [25 * ov.width() // 50]
    # a plan whose ranks never drift has no banner and no marker
    panel.set_model(_shard_model(PlanConfig(block_size=16, batch_size=2), TWO_SHARDS))
    assert panel.drift_text() == "" and not panel.drift_label.isVisible()
    assert panel.overview.drift_x() is None


def test_overview_ticks_stay_legible_with_many_shards(qtbot):
    shards = [(f"edu_train_{k:06d}.npy", 40) for k in range(500)]
    model = _shard_model(PlanConfig(block_size=4, batch_size=2), shards)
    ov = OverviewBar()
    qtbot.addWidget(ov)
    ov.resize(600, 28)
    ov.set_model(model)
    ov.grab()
    xs = ov.boundary_xs()
    assert 0 < len(xs) <= 600 // OverviewBar.TICK_GAP + 1
    assert np.all(np.diff(xs) >= OverviewBar.TICK_GAP)
    # the stream view draws only the boundaries on screen, found by searchsorted
    view = StreamView()
    qtbot.addWidget(view)
    view.resize(600, 300)
    view.set_model(model)
    view.set_zoom(0)
    view.scroll_to_position(10_000)
    view.grab()
    lo, hi = view.visible_range()
    got = sorted(m["position"] for m in view.shard_boundaries() if m["position"] >= lo)
    assert got == [p for p in range(0, model.L, 40) if lo <= p < hi]
    assert view.paint_stats()["ms"] < 500
