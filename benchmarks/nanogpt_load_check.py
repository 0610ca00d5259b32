"""A checkpoint trained with the fast path loads into nanoGPT's own model.py and gives the same loss (issue 15).

    python benchmarks/nanogpt_load_check.py --nanogpt-dir NANOGPT --data-dir CORPUS [--steps 100]

Trains GPT-2 124M (N=1024, B=16, bf16, compiled, the default engine: fused loss, gelu.py, float32 residual)
on CORPUS/train.bin with our trainer, writes ckpt.pt, then loads that file the way nanoGPT's sample.py does
(torch.load, GPTConfig(**model_args), strip '_orig_mod.', load_state_dict) into nanoGPT's GPT, and into ours
on the plain path and on the fast path. All three score the same fixed val batches (CORPUS/val.bin): in float32
(tf32 off) the losses must agree to float32 rounding; under bf16 autocast to bf16 noise.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import torch  # noqa: E402

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig  # noqa: E402
from nanogpt_viz.engine.model import GPT  # noqa: E402
from nanogpt_viz.engine.trainer import RunEnd, StepReport, Trainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nanogpt-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batches", type=int, default=8)
    a = ap.parse_args()
    train = np.fromfile(Path(a.data_dir) / "train.bin", dtype=np.uint16)
    val = np.fromfile(Path(a.data_dir) / "val.bin", dtype=np.uint16)
    mc = MODEL_PRESETS["gpt2"].with_(dropout=0.0)
    with tempfile.TemporaryDirectory() as out:
        tc = TrainConfig(steps=a.steps, warmup_steps=20, learning_rate=6e-4, min_lr=6e-5, eval_interval=0,
                         device="cuda", dtype="bfloat16", compile=True)
        tr = Trainer(train, None, PlanConfig(block_size=1024, batch_size=16, sampling="random"), mc, tc, out_dir=out)
        losses, end = [], None
        for ev in tr.run():
            if isinstance(ev, StepReport):
                losses.append(ev.loss)
            elif isinstance(ev, RunEnd):
                end = ev
        print(f"trained {len(losses)} steps with {tr.raw_model.options} (compiled {tr.compiled}): loss "
              f"{losses[0]:.3f} -> {np.mean(losses[-10:]):.3f}; {end.reason}, {end.checkpoint}", flush=True)
        ckpt = torch.load(Path(out) / "ckpt.pt", map_location="cuda")  # as nanoGPT's sample.py
    sys.path.insert(0, a.nanogpt_dir)
    from model import GPT as NanoGPT, GPTConfig  # nanoGPT's model.py, unchanged

    state = ckpt["model"]
    for k in list(state):
        if k.startswith("_orig_mod."):
            state[k[len("_orig_mod."):]] = state.pop(k)
    theirs = NanoGPT(GPTConfig(**ckpt["model_args"]))
    theirs.load_state_dict(state)
    models = {"nanoGPT model.py": theirs, "ours, plain": GPT(ckpt["model_args"]),
              "ours, fast path": GPT(ckpt["model_args"], fused_loss=True, gelu="kept")}
    for name in ("ours, plain", "ours, fast path"):
        models[name].load_state_dict(state)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(val) - 1025, (a.batches, 8))
    batches = [torch.from_numpy(np.stack([val[s:s + 1025] for s in row]).astype(np.int64)).cuda() for row in starts]
    for precision in ("float32", "bf16 autocast"):
        torch.backends.cuda.matmul.allow_tf32 = False
        res = {}
        for name, m in models.items():
            m = m.cuda().eval()
            tot = 0.0
            with torch.no_grad():
                for b in batches:
                    ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if precision != "float32"
                           else torch.autocast("cuda", enabled=False))
                    with ctx:
                        out = m(b[:, :-1].contiguous(), b[:, 1:].contiguous())
                    loss = out[1] if name.startswith("nano") else out.loss
                    tot += float(loss)
            res[name] = tot / len(batches)
        ref = res["nanoGPT model.py"]
        print(f"{precision:14s} val loss on {a.batches}x8 rows of N=1024: " + "; ".join(
            f"{k} {v:.6f} ({v - ref:+.2e})" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
