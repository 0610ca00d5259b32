"""TrainController: the engine's events reach the GUI thread complete and in order, however they are batched."""
import threading

import numpy as np

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.engine.trainer import Trainer
from nanogpt_viz.ui.worker import TrainController

TINY = MODEL_PRESETS["tiny"].with_(vocab_size=256, n_embd=32, block_size=16)


def _trainer(steps):
    toks = np.random.default_rng(0).integers(0, 256, 20_000).astype(np.uint16)
    return Trainer(toks, None, PlanConfig(block_size=16, batch_size=4),
                   TINY, TrainConfig(steps=steps, eval_interval=0, device="cpu", per_token=True))


def _record(ctl):
    log = []
    ctl.info.connect(lambda ev: log.append(("info", ev, threading.current_thread())))
    ctl.report.connect(lambda ev: log.append(("report", ev, threading.current_thread())))
    ctl.ended.connect(lambda ev: log.append(("ended", ev, threading.current_thread())))
    ctl.running_changed.connect(lambda on: log.append(("running", on, threading.current_thread())))
    return log


def test_every_step_report_arrives_in_order_before_the_end_even_when_batched(qtbot):
    ctl = TrainController(report_interval_ms=60_000)  # the timer never fires during this run
    log = _record(ctl)
    ctl.start(_trainer(12))
    qtbot.waitUntil(lambda: any(k == "running" and v is False for k, v, _ in log), timeout=60_000)
    kinds = [k for k, _, _ in log]
    assert kinds[0] == "running" and kinds[1] == "info"
    steps = [ev.step for k, ev, _ in log if k == "report"]
    assert steps == list(range(12))
    assert kinds.index("ended") > max(i for i, k in enumerate(kinds) if k == "report")
    assert kinds[-1] == "running" and log[-1][1] is False
    assert log[kinds.index("ended")][1].reason == "finished"
    # delivered in the GUI thread, stamped by the engine's thread in step order
    assert all(th is threading.main_thread() for _, _, th in log)
    stamps = [ev.finished_at for k, ev, _ in log if k == "report"]
    assert stamps == sorted(stamps) and stamps[0] > 0


def test_reports_are_delivered_while_the_run_goes_on(qtbot):
    ctl = TrainController(report_interval_ms=20)
    log = _record(ctl)
    tr = _trainer(400)
    ctl.start(tr)
    # reports show up before the run ends (the timer drains the queue)
    qtbot.waitUntil(lambda: sum(k == "report" for k, _, _ in log) >= 3, timeout=60_000)
    assert not any(k == "ended" for k, _, _ in log)
    ctl.stop()
    qtbot.waitUntil(lambda: not ctl.is_running() and any(k == "ended" for k, _, _ in log), timeout=60_000)
    end = next(ev for k, ev, _ in log if k == "ended")
    assert end.reason == "stopped"
    steps = [ev.step for k, ev, _ in log if k == "report"]
    assert steps == list(range(len(steps))) and end.step == len(steps)
