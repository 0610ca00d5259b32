"""Shared by the tests that compare a model computing one way with a copy computing another."""
import torch

from nanogpt_viz.model import GPT


def twin_runs(config, change, idx, targets, autocast: bool, **forward_kw):
    """One forward + backward of a GPT and of an identical copy after change(copy).

    Returns [(loss, per_token, {name: grad}, logits), ...] for the original, then the copy; bf16 autocast
    on the CPU when autocast is true.
    """
    torch.manual_seed(0)
    first = GPT(config)
    second = GPT(config)
    second.load_state_dict(first.state_dict())
    change(second)
    out = []
    for m in (first, second):
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
        with ctx:
            logits, loss, per_token = m(idx, targets, **forward_kw)
        loss.backward()
        out.append((loss.detach(), per_token.detach(), {n: p.grad for n, p in m.named_parameters()}, logits))
    return out
