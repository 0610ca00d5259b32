"""The window launches torchrun (2 CPU processes, gloo), follows metrics.jsonl, stops the group,
and re-attaches to a run directory."""
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
    assert win.monitor is not None and win.monitor.process is not None
    qtbot.waitUntil(lambda: len(win.loss_plot.series()[0]) >= 2, timeout=120_000)
    assert not tp.start_btn.isEnabled()
    win.stop_training()
    qtbot.waitUntil(lambda: not win.monitor.active, timeout=60_000)
    assert win.monitor.process.poll() == 0
    run = win.monitor.run_dir
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    assert load_checkpoint(run / "ckpt.pt").extra["plan"]["world_size"] == 2
    assert tp.start_btn.isEnabled()
    assert win.resume_dir == run


def test_attach_to_a_run_directory_shows_its_history(qtbot, win, data_dir, tmp_path):
    out = tmp_path / "cli_run"
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "train", str(data_dir), "--preset", "tiny",
                          "-N", "16", "-B", "2", "--steps", "7", "--eval-interval", "0", "--out", str(out),
                          "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    win.attach_run(str(out))
    qtbot.waitUntil(lambda: win.monitor is not None and not win.monitor.active, timeout=10_000)
    steps = win.loss_plot.series()[0]
    assert list(steps) == list(range(7))
    assert win.resume_dir == out

    win.attach_run(str(tmp_path))  # not a run directory: a dialog, nothing else changes
    assert win.last_error[0] == "Not a run directory"
    assert any(b.isVisible() for b in win.findChildren(QMessageBox))
