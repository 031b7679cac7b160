"""One call of a decoder bundle's graph over a KVCache, with I/O binding.

    host ints (input_ids, [position_ids], sequence_lengths, logits_to_keep) ─┐
    KV buffers of the rows run (past = present, same memory, on the device)  ─┼─> session ─> logits (host)
The graph appends the new tokens' keys and values to the buffers in place; the cache then
advances the rows' lengths. Two shapes of call:

    extend(cache, row, ids)   one row, any number of tokens (a prompt, a second turn, a re-fed token)
    step(cache, ids, live)    every row, one token each (a decode step); rows not LIVE write into
                              their scratch position and keep their length, so they stay as they were
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgelm.runtime.kv_cache import KVCache
from edgelm.runtime.kv_layout import INPUT_IDS, LOGITS, LOGITS_TO_KEEP, POSITION_IDS, SEQUENCE_LENGTHS
from edgelm.runtime.manifest import Manifest
from edgelm.runtime.session import DEVICES, Device, run_graph


PREFILL_CHUNK = 256  # tokens per call when a prompt is long (512 is no faster; a smaller chunk bounds scratch memory)


class DecoderGraph:
    """A decoder session read through its manifest: names come from the KV layout, never guessed."""

    prefill_chunk = PREFILL_CHUNK

    def __init__(self, session: ort.InferenceSession, manifest: Manifest, device: Device = DEVICES["cpu"]):
        self.session = session
        self.manifest = manifest
        self.device = device
        self.layout = manifest.kv_cache
        self.uses_position_ids = POSITION_IDS in manifest.input_names()
        self.vocab_size = int(next(t.shape for t in manifest.outputs if t.name == LOGITS)[-1])

    def new_cache(self, slots: int, capacity: int = 0) -> KVCache:
        """A cache of SLOTS rows with room for CAPACITY tokens each (it grows when needed)."""
        return KVCache(self.layout, slots, self.manifest.max_context, capacity, self.device)

    def extend(self, cache: KVCache, row: int, ids: np.ndarray | list[int], keep: int = 1) -> np.ndarray:
        """Append IDS (n,) to ROW; returns logits (KEEP, vocab) of its last KEEP positions (0 = all n).

        A long prompt runs in chunks of PREFILL_CHUNK tokens: the attention operator computes a
        chunk's scores against everything before it, so chunks halve the work of one square
        (n x n) pass and bound its scratch memory.
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)  # (n,)
        if cache.must_rerun(row, len(ids)):
            return self._rerun(cache, row, ids, keep)
        cache.reserve(int(cache.lengths[row]) + len(ids))
        kept = []
        for at in range(0, len(ids), self.prefill_chunk):
            chunk = ids[at:at + self.prefill_chunk][None]  # (1, c)
            after = len(ids) - at - chunk.shape[1]  # tokens after this chunk
            want = chunk.shape[1] if keep == 0 else min(max(keep - after, 0), chunk.shape[1])  # its positions asked for
            logits = self._run(cache, row, row + 1, chunk, cache.starts(row, row + 1), max(want, 1))  # (1, kept, vocab)
            cache.advance(slice(row, row + 1), chunk.shape[1], chunk)
            if want:
                kept.append(logits[0])
        return np.concatenate(kept, axis=0)

    def _rerun(self, cache: KVCache, row: int, ids: np.ndarray, keep: int) -> np.ndarray:
        """LongRoPE: run ROW's whole sequence, then IDS, from an empty row in one call, so that every key is
        rotated with the long factors (as transformers' generate does on crossing the switch)."""
        whole = np.concatenate([np.asarray(cache.tokens[row], dtype=np.int64), ids])
        cache.clear(row)
        cache.reserve(len(whole))
        want = keep or len(ids)
        logits = self._run(cache, row, row + 1, whole[None], cache.starts(row, row + 1), want)  # (1, want, vocab)
        cache.advance(slice(row, row + 1), len(whole), whole[None])
        return logits[0]

    def score(self, ids: np.ndarray | list[int]) -> np.ndarray:
        """Logits (n, vocab) at every position of IDS, run as one prompt from an empty cache (teacher forcing)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        return self.extend(self.new_cache(slots=1, capacity=len(ids)), 0, ids, keep=0)

    def step(self, cache: KVCache, ids: np.ndarray, live: np.ndarray) -> np.ndarray:
        """One token for each of the first len(IDS) rows; rows in LIVE (bool, same length) advance.

        Returns logits (len(IDS), vocab). Slots past len(IDS) do not run (an open batch's unused tail).
        """
        width = len(ids)
        rerun = [r for r in np.flatnonzero(live) if cache.must_rerun(int(r), 1)] if cache.tokens is not None else []
        if rerun:  # LongRoPE rows crossing the switch run alone; the others step
            live = live.copy()
            live[rerun] = False
            logits = self.step(cache, ids, live) if live.any() else np.zeros((width, self.vocab_size), np.float32)
            for r in rerun:
                logits[r] = self._rerun(cache, int(r), np.asarray(ids[r:r + 1], dtype=np.int64), 1)[-1]
            return logits
        cache.reserve(int(cache.lengths.max()) + 1)
        feeds = self._step_feeds(cache, width)
        starts = cache.starts(0, width, live)  # (width,)
        feeds.ids[:, 0] = ids  # written into the bound buffers: nothing is rebound per step
        feeds.lengths[:] = starts + 1
        if feeds.positions is not None:
            feeds.positions[:, 0] = starts
        run_graph(lambda: self.session.run_with_iobinding(feeds.binding))
        stepped = np.flatnonzero(live)
        cache.advance(stepped, 1, None if cache.tokens is None else np.asarray(ids, dtype=np.int64)[stepped, None])
        return feeds.logits[:, 0].copy()  # (width, vocab); the buffer is overwritten by the next step

    def _run(self, cache: KVCache, start: int, stop: int, ids: np.ndarray, starts: np.ndarray, keep: int) -> np.ndarray:
        """Place IDS (rows, n) in rows START..STOP-1 from positions STARTS (rows,); returns logits (rows, kept, vocab)."""
        rows, new = ids.shape
        binding = self._binding(cache, start, stop)
        binding.bind_cpu_input(INPUT_IDS, ids)
        if self.uses_position_ids:
            binding.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(cache.positions(starts, new)))
        binding.bind_cpu_input(SEQUENCE_LENGTHS, (starts + new).astype(np.int32))
        binding.bind_cpu_input(LOGITS_TO_KEEP, np.asarray([keep], dtype=np.int64))
        logits = np.empty((rows, min(keep, new) if keep else new, self.vocab_size), dtype=np.float32)
        binding.bind_output(LOGITS, "cpu", 0, np.float32, list(logits.shape), logits.ctypes.data)
        run_graph(lambda: self.session.run_with_iobinding(binding))
        return logits

    def _step_feeds(self, cache: KVCache, width: int) -> "StepFeeds":
        """The decode step's binding over the first WIDTH slots, with its host inputs and logits bound by pointer.

        Rebinding four small inputs and the logits every step is a visible share of a small model's step
        in Python; a step instead writes the new ids and lengths into buffers bound once.
        """
        held = cache.bindings.get(("step", width))
        if held is None or held[0] != cache.generation:
            binding = self.session.io_binding()
            cache.bind(binding, 0, width)
            feeds = StepFeeds(binding, width, self.vocab_size, self.uses_position_ids)
            held = cache.bindings[("step", width)] = (cache.generation, feeds)
        return held[1]

    def _binding(self, cache: KVCache, start: int, stop: int) -> ort.IOBinding:
        """An I/O binding with the KV buffers of rows START..STOP-1 bound, kept until the buffers move.

        Binding 2 x layers buffers costs about a millisecond in Python: a decode step reuses it and
        rebinds only the small host inputs.
        """
        held = cache.bindings.get((start, stop))
        if held is None or held[0] != cache.generation:
            binding = self.session.io_binding()
            cache.bind(binding, start, stop)
            held = cache.bindings[(start, stop)] = (cache.generation, binding)
        return held[1]


class StepFeeds:
    """Host buffers of a decode step (one token per slot), bound to BINDING once by their addresses."""

    def __init__(self, binding: ort.IOBinding, slots: int, vocab: int, with_positions: bool):
        self.binding = binding
        self.ids = np.zeros((slots, 1), dtype=np.int64)
        self.lengths = np.zeros(slots, dtype=np.int32)
        self.positions = np.zeros((slots, 1), dtype=np.int64) if with_positions else None
        self.keep = np.ones(1, dtype=np.int64)  # logits of the one new position
        self.logits = np.empty((slots, 1, vocab), dtype=np.float32)
        inputs = {INPUT_IDS: self.ids, SEQUENCE_LENGTHS: self.lengths, LOGITS_TO_KEEP: self.keep, POSITION_IDS: self.positions}
        for name, array in inputs.items():
            if array is not None:
                binding.bind_input(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
        binding.bind_output(LOGITS, "cpu", 0, np.float32, list(self.logits.shape), self.logits.ctypes.data)
