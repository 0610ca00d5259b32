"""Setting panels and controls. Widgets expose setters and emit intents; they build no trainers."""
from __future__ import annotations

import math

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QFontMetrics, QGuiApplication, QIcon
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout,
                               QLabel, QLineEdit, QProgressBar, QPushButton, QSizePolicy, QSlider, QSpinBox,
                               QStyle, QToolButton, QVBoxLayout, QWidget)

from nanogpt_viz.config import (DEFAULT_SEED, DEFAULT_SEEDS, MODEL_PRESETS, PLAN_PRESETS, SAMPLING_LABELS, SAMPLING_MODES, ModelConfig,
                                PlanConfig, TrainConfig)

CUSTOM = "Custom"


def std_icon(name: str) -> QIcon:
    """One of Qt's standard icons (QStyle.StandardPixmap.SP_<name>): drawn by the style, so no glyph a font
    may lack (the ⏸ glyph rendered as an empty box)."""
    from PySide6.QtWidgets import QApplication

    return QApplication.style().standardIcon(getattr(QStyle.StandardPixmap, f"SP_{name}"))


def fix_width(button, *texts: str) -> None:
    """A button as wide as its widest text, so toggling its text (Play/Pause) never moves its neighbours."""
    fm = QFontMetrics(button.font())
    icon = 0 if button.icon().isNull() else button.iconSize().width() + 8
    button.setFixedWidth(max(fm.horizontalAdvance(t) for t in texts) + icon + 24)


def _spin(lo: int, hi: int, value: int, tip: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setAccelerated(True)
    box.setToolTip(tip)
    box.setKeyboardTracking(False)
    return box


class PlanPanel(QGroupBox):
    """N, B, K, W, sampling, stride, seed, split; invalid combinations explained inline."""

    changed = Signal(object)  # PlanConfig

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Batch plan", parent)
        self.preset = QComboBox()
        self.preset.addItems([CUSTOM, *PLAN_PRESETS])
        self.preset.setToolTip("Settings real training code uses")
        self.n = _spin(1, 1 << 20, 16, "Block size N: tokens of context per row")
        self.b = _spin(1, 1 << 16, 4, "Batch size B: rows per micro-batch per rank")
        self.k = _spin(1, 4096, 1, "Gradient accumulation K: micro-batches per rank per optimizer step")
        self.w = _spin(1, 1024, 1, "World size W: DDP ranks, each reading its own rows")
        self.sampling = QComboBox()
        self.sampling.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.sampling.setMinimumContentsLength(10)
        self.preset.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset.setMinimumContentsLength(10)
        for mode in SAMPLING_MODES:
            self.sampling.addItem(SAMPLING_LABELS[mode], mode)
        self.stride = _spin(1, 1 << 20, 1, "Sliding window: rows start every S tokens")
        self.seed = _spin(0, 2 ** 31 - 1, DEFAULT_SEED, "Seed of the random and shuffled orders (llm.c's "
                          "shuffle uses 42 + rank, nanoGPT 1337 + rank)")
        self._mode = "sequential"
        self.split = QComboBox()
        self.split.addItems(["train", "val"])
        self.tokens_label = QLabel()
        self.tokens_label.setWordWrap(True)
        self.tokens_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem_label = QLabel()
        self.problem_label.setWordWrap(True)
        self.problem_label.setStyleSheet("color: #b00020;")
        self.problem_label.hide()
        self.note_label = QLabel()
        self.note_label.setWordWrap(True)
        self.note_label.setStyleSheet("color: #555;")

        form = QFormLayout()
        form.addRow("Preset", self.preset)
        form.addRow("Block size N", self.n)
        form.addRow("Batch size B", self.b)
        form.addRow("Grad accum K", self.k)
        form.addRow("Ranks W", self.w)
        form.addRow("Sampling", self.sampling)
        self.stride_label = QLabel("Stride S")
        form.addRow(self.stride_label, self.stride)
        form.addRow("Seed", self.seed)
        form.addRow("Split", self.split)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.tokens_label)
        lay.addWidget(self.note_label)
        lay.addWidget(self.problem_label)
        lay.addStretch(1)

        self._updating = False
        for box in (self.n, self.b, self.k, self.w, self.stride, self.seed):
            box.valueChanged.connect(self._emit)
        for combo in (self.sampling, self.split):
            combo.currentIndexChanged.connect(self._emit)
        self.preset.currentTextChanged.connect(self._apply_preset)
        self._refresh_labels()

    def config(self) -> PlanConfig:
        return PlanConfig(block_size=self.n.value(), batch_size=self.b.value(), grad_accum=self.k.value(),
                          world_size=self.w.value(), sampling=self.sampling.currentData(),
                          stride=self.stride.value(), seed=self._seed_value(), split=self.split.currentText())

    def _seed_value(self) -> int | None:
        """None when the box holds the mode's own default, so presets and defaults compare equal."""
        mode = self.sampling.currentData()
        value = self.seed.value()
        return None if value == DEFAULT_SEEDS.get(mode, DEFAULT_SEED) else value

    def set_config(self, pc: PlanConfig) -> None:
        self._updating = True
        try:
            self.n.setValue(pc.block_size)
            self.b.setValue(pc.batch_size)
            self.k.setValue(pc.grad_accum)
            self.w.setValue(pc.world_size)
            self.sampling.setCurrentIndex(max(0, self.sampling.findData(pc.sampling)))
            self.stride.setValue(pc.stride)
            self.seed.setValue(pc.effective_seed)
            self._mode = pc.sampling
            self.split.setCurrentText(pc.split)
            match = next((name for name, p in PLAN_PRESETS.items() if p == pc), CUSTOM)
            self.preset.blockSignals(True)
            self.preset.setCurrentText(match)
            self.preset.blockSignals(False)
        finally:
            self._updating = False
        self._refresh_labels()

    def _apply_preset(self, name: str) -> None:
        if name in PLAN_PRESETS:
            pc = PLAN_PRESETS[name].with_(split=self.split.currentText())
            self.set_config(pc)
            self.changed.emit(pc)

    def _emit(self) -> None:
        if self._updating:
            return
        mode = self.sampling.currentData()
        if mode != self._mode:  # a seed left at the old mode's default follows the new mode's default
            if self.seed.value() == DEFAULT_SEEDS.get(self._mode, DEFAULT_SEED):
                self._updating = True
                self.seed.setValue(DEFAULT_SEEDS.get(mode, DEFAULT_SEED))
                self._updating = False
            self._mode = mode
        self.preset.blockSignals(True)
        self.preset.setCurrentText(next((n for n, p in PLAN_PRESETS.items() if p == self.config()), CUSTOM))
        self.preset.blockSignals(False)
        self._refresh_labels()
        self.changed.emit(self.config())

    def _refresh_labels(self) -> None:
        pc = self.config()
        sliding = pc.sampling == "sliding"
        self.stride.setVisible(sliding)
        self.stride_label.setVisible(sliding)
        self.tokens_label.setText(
            f"Tokens per step = K×W×B×N = {pc.grad_accum}×{pc.world_size}×{pc.batch_size}×{pc.block_size} "
            f"= <b>{pc.tokens_per_step:,}</b>; one step is {pc.rows_per_step:,} rows of (N) tokens, "
            f"{pc.tokens_per_step:,} predictions averaged into one loss.")
        notes = {
            "random": "nanoGPT's get_batch: every step draws B fresh random offsets per rank, with "
                      "replacement. Blocks overlap and some text is never seen; there are no epochs.",
            "shuffled": "llm.c's DataLoader, shuffled: each rank's mt19937 (seed + rank) reorders the shards "
                        "every epoch and the samples of a shard when it is loaded. Seed 42 is llm.c's own.",
            "llmc": "llm.c's DataLoader: each shard is cut into samples of W×B×N tokens (rank r reads the r-th "
                    "B×N of a sample); all ranks move to the next shard together; each shard's tail is dropped.",
            "sequential": "build-nanogpt's DataLoaderLite: consecutive non-overlapping blocks, shard by shard; "
                          "each row starts where the previous row's inputs end. Each rank checks the shard's "
                          "end with its own position, so ranks can drift into different shards.",
        }
        if sliding and pc.stride == 1 and pc.batch_size > 1:
            note = ("Stride 1 with B > 1 is the misconception: rows overlap in N−1 of their N tokens, so a "
                    "step mostly re-reads what its neighbour row read. A row of N inputs already holds N "
                    "next-token predictions.")
        elif sliding:
            note = f"Rows start every S={pc.stride} tokens" + (" (overlapping)." if pc.stride < pc.block_size
                                                               else " (gaps between rows)." if pc.stride >
                                                               pc.block_size else " (same as sequential).")
        else:
            note = notes.get(pc.sampling, "")
        self.note_label.setText(note)

    def set_problem(self, text: str) -> None:
        self.problem_label.setText(text)
        self.problem_label.setVisible(bool(text))


class StepControls(QWidget):
    """Previous / play / next / reset, the step box and the step slider, play speed, the step readout."""

    previous_requested = Signal()
    next_requested = Signal()
    reset_requested = Signal()
    jump_requested = Signal(int)
    play_toggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.prev_btn = QToolButton(text="Prev")
        self.play_btn = QToolButton(text="Play")
        self.play_btn.setCheckable(True)
        self.next_btn = QToolButton(text="Next")
        self.reset_btn = QToolButton(text="Reset")
        self.icons = {"play": std_icon("MediaPlay"), "pause": std_icon("MediaPause")}
        for b, icon, tip in ((self.prev_btn, "MediaSeekBackward", "Previous step (←)"),
                             (self.play_btn, "MediaPlay", "Play / pause (Space)"),
                             (self.next_btn, "MediaSeekForward", "Next step (→)"),
                             (self.reset_btn, "MediaSkipBackward", "Back to step 0 (Home)")):
            b.setToolTip(tip)
            b.setIcon(std_icon(icon))
            # icons alone (the keys are in the tooltips): with "Play" written out, the row of a long run's
            # controls made the window 1,323 px wide; the text stays the button's name (Play / Pause)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # the keys keep stepping the stream
        self.step_box = QSpinBox()
        self.step_box.setRange(0, 2 ** 31 - 1)
        self.step_box.setKeyboardTracking(False)
        self.step_box.setToolTip("Jump to step (Ctrl+G)")
        self.step_box.setMinimumWidth(80)
        self.step_slider = QSlider(Qt.Orientation.Horizontal)
        self.step_slider.setRange(0, 0)
        self.step_slider.setMinimumWidth(60)
        self.step_slider.setToolTip("Scrub through the steps (a run's steps: their exact per-token losses)")
        self.slider_label = QLabel()
        self.speed = QSpinBox()
        self.speed.setRange(1, 30)
        self.speed.setValue(4)
        self.speed.setSuffix(" steps/s")
        self.speed.setToolTip("Play speed")
        self.readout = QLabel()
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # wrap rather than widen: unwrapped, the step readout alone made the window wider than a 1600 px screen
        self.readout.setWordWrap(True)
        self.readout.setMinimumWidth(200)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        for w in (self.reset_btn, self.prev_btn, self.play_btn, self.next_btn):
            top.addWidget(w)
        top.addWidget(QLabel("Step"))
        top.addWidget(self.step_box)
        top.addWidget(self.slider_label)
        top.addStretch(1)
        top.addWidget(self.speed)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(0)
        lay.addLayout(top)
        # the slider has a row of its own: beside the buttons a 1280 px window left it 50 px for 20,000 steps
        lay.addWidget(self.step_slider)
        lay.addWidget(self.readout)

        self.timer = QTimer(self)
        self.timer.timeout.connect(self.next_requested)
        self.prev_btn.clicked.connect(self.previous_requested)
        self.next_btn.clicked.connect(self.next_requested)
        self.reset_btn.clicked.connect(self.reset_requested)
        self.play_btn.toggled.connect(self._on_play)
        self.step_box.valueChanged.connect(self.jump_requested)
        self.step_slider.valueChanged.connect(self.jump_requested)
        self.speed.valueChanged.connect(self._on_speed)
        self.set_step_range(0, "")

    def _on_speed(self, v: int) -> None:
        if self.timer.isActive():
            self.timer.start(int(1000 / v))  # re-armed only when the user changes the speed

    def _on_play(self, on: bool) -> None:
        self.play_btn.setText("Pause" if on else "Play")
        self.play_btn.setIcon(self.icons["pause" if on else "play"])
        if on:
            self.timer.start(int(1000 / self.speed.value()))
        else:
            self.timer.stop()
        self.play_toggled.emit(on)

    def toggle_play(self) -> None:
        self.play_btn.toggle()

    def set_playing(self, on: bool) -> None:
        if self.play_btn.isChecked() != on:
            self.play_btn.setChecked(on)

    def set_step_range(self, last: int, text: str, tip: str = "") -> None:
        """The slider spans steps 0..last (a run's trained steps, or the plan's first epoch); `text` beside it
        (short: the row must fit a 1280 px window), `tip` its tooltip."""
        self.step_slider.blockSignals(True)
        self.step_slider.setRange(0, max(0, int(last)))
        self.step_slider.setPageStep(max(1, int(last) // 20))
        self.step_slider.blockSignals(False)
        self.slider_label.setText(text)
        self.slider_label.setToolTip(tip)

    def set_step(self, step: int) -> None:
        for w in (self.step_box, self.step_slider):
            w.blockSignals(True)
            w.setValue(min(step, w.maximum()))
            w.blockSignals(False)

    def set_readout(self, html: str) -> None:
        self.readout.setText(html)


class ElidedLabel(QLabel):
    """One line that never widens its parent: the text is elided at the right, the whole of it in the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def _elide(self) -> None:
        fm = QFontMetrics(self.font())
        super().setText(fm.elidedText(self._full, Qt.TextElideMode.ElideRight, max(20, self.width())))

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(80, super().minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(360, super().sizeHint().height())


class RunBar(QWidget):
    """Start / Pause / Stop, the progress bar and the live line (step · loss · val · tokens/s · ETA). The window
    keeps it in a fixed header, so it is in view at every window size, whatever the docks do."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.start_btn = QPushButton("Start")
        self.start_btn.setIcon(std_icon("MediaPlay"))
        self.start_btn.setToolTip("Train GPT-2 on this plan (Ctrl+Return)")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setIcon(std_icon("MediaPause"))
        self.pause_btn.setCheckable(True)
        self.pause_btn.setToolTip("Pause / resume training (Ctrl+P)")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setIcon(std_icon("MediaStop"))
        self.stop_btn.setToolTip("Stop training and save its checkpoint (Ctrl+.)")
        fix_width(self.start_btn, "Start")
        fix_width(self.pause_btn, "Pause", "Resume")
        fix_width(self.stop_btn, "Stop")
        for b in (self.start_btn, self.pause_btn, self.stop_btn):
            b.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m steps")
        self.progress.setFixedWidth(150)
        self.stats = ElidedLabel("Not training.")
        self.stats.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        for w in (self.start_btn, self.pause_btn, self.stop_btn, self.progress):
            lay.addWidget(w)
        lay.addWidget(self.stats, 1)

    def show_paused(self, on: bool) -> None:
        self.pause_btn.setText("Resume" if on else "Pause")
        self.pause_btn.setIcon(std_icon("MediaPlay" if on else "MediaPause"))

    def set_progress(self, done: int, total: int, text: str) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)
        self.stats.setText(text)


def _dspin(lo: float, hi: float, value: float, decimals: int, step: float) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class TrainPanel(QGroupBox):
    """Model preset and overrides, recipe, device; Start / Pause / Stop; progress."""

    start_requested = Signal(str, object, object)  # preset name, ModelConfig, TrainConfig
    settings_changed = Signal()
    pause_toggled = Signal(bool)
    stop_requested = Signal()
    sample_requested = Signal()
    fresh_requested = Signal()

    def __init__(self, device_name: str, gpu_count: int = 0, parent: QWidget | None = None):
        super().__init__("Train GPT-2 on this plan", parent)
        self.preset = QComboBox()
        self.preset.addItems(list(MODEL_PRESETS))
        self.n_layer = _spin(1, 96, 2)
        self.n_head = _spin(1, 64, 2)
        self.n_embd = _spin(8, 8192, 64)
        self.dropout = _dspin(0.0, 0.9, 0.0, 2, 0.05)
        self.steps = _spin(1, 10_000_000, 500, "How many optimizer steps to train. From scratch they are numbered "
                           "0..steps-1; nanoGPT's max_iters=M runs M+1 steps (iterations 0..M), so M+1 here "
                           "matches it. Continuing a checkpoint at step s trains steps s..s+steps-1")
        self.steps_range = QLabel()
        self.steps_range.setStyleSheet("color: #555;")
        self.start_step = 0  # the step a continued checkpoint is at (0: from scratch)
        self.continue_label = QLabel()
        self.continue_label.setWordWrap(True)
        self.continue_label.setStyleSheet("padding: 2px; background: #eef6ff;")
        self.fresh_btn = QToolButton(text="Start fresh")
        self.fresh_btn.setToolTip("Train a new model from scratch instead of continuing the checkpoint")
        self.lr = QLineEdit("1e-3")
        self.lr.setToolTip("Peak learning rate (warmup then cosine decay to lr/10)")
        self.eval_interval = _spin(0, 1_000_000, 50, "Evaluate on the val split every this many steps (0: never)")
        from nanogpt_viz.data.evaluation import EVAL_PROTOCOL_LABELS

        self.eval_protocol = QComboBox()
        self.eval_protocol.addItem("auto: as the plan's code (whole split for teaching plans)", "auto")
        for key, label in EVAL_PROTOCOL_LABELS.items():
            self.eval_protocol.addItem(label, key)
        self.eval_protocol.setToolTip(
            "How the val loss is measured. nanoGPT: estimate_loss's random batches from train and val; "
            "build-nanogpt / llm.c: their val loader from the start of the val split; whole: every val "
            "target once (the one to read when comparing with no code). auto: a plan set like a real "
            "code's preset is measured as that code measures, the window's own plans over the whole split.")
        self.context = _spin(0, 1_000_000, 0, "The model's context (block_size). 'follows N': one block size, "
                             "as nanoGPT has; a number keeps the model's context apart from the plan's N")
        self.context.setSpecialValueText("follows N")
        self.device = QComboBox()
        self.device.addItem(f"auto: {device_name}", "auto")
        self.device.addItem("cpu", "cpu")
        if gpu_count:
            self.device.addItem("cuda", "cuda")
        self.dtype = QComboBox()
        self.dtype.addItems(["auto", "float32", "bfloat16", "float16"])
        self.residual = QComboBox()
        self.residual.addItem("float32 (nanoGPT)", "float32")
        self.residual.addItem("bfloat16 (llm.c)", "bfloat16")
        self.residual.setToolTip("The residual stream between blocks. nanoGPT keeps it in float32 (its "
                                 "embeddings are float32); llm.c keeps it in bfloat16: about 5% faster on a GPU, "
                                 "a little less precise. Needs bfloat16 precision.")
        self.compile = QComboBox()
        self.compile.addItems(["auto", "on", "off"])
        self.compile.setToolTip("torch.compile: auto turns it on for CUDA (it is slow to start on a CPU)")
        self.gpus = _spin(1, max(1, gpu_count), 1, "GPUs on this machine: more than one trains with DDP "
                          "through torchrun (one process per GPU)")
        self.hosts = QLineEdit()
        self.hosts.setPlaceholderText("optional: host names for several machines")
        self.hosts.setToolTip("Several machines: list their host names (the first is the rendezvous host). "
                              "The window runs node 0 here; run the command below on the others.")
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setToolTip("The torchrun command the window will run")
        self.copy_btn = QToolButton(text="Copy")
        self.copy_btn.setToolTip("Copy the torchrun command")
        self.copy_btn.clicked.connect(lambda: copy_to_clipboard(self.command.toolTip() or self.command.text()))
        self.follow = QCheckBox("View follows training")
        self.follow.setToolTip("The view follows the step being trained")
        self.follow.setChecked(True)

        # Start / Pause / Stop and the live line live in the run bar, which the window keeps in view (a fixed
        # header), never inside this panel's scroll area
        self.run_bar = RunBar()
        self.start_btn, self.pause_btn, self.stop_btn = self.run_bar.start_btn, self.run_bar.pause_btn, self.run_bar.stop_btn
        self.progress, self.stats = self.run_bar.progress, self.run_bar.stats
        self.sample_btn = QPushButton("Sample text…")

        # narrow enough for a 1280 px window's dock: no field may be wider than the dock (it was clipped)
        for combo in (self.preset, self.eval_protocol, self.device, self.dtype, self.residual, self.compile):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.addRow("Model", self.preset)
        row = QHBoxLayout()
        for box, tip in ((self.n_layer, "layers"), (self.n_head, "heads"), (self.n_embd, "width (n_embd)")):
            box.setToolTip(tip)
            box.setMinimumWidth(40)
            row.addWidget(box)
        form.addRow("Size", row)
        form.addRow("Dropout", self.dropout)
        form.addRow("Context", self.context)
        steps_row = QHBoxLayout()
        steps_row.addWidget(self.steps)
        self.steps_range.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        steps_row.addWidget(self.steps_range, 1)
        form.addRow("Steps", steps_row)
        form.addRow("Learning rate", self.lr)
        form.addRow("Eval interval", self.eval_interval)
        form.addRow("Validation", self.eval_protocol)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("Residual", self.residual)
        form.addRow("Compile", self.compile)
        self.no_divide = QCheckBox("Experiment: sum the micro-batch losses without dividing by K")
        self.no_divide.setToolTip("Trains the same plan the wrong way (train --no-divide-by-k): every gradient is "
                                  "K times too large; the Gradient norm tab shows it above the clip line every "
                                  "step. Not remembered between sessions.")
        form.addRow("", self.no_divide)
        form.addRow("GPUs", self.gpus)
        self.hosts_label = QLabel("Hosts")
        form.addRow(self.hosts_label, self.hosts)
        cmd_row = QHBoxLayout()
        cmd_row.addWidget(self.command, 1)
        cmd_row.addWidget(self.copy_btn)
        self.command_label = QLabel("torchrun")
        form.addRow(self.command_label, cmd_row)
        form.addRow(self.follow)
        lay = QVBoxLayout(self)
        cont = QHBoxLayout()
        cont.addWidget(self.continue_label, 1)
        cont.addWidget(self.fresh_btn)
        lay.addLayout(cont)
        lay.addLayout(form)
        lay.addWidget(self.sample_btn)
        self.problem = QLabel()
        self.problem.setStyleSheet("color: #b00020;")
        self.problem.setWordWrap(True)
        self.problem.hide()
        lay.addWidget(self.problem)

        self.preset.currentTextChanged.connect(self._apply_preset)
        for box in (self.n_layer, self.n_head, self.n_embd, self.steps, self.eval_interval, self.gpus, self.context):
            box.valueChanged.connect(self.settings_changed)
        self.dropout.valueChanged.connect(self.settings_changed)
        for combo in (self.preset, self.device, self.dtype, self.residual, self.compile, self.eval_protocol):
            combo.currentIndexChanged.connect(self.settings_changed)
        self.lr.textChanged.connect(self.settings_changed)
        self.hosts.textChanged.connect(self.settings_changed)
        self.settings_changed.connect(self._update_distributed_rows)
        self.start_btn.clicked.connect(self._on_start)
        self.pause_btn.toggled.connect(self._on_pause)
        self.stop_btn.clicked.connect(self.stop_requested)
        self.sample_btn.clicked.connect(self.sample_requested)
        self.fresh_btn.clicked.connect(self.fresh_requested)
        self.steps.valueChanged.connect(self._update_steps_range)
        self.set_continuation(None, 0)
        self._apply_preset(self.preset.currentText())
        self.set_running(False)
        self._update_distributed_rows()

    def hosts_list(self) -> list[str]:
        from nanogpt_viz.run.launch import parse_hosts

        try:
            return parse_hosts(self.hosts.text())
        except ValueError:
            return []

    def distributed(self) -> bool:
        return self.gpus.value() > 1 or len(self.hosts_list()) > 1

    def _update_distributed_rows(self) -> None:
        on = self.distributed()
        for w in (self.command, self.copy_btn, self.command_label):
            w.setVisible(on)
        multi = self.gpus.maximum() > 1 or bool(self.hosts.text())
        self.hosts.setVisible(multi)
        self.hosts_label.setVisible(multi)

    def set_continuation(self, text: str | None, start_step: int) -> None:
        """Start continues a checkpoint at `start_step` (text says which), or None: from scratch."""
        self.start_step = int(start_step) if text else 0
        self.continue_label.setText(text or "")
        self.continue_label.setVisible(bool(text))
        self.fresh_btn.setVisible(bool(text))
        self._update_steps_range()

    def _update_steps_range(self) -> None:
        a, n = self.start_step, self.steps.value()
        self.steps_range.setText(f"{a:,} → {a + n:,}" if a else f"steps 0 → {n - 1:,}")

    def set_command(self, lines: list[str]) -> None:
        """The torchrun command(s) for this run: one per node."""
        self.command.setText(lines[0] if lines else "")
        self.command.setToolTip("\n".join(lines))

    def _apply_preset(self, name: str) -> None:
        mc = MODEL_PRESETS[name]
        self.n_layer.setValue(mc.n_layer)
        self.n_head.setValue(mc.n_head)
        self.n_embd.setValue(mc.n_embd)
        self.dropout.setValue(mc.dropout)

    def model_config(self, block_size: int) -> ModelConfig:
        mc = MODEL_PRESETS[self.preset.currentText()]
        return mc.with_(n_layer=self.n_layer.value(), n_head=self.n_head.value(), n_embd=self.n_embd.value(),
                        dropout=self.dropout.value(), block_size=self.context.value() or block_size)

    def train_config(self) -> TrainConfig:
        lr = float(self.lr.text())
        steps = self.steps.value()  # to train; the run's total counts the continued checkpoint's steps
        return TrainConfig(steps=self.start_step + steps, learning_rate=lr, min_lr=lr / 10, warmup_steps=min(100, steps // 10),
                           eval_interval=self.eval_interval.value(), eval_batches=0,
                           eval_protocol=self.eval_protocol.currentData(), device=self.device.currentData(),
                           dtype=self.dtype.currentText(), residual_dtype=self.residual.currentData(),
                           compile={"auto": None, "on": True, "off": False}[self.compile.currentText()],
                           divide_by_k=not self.no_divide.isChecked())

    def _on_start(self) -> None:
        try:
            lr = float(self.lr.text())
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError
        except ValueError:
            self.set_problem(f"learning rate must be a positive number (got {self.lr.text()!r})")
            return
        mc = self.model_config(1)  # the plan's N comes in when the run starts (MainWindow._run_configs)
        problems = mc.problems() + self.train_config().problems()
        if problems:
            self.set_problem("; ".join(problems))
            return
        self.set_problem("")
        self.start_requested.emit(self.preset.currentText(), mc, self.train_config())

    def _on_pause(self, on: bool) -> None:
        self.run_bar.show_paused(on)
        self.pause_toggled.emit(on)

    def set_problem(self, text: str) -> None:
        self.problem.setText(text)
        self.problem.setVisible(bool(text))

    def set_running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)
        for w in (self.preset, self.n_layer, self.n_head, self.n_embd, self.dropout, self.steps, self.lr,
                  self.eval_interval, self.device, self.dtype, self.residual, self.compile, self.gpus, self.hosts,
                  self.context, self.eval_protocol, self.no_divide):
            w.setEnabled(not running)
        self.fresh_btn.setEnabled(not running)
        if not running:
            self.pause_btn.blockSignals(True)
            self.pause_btn.setChecked(False)
            self.run_bar.show_paused(False)
            self.pause_btn.blockSignals(False)

    def set_progress(self, done: int, total: int, text: str) -> None:
        self.run_bar.set_progress(done, total, text)

    def settings(self) -> dict:
        return {"preset": self.preset.currentText(), "n_layer": self.n_layer.value(), "n_head": self.n_head.value(),
                "n_embd": self.n_embd.value(), "dropout": self.dropout.value(), "steps": self.steps.value(),
                "lr": self.lr.text(), "eval_interval": self.eval_interval.value(),
                "eval_protocol": self.eval_protocol.currentData(), "context": self.context.value(),
                "device": self.device.currentData(), "dtype": self.dtype.currentText(),
                "residual_dtype": self.residual.currentData(),
                "compile": self.compile.currentText(), "follow": self.follow.isChecked(),
                "gpus": self.gpus.value(), "hosts": self.hosts.text()}

    def restore(self, d: dict) -> None:
        try:
            if d.get("preset") in MODEL_PRESETS:
                self.preset.setCurrentText(d["preset"])
            for key in ("n_layer", "n_head", "n_embd", "steps", "eval_interval", "context"):
                if key in d:
                    getattr(self, key).setValue(int(d[key]))
            if "dropout" in d:
                self.dropout.setValue(float(d["dropout"]))
            if "lr" in d:
                self.lr.setText(str(d["lr"]))
            idx = self.device.findData(d.get("device"))
            if idx >= 0:
                self.device.setCurrentIndex(idx)
            if d.get("dtype"):
                self.dtype.setCurrentText(d["dtype"])
            idx = self.eval_protocol.findData(d.get("eval_protocol", "auto"))
            if idx >= 0:
                self.eval_protocol.setCurrentIndex(idx)
            idx = self.residual.findData(d.get("residual_dtype", "float32"))
            if idx >= 0:
                self.residual.setCurrentIndex(idx)
            if d.get("compile") in ("auto", "on", "off"):
                self.compile.setCurrentText(d["compile"])
            self.follow.setChecked(bool(d.get("follow", True)))
            self.gpus.setValue(int(d.get("gpus", 1)))
            self.hosts.setText(str(d.get("hosts", "")))
        except (TypeError, ValueError):
            pass  # settings from an older version: keep the defaults


def copy_to_clipboard(text: str) -> None:
    QGuiApplication.clipboard().setText(text)
