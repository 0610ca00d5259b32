"""The lenses in the window (issue 13): the top-k popover and Help ▸ Tour. Real widgets, the real trainer."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest

from nanogpt_viz.config import ModelConfig
from nanogpt_viz.engine.model import GPT
from nanogpt_viz.engine.topk import top_k_at
from nanogpt_viz.ui.main_window import MainWindow
from tests.helpers import set_plan, tiny_cpu_training

LOAD = 60_000
TRAIN = 240_000

WORDS = ("the model reads a block of tokens and predicts the next one while the batch holds rows of blocks "
         "and every row is shifted by one to make its targets gradient accumulation sums micro batches "
         "random offsets overlap and leave gaps").split()


def make_text(n_words: int = 14_000, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n_words)) + "\n"


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    (tmp_path / "c.txt").write_text(make_text(), encoding="utf-8")
    return tmp_path


@pytest.fixture
def make_window(qtbot, env):
    def make() -> MainWindow:
        w = MainWindow(settings=QSettings(str(env / "s.ini"), QSettings.Format.IniFormat), device_name="CPU")
        qtbot.addWidget(w)
        w.show()
        qtbot.waitExposed(w)
        return w

    return make


def _open(qtbot, win, path) -> None:
    win.load_corpus(str(path))
    qtbot.waitUntil(lambda: win.session.model is not None and not win.loader.is_busy()
                    and win.corpus_path == str(path), timeout=LOAD)


def _train(qtbot, win, steps: int) -> None:
    tp = tiny_cpu_training(win, steps)
    win.runs.set_continuation(None)
    ends = []
    win.run.ended.connect(ends.append)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(ends) and not win.run.is_running(), timeout=TRAIN)
    assert ends[-1].reason == "finished", ends[-1].message


def _reference_model(win) -> GPT:
    tr = win.run.trainer
    model = GPT(ModelConfig.from_dict(tr.model_config.to_dict()))
    model.load_state_dict({k: v.detach().clone() for k, v in tr.raw_model.state_dict().items()})
    return model


def _same(a, b) -> None:
    assert (a.position, a.context_start, a.target, a.target_rank) == (b.position, b.context_start, b.target,
                                                                      b.target_rank)
    assert np.array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-5)
    assert a.target_prob == pytest.approx(b.target_prob, abs=1e-5)
    assert a.target_loss == pytest.approx(b.target_loss, rel=1e-4)


def test_topk_popover_shows_what_engine_topk_gives_for_the_same_weights(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=1, world_size=1)
    _train(qtbot, win, 3)
    ref = _reference_model(win)
    tokens = win.session.tokens
    lens = win.topk

    # a click on a token of the stream, inside row 1 of the current step: the row's start is the context
    win.session.set_step(0)
    row1 = int(win.session.plan.starts(0).ravel()[1])
    p = row1 + 5
    view = win.stream.stream
    if hasattr(view, "ensure_step_visible"):
        view.ensure_step_visible()
    qtbot.wait(50)
    lo, hi = view.visible_range()
    if not lo <= p < hi:  # a short viewport (the window's size decides it): bring the token into view
        view.scroll_to_position(p, center=True)
        qtbot.wait(20)
    rect = view.chip_rect(p)
    assert view.position_at(rect.center()) == p
    with qtbot.waitSignal(lens.computed, timeout=30_000) as sig:
        QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    res, ms = sig.args
    _same(res, top_k_at(ref, tokens, p, k=10, context_start=row1))
    assert lens.popover.isVisible() and lens.popover.result is res
    text = lens.popover.label.text()
    assert f"rank <b>{res.target_rank:,}</b>" in text and f"{res.target_prob:.4f}" in text
    print(f"\ntop-k popover, tiny preset, CPU, first click on these weights (model built ahead when the run started): {ms:.1f} ms")

    # a click on a Y cell of the X/Y panel: the prediction from its row's start, as training made it
    canvas = win.xy.canvas
    rect = canvas.cell_rect("y", 2, 7)
    with qtbot.waitSignal(lens.computed, timeout=30_000) as sig:
        QTest.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=rect.center())
    res, ms = sig.args
    start = int(win.xy.starts()[2])
    _same(res, top_k_at(ref, tokens, start + 7, k=10, context_start=start))
    assert res.target == int(tokens[start + 8])
    timings = [ms]
    for j in range(5):
        with qtbot.waitSignal(lens.computed, timeout=30_000) as sig:
            lens.on_xy_click(start + j, start)
        timings.append(sig.args[1])
    print(f"top-k popover, tiny preset, CPU, cached model: median {np.median(timings):.1f} ms "
          f"(min {min(timings):.1f}, max {max(timings):.1f}) over {len(timings)} clicks")

    QTest.keyClick(win, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not lens.popover.isVisible(), timeout=2000)


def test_topk_during_training_uses_the_latest_snapshot(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=1, world_size=1)
    snaps = []
    win.run.snapshot.connect(snaps.append)
    tp = tiny_cpu_training(win, 100_000)
    win.runs.set_continuation(None)
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: win.run.is_running() and (win.run.last_step() or 0) >= 1, timeout=TRAIN)
    with qtbot.waitSignal(win.topk.computed, timeout=60_000) as sig:
        win.topk.request(40, None)
    res, _ = sig.args
    snap = snaps[-1]
    model = GPT(ModelConfig.from_dict(snap.model_args))
    model.load_state_dict(snap.state)
    _same(res, top_k_at(model, win.session.tokens, 40, k=10))
    assert "training" in win.topk.popover.label.text()
    win.runs.stop()
    qtbot.waitUntil(lambda: not win.run.is_running(), timeout=TRAIN)


def test_tour_reaches_every_stop_and_restores_the_users_settings(qtbot, make_window, env):
    win = make_window()
    _open(qtbot, win, env / "c.txt")
    user = win.session.plan_config.with_(block_size=24, batch_size=3, grad_accum=2, sampling="sequential")
    win.plan_panel.set_config(user)
    win.session.set_plan_config(user)
    win.session.set_step(5)
    win.set_color_mode("loss")
    tour = win.tour
    tour.start()
    seen = []
    while tour.running:
        i = tour.index
        stop = tour.stops[i]
        assert win.session.plan_config == stop.plan(user)
        assert win.plan_panel.config() == win.session.plan_config  # the panel shows the stop's plan
        assert win.session.plan is not None, win.session.last_problem
        assert tour.card.isVisible() and tour.outline.isVisible()
        text = tour.card.text.text()
        assert text and "cannot show" not in text, text
        seen.append((i, stop.title, text))
        qtbot.mouseClick(tour.card.next, Qt.MouseButton.LeftButton)
    assert [i for i, _, _ in seen] == list(range(len(tour.stops))) and len(seen) >= 7
    # the numbers the founding note promises
    by_title = {t: x for _, t, x in seen}
    assert "t[4,096]" in by_title["N=1024, B=4: where step 2 starts"]
    assert "4,097th" in by_title["N=1024, B=4: where step 2 starts"]
    random_text = by_title["Random offsets vs consecutive blocks"]
    pct = float(random_text.split("<b>")[1].split("%")[0])
    assert 55 < pct < 70, random_text
    assert win.session.plan_config == user and win.plan_panel.config() == user
    assert win.session.step == 5 and win.color_actions["loss"].isChecked()
    assert not tour.card.isVisible()

    # Back, then Esc half way: the same restore
    tour.start()
    qtbot.mouseClick(tour.card.next, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(tour.card.next, Qt.MouseButton.LeftButton)
    qtbot.mouseClick(tour.card.back, Qt.MouseButton.LeftButton)
    assert tour.index == 1
    QTest.keyClick(win, Qt.Key.Key_Escape)
    assert not tour.running
    assert win.session.plan_config == user and win.session.step == 5


def test_the_tour_is_offered_once_and_never_forced(qtbot, make_window, env):
    win = make_window()
    assert win.tour.banner is not None and not win.tour.running  # offered, not started
    win.close()
    win2 = make_window()
    assert win2.tour.banner is None  # the second launch does not offer it again
