"""SmoothQuant folded into the fused decoder graph (quantize/smoothing.py): which MatMuls it finds on
each family, that the float graph computes the same after it, that it really flattens the
activations the int8 kernel quantizes, and how quantize records and validates it."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgelm.errors import QuantizeError
from edgelm.bundle_graph import save_graph
from edgelm.quantize import Method, QuantizeOptions, quantize
from edgelm.quantize.methods import preprocess
from edgelm.quantize.prompt_feeds import prompt_feeds
from edgelm.quantize.smoothing import find_groups, input_maxima, smooth
from edgelm.runtime import load
from tests import tiny
from tests.test_bad_input import assert_nothing_written, assert_one_line_error, run_cli

IDS = [5, 17, 3, 88, 41, 9, 23, 64, 2, 11, 70, 33, 8, 19, 56, 4]


@pytest.fixture(scope="module")
def graphs(bundles, tmp_path_factory):
    """family -> (pre-processed float graph file, the graph loaded, its KV layout), as quantize sees them before the method runs."""
    root = tmp_path_factory.mktemp("smoothing")
    cache = {}

    def get(name: str):
        if name not in cache:
            src, manifest = bundles(name)
            preprocess(src / manifest.graph_file, root / f"{name}.onnx")
            cache[name] = (root / f"{name}.onnx", onnx.load(str(root / f"{name}.onnx")), manifest.kv_cache)
        return cache[name]

    return get


def logits(model: onnx.ModelProto, layout, ids: list[int]) -> np.ndarray:
    """All-position logits of IDS as one prompt (input_maxima's session, asked for the logits)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = prompt_feeds(layout, ids, {i.name for i in session.get_inputs()})
    feeds["logits_to_keep"] = np.zeros(1, np.int64)  # every position
    return session.run(["logits"], feeds)[0]


@pytest.mark.parametrize("name, per_layer", zip(tiny.registered("llama", "gpt2"), (3, 2)))
def test_finds_the_matmuls_a_norm_or_a_gated_product_feeds(graphs, name, per_layer):
    _, model, layout = graphs(name)
    groups = find_groups(model)
    # llama: qkv (attention norm), gate|up (MLP norm), down (act(gate) * up); gpt2: qkv and fc (its GELU is not linear)
    assert len(groups) == per_layer * layout.num_layers
    assert all(len(g.matmuls) == 1 and "lm_head" not in g.matmuls[0].name for g in groups)
    down = [g for g in groups if "down_proj" in g.matmuls[0].name]
    assert len(down) == (layout.num_layers if name == "llama" else 0)
    for g in down:  # only the `up` half of the packed gate|up weight absorbs the scales
        (weight, columns), = g.absorb
        width = next(i for i in model.graph.initializer if i.name == weight).dims[1]
        assert (columns.start, columns.stop) == (width // 2, width)


@pytest.mark.parametrize("name", tiny.decoder_cases())
def test_the_float_graph_computes_the_same_after_smoothing(graphs, name):
    path, model, layout = graphs(name)
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    assert smooth(smoothed, input_maxima(path, layout, [IDS]), alpha=0.5) > 0
    changed = {i.name for i, j in zip(model.graph.initializer, smoothed.graph.initializer) if i.raw_data != j.raw_data}
    assert changed  # the weights moved...
    before, after = logits(model, layout, IDS[::-1]), logits(smoothed, layout, IDS[::-1])  # other ids than calibration
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)  # ...and the function did not


def test_it_flattens_the_channels_of_what_the_int8_kernel_quantizes(graphs, tmp_path):
    _, model, layout = graphs("llama")
    norm_fed = [g for g in find_groups(model) if "norm" in g.activation]

    def measured(m: onnx.ModelProto) -> dict[str, np.ndarray]:  # input_maxima of M, saved as quantize saves it
        saved = onnx.ModelProto()
        saved.CopyFrom(m)  # onnx's external-data save leaves the proto it writes pointing at the file
        save_graph(saved, tmp_path / "graph.onnx")
        return input_maxima(tmp_path / "graph.onnx", layout, [IDS])

    def spread(maxima: dict[str, np.ndarray]) -> float:  # median over the norm-fed inputs of max / median channel range
        return float(np.median([maxima[g.activation].max() / np.median(maxima[g.activation]) for g in norm_fed]))

    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(model)
    # a norm weight with a few huge channels, as trained Llama models have: the outliers the scales remove
    for g in norm_fed:
        gamma = next(i for i in smoothed.graph.initializer if i.name == g.absorb[0][0])
        values = numpy_helper.to_array(gamma).copy()
        values[::7] *= 40
        gamma.CopyFrom(numpy_helper.from_array(values, gamma.name))
    outliers = measured(smoothed)
    smooth(smoothed, outliers, alpha=0.5)
    assert spread(measured(smoothed)) < spread(outliers) / 3


def test_calibration_reads_the_weights_from_their_file_and_leaves_nothing_beside_them(graphs, monkeypatch):
    """input_maxima never loads the weights into Python memory (a graph of any size) and removes its probe graph."""
    import onnxruntime as ort

    path, model, layout = graphs("llama")
    loads, opened = [], []
    real_load, real_session = onnx.load, ort.InferenceSession
    monkeypatch.setattr(onnx, "load", lambda f, *a, **k: loads.append(k.get("load_external_data", True)) or real_load(f, *a, **k))
    monkeypatch.setattr(ort, "InferenceSession", lambda f, *a, **k: opened.append(f) or real_session(f, *a, **k))
    before = sorted(p.name for p in path.parent.iterdir())
    maxima = input_maxima(path, layout, [IDS])
    assert loads == [False] and len(opened) == 1 and isinstance(opened[0], str)  # a file path, not bytes
    assert sorted(p.name for p in path.parent.iterdir()) == before
    assert set(maxima) == {g.activation for g in find_groups(model)} and all((v > 0).all() for v in maxima.values())


def test_ranges_from_another_graph_are_refused(graphs):
    _, model, _ = graphs("llama")
    with pytest.raises(ValueError, match="no activation range for"):
        smooth(model, {}, alpha=0.5)


def test_quantize_records_smoothing_and_zero_turns_it_off(bundles, tmp_path):
    src, _ = bundles("llama")
    on = quantize(src, tmp_path / "on", QuantizeOptions(Method.INT8, gate=False), progress=False)
    off = quantize(src, tmp_path / "off", QuantizeOptions(Method.INT8, smoothing=0, gate=False), progress=False)
    assert on.precision["options"]["smoothing"] == {"alpha": 0.5, "matmuls": 3 * on.kv_cache.num_layers}
    assert off.precision["options"]["smoothing"] is None
    lm_on, lm_off = load(tmp_path / "on", provider="cpu"), load(tmp_path / "off", provider="cpu")
    a, b = (lm.complete(["Once upon a time"], max_new_tokens=4)[0].token_ids for lm in (lm_on, lm_off))
    assert len(a) == len(b) == 4  # both run; tiny random models have no outliers to compare accuracy on


@pytest.mark.parametrize("options, message", [
    (dict(method=Method.INT8_DYNAMIC, smoothing=0.5), "--smooth is for --method int8 and int4"),
    (dict(method=Method.INT8, smoothing=1.5), r"--smooth is SmoothQuant.s alpha in \[0, 1\]"),
])
def test_bad_smoothing_options_are_refused(options, message):
    with pytest.raises(QuantizeError, match=message):
        QuantizeOptions(**options)


def test_calibration_file_is_checked_before_any_work_for_smoothing(bundles, tmp_path):
    src, _ = bundles("llama")
    bad = tmp_path / "calib.txt"
    bad.write_bytes(b"\xff\xfe not utf-8")
    out = tmp_path / "out"
    result = run_cli("quantize", str(src), str(out), "--method", "int4", "--calibration", str(bad))
    assert_one_line_error(result, "calibration file", "not UTF-8")
    assert_nothing_written(out)
