"""The output layer and the per-token cross-entropy as one operation (training only).

GPT-2's last matmul makes a (M, V) logits matrix (M = B*T rows, V = 50304 columns); at B=64,
N=1024 that is 6.6 GB in bf16, several times larger than any other activation. Computed the
plain way, the cross-entropy reads it once in the forward pass (log-sum-exp), then once more in
the backward pass to write a second (M, V) matrix, the logits' gradient.

`linear_cross_entropy` makes one pass instead. Right after the matmul, one kernel per row
computes the log-sum-exp and the row's loss and overwrites the logits, in place, with
softmax - one_hot: the gradient of each row's loss with respect to its logits. Backward then only
needs the per-row factors that arrive from above (1 / (B*N*K) in training), and they are applied
to the small (M, C) operands of the two backward matmuls instead of to the (M, V) matrix:

    dX = diag(g) (G W)          dW = G^T (diag(g) X)

so the large matrix is written once and read by the matmuls only. The loss of each row is the
float32 cross-entropy of the row's logits (the same numbers `F.cross_entropy` gives on logits cast
to float32), 0 where the target is -1 (ignored).

On CUDA with Triton the row kernel is a Triton kernel; elsewhere the same function is computed
with torch operations (slower, same results), which is what the CPU tests exercise.
"""
from __future__ import annotations

import torch

from nanogpt_viz.engine.kernels import triton

if triton is not None:
    import triton.language as tl

ROW_BLOCK = 2048  # columns a program handles per loop iteration (fastest of 2048..8192 on an H200)
ROW_WARPS = 8
# Tried on an H200 (benchmarks/results/h200_row_kernels.log) and removed: a one-pass kernel holding the whole
# row in registers (one read; 6.5 ms at B*N=65536, it spills and serialises each SM's load and store phases)
# and this two-pass kernel on a persistent grid of 2 programs per SM, so that the second read hits L2 (6.2 ms),
# against 4.8 ms for the kernel below.


def available(device: torch.device | str) -> bool:
    """Whether the fused kernel runs on `device`: CUDA with Triton, on a GPU Triton supports (sm70+)."""
    dev = torch.device(device)
    if triton is None or dev.type != "cuda" or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(dev)[0] >= 7


if triton is not None:
    @triton.jit
    def _row_kernel(logits_ptr, targets_ptr, loss_ptr, V, stride, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        ptr = logits_ptr + row * stride
        tgt = tl.load(targets_ptr + row)
        offs = tl.arange(0, BLOCK)
        # online log-sum-exp, one running (max, sum) per lane; the start value is finite so that
        # masked lanes (-inf) give exp(-inf) = 0 and never inf - inf
        m = tl.full([BLOCK], -1.0e30, tl.float32)
        s = tl.zeros([BLOCK], tl.float32)
        for start in range(0, V, BLOCK):
            cols = start + offs
            z = tl.load(ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, z)
            s = s * tl.exp(m - m_new) + tl.exp(z - m_new)
            m = m_new
        mx = tl.max(m, 0)
        lse = mx + tl.log(tl.sum(s * tl.exp(m - mx), 0))
        valid = tgt >= 0
        z_t = tl.load(ptr + tl.where(valid, tgt, 0)).to(tl.float32)  # read before it is overwritten
        tl.store(loss_ptr + row, tl.where(valid, lse - z_t, 0.0))
        # second pass (the row is still in L2): the gradient, in place
        for start in range(0, V, BLOCK):
            cols = start + offs
            mask = cols < V
            z = tl.load(ptr + cols, mask=mask, other=0.0).to(tl.float32)
            p = tl.exp(z - lse)
            p = tl.where(cols == tgt, p - 1.0, p)
            p = tl.where(valid, p, 0.0)
            tl.store(ptr + cols, p.to(logits_ptr.dtype.element_ty), mask=mask)


def _launch_rows(logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
    """The row kernel over a CUDA (M, V) logits matrix (any row stride), in place; loss (M,) float32."""
    M, V = logits.shape
    if M:
        _row_kernel[(M,)](logits, targets, loss, V, logits.stride(0), BLOCK=ROW_BLOCK, num_warps=ROW_WARPS)


def _rows_torch(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for the row kernel: (loss (M,) float32, softmax - one_hot in logits' dtype)."""
    lf = logits.float()
    lse = torch.logsumexp(lf, dim=-1)  # (M,)
    valid = targets >= 0
    safe = targets.clamp_min(0).unsqueeze(1)  # (M, 1)
    loss = torch.where(valid, lse - lf.gather(1, safe).squeeze(1), torch.zeros_like(lse))
    grad = torch.exp(lf - lse.unsqueeze(1))
    grad.scatter_add_(1, safe, torch.full_like(lse, -1.0).unsqueeze(1))
    grad.mul_(valid.unsqueeze(1))
    return loss, grad.to(logits.dtype)


@torch.library.custom_op("nanogpt_viz::linear_cross_entropy", mutates_args=())
def _linear_ce(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _rows_torch(x @ weight.t(), targets)


if triton is not None:  # without Triton, CUDA tensors take the torch path above
    @_linear_ce.register_kernel("cuda")
    def _linear_ce_cuda(x, weight, targets):
        logits = x @ weight.t()  # (M, V), overwritten below with the gradient
        M, V = logits.shape
        loss = torch.empty(M, dtype=torch.float32, device=x.device)
        _launch_rows(logits, targets, loss)
        return loss, logits


@_linear_ce.register_fake
def _linear_ce_fake(x, weight, targets):
    M, V = x.shape[0], weight.shape[0]
    return x.new_empty(M, dtype=torch.float32), x.new_empty(M, V)


def _setup_context(ctx, inputs, output):
    x, weight, _ = inputs
    _, grad_rows = output
    ctx.mark_non_differentiable(grad_rows)
    ctx.save_for_backward(x, weight, grad_rows)


def _backward(ctx, d_loss, _d_grad_rows):
    x, weight, grad_rows = ctx.saved_tensors
    g = d_loss.unsqueeze(1)  # (M, 1) float32
    dx = ((grad_rows @ weight) * g).to(x.dtype)  # (M, C)
    dw = grad_rows.t() @ (x * g).to(x.dtype)  # (V, C)
    return dx, dw, None


_linear_ce.register_autograd(_backward, setup_context=_setup_context)


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy of x @ weight.T against targets, float32 (M,); -1 targets give 0.

    x (M, C) and weight (V, C) in the compute dtype (cast them first under autocast); targets (M,)
    int64. Differentiable in x and weight.
    """
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1] or targets.shape != x.shape[:1]:
        raise ValueError(f"linear_cross_entropy wants x (M, C), weight (V, C), targets (M,); got "
                         f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(targets.shape)}")
    return _linear_ce(x, weight, targets)[0]


__all__ = ["available", "linear_cross_entropy"]
