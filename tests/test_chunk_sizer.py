"""The chunk sizer's cost model and chunk choice, on made-up measurements (the generator tests run it for real)."""
import pytest

from edgelm.runtime import chunk_sizer
from edgelm.runtime.chunk_sizer import GAP_TARGET, MAX_CHUNK, MIN_CHUNK, ChunkSizer

A, B = 1e-3, 4e-7  # seconds per token, and per key-query pair: a 32-token chunk at depth 1,700 costs ~1.7x depth 0's


def cost(tokens: int, depth: int) -> float:
    return tokens * (A + B * (depth + tokens / 2))


def measured(chunks) -> ChunkSizer:
    sizer = ChunkSizer()
    for _ in range(5):
        sizer.stepped(0.020, prompt_waiting=False)
    for tokens, depth in chunks:
        sizer.prefilled(tokens, depth, cost(tokens, depth))
    return sizer


def test_the_cost_model_recovers_per_token_and_per_depth_costs():
    a, b = measured([(40, d) for d in range(0, 1600, 40)]).cost()
    assert a == pytest.approx(A, rel=1e-6) and b == pytest.approx(B, rel=1e-6)


@pytest.mark.parametrize("depth", [0, 500, 1700])
def test_a_step_plus_a_chunk_stays_within_the_gap_target(depth):
    sizer = measured([(k, d) for k in (32, 48, 64) for d in (0, 600, 1200)])
    tokens = sizer.tokens(depth)
    budget = GAP_TARGET * 0.020 - 0.020
    assert MIN_CHUNK <= tokens <= MAX_CHUNK
    assert cost(tokens, depth) <= budget * 1.001 < cost(tokens + 2, depth)  # the largest chunk that fits


def test_chunks_shrink_as_the_prompt_deepens():
    sizer = measured([(k, d) for k in (32, 64) for d in (0, 800)])
    assert sizer.tokens(0) > sizer.tokens(800) > sizer.tokens(1700)


def test_prefill_at_one_depth_gives_one_rate():
    """Whole prompts prefilled from an empty row say nothing of depth beyond their own length: no negative cost."""
    sizer = ChunkSizer()
    sizer.stepped(0.02, prompt_waiting=False)
    for tokens, seconds in [(30, 0.031), (31, 0.030), (29, 0.030)]:
        sizer.prefilled(tokens, 0, seconds)
    a, b = sizer.cost()
    assert a > 0 and b >= 0
    assert MIN_CHUNK <= sizer.tokens(1000) <= MAX_CHUNK


def test_before_any_measurement_a_chunk_is_small(monkeypatch):
    assert ChunkSizer().tokens(0) == 2 * MIN_CHUNK
    sizer = measured([(32, 0)])
    sizer.stepped(1.0, prompt_waiting=True)  # a step while prefilling took longer than the whole budget
    assert sizer.tokens(0) == MIN_CHUNK
    monkeypatch.setattr(chunk_sizer, "MAX_CHUNK", 100)
    fast = ChunkSizer()
    fast.stepped(0.020, prompt_waiting=False)
    fast.prefilled(1000, 0, 1e-4)
    assert fast.tokens(0) == 100
