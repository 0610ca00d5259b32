"""NanoGPTReplay against torch itself: a loop that draws the way nanoGPT's train.py draws.

No network and no nanoGPT checkout needed: the reference loop below is our own code that
seeds, builds a model with nanoGPT's construction sequence and calls torch.randint exactly
as get_batch does (first batch before the loop, estimate_loss on rank 0 at every
eval_interval, prefetch after each micro-step's forward).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from nanogpt_viz.data import mt19937 as M
from nanogpt_viz.data import nanogpt_replay as R
from nanogpt_viz.data.nanogpt_replay import NanoGPTReplay, model_init_draws


# --------------------------------------------------------------------------- reference model

class _Block(nn.Module):
    def __init__(self, c: int, bias: bool):
        super().__init__()
        self.c_attn = nn.Linear(c, 3 * c, bias=bias)
        self.c_proj = nn.Linear(c, c, bias=bias)
        self.c_fc = nn.Linear(c, 4 * c, bias=bias)
        self.mlp_c_proj = nn.Linear(4 * c, c, bias=bias)


class RefGPT(nn.Module):
    """Same parameter shapes and init calls, in the same order, as nanoGPT's GPT."""

    def __init__(self, n_layer, n_embd, block_size, vocab_size, bias, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([_Block(n_embd, bias) for _ in range(n_layer)])
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            torch.nn.init.normal_(m.weight, mean=0.0, std=0.02)


def reference_run(*, train_len, val_len, block_size, batch_size, grad_accum, rank, eval_interval,
                  eval_iters, model_args, start=0, stop=6, eval_only=False):
    """[(kind, it, index, ix)] in draw order, as train.py draws them on one rank."""
    log = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1337 + rank)
        RefGPT(**model_args)

        def get_batch(split):
            n = train_len if split == "train" else val_len
            return torch.randint(n - block_size, (batch_size,)).numpy()

        log.append(("train", start, 0, get_batch("train")))
        it = start
        while True:
            if it % eval_interval == 0 and rank == 0:
                for split in ("train", "val"):
                    for k in range(eval_iters):
                        log.append(("eval_" + split, it, k, get_batch(split)))
            if it == 0 and eval_only:
                break
            for micro in range(grad_accum):
                # the forward on the current batch would run here; then the prefetch
                nxt = (it, micro + 1) if micro + 1 < grad_accum else (it + 1, 0)
                log.append(("train", nxt[0], nxt[1], get_batch("train")))
            it += 1
            if it > stop:
                break
    return log


def check_against_reference(rp: NanoGPTReplay, rank: int, log) -> int:
    checked = 0
    for kind, it, idx, ix in log:
        if kind == "train":
            got = rp.train_starts(it, idx, rank)
        else:
            got = rp.eval_starts(it, kind[5:])[idx]
        assert np.array_equal(got, ix), (kind, it, idx)
        checked += 1
    return checked


SMALL = dict(n_layer=2, n_head=2, n_embd=36, block_size=32, vocab_size=97, bias=False, dropout=0.0)


# --------------------------------------------------------------------------- generator primitives

def test_seed_key_is_torch_manual_seed():
    with torch.random.fork_rng(devices=[]):
        for seed in (0, 1337, 1338, 2**32 - 1):
            torch.manual_seed(seed)
            key, pos = R.torch_state_to_mt(torch.get_rng_state())
            assert pos == 624 and np.array_equal(key, M.seed_key(seed))


@pytest.mark.parametrize("high", [1, 7, 1_000_003, 2**28 - 1, 2**28, 999_998_976, 2**32 - 1,
                                  2**32, 9_035_581_174])
def test_randint_is_raw_mt_modulo_range(high):
    wide = high >= R.installed_randint_64bit_from()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1337)
        x = torch.randint(high, (700,)).numpy()
        after = R.torch_state_to_mt(torch.get_rng_state())
    raw = M.bitgen(M.seed_key(1337), 624).random_raw(700 * (2 if wide else 1))
    if wide:
        raw = (raw[0::2] << np.uint64(32)) | raw[1::2]
    assert np.array_equal(x, (raw % np.uint64(high)).astype(np.int64))
    assert _same_state(M.advance(M.seed_key(1337), 624, 700 * (2 if wide else 1)), after)


def test_installed_threshold_is_one_of_the_two_known():
    assert R.installed_randint_64bit_from() in (2**28, 2**32)
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 7):
        assert R.installed_randint_64bit_from() == 2**28


@pytest.mark.parametrize("n", [0, 1, 623, 624, 625, 19_937, (1 << 20) - 1, 1 << 20,
                               (1 << 20) + 12_345, 5_000_017])
def test_jump_equals_stepping(n):
    start = M.bitgen(M.seed_key(1337), 624)
    start.random_raw(10)  # a mid-block state
    key, pos = M.get_state(start)
    jumped = M.bitgen(*M.advance(key, pos, n))
    start.random_raw(n, output=False)
    assert np.array_equal(jumped.random_raw(1500), start.random_raw(1500))


def test_untemper_inverts_tempering():
    bg = M.bitgen(M.seed_key(7), 624)
    out = bg.random_raw(624).astype(np.uint32)
    assert np.array_equal(M._untemper(out), M.get_state(bg)[0])


def _same_state(a, b) -> bool:
    """Two (key, pos) MT states that give the same future outputs (a jump may return another
    representation of the same state)."""
    return np.array_equal(M.bitgen(*a).random_raw(1500), M.bitgen(*b).random_raw(1500))


def _torch_draws(fn) -> int:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        fn()
        key, pos = R.torch_state_to_mt(torch.get_rng_state())
    for n in range(0, 20_000):  # small enough to search
        k2, p2 = M.advance(M.seed_key(11), 624, n)
        if p2 == pos and np.array_equal(k2, key):
            return n
    raise AssertionError("not found")


@pytest.mark.parametrize("n", [1, 2, 3, 15, 16, 17, 31, 32, 33, 100])
def test_normal_and_uniform_draw_counts(n):
    assert _torch_draws(lambda: torch.empty(n).uniform_()) == n
    expected, _ = R._normal_draws(n, False)
    assert _torch_draws(lambda: torch.empty(n).normal_()) == expected


def test_small_normal_keeps_a_spare_sample_across_calls():
    # 3 values: two pairs (8 outputs), one spare; the next small call uses it first
    assert _torch_draws(lambda: (torch.empty(3).normal_(), torch.randint(10, (2,)),
                                 torch.empty(1).normal_())) == 8 + 2
    assert _torch_draws(lambda: (torch.empty(3).normal_(), torch.empty(40).normal_(),
                                 torch.empty(2).normal_())) == 8 + (40 + 16) + 4


@pytest.mark.parametrize("args", [
    dict(n_layer=1, n_embd=4, block_size=3, vocab_size=3, bias=True),  # tensors under 16 values
    dict(n_layer=1, n_embd=2, block_size=1, vocab_size=5, bias=False),
    dict(n_layer=2, n_embd=36, block_size=32, vocab_size=97, bias=False),
    dict(n_layer=3, n_embd=21, block_size=17, vocab_size=65, bias=True),
    dict(n_layer=2, n_embd=64, block_size=128, vocab_size=50304, bias=True),
])
def test_model_init_draws_match_construction(args):
    n = model_init_draws(args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1337)
        RefGPT(**args)
        got = R.torch_state_to_mt(torch.get_rng_state())
    assert _same_state(M.advance(M.seed_key(1337), 624, n), got)


def test_project_gpt_consumes_like_nanogpt():
    from nanogpt_viz.engine.model import GPT

    args = dict(n_layer=2, n_head=3, n_embd=24, block_size=20, vocab_size=101, bias=True,
                dropout=0.0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1337)
        GPT(args)
        got = R.torch_state_to_mt(torch.get_rng_state())
    assert _same_state(M.advance(M.seed_key(1337), 624, model_init_draws(args)), got)


# --------------------------------------------------------------------------- the replay

@pytest.mark.parametrize("B,K,W,ei,ev", [(4, 3, 1, 5, 3), (2, 1, 1, 1, 2), (3, 2, 2, 4, 1),
                                         (5, 4, 3, 3, 0), (1, 5, 2, 100, 2)])
def test_replay_equals_reference_loop(B, K, W, ei, ev):
    kw = dict(train_len=50_000, val_len=7_001, block_size=32, batch_size=B, grad_accum=K,
              eval_interval=ei, eval_iters=ev)
    rp = NanoGPTReplay(world_size=W, model_args=SMALL, **kw)
    for rank in range(W):
        log = reference_run(rank=rank, model_args=SMALL, stop=8, **kw)
        n_eval = sum(kind != "train" for kind, *_ in log)
        assert (n_eval > 0) == (rank == 0 and ev > 0)  # rank 1+ never evaluates
        assert check_against_reference(rp, rank, log) == len(log)
    for it in (0, 3, 8):
        st = rp.step_starts(it)
        assert st.shape == (K, W, B) and st.dtype == np.int64
        for rank in range(W):
            for m in range(K):
                assert np.array_equal(st[m, rank], rp.train_starts(it, m, rank))
    assert rp.eval_starts(1, "val") is None or ei == 1
    if ev:
        assert rp.eval_starts(0, "train").shape == (ev, B)


def test_replay_with_large_model_and_64bit_offsets():
    # ~6.5M init draws (the jump path) and a train range >= 2**32 (two outputs per offset)
    args = dict(n_layer=1, n_embd=64, block_size=16, vocab_size=50304, bias=False)
    kw = dict(train_len=2**32 + 1000, val_len=3_000, block_size=16, batch_size=3, grad_accum=2,
              eval_interval=3, eval_iters=2)
    rp = NanoGPTReplay(world_size=1, model_args=args, **kw)
    log = reference_run(rank=0, model_args=args, stop=7, **kw)
    assert check_against_reference(rp, 0, log) == len(log)
    assert rp.train_starts(5, 1).max() > 2**32 // 4  # really 64-bit values


def test_resume_restarts_the_sequence():
    kw = dict(train_len=50_000, val_len=7_001, block_size=32, batch_size=4, grad_accum=3,
              eval_interval=5, eval_iters=2)
    rp = NanoGPTReplay(model_args=SMALL, init_from="resume", resumed_at=10, **kw)
    log = reference_run(rank=0, model_args=SMALL, start=10, stop=22, **kw)
    assert check_against_reference(rp, 0, log) == len(log)
    fresh = NanoGPTReplay(model_args=SMALL, **kw)
    for i in range(6):
        assert np.array_equal(rp.step_starts(10 + i), fresh.step_starts(i))
    assert np.array_equal(rp.eval_starts(10, "val"), fresh.eval_starts(0, "val"))
    assert any("resumed at iteration 10" in n for n in rp.notes)
    with pytest.raises(ValueError, match="before the resume"):
        rp.train_starts(9, 0)
    # a resume point that is not a multiple of eval_interval shifts the evaluations
    odd = NanoGPTReplay(model_args=SMALL, init_from="resume", resumed_at=7, **kw)
    log = reference_run(rank=0, model_args=SMALL, start=7, stop=16, **kw)
    assert check_against_reference(odd, 0, log) == len(log)


def test_eval_only():
    kw = dict(train_len=50_000, val_len=7_001, block_size=32, batch_size=4, grad_accum=3,
              eval_interval=5, eval_iters=2)
    rp = NanoGPTReplay(model_args=SMALL, eval_only=True, **kw)
    log = reference_run(rank=0, model_args=SMALL, eval_only=True, **kw)
    assert [k for k, *_ in log].count("train") == 1
    assert np.array_equal(rp.eval_starts(0, "val"), np.stack([x for k, *_, x in log
                                                               if k == "eval_val"]))
    assert rp.eval_starts(5, "val") is None
    with pytest.raises(ValueError, match="eval_only"):
        rp.train_starts(0, 0)
    # resumed eval_only runs train anyway (nanoGPT only stops at iteration 0)
    resumed = NanoGPTReplay(model_args=SMALL, eval_only=True, init_from="resume", resumed_at=5,
                            **kw)
    assert resumed.train_starts(6, 1).shape == (4,)


def test_dropout_on_cpu_only_first_batch_and_first_eval():
    kw = dict(train_len=50_000, val_len=7_001, block_size=32, batch_size=4, grad_accum=2,
              eval_interval=5, eval_iters=2)
    rp = NanoGPTReplay(model_args=SMALL, dropout_on_cpu=True, **kw)
    clean = NanoGPTReplay(model_args=SMALL, **kw)
    assert np.array_equal(rp.train_starts(0, 0), clean.train_starts(0, 0))
    assert np.array_equal(rp.eval_starts(0, "train"), clean.eval_starts(0, "train"))
    for call in (lambda: rp.train_starts(0, 1), lambda: rp.step_starts(0),
                 lambda: rp.eval_starts(5, "val")):
        with pytest.raises(ValueError, match="Dropout"):
            call()
    assert any("Dropout" in n for n in rp.notes)


def _ckpt(**config):
    base = dict(batch_size=4, block_size=32, gradient_accumulation_steps=8, eval_interval=5,
                eval_iters=2, eval_only=False, init_from="scratch", device="cuda", dropout=0.0,
                max_iters=100)
    base.update(config)
    return {"config": base, "model_args": dict(SMALL)}


def test_from_checkpoint_divides_accumulation_by_world_size():
    rp = NanoGPTReplay.from_checkpoint(_ckpt(), train_len=50_000, val_len=7_001, world_size=4)
    assert (rp.grad_accum, rp.world_size) == (2, 4)
    assert "total over all 4 ranks" in rp.notes[0]
    ref = NanoGPTReplay(train_len=50_000, val_len=7_001, block_size=32, batch_size=4,
                        grad_accum=2, world_size=4, eval_interval=5, eval_iters=2,
                        model_args=SMALL)
    assert np.array_equal(rp.step_starts(7), ref.step_starts(7))
    cpu = NanoGPTReplay.from_checkpoint(_ckpt(device="cpu", dropout=0.1),
                                        train_len=50_000, val_len=7_001)
    assert not cpu.dropout_on_cpu  # model_args (the run's own value) says dropout 0
    ck = _ckpt(device="cpu")
    ck["model_args"]["dropout"] = 0.1
    assert NanoGPTReplay.from_checkpoint(ck, train_len=50_000, val_len=7_001).dropout_on_cpu
    assert not NanoGPTReplay.from_checkpoint(ck, train_len=50_000, val_len=7_001,
                                             world_size=2).dropout_on_cpu  # DDP runs on CUDA


@pytest.mark.parametrize("make,match", [
    (lambda: NanoGPTReplay.from_checkpoint({"model_args": SMALL}, train_len=10**4, val_len=10**4),
     "no 'config'"),
    (lambda: NanoGPTReplay.from_checkpoint({"config": _ckpt()["config"]}, train_len=10**4,
                                           val_len=10**4), "no 'model_args'"),
    (lambda: NanoGPTReplay.from_checkpoint(_ckpt(init_from="gpt2-xl"), train_len=10**4,
                                           val_len=10**4), "gpt2-xl"),
    (lambda: NanoGPTReplay.from_checkpoint(_ckpt(init_from="resume"), train_len=10**4,
                                           val_len=10**4), "resumed_at"),
    (lambda: NanoGPTReplay.from_checkpoint(_ckpt(), train_len=10**4, val_len=10**4,
                                           world_size=3), "divisible"),
    (lambda: NanoGPTReplay.from_checkpoint(_ckpt(), train_len=32, val_len=10**4), "training data"),
    (lambda: NanoGPTReplay.from_checkpoint(_ckpt(), train_len=10**4, val_len=20), "validation"),
    (lambda: NanoGPTReplay(train_len=10**4, val_len=10**4, block_size=32, batch_size=4,
                           grad_accum=1, model_args={"n_layer": 1}), "model_args lacks"),
])
def test_user_errors_are_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_query_range_errors():
    rp = NanoGPTReplay(train_len=50_000, val_len=7_001, block_size=32, batch_size=4,
                       grad_accum=3, world_size=2, model_args=SMALL)
    for call in (lambda: rp.train_starts(0, 3), lambda: rp.train_starts(0, 0, rank=2),
                 lambda: rp.eval_starts(0, "test"), lambda: rp.train_starts(-1, 0)):
        with pytest.raises(ValueError):
            call()


def test_replay_does_not_touch_the_global_generator():
    torch.manual_seed(5)
    before = torch.get_rng_state().clone()
    rp = NanoGPTReplay(train_len=50_000, val_len=7_001, block_size=32, batch_size=4,
                       grad_accum=3, model_args=SMALL, randint_64bit_from=None)
    rp.step_starts(1000)
    assert torch.equal(torch.get_rng_state(), before)


# --------------------------------------------------------------------------- the CLI's replay


def test_cli_plan_from_nanogpt_gives_the_draws_of_a_train_py_loop(tmp_path):
    """`plan DATA --from-nanogpt CKPT --json` lists, step by step, what a train.py-style loop drew: the
    training rows of every micro-step and rank, and estimate_loss's batches where it ran."""
    import json
    import subprocess
    import sys

    from nanogpt_viz.config import ModelConfig
    from nanogpt_viz.data.corpus import write_nanogpt_bin
    from helpers import write_nanogpt_checkpoint

    data = tmp_path / "data"
    data.mkdir()
    train_len, val_len = 5000, 700
    write_nanogpt_bin(data / "train.bin", np.random.default_rng(0).integers(0, 97, train_len).astype(np.uint16))
    write_nanogpt_bin(data / "val.bin", np.random.default_rng(1).integers(0, 97, val_len).astype(np.uint16))
    mc = ModelConfig(**SMALL)
    config = dict(batch_size=3, block_size=32, gradient_accumulation_steps=4, eval_interval=3, eval_iters=2,
                  eval_only=False, init_from="scratch", device="cuda", dropout=0.0, max_iters=6)
    write_nanogpt_checkpoint(tmp_path / "ckpt.pt", mc, iter_num=6, config=config)
    W, steps = 2, 7
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "plan", str(data), "--from-nanogpt",
                          str(tmp_path / "ckpt.pt"), "-W", str(W), "--steps", str(steps), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "divides it after saving its config" in res.stderr  # K per rank = 4 // 2
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    for rank in range(W):
        ref = reference_run(train_len=train_len, val_len=val_len, block_size=32, batch_size=3, grad_accum=2,
                            rank=rank, eval_interval=3, eval_iters=2, model_args=SMALL, stop=steps - 1)
        got = []
        for rec in recs:
            rows = [r for r in rec["rows"] if r["rank"] == rank]
            assert len(rows) == 2 * 3 and all(r["shard"] == "train.bin" for r in rows)
            by_micro = [[r["start"] for r in rows if r["micro"] == m] for m in range(2)]
            got.append(("train", rec["step"], 0, by_micro[0]))
            if rank == 0 and "eval" in rec:
                got += [("eval_train", rec["step"], k, ix) for k, ix in enumerate(rec["eval"]["train"])]
                got += [("eval_val", rec["step"], k, ix) for k, ix in enumerate(rec["eval"]["val"])]
            got.append(("train", rec["step"], 1, by_micro[1]))
        want = [(kind, it, k, ix.tolist()) for kind, it, k, ix in ref][:len(got)]
        assert got == want
        assert sum(1 for g in got if g[0] == "eval_val") == (6 if rank == 0 else 0)  # iterations 0, 3, 6
