"""NanoGPTReplay at iteration 600,000 of nanoGPT's GPT-2 124M recipe.

    python benchmarks/replay_bench.py

B=12, K=40 (gradient_accumulation_steps=40, one rank), block 1024, n_layer 12, n_embd 768,
vocab 50304, bias False, eval_interval 2000, eval_iters 200. Two data sizes: OpenWebText's
train.bin (9,035,582,198 tokens: every offset takes two 32-bit generator outputs on any torch)
and a 2*10^8-token corpus (below 2**28: one output per offset on any torch). For each, in a fresh
replay object: the first query (train_starts of micro-step 0 at iteration 600,000; in the
first case this includes the one-time ~0.1 s Berlekamp-Massey set-up), a nearby second query
(micro-step 17 of iteration 600,001), the whole step (K, W, B), an evaluation (eval_starts at
600,000), and the same step spread over W=8 ranks (K=5 each). Prints wall time per call and
peak RSS (ru_maxrss) before and after. Figures only; nothing passes or fails.
"""
from __future__ import annotations

import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay  # noqa: E402

GPT2 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, bias=False,
            dropout=0.0)
IT = 600_000


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(label: str, fn):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    shape = getattr(out, "shape", None)
    print(f"  {label:<44} {dt * 1000:9.1f} ms   shape {shape}   peak RSS {rss_mib():.0f} MiB")
    return out


def main() -> None:
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
          f"{platform.machine()}, cpus {len(__import__('os').sched_getaffinity(0))}")
    print(f"peak RSS at start: {rss_mib():.0f} MiB")
    for train_len in (9_035_582_198, 200_000_000):
        print(f"\ntrain_len {train_len:,} tokens, val_len 4,434,606; B=12 K=40 W=1, GPT-2 124M")
        rp = NanoGPTReplay(train_len=train_len, val_len=4_434_606, block_size=1024, batch_size=12,
                           grad_accum=40, eval_interval=2000, eval_iters=200, model_args=GPT2)
        print(f"  model construction draws: {rp.init_draws:,}; iteration {IT} micro 0 starts "
              f"after {rp._train_position(IT * 40, 0):,} generator outputs")
        first = timed(f"train_starts({IT}, 0)  first query", lambda: rp.train_starts(IT, 0))
        print(f"    -> {first.tolist()}")
        timed(f"train_starts({IT + 1}, 17)  nearby query", lambda: rp.train_starts(IT + 1, 17))
        step = timed(f"step_starts({IT})", lambda: rp.step_starts(IT))
        assert np.array_equal(step[0, 0], first)
        timed(f"eval_starts({IT}, 'val')", lambda: rp.eval_starts(IT, "val"))
        timed(f"train_starts({IT * 3}, 5)  far query", lambda: rp.train_starts(IT * 3, 5))
        rp8 = NanoGPTReplay(train_len=train_len, val_len=4_434_606, block_size=1024, batch_size=12,
                            grad_accum=5, world_size=8, eval_interval=2000, eval_iters=200,
                            model_args=GPT2)
        timed(f"W=8 K=5: step_starts({IT})  first query", lambda: rp8.step_starts(IT))
        timed(f"W=8 K=5: step_starts({IT + 1})  nearby", lambda: rp8.step_starts(IT + 1))
    print(f"\npeak RSS at end: {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
