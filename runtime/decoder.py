"""One forward step of a decoder bundle over a KVCache, and the greedy loop built on it."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgelm.runtime.kv_cache import KVCache
from edgelm.runtime.manifest import Manifest


class DecoderGraph:
    """A decoder session read through its manifest: names come from the KV layout, never guessed."""

    def __init__(self, session: ort.InferenceSession, manifest: Manifest):
        self.session = session
        self.manifest = manifest
        self.layout = manifest.kv_cache
        self.uses_position_ids = "position_ids" in manifest.input_names()
        self._outputs = ["logits"] + [n for pair in self.layout.present_names() for n in pair]

    def new_cache(self, batch: int) -> KVCache:
        return KVCache(self.layout, batch, self.uses_position_ids)

    def forward(self, cache: KVCache, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Run INPUT_IDS (batch, seq) after the cache's past; returns logits (batch, seq, vocab)."""
        feed = cache.feed(input_ids, attention_mask)
        values = self.session.run(self._outputs, feed)
        cache.update(feed, dict(zip(self._outputs, values)))
        return values[0]


def greedy_continuation(graph: DecoderGraph, prompt_ids: list[int], max_new_tokens: int,
                        stop_ids: tuple[int, ...] = ()) -> list[int]:
    """Argmax tokens after PROMPT_IDS: prefill once, then one token per step.

    Stops after MAX_NEW_TOKENS or after emitting any of STOP_IDS (which is included).
    """
    cache = graph.new_cache(batch=1)
    logits = graph.forward(cache, np.asarray([prompt_ids], dtype=np.int64))  # prefill: (1, prompt, vocab)
    tokens: list[int] = []
    while len(tokens) < max_new_tokens:
        next_id = int(np.argmax(logits[0, -1]))
        tokens.append(next_id)
        if next_id in stop_ids or len(tokens) == max_new_tokens:
            break
        logits = graph.forward(cache, np.asarray([[next_id]], dtype=np.int64))  # one step: (1, 1, vocab)
    return tokens
