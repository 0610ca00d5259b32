"""A run directory read back as the trainer's own records: one contract for every run.

In-process runs and torchrun runs reach the window the same way: `RunReader.poll()` tails
metrics.jsonl and returns `StepReport`s whose per-token losses come from the history; `report(step)`
answers any past step; `end()` gives the `RunEnd` once the run has ended. Pure (no Qt).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt_viz.engine.trainer import EvalReport, RunEnd, StepReport
from nanogpt_viz.run.history import HistoryReader
from nanogpt_viz.run.record import (METRICS_FILE, EndReason, RunManifest, read_manifest, read_status)

HOLD_S = 1.0  # how long a metrics line may wait for its history record (a lagging rank) before it goes out


def _num(v: Any, default: float = math.nan) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default


class RunReader:
    """Reads RUN_DIR (run.json, metrics.jsonl, status.json, history/), also while it is being written.

    plan: the run's BatchPlan, when the caller has one (the window has): StepReport.starts is then the
    plan's (K, W, B) row starts; without it `starts` is an empty array.
    """

    def __init__(self, run_dir: str | os.PathLike, plan: Any = None):
        self.dir = Path(run_dir)
        self.manifest: RunManifest = read_manifest(self.dir)  # RunError with a sentence when missing/damaged
        self.history = HistoryReader(self.dir)
        self.plan = plan
        self._offset = 0  # bytes of metrics.jsonl read so far
        self._where: dict[int, int] = {}  # step -> byte offset of its (last) metrics line
        self._held: list[tuple[dict[str, Any], float]] = []  # lines waiting for their history record
        self.init_eval: EvalReport | None = None  # the evaluation before step 0, when the run made one
        self.last_step: int | None = None

    # ---- following a live run -----------------------------------------------------------------
    def _read_lines(self) -> list[dict[str, Any]]:
        path = self.dir / METRICS_FILE
        try:
            with open(path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        out, pos = [], self._offset
        for line in data[: end + 1].split(b"\n")[:-1]:
            start, pos = pos, pos + len(line) + 1
            try:
                rec = json.loads(line)
                step = int(rec["step"])
            except (ValueError, KeyError, TypeError):
                continue
            self._where[step] = start
            out.append(rec)
        self._offset += end + 1
        return out

    def poll(self) -> list[StepReport]:
        """The steps written since the last poll, in order. While the run is live, a step waits (at most
        HOLD_S) for every rank's history record, so its per-token losses come with it."""
        now = time.monotonic()
        self._held += [(rec, now) for rec in self._read_lines()]
        if not self._held:
            return []
        self.history.refresh()
        expect = self.history.W > 0 and self.end() is None
        out = []
        while self._held:
            rec, seen = self._held[0]
            step = int(rec["step"])
            last = self.history.last_step
            if expect and (last is None or step > last) and now - seen < HOLD_S:
                break
            self._held.pop(0)
            if "init_val_loss" in rec and rec["init_val_loss"] is not None:
                self.init_eval = EvalReport(0, _num(rec["init_val_loss"]), str(rec.get("init_val_protocol")),
                                            int(rec.get("init_val_tokens") or 0), rec.get("init_train_loss_est"))
            out.append(self._report(rec))
            self.last_step = step
        return out

    # ---- any past step ------------------------------------------------------------------------
    def report(self, step: int) -> StepReport | None:
        """Step `step` as the trainer reported it, with its per-token losses from the history (None
        when the run has no record of that step)."""
        step = int(step)
        if step not in self._where:
            self._read_lines()
        at = self._where.get(step)
        if at is None:
            return None
        with open(self.dir / METRICS_FILE, "rb") as f:
            f.seek(at)
            rec = json.loads(f.readline())
        if self.history.last_step is None or step > self.history.last_step:
            self.history.refresh()
        return self._report(rec)

    def steps(self) -> list[int]:
        """Every step with a metrics line so far (sorted)."""
        self._read_lines()
        return sorted(self._where)

    def _report(self, rec: dict[str, Any]) -> StepReport:
        m = self.manifest
        step = int(rec["step"])
        W = int(rec.get("world_size") or m.world_size or 1)
        per_token = self.history.per_token(step)
        position = self.history.position_mean(step)
        if self.plan is not None:
            starts = np.asarray(self.plan.starts(step))
        else:
            starts = np.zeros(0, dtype=np.int64)
        val = rec.get("val_loss")
        return StepReport(
            step=step, epoch=int(rec.get("epoch") or 0), lr=_num(rec.get("lr")), loss=_num(rec.get("loss")),
            grad_norm=_num(rec.get("grad_norm")), tokens_per_s=_num(rec.get("tokens_per_s"), 0.0),
            mfu=rec.get("mfu"), dt=_num(rec.get("dt"), 0.0), starts=starts, per_token=per_token,
            position_loss=position, ranks=tuple(range(W)), val_loss=None if val is None else _num(val),
            tokens_seen=int(rec.get("tokens_seen") or 0), world_size=W, finished_at=0.0,
            val_protocol=rec.get("val_protocol"), val_tokens=int(rec.get("val_tokens") or 0),
            train_loss_est=rec.get("train_loss_est"), bpb=rec.get("bpb"), val_bpb=rec.get("val_bpb"),
            rows_across_docs=rec.get("rows_across_docs"), targets_after_eot=rec.get("targets_after_eot"),
            loss_after_eot=rec.get("loss_after_eot"), loss_rest=rec.get("loss_rest"))

    # ---- state --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return read_status(self.dir) or {}

    def end(self) -> RunEnd | None:
        """The run's end (reason an EndReason) once it has ended; None while it runs (or was killed
        before it could say so: the process's exit tells that)."""
        st = self.status()
        state = st.get("state")
        if state not in EndReason._value2member_map_:
            try:
                m = read_manifest(self.dir)
            except ValueError:
                return None
            self.manifest = m
            if m.end_reason not in EndReason._value2member_map_:
                return None
            return RunEnd(EndReason(m.end_reason), m.message or "", int(m.steps_done or 0))
        return RunEnd(EndReason(state), str(st.get("message") or ""), int(st.get("step") or 0),
                      st.get("checkpoint"), st.get("best_val_loss"))


__all__ = ["RunReader"]
