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


def ours(args, s: dict, out: Path, seed: int) -> dict[int, tuple[float, float]]:
    """{iteration: (train estimate, val)} from our CLI's --json records."""
    cmd = [sys.executable, "-m", "nanogpt_viz", "train", str(args.data_dir), "--preset", "gpt2",
           "--n-layer", str(s["n_layer"]), "--n-head", str(s["n_head"]), "--n-embd", str(s["n_embd"]),
           "-N", str(s["N"]), "-B", str(s["B"]), "-K", str(args.grad_accum), "--sampling", "random",
           "--seed", str(seed), "--steps", str(s["steps"]), "--lr", str(args.lr),
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
    ap.add_argument("--ours-seeds", default=None,
                    help="comma-separated seeds for repeated runs of ours (default: --seed once); a second seed "
                         "draws other batches and another initialisation: our run-to-run noise")
    ap.add_argument("--nanogpt-runs", type=int, default=1,
                    help="run nanoGPT's train.py this many times (its seed is fixed at 1337: repeats differ by "
                         "the GPU's nondeterministic kernels alone)")
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
    seeds = [int(x) for x in args.ours_seeds.split(",")] if args.ours_seeds else [args.seed]
    runs = {}  # label -> {iteration: (train estimate, val)}
    for i, seed in enumerate(seeds):
        runs[f"ours s{seed}"] = ours(args, s, tmp / f"ours{i}", seed)
    for i in range(args.nanogpt_runs):
        runs[f"nanoGPT #{i + 1}"] = nanogpt(args, s, tmp / f"nanogpt{i}")
    labels = list(runs)
    a, b = runs[labels[0]], runs["nanoGPT #1"]
    f = lambda v: f"{v:.4f}" if v is not None else "-"  # noqa: E731
    lines = [head, "", "val loss (nanoGPT's estimate_loss protocol), then train-split estimate", "",
             f"{'step':>6} " + " ".join(f"{lab + ' val':>16}" for lab in labels) + f" {'diff':>8}   "
             + " ".join(f"{lab + ' train':>18}" for lab in labels)]
    for it in sorted(set().union(*runs.values())):
        vals = [runs[lab].get(it, (None, None)) for lab in labels]
        av, bv = a.get(it, (None, None))[1], b.get(it, (None, None))[1]
        d = av - bv if av is not None and bv is not None else None
        lines.append(f"{it:>6} " + " ".join(f"{f(v):>16}" for _, v in vals)
                     + f" {(f'{d:+.4f}' if d is not None else '-'):>8}   " + " ".join(f"{f(t):>18}" for t, _ in vals))

    def spread(x: str, y: str) -> str:
        dd = [runs[x][it][1] - runs[y][it][1] for it in sorted(set(runs[x]) & set(runs[y])) if it > 0]
        return (f"{x} - {y}: mean {np.mean(dd):+.4f}, max |diff| {np.max(np.abs(dd)):.4f} over {len(dd)} "
                f"evaluations") if dd else f"{x} - {y}: no common evaluations"

    lines.append("")
    lines.append("diff column: " + spread(labels[0], "nanoGPT #1"))
    pairs = [(labels[0], lab) for lab in labels[1:len(seeds)]]
    pairs += [("nanoGPT #1", f"nanoGPT #{i + 1}") for i in range(1, args.nanogpt_runs)]
    for x, y in pairs:
        lines.append("run-to-run: " + spread(x, y))
    for x in labels[1:len(seeds)]:
        lines.append("other seed vs nanoGPT: " + spread(x, "nanoGPT #1"))
    text = "\n".join(lines)
    print(text)
    if args.log:
        Path(args.log).write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
