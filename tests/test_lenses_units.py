"""Bits per byte as the window's loss units, and the loss by position split at <|endoftext|> (issue 13, items 3-4).

A real window on a folder of many short text files (one corpus, the documents joined with <|endoftext|>), a real
tiny CPU run: the split curves equal the trainer's StepReport.position_loss_after_eot / _rest; in bits per byte
the loss curve draws each step's record's bpb, the loss by position and the heatmap equal loss / ln 2 / bytes
computed here by hand from the plan's rows; the choice is remembered; a corpus of non-GPT-2 ids disables it.
"""
from __future__ import annotations

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from nanogpt_viz.data.tokenizer import EOT, token_bytes
from nanogpt_viz.ui.main_window import MainWindow
from tests.test_ui_lenses import WORDS, _open, _train, env, make_window  # noqa: F401 (fixtures)
from tests.helpers import set_plan


def _folder(env, n_docs: int = 80):
    d = env / "docs"
    d.mkdir()
    rng = np.random.default_rng(3)
    for k in range(n_docs):
        words = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), int(rng.integers(8, 40))))
        (d / f"doc{k:03d}.txt").write_text(words.capitalize() + ".\n", encoding="utf-8")
    return d


def _nbytes(ids) -> np.ndarray:
    return np.vectorize(lambda i: 0 if int(i) == EOT else len(token_bytes(int(i))))(np.asarray(ids))


def _rows(win, step):
    plan, tokens = win.session.plan, win.session.tokens
    starts = np.asarray(plan.starts(step))  # (K, W, B)
    idx = starts[..., None] + np.arange(plan.N + 1)
    rows = np.asarray(tokens[idx.ravel()]).reshape(idx.shape)
    return rows[..., :-1], rows[..., 1:]


@pytest.fixture
def trained(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    folder = _folder(env)
    _open(qtbot, win, folder)
    assert win.session.corpus.fmt == "text-dir"
    set_plan(win, block_size=32, batch_size=4, sampling="sequential", grad_accum=2, world_size=1)
    seen = []
    win.run.reports.connect(seen.extend)
    _train(qtbot, win, 3)
    win.views.paint()
    last = seen[-1]
    win.session.set_step(last.step)
    win.views.show_step(last.step)
    return win, seen, last


def test_boundary_split_of_the_loss_by_position_is_the_trainers(trained):
    win, seen, last = trained
    pp = win.position_plot
    assert last.targets_after_eot and last.targets_after_eot > 0  # the step reads across documents
    assert not pp.split_enabled()
    pp.split_check.setChecked(True)  # the toggle on the plot
    after, rest = pp.split_series()
    np.testing.assert_allclose(after, last.position_loss_after_eot, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(rest, last.position_loss_rest, rtol=1e-5, equal_nan=True)
    x, _ = pp.after_curve.getOriginalDataset()
    assert sorted(x.astype(int).tolist()) == np.nonzero(last.position_count_after_eot)[0].tolist()
    assert pp.curve.getOriginalDataset()[0] is None or len(pp.curve.getOriginalDataset()[0]) == 0
    text = pp.split_label.text()
    assert f"{last.loss_after_eot:.3f}" in text and f"{last.loss_rest:.3f}" in text
    assert f"({last.targets_after_eot:,})" in text
    # the split over the steps shown live (each folded in once, in order): drawn dashed, its means in the label
    assert pp.split_steps() >= 1
    run_after, run_rest = pp.split_series(over_run=True)
    assert np.isfinite(run_rest).all()
    if pp.split_steps() > 1:
        assert "steps shown live" in text and len(pp.rest_run_curve.getOriginalDataset()[0]) == 32
    pp.split_check.setChecked(False)
    assert len(pp.curve.getOriginalDataset()[0]) == 32 and not pp.split_label.isVisible()


def test_bits_per_byte_units_in_every_loss_view(trained, qtbot, env):
    win, seen, last = trained
    acts = win.units_actions
    assert acts["bpb"].isEnabled() and acts["nats"].isChecked()
    acts["bpb"].trigger()
    assert win.units.units == "bpb" and win.settings.value("loss_units") == "bpb"
    # the loss curve: each step's bpb from its record
    tx, ty, _, _ = win.loss_plot.drawn()
    assert tx.tolist() == [r.step for r in seen]
    np.testing.assert_allclose(ty, [r.bpb for r in seen], rtol=1e-12)
    assert win.loss_plot.plot.getPlotItem().getAxis("left").labelText == "bits per byte"
    # loss by position and the heatmap, by hand: loss / ln 2 / bytes of the targets
    x, y = _rows(win, last.step)
    pt = np.asarray(last.per_token, np.float64)  # (K, W, B, N)
    nb = _nbytes(y)
    by_pos = pt.sum(axis=(0, 1, 2)) / math.log(2) / nb.sum(axis=(0, 1, 2))
    np.testing.assert_allclose(win.position_plot.series()[0], by_pos, rtol=1e-5)
    cells = np.where(nb[0, 0] > 0, pt[0, 0] / math.log(2) / np.maximum(nb[0, 0], 1), np.nan)
    np.testing.assert_allclose(win.heatmap.data(), cells, rtol=1e-5, equal_nan=True)
    assert "bits per byte" in win.heatmap.hover_text(0, 0)
    # the split in bpb: sum of loss / ln 2 / sum of bytes of the targets after an EOT
    win.position_plot.split_check.setChecked(True)
    after, _ = win.position_plot.split_series()
    m = x == EOT
    num = np.where(m, pt, 0).sum(axis=(0, 1, 2))
    den = np.where(m, nb, 0).sum(axis=(0, 1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(after, np.where(den > 0, num / math.log(2) / den, np.nan), rtol=1e-5,
                                   equal_nan=True)
    # the X/Y panel's tooltip on a target cell: the loss in nats and in bits per byte
    m = win.xy.state.micro  # the micro-batch the panel shows (rank 0)
    j = int(np.nonzero(nb[m, 0, 0])[0][0])  # a target that stands for bytes
    loss = float(pt[m, 0, 0, j])
    tip = win.xy.tooltip_text("y", 0, j)
    assert f"{loss:.4f} nats · {loss / math.log(2) / nb[m, 0, 0, j]:.4f} bits per byte" in tip, tip
    # the top-k popover's loss
    target = int(y[0, 0, 0, 5])
    res = SimpleNamespace(target_loss=2.5, target=target)
    n = len(token_bytes(target))
    assert f"{2.5 / math.log(2) / n:.3f}</b> bits per byte" in win.topk.popover.loss_text(res)
    # back to nats
    acts["nats"].trigger()
    tx, ty, _, _ = win.loss_plot.drawn()
    np.testing.assert_allclose(ty, [r.loss for r in seen], rtol=1e-6)
    np.testing.assert_allclose(win.heatmap.data(), pt[0, 0], rtol=1e-6)
    assert "nats" in win.topk.popover.loss_text(res) and "bits per byte" not in win.topk.popover.loss_text(res)


def test_the_choice_is_remembered_and_disabled_without_gpt2_bytes(qtbot, make_window, env):  # noqa: F811
    win = make_window()
    win.units.set_units("bpb")
    win.close()
    again = MainWindow(settings=QSettings(str(env / "s.ini"), QSettings.Format.IniFormat), device_name="CPU")
    qtbot.addWidget(again)
    assert again.units.chosen == "bpb"
    # a character-level nanoGPT folder: 65 ids, no text, so no bytes to divide by
    d = env / "chars"
    d.mkdir()
    np.random.default_rng(0).integers(0, 65, 5000).astype("<u2").tofile(d / "train.bin")
    np.random.default_rng(1).integers(0, 65, 500).astype("<u2").tofile(d / "val.bin")
    with open(d / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": 65}, f)
    again.show()
    _open(qtbot, again, d)
    act = again.units_actions["bpb"]
    assert not act.isEnabled() and "65-token vocabulary" in act.toolTip()
    assert again.units.units == "nats" and again.loss_plot.units == "nats" and again.units.chosen == "bpb"
