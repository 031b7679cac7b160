"""Bundles that older onnxruntimes and other runtimes can read: the IR version export writes, the
weights kept in one data file beside the graph (in quantize's work files too), the attribute
defaults quantize drops, the onnxruntime an int8 KV cache needs, and a failing run reported in
one line instead of onnxruntime's C++ trace.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from onnx.external_data_helper import uses_external_data

from edgelm.errors import GenerationError
from edgelm.quantize import KVCache, Method, QuantizeOptions, quantize
from edgelm.runtime.kv_layout import MIN_ONNXRUNTIME, onnxruntime_problem
from edgelm.runtime.manifest import read_manifest
from edgelm.runtime.session import run_graph
from tests import tiny


def contrib_attributes(path) -> dict[str, set[str]]:
    model = onnx.load(str(path), load_external_data=False)
    return {n.name: {a.name for a in n.attribute} for n in model.graph.node if n.op_type == "GroupQueryAttention"}


@pytest.mark.parametrize("name", tiny.decoder_cases())
def test_exported_decoder_graphs_use_ir_version_10_not_onnxs_newest(bundles, name):
    folder, manifest = bundles(name)
    assert onnx.load(str(folder / manifest.graph_file), load_external_data=False).ir_version == 10


def inline_weights(graph: Path) -> list[str]:
    """Initializers over 1 KB held in the graph file itself (onnxruntime copies those; it maps external data)."""
    model = onnx.load(str(graph), load_external_data=False)
    return [t.name for t in model.graph.initializer if not uses_external_data(t) and len(t.raw_data) > 1024]


def weights_inside(folder, manifest) -> list[str]:
    return inline_weights(folder / manifest.graph_file)


@pytest.mark.parametrize("name", [*tiny.decoder_samples(), *tiny.registered("bert/fill-mask")])
def test_exported_graphs_keep_their_weights_in_one_file_beside_them(bundles, name):
    folder, manifest = bundles(name)
    assert manifest.external_data == ("model.onnx_data",) and "model.onnx_data" in manifest.files
    assert weights_inside(folder, manifest) == []
    mode = lambda name: (folder / name).stat().st_mode & 0o777  # noqa: E731
    assert mode("model.onnx_data") == mode(manifest.graph_file)  # onnx writes it 0600: no other user could read it


def test_quantize_leaves_attention_nodes_with_the_float_graphs_attributes(bundles, tmp_path):
    """onnxruntime's optimiser would fill in every attribute of its own schema (sliding_window_cache...)."""
    src, base = bundles("llama")
    out = tmp_path / "int4"
    quantize(src, out, QuantizeOptions(Method.INT4, gate=False), progress=False)
    before, after = contrib_attributes(src / base.graph_file), contrib_attributes(out / base.graph_file)
    assert before and after == before
    quantized = read_manifest(out)
    assert quantized.external_data == ("model.onnx_data",) and weights_inside(out, quantized) == []
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("model.onnx")) == ["model.onnx", "model.onnx_data"]


@pytest.mark.parametrize("name, options", [
    ("llama", QuantizeOptions(Method.INT8, kv_cache=KVCache.INT8, gate=False)),
    ("gpt2", QuantizeOptions(Method.INT4, gate=False)),
    ("bert/feature-extraction", QuantizeOptions(Method.INT8_PER_TOKEN, gate=False)),
    ("bert/feature-extraction", QuantizeOptions(Method.INT8_STATIC, gate=False)),
], ids=["int8-kv8", "int4", "int8-per-token", "int8-static"])
def test_no_quantize_step_writes_a_graph_with_its_weights_inside(bundles, tmp_path, monkeypatch, name, options):
    """Every graph file quantize writes on the way (pre-processing, the method, its rewrites) keeps its
    weights beside it, so no file is held to protobuf's 2 GB limit."""
    src, _ = bundles(name)
    written, inside = [], {}
    real = onnx.save_model

    def checked(model, f, *args, **kwargs):
        real(model, f, *args, **kwargs)
        written.append(Path(f).name)
        inside[Path(f).name] = inline_weights(Path(f))

    monkeypatch.setattr(onnx, "save_model", checked)
    monkeypatch.setattr(onnx, "save", checked)  # an alias of save_model, bound at import
    quantize(src, tmp_path / "out", options, progress=False)
    assert "model.onnx" in written and len(written) >= 2, written  # the work files and the bundle's graph
    assert {f: names for f, names in inside.items() if names} == {}


def test_an_int8_kv_cache_names_the_onnxruntime_it_needs(bundles):
    from dataclasses import replace

    _, manifest = bundles("llama")
    int8 = replace(manifest.kv_cache, dtype="int8")
    assert MIN_ONNXRUNTIME["int8"] > MIN_ONNXRUNTIME["float32"]
    problem = onnxruntime_problem(int8, "1.26.0")
    assert "needs onnxruntime 1.28 or later (this is 1.26.0)" in problem and "upgrade onnxruntime" in problem
    assert onnxruntime_problem(int8, "1.28.0") == onnxruntime_problem(manifest.kv_cache, "1.24.1") == ""
    assert onnxruntime_problem(None, "1.0.0") == ""


def test_a_failing_run_is_one_generation_error_line():
    def kernel_failure():
        raise ort.capi.onnxruntime_pybind11_state.Fail(
            "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running GroupQueryAttention node. "
            "Name:'/model/layers.0/attn/GroupQueryAttention' Status Message: tensor.h:230 Tensor type mismatch.")

    with pytest.raises(GenerationError) as caught:
        run_graph(kernel_failure)
    message = str(caught.value)
    assert "\n" not in message and "onnxruntime failed running the graph" in message and "Tensor type mismatch" in message
    assert "edgelm verify" in message
