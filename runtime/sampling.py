"""Choosing the next token: pure numpy functions over logits (batch, vocab).

make_sampler(temperature, top_k, top_p, seed) returns a function logits -> ids. Temperature 0
means argmax. The order of warpers follows transformers' generate: repetition penalty, then
temperature, then top-k, then top-p (the smallest set whose probability reaches top_p, never
empty), then one draw per row from a seeded generator, so a seed reproduces a run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgelm.errors import GenerationError

Sampler = Callable[[np.ndarray], np.ndarray]


def check_sampling(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> None:
    """Raise GenerationError listing every sampling value out of range."""
    problems = []
    if not isinstance(temperature, (int, float)) or temperature < 0:
        problems.append(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_k, int) or top_k < 0:
        problems.append(f"top_k must be a whole number >= 0 (0 = off), got {top_k!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        problems.append(f"top_p must be in (0, 1], got {top_p!r}")
    if not isinstance(repetition_penalty, (int, float)) or repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be > 0 (1 = off), got {repetition_penalty!r}")
    if problems:
        raise GenerationError(*problems)


def make_sampler(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Sampler:
    """A function (batch, vocab) logits -> (batch,) token ids."""
    check_sampling(temperature, top_k, top_p, 1.0)
    if temperature == 0:
        return lambda logits: np.argmax(logits, axis=-1)
    rng = np.random.default_rng(seed)

    def sample(logits: np.ndarray) -> np.ndarray:
        scores = logits.astype(np.float64) / temperature  # (batch, vocab)
        if top_k:
            kth = -np.sort(-scores, axis=-1)[:, min(top_k, scores.shape[-1]) - 1:][:, :1]  # (batch, 1)
            scores = np.where(scores < kth, -np.inf, scores)
        probs = _softmax(scores)
        if top_p < 1.0:
            order = np.argsort(-probs, axis=-1)
            sorted_probs = np.take_along_axis(probs, order, axis=-1)
            before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass above each token
            drop = np.zeros_like(probs, dtype=bool)
            np.put_along_axis(drop, order, before >= top_p, axis=-1)  # first token always kept
            probs = np.where(drop, 0.0, probs)
            probs /= probs.sum(axis=-1, keepdims=True)
        draws = rng.random((probs.shape[0], 1))
        return np.minimum((np.cumsum(probs, axis=-1) < draws).sum(axis=-1), probs.shape[-1] - 1)

    return sample


def apply_repetition_penalty(logits: np.ndarray, seen: list[list[int]], penalty: float) -> np.ndarray:
    """CTRL's penalty as transformers applies it: seen tokens' positive logits / penalty, negative * penalty."""
    if penalty == 1.0:
        return logits
    out = logits.copy()
    for row, ids in enumerate(seen):
        if ids:
            idx = np.unique(np.asarray(ids))
            vals = out[row, idx]
            out[row, idx] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
