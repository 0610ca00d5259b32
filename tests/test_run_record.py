"""The run record (run/record.py, run/reader.py): corpus identity, run.json, run directories never reused
silently, and a real run read back through the same contract the window uses."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from nanogpt_viz.config import MODEL_PRESETS, PlanConfig, TrainConfig
from nanogpt_viz.data.corpus import open_corpus, write_nanogpt_bin
from nanogpt_viz.run import record
from nanogpt_viz.run.record import (CorpusIdentity, EndReason, RunError, RunManifest, check_corpus, corpus_identity,
                                    new_run_dir, prepare_run_dir, read_manifest, write_manifest)


@pytest.fixture()
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    write_nanogpt_bin(d / "train.bin", np.random.default_rng(0).integers(0, 50257, 20_000).astype(np.uint16))
    write_nanogpt_bin(d / "val.bin", np.random.default_rng(1).integers(0, 50257, 3_000).astype(np.uint16))
    return d


def _flip(path, index):
    a = np.fromfile(path, dtype=np.uint16)
    a[index] = (int(a[index]) + 1) % 50257
    a.tofile(path)


def test_corpus_fingerprint_is_stable_and_sensitive(data_dir, tmp_path):
    ident = corpus_identity(open_corpus(data_dir), "train")
    assert ident == corpus_identity(open_corpus(data_dir), "train")  # stable across reopening
    assert ident.tokens == 20_000 and ident.format == "nanogpt-dir" and ident.split == "train"
    assert check_corpus(ident, open_corpus(data_dir)) is None
    _flip(data_dir / "train.bin", 10_000)  # one token in the middle
    changed = open_corpus(data_dir)
    assert corpus_identity(changed, "train").fingerprint != ident.fingerprint
    msg = check_corpus(ident, changed)
    assert "different content" in msg and msg.count(".") >= 1
    other = tmp_path / "other"
    other.mkdir()
    write_nanogpt_bin(other / "train.bin", np.zeros(500, np.uint16))
    assert "450 train tokens" in check_corpus(ident, open_corpus(other))  # 10% held out as val
    assert "missing" in check_corpus(ident, None)
    assert CorpusIdentity.from_dict(json.loads(json.dumps(ident.to_dict()))) == ident

    # a large file is sampled (first, middle and last MiB and strided pages), in milliseconds
    big = tmp_path / "big.bin"
    write_nanogpt_bin(big, np.random.default_rng(2).integers(0, 50257, 4_000_000).astype(np.uint16))
    fp = record.fingerprint_tokens(np.memmap(big, dtype=np.uint16, mode="r"))
    assert fp == record.fingerprint_tokens(np.memmap(big, dtype=np.uint16, mode="r"))
    _flip(big, 2_000_000)
    assert record.fingerprint_tokens(np.memmap(big, dtype=np.uint16, mode="r")) != fp


def test_manifest_round_trip_and_damage(data_dir, tmp_path):
    corpus = open_corpus(data_dir)
    pc = PlanConfig(block_size=16, batch_size=2)
    m = record.make_manifest(tmp_path / "r", corpus, "train", pc, MODEL_PRESETS["tiny"], TrainConfig(steps=3),
                             world_size=1, parent={"checkpoint": "/x/ckpt.pt", "step": 500}, history_budget=1 << 20)
    (tmp_path / "r").mkdir()
    write_manifest(tmp_path / "r", m)
    back = read_manifest(tmp_path / "r")
    assert back == m and isinstance(back, RunManifest) and back.history["budget_bytes"] == 1 << 20
    assert back.history["rows_per_step"] == 2 and back.continued_note() == "continued from /x/ckpt.pt at step 500"
    with pytest.raises(RunError, match="not a run directory"):
        read_manifest(tmp_path)
    (tmp_path / "r" / "run.json").write_text("{ half")
    with pytest.raises(RunError, match="damaged"):
        read_manifest(tmp_path / "r")


def test_end_reason_is_an_enum_that_still_reads_as_its_string():
    from nanogpt_viz.engine.trainer import RunEnd

    end = RunEnd("oom", "out of memory", 3)
    assert end.reason is EndReason.OOM and end.reason == "oom" and f"{end.reason}" == "oom"
    assert {"oom": "Out of memory"}.get(end.reason) == "Out of memory"
    assert json.dumps({"r": end.reason}) == '{"r": "oom"}' and not end.reason.ok and EndReason.STOPPED.ok
    with pytest.raises(ValueError):
        RunEnd("exploded", "", 0)


def test_run_directories_are_fresh_and_never_reused_silently(tmp_path):
    a, b = new_run_dir(tmp_path / "runs", "my corpus.txt"), new_run_dir(tmp_path / "runs", "my corpus.txt")
    assert a != b and a.is_dir() and b.is_dir() and a.name.endswith("-my-corpus.txt")
    run = tmp_path / "run"
    prepare_run_dir(run, resume=False, overwrite=False)  # new: created
    (run / "metrics.jsonl").write_text("")
    (run / "status.json").write_text("{}")
    prepare_run_dir(run, resume=False, overwrite=False)  # a start that failed before any step: nothing to lose
    (run / "metrics.jsonl").write_text('{"step": 0}\n{"step": 1}\n')
    (run / "ckpt.pt").write_bytes(b"weights")
    with pytest.raises(RunError) as err:
        prepare_run_dir(run, resume=False, overwrite=False)
    assert "--resume" in str(err.value) and "--overwrite" in str(err.value) and "2 steps" in str(err.value)
    assert (run / "ckpt.pt").read_bytes() == b"weights"
    prepare_run_dir(run, resume=True, overwrite=False)
    assert (run / "ckpt.pt").exists()
    (run / "history").mkdir()
    prepare_run_dir(run, resume=False, overwrite=True)
    assert not any(run.iterdir())
    (tmp_path / "afile").write_text("")
    with pytest.raises(RunError, match="is a file"):
        prepare_run_dir(tmp_path / "afile", resume=False, overwrite=False)
    assert record.parse_bytes("2G") == 2 << 30 and record.parse_bytes("512k") == 512 << 10
    with pytest.raises(ValueError):
        record.parse_bytes("lots")


def _cli(*args, cwd, timeout=240):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["NANOGPT_VIZ_CACHE"] = str(cwd / "cache")
    return subprocess.run([sys.executable, "-m", "nanogpt_viz", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def test_cli_train_writes_a_run_that_reads_back_as_the_trainers_reports(data_dir, tmp_path):
    from nanogpt_viz.engine.trainer import StepReport, Trainer
    from nanogpt_viz.run.reader import RunReader

    common = ["--preset", "tiny", "-N", 16, "-B", 2, "--steps", 5, "--device", "cpu", "--eval-interval", 0]
    res = _cli("train", data_dir, *common, cwd=tmp_path)  # no --out: a fresh runs/<timestamp>-<corpus>
    assert res.returncode == 0, res.stderr
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-data") and f"run directory: runs/{runs[0].name}" in res.stderr
    run = runs[0]
    m = read_manifest(run)
    assert m.status == "finished" and m.end_reason == "finished" and m.steps_done == 5 and m.world_size == 1
    assert m.corpus == corpus_identity(open_corpus(data_dir), "train")
    assert m.plan["block_size"] == 16 and m.model["n_layer"] == MODEL_PRESETS["tiny"].n_layer
    assert m.history["bytes_per_step"] == 2 * 2 * 16 and m.history["thinned_from_step"] is None

    # the same run in this process: its reports are what the run directory gives back
    corpus = open_corpus(data_dir)
    reports = [e for e in Trainer(corpus.train, corpus.val, PlanConfig(block_size=16, batch_size=2),
                                  MODEL_PRESETS["tiny"].with_(block_size=16),
                                  TrainConfig(steps=5, eval_interval=0, device="cpu")).run()
               if isinstance(e, StepReport)]
    reader = RunReader(run)
    got = reader.poll()
    assert [g.step for g in got] == [r.step for r in reports] == list(range(5))
    for g, r in zip(got, reports):
        assert g.per_token.shape == r.per_token.shape == (1, 1, 2, 16)
        np.testing.assert_allclose(g.per_token, r.per_token, rtol=2e-3, atol=2e-3)
        np.testing.assert_allclose(g.position_loss, r.position_loss, rtol=1e-4)
        assert g.loss == pytest.approx(r.loss, rel=1e-5)
    assert reader.report(2).loss == got[2].loss and reader.poll() == []
    end = reader.end()
    assert end.reason is EndReason.FINISHED and end.step == 5

    # the same --out again: refused with one line, nothing of the first run touched
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    again = _cli("train", data_dir, *common, "--out", run, cwd=tmp_path)
    lines = again.stderr.strip().splitlines()
    assert again.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), again.stderr
    assert "--resume" in lines[0] and "--overwrite" in lines[0] and "Traceback" not in again.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # --overwrite replaces it: a 2-step run, with metrics and history of its own only
    res = _cli("train", data_dir, *common[:-6], "--steps", 2, "--device", "cpu", "--eval-interval", 0,
               "--out", run, "--overwrite", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert list(RunReader(run).history.steps) == [0, 1] and read_manifest(run).steps_done == 2


def test_trainer_in_process_writes_run_json_and_history(data_dir, tmp_path):
    from nanogpt_viz.engine.trainer import RunEnd, StepReport, Trainer
    from nanogpt_viz.run.history import HistoryReader

    corpus = open_corpus(data_dir)
    pc = PlanConfig(block_size=8, batch_size=2, grad_accum=2, world_size=2)  # two simulated ranks, K=2
    mc, tc = MODEL_PRESETS["tiny"].with_(block_size=8), TrainConfig(steps=4, eval_interval=0, device="cpu")
    out = tmp_path / "run"
    m = record.make_manifest(out, corpus, "train", pc, mc, tc, world_size=2)
    events = list(Trainer(corpus.train, None, pc, mc, tc, out_dir=out, manifest=m).run())
    reports = [e for e in events if isinstance(e, StepReport)]
    assert isinstance(events[-1], RunEnd) and events[-1].reason is EndReason.FINISHED
    h = HistoryReader(out)
    assert (h.K, h.W, h.B, h.N) == (2, 2, 2, 8) and list(h.steps) == [0, 1, 2, 3]
    for r in reports:
        np.testing.assert_allclose(h.per_token(r.step), r.per_token, rtol=2e-3, atol=2e-3)
    m = read_manifest(out)
    assert m.status == "finished" and m.world_size == 2 and m.history["rows_per_step"] == 8


def test_the_torchrun_command_carries_the_history_budget():
    from nanogpt_viz.cli import build_parser
    from nanogpt_viz.run.launch import train_args

    args = train_args("data", PlanConfig(block_size=16, batch_size=2), "tiny", MODEL_PRESETS["tiny"], TrainConfig(),
                      "runs/x", history_budget=1 << 20, overwrite=True)
    ns = build_parser().parse_args(args)
    assert ns.history_budget == 1 << 20 and ns.overwrite and not ns.resume and ns.out == "runs/x"
    assert build_parser().parse_args(["train", "d", "--history-budget", "64M"]).history_budget == 64 << 20
