"""fused_loss.py's Triton row kernel against the torch reference (CUDA only; skipped elsewhere).

The row kernel must give, on bf16 logits, the per-row float32 loss of
_rows_torch to 1e-4 absolute (float32 sums in another order over 50k columns: the losses are ~10, so that is
1e-5 relative) and the gradient softmax - one_hot rounded to bf16 to within one bf16 rounding of the reference
(atol 1e-6 for the tiny probabilities, rtol 2^-7): checked on a matrix whose row stride exceeds V, so that a
write past column V-1 would show in the padding, and with ignored (-1) targets, whose rows must be exactly 0.
"""
import pytest
import torch

from nanogpt_viz.engine.kernels import fused_loss

pytestmark = pytest.mark.skipif(not fused_loss.available("cuda"), reason="the Triton kernels need CUDA")


@pytest.mark.parametrize("V", [50304, 50257, 1000, 7])
def test_row_kernel_matches_the_torch_reference(V):
    g = torch.Generator(device="cuda").manual_seed(V)
    M, pad = 777, 64
    wide = (3 * torch.randn(M, V + pad, device="cuda", generator=g)).to(torch.bfloat16)
    logits = wide[:, :V]  # row stride V + pad
    targets = torch.randint(0, V, (M,), device="cuda", generator=g)
    targets[::5] = -1
    ref_loss, ref_grad = fused_loss._rows_torch(logits.clone(), targets)
    padding = wide[:, V:].clone()
    loss = torch.full((M,), float("nan"), device="cuda")  # poisoned: every row must be written
    fused_loss._launch_rows(logits, targets, loss)
    torch.cuda.synchronize()
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-4)
    torch.testing.assert_close(logits.float(), ref_grad.float(), rtol=2 ** -7, atol=1e-6)
    assert torch.equal(wide[:, V:], padding)  # nothing written past the row's V columns
    assert torch.all(loss[::5] == 0) and torch.all(logits[::5] == 0)


def test_the_op_on_cuda_gives_cross_entropy_and_its_gradients(monkeypatch):
    """linear_cross_entropy on CUDA: float32 inputs against F.cross_entropy in float64 (losses and both
    gradients to 1e-5 relative: tf32 is off here)."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(300, 64, device="cuda", generator=g)
    w = torch.randn(5000, 64, device="cuda", generator=g) / 8
    t = torch.randint(0, 5000, (300,), device="cuda", generator=g)
    t[::7] = -1
    rw = torch.rand(300, device="cuda", generator=g)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    (fused_loss.linear_cross_entropy(xa, wa, t) * rw).sum().backward()
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    ref = torch.nn.functional.cross_entropy(xr @ wr.t(), t, ignore_index=-1, reduction="none")
    (ref * rw.double()).sum().backward()
    got = fused_loss.linear_cross_entropy(x, w, t)
    torch.testing.assert_close(got.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad.double(), xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(wa.grad.double(), wr.grad, rtol=1e-5, atol=1e-5)
