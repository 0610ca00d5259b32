"""The step readout and coverage lines under the step controls (viewmodel.step_readout / coverage_text):
hand-derived over a 1,000-token stream with N = 16, B = 4 (64 tokens a step)."""
from __future__ import annotations

from nanogpt_viz.config import PlanConfig
from nanogpt_viz.data.batching import BatchPlan
from nanogpt_viz.viewmodel import coverage_text, step_readout


def test_sequential_readout_both_numberings():
    plan = BatchPlan(PlanConfig(block_size=16, batch_size=4), 1000)
    # step 2 reads t[128..191], its targets run to t[192]
    text = step_readout(plan, 2)
    assert text.startswith("epoch <b>0</b> (")
    assert "the step starts at token 129 · t[128]…, inputs to token 192, targets to token 193" in text
    assert text.endswith("<b>64</b> tokens/step = K×W×B×N = 1×1×4×16")
    text = step_readout(plan, 2, one_based=False, replay_name="ckpt.pt")
    assert "the step starts at t[128] · token 129…, inputs to t[191], targets to t[192]" in text
    assert " · the batches the nanoGPT run ckpt.pt drew · " in text


def test_coverage_and_dropped_tail():
    plan = BatchPlan(PlanConfig(block_size=16, batch_size=4), 1000)
    # 3 steps x 64 targets of the 999 target positions; 15 steps fit (15 * 64 + 1 = 961 tokens): 39 dropped
    assert coverage_text(plan, 2) == "seen 19.2% of the corpus · dropped tail 39 tokens"
    rnd = BatchPlan(PlanConfig(block_size=16, batch_size=4, sampling="random", seed=1), 1000)
    assert "rows at random offsets" in step_readout(rnd, 0)
    # one step of 64 random targets: 1 - exp(-64 / 1000) = 6.2% expected; no tail is dropped
    text = coverage_text(rnd, 0)
    assert text.startswith("seen ") and text.endswith("(expected for random offsets: 6.2%)")


def test_the_ranks_banner():
    from nanogpt_viz.viewmodel import drift_start, ranks_banner

    # W = 2 ranks, each its own position (DataLoaderLite): rank r starts at 4r and moves 8 a step, to the
    # next shard when position + B·N·W + 1 > 25. Step 2: rank 1 at 20 (20 + 9 > 25) moves to b, rank 0 at
    # 16 (16 + 9 = 25) stays in a; step 3: rank 0 at 24 moves too, both read b
    plan = BatchPlan(PlanConfig(block_size=4, batch_size=1, world_size=2), [("a", 25), ("b", 25)])
    first = drift_start(plan)
    assert first[:2] == (2, 29)
    assert ranks_banner(plan, 1, first) == ("Ranks in step at step 1: all read a (they first read different "
                                            "shards at step 2)", False)
    assert ranks_banner(plan, 2, first) == ("Ranks out of step at step 2: rank 1 moved to b at step 2; rank 0 "
                                            "is still in a", True)
    assert ranks_banner(plan, 3, first) == ("Ranks in step at step 3: all read b (they first drifted at step 2)",
                                            False)
    one = BatchPlan(PlanConfig(block_size=16, batch_size=2), [("a", 100), ("b", 100)])
    assert drift_start(one) is None and ranks_banner(one, 0, None) == ("", False)
