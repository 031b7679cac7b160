"""Per-token activation scales for quantize_dynamic's INT8 MatMuls: a graph rewrite no library does.

quantize_dynamic quantizes a MatMul's input with ONE scale per call (DynamicQuantizeLinear: the
minimum and maximum of the whole batch). In BERT-family encoders a few tokens ([CLS], [SEP]) carry
activations several times larger than every other token's, so that one scale leaves the other
tokens a few levels each. Here every
token (row) gets its own symmetric scale, as CTranslate2's int8 does. The weights stay as
quantize_dynamic wrote them (int8, per output channel).

    quantize_dynamic                                      after this rewrite
    x ─DynamicQuantizeLinear─ x_q, x_scale, x_zero        x ─ReduceMax, ReduceMin─ r = max|x| / 127 per row   (..., 1)
    x_scale ─Mul(w_scale)─ s                              x ─Flatten─QuantizeLinear(axis 0, r, 128)─Reshape─ x_q (uint8)
    x_q, w_q, x_zero, w_zero ─MatMulInteger─Cast─Mul(s)─ y
                                                          x_q, w_q, 1, w_scale, 128, w_zero ─MatMulIntegerToFloat─Mul(r)─ y

The rows are quantized symmetrically (zero point 128 for all), so MatMulIntegerToFloat's single
activation zero point holds for every row. It is written directly, with activation scale 1 and the
row scales applied after it: onnxruntime's own fusion of MatMulInteger + Cast + Mul into it assumes
a single activation scale (with per-row scales left to that fusion the embeddings come out wrong).

Only an activation read by ONE MatMul is rewritten. One read by several (Q, K and V share their
input) keeps its per-call scale: each reader would pay a row-scale Mul and a bias Add of its own
(the bias leaves the int8 kernel's epilogue), and that input's outlier tokens stand out far less
than the FFN's: per-token scales there too were slower and no closer to float (docs/benchmarks.md,
"Encoders: sentence embeddings"). An input that feeds anything else (QAttention, say) also keeps its
per-call scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MS_DOMAIN = "com.microsoft"
ZERO_POINT = 128  # uint8 zero point of every row: symmetric int8 values -127..127 shifted by 128
_CONSTANTS = {"per_token/last_axis": np.array([-1], np.int64), "per_token/one_row": np.array([-1], np.int64),
              "per_token/levels": np.array(127, np.float32), "per_token/tiny": np.array(1e-12, np.float32),
              "per_token/one": np.array(1, np.float32), "per_token/zero_point": np.array(ZERO_POINT, np.uint8)}


@dataclass(frozen=True)
class _Product:
    """quantize_dynamic's tail of one MatMul: MatMulInteger ─Cast─Mul(scales)─ y, scales = Mul(x_scale, w_scale)."""

    matmul: object  # NodeProto
    cast: object
    output_mul: object
    scales_mul: object
    weight_scale: str


def per_token_activations(model) -> int:
    """Rewrite MODEL (onnx ModelProto, in place) as sketched above; returns how many MatMuls now use per-token scales."""
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    replaced, dropped, count = {}, set(), 0
    for node in graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            continue
        product = _product(node, consumers, producer)
        if product is None:
            continue
        replaced[node.name], row_scale = _row_quantizer(node, opset)
        replaced[product.matmul.name] = _to_float(product, row_scale)
        dropped.update({product.cast.name, product.output_mul.name, product.scales_mul.name})
        count += 1
    if not count:
        return 0
    nodes = [new for node in graph.node if node.name not in dropped for new in replaced.get(node.name, [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in _CONSTANTS.items())
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return count


def _product(quantize, consumers: dict, producer: dict) -> _Product | None:
    """The one MatMul QUANTIZE feeds, if its outputs serve nothing but quantize_dynamic's pattern for it; else None."""
    x_q, x_scale, x_zero = quantize.output
    readers = consumers.get(x_q, [])
    if len(readers) != 1 or readers[0].op_type != "MatMulInteger" or list(readers[0].input[:3:2]) != [x_q, x_zero]:
        return None
    matmul = readers[0]
    cast = _only_consumer(matmul.output[0], consumers, "Cast")
    output_mul = None if cast is None else _only_consumer(cast.output[0], consumers, "Mul")
    if output_mul is None:
        return None
    scales = [producer.get(i) for i in output_mul.input if i != cast.output[0]]
    if len(scales) != 1 or scales[0] is None or scales[0].op_type != "Mul" or x_scale not in scales[0].input:
        return None
    weight_scale = [i for i in scales[0].input if i != x_scale]
    users = {n.name for n in consumers.get(x_scale, []) + consumers.get(x_zero, [])}
    if len(weight_scale) != 1 or len(consumers[scales[0].output[0]]) != 1 or users != {scales[0].name, matmul.name}:
        return None
    return _Product(matmul, cast, output_mul, scales[0], weight_scale[0])


def _only_consumer(name: str, consumers: dict, op_type: str):
    users = consumers.get(name, [])
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _row_quantizer(quantize, opset: int) -> tuple[list, str]:
    """Nodes that replace QUANTIZE: each row of x symmetric to uint8 (zero point 128); and the row-scale name."""
    from onnx import helper, numpy_helper

    x, (x_q, _, _) = quantize.input[0], quantize.output
    p = f"{quantize.name}/per_token/"
    row_scale, flat_scale = p + "row_scale", p + "row_scale_flat"
    make = helper.make_node

    def reduce(op: str, out: str):  # along the last axis; axes became an input in opset 18
        if opset >= 18:
            return make(op, [x, "per_token/last_axis"], [p + out], name=p + op, keepdims=1)
        return make(op, [x], [p + out], name=p + op, keepdims=1, axes=[-1])

    nodes = [
        reduce("ReduceMax", "max"), reduce("ReduceMin", "min"),  # (..., 1)
        make("Neg", [p + "min"], [p + "neg_min"], name=p + "Neg"),
        make("Max", [p + "max", p + "neg_min", "per_token/tiny"], [p + "abs_max"], name=p + "AbsMax"),
        make("Div", [p + "abs_max", "per_token/levels"], [row_scale], name=p + "RowScale"),  # (..., 1)
        make("Reshape", [row_scale, "per_token/one_row"], [flat_scale], name=p + "RowScaleFlat"),  # (rows,)
        make("Shape", [flat_scale], [p + "rows"], name=p + "Rows"),
        make("ConstantOfShape", [p + "rows"], [p + "zero_points"], name=p + "ZeroPoints",
             value=numpy_helper.from_array(np.array([ZERO_POINT], np.uint8))),  # (rows,)
        make("Flatten", [x], [p + "x_rows"], name=p + "Flatten", axis=-1),  # (rows, K)
        make("QuantizeLinear", [p + "x_rows", flat_scale, p + "zero_points"], [p + "q_rows"], name=p + "Quantize", axis=0),
        make("Shape", [x], [p + "shape"], name=p + "Shape"),
        make("Reshape", [p + "q_rows", p + "shape"], [x_q], name=p + "Unflatten"),  # (..., K) uint8
    ]
    return nodes, row_scale


def _to_float(product: _Product, row_scale: str) -> list:
    """MatMulIntegerToFloat with activation scale 1 and zero point 128, then the row scales: y as before."""
    from onnx import helper

    m = product.matmul
    y = product.output_mul.output[0]
    weight_zero = list(m.input[3:4]) or [""]
    inputs = [m.input[0], m.input[1], "per_token/one", product.weight_scale, "per_token/zero_point", *weight_zero]
    to_float = helper.make_node("MatMulIntegerToFloat", inputs, [y + "/per_channel"], name=m.name + "/to_float", domain=MS_DOMAIN)
    return [to_float, helper.make_node("Mul", [y + "/per_channel", row_scale], [y], name=m.name + "/per_token_scale")]
