"""GUI costs, side by side in one run (figures only, no pass/fail).

CPU (this 2-core machine):   python benchmarks/gui.py
GPU box, headless:           QT_QPA_PLATFORM=offscreen python benchmarks/gui.py --preset gpt2 --device cuda

1. Training throughput, three sides with the same plan / model / recipe / steps, alternated in one run:
   - window: MainWindow, Start clicked on the train panel, the view following the trained step. It is
     a real window run: a new run directory with run.json, metrics.jsonl, the per-token loss history
     (run/history.py) and ckpt.pt, checked after every round (every step's rows in the history);
   - headless: the plain engine, Trainer.run() looped in a process of its own, no run directory
     (out_dir=None: no run.json, no history, no metrics, no checkpoint);
   - headless + history: the same, with a run directory (out_dir, run.json as the window writes it):
     the trainer appends every step's per-token losses to history/ through HistoryWriter; the time of
     each append (Trainer._record_step, timed around the real call) is reported per step as well.
   tokens/s = tokens of the steps after the warmup / wall time between their reports (the engine's
   StepReport.finished_at; the per-step `dt` figure is printed too). Targets: window / headless >= 0.97;
   history: (headless + history) / headless >= 0.99 and append time < 1% of the step time.
2. Main-thread event latency while the window trains: a 5 ms QTimer probe records its lateness
   (actual - expected interval). Target: p99 <= 16 ms.
3. Stream paint time with ~5,000 token chips visible (StreamView.grab(), its paint_stats()).
4. Memory over 20,000 steps of plot history: StepReport-shaped pushes through the real
   PlotCoalescer + LossPlot + heatmap + position plot (a flush every 50 pushes); RSS from
   /proc/self/statm, and the time of one flush + repaint as the history grows.
(Scrubbing a 20,000-step run's history in the window: benchmarks/scrub_bench.py.)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


# ---- the headless side: its own process, no Qt --------------------------------------------------
def headless_child(spec: dict) -> None:
    """Train with the plain engine (spec["out"] None) or the engine writing its run record (a run
    directory: run.json as the window writes it, and the history); one JSON line per step on stdout."""
    from nanogpt_viz.config import ModelConfig, PlanConfig, TrainConfig
    from nanogpt_viz.engine.runtime import tune_allocator
    from nanogpt_viz.engine.trainer import RunEnd, StepReport, Trainer

    tune_allocator()  # as `nanogpt-viz` does at start-up (the window gets it too)
    if spec["builtin"]:
        from nanogpt_viz.data.corpus import default_corpus

        corpus = default_corpus()
    else:
        from nanogpt_viz.data.corpus import open_corpus

        corpus = open_corpus(spec["corpus"])
    pc, mc = PlanConfig.from_dict(spec["plan"]), ModelConfig.from_dict(spec["model"])
    tc = TrainConfig.from_dict(spec["train"])
    tokens = corpus.split(pc.split)
    val = corpus.split("val") if corpus.has_split("val") and pc.split == "train" else None
    out, manifest = spec["out"], None
    if out is not None:  # as RunActions.start: a new directory, its run.json, then the trainer
        from nanogpt_viz.run.record import make_manifest, read_manifest, write_manifest

        os.makedirs(out)
        write_manifest(out, make_manifest(out, corpus, pc.split, pc, mc, tc, world_size=pc.world_size,
                                          model_preset=spec["preset"]))
        manifest = read_manifest(out)
    trainer = Trainer(tokens, val, pc, mc, tc, out_dir=out, model_preset=spec["preset"], manifest=manifest,
                      corpus_info={"path": str(corpus.path), "name": corpus.name, "tokens": len(tokens),
                                   "vocab_size": corpus.vocab_size})
    spent: list[float] = []
    record = trainer._record_step  # noqa: SLF001 - timed around the real call, nothing else changes

    def timed_record(step, per_token):
        t0 = time.perf_counter()
        record(step, per_token)
        spent.append(time.perf_counter() - t0)

    if out is not None:
        trainer._record_step = timed_record  # noqa: SLF001
    for ev in trainer.run():
        if isinstance(ev, StepReport):
            hist_s = spent.pop() if spent else None
            sys.stdout.write(json.dumps({"step": ev.step, "t": ev.finished_at, "dt": ev.dt, "loss": ev.loss,
                                         "hist_s": hist_s}) + "\n")
            sys.stdout.flush()
        elif isinstance(ev, RunEnd):
            sys.stdout.write(json.dumps({"end": str(ev.reason), "message": ev.message}) + "\n")
            sys.stdout.flush()


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--headless-child":
    headless_child(json.loads(sys.argv[2]))
    sys.exit(0)

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

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
def check_run_dir(run_dir: Path, steps: int, N: int) -> str:
    """What the window's run wrote (a real window run: run.json, metrics.jsonl, history/, ckpt.pt);
    exits when the history lacks a step's per-token rows."""
    from nanogpt_viz.run.history import HistoryReader

    hist = HistoryReader(run_dir)
    kept = sum(hist.has_rows(int(s)) for s in hist.steps)
    lines = sum(1 for _ in open(run_dir / "metrics.jsonl", encoding="utf-8"))
    ckpt = run_dir / "ckpt.pt"
    if len(hist) != steps or kept != steps or hist.N != N or not (run_dir / "run.json").is_file():
        raise SystemExit(f"the window's run directory {run_dir} is incomplete: history {len(hist)} steps "
                         f"({kept} with rows, N={hist.N}), run.json {(run_dir / 'run.json').is_file()}")
    return (f"run.json, metrics.jsonl {lines} lines, history {len(hist)} steps with rows "
            f"({hist.bytes_on_disk() / 2 ** 20:.1f} MiB), ckpt.pt "
            + (f"{ckpt.stat().st_size / 2 ** 20:,.0f} MiB" if ckpt.exists() else "MISSING"))


def attribute_late(late_at, paints, gcs, recv, win, top: int = 12) -> list[str]:
    """What the GUI thread was doing when each of the latest probes should have fired: the refresh clock's
    paints (painter and its own time), garbage-collector passes and step reports that overlap the probe's
    late interval [fired - lateness, fired]. Nothing overlapping: the repaint a paint posted (a later
    event), another event, or the GIL held by the trainer's thread. Each line also says where in the run the
    probe was due (after which step)."""
    names = [getattr(f, "__name__", str(i)) for i, f in enumerate(win.clock._painters)]  # noqa: SLF001
    out = []
    for t, late in sorted(late_at, key=lambda x: -x[1])[:top]:
        a = t - late / 1e3 - 0.005
        what = [f"{names[i]} {ms:.1f} ms at {1e3 * (t0 - a):+.1f}" for i, ms, t0 in paints if a <= t0 + ms / 1e3 and t0 <= t]
        what += [f"gc gen{g} {ms:.1f} ms" for t0, ms, g in gcs if a <= t0 + ms / 1e3 and t0 <= t]
        steps = [s for f, s in recv if a <= f <= t]
        if steps:
            what.append(f"steps {steps[0]}..{steps[-1]} finished")
        before = [(f, s) for f, s in recv if f < a]
        if before:  # where in the run: the last step the engine had finished when the probe was due
            f, s = before[-1]
            what.append(f"due {1e3 * (a - f):.0f} ms after step {s} finished"
                        + (" (the run's last step)" if s == recv[-1][1] else ""))
        out.append(f"{late:.1f} ms: " + "; ".join(what))
    return out


def gui_run(app, win, steps: int, warmup: int, with_probe: bool = False) -> dict:
    """One training run started from the window. The latency probe wakes the GUI thread 200 times
    a second, which on 2 cores costs the model CPU time, so throughput rounds run without it."""
    recv: list[tuple[float, int]] = []
    reports: list = []
    ends = []
    lateness: list[float] = []
    probe = QTimer()
    probe.setTimerType(probe.timerType().PreciseTimer)
    probe.setInterval(5)
    clock = QElapsedTimer()
    state = {"last": None}

    late_at: list[tuple[float, float]] = []  # (perf_counter, lateness ms) of every probe later than 16 ms
    gcs: list[tuple[float, float, int]] = []  # (start, ms, generation) of the garbage collector's passes

    def on_probe() -> None:
        now = clock.nsecsElapsed() / 1e6
        if state["last"] is not None and len(reports) > warmup:
            lateness.append(max(0.0, now - state["last"] - 5.0))
            if lateness[-1] > 16.0:
                late_at.append((time.perf_counter(), lateness[-1]))
        state["last"] = now

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            state["gc"] = time.perf_counter()
        elif "gc" in state:
            t0 = state.pop("gc")
            gcs.append((t0, (time.perf_counter() - t0) * 1e3, info["generation"]))

    def on_reports(batch) -> None:
        # when the engine made each report: the window receives them in batches, at its refresh
        # rate, so the arrival time would be off by up to a refresh period
        for rep in batch:
            recv.append((rep.finished_at, rep.step))
            reports.append(rep)

    probe.timeout.connect(on_probe)
    win.clock.paint_ms.clear()
    gc.callbacks.append(on_gc)
    run = win.run  # the RunController
    win.runs.set_continuation(None)  # every round is a fresh run (Start would continue the last checkpoint)
    run.reports.connect(on_reports)
    run.ended.connect(ends.append)
    try:
        win.train_panel.steps.setValue(steps)
        clock.start()
        if with_probe:
            probe.start()
        win.train_panel.start_btn.click()  # the panel's Start, as a user would
        spin(app, lambda: bool(ends) and not run.is_running(), 3600, signals=(run.running_changed,))
    finally:
        probe.stop()
        gc.callbacks.remove(on_gc)
        run.reports.disconnect(on_reports)
        run.ended.disconnect(ends.append)
    if str(ends[-1].reason) != "finished":
        raise SystemExit(f"window run failed: {ends[-1].reason}: {ends[-1].message}")
    N = win.session.plan.N
    tps_step = reports[0].starts.size * N
    timed = reports[warmup:]
    trainer = run.trainer
    by_painter: dict[int, list[float]] = {}
    for i, ms, _ in win.clock.paint_ms:  # each painter's time in one tick (the refresh clock's own clock)
        by_painter.setdefault(i, []).append(ms)
    return {"paint_ms": by_painter, "late": attribute_late(late_at, list(win.clock.paint_ms), gcs, recv, win),
            "tok_s": throughput(recv, tps_step, warmup),
            "tok_s_dt": tps_step * len(timed) / sum(r.dt for r in timed), "dt_ms": 1e3 * float(np.median([r.dt for r in timed])),
            "lateness": lateness, "final_loss": reports[-1].loss, "trainer": trainer,
            "run_dir": Path(run.run_dir), "record": check_run_dir(Path(run.run_dir), steps, N)}


def headless_run(spec: dict, with_history: bool, warmup: int) -> dict:
    """The headless engine in a process of its own (training once in this process's main thread
    and then in a thread measurably slows the second run), with or without the history."""
    spec = dict(spec, out=os.path.join(_TMP, f"headless-{time.time_ns()}") if with_history else None)
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--headless-child", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    recs, end = [], None
    for line in proc.stdout:
        if line.startswith("{"):
            rec = json.loads(line)
            if "end" in rec:
                end = rec
            else:
                recs.append(rec)
    err = proc.stderr.read()
    steps = spec["train"]["steps"]
    if proc.wait() != 0 or len(recs) != steps or end is None or end["end"] != "finished":
        raise SystemExit(f"headless run failed (exit {proc.returncode}, {len(recs)} steps, {end}):\n{err[-3000:]}")
    out = {"final_loss": recs[-1]["loss"]}
    if with_history:
        from nanogpt_viz.run.history import HistoryReader

        hist = HistoryReader(spec["out"])
        if len(hist) != steps:
            raise SystemExit(f"headless + history: the history holds {len(hist)} of {steps} steps")
        hs = [r["hist_s"] for r in recs[warmup:]]
        out["hist_ms"] = 1e3 * float(np.median(hs))
        out["hist_ms_p99"] = 1e3 * pct(hs, 99)
        out["hist_share"] = float(np.sum(hs) / np.sum([r["dt"] for r in recs[warmup:]]))
        out["hist_mib"] = hist.bytes_on_disk() / 2 ** 20
        shutil.rmtree(spec["out"], ignore_errors=True)  # a gpt2 checkpoint is 1.5 GB: keep the disk free
    recv = [(r["t"], r["step"]) for r in recs]
    timed = recs[warmup:]
    tokens = spec["tokens_per_step"]
    out.update(tok_s=throughput(recv, tokens, warmup), tok_s_dt=tokens * len(timed) / sum(r["dt"] for r in timed),
               dt_ms=1e3 * float(np.median([r["dt"] for r in timed])))
    return out


def make_window(app, args):
    """The real MainWindow on the built-in corpus, with the benchmark's plan and train settings."""
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
    return win, N, B


def profile_gui(app, args) -> None:
    """One window run with cProfile on the GUI thread (the trainer's thread is not profiled): where the
    GUI thread's time goes while it follows a run. cProfile slows the profiled Python code, so the
    times are inflated; the shares are what to read."""
    import cProfile
    import io
    import pstats

    win, N, B = make_window(app, args)
    steps = args.warmup + args.steps
    paints0, ticks0 = win.clock.paints, win.clock.ticks
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    g = gui_run(app, win, steps, args.warmup, with_probe=True)
    prof.disable()
    wall = time.perf_counter() - t0
    lat = g["lateness"]
    print(f"  N={N} B={B}, {steps} steps in {wall:.1f} s: {win.clock.paints - paints0} paints, "
          f"{win.clock.ticks - ticks0} ticks of the refresh clock; probe lateness p50 {pct(lat, 50):.2f} ms, "
          f"p99 {pct(lat, 99):.2f} ms, max {max(lat) if lat else float('nan'):.2f} ms over {len(lat):,} probes",
          flush=True)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative").print_stats(args.profile_top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    print("\n".join("    " + ln for ln in lines[start:]), flush=True)
    win.close()


def bench_training(app, args) -> dict:
    win, N, B = make_window(app, args)
    steps = args.warmup + args.steps
    print(f"plan N={N} B={B} ({N * B:,} tokens/step), preset {args.preset}, {steps} steps "
          f"({args.warmup} warmup), device {args.device}, {args.repeat} rounds", flush=True)
    sides = ("window", "headless", "headless+history")
    got: dict[str, list[dict]] = {k: [] for k in sides}
    spec = None
    for r in range(args.repeat):
        # the order rotates (each side first in turn) so a drift of the machine's speed over the run
        # favours no side; the window goes first in round 0: its run gives the settings the others use
        order = sides[r % 3:] + sides[:r % 3] if r else sides
        res: dict[str, dict] = {}
        for side in order:
            if side == "window":
                g = gui_run(app, win, steps, args.warmup, with_probe=args.probe_in_rounds)
                t = g.pop("trainer")
                if spec is None:
                    spec = {"builtin": win.corpus_path is None, "corpus": str(win.session.corpus.path),
                            "plan": t.plan_config.to_dict(), "model": t.model_config.to_dict(),
                            "train": t.train_config.to_dict(), "preset": args.preset,
                            "tokens_per_step": t.plan_config.block_size * t.plan_config.batch_size
                            * t.plan_config.grad_accum * t.plan_config.world_size}
                print(f"  round {r}: window run directory: {g['record']}", flush=True)
                print("    per paint tick (the painter's own time; the repaint it causes is a later event): " + "; ".join(
                    f"painter {i} ({getattr(win.clock._painters[i], '__name__', i)}) {len(v)} paints, p50 "  # noqa: SLF001
                    f"{pct(v, 50):.2f} ms, p99 {pct(v, 99):.2f} ms, max {max(v):.2f} ms"
                    for i, v in sorted(g.pop("paint_ms").items())), flush=True)
                if g["late"]:
                    print("    the latest probes (> 16 ms) and what overlapped them:\n" + "\n".join(
                        "      " + ln for ln in g["late"]), flush=True)
                if args.device == "cuda":
                    shutil.rmtree(g["run_dir"], ignore_errors=True)  # a gpt2 checkpoint is 1.5 GB
                res[side] = g
            else:
                res[side] = headless_run(spec, side == "headless+history", args.warmup)
        for side in sides:
            got[side].append(res[side])
        w, h, hh = res["window"], res["headless"], res["headless+history"]
        print(f"  round {r} (order {' -> '.join(order)}):\n"
              f"    window            {w['tok_s']:>12,.0f} tok/s (dt-based {w['tok_s_dt']:,.0f}, median dt "
              f"{w['dt_ms']:.2f} ms)  final loss {w['final_loss']:.4f}\n"
              f"    headless          {h['tok_s']:>12,.0f} tok/s (dt-based {h['tok_s_dt']:,.0f}, median dt "
              f"{h['dt_ms']:.2f} ms)  final loss {h['final_loss']:.4f}\n"
              f"    headless+history  {hh['tok_s']:>12,.0f} tok/s (dt-based {hh['tok_s_dt']:,.0f}, median dt "
              f"{hh['dt_ms']:.2f} ms)  final loss {hh['final_loss']:.4f}; history append median "
              f"{hh['hist_ms']:.3f} ms (p99 {hh['hist_ms_p99']:.3f} ms) = {100 * hh['hist_share']:.2f}% of step "
              f"time, {hh['hist_mib']:.1f} MiB written\n"
              f"    ratios: window/headless {w['tok_s'] / h['tok_s']:.3f}  (headless+history)/headless "
              f"{hh['tok_s'] / h['tok_s']:.3f}  window/(headless+history) {w['tok_s'] / hh['tok_s']:.3f}",
              flush=True)
    if args.probe_in_rounds:  # the probe ran in every window round
        lat = [x for g in got["window"] for x in g["lateness"]]
    else:
        probe_run = gui_run(app, win, steps, args.warmup, with_probe=True)  # latency: its own run
        print(f"  latency round: window {probe_run['tok_s']:,.0f} tok/s with the 5 ms probe running", flush=True)
        if args.device == "cuda":
            shutil.rmtree(probe_run["run_dir"], ignore_errors=True)
        lat = probe_run["lateness"]
    win.close()

    def ratios(a: str, b: str) -> list[float]:
        return [x["tok_s"] / y["tok_s"] for x, y in zip(got[a], got[b])]

    def summary(v: list[float]) -> dict:
        return {"mean": float(np.mean(v)), "median": float(np.median(v)), "n": len(v),
                "se": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")}

    hh = got["headless+history"]
    return {"tok_s": {k: float(np.mean([x["tok_s"] for x in v])) for k, v in got.items()},
            "dt_ms": {k: float(np.median([x["dt_ms"] for x in v])) for k, v in got.items()},
            "r_window": summary(ratios("window", "headless")),
            "r_history": summary(ratios("headless+history", "headless")),
            "r_window_hist": summary(ratios("window", "headless+history")),
            "hist_ms": float(np.median([x["hist_ms"] for x in hh])),
            "hist_share": float(np.mean([x["hist_share"] for x in hh])),
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
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of window / headless / headless+history, the order rotated each round")
    ap.add_argument("--probe-in-rounds", action="store_true",
                    help="run the 5 ms latency probe during the window's throughput rounds instead of a run of its "
                         "own (beside a GPU the probe takes no measurable time from the engine; on 2 CPU cores it does)")
    ap.add_argument("--block-size", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--mem-steps", type=int, default=20_000)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: train,paint,memory")
    ap.add_argument("--profile-gui", action="store_true",
                    help="also one window run with cProfile on the GUI thread (where its time goes while following)")
    ap.add_argument("--profile-top", type=int, default=40)
    ap.add_argument("--gui-budget", type=float, default=None,
                    help="the GUI thread's share of a core beside a GPU (ui/runs.LOCAL_BUDGET['gpu']) for this run")
    ap.add_argument("--switch-ms", type=float, default=None,
                    help="the GIL switch interval beside a GPU while the window trains (ui/runs.LOCAL_SWITCH_S['gpu'])")
    args = ap.parse_args()
    from nanogpt_viz.ui import runs

    if args.gui_budget is not None:
        runs.LOCAL_BUDGET["gpu"] = args.gui_budget
    if args.switch_ms is not None:
        runs.LOCAL_SWITCH_S["gpu"] = args.switch_ms / 1e3
    skip = set(filter(None, args.skip.split(",")))

    import torch

    app = make_app()
    import PySide6

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"torch {torch.__version__}, PySide6 {PySide6.__version__}, Python {sys.version.split()[0]}, {gpu}, "
          f"{os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, Qt platform {app.platformName()}; "
          f"command: {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}; beside a GPU the window's budget "
          f"{runs.LOCAL_BUDGET['gpu']} of a core, GIL switch interval {1e3 * runs.LOCAL_SWITCH_S['gpu']} ms", flush=True)
    summary = []
    if "train" not in skip:
        print("\n[1, 2] training from the window vs the headless engine", flush=True)
        t = bench_training(app, args)
        tk, dt = t["tok_s"], t["dt_ms"]
        summary.append(f"train throughput   window {tk['window']:,.0f} tok/s ({dt['window']:.2f} ms/step)  "
                       f"headless {tk['headless']:,.0f} tok/s ({dt['headless']:.2f} ms/step)  headless+history "
                       f"{tk['headless+history']:,.0f} tok/s ({dt['headless+history']:.2f} ms/step)")
        for key, name, target in (("r_window", "window / headless", ">= 0.97"),
                                  ("r_history", "(headless+history) / headless", ">= 0.99"),
                                  ("r_window_hist", "window / (headless+history)", "")):
            v = t[key]
            summary.append(f"  {name:<31} paired over {v['n']} rounds: mean {v['mean']:.3f} ± {v['se']:.3f} (s.e.), "
                           f"median {v['median']:.3f}" + (f"  (target {target})" if target else ""))
        summary.append(f"history append     median {t['hist_ms']:.3f} ms/step = {100 * t['hist_share']:.2f}% of the "
                       f"step time (Trainer._record_step, timed in the headless+history runs; target < 1%)")
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
    if args.profile_gui:
        print("\n[5] the GUI thread while the window trains, under cProfile (by cumulative time)", flush=True)
        profile_gui(app, args)
    print("\n==== summary " + "=" * 67)
    for line in summary:
        print(line)
    print("=" * 80)


if __name__ == "__main__":
    main()
