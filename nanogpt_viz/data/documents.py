"""Document boundaries and bits per byte: two lenses on what a step reads (pure numpy).

GPT-2's data is documents joined by `<|endoftext|>` (id 50256). A row whose inputs hold an EOT makes the
model predict the first token of a new document from the end of another: the target right after an EOT
has no context of its own document. `step_documents` counts, for one step, the rows that read across a
boundary and the targets that follow an EOT; `split_by_boundary` splits per-token losses into "first
token after a boundary" and the rest.

Bits per byte normalise a loss by what the tokens stand for: the mean loss in nats over some targets,
times their count, over the bytes those targets decode to, over ln 2. Runs with different tokenizers or
block sizes compare on it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nanogpt_viz.data.batching import BatchPlan, gather_rows
from nanogpt_viz.data.tokenizer import EOT, VOCAB_SIZE


@dataclass(frozen=True)
class StepDocuments:
    rows: int  # rows of the step (K*W*B)
    rows_across: int  # rows with an <|endoftext|> among their inputs: they read across a document boundary
    targets: int  # K*W*B*N
    targets_after_eot: int  # targets whose input is <|endoftext|>: the first token of a new document

    def to_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "rows_across": self.rows_across, "targets": self.targets,
                "targets_after_eot": self.targets_after_eot}


def step_documents(tokens: Any, plan: BatchPlan, step: int, eot: int = EOT) -> StepDocuments:
    """Document boundaries in the rows of one step (reads the step's K*W*B*(N+1) tokens)."""
    x = gather_rows(tokens, plan.starts(step).ravel(), plan.N + 1)[:, :-1]  # (R, N) inputs
    is_eot = x == eot
    return StepDocuments(rows=int(x.shape[0]), rows_across=int(is_eot.any(axis=1).sum()), targets=int(x.size),
                         targets_after_eot=int(is_eot.sum()))


def split_by_boundary(per_token: np.ndarray, x: np.ndarray, eot: int = EOT) -> dict[str, Any]:
    """Mean loss of targets that follow an <|endoftext|> (the first token of a document) and of the rest.

    per_token and x: the same shape (..., N), x the inputs (the target at [..., c] follows x[..., c]).
    """
    per_token = np.asarray(per_token, dtype=np.float64)
    after = np.asarray(x) == eot
    n_after, n_rest = int(after.sum()), int((~after).sum())
    return {"after_boundary": float(per_token[after].mean()) if n_after else None, "after_boundary_n": n_after,
            "rest": float(per_token[~after].mean()) if n_rest else None, "rest_n": n_rest}


def token_byte_lengths() -> np.ndarray:
    """Bytes each GPT-2 token stands for, (50257,) int64; <|endoftext|> counts as 0 bytes of text.
    Raises TokenizerError without the GPT-2 vocabulary files, on every call (only the lengths are cached:
    the tokenizer's own cache decides whether its files are there)."""
    from nanogpt_viz.data.tokenizer import token_bytes

    token_bytes(EOT)  # the vocabulary is (still) there: the tokenizer's cached table, or TokenizerError
    return _byte_lengths()


@functools.lru_cache(maxsize=1)
def _byte_lengths() -> np.ndarray:
    from nanogpt_viz.data.tokenizer import token_bytes

    out = np.array([len(token_bytes(i)) for i in range(VOCAB_SIZE)], dtype=np.int64)
    out[EOT] = 0
    out.setflags(write=False)
    return out


def bits_per_byte(mean_loss_nats: float, target_ids: Any) -> float | None:
    """mean loss (nats per target) x targets / bytes of those targets / ln 2; None when they hold no bytes."""
    ids = np.asarray(target_ids).ravel()
    if ids.size == 0 or ids.max(initial=0) >= VOCAB_SIZE:
        return None
    n_bytes = int(token_byte_lengths()[ids].sum())
    if n_bytes == 0:
        return None
    return float(mean_loss_nats) * ids.size / n_bytes / math.log(2)


def target_bytes(target_ids: Any) -> np.ndarray | None:
    """Bytes of each target (the shape of target_ids), None when an id is not a GPT-2 token. The functions
    below take it as `nbytes=` so a caller deriving several views of one step looks the bytes up once."""
    ids = np.asarray(target_ids)
    if ids.size and (int(ids.max()) >= VOCAB_SIZE or int(ids.min()) < 0):
        return None
    return token_byte_lengths()[ids.astype(np.int64, copy=False)]


def token_bits_per_byte(per_token: Any, target_ids: Any, *, nbytes: np.ndarray | None = None) -> np.ndarray | None:
    """Each target's loss in bits per byte: loss / ln 2 / the bytes of that target (NaN where it has none:
    <|endoftext|>). per_token and target_ids of one shape; None when the ids are not GPT-2 tokens."""
    nbytes = target_bytes(target_ids) if nbytes is None else nbytes
    if nbytes is None:
        return None
    loss = np.asarray(per_token, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(nbytes > 0, loss / math.log(2) / np.maximum(nbytes, 1), np.nan)


def _by_position(loss: np.ndarray, nbytes: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(sum of loss, sum of bytes) at each position (the last axis) over the rows `keep` holds (all: None)."""
    axes = tuple(range(loss.ndim - 1))
    if keep is None:
        return loss.sum(axis=axes), nbytes.sum(axis=axes)
    return np.where(keep, loss, 0.0).sum(axis=axes), np.where(keep, nbytes, 0).sum(axis=axes)


def _bpb(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / math.log(2) / np.maximum(den, 1), np.nan)


def position_bits_per_byte(per_token: Any, target_ids: Any, mask: Any = None, *,
                           nbytes: np.ndarray | None = None) -> np.ndarray | None:
    """Bits per byte at each position of the block (the last axis): sum(loss) / ln 2 / sum(bytes) over the
    rows (those where `mask`, when given); NaN where those targets hold no bytes. None for non-GPT-2 ids."""
    nbytes = target_bytes(target_ids) if nbytes is None else nbytes
    if nbytes is None:
        return None
    loss = np.asarray(per_token, dtype=np.float64)
    return _bpb(*_by_position(loss, nbytes, None if mask is None else np.asarray(mask, bool)))


def masked_split(per_token: Any, after: Any) -> dict[str, Any]:
    """Per-token losses (..., N) split by a mask of the same shape (`after`: the target follows <|endoftext|>).

    "after" / "rest": (N,) mean by position (NaN where a position has none), "count_after" / "count_rest" (N,),
    "mean_after" / "mean_rest" over all positions (None when empty) and their counts "n_after" / "n_rest".
    The one computation behind `position_split` (the window) and the trainer's StepReport fields."""
    loss = np.asarray(per_token, dtype=np.float64)
    after = np.asarray(after, dtype=bool)
    axes = tuple(range(loss.ndim - 1))
    n_after = after.sum(axis=axes)
    n_rest = (~after).sum(axis=axes)
    sum_after = np.where(after, loss, 0.0).sum(axis=axes)
    sum_rest = np.where(after, 0.0, loss).sum(axis=axes)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos_after = np.where(n_after > 0, sum_after / np.maximum(n_after, 1), np.nan)
        pos_rest = np.where(n_rest > 0, sum_rest / np.maximum(n_rest, 1), np.nan)
    k_after, k_rest = int(n_after.sum()), int(n_rest.sum())
    return {"after": pos_after, "rest": pos_rest, "count_after": n_after.astype(np.int64),
            "count_rest": n_rest.astype(np.int64),
            "mean_after": float(sum_after.sum() / k_after) if k_after else None,
            "mean_rest": float(sum_rest.sum() / k_rest) if k_rest else None, "n_after": k_after, "n_rest": k_rest}


def position_split(per_token: Any, x: Any, target_ids: Any = None, eot: int = EOT, *,
                   nbytes: np.ndarray | None = None) -> dict[str, Any]:
    """Loss by position in the block, split into targets that follow an <|endoftext|> (the first token of a
    new document: x[..., j] is EOT) and the rest. per_token, x (the inputs) and target_ids: one shape (..., N).

    Returns "after" and "rest" (N,) means (NaN where a position has no such target), "count_after" and
    "count_rest" (N,),
    the overall means "mean_after" / "mean_rest" (None when empty) with their counts "n_after" / "n_rest",
    and, with target_ids of GPT-2 tokens, the same in bits per byte: "after_bpb", "rest_bpb",
    "mean_after_bpb", "mean_rest_bpb" (sum of loss / ln 2 / sum of bytes) and "bytes_after" / "bytes_rest" (N,).
    Sums over steps (mean x count, the bytes) give the split over a run: `running_split` of `add_split`s."""
    loss = np.asarray(per_token, dtype=np.float64)
    after = np.asarray(x) == eot
    out = masked_split(loss, after)
    if nbytes is None and target_ids is not None:
        nbytes = target_bytes(target_ids)
    if nbytes is not None:
        rest = ~after
        num_a, out["bytes_after"] = _by_position(loss, nbytes, after)
        num_r, out["bytes_rest"] = _by_position(loss, nbytes, rest)
        out["after_bpb"], out["rest_bpb"] = _bpb(num_a, out["bytes_after"]), _bpb(num_r, out["bytes_rest"])
        # the overall means: over the targets themselves (not the sums by position)
        b_after, b_rest = int(nbytes[after].sum()), int(nbytes[rest].sum())
        out["mean_after_bpb"] = float(loss[after].sum() / math.log(2) / b_after) if b_after else None
        out["mean_rest_bpb"] = float(loss[rest].sum() / math.log(2) / b_rest) if b_rest else None
    return out


def bpb_text(loss: float, target_id: int) -> str:
    """' · 9.364 bits per byte (1 byte)': a target's loss / ln 2 / its bytes, for a tooltip after the loss in
    nats; '' when the target stands for no bytes (<|endoftext|>) or is not a GPT-2 token."""
    bpb = token_bits_per_byte([loss], [target_id])
    if bpb is None or not np.isfinite(bpb[0]):
        return ""
    n = int(token_byte_lengths()[int(target_id)])
    return f" · {float(bpb[0]):.4f} bits per byte ({n} byte{'s' * (n != 1)})"


def add_split(acc: dict[str, Any] | None, split: dict[str, Any]) -> dict[str, Any]:
    """Fold one step's `position_split` into running sums over steps (a new dict; `acc` None starts one)."""
    def total(mean, count):
        return np.where(count > 0, np.nan_to_num(np.asarray(mean, np.float64)) * count, 0.0)
    step = {"loss_after": total(split["after"], split["count_after"]), "count_after": split["count_after"],
            "loss_rest": total(split["rest"], split["count_rest"]), "count_rest": split["count_rest"]}
    if "bytes_after" in split:
        step["bytes_after"], step["bytes_rest"] = split["bytes_after"], split["bytes_rest"]
    if acc is None or any(np.shape(acc[k]) != np.shape(v) for k, v in step.items() if k in acc) \
            or set(acc) - {"steps"} != set(step):
        return {**{k: np.asarray(v, np.float64).copy() for k, v in step.items()}, "steps": 1}
    return {**{k: acc[k] + v for k, v in step.items()}, "steps": acc["steps"] + 1}


def running_split(acc: dict[str, Any]) -> dict[str, Any]:
    """The split over the steps folded into `acc` (`add_split`), in the form `position_split` returns."""
    with np.errstate(invalid="ignore", divide="ignore"):
        def mean(s, n):
            return np.where(n > 0, s / np.maximum(n, 1), np.nan)
        out: dict[str, Any] = {"after": mean(acc["loss_after"], acc["count_after"]),
                               "rest": mean(acc["loss_rest"], acc["count_rest"]),
                               "count_after": acc["count_after"].astype(np.int64),
                               "count_rest": acc["count_rest"].astype(np.int64), "steps": acc["steps"]}
        na, nr = float(acc["count_after"].sum()), float(acc["count_rest"].sum())
        out["n_after"], out["n_rest"] = int(na), int(nr)
        out["mean_after"] = float(acc["loss_after"].sum() / na) if na else None
        out["mean_rest"] = float(acc["loss_rest"].sum() / nr) if nr else None
        if "bytes_after" in acc:
            ln2 = math.log(2)
            out["after_bpb"] = np.where(acc["bytes_after"] > 0, acc["loss_after"] / ln2 / np.maximum(acc["bytes_after"], 1), np.nan)
            out["rest_bpb"] = np.where(acc["bytes_rest"] > 0, acc["loss_rest"] / ln2 / np.maximum(acc["bytes_rest"], 1), np.nan)
            ba, br = float(acc["bytes_after"].sum()), float(acc["bytes_rest"].sum())
            out["mean_after_bpb"] = float(acc["loss_after"].sum() / ln2 / ba) if ba else None
            out["mean_rest_bpb"] = float(acc["loss_rest"].sum() / ln2 / br) if br else None
    return out


__all__ = ["StepDocuments", "step_documents", "split_by_boundary", "token_byte_lengths", "bits_per_byte",
           "target_bytes", "token_bits_per_byte", "position_bits_per_byte", "position_split", "add_split",
           "running_split", "bpb_text"]
