"""Where a GPT-2 124M training step spends its GPU time (the H200 machine).

    python benchmarks/profile_gpu.py [--batch-size 64] [--variants a,b]

1. The bf16 GEMMs of one step, alone, at the shapes the model runs them (TFLOP/s each): the
   ceiling the step could reach if nothing else took time.
2. Causal attention forward + backward under each SDPA backend.
3. A torch.profiler trace of compiled training steps (the engine itself), kernels grouped into
   GEMM / attention / fused pointwise and reductions / optimizer / copies, with the GPU-busy
   fraction of the wall time.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig  # noqa: E402
from nanogpt_viz.engine.runtime import tune_allocator  # noqa: E402
from nanogpt_viz.engine.trainer import RunEnd, StepReport, Trainer  # noqa: E402

tune_allocator()


def bench(fn, iters=20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / iters / 1000.0


def gemms(bt: int) -> None:
    C, V = 768, 50304
    total_t = total_f = 0.0
    print(f"-- bf16 GEMMs of one layer at B*T={bt} (x12 layers) and the lm_head")
    shapes = [("c_attn", C, 3 * C, 12), ("attn.c_proj", C, C, 12), ("c_fc", C, 4 * C, 12),
              ("mlp.c_proj", 4 * C, C, 12), ("lm_head", C, V, 1)]
    for name, k, n, reps in shapes:
        x = torch.randn(bt, k, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        g = torch.randn(bt, n, device="cuda", dtype=torch.bfloat16)
        row = []
        for label, fn in (("fwd", lambda: x @ w.t()), ("dX", lambda: g @ w), ("dW", lambda: g.t() @ x)):
            t = bench(fn)
            f = 2.0 * bt * k * n
            row.append(f"{label} {f / t / 1e12:6.0f}")
            total_t += t * reps
            total_f += f * reps
        print(f"  {name:12s} {k:5d}->{n:5d}: " + "  ".join(row) + " TFLOP/s")
        del x, w, g
    print(f"  all GEMMs of a step: {total_t * 1e3:.1f} ms, {total_f / total_t / 1e12:.0f} TFLOP/s")


def attention(b: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    H, T, D = 12, 1024, 64
    print(f"-- causal SDPA fwd+bwd, (B={b}, H={H}, T={T}, D={D}) bf16, x12 layers")
    q, k, v = (torch.randn(b, H, T, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    go = torch.randn(b, H, T, D, device="cuda", dtype=torch.bfloat16)
    flops = 4 * b * H * T * T * D / 2 * 3.5  # causal: half the scores; bwd = 2.5x fwd
    for be in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        try:
            with sdpa_kernel([be]):
                def step():
                    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    y.backward(go)
                t = bench(step)
            print(f"  {be.name:22s} {t * 1e3:6.2f} ms/layer  {flops / t / 1e12:5.0f} TFLOP/s  "
                  f"x12 = {12 * t * 1e3:5.1f} ms")
        except Exception as e:  # noqa: BLE001 - report and go on
            print(f"  {be.name:22s} unavailable: {str(e).splitlines()[0][:100]}")


def check_fused(bt: int) -> None:
    """The Triton row kernel against the torch reference, then its speed at a few launch shapes."""
    from nanogpt_viz.engine.kernels import fused_loss
    from nanogpt_viz.engine.model import GPT

    V = 50304
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (3 * torch.randn(4096, V, device="cuda", generator=g)).to(torch.bfloat16)
    t = torch.randint(0, V, (4096,), device="cuda", generator=g)
    t[::5] = -1
    ref_loss, ref_grad = fused_loss._rows_torch(logits, t)
    buf = logits.clone()
    loss = torch.empty(4096, device="cuda")
    fused_loss._row_kernel[(4096,)](buf, t, loss, V, buf.stride(0), BLOCK=fused_loss.ROW_BLOCK,
                                    num_warps=fused_loss.ROW_WARPS)
    print(f"-- fused loss: row kernel vs torch: loss max |diff| {(loss - ref_loss).abs().max().item():.2e}, "
          f"gradient max |diff| {(buf.float() - ref_grad.float()).abs().max().item():.2e}")
    # whole model, bf16 autocast: fused vs plain loss and gradients
    torch.manual_seed(0)
    from nanogpt_viz.config import MODEL_PRESETS
    grads = []
    idx = torch.randint(0, 50257, (8, 1024), device="cuda")
    for fused in (False, True):
        torch.manual_seed(0)
        m = GPT(MODEL_PRESETS["gpt2"].with_(dropout=0.0), fused_loss=fused).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            _, loss, per_token = m(idx[:, :-1], idx[:, 1:], return_logits=False)
        loss.backward()
        grads.append((loss.item(), per_token.detach(), torch.cat([p.grad.flatten() for p in m.parameters()])))
    (l0, p0, g0), (l1, p1, g1) = grads
    rel = ((g1 - g0).norm() / g0.norm()).item()
    print(f"   gpt2 bf16: loss {l0:.5f} plain vs {l1:.5f} fused; per-token max |diff| "
          f"{(p1 - p0).abs().max().item():.2e}; gradient relative difference {rel:.2e}")
    del grads, g0, g1
    big = torch.randn(bt, V, device="cuda", dtype=torch.bfloat16)
    tt = torch.randint(0, V, (bt,), device="cuda")
    lb = torch.empty(bt, device="cuda")
    for block, warps in ((2048, 8), (4096, 8), (4096, 16), (8192, 16), (8192, 32)):
        sec = bench(lambda: fused_loss._row_kernel[(bt,)](big, tt, lb, V, V, BLOCK=block, num_warps=warps),
                    iters=5)
        print(f"   row kernel ({bt}, {V}) BLOCK={block} warps={warps}: {sec * 1e3:.2f} ms, "
              f"{2 * big.numel() * 2 / sec / 1e12:.2f} TB/s (one read + one write)")


def check_kernels(bt: int) -> None:
    """gelu.py's Triton kernels and the row-kernel variants: correctness, then speed side by side."""
    import math

    from nanogpt_viz.engine.kernels import fused_loss, gelu

    n4 = bt * 4 * 768
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (2 * torch.randn(n4, device="cuda", generator=g)).to(torch.bfloat16)
    dy = torch.randn(n4, device="cuda", generator=g).to(torch.bfloat16)
    xd = x[:4_000_000].double()
    ref = xd * 0.5 * (1 + torch.erf(xd / math.sqrt(2)))
    ref_d = 0.5 * (1 + torch.erf(xd / math.sqrt(2))) + xd * torch.exp(-xd * xd / 2) / math.sqrt(2 * math.pi)
    y = gelu._gelu_cuda(x)
    d = gelu._gelu_backward_cuda(torch.ones_like(x), x)
    yf = torch.empty_like(x, dtype=torch.float32)
    gelu._gelu_fwd_kernel[(triton_cdiv(n4, 2048),)](x, yf, n4, BLOCK=2048, num_warps=8)
    df = torch.empty_like(x, dtype=torch.float32)
    gelu._gelu_bwd_kernel[(triton_cdiv(n4, 2048),)](torch.ones_like(x), x, df, n4, BLOCK=2048, num_warps=8)
    print(f"-- GELU kernels, {n4:,} bf16 elements: float32 output vs float64 exact: fwd max |diff| "
          f"{(yf[:4_000_000].double() - ref).abs().max().item():.2e}, bwd {(df[:4_000_000].double() - ref_d).abs().max().item():.2e}; "
          f"bf16 output vs torch's: fwd max |diff| {(y.float() - F.gelu(x).float()).abs().max().item():.2e}, "
          f"bwd {(d.float() - torch.ops.aten.gelu_backward(torch.ones_like(x), x).float()).abs().max().item():.2e}")
    nbytes = 2 * n4 * 2
    t_copy = bench(lambda: x.clone(), iters=10)
    print(f"   copy (read + write) {t_copy * 1e3:.3f} ms = {nbytes / t_copy / 1e12:.2f} TB/s")
    t = bench(lambda: F.gelu(x), iters=10)
    print(f"   torch gelu fwd {t * 1e3:.3f} ms = {nbytes / t / 1e12:.2f} TB/s")
    t = bench(lambda: torch.ops.aten.gelu_backward(dy, x), iters=10)
    print(f"   torch gelu bwd {t * 1e3:.3f} ms = {1.5 * nbytes / t / 1e12:.2f} TB/s")
    out = torch.empty_like(x)
    for block, warps in ((1024, 4), (2048, 4), (2048, 8), (4096, 8), (8192, 8), (8192, 16)):
        grid = (triton_cdiv(n4, block),)
        tf = bench(lambda: gelu._gelu_fwd_kernel[grid](x, out, n4, BLOCK=block, num_warps=warps), iters=10)
        tb = bench(lambda: gelu._gelu_bwd_kernel[grid](dy, x, out, n4, BLOCK=block, num_warps=warps), iters=10)
        print(f"   triton BLOCK={block} warps={warps}: fwd {tf * 1e3:.3f} ms {nbytes / tf / 1e12:.2f} TB/s, "
              f"bwd {tb * 1e3:.3f} ms {1.5 * nbytes / tb / 1e12:.2f} TB/s")
    del x, dy, y, d, yf, df, out
    row_kernels(bt, g)


def row_kernels(bt: int, g=None) -> None:
    """fused_loss.py's row kernel: correctness against _rows_torch, then its time at (bt, 50304) bf16.
    Bytes counted: one read and one write of the logits (the floor; the kernel reads each row twice)."""
    from nanogpt_viz.engine.kernels import fused_loss

    g = g or torch.Generator(device="cuda").manual_seed(0)
    V = 50304
    logits = (3 * torch.randn(4096, V, device="cuda", generator=g)).to(torch.bfloat16)
    tt = torch.randint(0, V, (4096,), device="cuda", generator=g)
    tt[::5] = -1
    ref_loss, ref_grad = fused_loss._rows_torch(logits, tt)
    big = torch.randn(bt, V, device="cuda", dtype=torch.bfloat16)
    tb_ = torch.randint(0, V, (bt,), device="cuda")
    lb = torch.empty(bt, device="cuda")
    buf = logits.clone()
    loss = torch.full((4096,), float("nan"), device="cuda")
    fused_loss._launch_rows(buf, tt, loss)
    err_l = (loss - ref_loss).abs().max().item()
    err_g = (buf.float() - ref_grad.float()).abs().max().item()
    # the kernel rewrites the matrix in place with its gradient, as large and as random: timing it again
    # on its own output measures the same traffic
    sec = bench(lambda: fused_loss._launch_rows(big, tb_, lb), iters=5)
    print(f"-- row kernel: loss max |diff| {err_l:.2e}, gradient max |diff| {err_g:.2e}; "
          f"({bt}, {V}) {sec * 1e3:.2f} ms, {2 * big.numel() * 2 / sec / 1e12:.2f} TB/s (one read + one write)",
          flush=True)


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


def category(name: str) -> str:
    n = name.lower()
    if "flash" in n or "fmha" in n or "attention" in n or "cudnn" in n and "sdpa" in n:
        return "attention"
    if any(s in n for s in ("gemm", "cutlass", "sm90_xmma", "nvjet", "cublas", "xmma", "wgmma")):
        return "gemm"
    if "adam" in n or "multi_tensor" in n or "foreach" in n:
        return "optimizer/clip"
    if "memcpy" in n or "memset" in n:
        return "copies"
    if n.startswith("triton"):
        return "triton (fused pointwise/reductions)"
    return "other"


class TimedTrainer(Trainer):
    """The trainer with host clocks around its parts (no profiler): how far ahead of the GPU the CPU runs.

    launch: host time to queue one step (of which batch: building and uploading its micro-batches);
    wait: host time blocked on the previous step's event (the CPU's lead: while it is > 0 the GPU had a
    whole step queued and never waited for the host); report: host time turning a step into its report."""

    def _launch_step(self, step):
        self._t_batch = 0.0
        t0 = time.perf_counter()
        p = super()._launch_step(step)
        self.host_times.setdefault(step, {}).update(launch=time.perf_counter() - t0, batch=self._t_batch)
        return p

    def _micro_batches(self, step, pending=None):
        it = super()._micro_batches(step, pending)
        while True:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self._t_batch += time.perf_counter() - t0
            yield item

    def _finish(self, p):
        t0 = time.perf_counter()
        if p.event is not None:
            p.event.synchronize()
        t1 = time.perf_counter()
        rep = super()._finish(p)
        self.host_times.setdefault(p.step, {}).update(wait=t1 - t0, report=time.perf_counter() - t1)
        return rep


def host_table(times: dict, dts: dict, first: int, last: int) -> None:
    rows = [(times[s], dts[s]) for s in range(first, last + 1) if s in times and s in dts and "wait" in times[s]]
    med = lambda key: 1e3 * float(np.median([t[key] for t, _ in rows]))  # noqa: E731
    gpu = 1e3 * float(np.median([d for _, d in rows]))
    print(f"-- host timing, steps {first}-{last} (no profiler), medians: GPU step {gpu:.1f} ms by events; host: "
          f"queue a step {med('launch'):.1f} ms (of which batches {med('batch'):.2f} ms), report {med('report'):.2f} ms, "
          f"blocked on the previous step's event {med('wait'):.1f} ms (min "
          f"{1e3 * min(t['wait'] for t, _ in rows):.1f} ms): the CPU runs "
          f"{'ahead: the GPU never waits for it' if min(t['wait'] for t, _ in rows) > 0.001 else 'behind'}")


def profile(b: int, steps: int, residual: str = "float32", sources: int = 0) -> None:
    tokens = np.random.default_rng(0).integers(0, 50257, 50_000_000, dtype=np.uint16)
    pc = PlanConfig(block_size=1024, batch_size=b, sampling="random")
    mc = MODEL_PRESETS["gpt2"].with_(dropout=0.0)
    tc = TrainConfig(steps=30 + steps, warmup_steps=10, eval_interval=0, device="cuda", dtype="bfloat16",
                     compile=True, per_token=True, residual_dtype=residual)
    from torch.profiler import ProfilerActivity
    prof = torch.profiler.profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU])
    t0 = None
    dts = []
    all_dt = {}
    tr = TimedTrainer(tokens, None, pc, mc, tc)
    tr.host_times = {}
    for ev in tr.run():
        if isinstance(ev, RunEnd) and ev.reason != "finished":
            raise SystemExit(f"the profiled run failed: {ev.message}")
        if isinstance(ev, StepReport):
            all_dt[ev.step] = ev.dt
            if ev.step == 23:
                host_table(tr.host_times, all_dt, 8, 23)
            if ev.step == 24:
                prof.start()
                t0 = time.perf_counter()
            if 25 <= ev.step <= 24 + steps:
                dts.append(ev.dt)
            if ev.step == 24 + steps:
                torch.cuda.synchronize()
                wall = time.perf_counter() - t0
                prof.stop()
    n = len(dts)
    step_ms = 1e3 * float(np.mean(dts))
    print(f"-- compiled engine, {residual} residual, B={b}, under the profiler: {step_ms:.1f} ms/step by events, "
          f"{b * 1024 / step_ms * 1e3:,.0f} tok/s")
    by_cat = collections.Counter()
    by_name = collections.Counter()
    calls = collections.Counter()
    for e in prof.events():  # kernels only: CPU-side ops also carry device time in key_averages
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        if "#" in e.name or e.name.startswith("ProfilerStep"):  # a user annotation's GPU range, not a kernel
            continue
        by_cat[category(e.name)] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        by_name[e.name] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        calls[e.name] += 1
    busy = sum(by_cat.values()) / 1e3  # ms over the profiled window
    print(f"  kernels {busy / n:.1f} ms per step over {n} steps; {step_ms - busy / n:.1f} ms per step "
          f"with the GPU idle (wall {wall * 1e3 / n:.1f} ms per step)")
    for cat, t in by_cat.most_common():
        print(f"  {cat:38s} {t / 1e3 / n:7.2f} ms/step  {100 * t / 1e3 / busy:5.1f}%")
    print("  top kernels (ms per step, calls per step, us per call):")
    for name, t in by_name.most_common(45):
        print(f"    {t / 1e3 / n:7.3f} ms  {calls[name] / n:5.0f}x  {t / max(1, calls[name]):8.1f} us  {name[:100]}")
    if sources:
        triton_sources([name for name, _ in by_name.most_common(45) if name.startswith("triton_")][:sources])


def triton_sources(names: list[str]) -> None:
    """What inductor fused into each of `names`: the "Source Nodes ... Original ATen" comments that its wrapper
    code writes above a kernel's definition (`name = async_compile.triton(...)`) or its call (`name.run(...)`)
    when inductor's comment_origin is on (the wrappers in its cache). A first version looked inside the kernel
    source instead and found nothing on the H200 (h200_profile_default_3.log); this one is checked on CPU
    wrappers only."""
    import glob
    import re

    from torch._inductor.runtime.cache_dir_utils import cache_dir

    texts = [open(f, errors="replace").read() for f in glob.glob(os.path.join(cache_dir(), "**", "*.py"), recursive=True)]
    for name in names:
        where = re.compile(r"^\s*" + re.escape(name) + r"(\s*=\s*async_compile\.|\.run\(|\()", re.M)
        found: list[str] = []
        for text in texts:
            for m in where.finditer(text):
                found += [ln.strip()[:300] for ln in text[:m.start()].splitlines()[-40:]
                          if ln.lstrip().startswith("#") and ("Source Nodes" in ln or "Original ATen" in ln)]
            if found:
                break
        print(f"  -- {name}" + ("" if found else " (no origin comment found in the cache's wrappers)"))
        for ln in dict.fromkeys(found):
            print("     " + ln)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--skip", default="", help="comma-separated: gemm,attn,profile")
    ap.add_argument("--check", action="store_true", help="check and time the fused loss kernel")
    ap.add_argument("--kernels", action="store_true", help="check and time the GELU and row-kernel variants")
    ap.add_argument("--rows", action="store_true", help="check and time the row kernels only")
    ap.add_argument("--residual-dtype", default="float32", help="the profiled run's residual stream")
    ap.add_argument("--sources", type=int, default=0,
                    help="print what inductor fused into the N slowest Triton kernels (their origin comments)")
    ap.add_argument("--clocks", action="store_true",
                    help="sample the GPU's SM clock, power and temperature every 100 ms while profiling")
    a = ap.parse_args()
    if a.sources:
        import torch._inductor.config as ic

        ic.comment_origin = True  # each generated kernel names the FX nodes it came from
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    skip = set(a.skip.split(","))
    if a.check:
        check_fused(a.batch_size * 1024)
    if a.kernels:
        check_kernels(a.batch_size * 1024)
    elif a.rows:
        row_kernels(a.batch_size * 1024)
    if "gemm" not in skip:
        gemms(a.batch_size * 1024)
    if "attn" not in skip:
        attention(a.batch_size)
    if "profile" not in skip:
        smi = None
        if a.clocks:
            import subprocess

            smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,"
                                    "clocks_throttle_reasons.active", "--format=csv,noheader", "-lms", "100"],
                                   stdout=subprocess.PIPE, text=True)
        profile(a.batch_size, a.steps, a.residual_dtype, a.sources)
        if smi is not None:
            smi.terminate()
            rows = [ln.split(", ") for ln in smi.communicate()[0].splitlines() if ln.count(",") >= 4]
            rows = [r for r in rows if r[0].split() and r[0].split()[0].isdigit()]
            if not rows:
                print("  GPU clocks: nvidia-smi gave no samples")
                raise SystemExit(0)
            sm = [float(r[0].split()[0]) for r in rows]
            pw = [float(r[2].split()[0]) for r in rows if r[2].split() and r[2].split()[0].replace(".", "").isdigit()] or [0.0]
            reasons = collections.Counter(r[4].strip() for r in rows)
            print(f"  GPU over the run ({len(rows)} samples): SM clock MHz min {min(sm):.0f} / median "
                  f"{np.median(sm):.0f} / max {max(sm):.0f}; power W median {np.median(pw):.0f}, max {max(pw):.0f}; "
                  f"throttle reasons {dict(reasons.most_common(4))}")
