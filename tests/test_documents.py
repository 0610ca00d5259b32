"""Document boundaries and bits per byte, on hand-made token streams."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.data.documents import bits_per_byte, split_by_boundary, step_documents, token_byte_lengths
from nanogpt_viz.data.tokenizer import EOT, encode


def test_boundary_counts_on_a_hand_made_multi_document_stream():
    # N=4, B=2: step 0 rows are t[0:4] and t[4:8], step 1 rows t[8:12] and t[12:16]
    t = np.array([1, 2, EOT, 3,   4, 5, 6, 7,   EOT, 8, EOT, 9,   10, 11, 12, EOT,   13, 14], dtype=np.int64)
    plan = BatchPlan(PlanConfig(block_size=4, batch_size=2), len(t))
    s0 = step_documents(t, plan, 0)
    assert (s0.rows, s0.rows_across, s0.targets, s0.targets_after_eot) == (2, 1, 8, 1)
    s1 = step_documents(t, plan, 1)
    # row t[8:12] holds two EOTs; row t[12:16] ends on one (its last target, t[16], starts a document)
    assert (s1.rows_across, s1.targets_after_eot) == (2, 3)


def test_loss_split_first_token_after_a_boundary():
    x = np.array([[5, EOT, 6, 7], [EOT, 1, 2, 3]])
    loss = np.array([[1.0, 9.0, 2.0, 3.0], [7.0, 1.0, 1.0, 1.0]])
    s = split_by_boundary(loss, x)
    assert s["after_boundary"] == pytest.approx(8.0) and s["after_boundary_n"] == 2
    assert s["rest"] == pytest.approx(9.0 / 6) and s["rest_n"] == 6


def test_bits_per_byte_is_loss_times_tokens_over_bytes_over_ln2():
    text = "Hello, wonderful world! Ünïcödé costs more bytes."
    ids = np.array(encode(text))
    n_bytes = len(text.encode("utf-8"))
    assert int(token_byte_lengths()[ids].sum()) == n_bytes
    assert bits_per_byte(2.0, ids) == pytest.approx(2.0 * len(ids) / n_bytes / math.log(2))
    assert bits_per_byte(2.0, np.array([EOT])) is None  # no text bytes


def test_plan_documents_in_the_cli(tmp_path):
    import json
    import subprocess
    import sys

    from nanogpt_viz.data.corpus import write_nanogpt_bin

    t = np.array([1, 2, EOT, 3, 4, 5, 6, 7, EOT, 8, EOT, 9, 10, 11, 12, EOT, 13, 14] * 3, dtype=np.uint16)
    write_nanogpt_bin(tmp_path / "d.bin", t)
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "plan", str(tmp_path / "d.bin"), "-N", "4", "-B", "2",
                          "--steps", "2", "--documents", "--json", "--val-fraction", "0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["documents"]["rows_across"] for r in recs] == [1, 2]
    assert [r["documents"]["targets_after_eot"] for r in recs] == [1, 3]
