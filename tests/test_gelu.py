"""gelu.py: the MLP's GELU op gives nn.GELU's numbers, and its GPU arithmetic is exact GELU.

On CPU the op runs torch's GELU; on CUDA its Triton kernels. Both are checked here against a float64
evaluation of the formula (the CUDA case is skipped without a GPU), and the kernels' arithmetic
(gelu_reference) on the CPU.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nanogpt_viz.config import ModelConfig
from nanogpt_viz.engine.kernels.gelu import gelu, gelu_reference
from nanogpt_viz.engine.model import GPT
from helpers import twin_runs

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=128, dropout=0.0, bias=False)


def test_kernel_arithmetic_is_exact_gelu_to_float32_precision():
    x = torch.linspace(-10, 10, 400_001, dtype=torch.float64)
    y, d = gelu_reference(x.float())
    exact = x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    exact_d = 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    assert (y.double() - exact).abs().max().item() < 1e-6
    assert (d.double() - exact_d).abs().max().item() < 1e-6
    # rounded to bf16, as training stores it, it is within one bf16 rounding of the exact value (the
    # error bound above is absolute: relative precision holds down to values of about 1e-5)
    xb = (3 * torch.randn(200_000, generator=torch.Generator().manual_seed(0))).bfloat16().double()
    ours = gelu_reference(xb.float())[0].bfloat16().double()
    exact = xb * 0.5 * torch.special.erfc(-xb / math.sqrt(2))  # no cancellation in the tail
    big = exact.abs() > 1e-5
    assert ((ours - exact).abs()[big] <= exact.abs()[big] * 2.0 ** -8).all()


def _exact_gelu(x: torch.Tensor) -> torch.Tensor:
    """x Phi(x) in float64 from the formula (erfc: no cancellation in the negative tail), not F.gelu."""
    return x * 0.5 * torch.special.erfc(-x / math.sqrt(2))


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="the Triton kernels need CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_op_is_exact_gelu_values_and_gradients(device):
    """The op's forward against a float64 evaluation of x Phi(x), its backward against autograd of that
    formula. CPU: torch's GELU in float64 (tolerance 1e-12); CUDA: gelu.py's Triton kernels on float32
    inputs (their stated error is 4.3e-7 forward, 2.8e-7 backward: tolerance 1e-6 absolute)."""
    gen = torch.Generator().manual_seed(7)
    x64 = torch.cat([4 * torch.randn(20_000, generator=gen, dtype=torch.float64),
                     torch.linspace(-12, 12, 2001, dtype=torch.float64)])
    dtype, tol = (torch.float64, 1e-12) if device == "cpu" else (torch.float32, 1e-6)
    x = x64.to(device, dtype).requires_grad_(True)
    g64 = torch.randn(x64.shape, generator=gen, dtype=torch.float64)
    y = gelu(x)
    y.backward(g64.to(device, dtype))
    xr = x.detach().double().cpu().requires_grad_(True)  # the values the op saw
    exact = _exact_gelu(xr)
    exact.backward(g64)
    assert y.dtype == dtype and x.grad.dtype == dtype
    assert (y.detach().double().cpu() - exact.detach()).abs().max().item() < tol
    assert (x.grad.double().cpu() - xr.grad).abs().max().item() < tol
    if device == "cpu":
        assert torch.autograd.gradcheck(gelu, (torch.randn(6, 5, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("autocast", [False, True])
def test_model_with_the_gelu_op_trains_like_nn_gelu(autocast):
    assert all(b.mlp.keep_gelu for b in GPT(TINY, gelu="kept").transformer.h)
    assert not any(b.mlp.keep_gelu for b in GPT(TINY).transformer.h)
    idx, targets = torch.randint(0, 128, (3, 16)), torch.randint(0, 128, (3, 16))
    (l1, _, g1, _), (l2, _, g2, _) = twin_runs(TINY, {"gelu": "kept"}, idx, targets, autocast)
    torch.testing.assert_close(l2, l1, rtol=0, atol=0)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
