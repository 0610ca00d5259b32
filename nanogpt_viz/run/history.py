"""Every step's per-token losses, kept on disk: append-only, memory-mapped, float16.

Each rank writes its own files under RUN_DIR/history/ (nothing crosses the process group per step):

    rankRRRR.json   header: K, B, N, rank, world size, the budget, and the thinning phases so far
    rankRRRR.index  int64 pairs (step, slot) per recorded step; slot -1: no per-token rows for it.
                    Written last for a step: a record here means the step's other bytes are there.
    rankRRRR.pos    float32 (N,) per recorded step: the sum over this rank's K*B rows by position
                    (every step, never thinned)
    rankRRRR.rows   float16 (K, B, N) per slot: this rank's per-token losses

Budget (all ranks together; each rank keeps budget / W): the files are append-only, so the budget is
spent geometrically: rows for every step until half of it is used, then every 2nd step until 3/4,
every 4th until 7/8, ... Each phase covers as many steps as the first, the rows never pass the budget,
and the loss by position is kept for every step. The phases are in the header; the reader says so.

`HistoryReader` combines the ranks (rank order) and can follow a run that is still writing (`refresh`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt_viz.atomic import atomic_write_text
from nanogpt_viz.run.record import DEFAULT_HISTORY_BUDGET, HISTORY_DIR, format_bytes

_VERSION = 1
_INDEX_DTYPE = np.dtype("<i8")
_ROW_DTYPE = np.dtype("<f2")
_POS_DTYPE = np.dtype("<f4")


def _stem(rank: int) -> str:
    return f"rank{rank:04d}"


def _ordinal(k: int) -> str:
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k:,}{suffix}"


def thinning_note(phases: list[list[int]], budget_bytes: int, exhausted_at: int | None = None) -> str | None:
    """One sentence on which steps keep their per-token rows, or None when every step does."""
    if not phases and exhausted_at is None:
        return None
    if not phases:
        return (f"per-token rows kept for every step to {exhausted_at - 1:,}, none from step {exhausted_at:,} "
                f"(history budget {format_bytes(budget_bytes)}); the loss by position is kept for every step")
    parts = [f"every step to {phases[0][0] - 1:,}"]
    parts += [f"every {_ordinal(stride)} step from {start:,}" for start, stride in phases]
    if len(parts) > 5:  # the first two and the last two: the sentence stays short
        parts = [*parts[:2], "...", *parts[-2:]]
    tail = f"; none from step {exhausted_at:,}" if exhausted_at is not None else ""
    return (f"per-token rows kept for {', '.join(parts)}{tail} (history budget {format_bytes(budget_bytes)}); "
            f"the loss by position is kept for every step")


class HistoryWriter:
    """One rank's history: `append(step, per_token)` once per optimizer step, from the training loop.

    Cost per step: a float16 conversion of K*B*N values and three appends (os.write, no fsync).
    """

    def __init__(self, run_dir: str | os.PathLike, *, rank: int, world_size: int, K: int, B: int, N: int,
                 budget_bytes: int = DEFAULT_HISTORY_BUDGET, start_step: int = 0):
        self.dir = Path(run_dir) / HISTORY_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rank, self.world_size, self.K, self.B, self.N = int(rank), int(world_size), int(K), int(B), int(N)
        self.budget_bytes = int(budget_bytes)
        self.rank_budget = max(0, self.budget_bytes // max(1, self.world_size))
        self.row_bytes = self.K * self.B * self.N * _ROW_DTYPE.itemsize
        stem = self.dir / _stem(self.rank)
        self.header_path = stem.with_suffix(".json")
        paths = {k: stem.with_suffix("." + k) for k in ("index", "pos", "rows")}
        self.phases: list[list[int]] = []  # [start step, stride] from the first thinned step on
        self.exhausted_at: int | None = None
        self.level = 0
        self.phase_start = int(start_step)
        self.n_rows = 0
        self.last_step: int | None = None
        self._keep_existing(paths, int(start_step))
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd = {k: os.open(p, flags, 0o644) for k, p in paths.items()}
        self._write_header()

    def _keep_existing(self, paths: dict[str, Path], start_step: int) -> None:
        """Continue the files of an earlier run of this rank (a resume) up to `start_step`: records of
        steps >= start_step (trained after the checkpoint the run resumes from) are cut off."""
        try:
            head = json.loads(self.header_path.read_text(encoding="utf-8"))
            same = all(head.get(k) == v for k, v in (("K", self.K), ("B", self.B), ("N", self.N),
                                                      ("world_size", self.world_size)))
            index = np.fromfile(paths["index"], dtype=_INDEX_DTYPE) if paths["index"].exists() else None
        except (OSError, ValueError):
            same, index = False, None
        if not same or index is None or start_step == 0:
            for p in paths.values():
                p.unlink(missing_ok=True)
            return
        index = index[: len(index) // 2 * 2].reshape(-1, 2)
        n_pos = paths["pos"].stat().st_size // (self.N * _POS_DTYPE.itemsize) if paths["pos"].exists() else 0
        n_rows = paths["rows"].stat().st_size // self.row_bytes if paths["rows"].exists() and self.row_bytes else 0
        keep = int(np.searchsorted(index[:, 0], start_step))  # steps increase within a rank's files
        keep = min(keep, n_pos)
        while keep and index[keep - 1, 1] >= n_rows:
            keep -= 1
        index = index[:keep]
        slots = index[:, 1][index[:, 1] >= 0]
        self.n_rows = int(slots.max()) + 1 if len(slots) else 0
        self.last_step = int(index[-1, 0]) if keep else None
        with open(paths["index"], "r+b") as f:
            f.truncate(keep * 2 * _INDEX_DTYPE.itemsize)
        with open(paths["pos"], "r+b") as f:
            f.truncate(keep * self.N * _POS_DTYPE.itemsize)
        with open(paths["rows"], "r+b") as f:
            f.truncate(self.n_rows * self.row_bytes)
        self.budget_bytes = int(head.get("budget_bytes", self.budget_bytes))
        self.rank_budget = max(0, self.budget_bytes // max(1, self.world_size))
        self.phases = [[int(a), int(b)] for a, b in head.get("phases", []) if int(a) < start_step]
        ex = head.get("exhausted_at")
        self.exhausted_at = int(ex) if ex is not None and int(ex) < start_step else None
        if self.phases:
            self.phase_start, stride = self.phases[-1]
            self.level = stride.bit_length() - 1
        else:
            self.phase_start = 0

    def _write_header(self) -> None:
        body = {"version": _VERSION, "rank": self.rank, "world_size": self.world_size, "K": self.K, "B": self.B,
                "N": self.N, "row_dtype": "float16", "pos_dtype": "float32", "budget_bytes": self.budget_bytes,
                "phases": self.phases, "exhausted_at": self.exhausted_at,
                "note": thinning_note(self.phases, self.budget_bytes, self.exhausted_at)}
        atomic_write_text(self.header_path, json.dumps(body) + "\n")

    @property
    def thinned_from_step(self) -> int | None:
        return self.phases[0][0] if self.phases else None

    @property
    def note(self) -> str | None:
        return thinning_note(self.phases, self.budget_bytes, self.exhausted_at)

    def _keeps(self, step: int) -> bool:
        """Whether this step's rows are kept: the same answer on every rank (same budget, same steps).

        Phase k keeps every 2^k-th step and ends once the rows pass budget * (1 - 2^-(k+1)); a new phase
        starts on the old one's grid. None once a phase's share is smaller than one step's rows."""
        if self.exhausted_at is not None or self.row_bytes == 0:
            return False
        if (step - self.phase_start) % (1 << self.level):
            return False
        used = self.n_rows * self.row_bytes
        changed = False
        while used + self.row_bytes > self.rank_budget - (self.rank_budget >> (self.level + 1)):
            self.level += 1
            if (self.rank_budget >> (self.level + 1)) < self.row_bytes:  # no room for a row of this phase
                self.exhausted_at = step
                self._write_header()
                return False
            self.phase_start = step
            changed = True
        if changed:
            self.phases.append([step, 1 << self.level])
            self._write_header()
        return True

    def append(self, step: int, per_token: np.ndarray) -> bool:
        """Record `step`: per_token is (K, B, N) float32, this rank's rows. True when its rows were kept."""
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise ValueError(f"history steps must increase: step {step} after {self.last_step}")
        a = np.asarray(per_token, dtype=np.float32).reshape(self.K, self.B, self.N)
        keep = self._keeps(step)
        slot = -1
        if keep:
            os.write(self._fd["rows"], a.astype(_ROW_DTYPE).tobytes())
            slot = self.n_rows
            self.n_rows += 1
        os.write(self._fd["pos"], a.sum(axis=(0, 1), dtype=np.float32).astype(_POS_DTYPE).tobytes())
        os.write(self._fd["index"], np.array([step, slot], dtype=_INDEX_DTYPE).tobytes())  # the commit
        self.last_step = step
        return keep

    def close(self) -> None:
        for fd in getattr(self, "_fd", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fd = {}

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _RankFiles:
    """One rank's files, read incrementally."""

    def __init__(self, stem: Path, head: dict[str, Any]):
        self.stem = stem
        self.head = head
        self.K, self.B, self.N = int(head["K"]), int(head["B"]), int(head["N"])
        self.row_elems = self.K * self.B * self.N
        self.index = np.zeros((0, 2), dtype=np.int64)
        self._index_bytes = 0
        self.pos: np.ndarray | None = None
        self.rows: np.ndarray | None = None
        self._head_mtime = 0.0

    def refresh(self) -> bool:
        try:
            st = self.stem.with_suffix(".json").stat()
            if st.st_mtime != self._head_mtime:
                self._head_mtime = st.st_mtime
                self.head = json.loads(self.stem.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        ipath = self.stem.with_suffix(".index")
        try:
            size = ipath.stat().st_size
        except OSError:
            return False
        rec = 2 * _INDEX_DTYPE.itemsize
        size -= size % rec
        if size < self._index_bytes:  # cut back (a resume in place): read it again
            self.index, self._index_bytes = np.zeros((0, 2), dtype=np.int64), 0
        if size == self._index_bytes:
            return False
        with open(ipath, "rb") as f:
            f.seek(self._index_bytes)
            new = np.frombuffer(f.read(size - self._index_bytes), dtype=_INDEX_DTYPE).reshape(-1, 2)
        self.index = np.concatenate([self.index, new]) if len(self.index) else new.copy()
        self._index_bytes = size
        self.pos = self._map(".pos", _POS_DTYPE, self.N)
        self.rows = self._map(".rows", _ROW_DTYPE, self.row_elems)
        n = len(self.index)
        if self.pos is None or len(self.pos) < n:  # a record is written last: never the case but be safe
            n = 0 if self.pos is None else len(self.pos)
            self.index = self.index[:n]
        return True

    def _map(self, suffix: str, dtype: np.dtype, width: int) -> np.ndarray | None:
        path = self.stem.with_suffix(suffix)
        try:
            n = path.stat().st_size // (dtype.itemsize * width) if width else 0
        except OSError:
            return None
        if n == 0:
            return np.zeros((0, width), dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(n, width))


class HistoryReader:
    """A run's history, all ranks combined; `refresh()` follows a run that is still writing."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir) / HISTORY_DIR
        self._ranks: list[_RankFiles] = []
        self.K = self.W = self.B = self.N = 0
        self.budget_bytes = 0
        self.steps = np.zeros(0, dtype=np.int64)
        self._rec: list[np.ndarray] = []  # per rank: record number of each of self.steps
        self.refresh()

    # -- loading
    def _open_ranks(self) -> None:
        heads = {}
        for p in sorted(self.dir.glob("rank*.json")):
            try:
                h = json.loads(p.read_text(encoding="utf-8"))
                heads[int(h["rank"])] = (p.with_suffix(""), h)
            except (OSError, ValueError, KeyError, TypeError):
                continue
        if not heads:
            return
        W = int(next(iter(heads.values()))[1]["world_size"])
        if sorted(heads) != list(range(W)):  # every rank's header is written before its first step
            return
        self._ranks = [_RankFiles(heads[r][0], heads[r][1]) for r in range(W)]
        h0 = self._ranks[0]
        self.K, self.W, self.B, self.N = h0.K, W, h0.B, h0.N
        self.budget_bytes = int(h0.head.get("budget_bytes", 0))

    def refresh(self) -> bool:
        """Read what a live run appended since the last call; True when more steps arrived."""
        if not self._ranks:
            self._open_ranks()
            if not self._ranks:
                return False
        changed = False
        for r in self._ranks:
            changed = r.refresh() or changed
        if not changed:
            return False
        before = len(self.steps)
        idx = [r.index[:, 0] for r in self._ranks]
        m = min(len(i) for i in idx)
        first = idx[0][:m]
        if all(np.array_equal(i[:m], first) for i in idx[1:]):  # the usual case: ranks in lockstep
            self.steps = first.copy()
            self._rec = [np.arange(m, dtype=np.int64) for _ in idx]
        else:
            common = idx[0]
            for i in idx[1:]:
                common = np.intersect1d(common, i)
            self.steps = common
            self._rec = [np.searchsorted(i, common) for i in idx]
        return len(self.steps) != before

    # -- what there is
    @property
    def last_step(self) -> int | None:
        return int(self.steps[-1]) if len(self.steps) else None

    @property
    def phases(self) -> list[list[int]]:
        return list(self._ranks[0].head.get("phases", [])) if self._ranks else []

    @property
    def exhausted_at(self) -> int | None:
        return self._ranks[0].head.get("exhausted_at") if self._ranks else None

    @property
    def thinned(self) -> bool:
        return bool(self.phases) or self.exhausted_at is not None

    @property
    def thinned_from_step(self) -> int | None:
        ph = self.phases
        return int(ph[0][0]) if ph else self.exhausted_at

    @property
    def note(self) -> str | None:
        return thinning_note(self.phases, self.budget_bytes, self.exhausted_at) if self._ranks else None

    def __len__(self) -> int:
        return len(self.steps)

    def _records(self, step: int) -> list[int] | None:
        k = int(np.searchsorted(self.steps, step))
        if k >= len(self.steps) or self.steps[k] != step:
            return None
        return [int(rec[k]) for rec in self._rec]

    def has_step(self, step: int) -> bool:
        return self._records(step) is not None

    def has_rows(self, step: int) -> bool:
        recs = self._records(step)
        return recs is not None and all(r.index[i, 1] >= 0 for r, i in zip(self._ranks, recs))

    # -- the numbers
    def per_token(self, step: int) -> np.ndarray | None:
        """(K, W, B, N) float32: every rank's per-token losses of `step`; None when not kept."""
        recs = self._records(step)
        if recs is None:
            return None
        out = np.empty((self.K, self.W, self.B, self.N), dtype=np.float32)
        for w, (r, i) in enumerate(zip(self._ranks, recs)):
            slot = int(r.index[i, 1])
            if slot < 0 or r.rows is None or slot >= len(r.rows):
                return None
            out[:, w] = r.rows[slot].reshape(self.K, self.B, self.N)
        return out

    def position_mean(self, step: int) -> np.ndarray | None:
        """(N,) float32: mean loss by position over all rows of all ranks of `step`."""
        recs = self._records(step)
        if recs is None:
            return None
        total = np.zeros(self.N, dtype=np.float64)
        for r, i in zip(self._ranks, recs):
            total += r.pos[i]
        return (total / (self.K * self.B * self.W)).astype(np.float32)

    def position_map(self, lo: int | None = None, hi: int | None = None,
                     max_rows: int = 2048) -> tuple[np.ndarray, np.ndarray]:
        """(steps, (n, N) float32 means) for the recorded steps lo <= step < hi (None: no bound), evenly
        subsampled to at most max_rows: the step x position map."""
        a = 0 if lo is None else int(np.searchsorted(self.steps, lo))
        b = len(self.steps) if hi is None else int(np.searchsorted(self.steps, hi))
        if b <= a or not self._ranks:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.N), dtype=np.float32)
        k = np.arange(a, b) if b - a <= max_rows else np.unique(np.linspace(a, b - 1, max_rows).round().astype(np.int64))
        total = np.zeros((len(k), self.N), dtype=np.float64)
        for r, rec in zip(self._ranks, self._rec):
            total += r.pos[rec[k]]
        return self.steps[k].copy(), (total / (self.K * self.B * self.W)).astype(np.float32)

    def bytes_on_disk(self) -> int:
        n = 0
        for p in self.dir.glob("rank*"):
            try:
                n += p.stat().st_size
            except OSError:
                pass
        return n


__all__ = ["HistoryWriter", "HistoryReader", "thinning_note"]
