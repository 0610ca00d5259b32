"""What the window remembers between sessions (QSettings): geometry and docks, the plan and training
settings, the view options and the stream's zoom; and the size of a first launch. A setting that no
longer reads (an old or damaged value) falls back to the default, silently.
"""
from __future__ import annotations

import json

from PySide6.QtCore import QByteArray, Qt

from nanogpt_viz.config import PlanConfig


def first_launch_size(avail) -> tuple[int, int]:
    """The first launch uses the screen: all of a laptop's (up to 1600 px wide), 92% of a larger one's."""
    if avail is None:
        return 1500, 920
    w, h = avail.width(), avail.height()
    if w > 1600:
        return int(w * 0.92), int(h * 0.92)
    return w, h - 30  # room for a window manager's title bar


def _on(value) -> bool:
    return value in (True, "true")


def restore(win) -> None:
    st = win.settings
    geo = st.value("geometry")
    if isinstance(geo, QByteArray) and not geo.isEmpty():
        win.restoreGeometry(geo)
    else:
        win.resize(*first_launch_size(win.screen().availableGeometry() if win.screen() else None))
    state = st.value("window_state")
    if isinstance(state, QByteArray) and not state.isEmpty():
        win.restoreState(state)
    else:
        win.resizeDocks([win.plan_dock, win.train_dock], [320, 380], Qt.Orientation.Horizontal)
        win.resizeDocks([win.train_dock, win.plot_dock], [430, 420], Qt.Orientation.Vertical)
    win.keep_in_view_act.setChecked(_on(st.value("keep_in_view", "true")))
    win.count_from_one_act.setChecked(_on(st.value("count_from_one", "true")))
    try:
        pc = PlanConfig.from_dict(json.loads(st.value("plan", "") or "{}")) if st.value("plan") else None
        if pc is not None and pc.problems():
            pc = None
    except (ValueError, TypeError):
        pc = None
    pc = pc or PlanConfig(block_size=16, batch_size=4)
    win.plan_panel.set_config(pc)
    win.session.set_plan_config(pc)
    try:
        win.train_panel.restore(json.loads(st.value("train", "") or "{}"))
    except (ValueError, TypeError):
        pass
    zoom = st.value("zoom")
    if zoom is not None:
        try:
            win.stream.stream.set_zoom(int(zoom))
        except (TypeError, ValueError):
            pass
    win.corpora.refresh_recent()


def save(win) -> None:
    st = win.settings
    st.setValue("geometry", win.saveGeometry())
    st.setValue("window_state", win.saveState())
    st.setValue("plan", json.dumps(win.session.plan_config.to_dict()))
    st.setValue("train", json.dumps(win.train_panel.settings()))
    st.setValue("last_corpus", win.corpus_path or "")
    st.setValue("keep_in_view", win.keep_in_view_act.isChecked())
    st.setValue("count_from_one", win.count_from_one_act.isChecked())
    zoom = getattr(win.stream.stream, "zoom_level", None)
    if zoom is not None:
        st.setValue("zoom", int(zoom() if callable(zoom) else zoom))
    st.sync()
