"""Rows as lines (issue 12): each visual line is one row of N tokens, so a step is B lines under each other."""
from __future__ import annotations

import numpy as np
import pytest

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.ui.stream_view import StreamView
from nanogpt_viz.viewmodel import StreamModel


def _model(N: int, B: int, L: int = 20000, sampling: str = "sequential") -> StreamModel:
    tokens = (np.arange(L, dtype=np.int64) * 7919 % 50257).astype(np.uint16)
    return StreamModel(tokens, BatchPlan(PlanConfig(block_size=N, batch_size=B, sampling=sampling), L))


@pytest.fixture
def view(qtbot):
    v = StreamView()
    qtbot.addWidget(v)
    v.resize(1400, 700)
    v.show()
    qtbot.waitExposed(v)
    return v


@pytest.mark.parametrize("step", [0, 1, 5])
def test_row_i_of_step_k_is_one_line(view, step):
    m = _model(16, 4)
    view.set_model(m)
    view.set_step(step)
    view.ensure_step_visible()
    assert view.rows_layout() == "row" and view.tokens_per_line() == 16
    plan = m.plan
    ys = []
    for r in plan.rows(step):
        first, last = view.chip_rect(r.start), view.chip_rect(r.start + plan.N - 1)
        assert not first.isEmpty() and first.y() == last.y(), "a row is one line"
        assert first.x() == view.chip_rect((r.start // 16) * 16).x() and r.start % 16 == 0
        assert view.position_at(first.center()) == r.start
        ys.append(first.y())
    assert len(set(ys)) == plan.B and ys == sorted(ys), "the B rows are B lines under each other"
    assert np.all(np.diff(ys) == ys[1] - ys[0])
    view.grab()  # paints the Y-extra-target column without error


def test_long_rows_wrap_onto_whole_lines_and_narrow_views_fall_back(view):
    view.set_model(_model(1024, 2, L=60000))
    assert view.rows_layout() == "wrapped"
    tpl = view.tokens_per_line()
    assert 1024 % tpl == 0
    view.set_step(3)
    view.ensure_step_visible()
    start = int(view.model().current_rows(3)[0][0])
    assert start % tpl == 0 and view.chip_rect(start).x() == 4, "each row starts a line (at the left margin)"
    view.grab()
    # random offsets are not rows on a grid: the stream flows
    view.set_model(_model(16, 4, sampling="random"))
    assert view.rows_layout() == "flow"
    # and the user can turn it off
    view.set_model(_model(16, 4))
    view.set_rows_as_lines(False)
    assert view.rows_layout() == "flow"
    view.set_rows_as_lines(True)
    assert view.rows_layout() == "row"


def test_the_legend_follows_the_colour_mode(qtbot):
    from nanogpt_viz.ui.stream_view import StreamPanel

    panel = StreamPanel()
    qtbot.addWidget(panel)
    panel.resize(1200, 600)
    panel.show()
    m = _model(16, 4, L=3000)
    panel.set_model(m)
    panel.set_step(3)
    text = panel.legend_text()
    assert "step k colours" in text and "coverage" not in text
    assert "Y's extra target" in text  # one row per line: the faint last column is explained
    panel.set_color_mode("coverage")
    text = panel.legend_text()
    assert "times read" in text and "step k colours" not in text and "1×" in text
    epoch_steps = m.plan.epoch_start(1)
    panel.set_step(epoch_steps + 1)  # second epoch: tokens read twice, the scale says so
    assert "2×" in panel.legend_text()
    panel.set_color_mode("loss")
    panel.set_loss(None, (), 1.5, 9.25)
    text = panel.legend_text()
    assert "per-token loss" in text and "1.50" in text and "9.25" in text
    panel.set_color_mode("step")
    assert "step k colours" in panel.legend_text()
