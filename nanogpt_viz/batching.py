"""BatchPlan: the one source of truth for which tokens every row of every step reads.

For a step k, micro-batch m (0..K-1), rank r (0..W-1) and row i (0..B-1) the plan gives a start
offset s, and the row trains on

    X = t[s : s+N]        (inputs)
    Y = t[s+1 : s+N+1]    (targets: the inputs shifted left by one token)

Both the view and the trainer ask this module; nothing else computes offsets. Every query is O(1)
in the step number and in the corpus length, so step 10^9 of a 10^10-token corpus is instant.

Sampling modes
--------------
sequential  Non-overlapping blocks in order, as build-nanogpt's DataLoaderLite and llm.c lay them
            out: inside a micro-batch, rank r reads B consecutive blocks; micro-batches advance by
            W*B blocks. Global row g = ((k*K + m)*W + r)*B + i starts at g*N. When a whole step no
            longer fits, the plan wraps to the start (a new epoch) and the tail is dropped.
random      nanoGPT's get_batch: B uniform starts in [0, L-N-1], with replacement, drawn afresh
            for every call. Each (seed, rank, step, micro) seeds its own generator, so any step is
            reproducible without replaying the ones before it.
shuffled    llm.c's order: the sequential steps of an epoch visited in a seeded random order
            (a new permutation every epoch), each step's rows laid out as in `sequential`.
sliding     rows start every S tokens: g*S. With S=1 and B>1 consecutive rows overlap in N-1 of
            their N tokens: the misconception the founding note corrects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanogpt_viz.config import PlanConfig


class PlanError(ValueError):
    """A plan that cannot be built; the message is a user-facing sentence."""


@dataclass(frozen=True)
class RowRef:
    """One row of one micro-batch of one rank in one optimizer step."""

    step: int
    micro: int
    rank: int
    row: int
    start: int

    def to_dict(self) -> dict[str, int]:
        return {"rank": self.rank, "micro": self.micro, "row": self.row, "start": self.start}


# ---------------------------------------------------------------------------------------------
# A keyed bijection of [0, n): O(1) per element, so a shuffled epoch of 10^9 steps needs no table.
# A balanced Feistel network over 2h bits (4^h >= n) with cycle walking back into [0, n).

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-mixed hash of uint64 values (vectorised)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class FeistelPermutation:
    """A pseudo-random permutation of range(n) keyed by `key`, evaluated elementwise."""

    ROUNDS = 4

    def __init__(self, n: int, key: int):
        if n < 1:
            raise ValueError("permutation of an empty range")
        self.n = int(n)
        half_bits = max(1, math.ceil(math.log2(self.n) / 2)) if self.n > 1 else 1
        self.half_bits = half_bits
        self.half_mask = np.uint64((1 << half_bits) - 1)
        base = _mix64(np.array([key & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
        self.round_keys = [
            _mix64(np.array([(int(base) + 0x9E3779B97F4A7C15 * (r + 1)) & 0xFFFFFFFFFFFFFFFF],
                            dtype=np.uint64))[0]
            for r in range(self.ROUNDS)
        ]

    def _round(self, value: np.ndarray, r: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            return _mix64(value ^ self.round_keys[r]) & self.half_mask

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        hb = np.uint64(self.half_bits)
        left, right = x >> hb, x & self.half_mask
        for r in range(self.ROUNDS):
            left, right = right, left ^ self._round(right, r)
        return (left << hb) | right

    def _decrypt(self, x: np.ndarray) -> np.ndarray:
        hb = np.uint64(self.half_bits)
        left, right = x >> hb, x & self.half_mask
        for r in reversed(range(self.ROUNDS)):
            left, right = right ^ self._round(left, r), left
        return (left << hb) | right

    def _walk(self, values: Any, fn) -> np.ndarray:
        x = np.asarray(values, dtype=np.uint64)
        if self.n == 1:
            return np.zeros_like(x, dtype=np.int64)
        out = fn(x)
        bad = out >= np.uint64(self.n)
        while bad.any():  # cycle walking: expected < 4 passes since 4^h < 4n
            out[bad] = fn(out[bad])
            bad = out >= np.uint64(self.n)
        return out.astype(np.int64)

    def forward(self, values: Any) -> np.ndarray:
        return self._walk(values, self._encrypt)

    def inverse(self, values: Any) -> np.ndarray:
        return self._walk(values, self._decrypt)


# ---------------------------------------------------------------------------------------------


class BatchPlan:
    """Offsets for every (step, micro, rank, row) of a plan over a corpus of `n_tokens` tokens."""

    def __init__(self, config: PlanConfig, n_tokens: int):
        problems = config.problems()
        if problems:
            raise PlanError("; ".join(problems))
        self.config = config
        self.L = L = int(n_tokens)
        self.N = N = config.block_size
        self.B, self.K, self.W = config.batch_size, config.grad_accum, config.world_size
        self.mode = config.sampling
        self.S = config.stride if self.mode == "sliding" else N
        self.R = self.K * self.W * self.B  # rows per optimizer step
        if L < N + 1:
            raise PlanError(
                f"the corpus has {L:,} tokens but a block of N={N:,} inputs needs N+1 = {N + 1:,} "
                f"(the last input's target is one token further); lower the block size")
        if self.mode == "random":
            # No epochs in the data order: an "epoch" is nominal, L-1 targets' worth of tokens.
            self.rows_per_epoch = max(1, (L - 1) // N)
            self.steps_per_epoch = max(1, (L - 1) // self.tokens_per_step)
        else:
            if self.mode == "sliding":
                self.rows_per_epoch = (L - N - 1) // self.S + 1
            else:
                self.rows_per_epoch = (L - 1) // N
            self.steps_per_epoch = self.rows_per_epoch // self.R
            if self.steps_per_epoch == 0:
                need = (self.R - 1) * self.S + N + 1
                raise PlanError(
                    f"one optimizer step reads K*W*B = {self.R:,} rows ({need:,} tokens) but the corpus "
                    f"has only {L:,}; lower the batch size, accumulation or world size")
        if self.mode == "shuffled":
            self._perm_cache: dict[int, FeistelPermutation] = {}

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        """K*W*B*N: the predictions (and targets) in one optimizer step."""
        return self.R * self.N

    @property
    def used_tokens(self) -> int:
        """Tokens an epoch reads as inputs or targets (from position 0)."""
        if self.mode == "random":
            return self.L
        last_start = (self.steps_per_epoch * self.R - 1) * self.S
        return last_start + self.N + 1

    @property
    def dropped_tail(self) -> int:
        """Tokens at the end that no step of an epoch reads (0 under random sampling)."""
        return self.L - self.used_tokens

    def epoch(self, step: int) -> int:
        return int(step) // self.steps_per_epoch

    def _check_step(self, step: int) -> int:
        step = int(step)
        if step < 0:
            raise PlanError(f"step must be >= 0 (got {step})")
        return step

    # ---- offsets -----------------------------------------------------------------------------
    def _perm(self, epoch: int) -> FeistelPermutation:
        perm = self._perm_cache.get(epoch)
        if perm is None:
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            key = (self.config.seed * 0x100000001B3 + epoch * 0x9E3779B1 + 1) & 0xFFFFFFFFFFFFFFFF
            perm = self._perm_cache[epoch] = FeistelPermutation(self.steps_per_epoch, key)
        return perm

    def source_step(self, step: int) -> int:
        """The sequential step (within its epoch) whose blocks `step` reads."""
        step = self._check_step(step)
        e, k = divmod(step, self.steps_per_epoch)
        if self.mode == "shuffled":
            return int(self._perm(e).forward([k])[0])
        return k

    def _random_starts(self, step: int, micro: int, rank: int) -> np.ndarray:
        # One generator per (seed, rank, step, micro): independent of every other step, so O(1).
        rng = np.random.default_rng([self.config.seed, rank, step, micro])
        return rng.integers(0, self.L - self.N, size=self.B, dtype=np.int64)

    def starts(self, step: int) -> np.ndarray:
        """Start offsets of every row of optimizer step `step`, shape (K, W, B), int64."""
        step = self._check_step(step)
        K, W, B = self.K, self.W, self.B
        if self.mode == "random":
            out = np.empty((K, W, B), dtype=np.int64)
            for m in range(K):
                for r in range(W):
                    out[m, r] = self._random_starts(step, m, r)
            return out
        k = self.source_step(step)
        g = k * self.R + np.arange(self.R, dtype=np.int64)  # global row, laid out (micro, rank, row)
        return (g * self.S).reshape(K, W, B)

    def start(self, step: int, micro: int = 0, rank: int = 0, row: int = 0) -> int:
        self._check_index(micro, rank, row)
        if self.mode == "random":
            return int(self._random_starts(self._check_step(step), micro, rank)[row])
        g = (self.source_step(step) * self.R) + (micro * self.W + rank) * self.B + row
        return int(g * self.S)

    def micro_starts(self, step: int, micro: int, rank: int = 0) -> np.ndarray:
        """The B starts one rank reads in one micro-batch, shape (B,)."""
        self._check_index(micro, rank, 0)
        if self.mode == "random":
            return self._random_starts(self._check_step(step), micro, rank)
        g0 = self.source_step(step) * self.R + (micro * self.W + rank) * self.B
        return (g0 + np.arange(self.B, dtype=np.int64)) * self.S

    def _check_index(self, micro: int, rank: int, row: int) -> None:
        if not (0 <= micro < self.K and 0 <= rank < self.W and 0 <= row < self.B):
            raise PlanError(f"(micro={micro}, rank={rank}, row={row}) is outside K={self.K}, W={self.W}, "
                            f"B={self.B}")

    def rows(self, step: int) -> list[RowRef]:
        """Every row of a step, ordered by rank, then micro-batch, then row."""
        s = self.starts(step)
        return [RowRef(step, m, r, i, int(s[m, r, i]))
                for r in range(self.W) for m in range(self.K) for i in range(self.B)]

    def batch(self, tokens: Any, step: int, micro: int = 0, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) of one micro-batch of one rank, each (B, N) int64; Y is X shifted left by one."""
        xy = gather_rows(tokens, self.micro_starts(step, micro, rank), self.N + 1)
        return xy[:, :-1], xy[:, 1:]

    # ---- what each position is to the plan ---------------------------------------------------
    def owners(self, positions: Any, epoch: int = 0) -> dict[str, np.ndarray]:
        """For sequential/shuffled plans: which row of which step reads each position as an input.

        Returns arrays (same shape as `positions`): step, micro, rank, row, col; -1 everywhere for
        positions no step of that epoch reads (the dropped tail). Vectorised.
        """
        if self.mode not in ("sequential", "shuffled"):
            raise PlanError("positions have a unique owner only under sequential or shuffled sampling")
        p = np.asarray(positions, dtype=np.int64)
        g = p // self.N
        used = (p >= 0) & (g < self.steps_per_epoch * self.R)
        k_src, rem = np.divmod(np.where(used, g, 0), self.R)
        if self.mode == "shuffled":
            k = self._perm(epoch).inverse(k_src)
        else:
            k = k_src
        step = k + epoch * self.steps_per_epoch
        micro, rem = np.divmod(rem, self.W * self.B)
        rank, row = np.divmod(rem, self.B)
        col = p % self.N
        neg = np.int64(-1)
        return {name: np.where(used, arr, neg) for name, arr in
                (("step", step), ("micro", micro), ("rank", rank), ("row", row), ("col", col))}

    def coverage(self, upto_step: int, lo: int = 0, hi: int | None = None,
                 max_random_rows: int = 20_000_000) -> np.ndarray:
        """How many times each position in [lo, hi) has been a target in steps 0..upto_step.

        Closed form for sequential, shuffled and sliding plans; enumerates the draws for random
        plans (PlanError when that would exceed `max_random_rows` rows).
        """
        hi = self.L if hi is None else min(int(hi), self.L)
        lo = max(0, int(lo))
        p = np.arange(lo, max(lo, hi), dtype=np.int64)
        steps_done = self._check_step(upto_step) + 1
        if self.mode == "random":
            rows = steps_done * self.R
            if rows > max_random_rows:
                raise PlanError(f"exact coverage of {rows:,} random rows is too costly; use the expected "
                                f"fraction instead")
            starts = np.concatenate([self.starts(k).ravel() for k in range(steps_done)])
            return _interval_counts(starts + 1, self.N, lo, hi)
        full, partial = divmod(steps_done, self.steps_per_epoch)
        if self.mode == "sliding":
            per_epoch_rows = self.steps_per_epoch * self.R
            return (full * _strided_counts(p, per_epoch_rows, self.S, self.N)
                    + _strided_counts(p, partial * self.R, self.S, self.N)).astype(np.int64)
        # sequential / shuffled: position p (>= 1) is the target of block (p-1)//N
        block = (p - 1) // self.N
        in_epoch = (p >= 1) & (block < self.steps_per_epoch * self.R)
        counts = full * in_epoch.astype(np.int64)
        if partial:
            src = np.where(in_epoch, block // self.R, 0)
            k = self._perm(full).inverse(src) if self.mode == "shuffled" else src
            counts = counts + (in_epoch & (k < partial))
        return counts.astype(np.int64)

    def fraction_seen(self, upto_step: int) -> float:
        """Fraction of target positions (1..L-1) seen at least once up to `upto_step` (exact)."""
        steps_done = self._check_step(upto_step) + 1
        if self.mode == "random":
            cov = self.coverage(upto_step)
            return float(np.count_nonzero(cov[1:])) / (self.L - 1)
        if steps_done >= self.steps_per_epoch:
            seen = self.used_tokens - 1 if self.mode != "sliding" else self._sliding_seen(self.steps_per_epoch)
        elif self.mode == "sliding":
            seen = self._sliding_seen(steps_done)
        else:
            seen = steps_done * self.tokens_per_step
        return seen / (self.L - 1)

    def _sliding_seen(self, steps: int) -> int:
        rows = steps * self.R
        if self.S >= self.N:
            return rows * self.N
        return (rows - 1) * self.S + self.N

    def expected_random_fraction(self, upto_step: int) -> float:
        """What uniform sampling with replacement is expected to cover: 1 - exp(-tokens_seen / L)."""
        seen = (int(upto_step) + 1) * self.tokens_per_step
        return 1.0 - math.exp(-seen / self.L)

    def summary(self) -> dict[str, Any]:
        return {
            "sampling": self.mode, "tokens": self.L, "block_size": self.N, "batch_size": self.B,
            "grad_accum": self.K, "world_size": self.W, "stride": self.S if self.mode == "sliding" else None,
            "tokens_per_step": self.tokens_per_step, "steps_per_epoch": self.steps_per_epoch,
            "dropped_tail": self.dropped_tail,
        }


def _strided_counts(p: np.ndarray, rows: int, S: int, N: int) -> np.ndarray:
    """For rows g=0..rows-1 covering targets [g*S+1, g*S+N]: how many cover each position p."""
    if rows <= 0:
        return np.zeros_like(p)
    g_hi = np.minimum((p - 1) // S, rows - 1)  # largest g with g*S + 1 <= p
    g_lo = np.maximum(-((N - p) // S), 0)  # smallest g with g*S + N >= p, i.e. ceil((p-N)/S)
    return np.maximum(g_hi - g_lo + 1, 0) * (p >= 1)


def _interval_counts(first: np.ndarray, width: int, lo: int, hi: int) -> np.ndarray:
    """Counts over [lo, hi) of intervals [first, first+width) (vectorised difference array)."""
    n = max(0, hi - lo)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    a = np.clip(first - lo, 0, n)
    b = np.clip(first + width - lo, 0, n)
    keep = a < b
    diff = np.bincount(a[keep], minlength=n + 1) - np.bincount(b[keep], minlength=n + 1)
    return np.cumsum(diff[:n]).astype(np.int64)


def gather_rows(tokens: Any, starts: np.ndarray, width: int) -> np.ndarray:
    """tokens[s : s+width] for every s in `starts`, as an (len(starts), width) int64 array."""
    starts = np.asarray(starts, dtype=np.int64)
    gather = getattr(tokens, "gather", None)
    if gather is not None:
        return np.asarray(gather(starts, width), dtype=np.int64)
    idx = starts[:, None] + np.arange(width, dtype=np.int64)[None, :]
    return np.asarray(tokens[idx], dtype=np.int64)


__all__ = ["BatchPlan", "PlanError", "RowRef", "FeistelPermutation", "gather_rows"]
