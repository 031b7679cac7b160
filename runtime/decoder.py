"""One forward step of a decoder bundle over a KVCache, with I/O binding.

    host ints (input_ids, attention_mask, position_ids) ─┐
    past OrtValues (on the session's device)            ─┼─> session ─┬─> logits (copied to host)
                                                          │             └─> presents (stay on device) ─> cache
The presents are bound as device outputs and become the next step's past without a copy, so on
CUDA the cache never crosses the bus and on the CPU it never passes through numpy.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgelm.runtime.kv_cache import KVCache
from edgelm.runtime.manifest import Manifest
from edgelm.runtime.session import DEVICES, Device


class DecoderGraph:
    """A decoder session read through its manifest: names come from the KV layout, never guessed."""

    def __init__(self, session: ort.InferenceSession, manifest: Manifest, device: Device = DEVICES["cpu"]):
        self.session = session
        self.manifest = manifest
        self.device = device
        self.layout = manifest.kv_cache
        self.uses_position_ids = "position_ids" in manifest.input_names()
        self._presents = [n for pair in self.layout.present_names() for n in pair]
        logits_shape = next(t.shape for t in manifest.outputs if t.name == "logits")
        self.vocab_size = logits_shape[-1] if isinstance(logits_shape[-1], int) else None

    def new_cache(self, batch: int) -> KVCache:
        return KVCache(self.layout, batch, self.uses_position_ids, self.device)

    def forward(self, cache: KVCache, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Run INPUT_IDS (batch, seq) after the cache's past; returns logits (batch, seq, vocab) on the host."""
        host = cache.host_inputs(input_ids, attention_mask)
        binding = self.session.io_binding()
        for name, array in host.items():
            binding.bind_cpu_input(name, array)
        for name, value in cache.past.items():
            binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._presents:
            binding.bind_output(name, self.device.type, self.device.id)
        self.session.run_with_iobinding(binding)
        logits, *presents = binding.get_outputs()
        cache.update(host["attention_mask"], dict(zip(self._presents, presents)))
        return logits.numpy()  # (batch, seq, vocab)


def greedy_continuation(graph: DecoderGraph, prompt_ids: list[int], max_new_tokens: int,
                        stop_ids: tuple[int, ...] = ()) -> list[int]:
    """Argmax tokens after PROMPT_IDS: prefill once, then one token per step.

    Stops after MAX_NEW_TOKENS or after emitting any of STOP_IDS (which is included). Export's
    verification uses it; applications use `Generator`, which adds sampling, batching and stops.
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
