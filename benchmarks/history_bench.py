"""What the per-token history costs (run/history.py), printed side by side.

    python benchmarks/history_bench.py [--steps 20000] [--out benchmarks/results/cpu2_history.log]

1. append: one HistoryWriter.append per step for three shapes (the founding example N=1024, B=4; GPT-2
   124M's B=16, N=1024; K=40 micro-batches of B=12 as nanoGPT's GPT-2 recipe), against a tiny CPU step;
2. the trainer with and without a run directory (history + run.json written) on the tiny preset;
3. a 20,000-step history of the founding example: RSS while appending (flat: nothing is kept in memory),
   then the reader: open, and a random past step with everything a scrub repaints (per-token rows,
   loss by position, the step x position map of the whole run).
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nanogpt_viz.run.history import HistoryReader, HistoryWriter  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def append_cost(tmp: Path, K: int, B: int, N: int, n: int = 500) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    rows = (rng.random((8, K, B, N), dtype=np.float32) * 11)
    w = HistoryWriter(tmp, rank=0, world_size=1, K=K, B=B, N=N)
    t0 = time.perf_counter()
    for s in range(n):
        w.append(s, rows[s % 8])
    dt = (time.perf_counter() - t0) / n
    w.close()
    per_step = sum(p.stat().st_size for p in (tmp / "history").glob("rank0000.*") if p.suffix != ".json") // n
    return dt, per_step


def trainer_steps(tmp: Path | None, steps: int = 30) -> tuple[float, float]:
    """(median step seconds, median seconds a step spends in the trainer's history write)."""
    from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
    from nanogpt_viz.engine.trainer import StepReport, Trainer

    tokens = np.random.default_rng(1).integers(0, 50257, 200_000).astype(np.uint16)
    pc = PlanConfig(block_size=64, batch_size=8)
    tr = Trainer(tokens, None, pc, MODEL_PRESETS["tiny"].with_(block_size=64),
                 TrainConfig(steps=steps, eval_interval=0, device="cpu", compile=False), out_dir=tmp)
    spent: list[float] = []
    inner = tr._record_step

    def timed(step, per_token):
        t0 = time.perf_counter()
        inner(step, per_token)
        spent.append(time.perf_counter() - t0)

    tr._record_step = timed
    dts = [e.dt for e in tr.run() if isinstance(e, StepReport)]
    return float(np.median(dts[5:])), float(np.median(spent[5:])) if spent else 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--out", default=None, help="also write the output to this file")
    args = ap.parse_args()
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    import torch

    say(f"# history_bench: {os.cpu_count()} CPU cores, torch {torch.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        tiny, _ = trainer_steps(None)
        say(f"tiny CPU step (preset tiny, N=64, B=8, median of 25): {tiny * 1e3:.2f} ms")
        say("")
        say(f"{'shape (K, B, N)':>22} {'bytes/step':>11} {'append':>10} {'vs tiny step':>13}")
        for i, (K, B, N) in enumerate([(1, 4, 1024), (1, 16, 1024), (40, 12, 1024)]):
            dt, per = append_cost(root / f"a{i}", K, B, N)
            say(f"{str((K, B, N)):>22} {per:>11,} {dt * 1e6:>8.0f} us {100 * dt / tiny:>12.2f}%")
        say("")
        # the trainer's own history write, timed inside a real run (the step time itself is noisy on a shared
        # 2-core machine; the write is what the history adds to it), and whole steps alternated A/B
        step_rec, write = trainer_steps(root / "run0")
        say(f"trainer (tiny, N=64, B=8, CPU): the history write takes {write * 1e6:.0f} us of a {step_rec * 1e3:.1f} ms "
            f"step ({100 * write / step_rec:.3f}%)")
        ab = {"without a run directory": [], "with history/ and run.json": []}
        for k in range(3):
            ab["without a run directory"].append(trainer_steps(None, 20)[0])
            ab["with history/ and run.json"].append(trainer_steps(root / f"run{k + 1}", 20)[0])
        say("  whole steps, A/B alternated 3 times, best median: " + ", ".join(
            f"{min(v) * 1e3:.1f} ms {k}" for k, v in ab.items()))
        say("")

        # a long history of the founding example
        K, B, N = 1, 4, 1024
        path = root / "long"
        rng = np.random.default_rng(2)
        rows = rng.random((16, K, B, N), dtype=np.float32) * 11
        w = HistoryWriter(path, rank=0, world_size=1, K=K, B=B, N=N)
        marks = {}
        t0 = time.perf_counter()
        for s in range(args.steps):
            w.append(s, rows[s % 16])
            if s + 1 in (1000, args.steps // 2, args.steps):
                marks[s + 1] = rss_mb()
        total = time.perf_counter() - t0
        w.close()
        size = sum(p.stat().st_size for p in (path / "history").iterdir())
        say(f"{args.steps:,} steps of (K, B, N) = {(K, B, N)} appended in {total:.2f} s "
            f"({total / args.steps * 1e6:.0f} us a step), {size / 2**20:.1f} MiB on disk")
        say("RSS while appending: " + ", ".join(f"{rss:.1f} MiB after {n:,} steps" for n, rss in marks.items()))

        t0 = time.perf_counter()
        r = HistoryReader(path)
        t_open = time.perf_counter() - t0
        say(f"reader: open {t_open * 1e3:.1f} ms ({len(r.steps):,} steps)")
        qs = rng.integers(0, args.steps, 200)
        times = {"per_token": [], "position_mean": [], "position_map (2048 rows)": [], "all three": []}
        for q in qs:
            q = int(q)
            t0 = time.perf_counter()
            pt = r.per_token(q)
            t1 = time.perf_counter()
            pm = r.position_mean(q)
            t2 = time.perf_counter()
            steps, means = r.position_map(0, None, 2048)
            t3 = time.perf_counter()
            assert pt.shape == (K, 1, B, N) and pm.shape == (N,) and means.shape == (2048, N)
            times["per_token"].append(t1 - t0)
            times["position_mean"].append(t2 - t1)
            times["position_map (2048 rows)"].append(t3 - t2)
            times["all three"].append(t3 - t0)
        for name, ts in times.items():
            ts = np.array(ts) * 1e3
            say(f"  random past step, {name:>26}: median {np.median(ts):7.3f} ms, p99 {np.percentile(ts, 99):7.3f} ms")
        say(f"(target: < 50 ms for a scrub's data, including the plot's)")
        say(f"peak RSS of the whole benchmark: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
