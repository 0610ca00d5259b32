"""GUI costs, side by side in one run (figures only, no pass/fail).

CPU (this 2-core machine):   python benchmarks/gui.py
GPU box, headless:           QT_QPA_PLATFORM=offscreen python benchmarks/gui.py --preset gpt2 --device cuda

1. Training throughput driven from the window (MainWindow, Start clicked on the train panel, the
   view following the trained step) vs the headless engine (Trainer.run() looped directly), same
   plan / model / recipe / steps, alternated in one process. tokens/s = tokens of the steps after
   the warmup / wall time between their reports (the per-step `dt` figure is printed too).
   Target: window / headless >= 0.97.
2. Main-thread event latency while the window trains: a 5 ms QTimer probe records its lateness
   (actual - expected interval). Target: p99 <= 16 ms.
3. Stream paint time with ~5,000 token chips visible (StreamView.grab(), its paint_stats()).
4. Memory over 20,000 steps of plot history: StepReport-shaped pushes through the real
   PlotCoalescer + LossPlot + heatmap + position plot (a flush every 50 pushes); RSS from
   /proc/self/statm, and the time of one flush + repaint as the history grows.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

_TMP = tempfile.mkdtemp(prefix="nanogpt-viz-gui-bench-")
os.environ.setdefault("NANOGPT_VIZ_RUNS", os.path.join(_TMP, "runs"))
os.environ.setdefault("NANOGPT_VIZ_CACHE", os.path.join(_TMP, "cache"))

from PySide6.QtCore import QElapsedTimer, QEventLoop, QSettings, QTimer  # noqa: E402

from nanogpt_viz.engine.runtime import tune_allocator  # noqa: E402
from nanogpt_viz.ui.app import make_app  # noqa: E402

tune_allocator()  # as `nanogpt-viz` does at start-up (both the window and the headless runs get it)

DEFAULT_PLAN = {"tiny": (32, 8), "small": (256, 8), "gpt2": (1024, 16), "gpt2-medium": (1024, 8)}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def pct(a, q) -> float:
    return float(np.percentile(np.asarray(a, np.float64), q)) if len(a) else float("nan")


def spin(app, cond, timeout_s: float, signals=()) -> None:
    """Run a real event loop (as app.exec() would: idle between events) until `cond()` holds.

    With `signals`, `cond` is checked when one of them fires and otherwise only every 500 ms (a
    timer waking the GUI thread 50 times a second would itself take CPU from a model training on
    2 cores); without, it is polled every 20 ms.
    """
    if cond():
        return
    loop = QEventLoop()
    state = {"timed_out": False}

    def check(*_args) -> None:
        if cond():
            loop.quit()

    def expire() -> None:
        state["timed_out"] = True
        loop.quit()

    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(expire)
    deadline.start(int(timeout_s * 1000))
    poll = QTimer()
    for sig in signals:
        sig.connect(check)
    poll.setInterval(500 if signals else 20)  # with signals, only a safety net
    poll.timeout.connect(check)
    poll.start()
    loop.exec()
    poll.stop()
    deadline.stop()
    for sig in signals:
        sig.disconnect(check)
    if state["timed_out"]:
        raise SystemExit("timed out")


def throughput(recv: list[tuple[float, int]], tokens_per_step: int, warmup: int) -> float:
    """tokens/s over the reports after `warmup`: wall time between the first and the last of them."""
    timed = recv[warmup:]
    if len(timed) < 2:
        return float("nan")
    (t0, s0), (t1, s1) = timed[0], timed[-1]
    return (s1 - s0) * tokens_per_step / (t1 - t0)


# ---- 1 + 2: the window vs the engine --------------------------------------------------------
def gui_run(app, win, steps: int, warmup: int, with_probe: bool = False) -> dict:
    """One training run started from the window. The latency probe wakes the GUI thread 200 times
    a second, which on 2 cores costs the model CPU time, so throughput rounds run without it."""
    from nanogpt_viz.engine.trainer import StepReport

    recv: list[tuple[float, int]] = []
    reports: list[StepReport] = []
    ends = []
    lateness: list[float] = []
    probe = QTimer()
    probe.setTimerType(probe.timerType().PreciseTimer)
    probe.setInterval(5)
    clock = QElapsedTimer()
    state = {"last": None}

    def on_probe() -> None:
        now = clock.nsecsElapsed() / 1e6
        if state["last"] is not None and len(reports) > warmup:
            lateness.append(max(0.0, now - state["last"] - 5.0))
        state["last"] = now

    def on_report(rep) -> None:
        # when the engine made the report: the window receives step reports in batches, at its
        # refresh rate, so the arrival time would be off by up to a refresh period
        recv.append((rep.finished_at, rep.step))
        reports.append(rep)

    probe.timeout.connect(on_probe)
    ctl = win.trainer_ctl
    ctl.report.connect(on_report)
    ctl.ended.connect(ends.append)
    try:
        win.train_panel.steps.setValue(steps)
        clock.start()
        if with_probe:
            probe.start()
        win.train_panel.start_btn.click()  # the panel's Start, as a user would
        spin(app, lambda: bool(ends) and not ctl.is_running(), 3600, signals=(ctl.running_changed,))
    finally:
        probe.stop()
        ctl.report.disconnect(on_report)
        ctl.ended.disconnect(ends.append)
    if ends[-1].reason != "finished":
        raise SystemExit(f"window run failed: {ends[-1].message}")
    tps_step = reports[0].starts.size * win.session.plan.N
    timed = reports[warmup:]
    return {"tok_s": throughput(recv, tps_step, warmup),
            "tok_s_dt": tps_step * len(timed) / sum(r.dt for r in timed),
            "lateness": lateness, "final_loss": reports[-1].loss, "trainer": win.last_trainer}


def headless_run(corpus_path: str, pc, preset: str, mc, tc, warmup: int) -> dict:
    """The headless engine as users run it: `nanogpt-viz train --json` in its own process, on the
    same corpus file, plan, model and recipe. (Training once in this process's main thread and
    then in a thread measurably slows the second run, so the engine gets a process of its own.)
    tokens/s is timed as for the window: between the arrivals of the reports after the warmup."""
    import json
    import subprocess

    from nanogpt_viz.run.launch import train_args

    args = train_args(corpus_path, pc, preset, mc, tc, os.path.join(_TMP, f"headless-{time.time_ns()}"))
    proc = subprocess.Popen([sys.executable, "-m", "nanogpt_viz", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1)
    recv: list[tuple[float, int]] = []
    recs = []
    for line in proc.stdout:
        if line.startswith("{"):
            recv.append((time.perf_counter(), 0))
            recs.append(json.loads(line))
    if proc.wait() != 0 or len(recs) != tc.steps:
        raise SystemExit(f"headless run failed (exit {proc.returncode}, {len(recs)} steps)")
    recv = [(t, r["step"]) for (t, _), r in zip(recv, recs)]
    timed = recs[warmup:]
    return {"tok_s": throughput(recv, pc.tokens_per_step, warmup),
            "tok_s_dt": pc.tokens_per_step * len(timed) / sum(r["dt"] for r in timed),
            "final_loss": recs[-1]["loss"]}


def bench_training(app, args) -> dict:
    from nanogpt_viz.ui.main_window import MainWindow

    win = MainWindow(settings=QSettings(os.path.join(_TMP, "settings.ini"), QSettings.Format.IniFormat))
    win.resize(1500, 920)
    win.show()
    win.startup(None)
    spin(app, lambda: win.session.model is not None and not win.loader.is_busy(), 120)
    N, B = args.block_size or DEFAULT_PLAN[args.preset][0], args.batch_size or DEFAULT_PLAN[args.preset][1]
    win.plan_panel.n.setValue(N)
    win.plan_panel.b.setValue(B)
    tp = win.train_panel
    tp.preset.setCurrentText(args.preset)
    tp.eval_interval.setValue(0)
    idx = tp.device.findData(args.device)
    if idx < 0:
        raise SystemExit(f"device {args.device!r} is not offered by the train panel")
    tp.device.setCurrentIndex(idx)
    tp.dtype.setCurrentText(args.dtype)
    tp.compile.setCurrentText(args.compile)
    steps = args.warmup + args.steps
    print(f"plan N={N} B={B} ({N * B:,} tokens/step), preset {args.preset}, {steps} steps "
          f"({args.warmup} warmup), device {args.device}, {args.repeat} rounds", flush=True)
    gui, headless, ratios = [], [], []
    cfg = None
    for r in range(args.repeat):
        # the order alternates (window first in even rounds) so a drift of the machine's speed
        # over the run does not favour either side; each round's pair gives one ratio
        h = None
        if r % 2 and cfg is not None:
            h = headless_run(*cfg)
        win.resume_dir = None  # every round is a fresh run
        g = gui_run(app, win, steps, args.warmup)
        t = g.pop("trainer")
        cfg = (str(win.session.corpus.path), t.plan_config, args.preset, t.model_config, t.train_config,
               args.warmup)
        if h is None:
            h = headless_run(*cfg)
        gui.append(g)
        headless.append(h)
        ratios.append(g["tok_s"] / h["tok_s"])
        print(f"  round {r}: window {g['tok_s']:,.0f} tok/s (dt-based {g['tok_s_dt']:,.0f}), "
              f"headless {h['tok_s']:,.0f} tok/s (dt-based {h['tok_s_dt']:,.0f}); ratio {ratios[-1]:.3f}; "
              f"final loss {g['final_loss']:.4f} / {h['final_loss']:.4f}", flush=True)
    win.resume_dir = None
    probe_run = gui_run(app, win, steps, args.warmup, with_probe=True)  # latency: its own run
    print(f"  latency round: window {probe_run['tok_s']:,.0f} tok/s with the 5 ms probe running", flush=True)
    win.close()
    lat = probe_run["lateness"]
    return {"gui": float(np.mean([g["tok_s"] for g in gui])),
            "headless": float(np.mean([h["tok_s"] for h in headless])),
            "ratio_mean": float(np.mean(ratios)), "ratio_median": float(np.median(ratios)),
            "ratio_se": float(np.std(ratios, ddof=1) / np.sqrt(len(ratios))) if len(ratios) > 1 else float("nan"),
            "ratio_n": len(ratios),
            "lat_p50": pct(lat, 50), "lat_p99": pct(lat, 99), "lat_max": max(lat) if lat else float("nan"),
            "lat_n": len(lat)}


# ---- 3: stream paint -------------------------------------------------------------------------
def bench_paint(app, target: int = 5000, frames: int = 30) -> dict:
    from nanogpt_viz.data.batching import BatchPlan
    from nanogpt_viz.config import PlanConfig
    from nanogpt_viz.data.corpus import default_corpus
    from nanogpt_viz.data.tokenizer import display_table
    from nanogpt_viz.ui.stream_view import ZOOM_LEVELS, StreamView
    from nanogpt_viz.viewmodel import StreamModel

    tokens = default_corpus().split("train")
    view = StreamView()
    view.set_display_table(display_table())
    view.set_model(StreamModel(tokens, BatchPlan(PlanConfig(block_size=16, batch_size=4), len(tokens))))
    results = []
    for level in range(len(ZOOM_LEVELS)):
        view.set_zoom(level)
        view.resize(1600, 400)
        view.show()
        app.processEvents()
        view.grab()
        tpl = view.tokens_per_line()
        line_h = view._layout.line_h  # noqa: SLF001 - benchmark only
        lines = max(1, round(target / tpl))
        view.resize(1600, lines * line_h + 12)
        app.processEvents()
        view.grab()
        chips = view.paint_stats()["chips"]
        if not 0.8 * target <= chips <= 1.25 * target or view.height() > 4000:
            continue
        ms, wall = [], []
        for k in range(frames):
            view.set_step(k % 50)  # each frame a new step: the slice cache is rebuilt as when stepping
            t0 = time.perf_counter()
            view.grab()
            wall.append((time.perf_counter() - t0) * 1e3)
            ms.append(view.paint_stats()["ms"])
        results.append({"zoom": ZOOM_LEVELS[level], "chips": view.paint_stats()["chips"],
                        "size": (view.width(), view.height()), "p50": pct(ms, 50), "max": max(ms),
                        "grab_p50": pct(wall, 50)})
    view.close()
    return {"levels": results}


# ---- 4: memory over a long history ------------------------------------------------------------
def bench_memory(app, steps: int, flush_every: int = 50, B: int = 12, N: int = 1024) -> dict:
    from nanogpt_viz.ui.plots import LossPlot, PlotCoalescer, PositionLossPlot, TokenLossHeatmap

    loss_plot, heatmap, position = LossPlot(), TokenLossHeatmap(), PositionLossPlot()
    for w in (loss_plot, heatmap, position):
        w.resize(600, 400)
        w.show()
    co = PlotCoalescer(loss_plot, heatmap, position)
    rng = np.random.default_rng(0)
    marks = sorted({0, 5_000, 10_000, steps // 2, steps} - {s for s in (5_000, 10_000) if s > steps})
    out = []
    flush_ms: list[float] = []
    app.processEvents()
    for step in range(steps + 1):
        if step in marks:
            co.flush()
            app.processEvents()
            out.append((step, rss_mb(), len(loss_plot), pct(flush_ms[-50:], 50) if flush_ms else float("nan")))
        if step == steps:
            break
        per_token = rng.random((1, 1, B, N), dtype=np.float32) * 4 + 10.0 / (1 + step / 500)
        rep = SimpleNamespace(step=step, loss=float(per_token.mean()), per_token=per_token, ranks=(0,),
                              position_loss=per_token[0, 0].mean(axis=0),
                              val_loss=float(per_token.mean()) if step % 250 == 0 else None)
        co.push(rep)
        if step % flush_every == flush_every - 1:
            t0 = time.perf_counter()
            co.flush()
            app.processEvents()  # the redraw and repaint it causes
            flush_ms.append((time.perf_counter() - t0) * 1e3)
    for w in (loss_plot, heatmap, position):
        w.close()
    return {"marks": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu", help="cpu / cuda / auto (the train panel's choices)")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--compile", default="auto", choices=("auto", "on", "off"))
    ap.add_argument("--steps", type=int, default=150, help="timed steps per run (after the warmup)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=2, help="window/headless rounds, alternated")
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--mem-steps", type=int, default=20_000)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: train,paint,memory")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import torch

    app = make_app()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
          f"Qt platform {app.platformName()}", flush=True)
    summary = []
    if "train" not in skip:
        print("\n[1, 2] training from the window vs the headless engine", flush=True)
        t = bench_training(app, args)
        summary.append(f"train throughput   window {t['gui']:,.0f} tok/s  headless {t['headless']:,.0f} tok/s  "
                       f"ratio of means {t['gui'] / t['headless']:.3f}  (target >= 0.97)")
        summary.append(f"                   paired ratios over {t['ratio_n']} rounds: mean {t['ratio_mean']:.3f} "
                       f"± {t['ratio_se']:.3f} (standard error), median {t['ratio_median']:.3f}")
        summary.append(f"event latency      p50 {t['lat_p50']:.2f} ms  p99 {t['lat_p99']:.2f} ms  "
                       f"max {t['lat_max']:.2f} ms over {t['lat_n']:,} probes  (target p99 <= 16 ms)")
    if "paint" not in skip:
        print("\n[3] stream paint with ~5,000 chips visible", flush=True)
        p = bench_paint(app)
        for r in p["levels"]:
            print(f"  zoom {r['zoom']!s:>12}: {r['chips']:,} chips in {r['size'][0]}x{r['size'][1]}: paint p50 "
                  f"{r['p50']:.1f} ms, max {r['max']:.1f} ms (grab p50 {r['grab_p50']:.1f} ms)", flush=True)
        if p["levels"]:
            worst = max(p["levels"], key=lambda r: r["p50"])
            summary.append(f"stream paint       ~5k chips: p50 {min(r['p50'] for r in p['levels']):.1f}–"
                           f"{worst['p50']:.1f} ms across {len(p['levels'])} zoom levels (worst: zoom "
                           f"{worst['zoom']}, max {worst['max']:.1f} ms)")
    if "memory" not in skip:
        print(f"\n[4] plot history memory over {args.mem_steps:,} steps", flush=True)
        m = bench_memory(app, args.mem_steps)
        for step, rss, n, fms in m["marks"]:
            print(f"  step {step:>7,}: RSS {rss:7.1f} MB, loss points stored {n:,}, flush + repaint "
                  f"{fms:.1f} ms (median of the last 50)", flush=True)
        first, last = m["marks"][0][1], m["marks"][-1][1]
        summary.append("memory (RSS)       " + "  ".join(f"{s // 1000}k: {r:.0f} MB" for s, r, _, _ in m["marks"])
                       + f"  (growth {last - first:+.1f} MB)")
        summary.append(f"plot flush+repaint at {m['marks'][-1][0]:,} points: {m['marks'][-1][3]:.1f} ms")
    print("\n==== summary " + "=" * 67)
    for line in summary:
        print(line)
    print("=" * 80)


if __name__ == "__main__":
    main()
