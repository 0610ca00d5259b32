"""Top-k at any token: what the model predicts after a given position, and how it scores the real target.

For position p of a token stream, the model reads the context t[c : p+1] (c = the row's start in
training; by default the longest context the model allows, p - block_size + 1) and predicts t[p+1].
One forward pass over that context gives the distribution at its last position: the k most likely
next tokens with their probabilities, and the actual target's rank, probability and loss (the
per-token cross-entropy training averaged, in nats). Pure torch, no Qt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class TopK:
    position: int  # p: the last input; the target is t[p+1]
    context_start: int  # c
    ids: np.ndarray  # (k,) the k most likely next tokens, most likely first
    probs: np.ndarray  # (k,) their probabilities
    target: int  # t[p+1]
    target_rank: int  # 1 = the model's first choice
    target_prob: float
    target_loss: float  # -ln(target_prob), the cross-entropy at this position

    def to_dict(self, decode=None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "position": self.position, "context_start": self.context_start, "target": self.target,
            "target_rank": self.target_rank, "target_prob": self.target_prob, "target_loss": self.target_loss,
            "top": [{"id": int(i), "prob": float(p)} for i, p in zip(self.ids, self.probs)],
        }
        if decode is not None:
            out["target_text"] = decode([self.target])
            for row in out["top"]:
                row["text"] = decode([row["id"]])
        return out


@torch.no_grad()
def top_k_at(model: Any, tokens: Any, position: int, k: int = 10, context_start: int | None = None) -> TopK:
    """The model's top-k next tokens after `position` of `tokens`, and the rank/prob/loss of the real one."""
    n = len(tokens)
    p = int(position)
    if not 0 <= p < n - 1:
        raise ValueError(f"position {p:,} has no next token: it must be in 0..{n - 2:,} (the corpus has {n:,} tokens)")
    N = int(model.config.block_size)
    c = max(0, p - N + 1) if context_start is None else int(context_start)
    if not (0 <= c <= p and p - c + 1 <= N):
        raise ValueError(f"the context t[{c:,}..{p:,}] must start at or before the position and hold at most "
                         f"the model's block size {N:,} tokens")
    ctx = np.asarray(tokens[c:p + 2], dtype=np.int64)  # the context and the target
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(ctx[None, :-1]).to(device)
        logits = model(x).logits  # (1, 1, V): the last position only
    finally:
        model.train(was_training)
    logp = torch.log_softmax(logits[0, -1].float(), dim=-1)  # (V,)
    V = logp.numel()
    target = int(ctx[-1])
    if not 0 <= target < V:
        raise ValueError(f"the target token id {target} at t[{p + 1:,}] is outside the model's vocabulary ({V:,})")
    top = torch.topk(logp, min(int(k), V))
    t_logp = float(logp[target])
    rank = int((logp > logp[target]).sum().item()) + 1
    return TopK(position=p, context_start=c, ids=top.indices.cpu().numpy(), probs=top.values.exp().cpu().numpy(),
                target=target, target_rank=rank, target_prob=float(np.exp(t_logp)), target_loss=-t_logp)


__all__ = ["TopK", "top_k_at"]
