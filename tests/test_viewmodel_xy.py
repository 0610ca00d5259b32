"""The X / Y panel's state and geometry (nanogpt_viz/viewmodel_xy.py), pure: hand-derived cases.

Two rows of four: row 0 starts at 10, row 1 at 14 (X = t[s:s+4], Y = t[s+1:s+5] with t[p] = 100 + p).
Cells 44 px wide and 20 px high: a row band is 2 * 20 + 7 + 9 = 56 px, its Y line 27 px below its X line.
"""
from __future__ import annotations

import numpy as np
import pytest

from nanogpt_viz.viewmodel_xy import XYGeometry, XYState, row_predictions


@pytest.fixture
def state() -> XYState:
    starts = np.array([10, 14])
    t = 100 + np.arange(40)
    X = np.stack([t[s:s + 4] for s in starts])
    Y = np.stack([t[s + 1:s + 5] for s in starts])
    return XYState(step=3, starts=starts, X=X, Y=Y, cell_w=44)


def test_geometry(state):
    g = XYGeometry(20, state)
    assert g.row_h == 56 and g.row_top(1) == 60 and g.y_top(1) == 87
    assert g.cell_rect("y", 1, 2) == (4 + 88, 87, 44, 20)
    assert g.cell_at(4 + 88 + 1, 87 + 1) == ("y", 1, 2)
    assert g.cell_at(4 + 5, 4 + 19) == ("x", 0, 0)
    assert g.cell_at(4 + 5, 4 + 22) is None  # in the gap between X and Y
    assert g.cell_at(4 + 4 * 44, 10) is None  # right of the last column
    assert g.cell_at(10, 4 + 2 * 56) is None  # below the last row
    assert g.row_at_y(4 + 56 + 50) == 1 and g.row_at_y(2) == -1 and g.row_at_y(4 + 2 * 56) == -1
    assert g.content_size() == (8 + 4 * 44, 8 + 2 * 56)
    assert g.rows_between(0, 59) == (0, 1) and g.rows_between(0, 60) == (0, 2)  # row 1 starts at y = 60
    assert g.rows_between(61, 500) == (1, 2)
    assert g.cols_between(50, 60) == (1, 2)
    state.cell_w = 88  # the geometry follows the state's cell width
    assert g.cell_rect("x", 0, 1) == (92, 4, 88, 20)
    # zoomed from 44 to 88 px with the mouse at canvas x 4 + 2.5 * 44 = 114, 30 px into the view:
    # column 2.5 is now at 4 + 2.5 * 88 = 224, so the view scrolls to 224 - 30
    assert g.zoomed_scroll(44, 114, 30) == 194
    empty = XYGeometry(20, XYState())
    assert empty.cell_at(10, 10) is None and empty.row_at_y(10) == -1 and empty.content_size() == (8, 8)


def test_positions_and_highlights(state):
    assert state.position_of("x", 1, 0) == 14 and state.position_of("y", 1, 3) == 18
    # position 14 is X[1, 0] and the target Y[0, 3] of row 0 (row 1 starts where row 0's inputs end)
    assert state.highlighted_cells(14) == [("y", 0, 3), ("x", 1, 0)]
    assert state.highlighted_cells(9) == [] and XYState().highlighted_cells(3) == []


def test_losses_follow_the_shown_step_micro_and_rank(state):
    loss = np.arange(2 * 2 * 2 * 4, dtype=np.float32).reshape(2, 2, 2, 4)  # K=2, ranks (0, 3)
    loss[1, 1, 0, 1] = np.nan
    state.set_loss(loss, ranks=(0, 3), step=3)
    assert state.visible_loss() is not None and state.loss_at(1, 2) == 6.0  # micro 0, rank 0
    state.micro, state.rank = 1, 3
    assert state.loss_at(0, 0) == loss[1, 1, 0, 0] and state.loss_at(0, 1) is None  # NaN: none
    state.rank = 1  # a rank the losses do not hold
    assert state.visible_loss() is None
    state.rank, state.step = 3, 4  # another step than the losses'
    assert state.loss_at(0, 0) is None
    state.set_loss(loss[:, :, :, :3], ranks=(0, 3))  # a shape that does not match X
    assert state.visible_loss() is None
    state.set_loss(np.array([[[[2.0, 5.0, 3.0, 4.0]]]]), ranks=(0,))  # no range given: from the losses
    assert (state.vmin, state.vmax) == (2.0, 5.0)
    state.set_loss(None)
    assert state.loss is None and state.loss_ranks == () and state.visible_loss() is None


def test_row_predictions(state):
    pairs = row_predictions(state, 1, shown=2)
    assert len(pairs) == 4
    assert pairs[0] == {"j": 0, "context_start": 14, "context_end": 14, "context_ids": [114], "target_pos": 15,
                        "target_id": 115, "loss": None}
    assert pairs[3]["context_ids"] == [116, 117] and pairs[3]["target_pos"] == 18 and pairs[3]["target_id"] == 118
