"""The MLP's GELU as an operation of its own (training speed on CUDA; the same function everywhere).

GELU here is the exact one nanoGPT uses, x * Phi(x) with Phi the normal CDF (nn.GELU(), erf form).
Two things make it worth an op of its own:

1. torch.compile's partitioner saves only GELU's input and recomputes the output in the backward
   pass (c_proj's weight gradient needs it): one more (B, T, 4C) write per layer. An opaque op's
   output cannot be recomputed, so it is kept; it is in memory anyway, as c_proj's input.
2. On a GPU the erf of the stock kernels is enough arithmetic per element that GELU runs at about
   60% of the memory bandwidth (both directions). The Triton kernels below compute Phi with the
   Abramowitz-Stegun 7.1.26 form of erfc, one exp and one reciprocal per element, and the backward
   reuses that exp for the density:

       q = erfc(|z|) ~= t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2),  t = 1 / (1 + p |z|),  z = x / sqrt 2
       2 Phi(x) = 2 - q (x >= 0),  q (x < 0)          phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
       gelu(x) = x Phi(x)                              gelu'(x) = Phi(x) + x phi(x)

   Max absolute error against float64 GELU: 4.3e-7 forward, 2.8e-7 backward (float32 torch's
   own GELU: 1.2e-6; it rounds the far negative tail to 0). Far below bf16's resolution.

Elsewhere (CPU, MPS, CUDA without Triton) the op runs torch's own GELU and its backward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nanogpt_viz.engine.kernels import triton

if triton is not None:
    import triton.language as tl

GELU_BLOCK = 2048  # elements per program
GELU_WARPS = 8

# Abramowitz & Stegun 7.1.26
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_LOG2E = 1.4426950408889634
_INV_SQRT2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


def gelu_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernels' arithmetic in torch (float32): (gelu(x), gelu'(x)). For tests and checks."""
    x = x.float()
    z = x * _INV_SQRT2
    t = 1.0 / (1.0 + _P * z.abs())
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    e = torch.exp2(-(z * z) * _LOG2E)  # exp(-x^2 / 2)
    q = poly * e  # erfc(|z|)
    cdf2 = torch.where(z >= 0, 2.0 - q, q)  # 2 Phi(x)
    return 0.5 * x * cdf2, 0.5 * cdf2 + x * e * _INV_SQRT_2PI


if triton is not None:
    @triton.jit
    def _cdf2_and_exp(x):
        """(2 Phi(x), exp(-x^2 / 2)) in float32: gelu_reference's arithmetic (its constants, spelled
        out because a jitted function reads no Python globals)."""
        z = x * 0.7071067811865476
        t = 1.0 / (1.0 + 0.3275911 * tl.abs(z))
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        e = tl.exp2(-(z * z) * 1.4426950408889634)
        q = poly * e
        return tl.where(z >= 0, 2.0 - q, q), e

    @triton.jit
    def _gelu_fwd_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        cdf2, _ = _cdf2_and_exp(x)
        tl.store(y_ptr + offs, (0.5 * x * cdf2).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gelu_bwd_kernel(g_ptr, x_ptr, dx_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        cdf2, e = _cdf2_and_exp(x)
        d = 0.5 * cdf2 + x * e * 0.3989422804014327
        tl.store(dx_ptr + offs, (g * d).to(dx_ptr.dtype.element_ty), mask=mask)


@torch.library.custom_op("nanogpt_viz::gelu", mutates_args=())
def _gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


@torch.library.custom_op("nanogpt_viz::gelu_backward", mutates_args=())
def _gelu_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.gelu_backward(grad, x)


def _launch(kernel, out: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    n = out.numel()
    if n:
        kernel[(triton.cdiv(n, GELU_BLOCK),)](*inputs, out, n, BLOCK=GELU_BLOCK, num_warps=GELU_WARPS)
    return out


if triton is not None:  # without Triton, CUDA tensors take torch's kernels above
    @_gelu.register_kernel("cuda")
    def _gelu_cuda(x):
        x = x.contiguous()
        return _launch(_gelu_fwd_kernel, torch.empty_like(x), x)

    @_gelu_backward.register_kernel("cuda")
    def _gelu_backward_cuda(grad, x):
        x = x.contiguous()
        return _launch(_gelu_bwd_kernel, torch.empty_like(x), grad.contiguous(), x)


@_gelu.register_fake
def _gelu_fake(x):
    return torch.empty_like(x)


@_gelu_backward.register_fake
def _gelu_backward_fake(grad, x):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return _gelu_backward(grad, x)


_gelu.register_autograd(_backward, setup_context=_setup_context)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU (as nn.GELU()), differentiable; its output is kept for backward under torch.compile."""
    return _gelu(x)


__all__ = ["gelu", "gelu_reference"]
