"""data/documents.py's split of per-token losses at <|endoftext|> and its bits per byte, by hand (no Qt)."""
from __future__ import annotations

import math

import numpy as np

from nanogpt_viz.data.documents import (add_split, position_bits_per_byte, position_split, running_split,
                                        token_bits_per_byte)
from nanogpt_viz.data.tokenizer import EOT, token_bytes


def _case(seed: int, shape=(2, 1, 3, 6)):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 5000, size=shape[:-1] + (shape[-1] + 1,))
    rows[rng.random(rows.shape) < 0.2] = EOT
    return rng.random(shape) * 8 + 0.5, rows[..., :-1], rows[..., 1:]


def _bytes(ids):
    return np.vectorize(lambda i: 0 if int(i) == EOT else len(token_bytes(int(i))))(ids)


def test_split_by_position_by_hand():
    loss, x, y = _case(0)
    sp = position_split(loss, x, y)
    N = loss.shape[-1]
    flat_l, flat_x, flat_y = loss.reshape(-1, N), x.reshape(-1, N), y.reshape(-1, N)
    for j in range(N):
        after = [flat_l[r, j] for r in range(len(flat_l)) if flat_x[r, j] == EOT]
        rest = [flat_l[r, j] for r in range(len(flat_l)) if flat_x[r, j] != EOT]
        assert sp["count_after"][j] == len(after) and sp["count_rest"][j] == len(rest)
        assert (np.isnan(sp["after"][j]) if not after else math.isclose(sp["after"][j], sum(after) / len(after)))
        assert math.isclose(sp["rest"][j], sum(rest) / len(rest))
        b_after = sum(_bytes(flat_y[r, j]) for r in range(len(flat_l)) if flat_x[r, j] == EOT)
        if b_after:
            assert math.isclose(sp["after_bpb"][j], sum(after) / math.log(2) / b_after)
    m = x == EOT
    assert sp["n_after"] == int(m.sum()) and math.isclose(sp["mean_after"], loss[m].mean())
    assert math.isclose(sp["mean_rest_bpb"], loss[~m].sum() / math.log(2) / _bytes(y[~m]).sum())


def test_token_and_position_bits_per_byte():
    loss, _, y = _case(1)
    nb = _bytes(y)
    tb = token_bits_per_byte(loss, y)
    np.testing.assert_allclose(tb, np.where(nb > 0, loss / math.log(2) / np.maximum(nb, 1), np.nan), equal_nan=True)
    assert np.isnan(tb[y == EOT]).all()
    np.testing.assert_allclose(position_bits_per_byte(loss, y), loss.sum(axis=(0, 1, 2)) / math.log(2)
                               / nb.sum(axis=(0, 1, 2)))
    assert token_bits_per_byte(loss, y + 60000) is None  # not GPT-2 ids: no bytes


def test_the_split_over_steps_is_the_split_of_all_their_rows():
    cases = [_case(s) for s in (2, 3, 4)]
    acc = None
    for loss, x, y in cases:
        acc = add_split(acc, position_split(loss, x, y))
    run = running_split(acc)
    whole = position_split(*(np.concatenate([c[k] for c in cases], axis=0) for k in range(3)))
    assert run["steps"] == 3
    for key in ("after", "rest", "after_bpb", "rest_bpb"):
        np.testing.assert_allclose(run[key], whole[key], rtol=1e-12, equal_nan=True)
    for key in ("n_after", "n_rest"):
        assert run[key] == whole[key]
    for key in ("mean_after", "mean_rest", "mean_after_bpb", "mean_rest_bpb"):
        assert math.isclose(run[key], whole[key], rel_tol=1e-12)


def test_bpb_text_for_a_tooltip():
    from nanogpt_viz.data.documents import bpb_text

    tid = 1000  # a 3-byte GPT-2 token
    n = len(token_bytes(tid))
    assert bpb_text(2.0, tid) == f" · {2.0 / math.log(2) / n:.4f} bits per byte ({n} bytes)"
    assert bpb_text(2.0, EOT) == "" and bpb_text(2.0, 60000) == ""


def test_masked_split_by_hand_and_the_trainer_uses_it():
    """One split for the window and the trainer: by hand on a 2x3 block."""
    import numpy as np

    from nanogpt_viz.data.documents import masked_split
    from nanogpt_viz.engine.trainer import _split_by_eot

    loss = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    after = np.array([[False, True, False], [True, False, False]])
    s = masked_split(loss, after)
    assert s["after"][:2].tolist() == [4.0, 2.0] and np.isnan(s["after"][2])
    assert s["rest"].tolist() == [1.0, 5.0, 4.5]
    assert s["count_after"].tolist() == [1, 1, 0] and s["count_rest"].tolist() == [1, 1, 2]
    assert (s["mean_after"], s["n_after"], s["mean_rest"], s["n_rest"]) == (3.0, 2, 3.75, 4)
    t = _split_by_eot(loss.reshape(1, 1, 2, 3), after.reshape(1, 1, 2, 3))
    assert (t["loss_after_eot"], t["loss_rest"]) == (3.0, 3.75)
    assert t["position_loss_rest"].tolist() == [1.0, 5.0, 4.5]
    assert t["position_count_after_eot"].tolist() == [1, 1, 0]
