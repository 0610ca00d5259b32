"""BatchPlan: the offsets every view and the trainer rely on."""
import numpy as np
import pytest

from nanogpt_viz.data.batching import BatchPlan, PlanError, fisher_yates
from nanogpt_viz.data.mt19937 import mt19937
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
    for mode in ("sequential", "llmc", "random", "shuffled", "sliding"):
        p = plan(5000, block_size=32, batch_size=3, grad_accum=2, world_size=2, sampling=mode, stride=5)
        for step in (0, 7, p.steps_per_epoch + 1):
            for m in range(2):
                for r in range(2):
                    x, y = p.batch(toks, step, m, r)
                    s = p.micro_starts(step, m, r)
                    for i in range(3):
                        assert (x[i] == toks[s[i]:s[i] + 32]).all()
                        assert (y[i] == toks[s[i] + 1:s[i] + 33]).all()


def test_sequential_ranks_disjoint_and_wraps_per_call():
    p = plan(1000, block_size=10, batch_size=3, grad_accum=2, world_size=2)
    # DataLoaderLite: rank r reads B*N*r + j*B*N*W while position + B*N*W + 1 <= L
    assert p.calls_per_pass.tolist() == [999 // 60, (999 - 30) // 60] == [16, 16]
    assert p.dropped_tail == 1000 - (32 * 30 + 1)
    seen = np.concatenate([p.starts(k).ravel() for k in range(8)])
    assert len(set(seen.tolist())) == len(seen)  # no block read twice in a pass
    assert (p.starts(8) == p.starts(0)).all() and p.epoch(8) == 1 and p.epoch(7) == 0


def test_accumulation_wraps_per_micro_batch_like_dataloaderlite():
    # L=301,966 (tinyshakespeare's train.bin), N=64, B=8, K=4: 589 calls per pass, so step 147's
    # first micro-batch still reads the end of pass 0 and its second starts pass 1.
    p = plan(301_966, block_size=64, batch_size=8, grad_accum=4)
    assert p.calls_per_pass.tolist() == [589]
    assert p.micro_starts(147, 0)[0] == 301_056
    assert p.micro_starts(147, 1)[0] == 0
    assert p.epoch(147) == 0 and p.epoch(148) == 1 and p.epoch_start(1) == 147


def test_shards_are_read_one_at_a_time_and_tails_dropped():
    # two 100-token shards, N=16, B=2: three calls per shard (0, 32, 64), then the second shard
    p = BatchPlan(PlanConfig(block_size=16, batch_size=2), [("a_train_0.npy", 100), ("a_train_1.npy", 100)])
    assert [p.start(k) for k in range(7)] == [0, 32, 64, 100, 132, 164, 0]
    rows = p.rows(3)
    assert [(r.shard, r.shard_offset) for r in rows] == [("a_train_1.npy", 0), ("a_train_1.npy", 16)]
    assert p.dropped_ranges() == [(97, 100), (197, 200)]
    assert p.dropped_tail == 6
    toks = np.concatenate([np.arange(100), 1000 + np.arange(100)])
    x, y = p.batch(toks, 3)
    assert x[0, 0] == 1000 and y[1, -1] == 1032  # never a row across the shard boundary


def test_dataloaderlite_ranks_drift_into_different_shards():
    # W=2, B=1, N=4, shards of 25: rank 0 reads 0, 8, 16 (16+8+9 > 25 only after the third call),
    # rank 1 reads 4, 12 and then moves on, one call before rank 0
    p = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2), [("a", 25), ("b", 25)])
    assert p.calls[:, 0].tolist() == [3, 2]
    assert p.starts(2)[0, :, 0].tolist() == [16, 25 + 4]
    assert p.rank_shards(2) == [0, 1]
    assert p.drift_note(1) is None
    assert p.drift_note(2) == "rank 1 moved to b at step 2; rank 0 is still in a"
    assert p.first_drift() == (2, p.drift_note(2))
    # llm.c switches all ranks together: (25-1) // (2*4) = 3 samples per shard for both
    q = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2, sampling="llmc"), [("a", 25), ("b", 25)])
    assert q.starts(2)[0, :, 0].tolist() == [16, 20] and q.starts(3)[0, :, 0].tolist() == [25, 29]
    assert q.first_drift() is None


def test_llmc_mt19937_and_permutation_by_hand():
    # std::mt19937 seeded 42 (init_genrand), the generator llm.c's manual_seed(42) sets up
    assert mt19937(42).random_raw(4).tolist() == [1608637542, 3421126067, 4083286876, 787846414]
    # random_permutation on [0..4]: i=4: 1608637542 % 5 = 2 -> [0,1,4,3,2]; i=3: % 4 = 3 (no swap);
    # i=2: 4083286876 % 3 = 1 -> [0,4,1,3,2]; i=1: 787846414 % 2 = 0 -> [4,0,1,3,2]
    assert fisher_yates(5, mt19937(42).random_raw(4)).tolist() == [4, 0, 1, 3, 2]


def _naive_permutation(n, raw):
    data = list(range(n))
    for k, i in enumerate(range(n - 1, 0, -1)):
        j = int(raw[k]) % (i + 1)
        data[i], data[j] = data[j], data[i]
    return data


def test_fisher_yates_equals_the_loop():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 64, 1000, 4097):
        for _ in range(5):
            raw = rng.integers(0, 2 ** 32, max(n - 1, 0), dtype=np.uint64)
            assert fisher_yates(n, raw).tolist() == _naive_permutation(n, raw)


class _LlmcLoop:
    """llm.c's DataLoader written the way its C is (offsets only): reset, advance, next_batch."""

    def __init__(self, lengths, B, T, rank, W, shuffle, seed=42):
        self.lengths, self.B, self.T, self.rank, self.shuffle = lengths, B, T, rank, shuffle
        self.total = W * B * T
        if shuffle:
            self.rng = mt19937(seed + rank)
            self.shard_indices = list(range(len(lengths)))
        self.reset()

    def permute(self, data):
        for k, i in enumerate(range(len(data) - 1, 0, -1)):  # random_permutation
            j = int(self.rng.random_raw()) % (i + 1)
            data[i], data[j] = data[j], data[i]

    def load(self, idx):
        self.cur = self.shard_indices[idx] if self.shuffle else idx
        self.nsamples = (self.lengths[self.cur] - 1) // self.total
        if self.shuffle:
            self.intra = list(range(self.nsamples))
            self.permute(self.intra)

    def reset(self):
        self.idx, self.sample = 0, 0
        if self.shuffle:
            self.permute(self.shard_indices)
        self.load(0)

    def next_batch(self):
        if self.sample >= self.nsamples:
            if self.idx == len(self.lengths) - 1:
                self.reset()
            else:
                self.idx, self.sample = self.idx + 1, 0
                self.load(self.idx)
        i = self.intra[self.sample] if self.shuffle else self.sample
        self.sample += 1
        return self.cur, i * self.total + self.rank * self.B * self.T


class _DataLoaderLiteLoop:
    """build-nanogpt's DataLoaderLite written the way its Python is (positions only)."""

    def __init__(self, lengths, B, T, rank, W):
        self.lengths, self.B, self.T, self.rank, self.W = lengths, B, T, rank, W
        self.shard, self.pos = 0, B * T * rank

    def next_batch(self):
        B, T, W = self.B, self.T, self.W
        out = (self.shard, self.pos)
        self.pos += B * T * W
        if self.pos + (B * T * W + 1) > self.lengths[self.shard]:
            self.shard = (self.shard + 1) % len(self.lengths)
            self.pos = B * T * self.rank
        return out


@pytest.mark.parametrize("mode", ["sequential", "llmc", "shuffled"])
def test_loader_modes_match_the_loops_over_several_passes(mode):
    rng = np.random.default_rng({"sequential": 1, "llmc": 2, "shuffled": 3}[mode])
    for _ in range(25):
        S, B, T = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.choice([4, 8]))
        W, K = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        lengths = [int(rng.integers(W * B * T + 1, W * B * T * 6 + 40)) for _ in range(S)]
        p = BatchPlan(PlanConfig(block_size=T, batch_size=B, grad_accum=K, world_size=W, sampling=mode),
                      [(f"s{k}", n) for k, n in enumerate(lengths)])
        first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        for r in range(W):
            loop = (_DataLoaderLiteLoop(lengths, B, T, r, W) if mode == "sequential"
                    else _LlmcLoop(lengths, B, T, r, W, mode == "shuffled"))
            for step in range((3 * int(p.calls_per_pass[r]) + 5) // K):
                got = p.starts(step)[:, r]
                for m in range(K):
                    shard, off = loop.next_batch()
                    assert (got[m] == first[shard] + off + np.arange(B) * T).all(), (lengths, B, T, W, K, r, step)


def test_shuffled_seed_is_llmc_42_plus_rank_by_default():
    p = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2, sampling="shuffled"), [100, 100, 100])
    assert p.seed == 42
    q = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2, sampling="shuffled", seed=42),
                  [100, 100, 100])
    assert all((p.starts(k) == q.starts(k)).all() for k in range(40))
    # the shard order of epoch 0 for rank 0 is random_permutation([0,1,2]) with mt19937(42):
    # i=2: 1608637542 % 3 = 0 -> [2,1,0]; i=1: 3421126067 % 2 = 1 -> no swap
    assert p.rank_shards(0)[0] == 2


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


def test_sliding_stride_one_is_the_misconception():
    p = plan(1000, block_size=16, batch_size=4, sampling="sliding", stride=1)
    assert p.starts(0).ravel().tolist() == [0, 1, 2, 3]
    assert p.start(1) == 4
    s = plan(1000, block_size=16, batch_size=4, sampling="sliding", stride=16)
    assert (s.starts(3) == plan(1000, block_size=16, batch_size=4).starts(3)).all()


def test_huge_corpus_is_instant():
    L = 10 ** 10
    for mode in ("sequential", "llmc", "random", "shuffled", "sliding"):
        p = plan(L, block_size=1024, batch_size=12, grad_accum=40, world_size=8, sampling=mode)
        s = p.starts(10 ** 9)
        assert s.shape == (40, 8, 12) and s.min() >= 0 and s.max() + 1025 <= L


@pytest.mark.parametrize("mode", ["sequential", "llmc", "random", "shuffled", "sliding"])
def test_coverage_matches_brute_force(mode):
    N, L = 8, 1000
    p = plan(L, block_size=N, batch_size=3, grad_accum=2, world_size=2, sampling=mode, stride=3)
    if mode in ("sequential", "llmc", "shuffled"):  # the same over three unequal shards
        p = BatchPlan(p.config, [300, 333, 367])
    for upto in (0, 3, p.steps_per_epoch + 2, 2 * p.steps_per_epoch + 1):
        ref = np.zeros(L, dtype=np.int64)
        for k in range(upto + 1):
            for s in p.starts(k).ravel():
                ref[s + 1:s + N + 1] += 1
        assert (p.coverage(upto) == ref).all()
        assert (p.coverage(upto, 100, 300) == ref[100:300]).all()
        assert p.fraction_seen(upto) == pytest.approx(np.count_nonzero(ref[1:]) / (L - 1))


def test_owners_invert_starts():
    for mode in ("sequential", "llmc", "shuffled"):
        p = BatchPlan(PlanConfig(block_size=10, batch_size=3, grad_accum=2, world_size=2, sampling=mode, seed=9),
                      [1500, 1500])
        o = p.owners(np.arange(3000), epoch=1)
        for step in (p.epoch_start(1) + 1, p.epoch_start(1) + 3):
            for ref in p.rows(step):
                for col in (0, 9):
                    pos = ref.start + col
                    assert (o["step"][pos], o["micro"][pos], o["rank"][pos], o["row"][pos], o["col"][pos]) == \
                        (step, ref.micro, ref.rank, ref.row, col)
        for a, b in p.dropped_ranges():
            assert (o["step"][a:b] == -1).all()


def test_bad_plans_explain_themselves():
    with pytest.raises(PlanError, match="N\\+1"):
        plan(10, block_size=10, batch_size=1)
    with pytest.raises(PlanError, match="batch size"):
        plan(100, block_size=10, batch_size=0)
    with pytest.raises(PlanError, match="W\\*B\\*N\\+1 = 201"):
        plan(100, block_size=10, batch_size=20)
    with pytest.raises(PlanError, match="shard b has 50 tokens"):
        BatchPlan(PlanConfig(block_size=10, batch_size=5, sampling="llmc"), [("a", 100), ("b", 50)])
    # random sampling needs only one block
    assert plan(11, block_size=10, batch_size=20, sampling="random").starts(0).max() == 0
