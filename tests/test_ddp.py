"""DDP through torchrun (gloo on the CPU): the real distributed engine, two processes."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.engine.checkpoint import load_checkpoint, model_from_checkpoint
from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.data.corpus import open_corpus, write_nanogpt_bin
from nanogpt_viz.run.record import read_metrics
from nanogpt_viz.engine.trainer import StepReport, Trainer

pytestmark = pytest.mark.skipif(shutil.which("torchrun") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "torchrun")), reason="torchrun is not installed")


@pytest.fixture()
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_nanogpt_bin(d / "train.bin", np.random.default_rng(0).integers(0, 50257, 60_000).astype(np.uint16))
    write_nanogpt_bin(d / "val.bin", np.random.default_rng(1).integers(0, 50257, 8_000).astype(np.uint16))
    return d


def torchrun(args, env_extra=None, timeout=240):
    exe = shutil.which("torchrun") or os.path.join(os.path.dirname(sys.executable), "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([exe, "--standalone", "--nproc_per_node=2", "-m", "nanogpt_viz", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def test_two_process_gloo_run_matches_the_single_process_plan(data_dir, tmp_path):
    out = tmp_path / "run"
    common = ["--preset", "tiny", "--block-size", "16", "--batch-size", "3", "--grad-accum", "2",
              "--steps", "5", "--eval-interval", "0", "--device", "cpu", "--seed", "5"]
    res = torchrun(["train", str(data_dir), *common, "--out", str(out), "--json"])
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert [r["step"] for r in lines] == [0, 1, 2, 3, 4]  # only rank 0 prints
    assert all(r["world_size"] == 2 for r in lines)
    recs, _ = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in recs] == [0, 1, 2, 3, 4]
    assert json.loads((out / "status.json").read_text())["state"] == "finished"

    # The same plan (W=2) trained in one process averages the two ranks' micro-batches: what DDP
    # computes. Equal losses show each rank read exactly the rows BatchPlan gives it.
    corpus = open_corpus(data_dir)
    pc = PlanConfig(block_size=16, batch_size=3, grad_accum=2, world_size=2, seed=5)
    # the CLI's model context follows -N (one block size, as nanoGPT): the same model here
    reports = [e for e in Trainer(corpus.train, None, pc, MODEL_PRESETS["tiny"].with_(block_size=16),
                                  TrainConfig(steps=5, eval_interval=0, device="cpu", seed=5)).run()
               if isinstance(e, StepReport)]
    ref = [e.loss for e in reports]
    assert [r["loss"] for r in lines] == pytest.approx(ref, abs=2e-4)

    # each rank wrote its own per-token history; read back, the W=2 ranks' rows are the single process's
    from nanogpt_viz.run.reader import RunReader

    reader = RunReader(out)
    assert reader.manifest.world_size == 2 and reader.manifest.status == "finished"
    assert (reader.history.K, reader.history.W, reader.history.B, reader.history.N) == (2, 2, 3, 16)
    got = reader.poll()
    assert [g.step for g in got] == [0, 1, 2, 3, 4]
    for g, r in zip(got, reports):
        assert g.per_token.shape == r.per_token.shape == (2, 2, 3, 16)
        np.testing.assert_allclose(g.per_token, r.per_token, atol=2e-2)

    # sequential sampling: the ranks read disjoint blocks
    plan = BatchPlan(pc, len(corpus.train))
    for step in range(5):
        s = plan.starts(step)
        r0, r1 = set(s[:, 0].ravel().tolist()), set(s[:, 1].ravel().tolist())
        assert not r0 & r1

    ckpt = load_checkpoint(out / "ckpt.pt")
    assert ckpt.iter_num == 5 and ckpt.extra["plan"]["world_size"] == 2
    model = model_from_checkpoint(ckpt)  # loads in a single process, no DDP prefixes
    assert sum(p.numel() for p in model.parameters()) > 0


def test_global_grad_accum_is_converted_per_rank(data_dir, tmp_path):
    res = torchrun(["train", str(data_dir), "--preset", "tiny", "--block-size", "16", "--batch-size", "2",
                    "--global-grad-accum", "4", "--steps", "1", "--eval-interval", "0", "--device", "cpu",
                    "--out", str(tmp_path / "r"), "--json"])
    assert res.returncode == 0, res.stderr[-2000:]
    ckpt = load_checkpoint(tmp_path / "r" / "ckpt.pt")
    assert ckpt.extra["plan"]["grad_accum"] == 2 and ckpt.extra["plan"]["world_size"] == 2


def test_a_failed_run_under_torchrun_exits_non_zero(data_dir, tmp_path):
    """A rank leaves with its run's exit code (the CLI skips the interpreter's teardown under torchrun):
    a run whose loss turns non-finite is a failed job, not a finished one."""
    out = tmp_path / "run"
    res = torchrun(["train", str(data_dir), "--preset", "tiny", "--block-size", "16", "--batch-size", "2",
                    "--steps", "50", "--lr", "1e9", "--warmup-steps", "0", "--grad-clip", "0", "--eval-interval", "0",
                    "--device", "cpu", "--out", str(out)])
    assert res.returncode != 0
    assert "error: the loss became non-finite" in res.stderr
    assert json.loads((out / "status.json").read_text())["state"] == "nonfinite"


def test_stop_ends_the_whole_torchrun_group_and_keeps_a_checkpoint(data_dir, tmp_path):
    import time

    from nanogpt_viz.config import PlanConfig
    from nanogpt_viz.run.launch import RunProcess, torchrun_command, train_args

    out = tmp_path / "run"
    args = train_args(str(data_dir), PlanConfig(block_size=16, batch_size=2), "tiny", MODEL_PRESETS["tiny"],
                      TrainConfig(steps=100_000, eval_interval=0, device="cpu", compile=False), out)
    job = RunProcess(torchrun_command(args, nproc=2), out, env={"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not read_metrics(out / "metrics.jsonl")[0]:
        assert job.poll() is None, job.tail_log()
        time.sleep(0.2)
    assert read_metrics(out / "metrics.jsonl")[0], "no step reached metrics.jsonl"
    t0 = time.monotonic()
    code = job.stop()
    assert time.monotonic() - t0 < 30
    assert code == 0, job.tail_log()
    assert "Traceback" not in job.tail_log(20000)
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped"
    assert load_checkpoint(out / "ckpt.pt").iter_num >= 1


def test_resume_under_torchrun_continues_the_uninterrupted_run(data_dir, tmp_path):
    import time

    from nanogpt_viz.run.launch import RunProcess, torchrun_command

    # the schedule must not depend on --steps, so that a longer run and a resumed one agree
    common = ["--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--sampling", "random",
              "--eval-interval", "0", "--device", "cpu", "--seed", "9", "--warmup-steps", "2",
              "--lr-decay-steps", "1000", "--json"]
    part = tmp_path / "part"
    job = RunProcess(torchrun_command(["train", str(data_dir), *common, "--steps", "100000", "--out", str(part)],
                                      nproc=2), part, env={"OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_metrics(part / "metrics.jsonl")[0]) < 2:
        assert job.poll() is None, job.tail_log()
        time.sleep(0.1)
    assert job.stop() == 0, job.tail_log()
    k = load_checkpoint(part / "ckpt.pt").iter_num
    assert k >= 2
    second = torchrun(["train", str(data_dir), *common, "--steps", str(k + 3), "--out", str(part), "--resume"])
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = [json.loads(x) for x in second.stdout.splitlines() if x.startswith("{")]
    assert [r["step"] for r in resumed] == [k, k + 1, k + 2]
    full = torchrun(["train", str(data_dir), *common, "--steps", str(k + 3), "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr[-2000:]
    ref = [json.loads(x)["loss"] for x in full.stdout.splitlines() if x.startswith("{")]
    assert [r["loss"] for r in resumed] == pytest.approx(ref[k:], abs=1e-5)
