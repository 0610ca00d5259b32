"""Opening corpora: the File menu's dialogs, a dropped file, the recent files, and the background
loader's progress in the status bar. A corpus that is not the text of the run being opened is kept
out (ui/runs.py decides); one that is becomes the session's, and the run is shown over it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from nanogpt_viz.ui.worker import CorpusLoader

MAX_RECENT = 8
TEXT_FILTER = ("Corpora (*.txt *.md *.bin *.npy *.json *.jsonl *.csv *.py);;Token files (*.bin *.npy);;"
               "All files (*)")


def dropped_file(mime) -> str | None:
    """The first local file of a drag's data, None when it carries none."""
    if not mime.hasUrls():
        return None
    return next((u.toLocalFile() for u in mime.urls() if u.isLocalFile()), None)


class CorpusActions(QObject):
    def __init__(self, win):
        super().__init__(win)
        self.win = win
        self.path: str | None = None  # the open corpus' file or folder (None: the built-in one)
        self.loader = CorpusLoader(win)
        self.loader.progress.connect(self._on_progress)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)
        self.loader.cancelled.connect(lambda p: win.statusBar().showMessage(f"Cancelled opening {p}", 5000))
        self.loader.busy_changed.connect(self._on_busy)
        win.cancel_btn.clicked.connect(self.loader.cancel)

    # ---- opening -----------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        start = os.path.dirname(self.path) if self.path else str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self.win, "Open corpus", start, TEXT_FILTER)
        if path:
            self.load(path)

    def open_dir_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self.win, "Open a data directory (train.bin / shards)")
        if path:
            self.load(path)

    def load(self, path: str | None) -> None:
        """Open `path` (None: the built-in corpus) in the background."""
        win = self.win
        if win.run.is_running():
            win.error("Training in progress", "A run belongs to its corpus: stop it before opening another.")
            return
        if path is not None and not os.path.exists(path):
            win.error("Cannot open corpus", f"{path} does not exist.")
            return
        win.statusBar().showMessage(f"Opening {path or 'the built-in corpus'}…")
        win.load_progress.setRange(0, 0)
        self.loader.load(path)

    def _on_busy(self, busy: bool) -> None:
        self.win.load_progress.setVisible(busy)
        self.win.cancel_btn.setVisible(busy)
        if not busy:
            self.win.load_progress.setRange(0, 1)

    def _on_progress(self, done: int, total: int) -> None:
        if total > 0:
            bar = self.win.load_progress
            bar.setRange(0, 1000)
            bar.setValue(int(1000 * done / total))
            bar.setFormat(f"tokenizing {100 * done / total:.0f}%")

    def _on_loaded(self, corpus: Any, path: str) -> None:
        win = self.win
        if not win.runs.corpus_loaded(corpus):  # not the text of the run being opened: kept out
            win.statusBar().clearMessage()
            return
        self.path = path or None
        win.session.set_corpus(corpus)
        n_val = len(corpus.split("val")) if corpus.has_split("val") else 0
        notes = "\n".join(corpus.notes) if getattr(corpus, "notes", None) else ""
        win.corpus_label.setText(f"<b>{corpus.name}</b> · {corpus.fmt} · {len(corpus):,} train tokens"
                                 + (f" · {n_val:,} val" if n_val else ""))
        win.corpus_label.setToolTip(f"{corpus.path}\n{notes}".strip())
        win.setWindowTitle(f"nanogpt-viz — {corpus.name}")
        win.statusBar().showMessage(f"Opened {corpus.name}", 4000)
        if path:
            self.add_recent(path)
        win.runs.after_corpus()

    def _on_failed(self, message: str, path: str) -> None:
        self.win.statusBar().clearMessage()
        self.win.runs.corpus_failed()
        self.win.error("Cannot open corpus", message)

    # ---- recent files ------------------------------------------------------------------------------
    def recent_files(self) -> list[str]:
        value = self.win.settings.value("recent", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [p for p in (value or []) if isinstance(p, str)]

    def add_recent(self, path: str) -> None:
        items = [path] + [p for p in self.recent_files() if p != path]
        self.win.settings.setValue("recent", items[:MAX_RECENT])
        self.refresh_recent()

    def refresh_recent(self) -> None:
        menu = self.win.recent_menu
        menu.clear()
        files = self.recent_files()
        for p in files:
            act = menu.addAction(p)
            act.triggered.connect(lambda checked=False, path=p: self.load(path))
        menu.setEnabled(bool(files))
