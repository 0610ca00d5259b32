"""Engine throughput, side by side in one run.

GPU, against nanoGPT:     python benchmarks/engine.py --variants default,bf16res --nanogpt-dir NANOGPT
    nanoGPT's own bench.py (a checkout of karpathy/nanoGPT, unchanged; synthetic data, compiled, same B)
    before and after our variants, one table: ms/step, tokens/s, MFU against the measured 790 and the
    datasheet 989 TFLOP/s (H100/H200 SXM bf16 dense), and the ratio to nanoGPT's mean.
GPU (the H200 machine):   python benchmarks/engine.py --gpu
    GPT-2 124M, B=64, N=1024, bf16, torch.compile: tokens/s and MFU against the measured ~790 TFLOP/s
    bf16 ceiling, with the per-token loss readout on and off (same process, same data).
CPU (this 2-core machine): python benchmarks/engine.py --cpu
    tokens/s of the `tiny` and `small` presets.

Synthetic uniform tokens are used: throughput does not depend on the text.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nanogpt_viz.config import MODEL_PRESETS, RESIDUAL_DTYPES, PlanConfig, TrainConfig  # noqa: E402
from nanogpt_viz.engine.runtime import tune_allocator  # noqa: E402
from nanogpt_viz.engine.trainer import RunEnd, RunInfo, StepReport, Trainer  # noqa: E402

tune_allocator()  # as the CLI and the window do


def measure(tokens, pc, mc, tc, skip: int) -> dict:
    info = None
    reports = []
    end = None
    t0 = time.perf_counter()
    for ev in Trainer(tokens, None, pc, mc, tc).run():
        if isinstance(ev, RunInfo):
            info = ev
        elif isinstance(ev, StepReport):
            reports.append(ev)
        elif isinstance(ev, RunEnd):
            end = ev
    wall = time.perf_counter() - t0
    if end is None or end.reason != "finished":
        raise SystemExit(f"run failed: {end}")
    timed = reports[skip:]
    dt = sum(r.dt for r in timed)
    tps = sum(pc.tokens_per_step for _ in timed) / dt
    d = np.array([r.dt for r in timed]) * 1e3
    print(f"  step times (ms): mean {d.mean():.1f}, median {np.median(d):.1f}, min {d.min():.1f}, max {d.max():.1f}; "
          f"steps over median + 2 ms: {int((d > np.median(d) + 2).sum())} of {len(d)}", flush=True)
    mfus = [r.mfu for r in timed if r.mfu is not None]
    return {"device": info.device_name, "dtype": info.dtype, "compiled": info.compiled,
            "params_M": round(info.n_params / 1e6, 2), "steps_timed": len(timed), "tokens_per_s": round(tps),
            "mfu": round(float(np.mean(mfus)), 4) if mfus else None, "final_loss": round(reports[-1].loss, 4),
            "wall_s": round(wall, 1)}


def gpu(args) -> None:
    import torch

    if args.coordinate_descent:  # experiment: let inductor tune its Triton kernels' launch configs
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    tokens = np.random.default_rng(0).integers(0, 50257, 50_000_000, dtype=np.uint16)
    # correctness: the same tiny run on CUDA (fp32, TF32 matmuls) and on the CPU
    small = PlanConfig(block_size=64, batch_size=8, grad_accum=2)
    losses = {}
    for dev in ("cuda", "cpu"):
        tc = TrainConfig(steps=8, eval_interval=0, device=dev, dtype="float32", compile=False)
        losses[dev] = [ev.loss for ev in Trainer(tokens, None, small, MODEL_PRESETS["tiny"], tc).run()
                       if isinstance(ev, StepReport)]
    diff = max(abs(a - b) for a, b in zip(losses["cuda"], losses["cpu"]))
    print(f"CUDA vs CPU tiny fp32 losses: max |diff| = {diff:.2e} over 8 steps "
          f"(cuda {losses['cuda'][-1]:.4f}, cpu {losses['cpu'][-1]:.4f})", flush=True)
    pc = PlanConfig(block_size=1024, batch_size=args.batch_size, sampling="random")
    mc = MODEL_PRESETS["gpt2"].with_(dropout=0.0)
    results = {}
    runs = (("readout_on", True),) if args.only_on else (("readout_on", True), ("readout_off", False),
                                                          ("readout_on_again", True))
    if args.plain_loss_too:
        runs += (("readout_on_plain_loss", True),)
    for label, per_token in runs:
        # the plain (unfused) output layer + cross-entropy, to compare with fused_loss.py
        tc = TrainConfig(steps=args.warmup + args.steps, warmup_steps=10, eval_interval=0, device="cuda",
                         dtype="bfloat16", compile=True, learning_rate=6e-4, min_lr=6e-5, per_token=per_token,
                         residual_dtype=args.residual_dtype, fused_loss=not label.endswith("plain_loss"))
        results[label] = measure(tokens, pc, mc, tc, skip=args.warmup)
        print(label, json.dumps(results[label]), flush=True)
    if args.plain_loss_too:
        plain = results["readout_on_plain_loss"]
        print(f"fused loss vs plain: {results['readout_on']['tokens_per_s']:,} vs {plain['tokens_per_s']:,} tok/s "
              f"({results['readout_on']['tokens_per_s'] / plain['tokens_per_s']:.3f}x); MFU plain {plain['mfu']:.1%}")
    if args.only_on:
        return
    on = (results["readout_on"]["tokens_per_s"] + results["readout_on_again"]["tokens_per_s"]) / 2
    off = results["readout_off"]["tokens_per_s"]
    print(f"\nGPT-2 124M B={args.batch_size} N=1024 bf16 compiled, {args.residual_dtype} residual: "
          f"{off:,.0f} tok/s without readout, "
          f"{on:,.0f} with; readout cost {100 * (1 - on / off):+.2f}% (target <= 3%)")
    print(f"MFU vs 790 TFLOP/s: readout on {results['readout_on']['mfu']:.1%}, "
          f"off {results['readout_off']['mfu']:.1%} (target >= 62%; nanoGPT bench.py ~58%)")


# engine settings compared by --variants: TrainConfig fields (the engine options the trainer passes to GPT, the
# compile mode), and "sdpa", the attention backend this script allows torch (experiments: torch picks cuDNN's
# on Hopper; "flash" / "cudnn" force one)
VARIANTS = {
    "plain": {"fused_loss": False, "gelu": "torch"},  # torch.compile alone
    "noGelu": {"gelu": "torch"},  # fused loss, inductor's GELU
    "default": {},  # fused loss + gelu.py (what the trainer picks on CUDA)
    "bf16res": {"residual_dtype": "bfloat16"},  # the above + llm.c's bf16 residual stream
    "flash": {"sdpa": "flash"},
    "bf16flash": {"sdpa": "flash", "residual_dtype": "bfloat16"},
    "cudnn": {"sdpa": "cudnn"},
    "bf16cudnn": {"sdpa": "cudnn", "residual_dtype": "bfloat16"},
    "mat": {"compile_mode": "max-autotune-no-cudagraphs"},
    "bf16mat": {"compile_mode": "max-autotune-no-cudagraphs", "residual_dtype": "bfloat16"},
    "cg": {"compile_mode": "reduce-overhead"},
    "bf16cg": {"compile_mode": "reduce-overhead", "residual_dtype": "bfloat16"},
}
MEASURED_PEAK, DATASHEET_PEAK = 790e12, 989e12  # H100/H200 SXM bf16 dense: measured here, datasheet


def nanogpt_bench(nanogpt_dir: str, batch_size: int) -> dict:
    """nanoGPT's own bench.py (unchanged), synthetic data, compiled: its 'time per iteration' line."""
    import re
    import shutil
    import subprocess
    import tempfile

    work = tempfile.mkdtemp(prefix="nanogpt-bench-")
    for f in ("bench.py", "model.py", "configurator.py"):
        shutil.copy(os.path.join(nanogpt_dir, f), work)
    cmd = [sys.executable, "bench.py", f"--batch_size={batch_size}", "--real_data=False", "--compile=True"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    shutil.rmtree(work, ignore_errors=True)
    m = re.search(r"time per iteration: ([0-9.]+)ms, MFU: ([0-9.]+)%", res.stdout)
    if res.returncode != 0 or m is None:
        raise SystemExit(f"nanoGPT bench.py failed ({res.returncode}):\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}")
    ms = float(m.group(1))
    # bench.py's own MFU is against the A100's 312 TFLOP/s; ours is the project's one formula (model.estimate_mfu,
    # the same PaLM count as nanoGPT's) over the same model, against the H100/H200 ceilings
    tokens = batch_size * 1024
    return {"ms_per_step": ms, "tokens_per_s": round(tokens / (ms / 1e3)),
            "mfu": round(_mfu(tokens, ms / 1e3, MEASURED_PEAK), 4),
            "mfu_datasheet": round(_mfu(tokens, ms / 1e3, DATASHEET_PEAK), 4),
            "mfu_a100_bench_py": float(m.group(2)) / 100, "wall_s": round(time.perf_counter() - t0, 1)}


def _mfu(tokens: float, seconds: float, peak: float) -> float:
    """GPT-2 124M (the gpt2 preset, N=1024) MFU by model.estimate_mfu."""
    import torch

    from nanogpt_viz.engine.model import GPT, estimate_mfu, flops_per_token

    mc = MODEL_PRESETS["gpt2"]
    with torch.device("meta"):  # the parameter count only
        n = GPT(mc).get_num_params()
    return estimate_mfu(flops_per_token(mc, n), tokens, seconds, peak)


def _set_variant(name: str) -> dict:
    """The variant's TrainConfig fields; its attention backend is set here (torch.backends, process-wide)."""
    fields = dict(VARIANTS[name])
    sdpa = fields.pop("sdpa", "")
    import torch

    torch._dynamo.reset()  # each variant traces afresh (the SDPA backend is chosen when tracing)
    torch.backends.cuda.enable_cudnn_sdp(sdpa != "flash")
    torch.backends.cuda.enable_flash_sdp(sdpa != "cudnn")
    torch.backends.cuda.enable_mem_efficient_sdp(sdpa == "")
    return fields


def variants(args) -> None:
    """Throughput of each engine variant, side by side, then (--quality) their loss curves on text."""
    import torch

    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}", flush=True)
    tokens = np.random.default_rng(0).integers(0, 50257, 50_000_000, dtype=np.uint16)
    pc = PlanConfig(block_size=1024, batch_size=args.batch_size, sampling="random")
    mc = MODEL_PRESETS["gpt2"].with_(dropout=0.0)
    names = args.variants.split(",")
    res = {}
    ng = []
    if args.nanogpt_dir:
        ng.append(nanogpt_bench(args.nanogpt_dir, args.batch_size))
        print(f"nanoGPT bench.py #1 {ng[-1]['tokens_per_s']:9,} tok/s  {json.dumps(ng[-1])}", flush=True)
    for name in names:
        fields = _set_variant(name)
        tc = TrainConfig(steps=args.warmup + args.steps, warmup_steps=10, eval_interval=0, device="cuda",
                         dtype="bfloat16", compile=True, learning_rate=6e-4, min_lr=6e-5, **fields)
        try:
            res[name] = measure(tokens, pc, mc, tc, skip=args.warmup)
        except (Exception, SystemExit) as e:  # an experiment that does not run: say so, go on with the others
            print(f"{name}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            names = [n for n in names if n != name]
            continue
        print(f"{name:6s} {res[name]['tokens_per_s']:9,} tok/s  MFU {res[name]['mfu']:.1%}  "
              f"({res[name]['tokens_per_s'] / res[names[0]]['tokens_per_s']:.3f}x {names[0]})  "
              f"{json.dumps(res[name])}", flush=True)
    if args.nanogpt_dir:
        ng.append(nanogpt_bench(args.nanogpt_dir, args.batch_size))
        print(f"nanoGPT bench.py #2 {ng[-1]['tokens_per_s']:9,} tok/s  {json.dumps(ng[-1])}", flush=True)
        base = sum(r["tokens_per_s"] for r in ng) / len(ng)
        print(f"\nGPT-2 124M, B={args.batch_size}, N=1024, bf16, compiled; MFU against {MEASURED_PEAK / 1e12:.0f} "
              f"(measured) / {DATASHEET_PEAK / 1e12:.0f} (datasheet) TFLOP/s")
        print(f"{'engine':24s} {'ms/step':>8s} {'tokens/s':>10s} {'MFU 790':>8s} {'MFU 989':>8s} {'vs nanoGPT':>10s}")
        for i, r in enumerate(ng):
            print(f"{'nanoGPT bench.py #' + str(i + 1):24s} {r['ms_per_step']:8.1f} {r['tokens_per_s']:10,} "
                  f"{r['mfu']:8.1%} {r['mfu_datasheet']:8.1%} {r['tokens_per_s'] / base:9.3f}x")
        for name in names:
            r = res[name]
            ms = args.batch_size * 1024 / r["tokens_per_s"] * 1e3
            print(f"{name:24s} {ms:8.1f} {r['tokens_per_s']:10,} {r['mfu']:8.1%} "
                  f"{r['mfu'] * MEASURED_PEAK / DATASHEET_PEAK:8.1%} {r['tokens_per_s'] / base:9.3f}x")
    if not args.quality:
        return
    text = np.fromfile(args.quality, dtype=np.uint16)
    print(f"-- loss on text ({len(text):,} tokens), {args.quality_steps} steps, same plan and seed", flush=True)
    curves = {}
    for name in args.quality_variants.split(","):
        label = name
        while label in curves:
            label += "'"
        fields = _set_variant(name)
        tc = TrainConfig(steps=args.quality_steps, warmup_steps=30, eval_interval=0, device="cuda",
                         dtype="bfloat16", compile=True, learning_rate=6e-4, min_lr=6e-5, **fields)
        curves[label] = [ev.loss for ev in Trainer(text, None, pc, mc, tc).run() if isinstance(ev, StepReport)]
        c = curves[label]
        marks = "  ".join(f"{i}:{np.mean(c[max(0, i - 10):i]):.3f}" for i in range(10, len(c) + 1, len(c) // 6))
        print(f"{label:7s} mean loss of the 10 steps before  {marks}", flush=True)
    first = next(iter(curves))
    for label, c in curves.items():
        d = np.abs(np.array(c) - np.array(curves[first]))
        print(f"{label:7s} vs {first}: last-20 mean {np.mean(c[-20:]):.4f} vs {np.mean(curves[first][-20:]):.4f}; "
              f"max |diff| per step {d.max():.3f}, mean {d.mean():.4f}")


def cpu(args) -> None:
    import torch

    tokens = np.random.default_rng(0).integers(0, 50257, 2_000_000, dtype=np.uint16)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for preset, n, b in (("tiny", 64, 8), ("small", 256, 8)):
        pc = PlanConfig(block_size=n, batch_size=b)
        tc = TrainConfig(steps=args.warmup + args.steps, eval_interval=0, device="cpu")
        r = measure(tokens, pc, MODEL_PRESETS[preset], tc, skip=args.warmup)
        print(f"{preset:6s} N={n} B={b}: {r['tokens_per_s']:,} tok/s  {json.dumps(r)}", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=15)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--coordinate-descent", action="store_true")
    ap.add_argument("--residual-dtype", choices=RESIDUAL_DTYPES, default="float32",
                    help="GPU: float32 (nanoGPT) or bfloat16 (llm.c)")
    ap.add_argument("--only-on", action="store_true", help="GPU: one run, readout on")
    ap.add_argument("--plain-loss-too", action="store_true",
                    help="GPU: also a run with the unfused output layer and loss")
    ap.add_argument("--variants", default="", help="GPU: compare engine variants (VARIANTS), e.g. plain,default")
    ap.add_argument("--nanogpt-dir", default="",
                    help="GPU, with --variants: a nanoGPT checkout; its bench.py runs before and after (same B)")
    ap.add_argument("--quality", default="", help="GPU, with --variants: uint16 token file to train on")
    ap.add_argument("--quality-steps", type=int, default=250)
    ap.add_argument("--quality-variants", default="default,bf16res,default")
    a = ap.parse_args()
    if a.variants:
        variants(a)
        sys.exit(0)
    if a.gpu:
        gpu(a)
    if a.cpu or not a.gpu:
        cpu(a)
