"""Feeds that run a fused decoder graph on one prompt from an empty cache, for calibration passes.

Quantize's calibration (SmoothQuant's activation ranges) runs the float graph in
a plain onnxruntime session rather than through the runtime, because it reads tensors inside the
graph. The names and shapes come from the KV layout, as the runtime's do:

    input_ids (1, n)   sequence_lengths [n]   logits_to_keep [1]   [position_ids (1, n)]
    past_key_values.*  zeros (1, kv_heads, n + 1, head_size)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgelm.runtime.kv_layout import INPUT_IDS, LOGITS_TO_KEEP, POSITION_IDS, SEQUENCE_LENGTHS, KVLayout


def prompt_feeds(layout: KVLayout, ids: list[int], input_names: set[str]) -> dict[str, np.ndarray]:
    """The graph's inputs for IDS as one prompt (INPUT_NAMES tells whether it takes position ids)."""
    n = len(ids)
    feeds = {INPUT_IDS: np.asarray([ids], np.int64), SEQUENCE_LENGTHS: np.asarray([n], np.int32),
             LOGITS_TO_KEEP: np.ones(1, np.int64)}
    if POSITION_IDS in input_names:
        feeds[POSITION_IDS] = np.arange(n, dtype=np.int64)[None]
    for pair in layout.past_names():
        for name in pair:
            feeds[name] = np.zeros(layout.buffer_shape(1, n + 1), np.float32)
    return feeds


@dataclass(frozen=True)
class CalibrationPrompts:
    """Calibration texts as token ids, one prompt each, and the KV layout to feed them with."""

    layout: KVLayout
    texts: tuple[tuple[int, ...], ...]
