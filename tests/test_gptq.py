"""GPTQ (quantize/gptq.py): the MatMulNBits it writes computes what its levels say, and its compensation lowers a
MatMul's output error on correlated inputs where round-to-nearest cannot."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgelm.errors import QuantizeError
from edgelm.quantize import Method, QuantizeOptions
from edgelm.quantize.clipping import as_blocks, from_blocks, rounded, searched_ranges
from edgelm.quantize.gptq import dequantized, gptq, matmul_nbits, within_budget
from edgelm.quantize.methods import Algorithm


def correlated_inputs(rng, rows: int, k: int) -> np.ndarray:
    """Activations whose channels move together (as a layer's inputs do), with a few loud channels."""
    x = rng.normal(size=(rows, k // 4)) @ rng.normal(size=(k // 4, k)) + 0.1 * rng.normal(size=(rows, k))
    x[:, :3] *= 4
    return x


def run_matmul_nbits(node_and_tensors, k: int, n: int, x: np.ndarray) -> np.ndarray:
    node, tensors = node_and_tensors
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x.astype(np.float32)})[0]


@pytest.mark.parametrize("k", [96, 128])  # 3 blocks of 32 per column (an odd count packs a padded zero point) and 4
def test_the_written_matmul_nbits_computes_with_exactly_the_levels_gptq_chose(k):
    rng = np.random.default_rng(0)
    n, block = 24, 32
    weight = rng.normal(size=(k, n)).astype(np.float32)
    x = correlated_inputs(rng, 200, k)
    q, scales, zeros = gptq(weight, x.T @ x, 4, block)
    assert q.max() <= 15 and scales.shape == zeros.shape == (k // block, n) and (scales > 0).all()
    matmul = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    written = matmul_nbits(matmul, q, scales, zeros, 4, block, accuracy_level=0)  # float compute: exact
    assert written[0].op_type == "MatMulNBits" and written[0].domain == "com.microsoft"
    np.testing.assert_allclose(run_matmul_nbits(written, k, n, x[:8]), x[:8].astype(np.float32) @ dequantized(q, scales, zeros, block),
                               rtol=1e-4, atol=1e-4)


def test_with_uncorrelated_inputs_gptq_rounds_as_the_range_search_does():
    # a diagonal Hessian: no row's error can be compensated by another, so GPTQ is round-to-nearest on the
    # searched ranges (clipping.py's), level for level
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(64, 16)).astype(np.float32)
    q, scales, zeros = gptq(weight, np.diag(rng.uniform(0.5, 2.0, 64)), 4, 32)
    blocks = as_blocks(weight, 32)
    expected = from_blocks(rounded(blocks, *searched_ranges(blocks, 4), 4), 64)
    np.testing.assert_allclose(dequantized(q, scales, zeros, 32), expected, rtol=1e-5, atol=1e-6)


def test_gptq_moves_a_matmuls_output_less_than_round_to_nearest_on_correlated_inputs():
    rng = np.random.default_rng(2)
    k, n, block = 256, 64, 32
    weight = rng.normal(size=(k, n)).astype(np.float32)
    inputs = correlated_inputs(rng, 2000, k)
    calibration, held_out = inputs[:1000], inputs[1000:]
    q, scales, zeros = gptq(weight, calibration.T @ calibration, 4, block)
    blocks = as_blocks(weight, block)
    rtn = from_blocks(rounded(blocks, *searched_ranges(blocks, 4), 4), k)  # quantize's RTN with range search

    def error(w):
        return np.linalg.norm(held_out @ w - held_out @ weight)

    # measured on the held-out rows: 0.60x round-to-nearest's error
    assert error(dequantized(q, scales, zeros, block)) < 0.8 * error(rtn)


def test_gptq_is_the_four_bit_default_and_reads_the_calibration_texts(tmp_path):
    texts = tmp_path / "calibration.txt"
    texts.write_text("one line of calibration text\n")
    assert QuantizeOptions(Method.INT4).rounding is Algorithm.GPTQ
    assert QuantizeOptions(Method.INT4_MIXED).rounding is Algorithm.GPTQ
    assert QuantizeOptions(Method.INT8).rounding is Algorithm.RTN
    # GPTQ reads calibration text even with SmoothQuant off; round-to-nearest with it off reads none
    assert QuantizeOptions(Method.INT4, smoothing=0, calibration_file=texts).reads_calibration
    with pytest.raises(QuantizeError, match="--calibration is read by.*not int4 with --smooth 0 and --algorithm rtn"):
        QuantizeOptions(Method.INT4, smoothing=0, algorithm="rtn", calibration_file=texts)
    with pytest.raises(QuantizeError, match="--algorithm gptq is for --method int4 and int4-mixed, not int8"):
        QuantizeOptions(Method.INT8, algorithm="gptq")


def test_statistics_are_grouped_within_the_memory_budget():
    widths = {"a": 64, "b": 64, "c": 128, "d": 32}
    assert within_budget(widths, 8 * 64 * 64 * 2) == [["a", "b"], ["c"], ["d"]]  # c alone is over: a group of its own
    assert within_budget(widths, 10 ** 9) == [["a", "b", "c", "d"]]


def test_a_bundle_is_the_same_whether_its_statistics_come_in_one_group_or_one_per_input(bundles, tmp_path, monkeypatch):
    import onnx

    import edgelm.quantize.gptq as module
    from edgelm.quantize import quantize

    src, _ = bundles("llama")
    written = {}
    for name, budget in (("together", module.HESSIAN_BYTES), ("apart", 1)):
        monkeypatch.setattr(module, "HESSIAN_BYTES", budget)
        manifest = quantize(src, tmp_path / name, QuantizeOptions(Method.INT4, gate=False), progress=False)
        assert manifest.precision["options"]["gptq_matmuls"] == 8
        model = onnx.load(str(tmp_path / name / manifest.graph_file))
        written[name] = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_Q4")}
    assert written["together"].keys() == written["apart"].keys() and len(written["apart"]) == 8
    for key, levels in written["together"].items():
        np.testing.assert_array_equal(levels, written["apart"][key])
