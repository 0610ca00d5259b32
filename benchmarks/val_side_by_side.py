"""Our val loss next to nanoGPT's, trained on the same prepared data in one call (issue 16).

GPU (the H200 machine), GPT-2 124M as in the issue: N=1024, B=12, K=1, random sampling, nanoGPT's
learning-rate schedule (warmup then cosine, lr 6e-4 -> 6e-5), 600 steps, evaluation every 100 with
eval_iters=200 under nanoGPT's protocol:

    python benchmarks/val_side_by_side.py --nanogpt-dir /path/to/nanoGPT --data-dir /path/to/shakespeare \
        --log benchmarks/results/h200_val_side_by_side.log

CPU check at tiny scale (2 layers, width 64, N=64, B=4, 30 steps, evaluation every 10, eval_iters 20):

    python benchmarks/val_side_by_side.py --scale tiny --nanogpt-dir /work/scratch/nanoGPT-src \
        --data-dir /work/scratch/exact/shakespeare

`--data-dir` holds nanoGPT's own train.bin / val.bin (data/shakespeare/prepare.py output). nanoGPT's
code is not part of this project: `--nanogpt-dir` is a checkout of karpathy/nanoGPT; its train.py
runs unchanged, from a scratch folder holding its configurator.py and data/<name> -> --data-dir.
Both runs evaluate at iteration 0 and every --eval-interval steps with the same number of random
batches from each split (nanoGPT's estimate_loss; ours: --eval-protocol nanogpt), so the two val
columns measure the same thing; they differ by the random draws (different generators) and by
training noise. Our `train --json` record for step s carries the val loss after s+1 steps, which is
nanoGPT's "step s+1" line; the iteration-0 evaluation rides on the first record (init_val_loss).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCALES = {
    # n_layer, n_head, n_embd, block_size N, batch B, steps, eval_interval, eval_iters, warmup
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, N=1024, B=12, steps=600, eval_interval=100, eval_iters=200,
                 warmup=100),
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, N=64, B=4, steps=30, eval_interval=10, eval_iters=20, warmup=5),
}
NANOGPT_EVAL = re.compile(r"step (\d+): train loss ([0-9.]+|nan), val loss ([0-9.]+|nan)")


def ours(args, s: dict, out: Path) -> dict[int, tuple[float, float]]:
    """{iteration: (train estimate, val)} from our CLI's --json records."""
    cmd = [sys.executable, "-m", "nanogpt_viz", "train", str(args.data_dir), "--preset", "gpt2",
           "--n-layer", str(s["n_layer"]), "--n-head", str(s["n_head"]), "--n-embd", str(s["n_embd"]),
           "-N", str(s["N"]), "-B", str(s["B"]), "-K", str(args.grad_accum), "--sampling", "random",
           "--seed", str(args.seed), "--steps", str(s["steps"]), "--lr", str(args.lr),
           "--min-lr", f"{args.lr / 10:.6g}",
           "--warmup-steps", str(s["warmup"]), "--lr-decay-steps", str(s["steps"]), "--weight-decay", "0.1",
           "--grad-clip", "1.0", "--eval-interval", str(s["eval_interval"]), "--eval-protocol", "nanogpt",
           "--eval-batches", str(s["eval_iters"]), "--device", args.device, "--dtype", args.dtype,
           "--out", str(out), "--json"]
    if args.device == "cpu":
        cmd.append("--no-compile")
    print("ours:   ", " ".join(cmd), flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"our run failed ({res.returncode}):\n{res.stderr[-3000:]}")
    curve = {}
    for line in res.stdout.splitlines():
        rec = json.loads(line)
        if "init_val_loss" in rec:
            curve[0] = (rec.get("init_train_loss_est"), rec["init_val_loss"])
        if rec.get("val_loss") is not None:
            curve[rec["step"] + 1] = (rec.get("train_loss_est"), rec["val_loss"])
    print(f"ours:    {time.time() - t0:.0f} s", flush=True)
    return curve


def nanogpt(args, s: dict, out: Path) -> dict[int, tuple[float, float]]:
    """{iteration: (train, val)} from nanoGPT's train.py 'step N: train loss X, val loss Y' lines."""
    src = Path(args.nanogpt_dir).resolve()
    if not (src / "train.py").exists() or not (src / "configurator.py").exists():
        raise SystemExit(f"{src} is not a nanoGPT checkout (train.py, configurator.py)")
    work = Path(tempfile.mkdtemp(prefix="nanogpt-run-"))
    shutil.copy(src / "configurator.py", work / "configurator.py")  # train.py execs it from the cwd
    (work / "data").mkdir()
    os.symlink(Path(args.data_dir).resolve(), work / "data" / "sbs")
    cmd = [sys.executable, str(src / "train.py"), "--dataset=sbs", f"--out_dir={out}",
           f"--n_layer={s['n_layer']}", f"--n_head={s['n_head']}", f"--n_embd={s['n_embd']}",
           f"--block_size={s['N']}", f"--batch_size={s['B']}", f"--gradient_accumulation_steps={args.grad_accum}",
           "--dropout=0.0", "--bias=False", f"--learning_rate={args.lr}", f"--min_lr={args.lr / 10:.6g}",
           f"--max_iters={s['steps']}", f"--lr_decay_iters={s['steps']}", f"--warmup_iters={s['warmup']}",
           "--weight_decay=0.1", "--grad_clip=1.0", f"--eval_interval={s['eval_interval']}",
           f"--eval_iters={s['eval_iters']}", "--log_interval=10", "--always_save_checkpoint=False",
           "--wandb_log=False", f"--device={args.device}", f"--compile={args.device != 'cpu'}"]
    if args.dtype != "auto":
        cmd.append(f"--dtype={args.dtype}")
    print("nanoGPT:", " ".join(cmd), f"(cwd {work})", flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"nanoGPT's train.py failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    shutil.rmtree(work, ignore_errors=True)
    curve = {int(m.group(1)): (float(m.group(2)), float(m.group(3))) for m in NANOGPT_EVAL.finditer(res.stdout)}
    print(f"nanoGPT: {time.time() - t0:.0f} s", flush=True)
    return curve


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nanogpt-dir", required=True, help="a checkout of karpathy/nanoGPT (not part of this project)")
    ap.add_argument("--data-dir", required=True, help="a folder with nanoGPT's train.bin and val.bin")
    ap.add_argument("--scale", choices=tuple(SCALES), default="gpt2")
    ap.add_argument("--grad-accum", type=int, default=1, help="K (nanoGPT's gradient_accumulation_steps, one GPU)")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", default=None, help="default: cuda where there is one, else cpu")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu (both runs)")
    ap.add_argument("--steps", type=int, default=None, help="override the scale's step count")
    ap.add_argument("--eval-interval", type=int, default=None)
    ap.add_argument("--eval-iters", type=int, default=None)
    ap.add_argument("--log", default=None, help="also write the table here (e.g. benchmarks/results/...)")
    args = ap.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    s = dict(SCALES[args.scale])
    for key in ("steps", "eval_interval", "eval_iters"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    for f in ("train.bin", "val.bin"):
        if not (Path(args.data_dir) / f).exists():
            raise SystemExit(f"{args.data_dir} has no {f} (run nanoGPT's data/shakespeare/prepare.py)")
    import numpy as np

    n_train = np.memmap(Path(args.data_dir) / "train.bin", dtype=np.uint16, mode="r").size
    n_val = np.memmap(Path(args.data_dir) / "val.bin", dtype=np.uint16, mode="r").size
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "CPU"
    head = (f"torch {torch.__version__}, {name}; data {args.data_dir}: train {n_train:,} tokens, val {n_val:,}; "
            f"scale {args.scale}: {s['n_layer']} layers, width {s['n_embd']}, N={s['N']}, B={s['B']}, "
            f"K={args.grad_accum}, {s['steps']} steps, lr {args.lr:g} -> {args.lr / 10:g} (warmup {s['warmup']}), "
            f"eval every {s['eval_interval']} with eval_iters={s['eval_iters']} per split, {args.dtype}")
    print(head, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="val-sbs-"))
    a = ours(args, s, tmp / "ours")
    b = nanogpt(args, s, tmp / "nanogpt")
    lines = [head, "", f"{'step':>6} {'ours val':>10} {'nanoGPT val':>12} {'diff':>8}   {'ours train est':>14} "
             f"{'nanoGPT train':>14}"]
    diffs = []
    for it in sorted(set(a) | set(b)):
        (at, av), (bt, bv) = a.get(it, (None, None)), b.get(it, (None, None))
        d = av - bv if av is not None and bv is not None else None
        if d is not None and it > 0:
            diffs.append(d)
        f = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
        lines.append(f"{it:>6} {f(av):>10} {f(bv):>12} {(f'{d:+.4f}' if d is not None else '-'):>8}   "
                     f"{f(at):>14} {f(bt):>14}")
    if diffs:
        lines.append("")
        lines.append(f"val difference (ours - nanoGPT) after step 0: mean {np.mean(diffs):+.4f}, "
                     f"max |diff| {np.max(np.abs(diffs)):.4f} over {len(diffs)} evaluations")
    text = "\n".join(lines)
    print(text)
    if args.log:
        Path(args.log).write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
