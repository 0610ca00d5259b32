"""Starting, stopping, opening and attaching runs: the window's intents about runs.

Every run gets a new run directory (run/record.new_run_dir); a checkpoint loaded (or the last run's)
is continued into a new one whose run.json names it as the parent, and the file itself is never
written. Opening a run opens its corpus and plan; if the corpus is missing or not the text the run
trained on, a dialog says so and offers to pick the file.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.ui import dialogs
from nanogpt_viz.ui.run_controller import RunController


def runs_root() -> Path:
    base = os.environ.get("NANOGPT_VIZ_RUNS") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share"), "nanogpt-viz", "runs")
    return Path(base)


# The GUI thread's share of one core while it follows a run trained in this process (ui/refresh.py adapts
# the paint period to it). On a CPU the window competes with the model for cores. Beside a GPU the
# trainer's thread spends most of a step in Python launching kernels, under the GIL the window needs
# too: at 15% the window ran at 0.87-0.97x headless on an H200 (gpt2, B=16); 5% is a paint of each
# view every few hundred ms, still live.
LOCAL_BUDGET = {"cpu": 0.01, "gpu": 0.05}
# Python's GIL switch interval while such a run trains. Beside a GPU the trainer's thread mostly runs Python
# between kernel launches; every Qt or numpy call that lets the GIL go makes the window's thread wait up to
# this long to get it back, and a followed step's paint makes dozens of such calls.
LOCAL_SWITCH_S = {"cpu": 0.005, "gpu": 0.00025}

class RunActions(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.run = RunController(win)
        self.continue_from: tuple[str, int] | None = None  # (checkpoint path, its step): Start continues it
        self._opening: tuple[Path, Any] | None = None  # a run waiting for its corpus
        self.corpus_box = None

    # ---- continuing a checkpoint -----------------------------------------------------------------
    def set_continuation(self, path: str | None, step: int = 0) -> None:
        self.continue_from = (str(path), int(step)) if path else None
        text = (f"Start continues {path} at step {step:,} into a new run directory (the file is not "
                f"written)" if path else None)
        self.win.train_panel.set_continuation(text, step)

    # ---- starting --------------------------------------------------------------------------------
    def _run_configs(self, mc, tc):
        """One block size unless the panel sets the model's context apart; 'auto' validation resolved."""
        from nanogpt_viz.config import PLAN_PRESETS
        from nanogpt_viz.data.evaluation import window_protocol

        pc = self.win.session.plan_config
        mc = mc.with_(block_size=self.win.train_panel.context.value() or pc.block_size)
        if tc.eval_protocol == "auto":
            tc = tc.with_(eval_protocol=window_protocol(pc, PLAN_PRESETS))
        return mc, tc

    def _new_dir(self, mc, tc, preset: str, manifest: bool = True) -> tuple[Path, bool]:
        """A new run directory. Continuing, it holds a copy of the checkpoint and a run.json naming it as
        the parent (so `train --resume` continues it and the original stays as it is); a fresh run gets
        its run.json here when `manifest` (in-process; a fresh torchrun run writes its own)."""
        from nanogpt_viz.run.record import make_manifest, new_run_dir, write_manifest

        s = self.win.session
        out = new_run_dir(runs_root(), s.corpus.name)
        parent = None
        if self.continue_from is not None:
            src, step = self.continue_from
            shutil.copyfile(src, out / "ckpt.pt")
            parent = {"checkpoint": str(Path(src).resolve()), "step": step}
        if manifest or parent is not None:
            m = make_manifest(out, s.corpus, s.plan_config.split, s.plan_config, mc, tc,
                              world_size=s.plan_config.world_size, parent=parent, model_preset=preset)
            write_manifest(out, m)
        return out, parent is not None

    def command_args(self, preset: str, mc, tc, out_dir, resume: bool) -> list[str]:
        from nanogpt_viz.run.launch import train_args

        s = self.win.session
        mc, tc = self._run_configs(mc, tc)
        return train_args(self.win.corpus_path or str(s.corpus.path), s.plan_config, preset, mc, tc, out_dir,
                          resume=resume)

    def start(self, preset: str, mc, tc) -> None:
        win = self.win
        if win.session.model is None:
            win.error("Cannot train", win.session.last_problem or "Open a corpus first.")
            return
        if self.run.is_running():
            return
        if win.train_panel.distributed():
            self.start_distributed(preset, mc, tc)
            return
        from nanogpt_viz.engine.trainer import Trainer
        from nanogpt_viz.run.record import read_manifest

        s = win.session
        mc, tc = self._run_configs(mc, tc)
        try:
            out, resume = self._new_dir(mc, tc, preset)
        except OSError as exc:
            win.error("Cannot start", f"cannot create the run directory: {exc}")
            return
        corpus = s.corpus
        val = corpus.split("val") if corpus.has_split("val") and s.plan_config.split == "train" else None
        trainer = Trainer(s.tokens, val, s.plan_config, mc, tc, out_dir=out, resume=resume, model_preset=preset,
                          manifest=read_manifest(out),
                          corpus_info={"path": str(win.corpus_path or corpus.path), "name": corpus.name,
                                       "tokens": len(s.tokens), "vocab_size": corpus.vocab_size})
        # on a CPU the window competes with the model for cores; beside a GPU it may refresh more
        on_cpu = "CPU" in win.device_name or tc.device == "cpu"
        sys.setswitchinterval(LOCAL_SWITCH_S["cpu" if on_cpu else "gpu"])
        self.run.detach()
        win.views.reset(s.plan_config, tc.steps)
        self.run.start_local(trainer)
        win.clock.start(budget=LOCAL_BUDGET["cpu" if on_cpu else "gpu"], period_ms=500 if on_cpu else 200)
        win.statusBar().showMessage(f"Training in {out}" + (f", continued from {self.continue_from[0]}"
                                                             if resume else ""), 8000)

    def start_distributed(self, preset: str, mc, tc) -> None:
        """More than one GPU: run torchrun in its own process group and follow its run directory."""
        from nanogpt_viz.run.launch import RunProcess, torchrun_command

        win = self.win
        win.gpus_changed()
        mc2, tc2 = self._run_configs(mc, tc)
        try:
            out, resume = self._new_dir(mc2, tc2, preset, manifest=False)
        except OSError as exc:
            win.error("Cannot start torchrun", f"cannot create the run directory: {exc}")
            return
        tp = win.train_panel
        cmd = torchrun_command(self.command_args(preset, mc, tc, out, resume), tp.gpus.value(), tp.hosts_list())
        try:
            proc = RunProcess(cmd, out)
        except OSError as exc:
            win.error("Cannot start torchrun", str(exc))
            return
        self.run.detach()
        win.views.reset(win.session.plan_config, tc2.steps)
        self.run.start_torchrun(proc, out)
        win.clock.start(budget=0.15)
        tp.pause_btn.setEnabled(False)  # torchrun jobs stop, they do not pause
        win.statusBar().showMessage(f"torchrun started ({win.world()} processes), run directory {out}", 8000)

    def stop(self) -> None:
        if self.run.kind in ("torchrun", "reader") and self.run.is_running():
            win = self.win
            win.statusBar().showMessage("Stopping every rank after its current step…", 8000)
        self.run.stop()

    # ---- events ------------------------------------------------------------------------------------
    def on_running(self, running: bool) -> None:
        win = self.win
        win.train_panel.set_running(running)
        win.train_panel.start_btn.setEnabled(not running and win.session.model is not None)
        win.plan_panel.setEnabled(not running)
        if running:
            if not win.clock.timer.isActive():
                win.clock.start(budget=0.03)
        else:
            win.clock.stop()
            win.views.show_step(win.session.step)

    def on_info(self, info) -> None:
        win = self.win
        win.views.on_info(info)
        comp = (", bf16 residual" if info.residual_dtype == "bfloat16" else "") + (", compiled" if info.compiled else "")
        params = f" · {info.n_params / 1e6:.2f}M params" if info.n_params else ""
        win.train_panel.set_progress(info.start_step, info.total_steps,
                                     f"{info.device_name} · {info.dtype}{comp}{params}"
                                     + (f" · continued at step {info.start_step}" if info.start_step else ""))

    def on_evaluated(self, ev) -> None:
        """The evaluation before the first step: at x = -1 (a report's val follows step x, i.e. x+1 steps)."""
        self.win.loss_plot.add(-1, None, ev.val_loss)
        self.win.loss_plot.set_val_label(ev.val_protocol, ev.val_tokens)
        self.win.clock.request()

    def on_end(self, end) -> None:
        win = self.win
        win.clock.flush()
        if end.checkpoint:
            self.set_continuation(end.checkpoint, end.step)
        if end.reason.ok if hasattr(end.reason, "ok") else end.reason in ("finished", "stopped"):
            win.statusBar().showMessage(end.message + (f"; checkpoint {end.checkpoint}" if end.checkpoint else ""),
                                        10000)
        elif not win.closing:
            title = {"oom": "Out of memory", "nonfinite": "Training diverged"}.get(end.reason, "Training failed")
            win.error(title, end.message + (f"\n\nCheckpoint: {end.checkpoint}" if end.checkpoint else ""))

    # ---- opening a run -------------------------------------------------------------------------------
    def open_run_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.win, "Open a run directory", str(runs_root()))
        if path:
            self.open_run(path)

    def attach_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.win, "Attach to a run directory", str(runs_root()))
        if path:
            self.open_run(path)

    def open_run(self, path: str) -> None:
        """Show the run of `path` over its own corpus and plan (followed while it trains)."""
        from nanogpt_viz.run.record import RunError, check_corpus, read_manifest

        win = self.win
        if self.run.is_running():
            win.error("Training in progress", "Stop the current run before opening another one.")
            return
        try:
            manifest = read_manifest(path)
        except RunError as exc:
            win.error("Not a run directory", f"{exc}; pick the directory a run wrote (it holds run.json).")
            return
        self._opening = (Path(path), manifest)
        corpus = win.session.corpus
        if corpus is not None and check_corpus(manifest.corpus, corpus) is None:
            self._show_run()
        elif os.path.exists(manifest.corpus.path):
            win.load_corpus(manifest.corpus.path)  # -> corpus_loaded
        else:
            self._corpus_problem(check_corpus(manifest.corpus, None))

    def corpus_loaded(self, corpus) -> bool:
        """A corpus finished loading: True when it may replace the window's (not a wrong one for the run
        being opened)."""
        from nanogpt_viz.run.record import check_corpus

        if self._opening is None:
            return True
        problem = check_corpus(self._opening[1].corpus, corpus)
        if problem is not None:
            self._corpus_problem(problem)
            return False
        return True

    def after_corpus(self) -> None:
        """The new corpus is the window's: a run being opened is shown over it."""
        if self._opening is not None:
            self._show_run()

    def corpus_failed(self) -> None:
        """The corpus could not be opened: a run waiting for it is not opened."""
        self._opening = None

    def _corpus_problem(self, problem: str) -> None:
        run_dir = self._opening[0]
        self.win.last_error = ("The run's corpus", problem)
        self.corpus_box = dialogs.corpus_problem(self.win, str(run_dir), problem, self._pick_corpus)

    def _pick_corpus(self) -> None:
        if self._opening is None:
            return
        ident = self._opening[1].corpus
        start = os.path.dirname(ident.path) if os.path.isdir(os.path.dirname(ident.path)) else str(Path.home())
        if ident.format.endswith("dir"):
            path = QFileDialog.getExistingDirectory(self.win, f"The run's corpus ({ident.name or ident.path})", start)
        else:
            path, _ = QFileDialog.getOpenFileName(self.win, f"The run's corpus ({ident.name or ident.path})", start)
        if path:
            self.win.load_corpus(path)
        else:
            self._opening = None

    def _show_run(self) -> None:
        run_dir, manifest = self._opening
        self._opening = None
        win = self.win
        pc = PlanConfig.from_dict(manifest.plan)
        win.plan_panel.set_config(pc)
        win.session.set_plan_config(pc)
        self.run.detach()
        win.views.reset(pc, int((manifest.train or {}).get("steps") or 1))
        self.run.open(run_dir)
        win.views.load_map()
        last = self.run.last_step()
        ckpt = run_dir / "ckpt.pt"
        if ckpt.exists() and not self.run.is_running():
            self.set_continuation(str(ckpt), (last or -1) + 1)
        if self.run.is_running():
            win.clock.start(budget=0.03)
        win.clock.flush()
        if last is not None:
            win.session.set_step(last)
        win.views.update_range()
        win.views.show_step(win.session.step)
        note = manifest.continued_note()
        win.statusBar().showMessage(f"Opened the run {run_dir}: {0 if last is None else last + 1:,} steps"
                                    + (f", {note}" if note else ""), 10000)


# ---- another run overlaid on the charts (issue 13, item 5) -------------------------------------------------


def run_label(run_dir, train: dict | None, plan: dict | None) -> str:
    """A run's name in a legend: its directory's name and how it summed the micro-batch losses,
    "÷K" (the mean, as it should) or "not ÷K" (the experiment that forgot to divide by K)."""
    train, plan = train or {}, plan or {}
    k = int(plan.get("grad_accum") or 1)
    how = "÷K" if train.get("divide_by_k", True) else "not ÷K"
    return f"{Path(run_dir).name} ({how}, K={k})"


def read_run_series(run_dir) -> Any:
    """Another run's curves from its run record: run.json (RunReader reads and checks it) and every line of
    metrics.jsonl (loss, val loss, bpb, val bpb, gradient norm per step). Raises RunError (a sentence)."""
    import json

    import numpy as np

    from nanogpt_viz.run.reader import RunReader
    from nanogpt_viz.run.record import METRICS_FILE, RunError
    from nanogpt_viz.ui.plots import RunSeries

    reader = RunReader(run_dir)
    m = reader.manifest
    cols: dict[str, dict[int, float]] = {k: {} for k in ("loss", "val_loss", "bpb", "val_bpb", "grad_norm")}
    try:
        with open(Path(run_dir) / METRICS_FILE, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    step = int(rec["step"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line being written, or damaged
                for key, col in cols.items():
                    v = rec.get(key)
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        col[step] = float(v)  # a resumed run's later line for a step wins
    except OSError:
        pass
    if not cols["loss"] and not cols["grad_norm"]:
        raise RunError(f"{run_dir} has no trained steps yet (its {METRICS_FILE} holds no step)")

    def pair(col):
        steps = np.array(sorted(col), dtype=np.float64)
        return steps, np.array([col[int(s)] for s in steps], dtype=np.float64)

    try:
        clip = float((m.train or {}).get("grad_clip", 1.0))
    except (TypeError, ValueError):
        clip = None
    return RunSeries(label=run_label(run_dir, m.train, m.plan), loss=pair(cols["loss"]), val=pair(cols["val_loss"]),
                     bpb=pair(cols["bpb"]), val_bpb=pair(cols["val_bpb"]), grad_norm=pair(cols["grad_norm"]),
                     clip=clip if clip and clip > 0 else None)


class RunComparison(QObject):
    """File ▸ Compare with run…: another run drawn over the shown one's loss and gradient-norm curves, as a
    second series each chart's legend names (its directory and ÷K / not ÷K); Remove takes it away."""

    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.series: Any = None
        self.run_dir: Path | None = None

    def dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.win, "Compare with run (a run directory)", str(runs_root()))
        if path:
            self.compare(path)

    def compare(self, path) -> bool:
        from nanogpt_viz.run.record import RunError

        win = self.win
        try:
            series = read_run_series(path)
        except RunError as exc:
            win.error("Cannot compare with this run", f"{exc}; pick the directory a run wrote (it holds run.json "
                                                      f"and metrics.jsonl).")
            return False
        self.series, self.run_dir = series, Path(path)
        self.refresh_label()
        win.loss_plot.set_overlay(series)
        win.grad_plot.set_overlay(series)
        if getattr(win, "remove_compare_act", None) is not None:
            win.remove_compare_act.setEnabled(True)
        win.statusBar().showMessage(f"Comparing with {series.label}: drawn dashed on the loss and gradient-norm "
                                    f"charts", 8000)
        return True

    def remove(self) -> None:
        self.series = self.run_dir = None
        self.win.loss_plot.set_overlay(None)
        self.win.grad_plot.set_overlay(None)
        if getattr(self.win, "remove_compare_act", None) is not None:
            self.win.remove_compare_act.setEnabled(False)

    def shown_label(self) -> str:
        """The shown run's legend name: its directory and ÷K / not ÷K (the trainer's, else its run.json)."""
        from nanogpt_viz.run.record import RunError, read_manifest

        run = self.win.run
        run_dir = getattr(run, "run_dir", None)
        if run_dir is None:
            return "this window's run" if run.shown else "no run shown"
        trainer = getattr(run, "trainer", None)
        if trainer is not None:
            return run_label(run_dir, trainer.train_config.to_dict(), trainer.plan_config.to_dict())
        try:
            m = read_manifest(run_dir)
        except (RunError, OSError, ValueError):
            return Path(run_dir).name
        return run_label(run_dir, m.train, m.plan)

    def refresh_label(self, *_args) -> None:
        label = self.shown_label()
        self.win.loss_plot.set_run_label(label)
        self.win.grad_plot.set_run_label(label)
