"""Which batches a validation pass reads: the protocols of the real codes, and a whole-split one.

Pure (numpy only, never Qt or torch): for a protocol this module gives the rows to evaluate as
start offsets into a split (each row reads t[s : s+N+1], inputs t[s:s+N], targets t[s+1:s+N+1]),
and which of each row's targets count. The trainer runs the model on them; the loss it reports is

    sum of the counted per-token losses / number of counted targets

which equals what each real code prints: its batches all hold B*N targets, so its mean of batch
means (and, under DDP, its average over ranks of per-rank means) is that same plain mean.

Protocols
---------
nanogpt         nanoGPT's `estimate_loss`: `eval_iters` batches of B random rows from EACH split,
                train and val, starts uniform in [0, L-N-1] (`torch.randint(len(data) - block_size)`).
                Under a replayed nanoGPT run the draws are the very ones that run made
                (`replay.eval_starts(iteration, split)`); otherwise a numpy generator seeded by
                (seed, iteration, split) draws them, so any evaluation is reproducible.
build-nanogpt   build-nanogpt's `val_loader.reset()` then `val_loss_steps` calls of
                `DataLoaderLite.next_batch()` on the val shards: rank r's call c reads B consecutive
                rows; the loader moves on B*N*W tokens per call and to the next shard when the
                next W ranks' batch would not fit.
llmc            llm.c's `dataloader_reset(val_loader)` then `val_num_batches` calls of
                `dataloader_next_batch` (the val loader never shuffles): a shard holds
                (len-1) // (W*B*N) samples; sample j of a shard is read by rank r at j*W*B*N + r*B*N.
whole           every val target (positions 1..L-1) counted exactly once: rows at 0, N, 2N, ... and,
                when L-1 is not a multiple of N, one last row ending at the last token whose first
                targets (already counted) are skipped. Bounded: at most WHOLE_MAX_TARGETS targets
                (the first ones) per evaluation.

Cost of one evaluation, in rows of N+1 tokens: nanogpt 2 * eval_iters * B; build-nanogpt and
llmc batches * W * B; whole ceil(min(L-1, WHOLE_MAX_TARGETS) / N).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from nanogpt_viz.config import EVAL_PROTOCOLS
EVAL_PROTOCOL_LABELS = {
    "nanogpt": "nanoGPT estimate_loss (random batches, train and val)",
    "build-nanogpt": "build-nanogpt (val_loader.reset, sequential batches)",
    "llmc": "llm.c (dataloader_reset, sequential batches)",
    "whole": "whole val split (every target once)",
}
# what --eval-batches means when it is not given: each code's own default
# (nanoGPT eval_iters=200, build-nanogpt val_loss_steps=20, llm.c val_max_steps=20)
DEFAULT_EVAL_BATCHES = {"nanogpt": 200, "build-nanogpt": 20, "llmc": 20, "whole": 0}
WHOLE_MAX_TARGETS = 1 << 22  # 4,194,304 targets: a few seconds for GPT-2 124M on one H200
WHOLE_MAX_TARGETS_CPU = 1 << 16  # 65,536 targets: about 25 s for the tiny preset on 2 CPU cores


class EvalError(ValueError):
    """A protocol that cannot run on this split; the message is a user-facing sentence."""


class EvalReplay(Protocol):  # what nanogpt_replay.NanoGPTReplay offers for evaluation
    def eval_starts(self, it: int, split: str) -> Any: ...


def default_protocol(sampling: str) -> str:
    """The protocol of the code whose loader a sampling mode reproduces ('whole' otherwise)."""
    return {"random": "nanogpt", "sequential": "build-nanogpt", "llmc": "llmc",
            "shuffled": "llmc"}.get(sampling, "whole")


def window_protocol(plan_config: Any, presets: dict[str, Any]) -> str:
    """The window's 'auto': a plan set like a real code's preset (its name starts with nanoGPT,
    build-nanogpt or llm.c) is measured as that code measures; the window's own teaching plans over
    the whole val split."""
    keys = ("block_size", "batch_size", "grad_accum", "sampling")
    for name, pc in presets.items():
        if name.startswith(("nanoGPT", "build-nanogpt", "llm.c")) and \
                all(getattr(pc, k, None) == getattr(plan_config, k, None) for k in keys):
            return default_protocol(plan_config.sampling)
    return "whole"


def resolve_protocol(protocol: str | None, sampling: str) -> str:
    """'auto' / None follows the sampling mode; anything else must be one of EVAL_PROTOCOLS."""
    if protocol in (None, "", "auto"):
        return default_protocol(sampling)
    if protocol not in EVAL_PROTOCOLS:
        raise EvalError(f"eval protocol must be one of auto, {', '.join(EVAL_PROTOCOLS)} (got {protocol!r})")
    return protocol


def batches_for(protocol: str, eval_batches: int) -> int:
    """eval_iters / val_loss_steps / val_num_batches: `eval_batches`, or the code's default when 0."""
    return int(eval_batches) if eval_batches and eval_batches > 0 else DEFAULT_EVAL_BATCHES[protocol]


@dataclass(frozen=True)
class EvalBatch:
    """B rows of one forward pass: `starts` (rows,) int64; the first skip[i] targets of row i don't count."""

    split: str
    rank: int
    call: int  # the loader call (or draw, or chunk) number within this evaluation
    starts: np.ndarray
    skip: np.ndarray | None = None

    def counted(self, N: int) -> int:
        return len(self.starts) * N - (int(self.skip.sum()) if self.skip is not None else 0)


@dataclass(frozen=True)
class EvalPlan:
    protocol: str
    N: int
    batches: tuple[EvalBatch, ...]
    notes: tuple[str, ...] = field(default=())

    def targets(self, split: str = "val") -> int:
        """Targets the evaluation counts on `split` (with repeats, for random draws)."""
        return sum(b.counted(self.N) for b in self.batches if b.split == split)

    def distinct_targets(self, split: str = "val") -> int:
        """Positions of `split` counted at least once (random draws can repeat a position)."""
        bs = [b for b in self.batches if b.split == split]
        if not bs:
            return 0
        first = np.concatenate([b.starts + 1 + (b.skip if b.skip is not None else 0) for b in bs])
        end = np.concatenate([b.starts + 1 + self.N for b in bs])
        order = np.argsort(first, kind="stable")
        first, end = first[order], end[order]
        reach = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(end)[:-1]])
        return int(np.maximum(end - np.maximum(first, reach), 0).sum())

    @property
    def rows(self) -> int:
        return sum(len(b.starts) for b in self.batches)

    def coverage(self, split: str, length: int) -> np.ndarray:
        """How many times each position 0..length-1 of `split` is a counted target."""
        diff = np.zeros(length + 1, dtype=np.int64)
        for b in self.batches:
            if b.split != split:
                continue
            first = b.starts + 1 + (b.skip if b.skip is not None else 0)
            np.add.at(diff, first, 1)
            np.add.at(diff, b.starts + 1 + self.N, -1)
        return np.cumsum(diff[:length])


@dataclass(frozen=True)
class EvalResult:
    """One evaluation: the mean val loss, how it was measured, and nanoGPT's train-split estimate."""

    val_loss: float
    protocol: str
    val_tokens: int  # distinct val targets the evaluation covered
    train_loss_est: float | None = None  # nanogpt protocol only: estimate_loss()'s 'train'
    val_bpb: float | None = None  # bits per byte of the same val targets (GPT-2-token corpora)


def _shard_lengths(shards: int | Sequence[Any]) -> list[int]:
    """An int (one shard), or a list of lengths or of (name, length) pairs."""
    if isinstance(shards, (int, np.integer)):
        return [int(shards)]
    out = []
    for s in shards:
        out.append(int(s[1]) if isinstance(s, (tuple, list)) else int(s))
    return out


def nanogpt_batches(train_len: int, val_len: int, N: int, B: int, eval_iters: int, iteration: int,
                    seed: int, replay: EvalReplay | None = None) -> list[EvalBatch]:
    """estimate_loss(): eval_iters batches of B uniform starts in [0, L-N-1], train then val."""
    out = []
    for s_i, (split, L) in enumerate((("train", train_len), ("val", val_len))):
        if L < N + 1:
            raise EvalError(f"the {split} split has {L:,} tokens; nanoGPT's estimate_loss needs at least "
                            f"N+1 = {N + 1:,}")
        draws = replay.eval_starts(int(iteration), split) if replay is not None else None
        if draws is not None:
            draws = np.asarray(draws, dtype=np.int64).reshape(-1, B)
            if draws.shape[0] != eval_iters or draws.min() < 0 or draws.max() > L - N - 1:
                raise EvalError(f"the replayed nanoGPT run drew {draws.shape[0]} eval batches of {split} starts "
                                f"in [{draws.min()}, {draws.max()}]; this run asks for {eval_iters} in "
                                f"[0, {L - N - 1}] (eval_iters or block size differ)")
        else:
            rng = np.random.default_rng([int(seed), 0xE7A1, int(iteration), s_i])
            draws = rng.integers(0, L - N, size=(eval_iters, B), dtype=np.int64)
        out += [EvalBatch(split, 0, k, draws[k]) for k in range(eval_iters)]
    return out


def build_nanogpt_batches(shards: int | Sequence[Any], N: int, B: int, W: int, steps: int,
                          ranks: Sequence[int] | None = None) -> list[EvalBatch]:
    """DataLoaderLite(B, T=N, rank, W, 'val'): reset(), then `steps` calls of next_batch() per rank."""
    lengths = _shard_lengths(shards)
    base = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = []
    for r in (range(W) if ranks is None else ranks):
        shard, pos = 0, B * N * r  # reset()
        for c in range(steps):
            if pos + B * N + 1 > lengths[shard]:
                raise EvalError(f"val shard {shard} has {lengths[shard]:,} tokens; build-nanogpt's loader at "
                                f"position {pos:,} needs B*N+1 = {B * N + 1:,} more (lower B or N)")
            out.append(EvalBatch("val", r, c, base[shard] + pos + N * np.arange(B, dtype=np.int64)))
            pos += B * N * W
            if pos + (B * N * W + 1) > lengths[shard]:
                shard = (shard + 1) % len(lengths)
                pos = B * N * r
    return out


def llmc_batches(shards: int | Sequence[Any], N: int, B: int, W: int, steps: int,
                 ranks: Sequence[int] | None = None) -> list[EvalBatch]:
    """llm.c DataLoader (no shuffle): dataloader_reset(), then `steps` calls of dataloader_next_batch()."""
    lengths = _shard_lengths(shards)
    base = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    total = W * B * N
    samples = [(L - 1) // total for L in lengths]
    for i, (L, n) in enumerate(zip(lengths, samples)):
        if n < 1:  # llm.c asserts shard_ntok >= num_processes * B * T + 1 for every shard
            raise EvalError(f"val shard {i} has {L:,} tokens; llm.c needs W*B*N+1 = {total + 1:,} per shard")
    out = []
    for r in (range(W) if ranks is None else ranks):
        shard, sample = 0, 0  # dataloader_reset
        for c in range(steps):
            if sample >= samples[shard]:  # dataloader_advance_: next shard, or back to the first
                shard, sample = (shard + 1) % len(lengths), 0
            off = base[shard] + sample * total + r * B * N
            out.append(EvalBatch("val", r, c, off + N * np.arange(B, dtype=np.int64)))
            sample += 1
    return out


def whole_batches(length: int, N: int, rows_per_batch: int,
                  max_targets: int = WHOLE_MAX_TARGETS) -> tuple[list[EvalBatch], int]:
    """Every target 1..L-1 once (the first `max_targets` when there are more). Returns (batches, targets)."""
    targets = min(int(length) - 1, int(max_targets))
    if targets < N:
        raise EvalError(f"the val split has {length:,} tokens; a row of N={N:,} inputs needs N+1 = {N + 1:,}")
    full = targets // N
    starts = N * np.arange(full, dtype=np.int64)
    skip = np.zeros(full, dtype=np.int64)
    rem = targets - full * N
    if rem:  # one last row ending at target `targets`; its first N-rem targets are counted already
        starts = np.append(starts, targets - N)
        skip = np.append(skip, N - rem)
    out = []
    for c, a in enumerate(range(0, len(starts), rows_per_batch)):
        s, k = starts[a:a + rows_per_batch], skip[a:a + rows_per_batch]
        out.append(EvalBatch("val", 0, c, s, k if k.any() else None))
    return out, targets


def eval_plan(protocol: str, *, val_shards: int | Sequence[Any], N: int, B: int, W: int = 1,
              eval_batches: int = 0, iteration: int = 0, seed: int = 1337, train_len: int = 0,
              replay: EvalReplay | None = None, max_targets: int = WHOLE_MAX_TARGETS) -> EvalPlan:
    """The batches of one evaluation after `iteration` optimizer steps (all ranks' rows)."""
    if protocol not in EVAL_PROTOCOLS:
        raise EvalError(f"eval protocol must be one of {', '.join(EVAL_PROTOCOLS)} (got {protocol!r})")
    n = batches_for(protocol, eval_batches)
    lengths = _shard_lengths(val_shards)
    notes: tuple[str, ...] = ()
    if protocol == "nanogpt":
        batches = nanogpt_batches(train_len, sum(lengths), N, B, n, iteration, seed, replay)
    elif protocol == "build-nanogpt":
        batches = build_nanogpt_batches(lengths, N, B, W, n)
    elif protocol == "llmc":
        batches = llmc_batches(lengths, N, B, W, n)
    else:
        batches, targets = whole_batches(sum(lengths), N, B, max_targets)
        if targets < sum(lengths) - 1:
            notes = (f"the whole-split evaluation covers the first {targets:,} of {sum(lengths) - 1:,} val "
                     f"targets (capped to keep each evaluation bounded)",)
    return EvalPlan(protocol, N, tuple(batches), notes)


__all__ = ["EVAL_PROTOCOLS", "EVAL_PROTOCOL_LABELS", "DEFAULT_EVAL_BATCHES", "WHOLE_MAX_TARGETS",
           "WHOLE_MAX_TARGETS_CPU", "EvalError",
           "EvalBatch", "EvalResult", "EvalPlan", "default_protocol", "window_protocol", "resolve_protocol",
           "batches_for", "nanogpt_batches",
           "build_nanogpt_batches", "llmc_batches", "whole_batches", "eval_plan"]
