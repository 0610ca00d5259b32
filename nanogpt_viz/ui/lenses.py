"""The lenses of issue 13 in the window, installed in one call: the top-k popover and the tour.

`install_lenses(win)` makes `win.topk` (ui/topk_popover.TopKLens: clicks on the stream and the X/Y panel)
and `win.tour` (ui/tour.Tour: Help ▸ Tour, offered once on the first launch), and connects them.
"""
from __future__ import annotations

from typing import Any


def install_lenses(win: Any, offer_tour: bool = True) -> None:
    from nanogpt_viz.ui.topk_popover import TopKLens
    from nanogpt_viz.ui.tour import Tour

    win.topk = TopKLens(win)
    win.stream.clicked.connect(win.topk.on_stream_click)
    win.xy.prediction_clicked.connect(win.topk.on_xy_click)
    win.run.snapshot.connect(win.topk.on_snapshot)
    win.run.info.connect(win.topk.prewarm)  # the model's architecture is known: build it ahead
    win.tour = Tour(win)
    if offer_tour:
        win.tour.offer_once()


__all__ = ["install_lenses"]
