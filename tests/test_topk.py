"""Top-k at any token: the same numbers as a direct forward pass of the same weights."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from nanogpt_viz.config import ModelConfig
from nanogpt_viz.engine.model import GPT
from nanogpt_viz.engine.topk import top_k_at


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(ModelConfig(block_size=16, vocab_size=64, n_layer=2, n_head=2, n_embd=32, bias=False))
    with torch.no_grad():  # a peaked distribution, so ranks are well separated
        m.lm_head.weight.mul_(20)
    return m


def test_top_k_matches_a_direct_forward_pass(model):
    tokens = np.random.default_rng(1).integers(0, 64, 200)
    for p, c in ((5, None), (100, None), (100, 95), (198, 190)):
        res = top_k_at(model, tokens, p, k=10, context_start=c)
        start = max(0, p - 15) if c is None else c
        assert res.context_start == start
        with torch.no_grad():  # the full forward, all positions: the last one's distribution
            x = torch.tensor(tokens[start:p + 1])[None]
            y = torch.tensor(tokens[start + 1:p + 2])[None]
            logits, _, per_token = model.eval()(x, y)
        probs = torch.softmax(logits[0, -1].double(), -1).numpy()
        order = np.argsort(-probs, kind="stable")
        np.testing.assert_array_equal(res.ids, order[:10])
        np.testing.assert_allclose(res.probs, probs[order[:10]], atol=1e-5)
        target = int(tokens[p + 1])
        assert res.target == target
        assert res.target_rank == int(np.nonzero(order == target)[0][0]) + 1
        assert res.target_prob == pytest.approx(probs[target], abs=1e-5)
        # the loss training computes for this target (per-token cross-entropy of the row)
        assert res.target_loss == pytest.approx(float(per_token[0, -1]), abs=1e-4)


def test_positions_without_a_next_token_or_too_long_a_context_are_refused(model):
    tokens = np.arange(50) % 64
    with pytest.raises(ValueError, match="no next token"):
        top_k_at(model, tokens, 49)
    with pytest.raises(ValueError, match="block size 16"):
        top_k_at(model, tokens, 40, context_start=10)


def test_cli_topk_json(tmp_path, model):
    from helpers import write_nanogpt_checkpoint

    from nanogpt_viz.data.corpus import write_nanogpt_bin

    tokens = np.random.default_rng(2).integers(0, 64, 500).astype(np.uint16)
    write_nanogpt_bin(tmp_path / "train.bin", tokens)
    write_nanogpt_checkpoint(tmp_path / "ckpt.pt", model.config, iter_num=1, config={})
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "topk", str(tmp_path / "ckpt.pt"), "--corpus",
                          str(tmp_path / "train.bin"), "--offset", "300", "--json", "--device", "cpu"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["position"] == 300 and out["target"] == int(tokens[301]) and len(out["top"]) == 10
    assert sum(r["prob"] for r in out["top"]) <= 1.0 + 1e-6
    bad = subprocess.run([sys.executable, "-m", "nanogpt_viz", "topk", str(tmp_path / "ckpt.pt"), "--corpus",
                          str(tmp_path / "train.bin"), "--offset", "499"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "no next token" in bad.stderr
