"""BatchPlan: the offsets every view and the trainer rely on."""
import numpy as np
import pytest

from nanogpt_viz.batching import BatchPlan, FeistelPermutation, PlanError
from nanogpt_viz.config import PlanConfig


def plan(L=10_000, **kw):
    return BatchPlan(PlanConfig(**kw), L)


def test_founding_example_sequential():
    # N=1024, B=4: step 1 (0-based step 0) reads t1..t4096 with targets up to t4097; step 2 starts at t4097.
    p = plan(100_000, block_size=1024, batch_size=4)
    assert p.starts(0).ravel().tolist() == [0, 1024, 2048, 3072]
    assert p.start(1) == 4096
    assert p.tokens_per_step == 4096
    toks = np.arange(100_000)
    x, y = p.batch(toks, 0)
    assert x.shape == y.shape == (4, 1024)
    assert x[0, 0] == 0 and x[-1, -1] == 4095 and y[-1, -1] == 4096  # 0-based t4096 is t4097
    # row r+1 starts where row r's inputs end: its first input is row r's last target
    assert all(x[i + 1, 0] == y[i, -1] for i in range(3))


def test_y_is_x_shifted_by_one_in_every_mode():
    toks = np.random.default_rng(0).integers(0, 50257, 5000)
    for mode in ("sequential", "random", "shuffled", "sliding"):
        p = plan(5000, block_size=32, batch_size=3, grad_accum=2, world_size=2, sampling=mode, stride=5)
        for step in (0, 7, p.steps_per_epoch + 1):
            for m in range(2):
                for r in range(2):
                    x, y = p.batch(toks, step, m, r)
                    s = p.micro_starts(step, m, r)
                    for i in range(3):
                        assert (x[i] == toks[s[i]:s[i] + 32]).all()
                        assert (y[i] == toks[s[i] + 1:s[i] + 33]).all()


def dataloaderlite_starts(L, N, B, K, W, steps):
    """The layout of build-nanogpt's DataLoaderLite (re-derived: each rank starts at B*N*rank and
    advances by B*N*W per next_batch call; K calls per optimizer step)."""
    out = np.zeros((steps, K, W, B), dtype=np.int64)
    for r in range(W):
        pos = B * N * r
        for k in range(steps):
            for m in range(K):
                out[k, m, r] = pos + N * np.arange(B)
                pos += B * N * W
    return out


@pytest.mark.parametrize("K,W,B", [(1, 1, 4), (3, 2, 2), (2, 4, 3), (5, 1, 1)])
def test_ranks_and_accumulation_match_dataloaderlite(K, W, B):
    N, L = 16, 20_000
    p = plan(L, block_size=N, batch_size=B, grad_accum=K, world_size=W)
    steps = p.steps_per_epoch
    ref = dataloaderlite_starts(L, N, B, K, W, steps)
    got = np.stack([p.starts(k) for k in range(steps)])
    assert (got == ref).all()
    assert p.tokens_per_step == K * W * B * N


def test_sequential_ranks_disjoint_and_epoch_wraps():
    p = plan(1000, block_size=10, batch_size=3, grad_accum=2, world_size=2)
    assert p.steps_per_epoch == (999 // 10) // 12 == 8
    assert p.dropped_tail == 1000 - (8 * 12 * 10 + 1)
    seen = np.concatenate([p.starts(k).ravel() for k in range(8)])
    assert len(set(seen.tolist())) == len(seen)  # no block read twice in an epoch
    assert (p.starts(8) == p.starts(0)).all() and p.epoch(8) == 1 and p.epoch(7) == 0


def test_random_in_bounds_reproducible_and_distinct():
    L, N = 5000, 64
    p = plan(L, block_size=N, batch_size=8, grad_accum=2, world_size=3, sampling="random", seed=1)
    allstarts = np.concatenate([p.starts(k).ravel() for k in range(300)])
    assert allstarts.min() >= 0 and allstarts.max() <= L - N - 1
    assert allstarts.max() > L - N - 200 and allstarts.min() < 200  # the whole range is reachable
    assert (p.starts(17) == plan(L, block_size=N, batch_size=8, grad_accum=2, world_size=3,
                                 sampling="random", seed=1).starts(17)).all()
    q = plan(L, block_size=N, batch_size=8, grad_accum=2, world_size=3, sampling="random", seed=2)
    assert not (p.starts(17) == q.starts(17)).all()
    s = p.starts(5)
    assert not (s[:, 0] == s[:, 1]).all()  # each rank draws its own stream
    assert not (s[0] == s[1]).all()  # and each micro-batch
    assert p.start(5, micro=1, rank=2, row=3) == s[1, 2, 3]


def test_shuffled_is_a_permutation_of_sequential_steps_each_epoch():
    kw = dict(block_size=8, batch_size=2, grad_accum=2, world_size=1)
    seq = plan(2000, **kw)
    sh = plan(2000, sampling="shuffled", seed=3, **kw)
    spe = sh.steps_per_epoch
    for e in range(2):
        got = sorted(tuple(sh.starts(e * spe + k).ravel()) for k in range(spe))
        ref = sorted(tuple(seq.starts(k).ravel()) for k in range(spe))
        assert got == ref
    order0 = [sh.source_step(k) for k in range(spe)]
    order1 = [sh.source_step(spe + k) for k in range(spe)]
    assert order0 != list(range(spe)) and order0 != order1


def test_sliding_stride_one_is_the_misconception():
    p = plan(1000, block_size=16, batch_size=4, sampling="sliding", stride=1)
    assert p.starts(0).ravel().tolist() == [0, 1, 2, 3]
    assert p.start(1) == 4
    s = plan(1000, block_size=16, batch_size=4, sampling="sliding", stride=16)
    assert (s.starts(3) == plan(1000, block_size=16, batch_size=4).starts(3)).all()


def test_huge_corpus_is_instant():
    L = 10 ** 10
    for mode in ("sequential", "random", "shuffled", "sliding"):
        p = plan(L, block_size=1024, batch_size=12, grad_accum=40, world_size=8, sampling=mode)
        s = p.starts(10 ** 9)
        assert s.shape == (40, 8, 12) and s.min() >= 0 and s.max() + 1025 <= L


@pytest.mark.parametrize("mode", ["sequential", "random", "shuffled", "sliding"])
def test_coverage_matches_brute_force(mode):
    N, L = 8, 1000
    p = plan(L, block_size=N, batch_size=3, grad_accum=2, world_size=2, sampling=mode, stride=3)
    for upto in (0, 3, p.steps_per_epoch + 2):
        ref = np.zeros(L, dtype=np.int64)
        for k in range(upto + 1):
            for s in p.starts(k).ravel():
                ref[s + 1:s + N + 1] += 1
        assert (p.coverage(upto) == ref).all()
        assert (p.coverage(upto, 100, 300) == ref[100:300]).all()
        assert p.fraction_seen(upto) == pytest.approx(np.count_nonzero(ref[1:]) / (L - 1))


def test_owners_invert_starts():
    for mode in ("sequential", "shuffled"):
        p = plan(3000, block_size=10, batch_size=3, grad_accum=2, world_size=2, sampling=mode, seed=9)
        o = p.owners(np.arange(3000), epoch=1)
        for step in (p.steps_per_epoch, p.steps_per_epoch + 3):
            for ref in p.rows(step):
                for col in (0, 9):
                    pos = ref.start + col
                    assert (o["step"][pos], o["micro"][pos], o["rank"][pos], o["row"][pos], o["col"][pos]) == \
                        (step, ref.micro, ref.rank, ref.row, col)
        assert (o["step"][p.used_tokens:] == -1).all()


def test_feistel_is_a_bijection():
    for n in (1, 2, 3, 17, 1000, 4097):
        f = FeistelPermutation(n, key=42)
        v = f.forward(np.arange(n))
        assert sorted(v.tolist()) == list(range(n))
        assert (f.inverse(v) == np.arange(n)).all()


def test_bad_plans_explain_themselves():
    with pytest.raises(PlanError, match="N\\+1"):
        plan(10, block_size=10, batch_size=1)
    with pytest.raises(PlanError, match="batch size"):
        plan(100, block_size=10, batch_size=0)
    with pytest.raises(PlanError, match="lower the batch size"):
        plan(100, block_size=10, batch_size=20)
    # random sampling needs only one block
    assert plan(11, block_size=10, batch_size=20, sampling="random").starts(0).max() == 0
