"""The learning-rate and tokens/s tab (issue 12): one point per step equal to StepReport.lr and
StepReport.tokens_per_s, fed from the same reports as the loss curve. A real tiny CPU run in the real window."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tests.test_ui_lenses import _open, _train, env, make_window  # noqa: F401 (fixtures)
from tests.helpers import set_plan


def test_rate_tab_holds_every_steps_lr_and_tokens_per_s(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=1, world_size=1)
    rp = win.rate_plot
    assert win.plots.indexOf(rp) > win.plots.indexOf(win.loss_plot)
    assert rp.stack.currentIndex() == 0  # the message before the first step
    seen = []
    win.run.reports.connect(seen.extend)
    _train(qtbot, win, 4)
    qtbot.waitUntil(lambda: len(rp) == 4, timeout=10_000)
    win.views.paint()
    assert rp.stack.currentIndex() == 1
    (ls, lr), (ts, tps) = rp.series()
    by_step = {int(r.step): r for r in seen}
    assert ls.tolist() == ts.tolist() == sorted(by_step)
    np.testing.assert_array_equal(lr, [by_step[int(s)].lr for s in ls])
    np.testing.assert_array_equal(tps, [by_step[int(s)].tokens_per_s for s in ts])
    np.testing.assert_array_equal(rp.lr_curve.getOriginalDataset()[1], lr)
    np.testing.assert_array_equal(rp.tps_curve.getOriginalDataset()[1], tps)
    last = seen[-1]
    assert f"lr {last.lr:.4g}" in rp.hover(float(last.step))


def test_rate_plot_alone(qtbot):
    from nanogpt_viz.ui.plots import RatePlot

    rp = RatePlot()
    qtbot.addWidget(rp)
    rp.extend([SimpleNamespace(step=s, lr=1e-3 * (s + 1) / 3, tokens_per_s=1000.0 + s) for s in range(3)])
    (ls, lr), (_, tps) = rp.series()
    assert ls.tolist() == [0, 1, 2] and tps.tolist() == [1000.0, 1001.0, 1002.0]
    assert rp.hover(1.2) == f"step 1 · lr {lr[1]:.4g} · 1,001 tok/s"
    rp.add(1, 5e-4, 900.0)  # resumed from step 1: what came after is void
    assert rp.series()[0][0].tolist() == [0.0, 1.0] and rp.series()[1][1].tolist() == [1000.0, 900.0]
    rp.clear_history()
    assert len(rp) == 0 and rp.stack.currentIndex() == 0
