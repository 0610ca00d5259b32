"""Sliding windows (issue 12): each row of the step is its own thin bar under the tokens, so overlap shows."""
from __future__ import annotations

import numpy as np

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.ui.stream_view import StreamView
from nanogpt_viz.viewmodel import StreamModel


def _view(qtbot, config: PlanConfig, L: int = 5000) -> StreamView:
    tokens = (np.arange(L, dtype=np.int64) * 7919 % 50257).astype(np.uint16)
    v = StreamView()
    qtbot.addWidget(v)
    v.resize(1200, 600)
    v.show()
    qtbot.waitExposed(v)
    v.set_model(StreamModel(tokens, BatchPlan(config, L)))
    return v


def test_a_stride_1_b4_step_draws_4_bars(qtbot):
    N = 16
    v = _view(qtbot, PlanConfig(block_size=N, batch_size=4, sampling="sliding", stride=1))
    assert v.rows_layout() == "flow"
    v.set_step(3)
    v.ensure_step_visible()
    v.grab()
    bars = v.row_bars()
    starts = v.model().current_rows(3)[0].tolist()
    assert len(bars) == 4 and [b[0] for b in bars] == starts
    assert len({b[1] for b in bars}) == 4, "each row in its own slot"
    for s, _slot, segs in bars:
        assert segs, "every bar on screen"
        first, last = v.chip_rect(s), v.chip_rect(s + N - 1)
        assert segs[0].left() == first.left() and segs[-1].right() == last.right()
        for r in segs:  # under the tokens, inside the line
            assert r.top() > first.bottom() - 1 or r.top() > v.chip_rect(s + N - 1).bottom() - 1
    # stride 1: the rows overlap, their bars stacked at different heights
    ys = [b[2][0].top() for b in bars]
    assert len(set(ys)) == 4


def test_sequential_rows_draw_no_bars(qtbot):
    v = _view(qtbot, PlanConfig(block_size=16, batch_size=4, sampling="sequential"))
    v.grab()
    assert v.row_bars() == []
