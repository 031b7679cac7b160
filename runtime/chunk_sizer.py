"""How many prompt tokens to prefill between two decode steps (chunked prefill in an open batch).

While rows decode, a new row's prompt runs in chunks between their steps, so a running row waits about GAP_TARGET
steady steps for its next token instead of the whole prompt's prefill. Each chunk is sized from what the batch
measures as it runs: its steady step (no prompt waiting), its step while a prompt prefills, and what prefill chunks
cost. A chunk's cost grows with its depth (its queries score every key before them): on 2 cores a 32-token chunk
costs twice as much at depth 1,700 as at depth 100, so one tokens-per-second figure overshoots late in a long prompt
and undershoots early. The cost model is seconds = tokens x (a + b x (depth + tokens / 2)), fitted by least squares
on the most recent chunks. A larger GAP_TARGET gives the new prompt its first token sooner (fewer, larger chunks);
docs/benchmarks.md, "Serving".
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

GAP_TARGET = 4.0
MIN_CHUNK, MAX_CHUNK = 32, 512
WINDOW = 32  # prefill measurements the cost model is fitted on (the most recent)


class ChunkSizer:
    def __init__(self):
        self.step_seconds: float | None = None  # any decode step, a moving average
        self.steady_seconds: float | None = None  # a decode step while no prompt waits
        self._chunks: deque[tuple[int, int, float]] = deque(maxlen=WINDOW)  # (tokens, depth, seconds)

    def stepped(self, seconds: float, prompt_waiting: bool) -> None:
        """A decode step took SECONDS (PROMPT_WAITING: a queued prompt was being prefilled between steps)."""
        self.step_seconds = _average(self.step_seconds, seconds)
        if not prompt_waiting:
            self.steady_seconds = _average(self.steady_seconds, seconds)

    def prefilled(self, tokens: int, depth: int, seconds: float) -> None:
        """TOKENS of a prompt ran after DEPTH tokens already in its row, in SECONDS."""
        if tokens > 0:
            self._chunks.append((tokens, depth, max(seconds, 1e-6)))

    def cost(self) -> tuple[float, float]:
        """(a, b) of seconds = tokens x (a + b x (depth + tokens / 2)), both >= 0, from the recent chunks."""
        k = np.array([c[0] for c in self._chunks], dtype=np.float64)
        d = np.array([c[1] for c in self._chunks], dtype=np.float64)
        t = np.array([c[2] for c in self._chunks], dtype=np.float64)
        x = k * (d + k / 2)  # key-query pairs scored, the part that grows with depth
        (a, b), *_ = np.linalg.lstsq(np.stack([k, x], axis=1), t, rcond=None)
        if b < 0 or not math.isfinite(b):  # depth explains nothing here: one rate
            return float((t @ k) / (k @ k)), 0.0
        if a < 0:
            return 0.0, float((t @ x) / (x @ x))
        return float(a), float(b)

    def tokens(self, depth: int) -> int:
        """Prompt tokens for the next chunk of a row that holds DEPTH tokens, so that a step plus the chunk takes
        about GAP_TARGET steady steps."""
        if self.steady_seconds is None or not self._chunks:
            return min(2 * MIN_CHUNK, MAX_CHUNK)  # nothing measured yet
        budget = GAP_TARGET * self.steady_seconds - (self.step_seconds or self.steady_seconds)
        a, b = self.cost()
        rate = a + b * depth  # seconds per token at this depth, before the chunk's own growth
        if budget <= 0 or rate <= 0 and b <= 0:
            return MIN_CHUNK if budget <= 0 else MAX_CHUNK
        # tokens x (rate + b x tokens / 2) = budget
        tokens = budget / rate if b == 0 else (math.sqrt(rate * rate + 2 * b * budget) - rate) / b
        return int(min(max(tokens, MIN_CHUNK), MAX_CHUNK))


def _average(old: float | None, new: float) -> float:
    """An exponential moving average (recent measurements weigh 30%)."""
    return new if old is None else 0.7 * old + 0.3 * new
