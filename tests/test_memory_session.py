"""quantize/memory_session.py: a session over an in-memory graph computes what the serialized graph
computes, hands onnxruntime bytes without the weights (so protobuf's 2 GB limit does not apply),
and leaves the model as it was."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelm.quantize.memory_session import memory_session


def small_mlp() -> onnx.ModelProto:
    """y = relu(x @ W1 + b) @ W2 with 1 MB and 0.5 MB weights and a small bias; 'hidden' is internal."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((256, 1024)).astype(np.float32), "W1")  # raw_data
    w2 = numpy_helper.from_array(rng.standard_normal((1024, 128)).astype(np.float32), "W2")
    bias = helper.make_tensor("b", TensorProto.FLOAT, [1024], rng.standard_normal(1024).tolist())  # float_data
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["pre"]),
             helper.make_node("Relu", ["pre"], ["hidden"]), helper.make_node("MatMul", ["hidden", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 128])], [w1, w2, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_it_computes_what_the_serialized_graph_computes_and_leaves_the_model_alone():
    model = small_mlp()
    before = model.SerializeToString()
    x = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    reference = ort.InferenceSession(before, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]
    y, hidden = memory_session(model, ["hidden"]).run(["y", "hidden"], {"x": x})
    np.testing.assert_allclose(y, reference, rtol=1e-5, atol=1e-4)
    assert hidden.shape == (3, 1024) and (hidden >= 0).all()
    assert model.SerializeToString() == before


def test_the_bytes_onnxruntime_parses_hold_no_weight(monkeypatch):
    handed = []
    real = ort.InferenceSession

    def recording(path_or_bytes, *args, **kwargs):
        handed.append(len(path_or_bytes))
        return real(path_or_bytes, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    model = small_mlp()
    memory_session(model)
    assert model.ByteSize() > 1_500_000  # the weights are in the model...
    assert handed and handed[0] < 20_000  # ...but not in what was serialized (the small bias may be)


def test_a_graph_without_its_weights_loaded_is_refused(tmp_path):
    model = small_mlp()
    onnx.save_model(model, tmp_path / "mlp.onnx", save_as_external_data=True, location="mlp.onnx_data")
    bare = onnx.load(tmp_path / "mlp.onnx", load_external_data=False)
    with pytest.raises(ValueError, match="W1 is not loaded"):
        memory_session(bare)
