"""The window's menus and their shortcuts: each action calls one intent of the window or its parts."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence


def _action(win, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
    act = QAction(text, win)
    if shortcut is not None:
        seqs = shortcut if isinstance(shortcut, list) else [shortcut]
        act.setShortcuts([QKeySequence(s) for s in seqs])
    if tip:
        act.setStatusTip(tip)
    act.triggered.connect(slot)
    menu.addAction(act)
    return act


def open_text_folder(win) -> None:
    """File ▸ Open folder of text files…: a folder whose files are the documents of one corpus."""
    from PySide6.QtWidgets import QFileDialog

    path = QFileDialog.getExistingDirectory(win, "Open a folder of text files (one document each, joined with "
                                                 "<|endoftext|>)")
    if path:
        win.load_corpus(path)


def build_menus(win) -> None:
    """File, View, Go, Train, Help; the actions the tests and shortcuts reach are set on `win`."""
    runs, files = win.runs, win.files
    mb = win.menuBar()
    f = mb.addMenu("&File")
    win.open_act = _action(win, f, "&Open corpus…", win.open_dialog, QKeySequence.StandardKey.Open,
                           "Open a text file or the token files nanoGPT / llm.c / build-nanogpt write")
    win.open_dir_act = _action(win, f, "Open data &directory…", win.open_dir_dialog)
    win.open_text_dir_act = _action(win, f, "Open folder of &text files…", lambda: open_text_folder(win),
                                    tip="Each file one document, joined in name order with <|endoftext|> "
                                        "as GPT-2's data was")
    win.recent_menu = f.addMenu("Open &recent")
    _action(win, f, "Open &built-in corpus", lambda: win.load_corpus(None))
    f.addSeparator()
    win.open_run_act = _action(win, f, "Open r&un…", runs.open_run_dialog, "Ctrl+Shift+O",
                               "A run directory: its corpus, plan, curves and every step's per-token losses")
    _action(win, f, "&Attach to a run directory…", runs.attach_dialog,
            tip="Follow a run started from the command line or by an earlier window")
    win.compare_act = _action(win, f, "Compare &with run…", lambda: win.compare.dialog(),
                              tip="Overlay another run's loss and gradient norm on the charts (e.g. the same "
                                  "plan trained without dividing by K)")
    win.remove_compare_act = _action(win, f, "Remove co&mparison", lambda: win.compare.remove(),
                                     tip="Take the overlaid run off the charts")
    win.remove_compare_act.setEnabled(False)
    _action(win, f, "&Load checkpoint…", files.load_checkpoint_dialog,
            tip="Start then continues it into a new run directory; the file is never written")
    _action(win, f, "Open &nanoGPT run…", files.open_nanogpt_run_dialog,
            tip="The batches a nanoGPT train.py run drew, replayed exactly, with its checkpoint's weights")
    win.save_ckpt_act = _action(win, f, "&Save checkpoint as…", files.save_checkpoint_dialog,
                                QKeySequence.StandardKey.Save)
    f.addSeparator()
    _action(win, f, "Export loss history as &CSV…", files.export_csv)
    png = f.addMenu("Export plot as &PNG")
    for label, plot, name in (("Loss curve…", win.loss_plot, "loss"),
                              ("Per-token loss heatmap…", win.heatmap, "per_token_loss"),
                              ("Loss by position…", win.position_plot, "position_loss"),
                              ("Step × position map…", win.position_map, "step_position_map")):
        _action(win, png, label, lambda checked=False, p=plot, n=name: files.export_png(p, n))
    f.addSeparator()
    quit_seq = QKeySequence(QKeySequence.StandardKey.Quit)
    win.quit_act = _action(win, f, "&Quit", win.close,
                           [quit_seq, QKeySequence("Ctrl+Q")] if not quit_seq.isEmpty()
                           and quit_seq != QKeySequence("Ctrl+Q") else QKeySequence("Ctrl+Q"))

    stream = win.stream.stream
    v = mb.addMenu("&View")
    _action(win, v, "Zoom &in", stream.zoom_in, QKeySequence.StandardKey.ZoomIn)
    _action(win, v, "Zoom &out", stream.zoom_out, QKeySequence.StandardKey.ZoomOut)
    _action(win, v, "Show the current step", stream.ensure_step_visible, "Ctrl+L")
    v.addSeparator()
    group = QActionGroup(win)
    win.color_actions = {}
    for i, (mode, label) in enumerate((("step", "Colour by &step"), ("coverage", "Colour by &coverage"),
                                       ("loss", "Colour by per-token &loss"),
                                       ("documents", "Colour by &document (<|endoftext|> boundaries)"))):
        act = _action(win, v, label, lambda checked=False, m=mode: win.set_color_mode(m), f"Ctrl+{i + 1}")
        act.setCheckable(True)
        group.addAction(act)
        win.color_actions[mode] = act
    win.color_actions["step"].setChecked(True)
    v.addSeparator()
    win.rows_as_lines_act = QAction("One &row per line", win, checkable=True, checked=True)
    win.rows_as_lines_act.setShortcut(QKeySequence("Ctrl+R"))
    win.rows_as_lines_act.setStatusTip("Each line of the stream is one row of N tokens (where the plan's rows "
                                       "start at multiples of N); off: the stream flows line to line")
    win.rows_as_lines_act.toggled.connect(stream.set_rows_as_lines)
    v.addAction(win.rows_as_lines_act)
    win.keep_in_view_act = QAction("&Keep the current step in view", win, checkable=True, checked=True)
    win.keep_in_view_act.toggled.connect(lambda on: on and stream.ensure_step_visible())
    v.addAction(win.keep_in_view_act)
    win.count_from_one_act = QAction("&Count tokens from 1", win, checkable=True, checked=True)
    win.count_from_one_act.setStatusTip("Offsets read \"token 4,097 · t[4,096]\" (counting from 1 leads); "
                                        "off: \"t[4,096] · token 4,097\" (0-based, as Python indexes)")
    win.count_from_one_act.toggled.connect(win.set_count_from_one)
    v.addAction(win.count_from_one_act)
    units = v.addMenu("Loss &units")
    units.setToolTipsVisible(True)  # the disabled choice says why
    units_group = QActionGroup(win)
    win.units_actions = {}
    for key, label in (("nats", "&Nats (cross-entropy, as trained)"), ("bpb", "&Bits per byte")):
        act = _action(win, units, label, lambda checked=False, k=key: win.units.set_units(k))
        act.setCheckable(True)
        units_group.addAction(act)
        win.units_actions[key] = act
    win.units_actions["nats"].setChecked(True)
    v.addSeparator()
    for dock, key in ((win.plan_dock, "F2"), (win.train_dock, "F3"), (win.plot_dock, "F4")):
        dock.toggleViewAction().setShortcut(QKeySequence(key))  # a dock collapses and comes back
        v.addAction(dock.toggleViewAction())

    s = win.session
    g = mb.addMenu("&Go")
    win.next_act = _action(win, g, "&Next step", s.next, Qt.Key.Key_Right)
    win.prev_act = _action(win, g, "&Previous step", s.previous, Qt.Key.Key_Left)
    win.play_act = _action(win, g, "Play / &pause", win.controls.toggle_play, Qt.Key.Key_Space)
    win.home_act = _action(win, g, "&First step", s.reset, Qt.Key.Key_Home)
    _action(win, g, "&Jump to step…", win.jump_dialog, "Ctrl+G")
    _action(win, g, "Next &epoch", win.next_epoch, "Ctrl+Right")

    tp = win.train_panel
    t = mb.addMenu("&Train")
    win.start_act = _action(win, t, "&Start", tp.start_btn.click, "Ctrl+Return")
    _action(win, t, "&Pause / resume", tp.pause_btn.toggle, "Ctrl+P")
    _action(win, t, "S&top", runs.stop, "Ctrl+.")
    _action(win, t, "Sample &text…", files.sample_dialog, "Ctrl+E")

    h = mb.addMenu("&Help")
    from nanogpt_viz.ui import dialogs

    _action(win, h, "What am I seeing?", lambda: dialogs.explain(win))
    _action(win, h, "&Tour: how batches are cut…", lambda: win.tour.start(),
            tip="eight stops through block size, batches, shifted targets, accumulation and random offsets")
    from nanogpt_viz.ui.keys import shortcuts_dialog

    win.shortcuts_act = _action(win, h, "&Keyboard shortcuts", lambda: shortcuts_dialog(win), "Ctrl+/",
                                "Every key the window answers to, read off its menus")
    _action(win, h, "&About nanogpt-viz", lambda: dialogs.about(win))
