"""Scrubbing a long run's history in the window, side by side in one run (figures only, no pass/fail).

    python benchmarks/scrub_bench.py                      # train 20,000 steps from the window, then scrub
    python benchmarks/scrub_bench.py --run-dir RUN_DIR    # scrub a run directory trained before

1. A real run of --steps steps (tiny preset, CPU, the built-in corpus, N x B from --block-size /
   --batch-size), started with the train panel's Start in the real MainWindow (offscreen): the run
   directory holds run.json, metrics.jsonl, ckpt.pt and the per-token loss history of every step,
   written by the engine exactly as in any window run. The window's RSS is sampled every few seconds
   while it trains (target: flat over the run).
2. Scrubbing: random past steps (numpy default_rng(--seed)), each set through the step slider
   (QSlider.setValue: valueChanged -> session.set_step -> every view), then the event loop's posted
   events are delivered (app.processEvents(): the repaint of every widget the change made dirty, as
   the real event loop does it; an event filter checks that the stream, the X/Y panel and the plot
   tab shown got a Paint event each time). Timed: the change (slider to views: the history read
   included), the repaint, and both together, p50 / p95 / max. The plot tabs share one place, so the
   series runs once with each per-token tab shown (heatmap, loss by position, step x position).
   Done twice: in the window that trained the run (the run still shown), and in a new window that
   opens the run directory (File > Open run: everything read back from disk). Target: < 50 ms.
   Each series checks that the views show the step's exact losses from the history (the X/Y panel's
   and the heatmap's arrays against HistoryReader.per_token). RSS sampled through the scrub.
3. Where the time goes: one more series under cProfile; the functions with the most cumulative time.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

_TMP = tempfile.mkdtemp(prefix="nanogpt-viz-scrub-bench-")
os.environ.setdefault("NANOGPT_VIZ_CACHE", os.path.join(_TMP, "cache"))

from PySide6.QtCore import QEvent, QObject, QSettings, QTimer  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402

from nanogpt_viz.engine.runtime import tune_allocator  # noqa: E402
from nanogpt_viz.ui.app import make_app  # noqa: E402

tune_allocator()  # as `nanogpt-viz` does at start-up

sys.path.insert(0, os.path.dirname(__file__))
from gui import spin  # noqa: E402  (the same real event loop helper as benchmarks/gui.py)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def pct(a, q) -> float:
    return float(np.percentile(np.asarray(a, np.float64), q)) if len(a) else float("nan")


class PaintCounter(QObject):
    """Counts Paint events on a view and every widget inside it."""

    def __init__(self, views: dict[str, QWidget]):
        super().__init__()
        self.views = views
        self.count = {k: 0 for k in views}
        self._owner: dict[int, str] = {}
        for name, v in views.items():
            for w in [v, *v.findChildren(QWidget)]:
                self._owner[id(w)] = name
                w.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 - Qt's name
        if ev.type() == QEvent.Type.Paint:
            name = self._owner.get(id(obj))
            if name is not None:
                self.count[name] += 1
        return False

    def snapshot(self) -> dict[str, int]:
        return dict(self.count)


def new_window(settings_path: str):
    from nanogpt_viz.ui.main_window import MainWindow

    win = MainWindow(settings=QSettings(settings_path, QSettings.Format.IniFormat))
    win.resize(1600, 1000)
    win.show()
    return win


# ---- 1: the run -------------------------------------------------------------------------------
def train_in_window(app, args) -> tuple[object, Path, list[tuple[float, int, float]]]:
    win = new_window(os.path.join(_TMP, "settings-train.ini"))
    win.startup(None)
    spin(app, lambda: win.session.model is not None and not win.loader.is_busy(), 300)
    win.plan_panel.n.setValue(args.block_size)
    win.plan_panel.b.setValue(args.batch_size)
    tp = win.train_panel
    tp.preset.setCurrentText("tiny")
    tp.eval_interval.setValue(0)
    tp.device.setCurrentIndex(tp.device.findData("cpu"))
    tp.steps.setValue(args.steps)
    run = win.run
    ends: list = []
    samples: list[tuple[float, int, float]] = []  # (seconds since Start, last step reported, RSS MB)
    t0 = time.monotonic()

    def sample() -> None:
        last = run.last_step()
        samples.append((time.monotonic() - t0, -1 if last is None else last, rss_mb()))

    sampler = QTimer()
    sampler.setInterval(int(args.rss_every * 1000))
    sampler.timeout.connect(sample)
    run.ended.connect(ends.append)
    sample()
    sampler.start()
    tp.start_btn.click()
    spin(app, lambda: bool(ends) and not run.is_running(), 6 * 3600, signals=(run.running_changed,))
    sampler.stop()
    sample()
    if str(ends[-1].reason) != "finished":
        raise SystemExit(f"the window's run failed: {ends[-1].reason}: {ends[-1].message}")
    return win, Path(run.run_dir), samples


# ---- 2: scrubbing -------------------------------------------------------------------------------
def scrub_series(app, win, hist, steps: np.ndarray, tab: str, label: str) -> dict:
    """Jump to each of `steps` through the step slider; time the change and the repaint."""
    tabs = {"heatmap": win.heatmap, "position": win.position_plot, "map": win.position_map}
    win.plots.setCurrentWidget(tabs[tab])
    app.processEvents()
    views = {"stream": win.stream, "xy": win.xy, tab: tabs[tab]}
    counter = PaintCounter(views)
    slider = win.controls.step_slider
    change, paint, total, rss = [], [], [], []
    missed = {k: 0 for k in views}
    wrong = 0
    steps = [int(s) for s in steps]
    for k in range(1, len(steps)):  # a jump to the step already shown changes nothing: not a scrub
        if steps[k] == steps[k - 1]:
            steps[k] = (steps[k] + 1) % (int(hist.steps[-1]) + 1)
    if steps and steps[0] == win.session.step:
        steps[0] = (steps[0] + 1) % (int(hist.steps[-1]) + 1)
    gc_ms: list[float] = []  # the garbage collector's passes during the series (ms each)
    gc_in: list[float] = []  # per scrub: ms of garbage collection inside it
    state: dict = {}

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            state["t"] = time.perf_counter()
        elif "t" in state:
            gc_ms.append((time.perf_counter() - state.pop("t")) * 1e3)

    gc.callbacks.append(on_gc)
    for i, s in enumerate(steps):
        before = counter.snapshot()
        n_gc = len(gc_ms)
        t0 = time.perf_counter()
        slider.setValue(int(s))
        t1 = time.perf_counter()
        app.processEvents()  # posted events: the repaint of what the change made dirty
        t2 = time.perf_counter()
        change.append((t1 - t0) * 1e3)
        paint.append((t2 - t1) * 1e3)
        total.append((t2 - t0) * 1e3)
        gc_in.append(sum(gc_ms[n_gc:]))
        after = counter.snapshot()
        for k in views:
            missed[k] += after[k] == before[k]
        if i % 10 == 0:  # the views show this step's exact losses from the history
            want = hist.per_token(int(s))
            shown = win.views._shown_losses  # noqa: SLF001 - benchmark check only
            # (the latest 64 steps come from the engine's reports in memory, float32; the history is float16)
            if (win.session.step != s or shown is None or shown.step != s or want is None or shown.per_token is None
                    or not np.array_equal(np.asarray(shown.per_token, np.float16), want.astype(np.float16))):
                wrong += 1
        if i % 20 == 0:
            rss.append(rss_mb())
    rss.append(rss_mb())
    gc.callbacks.remove(on_gc)
    for v in views.values():
        for w in [v, *v.findChildren(QWidget)]:
            w.removeEventFilter(counter)
    res = {"label": label, "tab": tab, "n": len(steps), "change": change, "paint": paint, "total": total,
           "missed": missed, "wrong": wrong, "rss": rss}
    print(f"  {label:<9} tab {tab:<8} {len(steps)} steps: total p50 {pct(total, 50):6.1f} ms  p95 "
          f"{pct(total, 95):6.1f} ms  max {max(total):6.1f} ms   (change p50 {pct(change, 50):.1f} / p95 "
          f"{pct(change, 95):.1f} / max {max(change):.1f}; repaint p50 {pct(paint, 50):.1f} / p95 "
          f"{pct(paint, 95):.1f} / max {max(paint):.1f})  views without a Paint: "
          + ", ".join(f"{k} {v}" for k, v in missed.items())
          + f"; wrong losses shown {wrong}; RSS {rss[0]:.1f} -> {rss[-1]:.1f} MB", flush=True)
    worst = int(np.argmax(total))
    print(f"    the slowest scrub (#{worst + 1} of the series): {total[worst]:.1f} ms, of which garbage collection {gc_in[worst]:.1f} ms; "
          f"{len(gc_ms)} collector passes in the series (max {max(gc_ms, default=0.0):.1f} ms)", flush=True)
    return res


def profile_series(app, win, steps: np.ndarray, top: int, tab: str = "heatmap") -> str:
    slider = win.controls.step_slider
    win.plots.setCurrentWidget({"heatmap": win.heatmap, "position": win.position_plot, "map": win.position_map}[tab])
    app.processEvents()
    prof = cProfile.Profile()
    prof.enable()
    for s in steps:
        slider.setValue(int(s))
        app.processEvents()
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("cumulative")
    st.print_stats(top)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return "\n".join("    " + ln for ln in lines[start:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20_000, help="steps of the run trained from the window")
    ap.add_argument("--block-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--run-dir", default=None, help="scrub this run directory instead of training one")
    ap.add_argument("--runs", default=None, help="where the trained run's directory goes (default: a temp folder)")
    ap.add_argument("--scrubs", type=int, default=200, help="random steps per series")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples while training")
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument("--profile-tab", default="heatmap", choices=("heatmap", "position", "map"),
                    help="the plot tab shown while profiling")
    args = ap.parse_args()
    os.environ["NANOGPT_VIZ_RUNS"] = args.runs or os.path.join(_TMP, "runs")

    import torch

    from nanogpt_viz.run.history import HistoryReader

    app = make_app()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, Qt platform "
          f"{app.platformName()}; command: {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}", flush=True)
    series = []
    if args.run_dir is None:
        print(f"\n[1] training {args.steps:,} steps from the window (tiny preset, CPU, N={args.block_size} "
              f"B={args.batch_size}), RSS every {args.rss_every:g} s", flush=True)
        win, run_dir, samples = train_in_window(app, args)
        wall = samples[-1][0]
        print(f"  run directory {run_dir}: {args.steps:,} steps in {wall:,.0f} s ({args.steps / wall:.1f} steps/s)")
        marks = sorted({min(range(len(samples)), key=lambda i: abs(samples[i][1] - m))
                        for m in np.linspace(0, args.steps - 1, 11)})
        for i in marks:
            t, step, rss = samples[i]
            print(f"    t {t:7.0f} s  step {step:>7,}  RSS {rss:7.1f} MB")
        rs = [r for _, st, r in samples if st >= 0]
        print(f"  window RSS over the run: first sample with a step {rs[0]:.1f} MB, last {rs[-1]:.1f} MB, "
              f"min {min(rs):.1f}, max {max(rs):.1f} MB ({len(rs)} samples)", flush=True)
        train_rss = (rs[0], rs[-1], min(rs), max(rs))
    else:
        run_dir, win, train_rss = Path(args.run_dir), None, None
        print(f"\n[1] no training: the run directory {run_dir} (trained before)", flush=True)
    hist = HistoryReader(run_dir)
    n_steps = len(hist)
    kept = int(sum(hist.has_rows(int(s)) for s in hist.steps))
    print(f"  history: {n_steps:,} steps, per-token rows kept for {kept:,}, K={hist.K} W={hist.W} B={hist.B} "
          f"N={hist.N}, {hist.bytes_on_disk() / 2 ** 20:.1f} MiB on disk; metrics.jsonl "
          f"{sum(1 for _ in open(run_dir / 'metrics.jsonl', encoding='utf-8')):,} lines; ckpt.pt "
          f"{'present' if (run_dir / 'ckpt.pt').exists() else 'MISSING'}", flush=True)
    rng = np.random.default_rng(args.seed)

    def pick() -> np.ndarray:  # random past steps that kept their rows
        return rng.choice(hist.steps[[hist.has_rows(int(s)) for s in hist.steps]], size=args.scrubs)

    print(f"\n[2] scrubbing to {args.scrubs} random past steps per series (step slider -> processEvents)", flush=True)
    if win is not None:
        for tab in ("heatmap", "position", "map"):
            series.append(scrub_series(app, win, hist, pick(), tab, "trained"))
        win.close()
        app.processEvents()
    win2 = new_window(os.path.join(_TMP, "settings-open.ini"))
    t0 = time.perf_counter()
    win2.startup(None, run_dir=str(run_dir))  # as `nanogpt-viz RUN_DIR` / File > Open run
    spin(app, lambda: win2.run.shown and win2.run.last_step() == n_steps - 1 and not win2.loader.is_busy(), 300)
    print(f"  opened the run in a new window in {time.perf_counter() - t0:.2f} s (RSS {rss_mb():.1f} MB)", flush=True)
    for tab in ("heatmap", "position", "map"):
        series.append(scrub_series(app, win2, hist, pick(), tab, "reopened"))

    print(f"\n[3] where the time goes: cProfile over {args.scrubs} more scrubs (reopened run, {args.profile_tab} "
          f"tab), by cumulative time", flush=True)
    print(profile_series(app, win2, pick(), args.profile_top, args.profile_tab), flush=True)
    win2.close()

    total = [x for s in series for x in s["total"]]
    change = [x for s in series for x in s["change"]]
    paint = [x for s in series for x in s["paint"]]
    worst = max(series, key=lambda s: pct(s["total"], 95))
    rss_all = [r for s in series for r in s["rss"]]
    print("\n==== summary " + "=" * 67)
    print(f"run                {n_steps:,} steps of a real tiny-preset CPU run, N={hist.N} B={hist.B}, history "
          f"{hist.bytes_on_disk() / 2 ** 20:.1f} MiB" + ("" if args.run_dir is None else f" ({run_dir}, trained before)"))
    print(f"scrub repaint      p50 {pct(total, 50):.1f} ms  p95 {pct(total, 95):.1f} ms  max {max(total):.1f} ms over "
          f"{len(total):,} random steps in {len(series)} series (target < 50 ms)")
    print(f"  of which         change (slider -> views, history read) p50 {pct(change, 50):.1f} / p95 "
          f"{pct(change, 95):.1f} ms; repaint p50 {pct(paint, 50):.1f} / p95 {pct(paint, 95):.1f} ms")
    print(f"  worst series     {worst['label']}, tab {worst['tab']}: p95 {pct(worst['total'], 95):.1f} ms, "
          f"max {max(worst['total']):.1f} ms")
    print(f"  checks           views without a Paint: {sum(sum(s['missed'].values()) for s in series)}; "
          f"steps showing other losses than the history's: {sum(s['wrong'] for s in series)}")
    print(f"RSS while scrubbing {rss_all[0]:.1f} -> {rss_all[-1]:.1f} MB (min {min(rss_all):.1f}, max {max(rss_all):.1f})")
    if train_rss is not None:
        print(f"RSS while training {train_rss[0]:.1f} -> {train_rss[1]:.1f} MB (min {train_rss[2]:.1f}, max "
              f"{train_rss[3]:.1f}) over {args.steps:,} steps")
    print("=" * 80)


if __name__ == "__main__":
    main()
