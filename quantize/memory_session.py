"""An onnxruntime session over a graph held in memory (an onnx.ModelProto), of any size.

onnxruntime opens a graph from a file or from serialized bytes. Bytes are one protobuf message,
which protobuf limits to 2 GB, and serializing copies every weight (SmolLM2 fp32: 20 s and
+2 GB peak for one calibration session). Here only the graph's structure is serialized: each
large initializer travels as a stub marked external, and its values reach onnxruntime as
OrtValues through `SessionOptions.add_external_initializers` (measured on SmolLM2 fp32: 2 s).

onnxruntime.transformers.onnx_utils.extract_raw_data_from_model does the same, but it empties the
model's own initializers in place; the callers here go on using the model, so it is left untouched.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx
from onnx import TensorProto, helper, numpy_helper

INLINE_BYTES = 1024  # initializers smaller than this stay inside the serialized graph


def memory_session(model: onnx.ModelProto, outputs: Sequence[str] = ()):
    """A CPU session of MODEL whose graph also outputs the float tensors named in OUTPUTS.

    MODEL must hold its weights (loaded with its external data); it is not modified.
    """
    import onnxruntime as ort

    names, values, initializers = [], [], []
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            raise ValueError(f"initializer {init.name} is not loaded; load the graph with its external data")
        if init.ByteSize() < INLINE_BYTES:
            initializers.append(init)
            continue
        stub = TensorProto(name=init.name, data_type=init.data_type, dims=init.dims, data_location=TensorProto.EXTERNAL)
        stub.external_data.add(key="location", value="in-memory")  # never read: add_external_initializers supplies the values
        initializers.append(stub)
        names.append(init.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(init)))
    extra = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs]
    graph = helper.make_graph(model.graph.node, model.graph.name, model.graph.input, [*model.graph.output, *extra],
                              initializers, value_info=model.graph.value_info)
    skeleton = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version,
                                 functions=model.functions)
    options = ort.SessionOptions()
    if names:
        options.add_external_initializers(names, values)
    session = ort.InferenceSession(skeleton.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.external_initializers = values  # onnxruntime reads these buffers while the session lives
    return session
