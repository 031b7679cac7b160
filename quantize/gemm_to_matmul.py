"""Rewrite Gemm nodes with a constant weight as MatMul + Add, so weight-only quantization sees them.

Why by hand: onnxruntime's MatMulNBitsQuantizer rewrites MatMul nodes only, and GPT-2's exported
graph computes every projection (Conv1D) as a 2-D Gemm. Without this, weight-only int8/int4
would leave GPT-2's layers in float and quantize just its LM head.

    Gemm(A, W, C; alpha=1, beta=1, transA=0, transB=t)  ->  Add(MatMul(A, t ? W.T : W), C)
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite every plain Gemm over a constant weight in place; returns how many were rewritten."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    rewritten = 0
    for node in list(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not plain or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if attrs.get("transB", 0):  # store W.T once, under a new name (the old one may be shared)
            transposed = numpy_helper.from_array(numpy_helper.to_array(weight).T.copy(), f"{weight.name}_T")
            graph.initializer.append(transposed)
            weight = transposed
        product = f"{node.output[0]}_matmul"
        matmul = helper.make_node("MatMul", [node.input[0], weight.name], [product if len(node.input) > 2 else node.output[0]],
                                  name=f"{node.name}_MatMul")
        replacement = [matmul]
        if len(node.input) > 2 and node.input[2]:
            replacement.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        at = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(at + offset, new)
        rewritten += 1
    return rewritten
