"""The KV cache: one buffer per layer and kind, shared by past and present, and the row lengths.

    buffers   per layer, key and value: (slots, kv_heads, capacity, head_size) on the session's device
    lengths   (slots,) tokens each row holds; row r's keys sit at positions 0 .. lengths[r] - 1

The graph's attention operator writes each call's new keys and values into the buffer it reads
(past and present are bound to the same memory), so nothing is copied per step and a step
costs nearly the same at any context length. Rows are slots: each has its own length, can be
prefilled, extended, rewound (`trim`) or emptied (`clear`) on its own, which is what a server that
adds and removes requests while a batch runs needs. Capacity grows in chunks when a row would
outgrow it (one copy per chunk, not per token). Positions come from the lengths here and
nowhere else.
"""

from __future__ import annotations

import mmap

import numpy as np

from edgelm.runtime.kv_layout import KVLayout
from edgelm.runtime.session import DEVICES, Device

_DTYPES = {"float32": np.float32, "float16": np.float16, "int8": np.int8}
CHUNK = 256  # capacity grows by whole chunks


class KVCache:
    def __init__(self, layout: KVLayout, slots: int, max_positions: int, capacity: int = CHUNK,
                 device: Device = DEVICES["cpu"]):
        if slots < 1:
            raise ValueError(f"a KV cache needs at least one slot, got {slots}")
        self.layout = layout
        self.slots = slots
        self.max_positions = max_positions  # the model's position table: no token is placed past it
        self.device = device
        self.dtype = _DTYPES[layout.dtype]
        self.lengths = np.zeros(slots, dtype=np.int64)  # (slots,)
        self.capacity = 0
        self.buffers: dict[str, object] = {}  # past input name -> numpy array (CPU) or OrtValue (device)
        self.generation = 0  # bumped whenever buffers are reallocated (bindings must be rebuilt)
        self.bindings: dict[object, tuple[int, object]] = {}  # (start, stop) or "step" -> (generation, binding)
        # LongRoPE (layout.rope_switch): each row's ids, to run again when the row crosses the switch
        self.switch = layout.rope_switch
        self.tokens: list[list[int]] | None = [[] for _ in range(slots)] if self.switch else None
        self.stale: set[int] = set()  # rows cut back under the switch, their keys rotated for long contexts
        self.reserve(capacity)

    # -- memory ----------------------------------------------------------------------------
    def reserve(self, tokens: int) -> None:
        """Make room for every row to hold TOKENS tokens, plus the one scratch position a finished
        row writes into while the others decode."""
        needed = tokens + 1
        if needed <= self.capacity:
            return
        capacity = -(-needed // CHUNK) * CHUNK
        shape = self.layout.buffer_shape(self.slots, capacity)
        old, self.buffers = self.buffers, {}
        held = [(row, int(n)) for row, n in enumerate(self.lengths) if n]
        for pair in self.layout.past_names():
            for name in pair:
                fresh = _lazy_zeros(shape, self.dtype)  # (slots, kv_heads, capacity, head)
                if name in old:
                    previous = self._host(old[name])
                    for row, n in held:  # only the positions rows hold: a wide batch's empty tails stay untouched
                        fresh[row, :, :n] = previous[row, :, :n]
                self.buffers[name] = self._place(fresh)
        self.capacity = capacity
        self.generation += 1

    # -- binding ---------------------------------------------------------------------------
    def bind(self, binding, start: int, stop: int) -> None:
        """Bind rows START..STOP-1 of every buffer as both past input and present output."""
        shape = list(self.layout.buffer_shape(stop - start, self.capacity))
        row_bytes = self.layout.num_kv_heads * self.capacity * self.layout.head_size * np.dtype(self.dtype).itemsize
        for (pk, pv), (ok, ov) in zip(self.layout.past_names(), self.layout.present_names()):
            for past, present in ((pk, ok), (pv, ov)):
                pointer = self._pointer(self.buffers[past]) + start * row_bytes
                binding.bind_input(past, self.device.type, self.device.id, self.dtype, shape, pointer)
                binding.bind_output(present, self.device.type, self.device.id, self.dtype, shape, pointer)

    def starts(self, start: int, stop: int, live: np.ndarray | None = None) -> np.ndarray:
        """(rows,) position where each of rows START..STOP-1 takes its next tokens.

        A row that is not LIVE is fed a filler token that must not disturb it: it goes to the
        scratch position just past the row's tokens (clipped to the model's last position, which
        only a row that filled the whole context occupies; such a row can never be extended).
        """
        starts = self.lengths[start:stop].copy()
        if live is not None:
            starts[~live] = np.minimum(starts[~live], self.max_positions - 1)
        return starts

    @staticmethod
    def positions(starts: np.ndarray, new: int) -> np.ndarray:
        """(rows, NEW) positions of NEW tokens placed from STARTS on."""
        return starts[:, None] + np.arange(new, dtype=np.int64)[None, :]

    # -- rows ------------------------------------------------------------------------------
    def advance(self, rows: np.ndarray | slice, new: int, ids: np.ndarray | None = None) -> None:
        """Rows ROWS now hold NEW more tokens (their keys were written by the call just run); IDS (rows, NEW)."""
        self.lengths[rows] += new
        if self.tokens is not None and ids is not None:
            for row, row_ids in zip(np.arange(self.slots)[rows], ids):
                self.tokens[row].extend(int(t) for t in row_ids)

    def trim(self, row: int, keep: int) -> None:
        """Keep only the first KEEP tokens of ROW (a rewind): the rest is overwritten later."""
        if not 0 <= keep <= self.lengths[row]:
            raise ValueError(f"cannot keep {keep} tokens of a row holding {self.lengths[row]}")
        if self.tokens is not None:
            if self.lengths[row] > self.switch >= keep:
                self.stale.add(row)
            del self.tokens[row][keep:]
        self.lengths[row] = keep

    @property
    def can_copy(self) -> bool:
        """Whether rows can be copied into each other here (host buffers; a device's would need a device copy)."""
        return self.device.type == "cpu"

    def copy_prefix(self, source: int, row: int, n: int) -> None:
        """Make ROW hold SOURCE's first N tokens: their keys and values are copied, not computed again."""
        if not 0 < n <= self.lengths[source] or row == source:
            raise ValueError(f"cannot copy {n} tokens of a row holding {self.lengths[source]} into row {row}")
        for pair in self.layout.past_names():
            for name in pair:
                buffer = self.buffers[name]  # (slots, kv_heads, capacity, head_size)
                buffer[row, :, :n] = buffer[source, :, :n]
        self.lengths[row] = n
        if self.tokens is not None:
            self.tokens[row] = self.tokens[source][:n]
            self.stale.discard(row)
            if source in self.stale or self.lengths[source] > self.switch >= n:
                self.stale.add(row)  # keys rotated for long contexts, under the switch: run again before growing

    def read_prefix(self, row: int, n: int) -> dict[str, np.ndarray]:
        """Copies of ROW's first N positions: past input name -> (kv_heads, n, head_size)."""
        return {name: self.buffers[name][row, :, :n].copy() for pair in self.layout.past_names() for name in pair}

    def write_prefix(self, row: int, keys: dict[str, np.ndarray], tokens: list[int], rotated_long: bool = False) -> None:
        """Make ROW hold TOKENS with these KEYS (read_prefix's, at least len(TOKENS) positions long)."""
        n = len(tokens)
        self.reserve(n)
        for name, array in keys.items():
            self.buffers[name][row, :, :n] = array[:, :n]
        self.lengths[row] = n
        if self.tokens is not None:
            self.tokens[row] = list(tokens)
            self.stale.discard(row)
            if rotated_long and n <= self.switch:
                self.stale.add(row)

    def rotated_long(self, row: int) -> bool:
        """LongRoPE: ROW's keys were computed past the switch (rotated for long contexts)."""
        return self.tokens is not None and (row in self.stale or int(self.lengths[row]) > self.switch)

    def clear(self, row: int) -> None:
        """Empty ROW so that a new sequence can use its slot."""
        self.lengths[row] = 0
        if self.tokens is not None:
            self.tokens[row] = []
            self.stale.discard(row)

    def must_rerun(self, row: int, new: int) -> bool:
        """LongRoPE: whether ROW's whole sequence must run again before NEW more tokens (it crosses the
        switch, or was cut back under it); always False without a switch."""
        if self.tokens is None:
            return False
        held = int(self.lengths[row])
        return row in self.stale or held <= self.switch < held + new

    # -- device helpers ----------------------------------------------------------------------
    def _place(self, array: np.ndarray):
        if self.device.type == "cpu":
            return array
        import onnxruntime as ort

        return ort.OrtValue.ortvalue_from_numpy(array, self.device.type, self.device.id)

    def _host(self, buffer) -> np.ndarray:
        return buffer if isinstance(buffer, np.ndarray) else buffer.numpy()

    @staticmethod
    def _pointer(buffer) -> int:
        return buffer.ctypes.data if isinstance(buffer, np.ndarray) else buffer.data_ptr()


def _lazy_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """Zeros whose pages the OS maps only when touched: an anonymous mmap. np.zeros gets them from calloc, which
    after a large free (glibc raises its mmap threshold) may take heap memory and write every byte: a 16-slot
    cache growing past 1,000 tokens then spent ~0.5-1 s zeroing ~1 GB it mostly never uses."""
    count = int(np.prod(shape))
    memory = mmap.mmap(-1, max(count * np.dtype(dtype).itemsize, 1))
    if hasattr(mmap, "MADV_HUGEPAGE"):  # as numpy asks for its large arrays: fewer TLB misses when attention reads keys
        memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype=dtype, count=count).reshape(shape)
