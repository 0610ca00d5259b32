"""The real app in a real X server: `python -m nanogpt_viz` under Xvfb, driven with xdotool.

Needs Xvfb, xdotool and ImageMagick's `import` (Debian: apt-get install xvfb xauth xdotool imagemagick
libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1); skipped without them.

NANOGPT_VIZ_UPDATE_SCREENSHOT=1 also writes the final screenshot to resources/screenshot.png (README).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
W, H = 1600, 1000
TOOLS = ("Xvfb", "xdotool", "import")
MISSING = [t for t in TOOLS if shutil.which(t) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"real-window test needs {', '.join(MISSING)} (apt-get install xvfb xdotool imagemagick)")


def _start_xvfb(tmp: Path) -> tuple[subprocess.Popen, str]:
    for n in range(99, 160):
        if Path(f"/tmp/.X{n}-lock").exists() or Path(f"/tmp/.X11-unix/X{n}").exists():
            continue
        log = open(tmp / f"xvfb{n}.log", "wb")
        proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", f"{W}x{H}x24", "-nolisten", "tcp"],
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if Path(f"/tmp/.X11-unix/X{n}").exists():
                return proc, f":{n}"
            time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    pytest.skip("could not start Xvfb on a free display")


def _xdo(env: dict, *args: str, timeout: float = 30) -> str:
    out = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"xdotool {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def _shot(env: dict, path: Path) -> np.ndarray:
    subprocess.run(["import", "-window", "root", str(path)], env=env, check=True, timeout=30,
                   capture_output=True)
    from PySide6.QtGui import QImage

    img = QImage(str(path))
    assert not img.isNull(), f"cannot read {path}"
    img = img.convertToFormat(QImage.Format.Format_RGB32)
    a = np.frombuffer(img.constBits(), np.uint8, img.sizeInBytes()).reshape(img.height(), img.bytesPerLine())
    return a[:, :img.width() * 4].reshape(img.height(), img.width(), 4)[..., :3].copy()


def _settled(env: dict, tmp: Path, name: str, timeout: float = 20) -> np.ndarray:
    """A screenshot once two taken 0.5 s apart are identical (painting has caught up)."""
    prev = _shot(env, tmp / f"{name}.png")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        cur = _shot(env, tmp / f"{name}.png")
        if np.array_equal(cur, prev):
            return cur
        prev = cur
    return prev


def test_real_app_under_xvfb(tmp_path):
    xvfb, display = _start_xvfb(tmp_path)
    app = None
    try:
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb",
               "NANOGPT_VIZ_RUNS": str(tmp_path / "runs"), "NANOGPT_VIZ_CACHE": str(tmp_path / "cache"),
               "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CACHE_HOME": str(tmp_path / "xdgcache"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
        (tmp_path / "run").mkdir(mode=0o700)
        err_path = tmp_path / "app.err"
        with open(tmp_path / "app.out", "wb") as out, open(err_path, "wb") as err:
            app = subprocess.Popen([sys.executable, "-m", "nanogpt_viz"], cwd=ROOT, env=env, stdout=out, stderr=err)
        ids = _xdo(env, "search", "--sync", "--onlyvisible", "--name", "^nanogpt-viz", timeout=60).split()
        assert ids, "no nanogpt-viz window"
        win = ids[0]
        # the title names the corpus once the built-in one has loaded
        deadline = time.monotonic() + 60
        title = ""
        while time.monotonic() < deadline and "built-in" not in title:
            assert app.poll() is None, f"the app exited early:\n{err_path.read_text()}"
            title = _xdo(env, "getwindowname", win)
            time.sleep(0.2)
        assert "built-in" in title, title
        _xdo(env, "windowmove", "--sync", win, "0", "0")
        _xdo(env, "windowsize", "--sync", win, str(W), str(H))
        _xdo(env, "windowfocus", "--sync", win)
        time.sleep(4.5)  # the "Opened …" status message (4 s) is gone: the screen is still
        before = _settled(env, tmp_path, "before")
        again = _settled(env, tmp_path, "again")
        noise = np.any(before != again, axis=2)  # pixels that change by themselves (a caret blinking)
        # not blank: a painted window has many colours and a wide spread
        colours = np.unique(before.reshape(-1, 3), axis=0)
        assert len(colours) > 50 and before.std() > 20, (len(colours), before.std())

        _xdo(env, "key", "--delay", "100", "Right", "Right", "Right")
        after = _settled(env, tmp_path, "after")
        changed = np.any(before != after, axis=2) & ~noise
        # step 0 -> 3 moves the highlighted rows in the stream and refills X/Y: a large area repaints
        assert changed.sum() > 10_000, f"Right did not change the view ({changed.sum()} pixels)"
        assert noise.sum() < changed.sum() / 10
        if os.environ.get("NANOGPT_VIZ_UPDATE_SCREENSHOT") == "1":
            (ROOT / "resources").mkdir(exist_ok=True)
            shutil.copyfile(tmp_path / "after.png", ROOT / "resources" / "screenshot.png")

        _xdo(env, "key", "ctrl+q")
        try:
            rc = app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("the app did not exit within 30 s of Ctrl+Q")
        stderr = err_path.read_text(errors="replace")
        assert rc == 0, stderr
        assert "QThread: Destroyed" not in stderr, stderr
        assert "Traceback" not in stderr, stderr
    finally:
        if app is not None and app.poll() is None:
            app.kill()
            app.wait()
        xvfb.terminate()
        try:
            xvfb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()
