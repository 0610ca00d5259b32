"""The gradient-norm tab (issue 13, item 5): one point per step equal to StepReport.grad_norm, the clip
threshold drawn at the run's TrainConfig.grad_clip. A real tiny CPU run in the real window."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_ui_lenses import _open, _train, env, make_window  # noqa: F401 (fixtures)
from tests.helpers import set_plan


def test_grad_norm_tab_holds_every_steps_norm_and_the_clip_line(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=2, world_size=1)
    gp = win.grad_plot
    assert win.plots.indexOf(gp) == win.plots.indexOf(win.loss_plot) + 1  # beside the loss
    seen = []
    win.run.reports.connect(seen.extend)
    _train(qtbot, win, 5)
    qtbot.waitUntil(lambda: len(gp) == 5, timeout=10_000)
    win.views.paint()
    steps, norms = gp.series()
    by_step = {int(r.step): float(r.grad_norm) for r in seen}
    assert steps.tolist() == sorted(by_step)
    np.testing.assert_allclose(norms, [by_step[int(s)] for s in steps], rtol=0, atol=0)
    x, y = gp.curve.getOriginalDataset()
    np.testing.assert_array_equal(y, norms)
    clip = win.run.trainer.train_config.grad_clip
    assert clip > 0
    assert gp.clip_level() == pytest.approx(clip)
    assert f"clip threshold {clip:g}" in gp.legend.text()
    gp.log_y.setChecked(True)
    assert gp.clip_level() == pytest.approx(clip)
    assert "grad norm" in gp.hover(float(steps[-1]))
    assert gp.clipped_share() == pytest.approx(float(np.mean(norms > clip)))


def test_grad_norm_plot_without_clipping_hides_the_line(qtbot):
    from nanogpt_viz.ui.plots import GradNormPlot

    gp = GradNormPlot()
    qtbot.addWidget(gp)
    assert gp.stack.currentWidget() is gp.empty
    gp.set_clip(0.0)
    assert gp.clip_level() is None and "no clipping" in gp.legend.text()
    gp.set_clip(1.0)
    for s, g in enumerate((3.0, 0.5, 2.0)):
        gp.add(s, g)
    gp.redraw()
    assert gp.stack.currentWidget() is gp.plot
    assert gp.clipped_share() == pytest.approx(2 / 3)
    assert "clipped to 1" in gp.hover(0) and "not clipped" in gp.hover(1)
    gp.add(1, 4.0)  # resumed from step 1: what came after is void
    assert gp.series()[0].tolist() == [0.0, 1.0] and gp.series()[1].tolist() == [3.0, 4.0]


def test_bits_per_byte_in_the_live_line_and_the_loss_read_out(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=1, world_size=1)
    seen = []
    win.run.reports.connect(seen.extend)
    _train(qtbot, win, 3)
    qtbot.waitUntil(lambda: len(win.loss_plot) == 3, timeout=10_000)
    win.views.paint()
    last = seen[-1]
    assert last.bpb is not None  # a text corpus: the records carry bpb
    assert f"({last.bpb:.3f} bpb)" in win.train_panel.run_bar.stats.text()
    for rep in seen:
        assert f"bpb {rep.bpb:.4f}" in win.loss_plot.hover(float(rep.step))


def test_loss_read_out_shows_val_bpb_only_when_the_records_carry_it(qtbot):
    from types import SimpleNamespace

    from nanogpt_viz.ui.plots import LossPlot

    lp = LossPlot()
    qtbot.addWidget(lp)
    lp.extend([SimpleNamespace(step=0, loss=2.0, val_loss=None, lr=1e-3, bpb=1.25, val_bpb=None),
               SimpleNamespace(step=1, loss=1.5, val_loss=1.7, lr=1e-3, bpb=1.0, val_bpb=1.125),
               SimpleNamespace(step=2, loss=1.4, val_loss=None, lr=1e-3)])  # no bpb (a token corpus)
    assert "bpb 1.2500" in lp.hover(0) and "val bpb" not in lp.hover(0)
    assert "bpb 1.0000" in lp.hover(1) and "val bpb 1.1250" in lp.hover(1)
    assert "bpb" not in lp.hover(2)
    lp.clear_history()
    assert len(lp.bpb) == 0 and len(lp.val_bpb) == 0


def test_forgetting_to_divide_by_k_puts_every_step_above_the_clip_line(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=4, world_size=1)
    norms = {}
    for wrong in (False, True):
        win.train_panel.no_divide.setChecked(wrong)
        _train(qtbot, win, 3)
        assert win.run.trainer.train_config.divide_by_k is (not wrong)
        win.views.paint()
        norms[wrong] = win.grad_plot.series()[1].copy()
    assert win.grad_plot.clipped_share() == 1.0  # the clip is active on every step
    assert np.all(norms[True] > win.grad_plot.clip)
    # step 0: the same initial weights and batch, the loss summed over K=4 micro-batches instead of averaged
    assert norms[True][0] == pytest.approx(4 * norms[False][0], rel=1e-3)
