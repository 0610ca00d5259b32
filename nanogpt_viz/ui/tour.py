"""Help ▸ Tour: eight stops through the founding note, each driving the real views.

Every stop sets the batch plan (through the plan panel and the session, as a user would), picks the step and
colour mode it talks about, outlines the widget it means and says one or two sentences; the numbers in the
sentences come from the plan (BatchPlan) of the corpus that is open, never from a script. Back / Next / Esc
(or Close); leaving the tour puts back the plan, step and colour mode the user had. On the first launch a
banner in the status bar offers the tour once; nothing starts unless it is clicked.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QEvent, QObject, QPoint, QRect, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from nanogpt_viz.config import PlanConfig

OFFERED_KEY = "tour_offered"


@dataclass(frozen=True)
class Stop:
    title: str
    plan: Callable[[Any], PlanConfig]  # the user's plan -> the plan this stop shows
    target: Callable[[Any], QWidget]  # the window -> the widget to outline
    text: Callable[[Any], str]  # the window (its session's plan set) -> one or two sentences
    step: Callable[[Any], int] = lambda plan: 0  # the plan -> the step to show
    color_mode: str = "step"


def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def _epoch_steps_of_tokens(plan) -> int:
    """Steps that read one epoch's worth of tokens (L - 1 targets): the step index to stop at."""
    return max(0, (plan.L - 1) // plan.tokens_per_step - 1)


def _stops() -> list[Stop]:
    seq = dict(sampling="sequential", grad_accum=1, world_size=1, stride=1, seed=None, split="train")

    def base(N, B, **kw):
        return lambda user: user.with_(**{**seq, "block_size": N, "batch_size": B, **kw})

    def t_block(w):
        p = w.session.plan
        return (f"A training example is a block of <b>N = {p.N}</b> consecutive tokens (the block size, the "
                f"model's context). The stream below shows them: the outlined block is what the model reads at "
                f"step 0, t[0..{p.N - 1}].")

    def t_batch(w):
        p = w.session.plan
        return (f"A step reads <b>B = {p.B}</b> such rows at once: X is a <b>({p.B}, {p.N})</b> tensor. With the "
                f"sequential loader row r+1 starts where row r's inputs end: rows start at "
                f"{', '.join(str(int(s)) for s in p.starts(0).ravel())}.")

    def t_shift(w):
        p = w.session.plan
        return (f"Y is X shifted left by one token: Y[i, j] = t[s<sub>i</sub> + j + 1]. Each X cell sits right over "
                f"the token it must predict; the last target of row 0 is t[{p.N}], the first input of row 1.")

    def t_loss(w):
        p = w.session.plan
        return (f"One forward pass makes B×N = {p.B}×{p.N} = <b>{p.B * p.N}</b> next-token predictions, one per X "
                f"cell, and their cross-entropies are averaged into the one loss the step reports (the loss "
                f"plot; the per-token heatmap shows the {p.B * p.N} numbers before averaging).")

    def t_step2(w):
        p = w.session.plan
        s = int(p.starts(1).ravel()[0])
        return (f"With <b>N = {p.N}, B = {p.B}</b> a step reads {_fmt(p.tokens_per_step)} tokens: the first step "
                f"(step 0 here) reads t[0..{p.tokens_per_step - 1}] with targets up to t[{p.tokens_per_step:,}], so "
                f"the second (step 1 here, shown) starts at t[{s:,}]: the <b>{s + 1:,}th</b> token counting from 1, "
                f"which the first step only used as a target.")

    def t_sliding(w):
        p = w.session.plan
        from nanogpt_viz.data.batching import plan_for

        seq_plan = plan_for(p.config.with_(sampling="sequential", stride=1), w.session.tokens)
        return (f"The misconception: a window sliding by 1 token, one row per position. Over this corpus that is "
                f"<b>{_fmt(p.steps_per_epoch)}</b> steps per epoch instead of {_fmt(seq_plan.steps_per_epoch)}, and "
                f"every token is re-read as an input about <b>{p.N}</b> times. Needless: a row of N inputs already "
                f"holds N predictions, one per position.")

    def t_accum(w):
        p = w.session.plan
        return (f"Gradient accumulation: K = {p.K} micro-batches of (B, N) = ({p.B}, {p.N}) are summed into one "
                f"optimizer step, each loss divided by K. Tokens per step = K×B×N = {p.K}×{p.B}×{p.N} = "
                f"<b>{_fmt(p.tokens_per_step)}</b> (×W with W data-parallel ranks).")

    def t_random(w):
        p = w.session.plan
        step = _epoch_steps_of_tokens(p)
        try:
            frac = p.fraction_seen(step)
            how = "measured from the plan's coverage"
        except Exception:
            frac = p.expected_random_fraction(step)
            how = "expected"
        return (f"nanoGPT's get_batch draws B random offsets per call, with replacement. After one epoch's worth of "
                f"tokens ({step + 1:,} steps × {_fmt(p.tokens_per_step)}) it has seen <b>{100 * frac:.1f}%</b> of the "
                f"corpus ({how}; 1 − 1/e ≈ 63% for uniform draws): some tokens twice or more, others never. "
                f"Consecutive blocks see 100%. Grey tokens here were never a target.")

    stream = lambda w: w.stream  # noqa: E731
    xy = lambda w: w.xy  # noqa: E731
    return [
        Stop("Block size N", base(16, 1), stream, t_block),
        Stop("Batch size B: the (B, N) tensor", base(16, 4), xy, t_batch),
        Stop("Y is X shifted by one", base(16, 4), xy, t_shift),
        Stop("B×N predictions, one loss", base(16, 4), lambda w: w.plot_dock, t_loss),
        Stop("N=1024, B=4: where step 2 starts", base(1024, 4), stream, t_step2, step=lambda p: 1),
        Stop("The stride-1 window misconception", base(1024, 4, sampling="sliding", stride=1), stream, t_sliding),
        Stop("Gradient accumulation", base(64, 4, grad_accum=4), lambda w: w.plan_panel, t_accum),
        Stop("Random offsets vs consecutive blocks", base(64, 8, sampling="random"), stream, t_random,
             step=_epoch_steps_of_tokens, color_mode="coverage"),
    ]


class _Outline(QFrame):
    """A coloured frame drawn over the widget a stop talks about; clicks go through."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("tour_outline")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setStyleSheet("#tour_outline { border: 3px solid #e8590c; border-radius: 4px; background: transparent; }")
        self.hide()


class TourCard(QFrame):
    """The stop's title, text, counter and Back / Next / Close, floating over the window's lower middle."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setObjectName("tour_card")
        self.setStyleSheet("#tour_card { background: #fff8ef; border: 2px solid #e8590c; border-radius: 6px; }")
        self.title = QLabel()
        self.title.setStyleSheet("font-weight: bold; font-size: 14px;")
        self.counter = QLabel()
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        self.back = QPushButton("◀ Back")
        self.next = QPushButton("Next ▶")
        self.close_btn = QPushButton("Close (Esc)")
        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.counter)
        row = QHBoxLayout()
        row.addWidget(self.close_btn)
        row.addStretch(1)
        row.addWidget(self.back)
        row.addWidget(self.next)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.text)
        lay.addLayout(row)
        self.setFixedWidth(520)
        self.hide()


class Tour(QObject):
    """Drives the window through the stops; `index` is the stop shown (-1: not running)."""

    def __init__(self, win: Any):
        super().__init__(win)
        self.win = win
        self.stops = _stops()
        self.index = -1
        self._saved: tuple[PlanConfig, int, str] | None = None
        self.card = TourCard(win)
        self.outline = _Outline(win)
        self.card.back.clicked.connect(self.back)
        self.card.next.clicked.connect(self.next)
        self.card.close_btn.clicked.connect(self.stop)
        self.esc = QShortcut(QKeySequence(Qt.Key.Key_Escape), win, self.stop)
        self.esc.setEnabled(False)
        self.banner: QWidget | None = None

    @property
    def running(self) -> bool:
        return self.index >= 0

    # ---- first launch --------------------------------------------------------------------------
    def offer_once(self) -> None:
        """A banner in the status bar on the first launch (never again): Take the tour / No thanks."""
        st = self.win.settings
        if st.value(OFFERED_KEY) in (True, "true"):
            return
        st.setValue(OFFERED_KEY, True)
        box = QFrame()
        box.setObjectName("tour_banner")
        box.setStyleSheet("#tour_banner { background: #fff0e0; border: 1px solid #e8590c; border-radius: 3px; }")
        lay = QHBoxLayout(box)
        lay.setContentsMargins(6, 0, 2, 0)
        # short: the status bar also holds the corpus and coverage lines, and the window must fit 1280 px
        offer = QLabel("New here?")
        offer.setToolTip("A 2-minute tour of how batches are cut from a corpus (Help ▸ Tour any time)")
        lay.addWidget(offer)
        go, no = QPushButton("Take the tour"), QPushButton("No thanks")
        go.setObjectName("tour_banner_go")
        for b in (go, no):
            b.setFlat(True)
            lay.addWidget(b)
        go.clicked.connect(lambda: (self._drop_banner(), self.start()))
        no.clicked.connect(self._drop_banner)
        self.win.statusBar().addPermanentWidget(box)
        self.banner = box

    def _drop_banner(self) -> None:
        if self.banner is not None:
            self.win.statusBar().removeWidget(self.banner)
            self.banner.deleteLater()
            self.banner = None

    # ---- the tour -----------------------------------------------------------------------------
    def start(self) -> None:
        win = self.win
        if win.session.tokens is None:
            win.statusBar().showMessage("The tour needs a corpus: open one first", 5000)
            return
        if win.run.is_running():
            win.statusBar().showMessage("The tour changes the batch plan: stop the run first", 5000)
            return
        if not self.running:
            mode = next((m for m, a in win.color_actions.items() if a.isChecked()), "step")
            self._saved = (win.session.plan_config, win.session.step, mode)
        self.go(0)

    def go(self, i: int) -> None:
        if not 0 <= i < len(self.stops):
            return
        if self.index < 0:
            self.win.installEventFilter(self)  # only while the tour runs
        self.index = i
        self.esc.setEnabled(True)
        stop = self.stops[i]
        win = self.win
        user = self._saved[0] if self._saved else win.session.plan_config
        pc = stop.plan(user)
        win.plan_panel.set_config(pc)
        win.session.set_plan_config(pc)
        plan = win.session.plan
        if plan is not None:
            win.session.set_step(min(stop.step(plan), 2 ** 31 - 1))
        win.set_color_mode(stop.color_mode)
        card = self.card
        card.title.setText(stop.title)
        card.counter.setText(f"{i + 1} / {len(self.stops)}")
        try:
            card.text.setText(stop.text(win) if plan is not None else
                              f"This corpus is too short for this plan ({win.session.last_problem}).")
        except Exception as exc:  # a corpus too small for the stop's numbers
            card.text.setText(f"(this corpus cannot show this stop: {exc})")
        card.back.setEnabled(i > 0)
        card.next.setText("Finish ✓" if i == len(self.stops) - 1 else "Next ▶")
        card.show()
        card.raise_()
        QTimer.singleShot(0, self._place)
        self._place()

    def next(self) -> None:
        if self.index >= len(self.stops) - 1:
            self.stop()
        else:
            self.go(self.index + 1)

    def back(self) -> None:
        if self.index > 0:
            self.go(self.index - 1)

    def stop(self) -> None:
        """Leave the tour: the user's plan, step and colour mode come back."""
        if not self.running:
            return
        self.index = -1
        self.win.removeEventFilter(self)
        self.esc.setEnabled(False)
        self.card.hide()
        self.outline.hide()
        if self._saved is not None:
            pc, step, mode = self._saved
            self._saved = None
            self.win.plan_panel.set_config(pc)
            self.win.session.set_plan_config(pc)
            self.win.session.set_step(step)
            self.win.set_color_mode(mode)

    def _place(self) -> None:
        if not self.running:
            return
        win, card = self.win, self.card
        target = self.stops[self.index].target(win)
        if target is not None and target.isVisible():
            top_left = target.mapTo(win, QPoint(0, 0))
            self.outline.setGeometry(QRect(top_left, target.size()).adjusted(-2, -2, 2, 2))
            self.outline.show()
            self.outline.raise_()
        else:
            self.outline.hide()
        card.adjustSize()
        cw = win.centralWidget()
        area = QRect(cw.mapTo(win, QPoint(0, 0)), cw.size()) if cw is not None else win.rect()
        x = area.left() + (area.width() - card.width()) // 2
        y = area.bottom() - card.height() - 16
        card.move(max(0, x), max(0, y))
        card.raise_()

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802
        if obj is self.win and self.running:
            t = ev.type()
            if t == QEvent.Type.Close:  # the user's settings are saved on close: put them back first
                self.stop()
            elif t in (QEvent.Type.Resize, QEvent.Type.LayoutRequest):
                QTimer.singleShot(0, self._place)
        return False


__all__ = ["Tour", "TourCard", "Stop", "OFFERED_KEY"]
