"""A small accumulator of ONNX nodes and initializers, used by the fused decoder builder.

Why by hand: onnx.helper is the maintained API for writing graphs; this only keeps the node
list, names outputs after their node (`/model/layers.3/attn/qkv_proj/MatMul/output_0`, the
naming optimum and onnxruntime-genai use, which --keep-float patterns match), and turns numpy
arrays into initializers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
IR_VERSION = 10  # the oldest ONNX IR that holds opset 21 and int4 tensors: onnxruntime 1.17 and later read it
_ELEMENT = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
            np.dtype(np.int32): TensorProto.INT32}


class GraphBuilder:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    def input(self, name: str, dtype: Any, shape: list[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, _ELEMENT[np.dtype(dtype)], shape))
        return name

    def output(self, name: str, dtype: Any, shape: list[int | str]) -> None:
        self.outputs.append(helper.make_tensor_value_info(name, _ELEMENT[np.dtype(dtype)], shape))

    def const(self, name: str, array: np.ndarray) -> str:
        """An initializer holding ARRAY (weights are float32, shapes int64)."""
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, name: str, inputs: list[str], outputs: int | list[str] = 1,
           domain: str = "", **attributes: Any) -> Any:
        """Add node NAME; returns its output name (or a list of them when it has several).

        OUTPUTS is a count (names derived from NAME) or explicit names (graph outputs).
        """
        names = outputs if isinstance(outputs, list) else [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, domain=domain or None, **attributes))
        return names[0] if len(names) == 1 else names

    def model(self, name: str, opset: int) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        # IR version 10 (onnx 1.16) holds everything the graph uses, int4 included; onnx's default
        # (the newest IR) would shut out every onnxruntime older than the onnx that built it.
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS_DOMAIN, 1)],
                                 producer_name="edgelm", ir_version=IR_VERSION)
