"""The window's state: corpus, plan settings, the BatchPlan built from them, the current step.

A QObject with signals (a model in the napari sense): views listen and repaint, panels call the
setters. Nothing here paints, and offsets still come only from BatchPlan.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from nanogpt_viz.data.batching import BatchPlan, PlanError, plan_for
from nanogpt_viz.config import PlanConfig
from nanogpt_viz.viewmodel import StreamModel


class Session(QObject):
    corpus_changed = Signal()
    plan_changed = Signal()  # a new BatchPlan (or None when the settings are invalid)
    step_changed = Signal(int)
    problem = Signal(str)  # why the current settings give no plan ("" when fine)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.corpus: Any = None
        self.plan_config = PlanConfig(block_size=16, batch_size=4)
        self.plan: BatchPlan | None = None
        self.model: StreamModel | None = None
        self.step = 0
        self.last_problem = ""
        # a replayed nanoGPT run: its draws and the plan settings they belong to (None: none)
        self.replay: Any = None
        self.replay_config: PlanConfig | None = None
        self.replay_source = ""

    def set_replay(self, draws: Any, config: PlanConfig, source: str) -> None:
        """Show the batches a nanoGPT run drew: `draws` belong to this corpus and to `config`."""
        self.replay, self.replay_config, self.replay_source = draws, config, source
        self.plan_config = config
        self._rebuild()

    @property
    def replaying(self) -> bool:
        """Whether the current plan is the replayed run's (same corpus, same settings)."""
        return self.replay is not None and self.plan_config == self.replay_config

    @property
    def tokens(self) -> Any:
        if self.corpus is None:
            return None
        split = self.plan_config.split
        if split == "val" and not self.corpus.has_split("val"):
            return None
        return self.corpus.split(split)

    def set_corpus(self, corpus: Any) -> None:
        self.corpus = corpus
        self.replay, self.replay_config, self.replay_source = None, None, ""  # a run belongs to its data
        self.corpus_changed.emit()
        self._rebuild()

    def set_plan_config(self, config: PlanConfig) -> None:
        if config == self.plan_config and self.plan is not None:
            return
        self.plan_config = config
        self._rebuild()

    def _rebuild(self) -> None:
        problem = ""
        plan = None
        if self.corpus is None:
            problem = "open a corpus to see its batches"
        elif self.tokens is None:
            problem = f"this corpus has no {self.plan_config.split} split; choose 'train'"
        else:
            try:
                plan = plan_for(self.plan_config, self.tokens, draws=self.replay if self.replaying else None)
            except PlanError as exc:
                problem = str(exc)
        self.plan = plan
        self.model = StreamModel(self.tokens, plan) if plan is not None else None
        if problem != self.last_problem:
            self.last_problem = problem
            self.problem.emit(problem)
        self.plan_changed.emit()
        self.step_changed.emit(self.step)

    def set_step(self, step: int) -> None:
        step = max(0, int(step))
        if step == self.step:
            return
        self.step = step
        self.step_changed.emit(step)

    def next(self) -> None:
        self.set_step(self.step + 1)

    def previous(self) -> None:
        self.set_step(self.step - 1)

    def reset(self) -> None:
        self.set_step(0)
