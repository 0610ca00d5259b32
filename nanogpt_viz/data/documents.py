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


@functools.lru_cache(maxsize=1)
def token_byte_lengths() -> np.ndarray:
    """Bytes each GPT-2 token stands for, (50257,) int64; <|endoftext|> counts as 0 bytes of text."""
    from nanogpt_viz.data.tokenizer import token_bytes

    out = np.array([len(token_bytes(i)) for i in range(VOCAB_SIZE)], dtype=np.int64)
    out[EOT] = 0
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


__all__ = ["StepDocuments", "step_documents", "split_by_boundary", "token_byte_lengths", "bits_per_byte"]
