"""Two runs in one chart (issue 13, item 5): File ▸ Compare with run… overlays another run's record on the loss
and gradient-norm charts. Two real tiny CPU runs of the same plan with K=4, the right way (÷K) and the wrong way
(the micro-batch losses summed, not divided by K): the overlay holds the other run's values from its
metrics.jsonl, the legends name both runs, the wrong run's gradient norm is 4x at step 0 and clipped every step.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nanogpt_viz.viewmodel import ema
from tests.test_ui_lenses import _open, _train, env, make_window  # noqa: F401 (fixtures)
from tests.helpers import set_plan


def _records(run_dir) -> dict[int, dict]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        out[int(rec["step"])] = rec
    return out


def test_overlay_holds_the_other_runs_values_and_names_both(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=4, world_size=1)
    dirs, seen = {}, {}
    for wrong in (False, True):
        reps = []
        win.run.reports.connect(reps.extend)
        win.train_panel.no_divide.setChecked(wrong)
        _train(qtbot, win, 4)
        win.run.reports.disconnect(reps.extend)
        dirs[wrong], seen[wrong] = win.run.run_dir, reps
    win.views.paint()
    right, wrong = dirs[False], dirs[True]
    assert right != wrong

    # the window shows the wrong run; compare it with the right one
    assert win.compare.compare(str(right))
    lp, gp = win.loss_plot, win.grad_plot
    recs = _records(right)
    steps = sorted(recs)
    tx, ty, vx, vy = lp.overlay_series()
    assert tx.tolist() == steps and len(steps) == 4
    np.testing.assert_array_equal(ty, [recs[s]["loss"] for s in steps])
    np.testing.assert_allclose(ty, [r.loss for r in seen[False]], rtol=1e-6)  # what the trainer reported
    ox, oy = gp.overlay_series()
    assert ox.tolist() == steps
    np.testing.assert_allclose(oy, [r.grad_norm for r in seen[False]], rtol=1e-6)
    # drawn: the other run's curve, smoothed as the shown run's
    x, y = lp.overlay_curve.getOriginalDataset()
    np.testing.assert_allclose(y, ema(ty, lp.smoothing_weight()))
    np.testing.assert_array_equal(gp.overlay_curve.getOriginalDataset()[1], oy)
    # the legends name each run: its directory and how it summed the micro-batch losses
    for legend in (lp.legend.text(), gp.legend.text()):
        assert f"{right.name} (÷K, K=4)" in legend and f"{wrong.name} (not ÷K, K=4)" in legend
    assert lp.remove_btn.isVisible() and win.remove_compare_act.isEnabled()
    # the undivided run's gradient norm: 4x at step 0 (same weights and batch), above the clip on every step
    shown = gp.series()[1]
    assert shown[0] == pytest.approx(4 * oy[0], rel=1e-3)
    assert gp.clipped_share() == 1.0 and np.all(shown > gp.clip)
    assert f"{right.name}: {oy[0]:.4g}" in gp.hover(0)

    # removable
    win.compare.remove()
    assert lp.overlay_series() is None and gp.overlay_series() is None
    assert len(lp.overlay_curve.getOriginalDataset()[0] or []) == 0
    assert right.name not in lp.legend.text() and right.name not in gp.legend.text()
    assert not lp.remove_btn.isVisible() and not win.remove_compare_act.isEnabled()


def test_compare_with_a_directory_that_is_not_a_run_is_one_dialog(qtbot, make_window, env, monkeypatch):  # noqa: F811
    win = make_window()
    said = []
    monkeypatch.setattr(win, "error", lambda title, text: said.append((title, text)))
    (env / "notarun").mkdir()
    assert not win.compare.compare(str(env / "notarun"))
    assert len(said) == 1 and "run.json" in said[0][1]
    assert win.loss_plot.overlay is None
