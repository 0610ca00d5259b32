"""What the views paint, computed from the BatchPlan (pure: numpy only, no Qt).

The stream view asks for a `StreamSlice` of the positions it can see; the overview asks for one value
per pixel. Both come from the plan's offsets, so what is highlighted is exactly what is trained.

Colouring rule ("which step consumed it"):
- the loader modes (sequential, llmc, shuffled): every position has a unique owner per pass
  (`BatchPlan.owners`); each shard's dropped tail has none;
- sliding: the latest row (up to the current step) that reads the position, in closed form;
- random: the latest of the last `recent_steps` steps whose rows read it (random offsets have no
  owner; older draws are not shown), labelled as such in the UI.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nanogpt_viz.batching import BatchPlan, gather_rows
from nanogpt_viz.config import LOADER_MODES


@dataclass(frozen=True)
class StreamSlice:
    lo: int
    hi: int
    ids: np.ndarray  # (n,) token ids of positions lo..hi-1
    step: np.ndarray  # (n,) step whose rows read the position as an input; -1: none shown
    current: np.ndarray  # (n,) bool: an input of the current step
    target_only: np.ndarray  # (n,) bool: the extra target t[s+N] of a current row, not one of its inputs
    row: np.ndarray  # (n,) index into plan.rows(step) of the current-step row reading it; -1 otherwise
    col: np.ndarray  # (n,) column within that row; -1 otherwise
    rank: np.ndarray  # (n,) of that row; -1 otherwise
    micro: np.ndarray  # (n,)
    brow: np.ndarray  # (n,) row within its micro-batch (0..B-1)
    coverage: np.ndarray | None = None  # (n,) times each position has been a target up to the step

    def __len__(self) -> int:
        return self.hi - self.lo


class StreamModel:
    def __init__(self, tokens: Any, plan: BatchPlan, recent_steps: int = 32):
        self.tokens = tokens
        self.plan = plan
        self.recent_steps = recent_steps
        self.L = len(tokens)

    # ---- the current step's rows ----------------------------------------------------------------
    def current_rows(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(starts, micro, rank, brow) of every row of `step`, ordered like `plan.rows(step)`."""
        s = self.plan.starts(step)  # (K, W, B)
        K, W, B = s.shape
        m, r, i = np.meshgrid(np.arange(K), np.arange(W), np.arange(B), indexing="ij")
        order = np.argsort((r * K + m) * B + i, axis=None, kind="stable")  # rank, micro, row
        return s.ravel()[order], m.ravel()[order], r.ravel()[order], i.ravel()[order]

    def slice(self, lo: int, hi: int, step: int, with_coverage: bool = False) -> StreamSlice:
        lo = max(0, int(lo))
        hi = min(self.L, int(hi))
        n = max(0, hi - lo)
        p = np.arange(lo, lo + n, dtype=np.int64)
        ids = np.asarray(self.tokens[lo:lo + n], dtype=np.int64) if n else np.zeros(0, np.int64)
        owner_step = self._owner_steps(p, step)
        row = np.full(n, -1, np.int64)
        col = np.full(n, -1, np.int64)
        rank = np.full(n, -1, np.int64)
        micro = np.full(n, -1, np.int64)
        brow = np.full(n, -1, np.int64)
        target_only = np.zeros(n, bool)
        starts, m, r, i = self.current_rows(step)
        N = self.plan.N
        hit = np.nonzero((starts < hi) & (starts + N + 1 > lo))[0]
        # paint later rows first so the first row reading a position wins (overlapping sliding rows)
        for j in hit[::-1]:
            s = int(starts[j])
            a, b = max(s, lo), min(s + N, hi)
            if a < b:
                row[a - lo:b - lo] = j
                col[a - lo:b - lo] = np.arange(a - s, b - s)
                rank[a - lo:b - lo] = r[j]
                micro[a - lo:b - lo] = m[j]
                brow[a - lo:b - lo] = i[j]
        current = row >= 0
        for j in hit:
            t = int(starts[j]) + N
            if lo <= t < hi and not current[t - lo]:
                target_only[t - lo] = True
        cov = self.plan.coverage(step, lo, hi) if with_coverage else None
        return StreamSlice(lo, hi, ids, owner_step, current, target_only, row, col, rank, micro, brow, cov)

    def _owner_steps(self, p: np.ndarray, step: int) -> np.ndarray:
        plan = self.plan
        if plan.mode in LOADER_MODES:
            return plan.owners(p, epoch=plan.epoch(step))["step"]
        if plan.mode == "sliding":
            # latest row g (of this epoch, up to the current step) with g*S <= p < g*S + N
            e = plan.epoch(step)
            k_in = step - e * plan.steps_per_epoch
            last_row = (k_in + 1) * plan.R - 1
            g = np.minimum(p // plan.S, last_row)
            ok = (g >= 0) & (g * plan.S + plan.N > p) & (p >= 0)
            return np.where(ok, e * plan.steps_per_epoch + g // plan.R, -1)
        # random: latest of the recent steps whose rows read p
        out = np.full(p.shape, -1, np.int64)
        if len(p) == 0:
            return out
        lo, hi = int(p[0]), int(p[-1]) + 1
        for k in range(max(0, step - self.recent_steps + 1), step + 1):
            s = plan.starts(k).ravel()
            for start in s[(s < hi) & (s + plan.N > lo)]:
                a, b = max(int(start), lo), min(int(start) + plan.N, hi)
                out[a - lo:b - lo] = k
        return out

    # ---- overview: one value per bin over the whole corpus -----------------------------------
    def overview(self, step: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
        """(owner step of each bin, bool: bin holds an input of the current step), `bins` bins."""
        bins = max(1, int(bins))
        edges = np.linspace(0, self.L, bins + 1).astype(np.int64)
        mid = (edges[:-1] + edges[1:]) // 2
        if self.plan.mode == "random":
            steps = np.full(bins, -1, np.int64)
            width = self.L / bins
            for k in range(max(0, step - self.recent_steps + 1), step + 1):
                s = self.plan.starts(k).ravel()
                b0 = (s / width).astype(np.int64)
                b1 = np.minimum(((s + self.plan.N - 1) / width).astype(np.int64), bins - 1)
                for a, b in zip(b0, b1):
                    steps[a:b + 1] = k
        else:
            steps = self._owner_steps(mid, step)
        cur = np.zeros(bins, bool)
        starts = self.plan.starts(step).ravel()
        width = self.L / bins
        b0 = np.clip((starts / width).astype(np.int64), 0, bins - 1)
        b1 = np.clip(((starts + self.plan.N - 1) / width).astype(np.int64), 0, bins - 1)
        for a, b in zip(b0, b1):
            cur[a:b + 1] = True
        return steps, cur

    # ---- X / Y of the current step ------------------------------------------------------------
    def xy(self, step: int, micro: int = 0, rank: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts (B,), X (B, N), Y (B, N)) of one micro-batch of one rank."""
        starts = self.plan.micro_starts(step, micro, rank)
        xy = gather_rows(self.tokens, starts, self.plan.N + 1)
        return starts, xy[:, :-1], xy[:, 1:]


def loss_at_targets(sl: StreamSlice, per_token: np.ndarray, ranks: tuple[int, ...]) -> np.ndarray:
    """Per-position loss for the targets of the current step visible in `sl` (NaN elsewhere).

    per_token is a report's (K, len(ranks), B, N) array; the loss at column c of a row is the loss of
    predicting its target t[s+c+1], so it is painted on that target position.
    """
    out = np.full(len(sl), np.nan, np.float32)
    if per_token is None:
        return out
    lookup = np.full(max(ranks) + 1 if ranks else 1, -1, np.int64)
    lookup[list(ranks)] = np.arange(len(ranks))
    k = np.nonzero(sl.current)[0]  # input positions; their targets sit one to the right
    k = k[k + 1 < len(sl)]
    rk = sl.rank[k]
    j = np.where(rk < len(lookup), lookup[np.minimum(rk, len(lookup) - 1)], -1)
    k, j = k[j >= 0], j[j >= 0]
    out[k + 1] = per_token[sl.micro[k], j, sl.brow[k], sl.col[k]]
    return out


def step_summary(plan: BatchPlan, step: int) -> dict[str, Any]:
    """Numbers for the readout of a step."""
    s = plan.starts(step)
    lo, hi = int(s.min()), int(s.max()) + plan.N
    return {
        "step": step, "epoch": plan.epoch(step), "first": lo, "last": hi,
        "tokens_per_step": plan.tokens_per_step, "formula": f"K×W×B×N = {plan.K}×{plan.W}×{plan.B}×{plan.N}",
        "where": plan.describe_step(step), "drift": plan.drift_note(step),
    }


__all__ = ["StreamModel", "StreamSlice", "ShardMarks", "loss_at_targets", "step_summary", "dropped_tail_note",
           "dropped_note_at", "rank_shards_text", "drift_banner", "drift_start"]
