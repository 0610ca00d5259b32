"""The lenses of issue 13 in the window, installed in one call: the top-k popover, the tour, loss units (nats or
bits per byte), the boundary split of the loss by position, and another run overlaid on the charts.

`install_lenses(win)` makes `win.topk` (ui/topk_popover.TopKLens: clicks on the stream and the X/Y panel),
`win.tour` (ui/tour.Tour: Help ▸ Tour, offered once on the first launch), `win.units` (UnitsLens: View ▸ Loss
units, remembered in QSettings; disabled for token ids that are not GPT-2's) and `win.compare`
(ui/runs.RunComparison: File ▸ Compare with run…), and connects them. `win.units.show_step` is called by
RunViews.show_step with the step's exact losses: it derives what the per-token views need in bits per byte
and split at <|endoftext|> from those losses and the step's rows of the plan (data/documents.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QObject

UNITS_KEY = "loss_units"


def bpb_problem(corpus: Any) -> str | None:
    """Why bits per byte cannot be shown for `corpus` (None when they can): they need the bytes each token
    stands for, known for GPT-2 token ids (any text corpus, or token files of GPT-2 ids)."""
    from nanogpt_viz.data.tokenizer import VOCAB_SIZE

    if corpus is None:
        return "Open a corpus first."
    if int(getattr(corpus, "vocab_size", VOCAB_SIZE)) != VOCAB_SIZE:
        return (f"Bits per byte need the bytes each token stands for; {corpus.name} holds token ids of a "
                f"{corpus.vocab_size:,}-token vocabulary (not GPT-2's, e.g. from meta.pkl) and no text, so its "
                f"bytes are unknown.")
    return None


class UnitsLens(QObject):
    """Loss units for every loss view (train/val curves, loss by position, the per-token heatmap, the top-k
    popover's loss): nats, or bits per byte (per token: loss / ln 2 / its bytes; per position or curve:
    sum of loss / ln 2 / sum of bytes). Also feeds the boundary split of the loss by position."""

    def __init__(self, win: Any):
        super().__init__(win)
        self.win = win
        saved = str(win.settings.value(UNITS_KEY, "nats") or "nats")
        self.chosen = saved if saved in ("nats", "bpb") else "nats"  # what the user picked (remembered)
        self.problem: str | None = None
        win.session.corpus_changed.connect(self.corpus_changed)
        self.corpus_changed()

    @property
    def units(self) -> str:
        """The units drawn: the choice, unless this corpus has no bytes (then nats)."""
        return "nats" if self.problem is not None else self.chosen

    def set_units(self, units: str) -> None:
        if units not in ("nats", "bpb"):
            raise ValueError(f"units must be 'nats' or 'bpb', not {units!r}")
        self.chosen = units
        self.win.settings.setValue(UNITS_KEY, units)
        self.apply()
        # the heatmap's bits per byte are derived only while shown: now, for the step shown (a new corpus
        # detaches the run and shows its step again by itself)
        self.win.views.refresh_lenses()

    def corpus_changed(self) -> None:
        self.problem = bpb_problem(self.win.session.corpus)
        self.apply()

    def apply(self) -> None:
        w, units = self.win, self.units
        acts = getattr(w, "units_actions", None)
        if acts:
            bpb = acts["bpb"]
            bpb.setEnabled(self.problem is None)
            tip = self.problem or ("Every loss in bits per byte: the loss / ln 2 / the bytes its targets stand "
                                   "for, so runs with different tokenizers or block sizes compare")
            bpb.setToolTip(tip)
            bpb.setStatusTip(tip)
            acts[units].setChecked(True)
        for view in (w.loss_plot, w.position_plot, w.heatmap):
            view.set_units(units)
        topk = getattr(w, "topk", None)
        if topk is not None:
            topk.popover.units = units

    # ---- the step shown: its bpb and its boundary split ------------------------------------------------
    def step_rows(self, step: int, losses: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """(x, y): the inputs and targets of the rows `losses.per_token` holds, (K, ranks, B, N) each, from the
        plan's row starts of `step`; None when they cannot be had."""
        from nanogpt_viz.data.batching import gather_rows

        s = self.win.session
        pt = getattr(losses, "per_token", None)
        if pt is None or s.plan is None or s.tokens is None:
            return None
        pt = np.asarray(pt)
        if pt.ndim != 4:
            return None
        try:
            starts = np.asarray(s.plan.starts(step))  # (K, W, B)
            ranks = list(losses.ranks or range(starts.shape[1]))
            starts = starts[:, ranks]
            if starts.shape != pt.shape[:3]:
                return None
            rows = gather_rows(s.tokens, starts.ravel(), s.plan.N + 1).reshape(*starts.shape, s.plan.N + 1)
        except Exception:  # a plan that no longer matches the run's rows: nothing to derive
            return None
        if rows.shape[-1] - 1 != pt.shape[-1]:
            return None
        return rows[..., :-1], rows[..., 1:]

    def show_step(self, step: int, losses: Any, micro: int = 0, rank: int = 0, update_ema: bool = False) -> None:
        """Called after RunViews.show_step drew `step`'s losses in nats: the loss by position in bits per byte
        and split at <|endoftext|> (their moving average and the split over the run fold in every live step),
        and the heatmap's cells in bits per byte, derived only while the units are bpb: the heatmap shows the
        one step, so switching units derives them then (RunViews.refresh_lenses). Beside a GPU every numpy
        pass here hands the GIL to the trainer's thread and waits to get it back (issue 11)."""
        from nanogpt_viz.data.documents import (position_bits_per_byte, position_split, target_bytes,
                                                token_bits_per_byte)
        from nanogpt_viz.ui.plots import select_rows

        w = self.win
        xy = self.step_rows(step, losses) if losses is not None else None
        if xy is None:
            w.position_plot.set_split(None)
            w.heatmap.set_bpb(None)
            return
        x, y = xy
        pt = np.asarray(losses.per_token, dtype=np.float64)
        nbytes = target_bytes(y) if self.problem is None else None  # looked up once for the three views
        w.position_plot.set_split(position_split(pt, x, nbytes=nbytes), accumulate=update_ema)
        if nbytes is None:
            w.heatmap.set_bpb(None)
            return
        w.position_plot.set_bpb(position_bits_per_byte(pt, y, nbytes=nbytes), update_ema=update_ema)
        if self.units != "bpb":
            w.heatmap.set_bpb(None)
            return
        per_bpb = token_bits_per_byte(pt, y, nbytes=nbytes)
        sel = select_rows(per_bpb, tuple(losses.ranks), micro, rank) if per_bpb is not None else None
        w.heatmap.set_bpb(sel)


def install_lenses(win: Any, offer_tour: bool = True) -> None:
    from nanogpt_viz.ui.runs import RunComparison
    from nanogpt_viz.ui.topk_popover import TopKLens
    from nanogpt_viz.ui.tour import Tour

    win.topk = TopKLens(win)
    win.stream.clicked.connect(win.topk.on_stream_click)
    win.xy.prediction_clicked.connect(win.topk.on_xy_click)
    win.run.snapshot.connect(win.topk.on_snapshot)
    win.run.info.connect(win.topk.prewarm)  # the model's architecture is known: build it ahead
    win.units = UnitsLens(win)
    win.compare = RunComparison(win)
    win.loss_plot.compare_btn.clicked.connect(win.compare.dialog)
    win.grad_plot.compare_btn.clicked.connect(win.compare.dialog)
    win.loss_plot.remove_btn.clicked.connect(win.compare.remove)
    win.grad_plot.remove_btn.clicked.connect(win.compare.remove)
    win.run.attached.connect(win.compare.refresh_label)  # the shown run's name in the legends
    win.run.info.connect(win.compare.refresh_label)
    win.tour = Tour(win)
    if offer_tour:
        win.tour.offer_once()


__all__ = ["install_lenses", "UnitsLens", "bpb_problem"]
