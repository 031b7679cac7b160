"""Choosing the next token: pure numpy functions over logits (batch, vocab).

make_sampler(temperature, top_k, top_p, seed) returns a function logits -> ids. Temperature 0
means argmax. The order of warpers follows transformers' generate: repetition penalty, then
temperature, then top-k, then top-p (the smallest set whose probability reaches top_p, never
empty), then one draw per row from a seeded generator, so a seed reproduces a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from dataclasses import dataclass

import numpy as np

from edgelm.errors import GenerationError

Sampler = Callable[[np.ndarray], np.ndarray]


def check_sampling(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> None:
    """Raise GenerationError listing every sampling value out of range (NaN, infinity and bools included)."""
    problems = []
    if not _finite(temperature) or temperature < 0:
        problems.append(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not _whole(top_k) or top_k < 0:
        problems.append(f"top_k must be a whole number >= 0 (0 = off), got {top_k!r}")
    if not _finite(top_p) or not 0 < top_p <= 1:
        problems.append(f"top_p must be a number in (0, 1], got {top_p!r}")
    if not _finite(repetition_penalty) or repetition_penalty <= 0:
        problems.append(f"repetition_penalty must be a finite number > 0 (1 = off), got {repetition_penalty!r}")
    if problems:
        raise GenerationError(*problems)


def _whole(x) -> bool:
    """An int that is not a bool (True would silently mean 1)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _finite(x) -> bool:
    """A real number, not a bool, not NaN or infinite (an int too large for a float counts as infinite)."""
    if not (_whole(x) or isinstance(x, (float, np.floating))):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int beyond float64's range, which np.isfinite cannot even take
        return False


def make_sampler(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Sampler:
    """A function (batch, vocab) logits -> (batch,) token ids."""
    check_sampling(temperature, top_k, top_p, 1.0)
    if temperature == 0:
        return lambda logits: np.argmax(logits, axis=-1)
    rng = np.random.default_rng(seed)

    def sample(logits: np.ndarray) -> np.ndarray:
        scores = logits.astype(np.float64)  # (batch, vocab); top-k before scaling keeps the same set, exactly
        if top_k:
            kth = -np.sort(-scores, axis=-1)[:, min(top_k, scores.shape[-1]) - 1:][:, :1]  # (batch, 1)
            scores = np.where(scores < kth, -np.inf, scores)
        probs = _softmax(scores, temperature)
        if top_p < 1.0:
            order = np.argsort(-scores, axis=-1, kind="stable")  # by score: near-equal probabilities may round equal
            sorted_probs = np.take_along_axis(probs, order, axis=-1)
            before = np.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass above each token
            drop = np.zeros_like(probs, dtype=bool)
            np.put_along_axis(drop, order, before >= top_p, axis=-1)  # first token always kept
            probs = np.where(drop, 0.0, probs)
            probs /= probs.sum(axis=-1, keepdims=True)
        draws = rng.random((probs.shape[0], 1))
        return np.minimum((np.cumsum(probs, axis=-1) < draws).sum(axis=-1), probs.shape[-1] - 1)

    return sample


MAX_TOP_LOGPROBS = 20  # OpenAI's limit on alternatives per token


@dataclass(frozen=True)
class TokenLogprob:
    """A chosen token's log probability under the model, and the most likely tokens at that step."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token, logprob) of the TOP most likely, best first


def check_logprobs(alternatives) -> None:
    """None (off) or a whole number of alternatives in 0..MAX_TOP_LOGPROBS, else a GenerationError naming it."""
    if alternatives is not None and (not isinstance(alternatives, int) or isinstance(alternatives, bool)
                                     or not 0 <= alternatives <= MAX_TOP_LOGPROBS):
        raise GenerationError(f"logprobs must be a whole number of alternatives in 0..{MAX_TOP_LOGPROBS}, got {alternatives!r}")


def token_logprob(logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    """TOKEN's log probability in LOGITS (vocab,): the model's own distribution, before temperature, penalty or a
    schema's mask (as vLLM reports by default), with the TOP most likely tokens."""
    shifted = logits.astype(np.float64) - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())  # (vocab,)
    best = ()
    if top:
        ids = np.argpartition(-logprobs, top - 1)[:top]
        ids = ids[np.argsort(-logprobs[ids], kind="stable")]
        best = tuple((int(i), float(logprobs[i])) for i in ids)
    return TokenLogprob(int(token), float(logprobs[token]), best)


def apply_repetition_penalty(logits: np.ndarray, seen: list[list[int]], penalty: float) -> np.ndarray:
    """CTRL's penalty as transformers applies it: seen tokens' positive logits / penalty, negative * penalty."""
    if penalty == 1.0:
        return logits
    out = logits.copy()
    for row, ids in enumerate(seen):
        if ids:
            idx = np.unique(np.asarray(ids))
            vals = out[row, idx]
            with np.errstate(over="ignore", divide="ignore"):  # an extreme penalty gives +-inf, which sampling handles
                out[row, idx] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def _softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax of SCORES / TEMPERATURE, never NaN: the best score maps to 0 before scaling, so a tiny
    temperature sends the others to -inf (not inf - inf), and infinite scores (an extreme repetition
    penalty) share the mass among themselves."""
    top = scores.max(axis=-1, keepdims=True)  # (batch, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = np.where(scores == top, 0.0, (scores - top) / temperature)  # (batch, vocab), <= 0
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)
