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

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanogpt_viz.data.batching import BatchPlan, gather_rows
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

    def step_reading(self, position: int, step: int) -> int:
        """The step (of the current epoch, up to `step` for random plans) whose rows read `position`, -1 if none."""
        return int(self._owner_steps(np.array([int(position)], np.int64), step)[0])

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


# ---- shards: boundaries, dropped tails, ranks out of step (pure, for the stream view) ----------

def _ranks_text(ranks: list[int]) -> str:
    """'rank 3', 'ranks 0, 2', 'ranks 0–3' (consecutive runs collapsed)."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    runs, a = [], ranks[0]
    for prev, r in zip(ranks, ranks[1:] + [None]):
        if r != prev + 1 if r is not None else True:
            runs.append(f"{a}" if a == prev else f"{a}–{prev}" if prev > a + 1 else f"{a}, {prev}")
            a = r
    return "ranks " + ", ".join(runs)


def dropped_tail_note(plan: BatchPlan, shard: int) -> str | None:
    """Why shard `shard`'s tail is never read, with this plan's numbers; None when it has none.

    sequential: DataLoaderLite moves a rank on when its position + B·N·W + 1 > len(shard);
    llmc / shuffled: llm.c cuts a shard into (ntok − 1) // (W·B·N) samples; sliding: the rows that
    would not fill a whole step are not taken.
    """
    s = int(shard)
    if plan.mode == "random" or not (0 <= s < plan.n_shards):
        return None
    first = end = None
    for a, b in plan.dropped_ranges():
        if plan.shard_starts[s] <= a < plan.shard_ends[s]:
            first, end = a, b
            break
    if first is None:
        return None
    name = plan.shard_names[s]
    n = int(plan.shard_lengths[s])
    tail = end - first
    local = first - int(plan.shard_starts[s])
    toks = "token" if tail == 1 else "tokens"
    where = f"dropped tail of {name}: {tail:,} {toks} (shard positions {local:,}–{n - 1:,})."
    B, N, W = plan.B, plan.N, plan.W
    BN, WBN = B * N, B * N * W
    if plan.mode == "sequential":
        calls = plan.calls[:, s]
        pos = [r * BN + int(calls[r]) * WBN for r in range(W)]
        if W == 1:
            why = (f"DataLoaderLite moves to the next shard when position + B·N·W + 1 > shard length "
                   f"(here {pos[0]:,} + {WBN + 1:,} > {n:,})")
        else:
            each = ", ".join(f"rank {r}: {pos[r]:,} + {WBN + 1:,} > {n:,}" for r in range(min(W, 4)))
            more = f", … (ranks 4–{W - 1} alike)" if W > 4 else ""
            why = (f"DataLoaderLite moves each rank to the next shard when its own position + B·N·W + 1 "
                   f"> shard length (here {each}{more})")
        return f"{where} {why}"
    if plan.mode in LOADER_MODES:
        samples = int(plan.calls[0, s])
        return (f"{where} llm.c cuts a shard into (ntok − 1) // (W·B·N) samples: ({n:,} − 1) // {WBN:,} "
                f"= {samples:,} samples fit ({samples:,} × {WBN:,} + 1 = {samples * WBN + 1:,} tokens); "
                f"the remaining {tail:,} {toks} are never read")
    # sliding: the stream is one run of rows, cut into whole steps
    return (f"never read: the last {tail:,} {toks} of the stream. Rows start every S = {plan.S:,} tokens "
            f"and a step takes K·W·B = {plan.R:,} rows; {plan.steps_per_epoch:,} whole steps fit, the "
            f"rows after them would not fill a step")


def dropped_note_at(plan: BatchPlan, position: int) -> str | None:
    """`dropped_tail_note` of the shard holding `position` if `position` lies in a dropped tail."""
    p = int(position)
    for a, b in plan.dropped_ranges():
        if a <= p < b:
            s = min(int(plan.shard_of([p])[0]), plan.n_shards - 1)
            return dropped_tail_note(plan, s)
    return None


def rank_shards_text(plan: BatchPlan, step: int) -> str:
    """'a: rank 0 · b: rank 1': which ranks read which shard at `step` ('' when all read one)."""
    shards = plan.rank_shards(step)
    if len(set(shards)) <= 1:
        return ""
    groups: dict[int, list[int]] = {}
    for r, s in enumerate(shards):
        groups.setdefault(s, []).append(r)
    return " · ".join(f"{_ranks_text(rs)} in {plan.shard_names[s]}" for s, rs in groups.items())


def drift_banner(plan: BatchPlan, step: int) -> str:
    """The stream view's banner line when the ranks read different shards at `step`, else ''."""
    note = plan.drift_note(step)
    if not note:
        return ""
    # with more than two ranks the note lists each rank; the grouped line says it more compactly
    who = rank_shards_text(plan, step) if plan.W > 2 else ""
    return f"Ranks out of step at step {int(step):,}: {note}" + (f" ({who})" if who else "")


def ranks_banner(plan: BatchPlan, step: int, first: tuple[int, int, str] | None) -> tuple[str, bool]:
    """(text, out of step) of the banner above the stream. A plan whose ranks ever drift (`first` =
    drift_start(plan)) always has it, so the stream does not jump as they fall in and out of step: the
    drift sentence while they read different shards, else the shard they all read and when they first
    part. A plan whose ranks never drift has none ('')."""
    if first is None:
        return "", False
    text = drift_banner(plan, step)
    if text:
        return text, True
    s = plan.rank_shards(step)[0]
    when = (f"they first read different shards at step {first[0]:,}" if step < first[0]
            else f"they first drifted at step {first[0]:,}")
    return f"Ranks in step at step {step:,}: all read {plan.shard_names[s]} ({when})", False


def drift_start(plan: BatchPlan) -> tuple[int, int, str] | None:
    """(step, stream position, note) where DataLoaderLite's ranks first read different shards: the
    position is the first row a rank that moved ahead reads in its new shard."""
    first = plan.first_drift()
    if first is None:
        return None
    step, note = first
    starts = plan.starts(step)  # (K, W, B)
    shards = plan.rank_shards(step)
    ahead = [r for r in range(plan.W) if shards[r] != shards[0]] or list(range(plan.W))
    return step, int(min(starts[0, r, 0] for r in ahead)), note


class ShardMarks:
    """Boundaries and dropped tails of a plan as arrays, queried per visible range (searchsorted)."""

    def __init__(self, plan: BatchPlan):
        self.plan = plan
        self.starts = np.asarray(plan.shard_starts, np.int64)
        d = plan.dropped_ranges()
        self.drop_lo = np.array([a for a, _ in d], np.int64)
        self.drop_hi = np.array([b for _, b in d], np.int64)
        self._drift: Any = ()

    def boundaries(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(stream position, shard index) of each shard's first token in [lo, hi) (multi-shard only)."""
        if self.plan.n_shards <= 1:
            e = np.zeros(0, np.int64)
            return e, e
        i0, i1 = np.searchsorted(self.starts, [int(lo), int(hi)], side="left")
        idx = np.arange(i0, i1, dtype=np.int64)
        return self.starts[i0:i1], idx

    def dropped(self, lo: int, hi: int) -> list[tuple[int, int]]:
        """Dropped-tail ranges clipped to [lo, hi)."""
        if not len(self.drop_lo):
            return []
        i0 = int(np.searchsorted(self.drop_hi, int(lo), side="right"))
        i1 = int(np.searchsorted(self.drop_lo, int(hi), side="left"))
        return [(max(int(a), int(lo)), min(int(b), int(hi)))
                for a, b in zip(self.drop_lo[i0:i1], self.drop_hi[i0:i1])]

    def is_dropped(self, position: int) -> bool:
        i = int(np.searchsorted(self.drop_hi, int(position), side="right"))
        return i < len(self.drop_lo) and self.drop_lo[i] <= int(position)

    def drift(self) -> tuple[int, int, str] | None:
        if self._drift == ():
            self._drift = drift_start(self.plan)
        return self._drift


def step_summary(plan: BatchPlan, step: int) -> dict[str, Any]:
    """Numbers for the readout of a step."""
    s = plan.starts(step)
    lo, hi = int(s.min()), int(s.max()) + plan.N
    return {
        "step": step, "epoch": plan.epoch(step), "first": lo, "last": hi,
        "tokens_per_step": plan.tokens_per_step, "formula": f"K×W×B×N = {plan.K}×{plan.W}×{plan.B}×{plan.N}",
        "where": plan.describe_step(step), "drift": plan.drift_note(step),
    }


def step_readout(plan: BatchPlan, step: int, one_based: bool = True, replay_name: str = "") -> str:
    """The line under the step controls (rich text): the epoch and where the step reads, the span of
    its inputs and targets, tokens per step as K×W×B×N; `replay_name`: the nanoGPT run replayed."""
    info = step_summary(plan, step)
    first, last = offset_text(info["first"], one_based), offset_short(info["last"], one_based)
    where = (f"the step starts at {first}…, inputs to {offset_short(info['last'] - 1, one_based)}, targets to "
             f"{last}" if plan.mode in LOADER_MODES else
             "rows at random offsets" if plan.mode == "random" else
             f"rows {first}…{last}")
    src = f" ({info['where']})" if info["where"] else ""
    if info["drift"]:  # the stream's banner says which rank reads which shard
        src += " · <b>ranks out of step</b>"
    if replay_name:
        src += f" · the batches the nanoGPT run {replay_name} drew"
    return (f"epoch <b>{info['epoch']}</b>{src} · {where} · <b>{plan.tokens_per_step:,}</b> tokens/step = "
            f"{info['formula']}")


def coverage_text(plan: BatchPlan, step: int) -> str:
    """How much of the corpus the steps up to `step` have read (random offsets: with the expectation),
    and the tail a loader mode drops."""
    try:
        seen = plan.fraction_seen(step)
        txt = f"seen {100 * seen:.1f}% of the corpus"
        if plan.mode == "random":
            txt += f" (expected for random offsets: {100 * plan.expected_random_fraction(step):.1f}%)"
    except Exception:  # exact random coverage too costly: show the expectation only
        txt = f"expected coverage: {100 * plan.expected_random_fraction(step):.1f}%"
    if plan.mode != "random" and plan.dropped_tail:
        txt += f" · dropped tail {plan.dropped_tail:,} tokens"
    return txt


__all__ = ["StreamModel", "StreamSlice", "ShardMarks", "loss_at_targets", "step_summary", "step_readout",
           "coverage_text", "dropped_tail_note", "dropped_note_at", "rank_shards_text", "drift_banner", "ranks_banner", "drift_start"]


class PositionMapBuffer:
    """The step x position map's rows as they arrive, in bounded memory.

    One row per step (the (N,) mean loss by position) until `capacity` rows; then every other row is
    dropped and only every `stride`-th step kept from there on, so a long run stays whole at uniform
    density (the history on disk keeps every step; a reopened run reads its map from there).
    """

    def __init__(self, capacity: int = 2048):
        self.capacity = max(2, int(capacity))
        self._steps: list[int] = []
        self._rows: list[np.ndarray] = []
        self.stride = 1

    def __len__(self) -> int:
        return len(self._steps)

    def clear(self) -> None:
        self._steps, self._rows, self.stride = [], [], 1

    def load(self, steps: np.ndarray, rows: np.ndarray) -> None:
        """Start from rows read elsewhere (the run's history)."""
        self.clear()
        for s, r in zip(np.asarray(steps).tolist(), np.asarray(rows)):
            self.add(int(s), r)

    def add(self, step: int, row: np.ndarray | None) -> None:
        if row is None:
            return
        step = int(step)
        if self._steps and step <= self._steps[-1]:  # resumed from earlier: what follows is void
            k = int(np.searchsorted(np.asarray(self._steps), step, side="left"))
            del self._steps[k:], self._rows[k:]
        if self._steps and step % self.stride and step - self._steps[-1] < self.stride:
            return
        row = np.asarray(row, np.float32).ravel()
        if self._rows and row.shape != self._rows[-1].shape:  # another N: a new map
            self.clear()
        self._steps.append(step)
        self._rows.append(row)
        if len(self._steps) > self.capacity:
            self._steps, self._rows = self._steps[::2], self._rows[::2]
            self.stride *= 2

    def data(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(steps (n,), rows (n, N)), rows None when empty."""
        if not self._steps:
            return np.zeros(0, np.int64), None
        return np.asarray(self._steps, np.int64), np.stack(self._rows)


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start (the first value is
    the first point, not 0 pulled up), NaN points skipped (they stay NaN). weight 0: the raw curve."""
    y = np.asarray(values, np.float64)
    out = np.full(len(y), np.nan)
    w = min(max(float(weight), 0.0), 0.999)
    fin = np.isfinite(y)
    v = y[fin]
    if w == 0.0 or len(v) == 0:
        out[fin] = v
        return out
    # a_t = w a_(t-1) + (1-w) v_t, in blocks of K (vectorised; w^-K stays small for w <= 0.999)
    K = 256
    j = np.arange(K)
    pw, inv, lead = w ** j, w ** -j.astype(np.float64), w ** (j + 1)
    res = np.empty(len(v))
    acc = 0.0
    for s in range(0, len(v), K):
        blk = v[s:s + K]
        k = len(blk)
        res[s:s + k] = lead[:k] * acc + (1.0 - w) * np.cumsum(blk * inv[:k]) * pw[:k]
        acc = res[s + k - 1]
    res /= 1.0 - w ** np.arange(1, len(v) + 1)
    out[fin] = res
    return out


def nearest_index(xs: np.ndarray, x: float) -> int:
    """The index of the value of sorted `xs` nearest to x (-1 when xs is empty)."""
    if len(xs) == 0:
        return -1
    i = int(np.searchsorted(xs, x))
    if i <= 0:
        return 0
    if i >= len(xs):
        return len(xs) - 1
    return i if xs[i] - x < x - xs[i - 1] else i - 1


def offset_text(offset: int, one_based: bool = True) -> str:
    """A 0-based stream offset as a person reads it, both ways: "token 4,097 · t[4,096]" when counting
    from 1 (the founding note's numbering leads), "t[4,096] · token 4,097" when counting from 0."""
    offset = int(offset)
    token, index = f"token {offset + 1:,}", f"t[{offset:,}]"
    return f"{token} · {index}" if one_based else f"{index} · {token}"


def offset_short(offset: int, one_based: bool = True) -> str:
    """The leading form alone, for narrow labels: "token 4,097" or "t[4,096]"."""
    offset = int(offset)
    return f"token {offset + 1:,}" if one_based else f"t[{offset:,}]"


# ----------------------------------------------------------------------------------------------
# Documents: which document each position belongs to (issue 13, item 4)

GPT2_EOT = 50256  # <|endoftext|> (data/tokenizer.EOT, without importing the tokenizer)


def document_indices(tokens: Any, lo: int, hi: int, eot: int = GPT2_EOT, before: int | None = None) -> np.ndarray:
    """The document index of positions lo..hi-1: how many `eot` tokens come before each (an
    <|endoftext|> closes its document, so it carries that document's index). `before`: the count of EOTs
    in tokens[:lo] when known (DocumentIndex caches it); counted here otherwise."""
    lo, hi = max(0, int(lo)), max(int(lo), int(hi))
    ids = np.asarray(tokens[lo:hi])
    if before is None:
        before = int(np.count_nonzero(np.asarray(tokens[:lo]) == eot))
    is_eot = (ids == eot).astype(np.int64)
    out = np.empty(len(ids), np.int64)
    if len(ids):
        out[0] = 0
        np.cumsum(is_eot[:-1], out=out[1:])
    return out + int(before)


class DocumentIndex:
    """`document_indices` over a large corpus, cheap while scrolling: the EOT count of each block of `block`
    tokens is computed once (lazily, up to the furthest block asked for) and kept as a prefix sum, so a
    visible range reads only its own tokens plus at most one partial block."""

    def __init__(self, tokens: Any, eot: int = GPT2_EOT, block: int = 1 << 16):
        self.tokens = tokens
        self.eot = int(eot)
        self.block = max(1, int(block))
        self.L = len(tokens)
        self._prefix = np.zeros(1, np.int64)  # _prefix[k]: EOTs in tokens[:k * block]
        self.blocks_counted = 0

    def _eots_before(self, p: int) -> int:
        k, r = divmod(int(p), self.block)
        have = len(self._prefix) - 1
        if k > have:
            counts = [int(np.count_nonzero(np.asarray(self.tokens[j * self.block:(j + 1) * self.block]) == self.eot))
                      for j in range(have, k)]
            self._prefix = np.concatenate([self._prefix, self._prefix[-1] + np.cumsum(counts, dtype=np.int64)])
            self.blocks_counted += len(counts)
        base = int(self._prefix[k])
        if r:
            base += int(np.count_nonzero(np.asarray(self.tokens[k * self.block:p]) == self.eot))
        return base

    def indices(self, lo: int, hi: int) -> np.ndarray:
        lo = max(0, min(int(lo), self.L))
        hi = max(lo, min(int(hi), self.L))
        return document_indices(self.tokens, lo, hi, self.eot, before=self._eots_before(lo))
