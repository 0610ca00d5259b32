"""Document boundaries in the stream (issue 13, item 4): the pure document index per position (cached block
counts), the "documents" colour mode and its legend, <|endoftext|> chips marked in every mode."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QColor

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.ui.stream_view import COLOR_MODES, DOC_COLORS, EOT_MARK, StreamPanel, _argb
from nanogpt_viz.viewmodel import GPT2_EOT, DocumentIndex, StreamModel, document_indices

E = GPT2_EOT


def test_document_indices_on_a_hand_made_stream():
    t = np.array([5, 6, E, 7, 8, 9, E, E, 10, 11], np.uint16)
    #             doc 0 ---  0  1 -------  1  2  3 ---
    want = [0, 0, 0, 1, 1, 1, 1, 2, 3, 3]
    assert document_indices(t, 0, len(t)).tolist() == want
    assert document_indices(t, 3, 8).tolist() == want[3:8]
    assert document_indices(t, 4, 4).tolist() == []
    assert document_indices(np.array([E, E, 1]), 0, 3).tolist() == [0, 1, 2]
    idx = DocumentIndex(t, block=3)
    for lo in range(len(t) + 1):
        for hi in range(lo, len(t) + 1):
            assert idx.indices(lo, hi).tolist() == want[lo:hi], (lo, hi)


def test_document_index_counts_each_block_once():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 50, 200_000).astype(np.uint16)
    t[rng.integers(0, len(t), 300)] = E
    idx = DocumentIndex(t, block=4096)
    full = document_indices(t, 0, len(t))
    for lo in (150_000, 10, 199_990, 150_001, 73_333):
        np.testing.assert_array_equal(idx.indices(lo, lo + 500), full[lo:lo + 500])
    assert idx.blocks_counted == 199_990 // 4096  # the blocks before the furthest start, each counted once
    assert int(full[-1]) == int(np.count_nonzero(t[:-1] == E))


def _panel(qtbot) -> StreamPanel:
    L = 4000
    tokens = (np.arange(L, dtype=np.int64) * 7919 % 50000).astype(np.uint16)
    tokens[37::53] = E  # a document every 53 tokens
    model = StreamModel(tokens, BatchPlan(PlanConfig(block_size=16, batch_size=4, sampling="sequential"), L))
    p = StreamPanel()
    qtbot.addWidget(p)
    p.resize(900, 600)
    p.set_display_table([f"t{i}" for i in range(50257)])
    p.set_model(model)
    p.show()
    qtbot.waitExposed(p)
    return p


def test_documents_mode_tints_each_document_and_has_its_legend(qtbot):
    assert "documents" in COLOR_MODES
    p = _panel(qtbot)
    view = p.stream
    p.set_color_mode("documents")
    assert view.color_mode() == "documents"
    text = p.legend_text()
    assert "documents (one tint each, split at <|endoftext|>)" in text
    assert "<|endoftext|> token (a document ends)" in text
    p.grab()
    sl = view.visible_slice()
    n = len(sl.ids)
    docs = document_indices(view.model().tokens, sl.lo, sl.lo + n)
    lut = np.array([_argb(c) for c in DOC_COLORS], np.uint32)
    np.testing.assert_array_equal(view._colors(sl, 0, n), lut[docs % len(lut)])
    assert len(set(docs.tolist())) > 1
    p.set_color_mode("step")
    assert "documents (one tint" not in p.legend_text()


@pytest.mark.parametrize("mode", ["step", "documents"])
def test_eot_chips_are_marked(qtbot, mode):
    p = _panel(qtbot)
    view = p.stream
    p.set_color_mode(mode)
    img = view.viewport().grab().toImage()
    lo, hi = view.visible_range()
    tokens = np.asarray(view.model().tokens)
    want = [int(q) for q in np.nonzero(tokens[lo:hi] == E)[0] + lo]
    assert want and view.eot_marked() == want
    mark = QColor(EOT_MARK).rgb()
    for q in want:
        r = view.chip_rect(q)
        assert QColor(img.pixel(r.right() - 1, r.center().y())).rgb() == mark, q
    other = next(q for q in range(lo, hi) if tokens[q] != E and tokens[q + 1] != E)
    r = view.chip_rect(other)
    assert QColor(img.pixel(r.right() - 1, r.center().y())).rgb() != mark


def test_the_view_menu_offers_the_documents_mode(qtbot, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from nanogpt_viz.ui.main_window import MainWindow

    monkeypatch.setenv("NANOGPT_VIZ_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    w = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), device_name="CPU")
    qtbot.addWidget(w)
    act = w.color_actions["documents"]
    assert "document" in act.text().lower() and act.shortcut().toString() == "Ctrl+4"
    act.trigger()
    assert w.stream.stream.color_mode() == "documents"
    assert "documents (one tint each" in w.stream.legend_text()
