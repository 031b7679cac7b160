"""GPTQ for MatMulNBits: 4-bit rounding that compensates each weight's error with the weights not yet rounded.

Round-to-nearest treats every weight alone. GPTQ (Frantar et al., 2023) rounds one input row of a weight at a
time and spreads the output error it makes over the rows still float, weighted by the inverse Hessian of the
layer's inputs (H = X^T X on calibration text), so the MatMul's output on real activations moves least. Rows
go in descending order of their input's energy (GPTQ's act-order); the blocks and levels are MatMulNBits' own
(an integer zero point per block of K), each block's range searched first as quantize/clipping.py does.

Damping: GPTQ's usual 1% of the mean diagonal trusts the calibration texts' input statistics in every
direction; a few thousand tokens of a few domains do not cover a language they lack (German rose where English
fell, docs/benchmarks.md). DAMPING = 1.0 adds the mean diagonal itself: the compensation still follows the
strong, shared directions and leaves the rest near round-to-nearest.

Why by hand: onnxruntime.quantization's GPTQ runs Intel Neural Compressor (which pins numpy < 2), measured
no better than RTN on SmolLM2, and fails on an odd number of blocks per row; the algorithm is a page of numpy.
The Hessians come from onnxruntime runs of the graph as quantize holds it (the LM head and the 8-bit
MatMuls already quantized), so every 4-bit MatMul sees the 8-bit errors before it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.quantize.clipping import as_blocks, scale_and_zero, searched_ranges
from edgelm.quantize.probe import probe_session
from edgelm.quantize.weight_matmuls import weight_matmuls
from edgelm.quantize.prompt_feeds import prompt_feeds
from edgelm.runtime.kv_layout import KVLayout

DAMPING = 1.0  # times the Hessian's mean diagonal, added to it (see above)
LAZY = 128  # rows compensated together before the rest is updated (GPTQ's lazy batch)
HESSIAN_BYTES = 256 * 2 ** 20  # input statistics held at once (SmolLM2's all: 805 MB in float64)


def hessians(session, layout: KVLayout, prompts: list[list[int]], inputs: list[str]) -> dict[str, np.ndarray]:
    """Input tensor name -> X^T X (float64, K x K) over PROMPTS, for the tensors INPUTS that SESSION returns."""
    names = {i.name for i in session.get_inputs()}
    sums: dict[str, np.ndarray] = {}
    for ids in prompts:
        values = session.run(inputs, prompt_feeds(layout, list(ids), names))
        for name, x in zip(inputs, values):
            x = x.reshape(-1, x.shape[-1]).astype(np.float64)
            sums[name] = sums.get(name, 0) + x.T @ x
    return sums


def within_budget(widths: dict[str, int], budget: int) -> list[list[str]]:
    """The tensors of WIDTHS (name -> K, in order) in consecutive groups whose K x K float64 statistics fit in BUDGET
    bytes (a tensor wider than that alone)."""
    groups: list[list[str]] = [[]]
    used = 0
    for name, k in widths.items():
        if groups[-1] and used + 8 * k * k > budget:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += 8 * k * k
    return [g for g in groups if g]


def gptq(weight: np.ndarray, hessian: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """WEIGHT (K, N) rounded by GPTQ: (levels (K, N) uint8, scales (K/block, N), zero points (K/block, N) uint8).

    K must be a whole number of blocks (MatMulNBits would pad the last; callers pass such weights to RTN). Each
    block's range is fixed from the weights before any compensation (act-order visits a block's rows apart)."""
    k, n = weight.shape
    levels = 2 ** bits - 1
    scales, zeros = (a[:, 0].astype(np.float64) for a in scale_and_zero(*searched_ranges(as_blocks(weight, block), bits), bits))
    h = hessian.astype(np.float64).copy()
    h[np.diag_indices(k)] += DAMPING * (np.mean(np.diag(h)) or 1.0)
    order = np.argsort(-np.diag(h), kind="stable")
    w = weight.astype(np.float64)[order]
    h = h[order][:, order]
    # the upper Cholesky factor of H^-1: row i holds how row i's error spreads over the rows after it
    inverse = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros((k, n), np.uint8)
    for start in range(0, k, LAZY):
        end = min(start + LAZY, k)
        part = w[start:end].copy()
        errors = np.zeros_like(part)
        hinv = inverse[start:end, start:end]
        for i in range(end - start):
            row = order[start + i]
            b = row // block
            level = np.clip(np.round(part[i] / scales[b] + zeros[b]), 0, levels)
            q[row] = level
            error = (part[i] - (level - zeros[b]) * scales[b]) / hinv[i, i]
            part[i:] -= hinv[i, i:, None] * error[None]
            errors[i] = error
        w[end:] -= inverse[start:end, end:].T @ errors
    return q, scales.astype(np.float32), zeros.astype(np.uint8)


def dequantized(q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, block: int) -> np.ndarray:
    """The float weight (K, N) that levels Q with SCALES and ZEROS (per block of K) stand for."""
    return ((q.astype(np.float32) - np.repeat(zeros, block, 0)) * np.repeat(scales, block, 0)).astype(np.float32)


def matmul_nbits(node: onnx.NodeProto, q: np.ndarray, scales: np.ndarray, zeros: np.ndarray, bits: int, block: int,
                 accuracy_level: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """NODE (MatMul) as com.microsoft MatMulNBits holding levels Q (K, N) with SCALES and ZEROS per block of K.

    The layout onnxruntime's quantizer writes: B (N, K/block, block*bits/8) with the first of each pair of
    levels in the low nibble, scales (N * K/block), zero points (N, ceil(K/block * bits/8)), packed alike."""
    if bits != 4:
        raise ValueError("GPTQ packs 4-bit levels only")
    k, n = q.shape
    blocks = k // block
    levels = q.T.reshape(n, blocks, block)
    packed = (levels[..., 0::2] | (levels[..., 1::2] << 4)).astype(np.uint8)
    z = zeros.T  # (N, blocks)
    if blocks % 2:
        z = np.pad(z, ((0, 0), (0, 1)))
    packed_zeros = (z[:, 0::2] | (z[:, 1::2] << 4)).astype(np.uint8).reshape(-1)
    weight = node.input[1]
    tensors = [numpy_helper.from_array(packed, f"{weight}_Q{bits}"),
               numpy_helper.from_array(scales.T.reshape(-1).astype(np.float32), f"{weight}_scales"),
               numpy_helper.from_array(packed_zeros, f"{weight}_zero_points")]
    new = helper.make_node("MatMulNBits", [node.input[0], *(t.name for t in tensors)], list(node.output),
                           name=f"{node.name}_Q{bits}", domain="com.microsoft",
                           K=k, N=n, bits=bits, block_size=block, accuracy_level=accuracy_level)
    return new, tensors


def gptq_matmuls(model: onnx.ModelProto, layout: KVLayout, prompts: list[list[int]], bits: int, block: int,
                 exclude: list[str], accuracy_level: int, progress: Callable[[str], None] | None = None,
                 work: Path | None = None) -> list[str]:
    """Every float MatMul of MODEL not in EXCLUDE whose weight is a whole number of blocks and read by it alone,
    replaced in place by a GPTQ-rounded MatMulNBits; returns their names (the rest are left for RTN).

    The input statistics are gathered a group of layers at a time (HESSIAN_BYTES), so a wide model's K x K
    matrices never all sit in memory at once."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    uses = Counter(name for node in graph.node for name in node.input)
    chosen = [n for n, w in weight_matmuls(model) if n.name not in exclude and w.dims[0] % block == 0 and uses[w.name] == 1]
    if not chosen:
        return []
    widths = {n.input[0]: int(inits[n.input[1]].dims[0]) for n in chosen}

    def exposed(probe: onnx.ModelProto) -> None:  # every MatMul input to round for also an output
        probe.graph.output.extend(helper.make_empty_tensor_value_info(name) for name in widths)

    session = probe_session(model, exposed, work)
    replaced: dict[str, onnx.NodeProto] = {}
    packed: list[onnx.TensorProto] = []
    for group in within_budget(widths, HESSIAN_BYTES):
        if progress is not None:
            progress(f"input statistics ({len(replaced)}/{len(chosen)} weights)")
        statistics = hessians(session, layout, prompts, group)
        for node in (n for n in chosen if n.input[0] in statistics):
            q, scales, zeros = gptq(numpy_helper.to_array(inits[node.input[1]]), statistics[node.input[0]], bits, block)
            replaced[node.name], tensors = matmul_nbits(node, q, scales, zeros, bits, block, accuracy_level)
            packed.extend(tensors)
            if progress is not None:
                progress(f"{len(replaced)}/{len(chosen)} weights")
        del statistics
    del session
    # rebuilt once: removing each float weight from the repeated field would compare it with every tensor before it
    nodes = [replaced.get(n.name, n) for n in graph.node]
    rounded = {n.input[1] for n in chosen}
    kept = [i for i in graph.initializer if i.name not in rounded]
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept + packed)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return [n.name for n in chosen]
