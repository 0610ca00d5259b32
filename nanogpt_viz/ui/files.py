"""Files the window reads and writes besides corpora and runs: checkpoints (load, save a copy), a
nanoGPT run replayed, text sampled from the model, exports (loss CSV, plot PNGs).

Loading a checkpoint never writes it: Start continues it into a new run directory (ui/runs.py).
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from nanogpt_viz.atomic import atomic_copy
from nanogpt_viz.config import PlanConfig
from nanogpt_viz.ui import dialogs
from nanogpt_viz.ui.plots import LossPoint


def save_copy(src: str | None, dst: str) -> str:
    """Copy a checkpoint atomically (a reader never sees half a file)."""
    if not src:
        raise OSError("the run has no checkpoint to copy")
    atomic_copy(src, dst)
    return dst


class FileActions(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.loaded_checkpoint = None
        self._pending_save: str | None = None
        self._pending_sample: str | None = None
        self.replay_notes: list[str] = []

    # ---- checkpoints --------------------------------------------------------------------------
    def save_checkpoint_dialog(self) -> None:
        win, run = self.win, self.win.runs.run
        trainer = run.trainer if run.kind == "local" else None
        ckpt = run.run_dir / "ckpt.pt" if run.run_dir is not None and not run.is_running() else None
        if trainer is None and (ckpt is None or not ckpt.exists()):
            win.error("Nothing to save", "Train a model first (Train ▸ Start); then save its checkpoint.")
            return
        path, _ = QFileDialog.getSaveFileName(win, "Save checkpoint", str(Path.home() / "ckpt.pt"),
                                              "PyTorch checkpoint (*.pt)")
        if not path:
            return
        if run.is_running() and run.kind == "local":
            self._pending_save = path
            run.request("checkpoint")
            win.statusBar().showMessage("Saving at the next step boundary…", 5000)
        else:
            src = str(ckpt) if ckpt is not None and ckpt.exists() else None
            win.run_task(lambda: save_copy(src or trainer.save_checkpoint(), path),
                         lambda p: win.statusBar().showMessage(f"Saved {p}", 8000), "Cannot save checkpoint")

    def on_checkpoint_saved(self, ev) -> None:
        if self._pending_save:
            dst, self._pending_save = self._pending_save, None
            self.win.run_task(lambda: save_copy(ev.path, dst),
                              lambda p: self.win.statusBar().showMessage(f"Saved {p} (step {ev.step})", 8000),
                              "Cannot save checkpoint")

    def load_checkpoint_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.win, "Load checkpoint", str(Path.home()),
                                              "PyTorch checkpoint (*.pt);;All files (*)")
        if path:
            self.load_checkpoint(path)

    def load_checkpoint(self, path: str) -> None:
        from nanogpt_viz.engine.checkpoint import load_checkpoint

        if self.win.runs.run.is_running():
            self.win.error("Training in progress", "Stop the current run before loading a checkpoint.")
            return
        self.win.run_task(lambda: load_checkpoint(path), lambda ck: self.on_checkpoint_loaded(ck, path),
                          "Cannot load checkpoint")

    def on_checkpoint_loaded(self, ckpt, path: str) -> None:
        """Take the checkpoint's plan and model; Start continues it into a new run directory."""
        win = self.win
        extra = ckpt.extra or {}
        if "plan" in extra:
            pc = PlanConfig.from_dict(extra["plan"])
            win.plan_panel.set_config(pc)
            win.session.set_plan_config(pc)
        ma = ckpt.model_args
        tp = win.train_panel
        if extra.get("model_preset") in (tp.preset.itemText(i) for i in range(tp.preset.count())):
            tp.preset.setCurrentText(extra["model_preset"])
        tp.n_layer.setValue(ma["n_layer"])
        tp.n_head.setValue(ma["n_head"])
        tp.n_embd.setValue(ma["n_embd"])
        self.loaded_checkpoint = ckpt
        win.runs.set_continuation(path, int(ckpt.iter_num))
        hist = extra.get("history")
        if hist is not None:
            win.loss_plot.clear_history()
            win.loss_plot.extend(LossPoint.from_history(hist.tolist()))
        win.session.set_step(ckpt.iter_num)
        win.statusBar().showMessage(f"Loaded {path}: step {ckpt.iter_num}; Train ▸ Start continues it into a "
                                    "new run directory", 10000)

    # ---- a nanoGPT run, replayed -----------------------------------------------------------------
    def open_nanogpt_run_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self.win, "Open nanoGPT run (its ckpt.pt)", str(Path.home()),
                                              "PyTorch checkpoint (*.pt);;All files (*)")
        if path:
            self.open_nanogpt_run(path)

    def open_nanogpt_run(self, path: str, resumed_at: int | None = None) -> None:
        """Replay the batches the nanoGPT run of `path` drew over the open corpus (its data folder)."""
        from nanogpt_viz.engine.checkpoint import load_checkpoint

        win = self.win
        if win.runs.run.is_running():
            win.error("Training in progress", "Stop the current run before opening a nanoGPT run.")
            return
        corpus = win.session.corpus
        if corpus is None or not corpus.has_split("val"):
            win.error("Open the run's data first", "A nanoGPT run is replayed over the data it trained on: open "
                      "its data folder (File ▸ Open data directory…, the one holding train.bin and val.bin), then "
                      "open the run.")
            return
        W = win.plan_panel.config().world_size

        def work():
            from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay, RunDraws, plan_settings

            ckpt = load_checkpoint(path)
            settings = plan_settings(ckpt, W)
            config = ckpt.config if isinstance(ckpt.config, dict) else {}
            if config.get("init_from") == "resume" and resumed_at is None:
                return ckpt, None, settings
            replay = NanoGPTReplay.from_checkpoint(ckpt, train_len=len(corpus.train), val_len=len(corpus.val),
                                                   world_size=W, resumed_at=resumed_at)
            return ckpt, RunDraws(replay), settings

        win.run_task(work, lambda res: self._on_nanogpt_run(path, *res), "Cannot replay this nanoGPT run")

    def _on_nanogpt_run(self, path: str, ckpt, draws, settings) -> None:
        win = self.win
        if draws is None:  # resumed with init_from='resume': nanoGPT does not record where
            it, ok = QInputDialog.getInt(
                win, "Resumed run", "This run was resumed (init_from='resume'), and nanoGPT does not record the "
                "iteration it resumed at.\nIteration it resumed at:", 0, 0, 2 ** 31 - 1)
            if ok:
                self.open_nanogpt_run(path, resumed_at=it)
            return
        dataset = (ckpt.config or {}).get("dataset") if isinstance(ckpt.config, dict) else None
        corpus = win.session.corpus
        pc = win.plan_panel.config().with_(sampling="random", seed=None, split="train", **settings)
        win.plan_panel.set_config(pc)
        win.session.set_replay(draws, pc, path)
        self.on_checkpoint_loaded(ckpt, path)
        notes = list(draws.notes)
        if dataset and dataset not in (corpus.name, corpus.path.name):
            notes.insert(0, f"The run's config names the dataset {dataset!r}; the open corpus is {corpus.name}. "
                            f"The offsets are those the run drew, but the tokens shown are this corpus's.")
        self.replay_notes = notes
        win.statusBar().showMessage(f"Replaying the nanoGPT run {path}: N={pc.block_size}, B={pc.batch_size}, "
                                    f"K={pc.grad_accum} per rank, W={pc.world_size}", 15000)
        if notes:
            box = QMessageBox(QMessageBox.Icon.Information, "nanoGPT run replayed",
                              "The batches of every iteration are those this run's train.py drew.\n\n"
                              + "\n\n".join(notes), QMessageBox.StandardButton.Ok, win)
            box.setObjectName("replay_notes")
            box.open()
            self.replay_box = box

    # ---- sampling ----------------------------------------------------------------------------------
    def sample_dialog(self) -> None:
        win, run = self.win, self.win.runs.run
        prompt, ok = QInputDialog.getMultiLineText(win, "Sample text", "Prompt:", "\n")
        if not ok:
            return
        if run.is_running() and run.kind == "local":
            self._pending_sample = prompt
            run.request("snapshot")
            return
        trainer = run.trainer
        if trainer is not None and getattr(trainer, "raw_model", None) is not None:
            state = {k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()}
            self._sample_from(trainer.model_config.to_dict(), state, prompt)
        elif self.loaded_checkpoint is not None:
            ck = self.loaded_checkpoint
            self._sample_from(ck.model_args, ck.model_state, prompt)
        else:
            win.error("No model yet", "Train a model or load a checkpoint first, then sample from it.")

    def on_snapshot(self, snap) -> None:
        if self._pending_sample is not None:
            prompt, self._pending_sample = self._pending_sample, None
            self._sample_from(snap.model_args, snap.state, prompt)

    def _sample_from(self, model_args: dict, state: dict, prompt: str) -> None:
        def work() -> str:
            from nanogpt_viz.config import ModelConfig
            from nanogpt_viz.data.tokenizer import decode, encode
            from nanogpt_viz.engine.model import GPT
            from nanogpt_viz.engine.trainer import sample_text

            model = GPT(ModelConfig.from_dict(model_args))
            model.load_state_dict(state)
            return prompt + decode(sample_text(model, encode(prompt), 200, seed=int(time.time()) % 100000))

        self.win.statusBar().showMessage("Sampling…")
        self.win.run_task(work, self._show_sample, "Cannot sample")

    def _show_sample(self, text: str) -> None:
        self.win.statusBar().clearMessage()
        self.sample_window = dialogs.show_text(self.win, "Sample from the current model", text)

    # ---- export ------------------------------------------------------------------------------------
    def export_csv(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self.win, "Export loss history", str(Path.home() / "loss.csv"),
                                              "CSV (*.csv)")
        if path:
            try:
                self.win.loss_plot.to_csv(path)
                self.win.statusBar().showMessage(f"Wrote {path}", 5000)
            except OSError as exc:
                self.win.error("Cannot export", str(exc))

    def export_png(self, plot, name: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self.win, "Export plot", str(Path.home() / f"{name}.png"),
                                              "PNG (*.png)")
        if path:
            try:
                plot.export_png(path)
                self.win.statusBar().showMessage(f"Wrote {path}", 5000)
            except (OSError, RuntimeError) as exc:
                self.win.error("Cannot export", str(exc))
