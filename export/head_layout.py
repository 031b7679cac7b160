"""Where each dimension of an attention head sits in the graph, padded where GroupQueryAttention needs it.

onnxruntime's GroupQueryAttention takes head sizes that are multiples of 16 and rotary halves that
are multiples of 8 (1.32 on CPU: "head_size must be a multiple of 8", "shall be a multiple of 16",
"cos_cache dimension 1 must be <= head_size / 2 and a multiple of 8"). A checkpoint outside that
(a GPT-2 with hidden size 48 and 4 heads: head size 12; a Pythia-style model rotating 4 of 16
dimensions) gets heads padded with zero dimensions rather than another attention operator:

    model head   [ r1 (rotary / 2) | r2 (rotary / 2) | pass (size - rotary) ]
    graph head   [ r1 | 0.. | r2 | 0.. | pass | 0.. ]   halves to a multiple of 8, the head to a multiple of 16

Exact, not approximate: zeros add nothing to q.k (the softmax scale stays the model's), a zero
value dimension attends to zero and meets the output projection's zero rows, and GroupQueryAttention's
rotary pairs (j, j + half) still pair r1[j] with r2[j] (the padded pairs rotate zeros). A per-head
RMSNorm on q or k sees the zeros in its mean: its epsilon and weights are rescaled to match. The
runtime's contract does not change (the manifest's head_size is the graph's; the model's is
recorded beside it), the operator stays fused and the cache stays in place: the cost is the padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


@dataclass(frozen=True)
class HeadLayout:
    size: int  # the model's head size
    rotary: int = 0  # dimensions the model rotates (from the front of the head), 0 when none

    @property
    def half(self) -> int:
        return self.rotary // 2

    @cached_property
    def rotary_half(self) -> int:
        """The cos/sin table width the graph uses (a multiple of 8; 0 without rotary)."""
        return _round_up(self.half, 8) if self.rotary else 0

    @cached_property
    def padded(self) -> int:
        return _round_up(2 * self.rotary_half + self.size - self.rotary, 16)

    @property
    def is_padded(self) -> bool:
        return self.padded != self.size

    @cached_property
    def index(self) -> np.ndarray:
        """(padded,) the model dimension at each graph dimension of a head; -1 where it is a zero."""
        index = np.full(self.padded, -1, np.int64)
        index[:self.half] = np.arange(self.half)
        index[self.rotary_half:self.rotary_half + self.half] = np.arange(self.half, self.rotary)
        rest = self.size - self.rotary
        index[2 * self.rotary_half:2 * self.rotary_half + rest] = np.arange(self.rotary, self.size)
        return index

    def _spread(self, array: np.ndarray, heads: int, axis: int) -> np.ndarray:
        """ARRAY with its HEADS * size entries along AXIS laid out as HEADS * padded."""
        if not self.is_padded:
            return array
        moved = np.moveaxis(array, axis, -1)
        per_head = moved.reshape(*moved.shape[:-1], heads, self.size)
        padded = np.concatenate([per_head, np.zeros((*per_head.shape[:-1], 1), array.dtype)], axis=-1)[..., self.index]
        return np.ascontiguousarray(np.moveaxis(padded.reshape(*moved.shape[:-1], heads * self.padded), -1, axis))

    def columns(self, weight: np.ndarray, bias: np.ndarray | None, heads: int) -> tuple[np.ndarray, np.ndarray | None]:
        """A projection onto HEADS heads, W (in, heads * size) and its bias, laid out for the graph."""
        return self._spread(weight, heads, 1), None if bias is None else self._spread(bias, heads, 0)

    def rows(self, weight: np.ndarray, heads: int) -> np.ndarray:
        """A projection from HEADS heads, W (heads * size, out), laid out for the graph (zero rows at pads)."""
        return self._spread(weight, heads, 0)

    def norm(self, gamma: np.ndarray, epsilon: float) -> tuple[np.ndarray, float]:
        """An RMSNorm over whole heads (per head (size,) or all heads (heads * size,)) that sees the zeros:
        mean(x^2) over padded dims is size / padded of the model's, so epsilon scales by that and gamma by its root."""
        if not self.is_padded:
            return gamma, epsilon
        ratio = self.size / self.padded
        return self._spread(gamma, gamma.shape[0] // self.size, 0) * np.float32(np.sqrt(ratio)), epsilon * ratio

    def table(self, half_table: np.ndarray, fill: float) -> np.ndarray:
        """A cos or sin table (positions, rotary / 2) widened to rotary_half (cos pads with 1, sin with 0)."""
        if self.rotary_half == self.half:
            return half_table
        pad = np.full((half_table.shape[0], self.rotary_half - self.half), fill, half_table.dtype)
        return np.ascontiguousarray(np.concatenate([half_table, pad], axis=1))
