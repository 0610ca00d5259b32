"""BatchPlan queries at step 10^9 of a 10^10-token corpus, and `nanogpt-viz plan` there.

    python benchmarks/plan_bench.py [--calls 2000] [--tokens 10000000000]

Makes a sparse nanoGPT .bin (2 bytes per token: 20 GB at the default 10^10 tokens) with
truncate in a temp folder (on the disk that holds /tmp; sparse, so it takes no space), then in
the same run prints:

* ``open_corpus`` time on it (the bounded id check reads the first and last 2M tokens);
* for every sampling mode, with N=1024, B=12, K=40, W=8 (nanoGPT's GPT-2 124M recipe spread
  over 8 ranks): plan construction, ``starts(10**9)`` and ``batch(tokens, 10**9, 0, 0)``
  (gathers B real rows of N+1 tokens from the memmap) in microseconds per call;
* peak RSS (ru_maxrss) before and after;
* the wall time of ``nanogpt-viz plan FILE --block-size 1024 --batch-size 4 --start-step
  1000000000 --steps 1 --json`` as a subprocess, next to a bare ``python -c pass`` and
  ``nanogpt-viz --version`` for scale.

Then, with no file (a plan needs only the shard lengths):

* llm.c's shuffled loader over 100 shards of 10^8 tokens (10^10 tokens): the first query of an
  epoch (it replays that epoch's generator draws, jumping MT19937 ahead) and 50 random steps of the
  same epoch after it, for llm.c's GPT-2 recipe (B=64, N=1024, W=8) and teaching sizes;
* the nanoGPT replay of iteration 600,000 with B=12, K=40 (nanoGPT's GPT-2 124M config), first and
  a nearby query, with peak RSS.

The file is deleted at the end. Figures only; nothing passes or fails.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.config import SAMPLING_MODES, PlanConfig
from nanogpt_viz.data.corpus import open_corpus

STEP = 10**9


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def per_call_us(fn, calls: int) -> tuple[float, float]:
    """(median-of-5 batches, best batch) microseconds per call."""
    fn()  # warm up (first-touch of pages, caches)
    per_batch = max(1, calls // 5)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_batch):
            fn()
        times.append((time.perf_counter() - t0) / per_batch * 1e6)
    times.sort()
    return times[2], times[0]


def wall(cmd: list[str], env: dict[str, str], repeats: int = 3) -> tuple[float, subprocess.CompletedProcess]:
    best, res = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best, res


def shards_and_replay() -> None:
    import numpy as np

    from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay

    shards = [(f"fineweb_train_{i:06d}.bin", 100_000_000) for i in range(100)]
    print("\nllm.c DataLoader, shuffled, 100 shards x 10^8 tokens; epoch 3, ms per starts(step):")
    print(f"{'N':>6} {'B':>4} {'W':>3} {'K':>3} {'calls/epoch':>13} {'first query':>12} {'then median':>12} {'max':>8}")
    rng = np.random.default_rng(0)
    for N, B, W, K in ((1024, 64, 8, 1), (1024, 4, 1, 1), (64, 4, 1, 1), (64, 4, 1, 8)):
        plan = BatchPlan(PlanConfig(block_size=N, batch_size=B, world_size=W, grad_accum=K, sampling="shuffled"),
                         shards)
        C = int(plan.calls_per_pass[0])
        t0 = time.perf_counter()
        plan.starts(3 * C // K + C // (3 * K))
        first = (time.perf_counter() - t0) * 1e3
        times = []
        for step in rng.integers(3 * C // K, 4 * C // K, 50):
            t0 = time.perf_counter()
            plan.starts(int(step))
            times.append((time.perf_counter() - t0) * 1e3)
        print(f"{N:>6} {B:>4} {W:>3} {K:>3} {C:>13,} {first:>10.0f}ms {np.median(times):>10.1f}ms "
              f"{max(times):>6.1f}ms")

    model_args = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=False, vocab_size=50304,
                      dropout=0.0)
    rss0 = rss_mib()
    t0 = time.perf_counter()
    replay = NanoGPTReplay(train_len=9_035_582_489, val_len=4_434_606, block_size=1024, batch_size=12,
                           grad_accum=40, eval_interval=2000, eval_iters=200, model_args=model_args)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    replay.train_starts(600_000, 0)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    replay.step_starts(600_001)
    t_near = time.perf_counter() - t0
    print(f"\nnanoGPT replay, GPT-2 124M recipe (B=12, K=40, OpenWebText-sized train.bin): build {t_build:.2f} s, "
          f"iteration 600,000 first query {t_first:.2f} s, all of iteration 600,001 next {t_near * 1e3:.1f} ms; "
          f"peak RSS {rss_mib():.0f} MiB (before {rss0:.0f} MiB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=10**10)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="nanogpt-viz-plan-bench-"))
    path = tmp / "train.bin"
    try:
        try:
            with open(path, "wb") as f:
                f.truncate(2 * args.tokens)
        except OSError as e:
            print(f"cannot make a sparse {2 * args.tokens / 1e9:.0f} GB file in {tmp}: {e}")
            return 0
        print(f"sparse nanoGPT .bin: {args.tokens:,} tokens, {path.stat().st_size / 1e9:.1f} GB apparent, "
              f"{path.stat().st_blocks * 512 / 1e6:.1f} MB allocated, in {tmp}")
        print(f"cores: {os.cpu_count()}; python {sys.version.split()[0]}")
        rss0 = rss_mib()
        print(f"peak RSS before opening: {rss0:.0f} MiB")

        t0 = time.perf_counter()
        corpus = open_corpus(path)
        t_open = time.perf_counter() - t0
        tokens = corpus.split("train")
        print(f"open_corpus: {t_open * 1e3:.1f} ms ({len(tokens):,} train + {len(corpus.split('val')):,} val "
              f"tokens; peak RSS {rss_mib():.0f} MiB)")

        N, B, K, W = 1024, 12, 40, 8
        print(f"\nplan N={N} B={B} K={K} W={W} (K*W*B = {K * W * B:,} rows, {K * W * B * N:,} tokens per step), "
              f"step {STEP:,}; us per call, median (best) of 5 batches of {args.calls // 5}:")
        print(f"{'sampling':>10} {'build':>12} {'starts(1e9)':>20} {'batch(t,1e9,0,0)':>22} {'epoch':>14}  first start")
        for mode in SAMPLING_MODES:
            pc = PlanConfig(block_size=N, batch_size=B, grad_accum=K, world_size=W, sampling=mode, stride=1, seed=1337)
            t0 = time.perf_counter()
            plan = BatchPlan(pc, len(tokens))
            t_build = (time.perf_counter() - t0) * 1e6
            med_s, best_s = per_call_us(lambda: plan.starts(STEP), args.calls)
            med_b, best_b = per_call_us(lambda: plan.batch(tokens, STEP, 0, 0), args.calls)
            x, y = plan.batch(tokens, STEP, 0, 0)
            assert x.shape == (B, N) and y.shape == (B, N)
            s = plan.starts(STEP)
            assert s.shape == (K, W, B)
            print(f"{mode:>10} {t_build:>10.1f}us {med_s:>10.1f} ({best_s:>6.1f}) {med_b:>12.1f} ({best_b:>6.1f}) "
                  f"{plan.epoch(STEP):>14,}  {int(s[0, 0, 0]):,}")
        print(f"\npeak RSS after: {rss_mib():.0f} MiB (before opening: {rss0:.0f} MiB)")
        del plan, corpus, tokens

        env = dict(os.environ)
        for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
            env.pop(k, None)
        exe = shutil.which("nanogpt-viz")
        base = [exe] if exe else [sys.executable, "-m", "nanogpt_viz"]
        t_py, _ = wall([sys.executable, "-c", "pass"], env)
        t_ver, _ = wall(base + ["--version"], env)
        cmd = base + ["plan", str(path), "--block-size", "1024", "--batch-size", "4",
                      "--start-step", str(STEP), "--steps", "1", "--json"]
        t_plan, res = wall(cmd, env)
        ok = res.returncode == 0
        rec = json.loads(res.stdout) if ok else None
        print(f"\nsubprocess wall time, best of 3 ({' '.join(base)}):")
        print(f"  python -c pass: {t_py * 1e3:.0f} ms")
        print(f"  --version:      {t_ver * 1e3:.0f} ms")
        print(f"  plan {path.name} -N 1024 -B 4 --start-step {STEP:,} --steps 1 --json: {t_plan * 1e3:.0f} ms "
              + (f"(step {rec['step']:,}, epoch {rec['epoch']:,}, starts {[r['start'] for r in rec['rows']]})"
                 if ok else f"FAILED: exit {res.returncode}: {res.stderr.strip()[-300:]}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"\nremoved {tmp}: {not tmp.exists()}")
    shards_and_replay()
    return 0


if __name__ == "__main__":
    sys.exit(main())
