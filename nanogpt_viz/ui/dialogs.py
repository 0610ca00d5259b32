"""The window's dialogs: errors, help, a run's missing or different corpus, closing during a run, text."""
from __future__ import annotations

from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QMessageBox, QPlainTextEdit, QVBoxLayout, QWidget)

EXPLAIN_HTML = (
    "<p>The corpus is one long stream of GPT-2 tokens t[0], t[1], …</p>"
    "<p>A step feeds the model a (B, N) tensor X: B rows of N consecutive tokens. Y is the same window "
    "shifted left by one token, so X[i, j] is asked to predict Y[i, j] = the next token. The B×N "
    "per-token cross-entropies are averaged into the loss of the step.</p>"
    "<p><b>Sequential</b> (build-nanogpt, llm.c): rows are back to back; with N=1024, B=4, step 0 reads "
    "t[0..4095] (targets to t[4096]) and step 1 starts at t[4096]. <b>Random</b> (nanoGPT's get_batch): "
    "B random offsets per step, overlapping, with gaps. <b>Shuffled</b> (llm.c): sequential blocks in a "
    "random step order. <b>Sliding</b>: rows every S tokens; S=1 with B>1 is a misconception.</p>"
    "<p>Gradient accumulation K runs K micro-batches before one update, and W DDP ranks each read their "
    "own rows: K×W×B×N tokens per step.</p>"
    "<p>A run keeps every step's per-token losses in its run directory: the step slider, the step box and "
    "the overview strip go back to any step it trained, and File ▸ Open run… shows it again later.</p>")


def warning_box(parent: QWidget, title: str, message: str) -> QMessageBox:
    """A window-modal warning that does not block the event loop."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("error_dialog")
    box.open()
    return box


def explain(parent: QWidget) -> None:
    QMessageBox.information(parent, "What am I seeing?", EXPLAIN_HTML)


def about(parent: QWidget) -> None:
    from nanogpt_viz import __version__

    QMessageBox.about(parent, "About nanogpt-viz", f"<b>nanogpt-viz {__version__}</b><p>See how GPT-2 training "
                      "cuts batches out of a corpus, then train the real model on exactly those batches.</p>")


def corpus_problem(parent: QWidget, run_dir: str, problem: str, on_pick) -> QMessageBox:
    """The run's corpus is missing or is not the text the run trained on: say so, offer to pick the file.

    `on_pick()` runs when the user chooses "Pick the file…". Window-modal, returned open."""
    box = QMessageBox(QMessageBox.Icon.Warning, "The run's corpus",
                      f"The run {run_dir} cannot be shown over this corpus.\n\n{problem}\n\n"
                      "Its losses belong to the text it trained on; pick that file to open the run.",
                      QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel, parent)
    box.setObjectName("run_corpus_dialog")
    box.button(QMessageBox.StandardButton.Open).setText("Pick the file…")
    box.button(QMessageBox.StandardButton.Open).clicked.connect(on_pick)
    box.open()
    return box


def ask_keep_run(parent: QWidget, run_dir) -> QMessageBox.StandardButton:
    """Closing during a torchrun job: Discard stops it, Ignore keeps it running, Cancel stays."""
    box = QMessageBox(QMessageBox.Icon.Question, "Training is running",
                      "A multi-GPU run is in progress. Stop it (the checkpoint is saved), or keep it "
                      f"running and re-attach later with File ▸ Attach ({run_dir})?",
                      QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Ignore
                      | QMessageBox.StandardButton.Cancel, parent)
    box.button(QMessageBox.StandardButton.Discard).setText("Stop the run")
    box.button(QMessageBox.StandardButton.Ignore).setText("Keep it running")
    box.setDefaultButton(QMessageBox.StandardButton.Discard)
    return QMessageBox.StandardButton(box.exec())


def show_text(parent: QWidget, title: str, text: str) -> QDialog:
    dlg = QDialog(parent)
    dlg.setWindowTitle(title)
    lay = QVBoxLayout(dlg)
    view = QPlainTextEdit(text)
    view.setReadOnly(True)
    lay.addWidget(view)
    box = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    box.rejected.connect(dlg.close)
    lay.addWidget(box)
    dlg.resize(700, 400)
    dlg.show()
    return dlg
