"""DDP scaling through torchrun + NCCL: tokens/s of the gpt2 preset on 1 and 2 GPUs, same call.

    python benchmarks/ddp.py [--gpus 2] [--batch-size 32] [--steps 40]

Runs the real CLI (`python -m torch.distributed.run ... -m nanogpt_viz train --json`) on synthetic
tokens and averages the tokens/s rank 0 reports after the warm-up (compilation) steps.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from nanogpt_viz.data.corpus import write_nanogpt_bin  # noqa: E402
from nanogpt_viz.run.launch import SAFE_ENV, torchrun_command  # noqa: E402


def run(data: str, nproc: int, args, out: str) -> dict:
    train = ["train", data, "--preset", "gpt2", "--block-size", "1024", "--batch-size", str(args.batch_size),
             "--grad-accum", str(args.grad_accum),
             "--sampling", "random", "--steps", str(args.warmup + args.steps), "--eval-interval", "0",
             "--device", "cuda", "--dtype", "bfloat16", "--compile", "--out", out, "--json",
             "--residual-dtype", args.residual_dtype]
    cmd = torchrun_command(train, nproc=nproc)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **SAFE_ENV}, cwd=os.getcwd())
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        print(res.stderr[-3000:])
        raise SystemExit(f"{nproc}-GPU run failed")
    recs = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    timed = recs[args.warmup:]
    tps = sum(r["tokens_per_s"] for r in timed) / len(timed)
    mfu = sum(r["mfu"] for r in timed) / len(timed) if timed[0]["mfu"] is not None else None
    return {"gpus": nproc, "tokens_per_s": round(tps), "mfu_per_gpu": mfu and round(mfu, 4),
            "final_loss": round(recs[-1]["loss"], 4), "wall_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per rank per step (K)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--residual-dtype", default="float32", help="float32 (nanoGPT) or bfloat16 (llm.c)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "train.bin")
        write_nanogpt_bin(data, np.random.default_rng(0).integers(0, 50257, 50_000_000, dtype=np.uint16))
        results = [run(data, n, args, os.path.join(tmp, f"run{n}")) for n in (1, args.gpus)]
    for r in results:
        print(json.dumps(r))
    one, many = results[0]["tokens_per_s"], results[1]["tokens_per_s"]
    print(f"\nGPT-2 124M, B={args.batch_size} K={args.grad_accum} per GPU, N=1024, bf16, compiled, NCCL: {one:,} tok/s on 1 GPU, "
          f"{many:,} on {args.gpus}: {many / one:.2f}x (efficiency {many / one / args.gpus:.1%}; aim >= 1.9x)")


if __name__ == "__main__":
    main()
