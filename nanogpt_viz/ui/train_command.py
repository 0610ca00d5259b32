"""The Training panel's GPUs and hosts against the plan: W in the plan is the number of processes
torchrun starts (the two are kept the same), and the torchrun command lines the panel shows are the
ones Start would run (run/launch.py builds them from the same train flags).
"""
from __future__ import annotations

from PySide6.QtCore import QObject

from nanogpt_viz.ui.runs import runs_root


class TrainCommand(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win
        tp = win.train_panel
        tp.settings_changed.connect(self.update_command)
        tp.gpus.valueChanged.connect(self.gpus_changed)
        tp.hosts.textChanged.connect(self.gpus_changed)
        win.session.plan_changed.connect(self.update_command)

    def world(self) -> int:
        """Processes a distributed run starts: GPUs per host times hosts."""
        tp = self.win.train_panel
        return tp.gpus.value() * max(1, len(tp.hosts_list()))

    def gpus_changed(self) -> None:
        """W in the plan is the number of processes torchrun starts: keep the two the same."""
        win, world = self.win, self.world()
        if world > 1 and win.session.plan_config.world_size != world:
            pc = win.session.plan_config.with_(world_size=world)
            win.plan_panel.set_config(pc)
            win.session.set_plan_config(pc)

    def update_command(self) -> None:
        win = self.win
        tp = win.train_panel
        if not tp.distributed() or win.session.corpus is None:
            tp.set_command([])
            return
        from nanogpt_viz.run.launch import shell_line, torchrun_command

        try:
            tc = tp.train_config()
        except ValueError:
            return
        args = win.runs.command_args(tp.preset.currentText(), tp.model_config(0), tc,
                                     runs_root() / "<timestamp>", win.runs.continue_from is not None)
        hosts = tp.hosts_list()
        nodes = range(len(hosts)) if len(hosts) > 1 else [0]
        tp.set_command([shell_line(torchrun_command(args, tp.gpus.value(), hosts, node_rank=i, python="python"))
                        for i in nodes])
