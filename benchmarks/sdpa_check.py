"""Which SDPA backend runs GPT-2's causal attention, and how far each is from a float64 reference.

GPU:  python benchmarks/sdpa_check.py
    1. The attention op alone (B=4, nh=12, T=1024, hs=64, bf16, causal): output and dq/dk/dv of each backend
       that runs (cuDNN, flash, memory-efficient) against float64 math, max |diff| / max |ref|.
    2. GPT-2 124M eager under bf16 autocast, the same weights and 3 batches (B=8, N=1024): loss and the
       relative L2 difference of every gradient, each backend against the default choice.
    3. The kernel names the profiler sees for the default choice (compiled model, one step).
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nanogpt_viz.config import MODEL_PRESETS  # noqa: E402
from nanogpt_viz.engine.model import GPT  # noqa: E402

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def op_check() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    B, nh, T, hs = 4, 12, 1024, 64
    for trial in range(3):
        # q and k scaled like a trained model's (scores of a few units), v unit-ish
        q, k, v = (torch.randn(B, T, nh, hs, device="cuda", generator=g).transpose(1, 2) * s
                   for s in (1.5, 1.5, 1.0))
        do = torch.randn(B, nh, T, hs, device="cuda", generator=g)
        ref_in = [t.double().requires_grad_() for t in (q, k, v)]
        ref = F.scaled_dot_product_attention(*ref_in, is_causal=True)
        ref.backward(do.double())
        refs = [ref.detach()] + [t.grad for t in ref_in]
        line = []
        for name, be in BACKENDS.items():
            xs = [t.bfloat16().requires_grad_() for t in (q, k, v)]
            try:
                with sdpa_kernel([be]):
                    y = F.scaled_dot_product_attention(*xs, is_causal=True)
                    y.backward(do.bfloat16())
            except RuntimeError as e:
                line.append(f"{name}: does not run ({str(e).splitlines()[0][:80]})")
                continue
            errs = [((a.double() - r).abs().max() / r.abs().max()).item()
                    for a, r in zip([y.detach()] + [t.grad for t in xs], refs)]
            line.append(f"{name}: out {errs[0]:.2e} dq {errs[1]:.2e} dk {errs[2]:.2e} dv {errs[3]:.2e}")
        print(f"op trial {trial}: " + " | ".join(line), flush=True)


def model_check() -> None:
    torch.manual_seed(0)
    mc = MODEL_PRESETS["gpt2"].with_(dropout=0.0)
    model = GPT(mc).cuda()
    g = torch.Generator(device="cuda").manual_seed(1)
    for b in range(3):
        x = torch.randint(0, mc.vocab_size, (8, 1024), device="cuda", generator=g)
        y = torch.randint(0, mc.vocab_size, (8, 1024), device="cuda", generator=g)
        got = {}
        for name in ("default", *BACKENDS):
            model.zero_grad(set_to_none=True)
            ctx = sdpa_kernel(list(BACKENDS.values())) if name == "default" else sdpa_kernel([BACKENDS[name]])
            try:
                with ctx, torch.autocast("cuda", dtype=torch.bfloat16):
                    _, loss, _ = model(x, y, return_logits=False)
                loss.backward()
            except RuntimeError as e:
                print(f"batch {b} {name}: does not run ({str(e).splitlines()[0][:80]})")
                continue
            got[name] = (loss.item(), {n: p.grad.detach().float().clone() for n, p in model.named_parameters()})
        base_loss, base_g = got["default"]
        for name, (loss, grads) in got.items():
            rel = max(((grads[n] - base_g[n]).norm() / base_g[n].norm().clamp_min(1e-30)).item() for n in grads)
            print(f"batch {b} {name:9s} loss {loss:.6f} (diff {loss - base_loss:+.2e}); "
                  f"max over params of |g - g_default| / |g_default| = {rel:.2e}", flush=True)


def default_kernels() -> None:
    from torch.profiler import ProfilerActivity, profile

    q, k, v = (torch.randn(64, 12, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
        torch.cuda.synchronize()
    names = sorted({e.name[:100] for e in prof.events() if e.device_type.name == "CUDA" and "sdpa" in e.name.lower()
                    or "flash" in e.name.lower() or "fmha" in e.name.lower()})
    print("default choice runs:", *names, sep="\n  ")


if __name__ == "__main__":
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}",
          flush=True)
    default_kernels()
    op_check()
    model_check()
