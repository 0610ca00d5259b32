"""Tokenization throughput and huge-file open cost.

    python benchmarks/tokenize_bench.py [--mb 50] [--repeats 1] [--threads N] [--skip-sparse]

1. Builds ~N MB of text (CPython's pydoc topics, repeated with varied numbering), writes
   it to a temp file, and measures in the same run:
   * bare ``enc.encode_ordinary(text)`` on the text already in memory;
   * ``nanogpt_viz.data.corpus.tokenize_text_file`` from the file, with a progress callback,
     writing the uint16 .bin (read + decode + split + encode + write).
   It prints both MB/s (MB = 10^6 UTF-8 bytes) and their ratio, and checks the tokens match.
2. Opens a sparse 20 GB nanoGPT .bin (10^10 tokens, made with truncate) and prints the
   open time and peak RSS.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nanogpt_viz.data import corpus as C
from nanogpt_viz.data import tokenizer as T


def build_text(target_mb: float) -> str:
    from pydoc_data.topics import topics
    keys = sorted(topics)
    parts: list[str] = []
    size = 0
    i = 0
    while size < target_mb * 1e6:
        k = keys[i % len(keys)]
        piece = f"\n\n## {i // len(keys) + 1}.{i % len(keys) + 1} {k} (revision {i * 7919 % 100003})\n\n{topics[k]}"
        parts.append(piece)
        size += len(piece.encode("utf-8"))
        i += 1
    return "".join(parts)


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench_tokenize(mb: float, repeats: int, threads: int | None) -> None:
    enc = T.get_encoding()
    text = build_text(mb)
    nbytes = len(text.encode("utf-8"))
    tmp = Path(tempfile.mkdtemp(prefix="nanogpt-viz-bench-"))
    try:
        src = tmp / "input.txt"
        src.write_text(text, encoding="utf-8")
        out = tmp / "input.bin"
        print(f"text: {nbytes / 1e6:.1f} MB, {len(text):,} chars; cores: {os.cpu_count()}")
        bare_best = proj_best = float("inf")
        n_bare = n_proj = 0
        calls = 0
        for r in range(repeats):
            t0 = time.perf_counter()
            ids = enc.encode_ordinary(text)
            bare = time.perf_counter() - t0
            n_bare = len(ids)
            del ids
            bare_best = min(bare_best, bare)

            calls = 0

            def progress(done, total):
                nonlocal calls
                calls += 1
            t0 = time.perf_counter()
            n_proj, _ = C.tokenize_text_file(src, out, progress=progress, num_threads=threads)
            proj = time.perf_counter() - t0
            proj_best = min(proj_best, proj)
            print(f"  run {r + 1}: bare {nbytes / bare / 1e6:6.2f} MB/s ({bare:.2f} s)   "
                  f"tokenize_text_file {nbytes / proj / 1e6:6.2f} MB/s ({proj:.2f} s)")
        assert n_bare == n_proj, (n_bare, n_proj)
        same = np.array_equal(np.fromfile(out, dtype="<u2"), np.asarray(enc.encode_ordinary(text), np.uint16))
        print(f"bare encode_ordinary (in memory): {nbytes / bare_best / 1e6:.2f} MB/s")
        print(f"tokenize_text_file (from file, progress on, {calls} progress calls): "
              f"{nbytes / proj_best / 1e6:.2f} MB/s")
        print(f"ratio project/bare: {bare_best / proj_best:.2f}x   tokens: {n_proj:,}   identical: {same}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_sparse() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nanogpt-viz-sparse-"))
    path = tmp / "train.bin"
    try:
        with open(path, "wb") as f:
            f.truncate(2 * 10**10)
        before = rss_mib()
        t0 = time.perf_counter()
        c = C.open_corpus(path)
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        rows = c.train.gather(np.random.default_rng(0).integers(0, len(c.train) - 1024, 64), 1024)
        dg = time.perf_counter() - t1
        print(f"sparse 20 GB nanoGPT .bin ({len(c) + len(c.val):,} tokens): open {dt * 1000:.1f} ms, "
              f"gather 64x1024 {dg * 1000:.1f} ms, peak RSS {before:.0f} -> {rss_mib():.0f} MiB")
        del c, rows
    except OSError as e:
        print(f"sparse test skipped: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-sparse", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_sparse:
        bench_sparse()
    bench_tokenize(args.mb, args.repeats, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
