"""BatchPlan: the one source of truth for which tokens every row of every step reads.

For a step k, micro-batch m (0..K-1), rank r (0..W-1) and row i (0..B-1) the plan gives a start
offset s in the view's stream (the split's shards laid end to end), and the row trains on

    X = t[s : s+N]        (inputs)
    Y = t[s+1 : s+N+1]    (targets: the inputs shifted left by one token)

Both the view and the trainer ask this module; nothing else computes offsets.

Sampling modes, each named after the code it reproduces (read from that code, written anew here):

sequential  build-nanogpt's DataLoaderLite, one `next_batch` call per micro-batch (call t = k*K + m).
            It works shard by shard: rank r starts each shard at B*N*r and advances by B*N*W per
            call; after a call it moves to the next shard when `position + B*N*W + 1 > len(shard)`
            with the rank's *own* position, so near a shard's end a higher rank can move on one
            call before rank 0 does, and the ranks stay out of step from then on. The shards
            cycle forever; each shard's tail is dropped.
llmc        llm.c's DataLoader without shuffling: a shard holds (ntok-1) // (W*B*N) samples of
            W*B*N tokens; sample i of rank r starts at i*W*B*N + r*B*N; all ranks switch shards
            together; after the last shard a new epoch starts at shard 0.
shuffled    llm.c's DataLoader with shuffling: each rank owns an mt19937 seeded `seed + rank`
            (seed 42 is llm.c's own), permutes the shard order at every epoch start and the
            samples of each shard when it loads it (Fisher-Yates, j = randint32 % (i+1)).
random      nanoGPT's get_batch: B uniform starts in [0, L-N-1], with replacement, per call. Each
            (seed, rank, step, micro) seeds its own generator, so any step is O(1). A replayed
            nanoGPT run (`draws=`) supplies the very offsets that run drew instead.
sliding     rows start every S tokens: g*S over the whole stream. With S=1 and B>1 consecutive rows
            overlap in N-1 of their N tokens: the misconception the founding note corrects.

Rows of the three loader modes never cross a shard boundary, as in the real loaders.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from nanogpt_viz.config import LOADER_MODES, PlanConfig
from nanogpt_viz.data.mt19937 import mt19937, skip


class PlanError(ValueError):
    """A plan that cannot be built; the message is a user-facing sentence."""


@dataclass(frozen=True)
class RowRef:
    """One row of one micro-batch of one rank in one optimizer step."""

    step: int
    micro: int
    rank: int
    row: int
    start: int  # offset in the view's stream
    shard: str = ""
    shard_offset: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "micro": self.micro, "row": self.row, "start": self.start,
                "shard": self.shard, "shard_offset": self.shard_offset}


class Draws(Protocol):
    """A source of random-mode offsets, e.g. a replayed nanoGPT run."""

    def train_starts(self, it: int, micro: int, rank: int = 0) -> np.ndarray: ...


# ---------------------------------------------------------------------------------------------
# llm.c's shuffling: its mt19937 (the standard generator, seeded with init_genrand as torch and
# numpy's RandomState do) and its Fisher-Yates loop.


def _skip(bg: np.random.MT19937, n: int) -> np.random.MT19937:
    """The generator n outputs later (MT19937 has a jump-ahead; bg itself is left as it was)."""
    return skip(bg, n)


def _copy(bg: np.random.MT19937) -> np.random.MT19937:
    return skip(bg, 0)


def _swap_targets(n: int, raw: np.ndarray) -> np.ndarray:
    """j[i] = raw % (i+1) for the loop's i = n-1 down to 1 (j[0] = -1: no step 0)."""
    raw = np.asarray(raw, dtype=np.uint64)
    if raw.shape != (max(n - 1, 0),):
        raise ValueError(f"a permutation of {n} needs {n - 1} draws, got {raw.shape}")
    j = np.empty(n, dtype=np.int64)
    j[0] = -1
    steps = np.arange(n - 1, 0, -1, dtype=np.int64)
    j[steps] = (raw % (steps + 1).astype(np.uint64)).astype(np.int64)
    return j


def fisher_yates_at(j: np.ndarray, p: int) -> int:
    """One element of the permutation `fisher_yates` builds, from its swap targets, in O(n) numpy scans
    without building the rest: what position p held just before step p, followed back (see below)."""
    def before(q: int) -> int:  # the value at position q just before step q
        while True:
            hits = np.flatnonzero(j[q + 1:] == q)  # the first later step that swapped into q
            if not len(hits):
                return q
            q = q + 1 + int(hits[0])

    p = int(p)
    if p == 0:
        return before(0)
    hits = np.flatnonzero(j[p + 1:] == j[p])
    return before(p + 1 + int(hits[0])) if len(hits) else int(j[p])


def fisher_yates(n: int, raw: np.ndarray) -> np.ndarray:
    """llm.c's `random_permutation` of the identity array of length n, given its n-1 draws.

    The C loop: for i = n-1 down to 1: j = raw % (i+1); swap(data[i], data[j]). Run as written it
    is a Python loop; this computes the same array in O(n log n) numpy. After step i, position i
    is final and holds what position j_i held just before that step. A position q <= t is touched
    by later steps only as a `j` side, so its value before step t is what the smallest i > t with
    j_i = q wrote there (the value position i held before step i), or q itself: pointer chasing.
    """
    n = int(n)
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    return _fisher_yates_from(_swap_targets(n, raw))


def _fisher_yates_from(j: np.ndarray) -> np.ndarray:
    n = len(j)
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    idx = np.arange(1, n, dtype=np.int64)
    order = np.lexsort((idx, j[1:]))  # steps grouped by j, ascending i inside a group
    srt_i, srt_j = idx[order], j[1:][order]
    # g[i]: the next step after i (larger i) with the same j, or -1
    g = np.full(n, -1, dtype=np.int64)
    same = srt_j[1:] == srt_j[:-1]
    g[srt_i[:-1][same]] = srt_i[1:][same]
    # first[q]: the smallest step i with j_i = q, or -1
    first = np.full(n, -1, dtype=np.int64)
    head = np.ones(len(srt_j), dtype=bool)
    head[1:] = ~same
    first[srt_j[head]] = srt_i[head]
    q = np.arange(n, dtype=np.int64)
    # next(q): the smallest i > q with j_i = q (all such i are >= q; i == q is a self-swap)
    nxt = np.where(first == q, g[np.maximum(first, 0)], first)
    nxt = np.where(first < 0, -1, nxt)
    h = np.where(nxt < 0, q, nxt)
    while True:  # pointer jumping to the end of each chain: O(log n) rounds
        h2 = h[h]
        if np.array_equal(h2, h):
            break
        h = h2
    out = np.empty(n, dtype=np.int64)
    out[0] = h[0]
    gi = g[1:]
    out[1:] = np.where(gi >= 0, h[np.maximum(gi, 0)], j[1:])
    return out


class _LlmcShuffle:
    """One rank's shuffled order, epoch by epoch, with what must be replayed cached per epoch."""

    def __init__(self, seed: int, samples: np.ndarray, max_perms: int = 8):
        self.S = len(samples)
        self.samples = samples  # samples per shard, by shard index
        self.draws_per_epoch = max(self.S - 1, 0) + int(np.maximum(samples - 1, 0).sum())
        self._epochs: dict[int, tuple[np.random.MT19937, np.ndarray]] = {}  # e -> (rng at start, order before)
        self._epochs[0] = (mt19937(seed), np.arange(self.S, dtype=np.int64))
        self._info: OrderedDict[int, tuple[np.ndarray, np.ndarray, list]] = OrderedDict()
        self._perms: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._js: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.max_perms = max_perms

    def _epoch_start(self, e: int) -> tuple[np.random.MT19937, np.ndarray]:
        hit = self._epochs.get(e)
        if hit is not None:
            return hit
        base = max(k for k in self._epochs if k <= e)
        rng, order = self._epochs[base]
        if self.S == 1:  # no shard shuffle: epoch e starts e*D outputs in, one jump
            return _skip(rng, (e - base) * self.draws_per_epoch), order
        rng, order = _copy(rng), order.copy()
        for k in range(base, e):  # each epoch's shard order builds on the last: march
            order = self._permute(order, rng)  # the epoch's shard shuffle
            rng = _skip(rng, self.draws_per_epoch - max(self.S - 1, 0))  # its intra-shard shuffles
            if len(self._epochs) < 4096:
                self._epochs[k + 1] = (_copy(rng), order.copy())
        return rng, order

    def _permute(self, data: np.ndarray, rng: np.random.MT19937) -> np.ndarray:
        n = len(data)
        if n <= 1:
            return data
        return data[fisher_yates(n, rng.random_raw(n - 1))]

    def epoch(self, e: int) -> tuple[np.ndarray, np.ndarray, list]:
        """(shard order, cumulative sample ends in that order, rng state at each shard load)."""
        return self._cached(self._info, e, 4, lambda: self._make_epoch(e))

    def _make_epoch(self, e: int) -> tuple[np.ndarray, np.ndarray, list]:
        rng, order = self._epoch_start(e)
        rng = _copy(rng)
        order = self._permute(order.copy(), rng)
        states = []
        for q in range(self.S):
            states.append(_copy(rng))
            rng = _skip(rng, max(int(self.samples[order[q]]) - 1, 0))
        if e + 1 not in self._epochs and len(self._epochs) < 4096:
            self._epochs[e + 1] = (rng, order.copy())
        return order, np.cumsum(self.samples[order]), states

    def _cached(self, cache: OrderedDict, key: Any, size: int, make) -> Any:
        """cache[key], made by make() on a miss; the least recently used entry goes beyond `size`."""
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        value = cache[key] = make()
        if len(cache) > size:
            cache.popitem(last=False)
        return value

    def _targets(self, e: int, q: int) -> np.ndarray:
        """The swap targets of the shuffle of the q-th shard loaded in epoch e (cached)."""
        def make() -> np.ndarray:
            order, _, states = self.epoch(e)
            n = int(self.samples[order[q]])
            return _swap_targets(n, _copy(states[q]).random_raw(max(n - 1, 0)))
        return self._cached(self._js, (e, q), self.max_perms, make)

    def intra(self, e: int, q: int) -> np.ndarray:
        """The sample order inside the q-th shard loaded in epoch e."""
        return self._cached(self._perms, (e, q), self.max_perms, lambda: _fisher_yates_from(self._targets(e, q)))

    def intra_at(self, e: int, q: int, i: np.ndarray) -> np.ndarray:
        """intra(e, q)[i] for a few i, without building the whole order when it is not cached."""
        hit = self._perms.get((e, q))
        if hit is not None or len(i) > 64:
            return self.intra(e, q)[i]
        j = self._targets(e, q)
        return np.array([fisher_yates_at(j, int(x)) for x in i], dtype=np.int64)


# ---------------------------------------------------------------------------------------------


def _shard_table(shards: Any) -> tuple[list[str], np.ndarray]:
    if isinstance(shards, (int, np.integer)):
        return ["stream"], np.array([int(shards)], dtype=np.int64)
    names, lengths = [], []
    for k, item in enumerate(shards):
        if isinstance(item, (tuple, list)):
            name, n = item
        else:
            name, n = f"shard {k}", item
        names.append(str(name))
        lengths.append(int(n))
    if not lengths:
        raise PlanError("the split has no shards")
    return names, np.array(lengths, dtype=np.int64)


class BatchPlan:
    """Offsets for every (step, micro, rank, row) of a plan over the shards of one split.

    `shards`: the split's length (one shard), or its shards in stream order as lengths or
    (name, length) pairs. `draws`: for random sampling, a replayed run's offsets.
    """

    def __init__(self, config: PlanConfig, shards: Any, draws: Draws | None = None):
        problems = config.problems()
        if problems:
            raise PlanError("; ".join(problems))
        self.config = config
        self.shard_names, self.shard_lengths = _shard_table(shards)
        self.shard_ends = np.cumsum(self.shard_lengths)
        self.shard_starts = self.shard_ends - self.shard_lengths
        self.n_shards = len(self.shard_lengths)
        self.L = L = int(self.shard_ends[-1])
        self.N = N = config.block_size
        self.B, self.K, self.W = config.batch_size, config.grad_accum, config.world_size
        self.mode = config.sampling
        self.seed = config.effective_seed
        self.S = config.stride if self.mode == "sliding" else N
        self.R = self.K * self.W * self.B  # rows per optimizer step
        self.draws = draws if self.mode == "random" else None
        if L < N + 1:
            raise PlanError(
                f"the corpus has {L:,} tokens but a block of N={N:,} inputs needs N+1 = {N + 1:,} "
                f"(the last input's target is one token further); lower the block size")
        if self.mode in LOADER_MODES:
            self._init_loader()
        elif self.mode == "random":
            # No epochs in the data order: an "epoch" is nominal, L-1 targets' worth of tokens.
            self.rows_per_epoch = max(1, (L - 1) // N)
            self.steps_per_epoch = max(1, (L - 1) // self.tokens_per_step)
        else:  # sliding
            self.rows_per_epoch = (L - N - 1) // self.S + 1
            self.steps_per_epoch = self.rows_per_epoch // self.R
            if self.steps_per_epoch == 0:
                need = (self.R - 1) * self.S + N + 1
                raise PlanError(
                    f"one optimizer step reads K*W*B = {self.R:,} rows ({need:,} tokens) but the corpus "
                    f"has only {L:,}; lower the batch size, accumulation or world size")

    # ---- the loaders' per-shard bookkeeping ----------------------------------------------------
    def _init_loader(self) -> None:
        BN, W = self.B * self.N, self.W
        need = W * BN + 1
        short = np.nonzero(self.shard_lengths < need)[0]
        if len(short):
            s = int(short[0])
            what = "shard " + self.shard_names[s] if self.n_shards > 1 else "the split"
            raise PlanError(
                f"{what} has {int(self.shard_lengths[s]):,} tokens but one call of the loader reads "
                f"W*B*N+1 = {need:,} (W={W}, B={self.B}, N={self.N}); the real loader fails here too. "
                f"Lower the batch size B, the block size N or the ranks W")
        if self.mode == "sequential":
            # calls rank r makes in shard s: the first is read unchecked, then one more while
            # r*B*N + (j+2)*B*N*W + 1 <= len(shard)
            r = np.arange(W, dtype=np.int64)[:, None]
            self.calls = np.maximum(1, (self.shard_lengths[None, :] - 1 - BN * r) // (BN * W))  # (W, S)
        else:
            samples = (self.shard_lengths - 1) // (BN * W)
            self.calls = np.broadcast_to(samples, (W, self.n_shards)).copy()
        self.call_ends = np.cumsum(self.calls, axis=1)  # (W, S), in shard order (sequential, llmc)
        self.calls_per_pass = self.call_ends[:, -1].copy()  # (W,)
        self.steps_per_epoch = max(1, int(self.calls_per_pass[0]) // self.K)
        self.rows_per_epoch = int(self.calls_per_pass[0]) * self.B
        if self.mode == "shuffled":
            self._shuffle = [_LlmcShuffle(self.seed + r, self.calls[0]) for r in range(W)]

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        """K*W*B*N: the predictions (and targets) in one optimizer step."""
        return self.R * self.N

    def read_per_shard(self) -> np.ndarray:
        """Tokens at the start of each shard that a pass reads as inputs or targets (loader modes)."""
        BN = self.B * self.N
        if self.mode == "sequential":
            return self.calls.sum(axis=0) * BN + 1
        return self.calls[0] * BN * self.W + 1

    @property
    def used_tokens(self) -> int:
        """Tokens an epoch reads as inputs or targets (the shards' read heads together)."""
        if self.mode == "random":
            return self.L
        if self.mode == "sliding":
            last_start = (self.steps_per_epoch * self.R - 1) * self.S
            return last_start + self.N + 1
        return int(self.read_per_shard().sum())

    @property
    def dropped_tail(self) -> int:
        """Tokens no step of an epoch reads (each shard's tail; 0 under random sampling)."""
        return self.L - self.used_tokens

    def dropped_ranges(self) -> list[tuple[int, int]]:
        """[(first, end)) stream ranges no pass reads: each shard's dropped tail (loader modes)."""
        if self.mode not in LOADER_MODES:
            return [] if self.mode == "random" else [(self.used_tokens, self.L)] if self.dropped_tail else []
        heads = self.read_per_shard()
        return [(int(a + h), int(b)) for a, h, b in zip(self.shard_starts, heads, self.shard_ends) if a + h < b]

    def epoch(self, step: int) -> int:
        """The pass through the data that the step's first call (rank 0, micro 0) reads."""
        step = self._check_step(step)
        if self.mode in LOADER_MODES:
            return step * self.K // int(self.calls_per_pass[0])
        return step // self.steps_per_epoch

    def epoch_start(self, epoch: int) -> int:
        """The first step with a call of rank 0 in pass `epoch`."""
        if self.mode in LOADER_MODES:
            return int(epoch) * int(self.calls_per_pass[0]) // self.K
        return int(epoch) * self.steps_per_epoch

    def _check_step(self, step: int) -> int:
        step = int(step)
        if step < 0:
            raise PlanError(f"step must be >= 0 (got {step})")
        return step

    def _check_index(self, micro: int, rank: int, row: int) -> None:
        if not (0 <= micro < self.K and 0 <= rank < self.W and 0 <= row < self.B):
            raise PlanError(f"(micro={micro}, rank={rank}, row={row}) is outside K={self.K}, W={self.W}, "
                            f"B={self.B}")

    # ---- loader calls ------------------------------------------------------------------------
    def locate(self, call: Any, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For loader call numbers t (= step*K + micro) of one rank: (pass, shard index, offset of
        the call's first token within that shard). Vectorised; loader modes only."""
        t = np.asarray(call, dtype=np.int64)
        C = int(self.calls_per_pass[rank])
        e, u = np.divmod(t, C)
        BN, W = self.B * self.N, self.W
        if self.mode == "shuffled":
            shard = np.empty_like(t)
            off = np.empty_like(t)
            for ep in np.unique(e):
                m = e == ep
                order, ends, _ = self._shuffle[rank].epoch(int(ep))
                q = np.searchsorted(ends, u[m], side="right")
                i = u[m] - (ends[q] - self.calls[rank][order[q]])
                samples = np.empty_like(i)
                for qq in np.unique(q):
                    mq = q == qq
                    samples[mq] = self._shuffle[rank].intra_at(int(ep), int(qq), i[mq])
                shard[m] = order[q]
                off[m] = samples * (BN * W) + rank * BN
            return e, shard, off
        ends = self.call_ends[rank]
        s = np.searchsorted(ends, u, side="right")
        j = u - (ends[s] - self.calls[rank][s])
        if self.mode == "sequential":
            off = BN * rank + j * (BN * W)
        else:
            off = j * (BN * W) + rank * BN
        return e, s, off

    # ---- offsets -----------------------------------------------------------------------------
    def _random_starts(self, step: int, micro: int, rank: int) -> np.ndarray:
        if self.draws is not None:
            return np.asarray(self.draws.train_starts(step, micro, rank), dtype=np.int64)
        # One generator per (seed, rank, step, micro): independent of every other step, so O(1).
        rng = np.random.default_rng([self.seed, rank, step, micro])
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
        if self.mode == "sliding":
            e, k = divmod(step, self.steps_per_epoch)
            g = k * self.R + np.arange(self.R, dtype=np.int64)  # global row, laid out (micro, rank, row)
            return (g * self.S).reshape(K, W, B)
        out = np.empty((K, W, B), dtype=np.int64)
        calls = step * K + np.arange(K, dtype=np.int64)
        rows = np.arange(B, dtype=np.int64) * self.N
        for r in range(W):
            _, s, off = self.locate(calls, r)
            out[:, r, :] = (self.shard_starts[s] + off)[:, None] + rows[None, :]
        return out

    def start(self, step: int, micro: int = 0, rank: int = 0, row: int = 0) -> int:
        self._check_index(micro, rank, row)
        return int(self.micro_starts(step, micro, rank)[row])

    def micro_starts(self, step: int, micro: int, rank: int = 0) -> np.ndarray:
        """The B starts one rank reads in one micro-batch, shape (B,)."""
        self._check_index(micro, rank, 0)
        step = self._check_step(step)
        if self.mode == "random":
            return self._random_starts(step, micro, rank)
        if self.mode == "sliding":
            e, k = divmod(step, self.steps_per_epoch)
            g0 = k * self.R + (micro * self.W + rank) * self.B
            return (g0 + np.arange(self.B, dtype=np.int64)) * self.S
        _, s, off = self.locate([step * self.K + micro], rank)
        return self.shard_starts[s[0]] + off[0] + np.arange(self.B, dtype=np.int64) * self.N

    def shard_of(self, positions: Any) -> np.ndarray:
        """Index of the shard holding each stream position."""
        return np.searchsorted(self.shard_ends, np.asarray(positions, dtype=np.int64), side="right")

    def rows(self, step: int) -> list[RowRef]:
        """Every row of a step, ordered by rank, then micro-batch, then row."""
        s = self.starts(step)
        flat = s.ravel()
        shard = self.shard_of(flat).reshape(s.shape)
        local = s - self.shard_starts[shard]
        return [RowRef(step, m, r, i, int(s[m, r, i]), self.shard_names[int(shard[m, r, i])],
                       int(local[m, r, i]))
                for r in range(self.W) for m in range(self.K) for i in range(self.B)]

    def batch(self, tokens: Any, step: int, micro: int = 0, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(X, Y) of one micro-batch of one rank, each (B, N) int64; Y is X shifted left by one."""
        xy = gather_rows(tokens, self.micro_starts(step, micro, rank), self.N + 1)
        return xy[:, :-1], xy[:, 1:]

    # ---- ranks out of step (DataLoaderLite) -------------------------------------------------------
    def rank_shards(self, step: int, micro: int = 0) -> list[int]:
        """The shard each rank reads at (step, micro) (loader modes)."""
        if self.mode not in LOADER_MODES:
            return [0] * self.W
        t = self._check_step(step) * self.K + micro
        return [int(self.locate([t], r)[1][0]) for r in range(self.W)]

    def drift_note(self, step: int) -> str | None:
        """Under DataLoaderLite, where ranks read different shards at `step`: who moved on, since when."""
        if self.mode != "sequential" or self.W == 1:
            return None
        shards = self.rank_shards(step)
        if len(set(shards)) == 1:
            return None
        t = step * self.K
        parts = []
        for r in range(self.W):
            e, u = divmod(t, int(self.calls_per_pass[r]))
            s = shards[r]
            entered = e * int(self.calls_per_pass[r]) + int(self.call_ends[r][s] - self.calls[r][s])
            parts.append((entered, r, s))
        latest = max(p[0] for p in parts)
        movers = [p for p in parts if p[0] == latest]
        rest = [p for p in parts if p[0] != latest]
        if rest and len({s for _, _, s in movers}) == 1:
            mv = ", ".join(f"rank {r}" for _, r, _ in movers)
            still = "; ".join(f"rank {r} is still in {self.shard_names[s]}" for _, r, s in rest)
            return f"{mv} moved to {self.shard_names[movers[0][2]]} at step {latest // self.K}; {still}"
        return "; ".join(f"rank {r} reads {self.shard_names[s]} (since step {t // self.K})" for t, r, s in parts)

    def first_drift(self, max_passes: int = 1) -> tuple[int, str] | None:
        """The first step at which DataLoaderLite's ranks read different shards, with its note."""
        if self.mode != "sequential" or self.W == 1:
            return None
        ends = self.call_ends  # (W, S)
        for s in range(self.n_shards):
            col = ends[:, s]
            if col.min() != col.max():
                step = int(col.min()) // self.K
                for k in (step, step + 1):
                    note = self.drift_note(k)
                    if note:
                        return k, note
        return None

    # ---- what each position is to the plan ---------------------------------------------------
    def owners(self, positions: Any, epoch: int = 0) -> dict[str, np.ndarray]:
        """For the loader modes: which row of which step reads each position as an input in pass
        `epoch` (each rank's own pass). Arrays shaped like `positions`: step, micro, rank, row,
        col, call; -1 for positions no call reads (the dropped tails)."""
        if self.mode not in LOADER_MODES:
            raise PlanError("positions have a unique owner only under the loader modes")
        p = np.asarray(positions, dtype=np.int64)
        flat = p.ravel()
        inside = (flat >= 0) & (flat < self.L)
        s = np.minimum(self.shard_of(np.where(inside, flat, 0)), self.n_shards - 1)
        x = np.where(inside, flat - self.shard_starts[s], 0)
        BN, W = self.B * self.N, self.W
        if self.mode == "sequential":
            block = x // BN
            rank, j = block % W, block // W
        else:
            j = x // (BN * W)  # the sample
            rank = (x % (BN * W)) // BN
        used = inside & (j < self.calls[rank, s])
        call = np.full(flat.shape, -1, dtype=np.int64)
        e = int(epoch)
        for r in range(W):
            C = int(self.calls_per_pass[r])
            m = used & (rank == r)
            if not m.any():
                continue
            if self.mode == "shuffled":
                order, ends, _ = self._shuffle[r].epoch(e)
                where = np.empty(self.n_shards, dtype=np.int64)
                where[order] = np.arange(self.n_shards)
                q = where[s[m]]
                before = ends[q] - self.calls[r][order[q]]
                k = np.empty(int(m.sum()), dtype=np.int64)
                jm = j[m]
                for qq in np.unique(q):
                    mq = q == qq
                    perm = self._shuffle[r].intra(e, int(qq))
                    inv = np.empty_like(perm)
                    inv[perm] = np.arange(len(perm))
                    k[mq] = inv[jm[mq]]
                call[m] = e * C + before + k
            else:
                before = self.call_ends[r][s[m]] - self.calls[r][s[m]]
                call[m] = e * C + before + j[m]
        ok = call >= 0
        neg = np.int64(-1)
        out = {
            "call": call, "step": np.where(ok, call // self.K, neg), "micro": np.where(ok, call % self.K, neg),
            "rank": np.where(ok, rank, neg), "row": np.where(ok, (x % BN) // self.N, neg),
            "col": np.where(ok, x % self.N, neg),
        }
        return {k: v.reshape(p.shape) for k, v in out.items()}

    def coverage(self, upto_step: int, lo: int = 0, hi: int | None = None,
                 max_random_rows: int = 20_000_000) -> np.ndarray:
        """How many times each position in [lo, hi) has been a target in steps 0..upto_step.

        Closed form for the loader and sliding plans (per pass); enumerates the draws for random
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
        if self.mode == "sliding":
            full, partial = divmod(steps_done, self.steps_per_epoch)
            per_epoch_rows = self.steps_per_epoch * self.R
            return (full * _strided_counts(p, per_epoch_rows, self.S, self.N)
                    + _strided_counts(p, partial * self.R, self.S, self.N)).astype(np.int64)
        # loader modes: target p is read with input p-1 of the same shard
        last_call = steps_done * self.K - 1
        q = p - 1
        same_shard = (q >= 0) & (self.shard_of(np.maximum(q, 0)) == self.shard_of(p))
        counts = np.zeros(len(p), dtype=np.int64)
        if self.mode == "shuffled":
            # complete passes read every used position once; the current pass by its own order
            for r in range(self.W):
                C = int(self.calls_per_pass[r])
                full, _ = divmod(last_call + 1, C)
                own = self.owners(np.where(same_shard, q, -1), epoch=full)
                mine = own["rank"] == r
                counts += np.where(mine, full + (own["call"] <= last_call), 0)
            return counts
        own = self.owners(np.where(same_shard, q, -1), epoch=0)
        t0 = own["call"]
        C = self.calls_per_pass[np.maximum(own["rank"], 0)]
        return np.where((t0 >= 0) & (t0 <= last_call), (last_call - t0) // C + 1, 0).astype(np.int64)

    def fraction_seen(self, upto_step: int) -> float:
        """Fraction of target positions (1..L-1) seen at least once up to `upto_step` (exact)."""
        steps_done = self._check_step(upto_step) + 1
        if self.mode == "random":
            cov = self.coverage(upto_step)
            return float(np.count_nonzero(cov[1:])) / (self.L - 1)
        if self.mode == "sliding":
            seen = self._sliding_seen(min(steps_done, self.steps_per_epoch))
        else:  # every call reads B*N new targets until its rank's pass is complete
            calls = np.minimum(steps_done * self.K, self.calls_per_pass)
            seen = int(calls.sum()) * self.B * self.N
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

    def describe_step(self, step: int) -> str:
        """Where rank 0's first call of the step reads, in the loader's own terms."""
        if self.mode not in LOADER_MODES:
            return ""
        t = self._check_step(step) * self.K
        e, s, off = (int(a[0]) for a in self.locate([t], 0))
        name = self.shard_names[s]
        where = f"{name} ({s + 1}/{self.n_shards})" if self.n_shards > 1 else name
        if self.mode == "sequential":
            return f"pass {e}, {where}, position {off:,}"
        sample = off // (self.B * self.N * self.W)
        return f"epoch {e}, {where}, sample {sample:,} of {int(self.calls[0][s]):,}"

    def summary(self) -> dict[str, Any]:
        out = {
            "sampling": self.mode, "tokens": self.L, "block_size": self.N, "batch_size": self.B,
            "grad_accum": self.K, "world_size": self.W, "stride": self.S if self.mode == "sliding" else None,
            "seed": self.seed if self.mode in ("random", "shuffled") else None,
            "tokens_per_step": self.tokens_per_step, "steps_per_epoch": self.steps_per_epoch,
            "dropped_tail": self.dropped_tail, "shards": self.n_shards,
        }
        if self.mode in LOADER_MODES:
            out["calls_per_pass"] = [int(c) for c in self.calls_per_pass]
        return out


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


def shards_of(tokens: Any) -> Any:
    """The shard table of a token array: (name, length) of each part, or its length."""
    names = getattr(tokens, "part_names", None)
    parts = getattr(tokens, "parts", None)
    if parts is not None and names is not None and len(parts) > 1:
        return [(n, len(p)) for n, p in zip(names, parts)]
    if parts is not None and names is not None and len(parts) == 1:
        return [(names[0], len(parts[0]))]
    return len(tokens)


def plan_for(config: PlanConfig, tokens: Any, draws: Draws | None = None) -> BatchPlan:
    """The plan over a token array, shard by shard as the real loaders read it."""
    return BatchPlan(config, shards_of(tokens), draws=draws)


__all__ = ["BatchPlan", "PlanError", "RowRef", "Draws", "fisher_yates", "fisher_yates_at", "gather_rows",
           "shards_of", "plan_for"]
