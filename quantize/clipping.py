"""Per-block range clipping before 4-bit rounding: each block's range shrunk to the one that rounds it best.

onnxruntime's MatMulNBits quantizer (RTN) maps each block's whole [min, max] onto the 16 levels, so one
outlier weight widens every step of its block. A narrower range loses that outlier but rounds the other
31 weights more finely; llama.cpp's k-quants search their scales the same way (make_qkx2_quants). The search
here tries shrink factors of the range per block and keeps the one with the least squared error.

Why clip the float weights instead of writing the blocks ourselves: onnxruntime's quantizer then packs
exactly the searched range (its RTN derives the scale and zero point from the block's min and max, with 0
inside the range, as the search does), and every bundle stays what onnxruntime's own tool writes.
"""

from __future__ import annotations

import numpy as np

from edgelm.quantize.weight_matmuls import weight_matmuls

SHRINK = np.linspace(1.0, 0.6, 17)  # candidate fractions of each block's range


def as_blocks(weight: np.ndarray, block: int) -> np.ndarray:
    """WEIGHT (K, N) as (K / BLOCK, BLOCK, N) float32, K padded with zeros to a whole block."""
    k, n = weight.shape
    return np.pad(weight.astype(np.float32), ((0, -k % block), (0, 0))).reshape(-1, block, n)


def from_blocks(blocks: np.ndarray, k: int) -> np.ndarray:
    """The inverse of `as_blocks`: the first K rows."""
    return blocks.reshape(-1, blocks.shape[-1])[:k]


def scale_and_zero(low: np.ndarray, high: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The step and integer zero point that onnxruntime's MatMulNBits quantizer (RTN) derives from a block's range
    [LOW, HIGH] (0 inside it): scale = range / (2^bits - 1), zero point = round(-low / scale)."""
    levels = 2 ** bits - 1
    scale = (high - low) / levels
    scale[scale == 0] = 1.0
    return scale, np.clip(np.round(-low / scale), 0, levels)


def rounded(blocks: np.ndarray, low: np.ndarray, high: np.ndarray, bits: int) -> np.ndarray:
    """BLOCKS rounded to BITS with each block's range [LOW, HIGH] (0 inside it), dequantized."""
    scale, zero = scale_and_zero(low, high, bits)
    return (np.clip(np.round(blocks / scale + zero), 0, 2 ** bits - 1) - zero) * scale


def ranges(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each block's (min, max) widened to include 0, as onnxruntime takes them."""
    return np.minimum(blocks.min(1, keepdims=True), 0), np.maximum(blocks.max(1, keepdims=True), 0)


def searched_ranges(blocks: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Each block's range (low, high), shrunk by the factor of SHRINK that rounds it with the least squared error."""
    low, high = ranges(blocks)
    best_error = np.full(low.shape, np.inf, np.float32)
    best = np.ones(low.shape, np.float32)
    for f in SHRINK:
        error = ((rounded(blocks, low * f, high * f, bits) - blocks) ** 2).sum(1, keepdims=True)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best = np.where(better, f, best)
    return low * best, high * best


def clip_blocks(weight: np.ndarray, bits: int, block: int) -> np.ndarray:
    """WEIGHT (K, N) with each K-block of each column clamped to its best range for BITS-bit rounding."""
    w = as_blocks(weight, block)  # padded rows are zeros: they add no error
    return from_blocks(np.clip(w, *searched_ranges(w, bits)), weight.shape[0]).astype(weight.dtype)


def clip_matmuls(model, bits: int, block: int, exclude: list[str], progress=None) -> int:
    """Clip the weight of every float MatMul of MODEL not in EXCLUDE (in place); returns how many."""
    from onnx import numpy_helper

    weights = [w for n, w in weight_matmuls(model) if n.name not in exclude]
    for done, weight in enumerate({w.name: w for w in weights}.values(), 1):  # a weight two MatMuls read, once
        clipped = clip_blocks(numpy_helper.to_array(weight), bits, block)
        weight.CopyFrom(numpy_helper.from_array(clipped, weight.name))
        if progress is not None:
            progress(f"clipped {done}/{len(weights)}")
    return len(weights)
