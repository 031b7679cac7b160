"""A quick speed comparison of two bundles on this machine, for the quantize summary.

Not a benchmark (scripts/bench_runtime.py is): a few runs, the better one kept, enough to show
whether quantization paid off here. Decoders: greedy decode tokens/s after a short prompt;
encoders: texts/s over the evaluation texts.
"""

from __future__ import annotations

import time
from typing import Any

from edgelm.runtime.generator import Generator

DECODE_TOKENS = 24
RUNS = 2


def timed_decode(lm: Any, ids: list[int], tokens: int) -> tuple[float, float, list[int]]:
    """(seconds to the first token, decode tokens/s after it, the tokens) for exactly TOKENS greedy
    tokens after IDS: eos is ignored, so every run does the same work."""
    gen = Generator(lm.graph, lm.params(max_new_tokens=tokens), lm.manifest.max_context)  # no eos
    start = time.perf_counter()
    gen.append_tokens(ids)
    gen.generate_next_token()
    first = time.perf_counter()
    while not gen.is_done():
        gen.generate_next_token()
    return first - start, (tokens - 1) / (time.perf_counter() - first), gen.get_new_tokens(0)


def decode_tokens_per_second(lm: Any) -> float:
    ids = lm.encode("Write a short story about a robot who learns to paint.")
    timed_decode(lm, ids, DECODE_TOKENS)  # warm up
    return max(timed_decode(lm, ids, DECODE_TOKENS)[1] for _ in range(RUNS))


def texts_per_second(encoder: Any, texts: list[str]) -> float:
    run = encoder.embed if encoder.task == "feature-extraction" else encoder.logits
    run(texts[:8])
    best = 0.0
    for _ in range(RUNS):
        start = time.perf_counter()
        run(texts)
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best


def measure(front_end: Any, texts: list[str]) -> dict[str, float]:
    if front_end.manifest.is_decoder:
        return {"decode_tokens_per_second": decode_tokens_per_second(front_end)}
    return {"texts_per_second": texts_per_second(front_end, texts)}
