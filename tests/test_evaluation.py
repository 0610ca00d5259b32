"""Validation protocols: the batches each real code evaluates, and a whole-split loss that is exact.

The expected offsets below are derived by hand from the real code (build-nanogpt train_gpt2.py's
DataLoaderLite.reset/next_batch, llm.c llmc/dataloader.h's dataloader_reset/next_batch/advance_,
nanoGPT train.py's estimate_loss/get_batch), not from evaluation.py.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.data.evaluation import (EvalError, build_nanogpt_batches, default_protocol, eval_plan, llmc_batches,
                                    nanogpt_batches, whole_batches)
from nanogpt_viz.engine.model import GPT
from nanogpt_viz.engine.trainer import EvalReport, RunEnd, StepReport, Trainer

TINY = MODEL_PRESETS["tiny"].with_(vocab_size=97, n_embd=32, block_size=8)


def _starts(batches, rank):
    return [b.starts.tolist() for b in batches if b.rank == rank]


# ---- build-nanogpt -------------------------------------------------------------------------------


def test_build_nanogpt_two_val_shards_two_ranks():
    # shards of 100 and 60 tokens, T=N=4, B=2, W=2: B*T=8, B*T*W=16.
    # reset(): shard 0, position B*T*rank. next_batch() reads rows at pos, pos+T; pos += 16; then if
    # pos + 17 > len(shard): next shard (cyclic), pos = B*T*rank.
    got = build_nanogpt_batches([("val_000", 100), ("val_001", 60)], N=4, B=2, W=2, steps=8)
    # rank 0: 0, 16, 32, 48, 64, 80 (then 96+17 > 100: shard 1), 100+0, 100+16
    assert _starts(got, 0) == [[0, 4], [16, 20], [32, 36], [48, 52], [64, 68], [80, 84], [100, 104], [116, 120]]
    # rank 1: 8, 24, 40, 56, 72 (then 88+17 > 100: shard 1 at 8), 108, 124, 140 (then 56+17 > 60: shard 0)
    assert _starts(got, 1) == [[8, 12], [24, 28], [40, 44], [56, 60], [72, 76], [108, 112], [124, 128],
                               [140, 144]]
    assert [b.call for b in got if b.rank == 1] == list(range(8))


def test_build_nanogpt_single_shard_is_the_first_20_micro_batches():
    # one nanoGPT val.bin of 36,059 tokens, N=1024, B=12, W=1: calls at 0, 12288, then 24576+12289 > 36059
    # sends the loader back to the start (one shard: shard (0+1) % 1 = 0)
    got = build_nanogpt_batches(36_059, N=1024, B=12, W=1, steps=20)
    firsts = [int(b.starts[0]) for b in got]
    assert firsts == [0, 12_288] * 10
    assert (got[1].starts == 12_288 + 1024 * np.arange(12)).all()


def test_build_nanogpt_shard_too_small_is_an_error():
    assert _starts(build_nanogpt_batches([17], N=4, B=2, W=2, steps=1, ranks=[1]), 1) == [[8, 12]]
    with pytest.raises(EvalError, match="shard 0"):
        build_nanogpt_batches([16], N=4, B=2, W=2, steps=1, ranks=[1])  # rank 1 needs 8 + 9 = 17 tokens


# ---- llm.c ---------------------------------------------------------------------------------------


def test_llmc_two_val_shards_two_ranks():
    # W*B*T = 16. shard_num_samples = (ntok - 1) // 16: 99 // 16 = 6 and 59 // 16 = 3.
    # batch at sample j of a shard, rank r: j*16 + r*8; past the last sample -> next shard; past the last
    # shard -> dataloader_reset (shard 0, sample 0).
    got = llmc_batches([100, 60], N=4, B=2, W=2, steps=10)
    assert _starts(got, 0) == [[0, 4], [16, 20], [32, 36], [48, 52], [64, 68], [80, 84],
                               [100, 104], [116, 120], [132, 136], [0, 4]]
    assert _starts(got, 1) == [[8, 12], [24, 28], [40, 44], [56, 60], [72, 76], [88, 92],
                               [108, 112], [124, 128], [140, 144], [8, 12]]


def test_llmc_differs_from_build_nanogpt_at_a_shard_end():
    # build-nanogpt leaves shard 0 after rank 0's sample 5 (96 + 17 > 100) as llm.c does, but rank 1
    # leaves it one call earlier (88 + 17 > 100) while llm.c still reads sample 5 at 88
    bn = build_nanogpt_batches([100, 60], N=4, B=2, W=2, steps=6)
    lc = llmc_batches([100, 60], N=4, B=2, W=2, steps=6)
    assert _starts(bn, 1)[5] == [108, 112] and _starts(lc, 1)[5] == [88, 92]


def test_llmc_shard_smaller_than_one_batch_is_an_error():
    with pytest.raises(EvalError, match="W\\*B\\*N\\+1"):
        llmc_batches([100, 16], N=4, B=2, W=2, steps=1)


# ---- nanoGPT -------------------------------------------------------------------------------------


def test_nanogpt_draws_eval_iters_batches_per_split_in_range_and_reproducibly():
    got = nanogpt_batches(train_len=500, val_len=120, N=16, B=3, eval_iters=50, iteration=250, seed=7)
    train = np.stack([b.starts for b in got if b.split == "train"])
    val = np.stack([b.starts for b in got if b.split == "val"])
    assert train.shape == (50, 3) and val.shape == (50, 3)
    # torch.randint(len(data) - block_size): 0 .. L-N-1, so the last target is t[L-1]
    assert val.min() >= 0 and val.max() <= 120 - 16 - 1 and train.max() <= 500 - 16 - 1
    assert val.max() == 120 - 16 - 1 or len(np.unique(val)) > 50  # the whole range is reachable
    again = nanogpt_batches(train_len=500, val_len=120, N=16, B=3, eval_iters=50, iteration=250, seed=7)
    assert all((a.starts == b.starts).all() for a, b in zip(got, again))
    other = nanogpt_batches(train_len=500, val_len=120, N=16, B=3, eval_iters=50, iteration=500, seed=7)
    assert any((a.starts != b.starts).any() for a, b in zip(got, other))


def test_nanogpt_reach_covers_the_tail():
    got = nanogpt_batches(train_len=40, val_len=40, N=8, B=4, eval_iters=200, iteration=0, seed=1)
    assert {int(s) for b in got if b.split == "val" for s in b.starts} == set(range(32))


class _FakeReplay:
    """Plumbing only: stands in for nanogpt_replay.NanoGPTReplay's eval_starts."""

    def __init__(self, table):
        self.table = table

    def eval_starts(self, it, split):
        return self.table.get((it, split))


def test_nanogpt_takes_a_replays_draws_when_it_has_them():
    table = {(0, "val"): np.array([[0, 1], [2, 3], [4, 5]])}
    got = nanogpt_batches(100, 50, N=8, B=2, eval_iters=3, iteration=0, seed=0, replay=_FakeReplay(table))
    assert [b.starts.tolist() for b in got if b.split == "val"] == [[0, 1], [2, 3], [4, 5]]
    seeded = nanogpt_batches(100, 50, N=8, B=2, eval_iters=3, iteration=0, seed=0)
    assert [b.starts.tolist() for b in got if b.split == "train"] == \
        [b.starts.tolist() for b in seeded if b.split == "train"]  # None: the seeded draws
    with pytest.raises(EvalError, match="eval_iters or block size"):
        nanogpt_batches(100, 50, N=8, B=2, eval_iters=3, iteration=0, seed=0,
                        replay=_FakeReplay({(0, "val"): np.array([[0, 1], [2, 3], [4, 42]])}))


# ---- whole ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("L,N,B", [(50, 8, 2), (49, 8, 3), (9, 8, 1), (17, 8, 4), (100, 7, 5)])
def test_whole_counts_every_target_exactly_once(L, N, B):
    plan = eval_plan("whole", val_shards=L, N=N, B=B)
    cov = plan.coverage("val", L)
    assert cov[0] == 0 and (cov[1:] == 1).all()
    assert plan.targets("val") == L - 1 == plan.distinct_targets("val")
    assert all(len(b.starts) <= B for b in plan.batches)
    assert max(int(b.starts.max()) for b in plan.batches) + N + 1 <= L  # every row fits


def test_whole_cap_takes_the_first_targets_and_says_so():
    batches, targets = whole_batches(1000, 8, 4, max_targets=100)
    assert targets == 100
    plan = eval_plan("whole", val_shards=1000, N=8, B=4, max_targets=100)
    cov = plan.coverage("val", 1000)
    assert (cov[1:101] == 1).all() and cov[101:].sum() == 0 and plan.notes


def _direct_mean(model, t, N):
    """Each target's loss on its own: target p is predicted from the window it belongs to (rows at
    0, N, 2N, ... and, for the tail, the window that ends at the last token)."""
    L = len(t)
    losses = []
    with torch.no_grad():
        for p in range(1, L):
            w = N * ((p - 1) // N)
            if w + N + 1 > L:
                w = L - 1 - N
            x = torch.tensor(t[w:w + N], dtype=torch.long)[None]
            logits = model.lm_head(model.transformer.ln_f(_trunk(model, x)))[0, p - 1 - w]
            losses.append(F.cross_entropy(logits[None].float(), torch.tensor([int(t[p])])).item())
    return float(np.mean(losses)), len(losses)


def _trunk(model, x):
    h = model.transformer.wte(x) + model.transformer.wpe(torch.arange(x.shape[1]))
    for block in model.transformer.h:
        h = block(h)
    return h


@pytest.mark.parametrize("L", [57, 60])  # N=8: no tail, a tail of 3; N=5: tails of 1 and 4
def test_whole_in_the_trainer_equals_a_direct_mean_over_all_targets(L):
    val = np.random.default_rng(L).integers(0, 97, L).astype(np.uint16)
    train = np.random.default_rng(1).integers(0, 97, 400).astype(np.uint16)
    for N in (8, 5):
        pc = PlanConfig(block_size=N, batch_size=3)
        tr = Trainer(train, val, pc, TINY, TrainConfig(steps=1, eval_interval=1, eval_protocol="whole",
                                                         device="cpu", compile=False))
        tr._setup()
        res = tr.evaluate(0)
        want, n = _direct_mean(tr.raw_model.eval(), val, N)
        assert res.protocol == "whole" and res.val_tokens == n == L - 1
        assert res.val_loss == pytest.approx(want, rel=1e-5)


def test_trainer_reads_exactly_the_build_nanogpt_batches_and_reports_them():
    class Rec:
        def __init__(self, arr):
            self.arr, self.calls = arr, []

        def __len__(self):
            return len(self.arr)

        def __getitem__(self, k):
            return self.arr[k]

        def gather(self, starts, width):
            self.calls.append(np.asarray(starts).tolist())
            return self.arr[np.asarray(starts)[:, None] + np.arange(width)].astype(np.int64)

    val = Rec(np.random.default_rng(0).integers(0, 97, 100).astype(np.uint16))
    train = np.random.default_rng(1).integers(0, 97, 2000).astype(np.uint16)
    pc = PlanConfig(block_size=4, batch_size=2, world_size=2, sampling="sequential")
    tc = TrainConfig(steps=2, eval_interval=2, eval_batches=6, device="cpu", compile=False)
    events = list(Trainer(train, val, pc, TINY, tc).run())
    assert isinstance(events[-1], RunEnd) and events[-1].reason == "finished", events[-1]
    first = [e for e in events if isinstance(e, EvalReport)]
    assert len(first) == 1 and first[0].steps_done == 0 and first[0].val_protocol == "build-nanogpt"
    last = [e for e in events if isinstance(e, StepReport)][-1]
    assert last.val_protocol == "build-nanogpt" and last.train_loss_est is None
    # one W=2 val shard of 100: rank 0 at 0,16,32,48,64,80; rank 1 at 8,24,40,56,72 then back to 8
    want = [[0, 4], [16, 20], [32, 36], [48, 52], [64, 68], [80, 84],
            [8, 12], [24, 28], [40, 44], [56, 60], [72, 76], [8, 12]]
    assert val.calls == want + want  # iteration 0 and after step 2
    assert last.val_tokens == 11 * 8  # distinct targets: [8, 12] is read twice


def test_trainer_nanogpt_protocol_reports_the_train_estimate():
    val = np.random.default_rng(0).integers(0, 97, 300).astype(np.uint16)
    train = np.random.default_rng(1).integers(0, 97, 2000).astype(np.uint16)
    pc = PlanConfig(block_size=8, batch_size=2, sampling="random")
    tc = TrainConfig(steps=2, eval_interval=1, eval_batches=5, device="cpu", compile=False)
    reps = [e for e in Trainer(train, val, pc, TINY, tc).run() if isinstance(e, StepReport)]
    assert all(r.val_protocol == "nanogpt" and r.train_loss_est is not None for r in reps)
    assert all(0 < r.val_tokens <= 5 * 2 * 8 for r in reps)
    assert reps[0].val_loss != reps[1].val_loss


def test_default_protocol_follows_sampling():
    assert [default_protocol(m) for m in ("random", "sequential", "llmc", "shuffled", "sliding")] == \
        ["nanogpt", "build-nanogpt", "llmc", "llmc", "whole"]
    assert TrainConfig(eval_protocol="nanoGPT").problems()


def test_evaluation_module_is_pure():
    code = ("import sys, nanogpt_viz.data.evaluation; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6', 'pyqtgraph')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---- command line ----------------------------------------------------------------------------------


def _cli_train(tmp_path, *args):
    import json
    import os

    from nanogpt_viz.data.corpus import write_nanogpt_bin

    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(3)
    write_nanogpt_bin(d / "train.bin", rng.integers(0, 50257, 6000))
    write_nanogpt_bin(d / "val.bin", rng.integers(0, 50257, 1500))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["NANOGPT_VIZ_CACHE"] = str(tmp_path / "cache")
    res = subprocess.run([sys.executable, "-m", "nanogpt_viz", "train", str(d), "--preset", "tiny", "--steps", "2",
                          "--device", "cpu", "--out", str(tmp_path / "run"), "--json", *map(str, args)],
                         capture_output=True, text=True, env=env, timeout=300)
    return res, [json.loads(ln) for ln in res.stdout.splitlines() if ln.strip()]


def test_cli_model_context_follows_N_and_val_records_name_their_protocol(tmp_path):
    from nanogpt_viz.engine.checkpoint import load_checkpoint

    # the tiny preset's context is 64; -N 128 used to stop with "larger than the model's context"
    res, recs = _cli_train(tmp_path, "-N", 128, "-B", 2, "--eval-interval", 2, "--sampling", "random",
                           "--eval-batches", 3)
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt").model_args["block_size"] == 128
    assert [r["step"] for r in recs] == [0, 1]
    assert recs[0]["init_val_protocol"] == "nanogpt" and recs[0]["init_train_loss_est"] > 0
    last = recs[-1]
    assert last["val_protocol"] == "nanogpt" and 0 < last["val_tokens"] <= 3 * 2 * 128
    assert np.isfinite(last["train_loss_est"]) and "val_protocol" not in recs[0]


def test_cli_explicit_model_block_size_stays_apart(tmp_path):
    from nanogpt_viz.engine.checkpoint import load_checkpoint

    res, recs = _cli_train(tmp_path, "-N", 32, "-B", 2, "--model-block-size", 96, "--eval-interval", 2,
                           "--eval-protocol", "whole")
    assert res.returncode == 0, res.stderr
    assert load_checkpoint(tmp_path / "run" / "ckpt.pt").model_args["block_size"] == 96
    assert recs[-1]["val_protocol"] == "whole" and recs[-1]["val_tokens"] == 1500 - 1
    res, _ = _cli_train(tmp_path, "-N", 128, "-B", 2, "--model-block-size", 64, "--overwrite")  # same --out
    assert res.returncode == 2 and "larger than the model's context" in res.stderr


# ---- window ----------------------------------------------------------------------------------------


def test_window_protocol_is_whole_for_teaching_plans_and_the_codes_own_for_their_presets():
    from nanogpt_viz.config import PLAN_PRESETS
    from nanogpt_viz.data.evaluation import window_protocol

    for name, pc in PLAN_PRESETS.items():
        want = default_protocol(pc.sampling) if name.startswith(("nanoGPT", "build-nanogpt", "llm.c")) else "whole"
        assert window_protocol(pc, PLAN_PRESETS) == want, name
    assert window_protocol(PlanConfig(block_size=16, batch_size=4), PLAN_PRESETS) == "whole"


def test_train_panel_validation_choice_and_context_persist(qtbot):
    pytest.importorskip("PySide6")
    from nanogpt_viz.ui.panels import TrainPanel
    from nanogpt_viz.ui.plots import LossPlot

    panel = TrainPanel("cpu")
    qtbot.addWidget(panel)
    assert panel.train_config().eval_protocol == "auto" and panel.model_config(128).block_size == 128
    panel.eval_protocol.setCurrentIndex(panel.eval_protocol.findData("llmc"))
    panel.context.setValue(96)
    assert panel.train_config().eval_protocol == "llmc" and panel.model_config(128).block_size == 96
    other = TrainPanel("cpu")
    qtbot.addWidget(other)
    other.restore(panel.settings())
    assert other.train_config().eval_protocol == "llmc" and other.context.value() == 96

    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.set_val_label("whole", 36_058)
    assert plot.val_label() == "val loss (whole, 36,058 targets)"
    assert "val loss (whole, 36,058 targets)" in plot.legend.text()  # the legend above the data
