"""Keys that step the stream whenever no text field is being edited, and the shortcut list (Help menu).

Qt gives a focused spin box or line edit the arrow keys and Space before any window shortcut (it accepts
the ShortcutOverride event), so once a plan field had focus →, ← and Space stopped stepping (issue 12).
The rule here: a field is *being edited* from the first key typed into it until it loses focus; until then
the stepping keys go to the window's Go actions. Enter or Esc in a field hands the focus back to the stream.

The filter sits on the window's text fields that get the focus (installed on QApplication.focusChanged), not
on the application: an application filter is a Python call for every event of every widget (~650 for one
scrubbed step), each taking the GIL from a training thread.
"""
from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import (QAbstractSpinBox, QApplication, QComboBox, QDialog, QDialogButtonBox, QLineEdit,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

STEP_KEYS = (Qt.Key.Key_Right, Qt.Key.Key_Left, Qt.Key.Key_Space, Qt.Key.Key_Home)
RETURN_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape)
EDIT_KEYS = (Qt.Key.Key_Backspace, Qt.Key.Key_Delete, Qt.Key.Key_Up, Qt.Key.Key_Down)


def text_field(w: QObject | None) -> QWidget | None:
    """The editable text field `w` is (or is inside: a spin box's line edit), else None."""
    if isinstance(w, QLineEdit) and isinstance(w.parent(), (QAbstractSpinBox, QComboBox)):
        w = w.parent()
    if isinstance(w, QAbstractSpinBox) and not w.isReadOnly():
        return w
    if isinstance(w, QLineEdit) and not w.isReadOnly():
        return w
    if isinstance(w, QComboBox) and w.isEditable():
        return w
    return None


class StepKeys(QObject):
    """An event filter on one window's text fields (each installed when it gets the focus): see the module's
    note."""

    def __init__(self, window: QWidget, home: QWidget):
        super().__init__(window)
        self.window, self.home = window, home
        self.editing: QWidget | None = None  # the field being edited, if any
        self.watched: set[int] = set()  # id() of the widgets this filter is installed on
        app = QApplication.instance()
        app.focusChanged.connect(self._on_focus)
        window.destroyed.connect(self._remove)
        self._on_focus(None, QApplication.focusWidget())

    def _remove(self) -> None:
        app = QApplication.instance()
        if app is not None:
            try:
                app.focusChanged.disconnect(self._on_focus)
            except (RuntimeError, TypeError):  # already gone with this object
                pass

    def _on_focus(self, _old: QWidget | None, new: QWidget | None) -> None:
        """A widget got the focus: watch it (and the spin box or combo box it is the line edit of) when it is a
        text field of this window. Key presses, shortcut overrides and the focus leaving go to that widget."""
        field = text_field(new)
        if field is None or field.window() is not self.window:
            return
        for w in {new, field}:
            if id(w) not in self.watched:
                self.watched.add(id(w))
                w.installEventFilter(self)
                w.destroyed.connect(lambda _=None, k=id(w): self.watched.discard(k))

    def is_editing(self) -> bool:
        return self.editing is not None and self.editing is text_field(QApplication.focusWidget())

    def focus_home(self) -> None:
        if self.home.isVisible():
            self.home.setFocus(Qt.FocusReason.ShortcutFocusReason)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        t = event.type()
        if t not in (QEvent.Type.KeyPress, QEvent.Type.ShortcutOverride, QEvent.Type.FocusOut):
            return False
        field = text_field(obj)
        if field is None or field.window() is not self.window:
            return False
        if t == QEvent.Type.FocusOut:
            if self.editing is field:
                self.editing = None
            return False
        key, mods = event.key(), event.modifiers()
        plain = not (mods & ~Qt.KeyboardModifier.KeypadModifier)
        if t == QEvent.Type.ShortcutOverride:
            if key in STEP_KEYS and plain and self.editing is not field:
                event.ignore()  # not taken by the field: the window's Go action gets the key
                return True
            return False
        # a key press in the field
        if key in RETURN_KEYS:
            self.editing = None
            if key == Qt.Key.Key_Escape and isinstance(field, QAbstractSpinBox):
                field.setValue(field.value())  # drop the typed text: the committed value stays
            QTimer.singleShot(0, self.focus_home)  # after the field has committed its value (Enter)
            return False
        if key in EDIT_KEYS or (event.text() and event.text().isprintable()):
            self.editing = field
        return False


def shortcut_rows(window: QWidget) -> list[tuple[str, str, str]]:
    """(menu, action, shortcut) for every menu action with a shortcut, in menu order."""
    rows: list[tuple[str, str, str]] = []

    def walk(menu, path: str) -> None:
        for act in menu.actions():
            if act.menu() is not None:
                walk(act.menu(), f"{path} ▸ {act.menu().title().replace('&', '')}")
            elif not act.isSeparator() and act.shortcuts():
                keys = ", ".join(s.toString(QKeySequence.SequenceFormat.NativeText) for s in act.shortcuts())
                rows.append((path, act.text().replace("&", ""), keys))

    for act in window.menuBar().actions():
        if act.menu() is not None:
            walk(act.menu(), act.menu().title().replace("&", ""))
    return rows


def shortcuts_dialog(window: QWidget) -> QDialog:
    """Help ▸ Keyboard shortcuts: the list, read off the menus (so it never goes stale)."""
    rows = shortcut_rows(window)
    dlg = QDialog(window)
    dlg.setWindowTitle("Keyboard shortcuts")
    table = QTableWidget(len(rows), 3, dlg)
    table.setHorizontalHeaderLabels(["Menu", "Action", "Keys"])
    for i, row in enumerate(rows):
        for j, text in enumerate(row):
            table.setItem(i, j, QTableWidgetItem(text))
    table.resizeColumnsToContents()
    table.verticalHeader().hide()
    table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dlg.reject)
    lay = QVBoxLayout(dlg)
    lay.addWidget(table)
    lay.addWidget(buttons)
    dlg.resize(560, 520)
    dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dlg.show()
    return dlg
