"""The per-token history (run/history.py): round trip, ranks combined, thinning under a budget, tailing."""
import json

import numpy as np
import pytest

from nanogpt_viz.run.history import HistoryReader, HistoryWriter
from nanogpt_viz.run.record import HISTORY_DIR, CorpusIdentity, RunManifest, write_manifest

F16 = dict(rtol=1e-3, atol=1e-3)  # float16 keeps 11 significant bits


def _steps(n, K, B, N, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.random((K, B, N), dtype=np.float32) * 11).astype(np.float32) for _ in range(n)]


def test_round_trip_every_step(tmp_path):
    K, B, N = 2, 3, 8
    data = _steps(40, K, B, N)
    with HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N) as w:
        for s, a in enumerate(data):
            assert w.append(s, a)
    r = HistoryReader(tmp_path)
    assert (r.K, r.W, r.B, r.N) == (K, 1, B, N)
    assert list(r.steps) == list(range(40)) and r.last_step == 39
    assert not r.thinned and r.note is None
    for s, a in enumerate(data):
        assert r.has_rows(s)
        got = r.per_token(s)
        assert got.shape == (K, 1, B, N) and got.dtype == np.float32
        np.testing.assert_allclose(got[:, 0], a, **F16)
        np.testing.assert_allclose(r.position_mean(s), a.mean(axis=(0, 1)), rtol=1e-6)
    assert r.per_token(40) is None and r.position_mean(-1) is None
    steps, means = r.position_map(10, 30)
    assert list(steps) == list(range(10, 30)) and means.shape == (20, N)
    np.testing.assert_allclose(means[5], data[15].mean(axis=(0, 1)), rtol=1e-6)
    steps, means = r.position_map(0, None, max_rows=7)  # evenly subsampled, both ends kept
    assert len(steps) == 7 and steps[0] == 0 and steps[-1] == 39 and means.shape == (7, N)
    # 8 KB a step for the founding example N=1024, B=4 (K=1, one rank)
    w = HistoryWriter(tmp_path / "big", rank=0, world_size=1, K=1, B=4, N=1024)
    assert w.row_bytes == 8192
    w.close()


def test_two_ranks_write_apart_and_the_reader_combines_them_in_rank_order(tmp_path):
    K, B, N = 2, 2, 5
    d0, d1 = _steps(12, K, B, N, seed=1), _steps(12, K, B, N, seed=2)
    w0 = HistoryWriter(tmp_path, rank=0, world_size=2, K=K, B=B, N=N)
    r = HistoryReader(tmp_path)
    assert len(r) == 0 and r.last_step is None  # rank 1 has not started: nothing combined yet
    w1 = HistoryWriter(tmp_path, rank=1, world_size=2, K=K, B=B, N=N)
    for s in range(12):
        w0.append(s, d0[s])
        if s < 10:
            w1.append(s, d1[s])  # rank 1 lags two steps behind
    r = HistoryReader(tmp_path)
    assert r.W == 2 and r.last_step == 9  # only steps every rank has recorded
    both = r.per_token(4)
    assert both.shape == (K, 2, B, N)
    np.testing.assert_allclose(both[:, 0], d0[4], **F16)
    np.testing.assert_allclose(both[:, 1], d1[4], **F16)
    np.testing.assert_allclose(r.position_mean(4), np.concatenate([d0[4], d1[4]], axis=1).mean(axis=(0, 1)),
                               rtol=1e-6)
    for s in (10, 11):
        w1.append(s, d1[s])
    assert r.refresh() and r.last_step == 11
    w0.close(), w1.close()
    assert sorted(p.name for p in (tmp_path / HISTORY_DIR).iterdir()) == [
        f"rank000{k}.{ext}" for k in (0, 1) for ext in ("index", "json", "pos", "rows")]


def test_thinning_under_a_tiny_budget_keeps_every_position_mean(tmp_path):
    K, B, N = 1, 1, 8  # 16 bytes of rows a step
    data = _steps(200, K, B, N, seed=3)
    with HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N, budget_bytes=1024) as w:
        for s, a in enumerate(data):
            w.append(s, a)
    r = HistoryReader(tmp_path)
    kept = [s for s in range(200) if r.has_rows(s)]
    # half the budget at every step, a quarter at every 2nd, an eighth at every 4th, ...
    want = (list(range(32)) + list(range(32, 64, 2)) + list(range(64, 96, 4)) + list(range(96, 128, 8))
            + [128, 144, 160])
    assert kept == want
    assert (tmp_path / HISTORY_DIR / "rank0000.rows").stat().st_size == 16 * len(want) <= 1024
    assert r.thinned and r.thinned_from_step == 32
    assert "every 2nd step from 32" in r.note and "every step to 31" in r.note and "1 KB" in r.note
    assert "none from step 192" in r.note
    assert list(r.steps) == list(range(200))  # the loss by position: every step
    for s in (33, 150, 199):
        assert r.per_token(s) is None
        np.testing.assert_allclose(r.position_mean(s), data[s][0, 0], rtol=1e-6)
    np.testing.assert_allclose(r.per_token(34)[0, 0, 0], data[34][0, 0], **F16)

    # ranks share the budget and thin the same steps
    for rank in (0, 1):
        with HistoryWriter(tmp_path / "w2", rank=rank, world_size=2, K=K, B=B, N=N, budget_bytes=2048) as w:
            for s, a in enumerate(data):
                w.append(s, a)
    r2 = HistoryReader(tmp_path / "w2")
    assert [s for s in range(200) if r2.has_rows(s)] == want


def test_a_resumed_writer_cuts_the_steps_after_its_checkpoint(tmp_path):
    K, B, N = 1, 2, 4
    first, second = _steps(10, K, B, N, seed=4), _steps(10, K, B, N, seed=5)
    with HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N) as w:
        for s in range(10):
            w.append(s, first[s])
    with HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N, start_step=6) as w:  # resumed at step 6
        with pytest.raises(ValueError):
            w.append(5, second[5])
        for s in range(6, 10):
            w.append(s, second[s])
    r = HistoryReader(tmp_path)
    assert list(r.steps) == list(range(10))
    np.testing.assert_allclose(r.per_token(5)[:, 0], first[5], **F16)
    np.testing.assert_allclose(r.per_token(7)[:, 0], second[7], **F16)
    with HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N):  # a new run from step 0: a new history
        pass
    assert len(HistoryReader(tmp_path)) == 0


def test_a_reader_follows_a_history_being_appended(tmp_path):
    K, B, N = 1, 2, 4
    data = _steps(6, K, B, N, seed=6)
    w = HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N)
    r = HistoryReader(tmp_path)
    assert r.last_step is None and not r.refresh()
    for s in range(3):
        w.append(s, data[s])
    assert r.refresh() and list(r.steps) == [0, 1, 2]
    assert not r.refresh()
    for s in range(3, 6):
        w.append(s, data[s])
    assert r.refresh() and r.last_step == 5
    np.testing.assert_allclose(r.per_token(5)[:, 0], data[5], **F16)
    w.close()


def _manifest(run_dir, K, B, N, W=1):
    m = RunManifest(run_id="t", created="2026-01-01T00:00:00", corpus=CorpusIdentity("/x", "nanogpt-dir", "train",
                                                                                      100, "ab"),
                    plan={"block_size": N, "batch_size": B, "grad_accum": K, "world_size": W}, model={}, train={},
                    world_size=W)
    write_manifest(run_dir, m)


def test_run_reader_tails_metrics_and_brings_each_step_its_history(tmp_path):
    from nanogpt_viz.run.reader import RunReader
    from nanogpt_viz.run.record import EndReason, RunLog

    K, B, N = 1, 2, 4
    data = _steps(4, K, B, N, seed=7)
    _manifest(tmp_path, K, B, N)
    log = RunLog(tmp_path)
    w = HistoryWriter(tmp_path, rank=0, world_size=1, K=K, B=B, N=N)
    reader = RunReader(tmp_path)
    assert reader.poll() == [] and reader.end() is None
    for s in range(2):
        w.append(s, data[s])
        log.metric({"step": s, "epoch": 0, "loss": float(data[s].mean()), "lr": 1e-3, "world_size": 1})
    got = reader.poll()
    assert [g.step for g in got] == [0, 1]
    np.testing.assert_allclose(got[1].per_token[:, 0], data[1], **F16)
    np.testing.assert_allclose(got[1].position_loss, data[1].mean(axis=(0, 1)), rtol=1e-6)
    # a metrics line that arrives before its history record waits for it (a lagging rank)
    log.metric({"step": 2, "epoch": 0, "loss": 1.0, "lr": 1e-3, "world_size": 1})
    assert reader.poll() == []
    w.append(2, data[2])
    got = reader.poll()
    assert [g.step for g in got] == [2] and got[0].per_token is not None
    past = reader.report(0)
    np.testing.assert_allclose(past.per_token[:, 0], data[0], **F16)
    assert reader.report(99) is None
    log.status("finished", step=3, message="finished 3 steps")
    end = reader.end()
    assert end.reason is EndReason.FINISHED and end.reason == "finished" and end.step == 3
    w.close()
    log.close()
    json.loads((tmp_path / "run.json").read_text())
