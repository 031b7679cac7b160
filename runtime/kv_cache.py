"""The KV cache: one small class that owns the past and all position state.

It stores the graph's `present` outputs, and builds the next feed from them: past inputs,
an attention mask covering past + new tokens, and position ids counted from the mask (so
left-padded rows get positions 0, 1, 2... from their first real token). Nowhere else computes
positions. `trim` drops the newest tokens, which makes rewinding a generator trivial.
"""

from __future__ import annotations

import numpy as np

from edgelm.runtime.kv_layout import KVLayout

_DTYPES = {"float32": np.float32, "float16": np.float16}


class KVCache:
    def __init__(self, layout: KVLayout, batch: int, uses_position_ids: bool = True):
        self.layout = layout
        self.batch = batch
        self.uses_position_ids = uses_position_ids
        dtype = _DTYPES[layout.dtype]
        empty = np.zeros(layout.empty_shape(batch), dtype=dtype)  # (batch, kv_heads, 0, head)
        self._past = {name: empty for pair in layout.past_names() for name in pair}
        self.mask = np.zeros((batch, 0), dtype=np.int64)  # (batch, offset)

    @property
    def offset(self) -> int:
        """Tokens held so far (padding included)."""
        return self.mask.shape[1]

    def feed(self, input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Graph inputs for INPUT_IDS (batch, seq) appended after the cached past."""
        if attention_mask is None:
            attention_mask = np.ones_like(input_ids, dtype=np.int64)
        full_mask = np.concatenate([self.mask, attention_mask.astype(np.int64)], axis=1)  # (batch, past+seq)
        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": full_mask, **self._past}
        if self.uses_position_ids:
            positions = np.clip(np.cumsum(full_mask, axis=1) - 1, 0, None)  # (batch, past+seq)
            feed["position_ids"] = positions[:, -input_ids.shape[1]:]
        return feed

    def update(self, feed: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
        """Keep the presents of a step whose inputs were FEED as the next past."""
        for (pk, pv), (ok, ov) in zip(self.layout.past_names(), self.layout.present_names()):
            self._past[pk], self._past[pv] = outputs[ok], outputs[ov]
        self.mask = feed["attention_mask"]

    def trim(self, n: int) -> None:
        """Forget the newest N tokens."""
        if not 0 <= n <= self.offset:
            raise ValueError(f"cannot trim {n} tokens from a cache holding {self.offset}")
        keep = self.offset - n
        self._past = {k: v[:, :, :keep, :] for k, v in self._past.items()}
        self.mask = self.mask[:, :keep]
