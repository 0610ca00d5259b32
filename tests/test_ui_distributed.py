"""The window launches torchrun (2 CPU processes, gloo), follows its run directory through RunReader
(the same StepReports as an in-process run, with every rank's per-token losses from the history),
stops the group, and re-attaches to a run directory."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QMessageBox

from nanogpt_viz.engine.checkpoint import load_checkpoint
from nanogpt_viz.data.corpus import write_nanogpt_bin
from nanogpt_viz.run.history import HistoryReader
from nanogpt_viz.ui.main_window import MainWindow


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    write_nanogpt_bin(d / "train.bin", np.random.default_rng(0).integers(0, 50257, 40_000).astype(np.uint16))
    write_nanogpt_bin(d / "val.bin", np.random.default_rng(1).integers(0, 50257, 6_000).astype(np.uint16))
    return d


@pytest.fixture
def win(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device_name="CPU")
    qtbot.addWidget(w)
    w.show()
    return w


def _open(qtbot, win, path):
    win.load_corpus(str(path))
    qtbot.waitUntil(lambda: win.session.model is not None and not win.loader.is_busy(), timeout=30_000)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_two_gpus_setting_runs_torchrun_and_stop_ends_the_group(qtbot, win, data_dir, monkeypatch):
    _open(qtbot, win, data_dir)
    tp = win.train_panel
    tp.gpus.setMaximum(2)  # as on a 2-GPU machine; the job itself runs gloo on the CPU here
    tp.gpus.setValue(2)
    tp.device.setCurrentIndex(tp.device.findData("cpu"))
    tp.steps.setValue(100_000)
    tp.eval_interval.setValue(0)
    # W follows the number of processes, and the command is shown
    assert win.session.plan_config.world_size == 2
    assert "--nproc_per_node=2" in tp.command.text() and "nanogpt_viz train" in tp.command.text()
    tp.start_btn.click()
    run = win.run
    assert run.kind == "torchrun" and run.process is not None
    qtbot.waitUntil(lambda: len(win.loss_plot.series()[0]) >= 2, timeout=120_000)
    assert not tp.start_btn.isEnabled()
    # the per-token views, as for an in-process run: both ranks' rows of the step shown
    qtbot.waitUntil(lambda: win.heatmap.data() is not None, timeout=60_000)
    step = win.session.step
    losses = run.losses_at(step)
    assert losses.per_token.shape == (1, 2, 4, 16) and losses.ranks == (0, 1)
    np.testing.assert_array_equal(win.heatmap.data(), losses.per_token[0, 0])
    win.xy.set_micro_rank(0, 1)
    np.testing.assert_array_equal(win.heatmap.data(), losses.per_token[0, 1])
    assert win.xy.loss_at(0, 0) == pytest.approx(float(losses.per_token[0, 1, 0, 0]))
    win.runs.stop()
    qtbot.waitUntil(lambda: not run.is_running(), timeout=60_000)
    assert run.process.poll() == 0, run.process.tail_log()
    run_dir = run.run_dir
    assert json.loads((run_dir / "status.json").read_text())["state"] == "stopped"
    assert load_checkpoint(run_dir / "ckpt.pt").extra["plan"]["world_size"] == 2
    assert tp.start_btn.isEnabled()
    assert win.runs.continue_from[0] == str(run_dir / "ckpt.pt")
    # a past step of the torchrun run, from the history
    last = run.last_step()
    assert last >= 1 and win.position_map.rows()[0].tolist()[-1] == last
    win.session.set_step(0)
    hist = HistoryReader(run_dir)
    np.testing.assert_array_equal(win.heatmap.data(), hist.per_token(0)[0, 1])


def test_attach_to_a_run_directory_shows_its_history(qtbot, win, data_dir, tmp_path):
    out = tmp_path / "cli_run"
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "train", str(data_dir), "--preset", "tiny",
                          "-N", "16", "-B", "2", "--steps", "7", "--eval-interval", "0", "--out", str(out),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    win.runs.open_run(str(out))
    qtbot.waitUntil(lambda: win.run.shown and not win.run.is_running() and win.session.corpus is not None,
                    timeout=30_000)
    steps = win.loss_plot.series()[0]
    assert list(steps) == list(range(7))
    assert win.runs.continue_from == (str(out / "ckpt.pt"), 7)
    assert win.session.plan_config.batch_size == 2 and win.heatmap.data().shape == (2, 16)

    win.runs.open_run(str(tmp_path))  # not a run directory: a dialog, nothing else changes
    assert win.last_error[0] == "Not a run directory"
    assert any(b.isVisible() for b in win.findChildren(QMessageBox))
