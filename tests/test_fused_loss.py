"""The fused output layer + cross-entropy gives the plain path's losses and gradients.

On CPU the row step runs as torch operations; the Triton kernel is checked against the same
reference on the GPU machine (benchmarks/profile_gpu.py --check).
"""
import pytest
import torch
import torch.nn.functional as F

from nanogpt_viz.config import ModelConfig
from nanogpt_viz.engine.kernels.fused_loss import linear_cross_entropy
from helpers import twin_runs

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, dropout=0.0, bias=True)


def _reference(x, w, t):
    return F.cross_entropy((x @ w.t()).float(), t, ignore_index=-1, reduction="none")


def test_rows_and_gradients_match_cross_entropy_with_any_upstream_weights():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 24, generator=g, dtype=torch.float64)
    w = torch.randn(50, 24, generator=g, dtype=torch.float64)
    t = torch.randint(0, 50, (40,), generator=g)
    t[::7] = -1  # ignored rows: loss 0, no gradient
    row_w = torch.rand(40, generator=g, dtype=torch.float64)  # a different factor on every row
    grads = []
    for fn in (linear_cross_entropy, _reference):
        xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
        per_row = fn(xa, wa, t)
        (per_row * row_w).sum().backward()
        grads.append((per_row.detach(), xa.grad, wa.grad))
    (l1, dx1, dw1), (l2, dx2, dw2) = grads
    assert l1.dtype == torch.float32
    assert torch.all(l1[::7] == 0)
    torch.testing.assert_close(l1.double(), l2.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dx1, dx2, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dw1, dw2, rtol=1e-6, atol=1e-6)
    assert torch.all(dx1[::7] == 0)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="x \\(M, C\\)"):
        linear_cross_entropy(torch.zeros(4, 8), torch.zeros(10, 9), torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("autocast", [False, True])
def test_model_with_fused_loss_trains_like_the_plain_path(autocast):
    idx = torch.randint(0, 128, (3, 16))
    targets = torch.randint(0, 128, (3, 16))
    targets[0, :4] = -1
    out = twin_runs(TINY, {"fused_loss": True}, idx, targets, autocast, return_logits=False)
    (l1, pt1, g1, _), (l2, pt2, g2, logits) = out
    assert logits is None and pt2.dtype == torch.float32 and pt2.shape == (3, 16)
    tol = dict(rtol=2e-2, atol=2e-3) if autocast else dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l2, l1, **tol)
    torch.testing.assert_close(pt2, pt1, **tol)
    assert torch.all(pt2[0, :4] == 0)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], **tol, msg=lambda m, n=name: f"{n}: {m}")
