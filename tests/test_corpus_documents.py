"""A folder of text files as one corpus (issue 13, item 4): the files joined with <|endoftext|> as GPT-2's data
was, in sorted name order, each tokenized on its own and followed by the single EOT token 50256.

A hand-made folder of three small files: the token count, where the EOTs fall, the boundary counts of a real
plan's steps, the cache, the run record's corpus identity, `prepare DIR`, and the errors for bad folders.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.data.batching import BatchPlan, gather_rows
from nanogpt_viz.data.corpus import CorpusError, open_corpus, text_documents
from nanogpt_viz.data.documents import step_documents
from nanogpt_viz.data.tokenizer import EOT, get_encoding
from nanogpt_viz.run.record import check_corpus, corpus_identity

# written out of order on purpose: the corpus joins them by name (a.txt, b.md, c.txt)
FILES = {
    "c.txt": "The third file mentions <|endoftext|> as plain text, which must not become the EOT token.",
    "a.txt": "Alpha is the first document.\r\nIts lines end with CRLF, read as Python's text mode reads them.\r\n",
    "b.md": "# Beta\n\nThe second document: café, naïve, 東京 — more than one byte per character.\n",
}
ORDER = ["a.txt", "b.md", "c.txt"]


def per_file_ids(name: str) -> list[int]:
    text = FILES[name].replace("\r\n", "\n")  # open(path, encoding="utf-8").read()
    return get_encoding().encode_ordinary(text)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOGPT_VIZ_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "docs"
    d.mkdir()
    for name, text in FILES.items():
        (d / name).write_bytes(text.encode("utf-8"))
    (d / ".hidden").write_text("not a document")
    (d / "empty.txt").write_bytes(b"")
    return d


def test_token_count_is_the_files_plus_one_eot_each_and_eots_sit_at_the_ends(folder, tmp_path):
    c = open_corpus(folder, val_fraction=0, cache_dir=tmp_path / "cache")
    assert c.fmt == "text-dir" and [p.name for p in c.files] == ORDER
    assert [p.name for p in text_documents(folder)] == ORDER
    counts = [len(per_file_ids(n)) for n in ORDER]
    assert len(c.train) == sum(counts) + len(ORDER)
    assert c.doc_tokens == [n + 1 for n in counts]
    t = c.train[:]
    expect = []
    for name in ORDER:
        expect += per_file_ids(name) + [EOT]
    assert t.tolist() == expect
    ends = np.cumsum([n + 1 for n in counts]) - 1  # the EOT closes its own document
    assert np.nonzero(t == EOT)[0].tolist() == ends.tolist()
    # the literal "<|endoftext|>" in c.txt stayed text: only the three separators are EOT
    assert int((t == EOT).sum()) == 3 and "<|endoftext|>" in FILES["c.txt"]
    assert any("3 documents" in n for n in c.notes) and any("1 empty file" in n for n in c.notes)


def test_boundary_counts_of_a_real_plan(folder, tmp_path):
    c = open_corpus(folder, val_fraction=0, cache_dir=tmp_path / "cache")
    t = c.train
    N, B = 8, 2
    plan = BatchPlan(PlanConfig(block_size=N, batch_size=B, sampling="sequential"), len(t))
    eots = set(np.nonzero(t[:] == EOT)[0].tolist())
    for step in range(3):
        docs = step_documents(t, plan, step)
        starts = plan.starts(step).ravel()
        x = gather_rows(t, starts, N + 1)[:, :-1]
        by_hand_rows = sum(any(s + j in eots for j in range(N)) for s in starts.tolist())
        by_hand_after = sum(1 for s in starts.tolist() for j in range(N) if s + j in eots)
        assert (docs.rows, docs.targets) == (B, B * N)
        assert docs.rows_across == by_hand_rows and docs.targets_after_eot == by_hand_after
        assert docs.targets_after_eot == int((x == EOT).sum())
    steps = range(plan.steps_per_epoch)  # one epoch: each input position read once
    total_after = sum(step_documents(t, plan, s).targets_after_eot for s in steps)
    read = {int(s) + j for k in steps for s in plan.starts(k).ravel() for j in range(N)}
    assert total_after == len(eots & read) and total_after >= 2


def test_cache_identity_and_a_changed_file(folder, tmp_path):
    cache = tmp_path / "cache"
    a = open_corpus(folder, cache_dir=cache)
    assert any("tokenized" in n for n in a.notes)
    b = open_corpus(folder, cache_dir=cache)  # the second open reads the cache
    assert any("loaded from cache" in n for n in b.notes)
    assert b.train[:].tolist() == a.train[:].tolist() and b.val[:].tolist() == a.val[:].tolist()
    assert len(a.train) == int(a.total_tokens * 0.9)  # the val split: the last 10% of the tokens
    ident = corpus_identity(a, "train")
    assert ident.format == "text-dir" and ident.tokens == len(a.train)
    assert check_corpus(ident, b) is None
    (folder / "b.md").write_text(FILES["b.md"].replace("Beta", "Bêta"), encoding="utf-8")
    changed = open_corpus(folder, cache_dir=cache)
    assert any("tokenized" in n for n in changed.notes)  # a new content key, not the stale cache
    assert check_corpus(ident, changed) is not None


def test_bad_folders_are_one_sentence(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match="contains no token files.*folder of text files"):
        open_corpus(empty, cache_dir=tmp_path / "cache")
    only_empty = tmp_path / "only_empty"
    only_empty.mkdir()
    (only_empty / "a.txt").write_bytes(b"")
    with pytest.raises(CorpusError, match="only empty files"):
        open_corpus(only_empty, cache_dir=tmp_path / "cache")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.txt").write_text("A perfectly good document of text.", encoding="utf-8")
    (mixed / "b.pkl").write_bytes(b"\x80\x04\x95\x00\x00binary\x00data" * 10)
    with pytest.raises(CorpusError, match=r"b\.pkl in the folder .* is not a text file"):
        open_corpus(mixed, cache_dir=tmp_path / "cache")


def _cli(cache, *args):
    env = dict(os.environ, NANOGPT_VIZ_CACHE=str(cache), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "nanogpt_viz", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_prepare_and_plan_accept_a_folder(folder, tmp_path):
    out = tmp_path / "prep"
    r = _cli(tmp_path / "cache", "prepare", folder, "-o", out, "--val-fraction", 0)
    assert r.returncode == 0, r.stderr
    expect = []
    for name in ORDER:
        expect += per_file_ids(name) + [EOT]
    assert np.fromfile(out / "train.bin", dtype="<u2").tolist() == expect
    r = _cli(tmp_path / "cache", "plan", folder, "-N", 8, "-B", 1, "--val-fraction", 0, "--json", "--tokens")
    assert r.returncode == 0, r.stderr
    import json

    first = json.loads(r.stdout.splitlines()[0])
    assert first["rows"][0]["x"] == expect[:8]
    empty = tmp_path / "nothing"
    empty.mkdir()
    r = _cli(tmp_path / "cache", "prepare", empty, "-o", tmp_path / "p2")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
