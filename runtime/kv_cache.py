"""The KV cache: one small class that owns the past and all position state.

It holds the graph's `present` outputs as onnxruntime OrtValues on the session's device (on
CUDA they never leave the GPU; on the CPU they are never copied into numpy), and builds the
next step's host inputs: an attention mask covering past + new tokens, and position ids counted
from the mask (so left-padded rows get positions 0, 1, 2... from their first real token).
Nowhere else computes positions. `trim` drops the newest tokens, which makes rewinding a
generator trivial (it is the one place the past goes through host memory).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgelm.runtime.kv_layout import KVLayout
from edgelm.runtime.session import DEVICES, Device

_DTYPES = {"float32": np.float32, "float16": np.float16}


class KVCache:
    def __init__(self, layout: KVLayout, batch: int, uses_position_ids: bool = True, device: Device = DEVICES["cpu"]):
        self.layout = layout
        self.batch = batch
        self.uses_position_ids = uses_position_ids
        self.device = device
        empty = np.zeros(layout.empty_shape(batch), dtype=_DTYPES[layout.dtype])  # (batch, kv_heads, 0, head)
        self.past = {name: self._on_device(empty) for pair in layout.past_names() for name in pair}
        self.mask = np.zeros((batch, 0), dtype=np.int64)  # (batch, offset)

    @property
    def offset(self) -> int:
        """Tokens held so far (padding included)."""
        return self.mask.shape[1]

    def host_inputs(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The small int64 inputs for INPUT_IDS (batch, seq) appended after the cached past."""
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids, dtype=np.int64)
        full_mask = np.concatenate([self.mask, attention_mask.astype(np.int64)], axis=1)  # (batch, past+seq)
        feed = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64), "attention_mask": full_mask}
        if self.uses_position_ids:
            positions = np.clip(np.cumsum(full_mask, axis=1) - 1, 0, None)  # (batch, past+seq)
            feed["position_ids"] = np.ascontiguousarray(positions[:, -input_ids.shape[1]:])
        return feed

    def update(self, attention_mask: np.ndarray, presents: dict[str, ort.OrtValue]) -> None:
        """Keep a step's presents (by present name) as the next past; ATTENTION_MASK is the one it was fed."""
        for (pk, pv), (ok, ov) in zip(self.layout.past_names(), self.layout.present_names()):
            self.past[pk], self.past[pv] = presents[ok], presents[ov]
        self.mask = attention_mask

    def trim(self, n: int) -> None:
        """Forget the newest N tokens."""
        if not 0 <= n <= self.offset:
            raise ValueError(f"cannot trim {n} tokens from a cache holding {self.offset}")
        if n == 0:
            return
        keep = self.offset - n
        # onnxruntime cannot slice an OrtValue in place: round-trip through host memory (rewinds are rare).
        self.past = {k: self._on_device(np.ascontiguousarray(v.numpy()[:, :, :keep, :])) for k, v in self.past.items()}
        self.mask = self.mask[:, :keep]

    def _on_device(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(array, self.device.type, self.device.id)
