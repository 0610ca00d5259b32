"""Bits per byte and document boundaries in real tiny training runs (engine/trainer.py, cli.py train --json).

A hand-made corpus of short documents joined by <|endoftext|>: every number is recomputed here from the
plan's rows and the tokens' bytes, and compared with what the trainer reported.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.data.batching import gather_rows
from nanogpt_viz.data.documents import bits_per_byte, split_by_boundary, step_documents
from nanogpt_viz.data.tokenizer import EOT, encode, token_bytes
from nanogpt_viz.engine.trainer import EvalReport, RunEnd, StepReport, Trainer

DOCS = ["The cat sat on the mat. It was a sunny day in the small town by the sea.",
        "Numbers: 3.14159, 2.71828 and 1.41421 are famous constants; mathematicians love them dearly.",
        "Ünïcödé bytes — café, naïve, 東京 — take more than one byte per character in UTF-8.",
        "def f(x):\n    return x * x + 1\n\nprint(f(41))\n",
        "A short one.",
        "Once upon a time there lived a king who had three daughters, and the youngest was the fairest."]


def doc_tokens(repeat: int = 6) -> np.ndarray:
    ids: list[int] = []
    for _ in range(repeat):
        for d in DOCS:
            ids += encode(d) + [EOT]
    return np.asarray(ids, dtype=np.uint16)


def hand_bytes(ids: np.ndarray) -> int:
    return sum(0 if int(i) == EOT else len(token_bytes(int(i))) for i in np.ravel(ids))


def run(tr: Trainer):
    steps, evals, end = [], [], None
    for ev in tr.run():
        if isinstance(ev, StepReport):
            steps.append(ev)
        elif isinstance(ev, EvalReport):
            evals.append(ev)
        elif isinstance(ev, RunEnd):
            end = ev
    assert end is not None and end.reason == "finished", end
    return steps, evals


@pytest.fixture(scope="module")
def tiny_run():
    t = doc_tokens()
    n_val = 300
    train, val = t[:-n_val], t[-n_val:]
    pc = PlanConfig(block_size=32, batch_size=3, grad_accum=2)
    tr = Trainer(train, val, pc, MODEL_PRESETS["tiny"].with_(block_size=32),
                 TrainConfig(steps=4, eval_interval=2, eval_protocol="whole", device="cpu"))
    steps, evals = run(tr)
    return tr, train, val, steps, evals


def test_bpb_is_loss_times_targets_over_bytes_over_ln2(tiny_run):
    tr, train, _, steps, _ = tiny_run
    N = tr.plan_config.block_size
    for rep in steps:
        rows = gather_rows(train, rep.starts.ravel(), N + 1)
        y = rows[:, 1:]
        expected = rep.loss * y.size / hand_bytes(y) / math.log(2)
        assert rep.bpb == pytest.approx(expected, rel=1e-6)
        assert rep.bpb == pytest.approx(bits_per_byte(rep.loss, y), rel=1e-6)
        # and from the per-token losses themselves: their sum over the bytes
        assert rep.bpb == pytest.approx(float(rep.per_token.astype(np.float64).sum()) / hand_bytes(y) / math.log(2),
                                        rel=1e-4)


def test_val_bpb_is_the_val_loss_over_the_val_targets_bytes(tiny_run):
    tr, _, val, steps, evals = tiny_run
    # whole protocol: every val target once (val[1:]), so val_bpb = val_loss * targets / bytes / ln 2
    y = val[1:]
    for v, bpb in [(evals[0].val_loss, evals[0].val_bpb)] + [(r.val_loss, r.val_bpb) for r in steps if r.val_loss]:
        assert bpb == pytest.approx(v * y.size / hand_bytes(y) / math.log(2), rel=1e-5)
    assert sum(r.val_bpb is not None for r in steps) == 2


def test_boundary_counts_and_split_match_the_rows(tiny_run):
    tr, train, _, steps, _ = tiny_run
    N = tr.plan_config.block_size
    seen_after = 0
    for rep in steps:
        docs = step_documents(train, tr.plan, rep.step)
        assert rep.rows_across_docs == docs.rows_across
        assert rep.targets_after_eot == docs.targets_after_eot
        x = gather_rows(train, rep.starts.ravel(), N + 1)[:, :-1]
        assert rep.rows_across_docs == int((x == EOT).any(axis=1).sum())  # by hand
        assert rep.targets_after_eot == int((x == EOT).sum())
        split = split_by_boundary(rep.per_token.reshape(-1, N), x)
        assert rep.loss_after_eot == pytest.approx(split["after_boundary"], rel=1e-5)
        assert rep.loss_rest == pytest.approx(split["rest"], rel=1e-5)
        assert int(rep.position_count_after_eot.sum()) == rep.targets_after_eot
        after = (x == EOT)
        pt = rep.per_token.reshape(-1, N)
        for c in range(N):
            if after[:, c].any():
                assert rep.position_loss_after_eot[c] == pytest.approx(pt[after[:, c], c].mean(), rel=1e-5)
            else:
                assert math.isnan(rep.position_loss_after_eot[c])
            assert rep.position_loss_rest[c] == pytest.approx(pt[~after[:, c], c].mean(), rel=1e-5)
        seen_after += rep.targets_after_eot
    assert seen_after > 0  # the hand-made corpus does cross boundaries


def test_a_corpus_of_other_ids_reports_no_bpb():
    t = (np.arange(5000) * 7) % 65  # a character-level vocabulary (meta.pkl vocab_size 65)
    tr = Trainer(t, None, PlanConfig(block_size=16, batch_size=2), MODEL_PRESETS["tiny"].with_(block_size=16,
                 vocab_size=65), TrainConfig(steps=2, eval_interval=0, device="cpu"), corpus_info={"vocab_size": 65})
    steps, _ = run(tr)
    assert all(r.bpb is None and r.rows_across_docs is None and r.loss_after_eot is None for r in steps)
    assert steps[0].lens_record() == {}


def test_train_json_and_metrics_carry_bpb_and_boundaries(tmp_path):
    from nanogpt_viz.data.corpus import write_nanogpt_bin

    t = doc_tokens()
    write_nanogpt_bin(tmp_path / "train.bin", t[:-300])
    write_nanogpt_bin(tmp_path / "val.bin", t[-300:])
    env = {**os.environ, "NANOGPT_VIZ_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "train", str(tmp_path / "train.bin"), "--preset", "tiny",
                          "-N", "32", "-B", "2", "--steps", "3", "--eval-interval", "3", "--eval-protocol", "whole",
                          "--out", str(out), "--json"], capture_output=True, text=True, env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    recs = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for recs_ in (recs, metrics):
        assert len(recs_) == 3
        for r in recs_:
            assert r["bpb"] > 0 and r["rows_across_docs"] >= 0 and r["targets_after_eot"] >= 0
            assert r["bpb"] == pytest.approx(r["loss"] * 64 / hand_bytes(
                gather_rows(t[:-300], np.arange(2) * 32 + r["step"] * 64, 33)[:, 1:]) / math.log(2), rel=1e-5)
        assert recs_[-1]["val_bpb"] > 0 and recs_[0]["init_val_bpb"] > 0
