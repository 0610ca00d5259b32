"""Start the application: one QApplication, one MainWindow, a clean exit."""
from __future__ import annotations

import os
import sys

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

RESOURCES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "resources")


def make_app(argv: list[str] | None = None) -> QApplication:
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    app = QApplication.instance() or QApplication(argv or sys.argv[:1])
    QCoreApplication.setOrganizationName("nanogpt-viz")
    QCoreApplication.setApplicationName("nanogpt-viz")
    icon = os.path.join(RESOURCES, "icon.png")
    if os.path.exists(icon):
        app.setWindowIcon(QIcon(icon))
    import pyqtgraph as pg

    pg.setConfigOptions(antialias=False, background="w", foreground="k")  # aliased lines: cheap repaints
    return app


def run_app(corpus: str | None = None, run_dir: str | None = None) -> int:
    """The window on `corpus` (None: the last one, or the built-in one), or on the run in `run_dir`."""
    app = make_app()
    from nanogpt_viz.ui.main_window import MainWindow

    win = MainWindow()
    win.show()
    # open the first corpus (or the run, with its own corpus) once the event loop runs, so the window
    # paints before any work starts
    QTimer.singleShot(0, lambda: win.startup(corpus, run_dir))
    return app.exec()
