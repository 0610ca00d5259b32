"""gelu.py: the MLP's GELU op gives nn.GELU's numbers, and its GPU arithmetic is exact GELU.

On CPU the op runs torch's GELU; the Triton kernels are checked against float64 on the GPU
machine (benchmarks/profile_gpu.py --kernels). Their arithmetic (gelu_reference) is checked here.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from nanogpt_viz.config import ModelConfig
from nanogpt_viz.engine.kernels.gelu import gelu, gelu_reference
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


def test_op_matches_nn_gelu_values_and_gradients():
    x = torch.randn(64, 48, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y = gelu(x)
    ref = F.gelu(x2)
    g = torch.randn_like(ref)
    y.backward(g)
    ref.backward(g)
    torch.testing.assert_close(y, ref, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=0)
    assert torch.autograd.gradcheck(gelu, (torch.randn(6, 5, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("autocast", [False, True])
def test_model_with_the_gelu_op_trains_like_nn_gelu(autocast):
    def use_op(model):
        model.set_kernels(keep_gelu=True)
        assert all(b.mlp.keep_gelu for b in model.transformer.h)

    idx, targets = torch.randint(0, 128, (3, 16)), torch.randint(0, 128, (3, 16))
    (l1, _, g1, _), (l2, _, g2, _) = twin_runs(TINY, use_op, idx, targets, autocast)
    torch.testing.assert_close(l2, l1, rtol=0, atol=0)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=0, atol=0, msg=lambda m, n=name: f"{n}: {m}")
