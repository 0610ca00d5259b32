import os

# Qt tests run without a display; set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def no_running_qthreads(request, monkeypatch):
    """UI tests: fail any test that leaves a QThread running.

    Every QThread started during the test is recorded (QThread.start wrapped, the original still
    runs). After the test (and after pytest-qt has closed its widgets) each must have finished;
    a straggler gets 5 s to finish, then the test fails.
    """
    if not request.node.fspath.basename.startswith("test_ui"):
        yield
        return
    from PySide6.QtCore import QThread

    started: list = []
    original = QThread.start

    def recording_start(self, *args, **kwargs):
        started.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(QThread, "start", recording_start)
    yield started
    leaked = []
    for th in started:
        try:
            if th.isRunning() and not th.wait(5000):
                leaked.append(th.objectName() or repr(th))
        except RuntimeError:  # the C++ object is gone: it is not running
            pass
    if leaked:
        pytest.fail(f"QThread(s) still running after the test: {', '.join(leaked)}")
