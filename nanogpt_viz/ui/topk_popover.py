"""Top-k at any token, in the window: click a token, see what the model predicts next.

A click on a token of the stream (StreamView.clicked) or on a cell of the X/Y panel asks `TopKLens` for the
model's 10 most likely next tokens after that position (engine.topk.top_k_at), with the real target's rank,
probability and loss. The weights come from, in this order: the run training now (a ModelSnapshot requested
from the trainer's thread: it copies the weights between two steps, as Sample text does), the last run's
model once it has ended, or a loaded checkpoint. The forward pass runs in a worker thread (FunctionRunner);
the GPT is built once per architecture (about 150-250 ms for the tiny preset on a CPU, most of it the random
initialisation: done ahead, in the worker, as soon as a run starts or ends) and new weights are copied into it
(a few ms), so a click costs one forward pass. The answer shows in a `TopKPopover`: a frameless tool-tip window that takes neither focus nor the mouse
(a double-click on an X/Y row still expands it); Esc or the next click anywhere closes it.

Context: an X/Y cell is predicted from its row's start, exactly as training saw it; a stream click inside
one of the current step's rows uses that row's start too, elsewhere the longest context the model allows.
"""
from __future__ import annotations

import html
import threading
import time
from typing import Any

import numpy as np
from PySide6.QtCore import QEvent, QObject, QPoint, Qt, Signal
from PySide6.QtGui import QCursor
from PySide6.QtWidgets import QApplication, QFrame, QLabel, QVBoxLayout, QWidget

from nanogpt_viz.ui.worker import FunctionRunner

K = 10


class TopKPopover(QFrame):
    """A small popup listing a TopK: the context's tail, the target's rank/prob/loss, the top 10."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, Qt.WindowType.ToolTip | Qt.WindowType.FramelessWindowHint)
        self.setAttribute(Qt.WidgetAttribute.WA_ShowWithoutActivating)
        self.setObjectName("topk_popover")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#topk_popover { background: #fffdf6; border: 1px solid #9a8c5a; }")
        self.label = QLabel(self)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(10, 8, 10, 8)
        lay.addWidget(self.label)
        self.result = None
        self.units = "nats"  # or "bpb": View ▸ Loss units (ui/lenses.UnitsLens)

    def loss_text(self, res: Any) -> str:
        """The target's loss in the chosen units: nats, or bits per byte (loss / ln 2 / the target's bytes)."""
        nats = f"<b>{res.target_loss:.3f}</b> nats"
        if self.units != "bpb":
            return nats
        from nanogpt_viz.data.documents import token_bits_per_byte, token_byte_lengths

        bpb = token_bits_per_byte([res.target_loss], [res.target])
        if bpb is None or not np.isfinite(bpb[0]):
            return f"{nats} (no bytes: bits per byte undefined)"
        n = int(token_byte_lengths()[int(res.target)])
        return f"<b>{float(bpb[0]):.3f}</b> bits per byte ({res.target_loss:.3f} nats over {n} byte{'s' * (n != 1)})"

    # the application-wide filter only while shown: a Python filter on every event would slow the window
    def showEvent(self, ev) -> None:  # noqa: N802
        QApplication.instance().installEventFilter(self)
        super().showEvent(ev)

    def hideEvent(self, ev) -> None:  # noqa: N802
        QApplication.instance().removeEventFilter(self)
        super().hideEvent(ev)

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802
        if self.isVisible():
            t = ev.type()
            if t == QEvent.Type.MouseButtonPress and not (isinstance(obj, QWidget) and self.isAncestorOf(obj)):
                self.hide()
            elif t == QEvent.Type.KeyPress and ev.key() == Qt.Key.Key_Escape:
                self.hide()
                return True
        return False

    def show_text(self, rich: str, at: QPoint | None) -> None:
        self.label.setText(rich)
        self.adjustSize()
        if at is not None:
            screen = self.screen().availableGeometry() if self.screen() else None
            x, y = at.x() + 12, at.y() + 12
            if screen is not None:
                x = max(screen.left(), min(x, screen.right() - self.width()))
                y = max(screen.top(), min(y, screen.bottom() - self.height()))
            self.move(x, y)
        self.show()
        self.raise_()

    def show_result(self, res: Any, shown: Any, context_tail: str, source: str, ms: float, at: QPoint | None) -> None:
        self.result = res
        esc = lambda t: html.escape(str(t))  # noqa: E731
        rows = []
        for n, (i, p) in enumerate(zip(res.ids, res.probs), 1):
            hit = int(i) == res.target
            style = " style='background:#d9f2d9; font-weight:bold'" if hit else ""
            bar = "█" * max(1, int(round(float(p) * 20))) if p >= 0.005 else "▏"
            rows.append(f"<tr{style}><td align='right'>{n}.</td><td><code>{esc(shown(int(i)))}</code></td>"
                        f"<td align='right'>{float(p):.4f}</td><td style='color:#7a6a2a'>{bar}</td></tr>")
        rank_note = "" if res.target_rank <= len(res.ids) else " (not in the top 10)"
        text = (f"<b>after t[{res.position:,}]</b> <span style='color:#666'>…{esc(context_tail)}</span><br>"
                f"target t[{res.position + 1:,}] = <code><b>{esc(shown(res.target))}</b></code>: "
                f"rank <b>{res.target_rank:,}</b>{rank_note}, p = <b>{res.target_prob:.4f}</b>, "
                f"loss = {self.loss_text(res)}<br>"
                f"<table cellspacing='0' cellpadding='1'>{''.join(rows)}</table>"
                f"<span style='color:#666'>context t[{res.context_start:,}..{res.position:,}] "
                f"({res.position - res.context_start + 1:,} tokens) · {esc(source)} · {ms:.0f} ms</span>")
        self.show_text(text, at)


class TopKLens(QObject):
    """Answers clicks with a TopKPopover. `computed(TopK, ms)` fires when a result is shown (tests wait on it)."""

    computed = Signal(object, float)
    failed = Signal(str)

    def __init__(self, win: Any):
        super().__init__(win)
        self.win = win
        self.popover = TopKPopover(win)
        self._lock = threading.Lock()
        self._cache: tuple[Any, Any, Any] | None = None  # (architecture, weights key, GPT) built in a worker
        self._waiting_snapshot: tuple | None = None  # a request waiting for the trainer's snapshot
        self._task: FunctionRunner | None = None
        self._queued: tuple | None = None  # the latest request while a task runs
        self.last_ms: float | None = None

    # ---- intents ------------------------------------------------------------------------------
    def on_stream_click(self, position: int) -> None:
        self.request(int(position), self._row_start(int(position)), QCursor.pos())

    def on_xy_click(self, position: int, context_start: int) -> None:
        self.request(int(position), int(context_start), QCursor.pos())

    def _row_start(self, p: int) -> int | None:
        """The start of the current step's row whose inputs hold position p (training's context), else None."""
        s = self.win.session
        plan = s.plan
        if plan is None:
            return None
        try:
            starts = plan.starts(s.step).ravel()
        except Exception:
            return None
        inside = [int(a) for a in starts if int(a) <= p < int(a) + plan.N]
        return inside[0] if inside else None

    def request(self, position: int, context_start: int | None = None, at: QPoint | None = None) -> None:
        """Top-k after `position` of the shown split, from the freshest weights there are."""
        t0 = time.perf_counter()
        run = self.win.runs.run
        req = (position, context_start, at, t0)
        if run.is_running() and run.kind == "local":
            self._waiting_snapshot = req
            run.request("snapshot")  # answered between two steps: on_snapshot
            return
        trainer = run.trainer
        if trainer is not None and getattr(trainer, "raw_model", None) is not None:
            key = ("run", id(trainer), getattr(trainer, "steps_done", 0))
            state = None if self._cached(key) else {k: v.detach().clone()
                                                     for k, v in trainer.raw_model.state_dict().items()}
            self._start(key, trainer.model_config.to_dict(), state, f"run after {trainer.steps_done:,} steps", req)
            return
        ck = getattr(self.win.files, "loaded_checkpoint", None)
        if ck is not None:
            self._start(("ckpt", id(ck)), ck.model_args, ck.model_state,
                        f"checkpoint at iteration {ck.iter_num:,}", req)
            return
        self.win.statusBar().showMessage("Top-k needs a model: train one or load a checkpoint, then click a token "
                                         "to see what the model predicts next", 6000)

    def on_snapshot(self, snap: Any) -> None:
        req, self._waiting_snapshot = self._waiting_snapshot, None
        if req is not None:
            self._start(("snapshot", snap.step, id(snap)), snap.model_args, snap.state,
                        f"weights after {snap.step:,} steps (training)", req)

    # ---- the worker ---------------------------------------------------------------------------
    def _cached(self, key: Any) -> bool:
        with self._lock:
            return self._cache is not None and self._cache[1] == key

    def prewarm(self, *_args) -> None:
        """Build the GPT of the run's architecture ahead (no weights yet), in the worker."""
        trainer = self.win.runs.run.trainer
        mc = getattr(trainer, "model_config", None)
        if mc is not None:
            self._start(None, mc.to_dict(), None, "", None)

    def _model(self, key: Any, model_args: dict, state: dict | None):
        """The cached GPT of this architecture holding the weights `key` (worker thread)."""
        import json

        arch = json.dumps(model_args, sort_keys=True, default=str)
        with self._lock:
            cache = self._cache
        if cache is None or cache[0] != arch:
            from nanogpt_viz.config import ModelConfig
            from nanogpt_viz.engine.model import GPT

            cache = (arch, None, GPT(ModelConfig.from_dict(model_args)).eval())
        if key is not None and cache[1] != key:
            if state is None:
                raise RuntimeError("the weights changed while they were read; click again")
            cache[2].load_state_dict(state)
            cache = (arch, key, cache[2])
        with self._lock:
            self._cache = cache
        return cache[2]

    def _start(self, key: Any, model_args: dict, state: dict | None, source: str, req: tuple | None) -> None:
        if self._task is not None and self._task.is_running():
            if req is not None or self._queued is None:
                self._queued = (key, model_args, state, source, req)
            return
        tokens = self.win.session.tokens
        if req is None:  # prewarm
            task = FunctionRunner(lambda: self._model(None, model_args, None), self)
            task.done.connect(lambda _m: self._next())
            task.failed.connect(lambda _msg: self._next())
            self._task = task
            task.start()
            return
        position, context_start, at, t0 = req
        if tokens is None:
            return

        def work():
            from nanogpt_viz.engine.topk import top_k_at

            model = self._model(key, model_args, state)
            ctx = context_start
            if ctx is not None and position - ctx + 1 > model.config.block_size:
                ctx = None  # a row longer than this model's context: the longest it allows
            return top_k_at(model, tokens, position, k=K, context_start=ctx)

        task = FunctionRunner(work, self)
        task.done.connect(lambda res: self._done(res, source, at, t0))
        task.failed.connect(lambda msg: self._fail(msg, at))
        self._task = task
        task.start()

    def _next(self) -> None:
        q, self._queued = self._queued, None
        if q is not None:
            self._start(*q)

    def _done(self, res: Any, source: str, at: QPoint | None, t0: float) -> None:
        ms = (time.perf_counter() - t0) * 1000.0
        self.last_ms = ms
        shown = self._shown()
        tokens = self.win.session.tokens
        tail = "".join(shown(int(i)) for i in tokens[max(res.context_start, res.position - 11):res.position + 1])
        self.popover.show_result(res, shown, tail, source, ms, at)
        self.win.statusBar().showMessage(
            f"t[{res.position + 1:,}]: rank {res.target_rank:,}, p {res.target_prob:.4f}, loss {res.target_loss:.3f} "
            f"({ms:.0f} ms, {source})", 8000)
        self.computed.emit(res, ms)
        self._next()

    def _fail(self, msg: str, at: QPoint | None) -> None:
        self._say(msg, at)
        self.failed.emit(msg)
        self._next()

    def _say(self, text: str, at: QPoint | None) -> None:
        self.popover.result = None
        self.popover.show_text(html.escape(text), at)

    def _shown(self):
        table = getattr(self.win, "display_table", None)
        if table is not None:
            return lambda i: table[i] if 0 <= i < len(table) else f"<?{i}>"
        from nanogpt_viz.data.tokenizer import display_text
        return display_text

    def wait(self, ms: int = 30_000) -> None:
        if self._task is not None:
            self._task.wait(ms)


__all__ = ["TopKLens", "TopKPopover", "K"]
