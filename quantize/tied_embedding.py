"""Share one INT8 copy of a tied embedding between the LM head and the input lookup.

Why by hand: onnxruntime's MatMulNBitsQuantizer turns the LM head (a MatMul over the folded
transpose of the embedding) into 8-bit MatMulNBits, but refuses 8-bit Gather, so the input
embedding would stay float: for SmolLM2, a float copy of the bundle's largest matrix beside its 8-bit
one. No library shares the two.

MatMulNBits stores B as (N, K / block, block) uint8 with scales (N * K / block,): for the LM
head (N = vocab, K = hidden) those are the embedding rows, quantized in blocks along the hidden
axis -- the layout GatherBlockQuantized reads with quantize_axis=1. So the lookup is rewritten
to read the LM head's own bytes through two Reshapes:

    before:  input_ids ─> Gather(embedding fp32 (V, H)) ─> hidden
             hidden ─> MatMulNBits(B_q (V, H/b, b), scales (V*H/b,)) ─> logits
    after:   B_q ─> Reshape (V, H) ──┐
             scales ─> Reshape (V, H/b) ─┴─> GatherBlockQuantized(bits=8, quantize_axis=1) ─> hidden
             hidden ─> MatMulNBits (unchanged) ─> logits
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass(frozen=True)
class Tie:
    gather: str  # the embedding lookup node
    embedding: str  # its float initializer (V, H)
    lm_head_output: str  # output of the MatMul whose weight is embedding.T


def find_tie(model: onnx.ModelProto) -> Tie | None:
    """The embedding Gather and the LM-head MatMul that use the same matrix (transposed), if any."""
    inits = {i.name: i for i in model.graph.initializer}
    gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits and len(inits[n.input[0]].dims) == 2]
    for gather in gathers:
        rows, cols = inits[gather.input[0]].dims
        for node in model.graph.node:
            weight = inits.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) > 1 else None
            if weight is not None and list(weight.dims) == [cols, rows]:
                embedding = numpy_helper.to_array(inits[gather.input[0]])
                if np.array_equal(numpy_helper.to_array(weight), embedding.T):
                    return Tie(gather.name, gather.input[0], node.output[0])
    return None


# Element-wise ops a family may put after its LM head (a bias, Granite's logits scaling, Gemma 2's soft-cap),
# each with the head's output as its first input.
_AFTER_HEAD = ("Add", "Identity", "Div", "Mul", "Tanh")


def lm_head_node(model: onnx.ModelProto, output: str = "logits") -> str | None:
    """Name of the MatMul that computes OUTPUT (through any element-wise op after it), if there is one."""
    producer = {o: n for n in model.graph.node for o in n.output}
    node = producer.get(output)
    while node is not None and node.op_type in _AFTER_HEAD:
        node = producer.get(node.input[0])
    return node.name if node is not None and node.op_type == "MatMul" else None


def share_tied_embedding(model: onnx.ModelProto, tie: Tie, block_size: int) -> bool:
    """Point TIE's Gather at the LM head's 8-bit MatMulNBits weight; drop the float embedding."""
    graph = model.graph
    head = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.output[0] == tie.lm_head_output), None)
    if head is None or len(head.input) > 3 and head.input[3]:  # not quantized, or asymmetric (zero points)
        return False
    vocab, hidden = next(list(i.dims) for i in graph.initializer if i.name == tie.embedding)
    gather = next(n for n in graph.node if n.name == tie.gather)
    data_shape = numpy_helper.from_array(np.array([vocab, hidden], np.int64), f"{tie.embedding}_q8_shape")
    scale_shape = numpy_helper.from_array(np.array([vocab, hidden // block_size], np.int64), f"{tie.embedding}_q8_scale_shape")
    graph.initializer.extend([data_shape, scale_shape])
    nodes = [
        helper.make_node("Reshape", [head.input[1], data_shape.name], [f"{tie.embedding}_q8"], name=f"{tie.gather}_data"),
        helper.make_node("Reshape", [head.input[2], scale_shape.name], [f"{tie.embedding}_q8_scales"], name=f"{tie.gather}_scales"),
        helper.make_node("GatherBlockQuantized", [f"{tie.embedding}_q8", gather.input[1], f"{tie.embedding}_q8_scales"],
                         list(gather.output), name=f"{tie.gather}_Q8", domain="com.microsoft",
                         gather_axis=0, quantize_axis=1, block_size=block_size, bits=8),
    ]
    at = list(graph.node).index(gather)
    graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        graph.node.insert(at + offset, node)
    still_used = any(tie.embedding in n.input for n in graph.node)
    if not still_used:
        graph.initializer.remove(next(i for i in graph.initializer if i.name == tie.embedding))
    return True


def restore_tied_head(model: onnx.ModelProto, tie: Tie) -> bool:
    """Read a float LM head through Transpose(embedding) again, as export wrote it.

    Quantization's pre-processing folds the Transpose into a second (H, V) matrix so the quantizers
    can see the head; when the head is then kept float (--keep-float lm_head), that copy would double
    the largest matrix of the bundle (Gemma 3 270M: +640 MB). Returns whether it was restored.
    """
    graph = model.graph
    head = next((n for n in graph.node if n.op_type == "MatMul" and n.output[0] == tie.lm_head_output), None)
    if head is None or not any(i.name == tie.embedding for i in graph.initializer):
        return False
    folded = head.input[1]
    transposed = f"{tie.embedding}_transposed"
    graph.node.insert(list(graph.node).index(head),
                      helper.make_node("Transpose", [tie.embedding], [transposed], name="/lm_head/Transpose", perm=[1, 0]))
    head.input[1] = transposed
    if not any(folded in n.input for n in graph.node):
        graph.initializer.remove(next(i for i in graph.initializer if i.name == folded))
    return True
