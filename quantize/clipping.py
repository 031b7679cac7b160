"""Per-block range clipping before 4-bit rounding: each block's range shrunk to the one that rounds it best.

onnxruntime's MatMulNBits quantizer (RTN) maps each block's whole [min, max] onto the 16 levels, so one
outlier weight widens every step of its block. A narrower range loses that outlier but rounds the other
31 weights more finely; llama.cpp's k-quants search their scales the same way (make_qkx2_quants). The search
here tries shrink factors of the range per block and keeps the one with the least squared error, each input
row weighted by how large its activations run (the calibration maxima SmoothQuant measured, squared), so
error where activations are large counts for more (as AWQ weighs it).

Why clip the float weights instead of writing the blocks ourselves: onnxruntime's quantizer then packs
exactly the searched range (its RTN derives the scale and zero point from the block's min and max, with 0
inside the range, as the search does), and every bundle stays what onnxruntime's own tool writes.
"""

from __future__ import annotations

import numpy as np

SHRINK = np.linspace(1.0, 0.6, 17)  # candidate fractions of each block's range


def clip_blocks(weight: np.ndarray, bits: int, block: int, importance: np.ndarray | None = None) -> np.ndarray:
    """WEIGHT (K, N) with each K-block of each column clamped to its best range for BITS-bit rounding.

    IMPORTANCE: (K,) weight of each input row's squared error (None: all equal)."""
    k, n = weight.shape
    pad = -k % block
    w = np.pad(weight.astype(np.float32), ((0, pad), (0, 0))).reshape(-1, block, n)  # (blocks, block, N)
    rows = np.ones(k, np.float32) if importance is None else importance.astype(np.float32)
    rows = np.pad(rows, (0, pad)).reshape(-1, block, 1)  # padded rows weigh nothing
    low, high = np.minimum(w.min(1, keepdims=True), 0), np.maximum(w.max(1, keepdims=True), 0)
    levels = 2 ** bits - 1
    best_error = np.full(low.shape, np.inf, np.float32)
    best = np.ones(low.shape, np.float32)
    for f in SHRINK:
        lo, hi = low * f, high * f
        scale = (hi - lo) / levels
        scale[scale == 0] = 1.0
        zero = np.clip(np.round(-lo / scale), 0, levels)
        q = np.clip(np.round(w / scale + zero), 0, levels)
        error = (rows * ((q - zero) * scale - w) ** 2).sum(1, keepdims=True)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best = np.where(better, f, best)
    clipped = np.clip(w, low * best, high * best)
    return clipped.reshape(-1, n)[:k].astype(weight.dtype)


def clip_matmuls(model, bits: int, block: int, exclude: list[str], progress=None) -> int:
    """Clip the weight of every float MatMul of MODEL not in EXCLUDE (in place); returns how many."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    names = [n.input[1] for n in model.graph.node
             if n.op_type == "MatMul" and n.name not in exclude and n.input[1] in inits and len(inits[n.input[1]].dims) == 2]
    for done, name in enumerate(dict.fromkeys(names), 1):
        clipped = clip_blocks(numpy_helper.to_array(inits[name]), bits, block)
        inits[name].CopyFrom(numpy_helper.from_array(clipped, name))
        if progress is not None:
            progress(f"clipped {done}/{len(names)}")
    return len(names)
