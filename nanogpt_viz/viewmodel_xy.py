"""What the X / Y panel shows and where, pure (numpy only, no Qt).

`XYState` is the panel's state: the (micro-batch, rank) of the step shown, its rows' starts and X / Y,
the per-token losses, the cell width, the highlighted / hovered corpus position and the selected row.
The panel (ui/xy_panel.py) owns it and is the only one that writes it; its canvas and row labels get
the same object and only read it. `XYGeometry` places the cells: row i is a band of two lines of
chips, X[i, :] on top and Y[i, :] right below, so X[i, j] sits over the token it must predict.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["XYState", "XYGeometry", "row_predictions", "MIN_CELL_W", "MAX_CELL_W", "CONTEXT_SHOWN"]

MIN_CELL_W = 6
MAX_CELL_W = 160
CONTEXT_SHOWN = 8  # display texts shown of a row's context in the "explain row" dialog


@dataclass
class XYState:
    step: int = 0
    micro: int = 0
    rank: int = 0
    starts: np.ndarray | None = None  # (B,) start of each row of the (micro, rank) shown
    X: np.ndarray | None = None  # (B, N) inputs t[s : s+N]
    Y: np.ndarray | None = None  # (B, N) targets t[s+1 : s+N+1]
    cell_w: int = 44
    color_mode: str = "plain"  # or "loss": Y coloured by the loss of predicting it
    highlight: int | None = None  # a corpus position another view points at
    hover: tuple[str, int, int] | None = None  # the cell under the mouse
    hover_pos: int | None = None  # its corpus position
    selected_row: int = 0
    one_based: bool = True  # offsets read "token 4,097" first (View > Count tokens from 1)
    loss: np.ndarray | None = None  # (K, len(loss_ranks), B, N) of a trained step
    loss_ranks: tuple[int, ...] = ()
    loss_step: int | None = None  # the step the losses belong to (None: whatever step is shown)
    vmin: float = 0.0
    vmax: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """(B, N) shown; (0, 0) without a plan."""
        return (0, 0) if self.X is None else tuple(self.X.shape)

    def set_loss(self, per_token: np.ndarray | None, ranks=(), vmin: float = 0.0, vmax: float = 0.0,
                 step: int | None = None) -> None:
        """Per-token losses (K, len(ranks), B, N); None clears. An empty range (vmax <= vmin) is taken
        from the finite losses."""
        if per_token is None:
            self.loss, self.loss_ranks, self.loss_step = None, (), None
            return
        self.loss = np.asarray(per_token, dtype=np.float32)
        self.loss_ranks = tuple(int(r) for r in ranks)
        self.loss_step = None if step is None else int(step)
        self.vmin, self.vmax = float(vmin), float(vmax)
        if not self.vmax > self.vmin:
            fin = self.loss[np.isfinite(self.loss)]
            if fin.size:
                self.vmin, self.vmax = float(fin.min()), float(fin.max())

    def visible_loss(self) -> np.ndarray | None:
        """(B, N) losses of the shown (micro, rank) at the shown step, or None."""
        a = self.loss
        if a is None or self.X is None or a.ndim != 4:
            return None
        if self.loss_step is not None and self.loss_step != self.step:
            return None
        if self.rank not in self.loss_ranks or self.micro >= a.shape[0]:
            return None
        r = self.loss_ranks.index(self.rank)
        if r >= a.shape[1] or a.shape[2:] != self.X.shape:
            return None
        return a[self.micro, r]

    def loss_at(self, i: int, j: int) -> float | None:
        """Loss of predicting Y[i, j], None when not available."""
        a = self.visible_loss()
        if a is None:
            return None
        v = float(a[i, j])
        return v if math.isfinite(v) else None

    def position_of(self, which: str, i: int, j: int) -> int:
        """Corpus position held by X[i, j] (starts[i]+j) or Y[i, j] (starts[i]+j+1)."""
        return int(self.starts[i]) + int(j) + (1 if which == "y" else 0)

    def highlighted_cells(self, position: int) -> list[tuple[str, int, int]]:
        """Every (which, i, j) holding corpus `position`."""
        if self.X is None:
            return []
        B, N = self.X.shape
        out = []
        for i in range(B):
            s = int(self.starts[i])
            for which, j in (("x", position - s), ("y", position - s - 1)):
                if 0 <= j < N:
                    out.append((which, i, j))
        return out


class XYGeometry:
    """Where the cells are (widget pixels): row i occupies a band of height row_h; its X line is at
    the top of the band, its Y line ARROW_GAP px below; a column is `state.cell_w` px wide."""

    LEFT = 4
    TOP = 4
    ARROW_GAP = 7
    ROW_GAP = 9

    def __init__(self, cell_h: int, state: XYState):
        self.cell_h = int(cell_h)
        self.state = state

    @property
    def cell_w(self) -> int:
        return self.state.cell_w

    @property
    def row_h(self) -> int:
        return 2 * self.cell_h + self.ARROW_GAP + self.ROW_GAP

    def row_top(self, i: int) -> int:
        return self.TOP + i * self.row_h

    def y_top(self, i: int) -> int:
        """Top of row i's Y line."""
        return self.row_top(i) + self.cell_h + self.ARROW_GAP

    def cell_rect(self, which: str, i: int, j: int) -> tuple[int, int, int, int]:
        y = self.row_top(i) if which == "x" else self.y_top(i)
        return self.LEFT + j * self.cell_w, y, self.cell_w, self.cell_h

    def cell_at(self, x: int, y: int) -> tuple[str, int, int] | None:
        """(which, i, j) of the cell at (x, y), None between cells or outside."""
        B, N = self.state.shape
        x, y = x - self.LEFT, y - self.TOP
        if x < 0 or y < 0:
            return None
        i, dy = divmod(y, self.row_h)
        j = x // self.cell_w
        if not (0 <= i < B and 0 <= j < N):
            return None
        if dy < self.cell_h:
            return "x", int(i), int(j)
        if self.cell_h + self.ARROW_GAP <= dy < 2 * self.cell_h + self.ARROW_GAP:
            return "y", int(i), int(j)
        return None

    def row_at_y(self, y: int) -> int:
        B = self.state.shape[0]
        if self.state.X is None or y < self.TOP:
            return -1
        i = (y - self.TOP) // self.row_h
        return int(i) if i < B else -1

    def content_size(self) -> tuple[int, int]:
        B, N = self.state.shape
        return 2 * self.LEFT + N * self.cell_w, 2 * self.TOP + B * self.row_h

    def rows_between(self, top: int, bottom: int) -> tuple[int, int]:
        """[i0, i1) of the rows a band of pixels [top, bottom] touches."""
        B = self.state.shape[0]
        return max(0, (top - self.TOP) // self.row_h), min(B, (bottom - self.TOP) // self.row_h + 1)

    def cols_between(self, left: int, right: int) -> tuple[int, int]:
        N = self.state.shape[1]
        return max(0, (left - self.LEFT) // self.cell_w), min(N, (right - self.LEFT) // self.cell_w + 1)

    def zoomed_scroll(self, old_w: int, canvas_x: float, view_x: float) -> int:
        """The horizontal scroll value that keeps the column that was under `canvas_x` (at cell width
        `old_w`, `view_x` px into the viewport) under the mouse at the current cell width."""
        col = (canvas_x - self.LEFT) / old_w
        return int(self.LEFT + col * self.cell_w - view_x)


def row_predictions(state: XYState, i: int, shown: int = CONTEXT_SHOWN) -> list[dict[str, Any]]:
    """Row i's N (context -> next token) predictions: for each j the context t[s..s+j] (its last
    `shown` ids), the target t[s+j+1] and its loss (None when not available)."""
    X, Y = state.X, state.Y
    s = int(state.starts[i])
    row_ids = np.concatenate([X[i], Y[i, -1:]])  # t[s .. s+N]
    pairs = []
    for j in range(X.shape[1]):
        lo = max(0, j + 1 - shown)
        pairs.append({"j": j, "context_start": s, "context_end": s + j,
                      "context_ids": [int(t) for t in row_ids[lo:j + 1]],
                      "target_pos": s + j + 1, "target_id": int(Y[i, j]), "loss": state.loss_at(i, j)})
    return pairs

