"""Gemma 3 270M from its Q4_K_M GGUF, the real checkpoint: export verifies against transformers' greedy
generation on the dequantized weights, the graph keeps the model's layer pattern (five local layers with a
512-token window and a base of 10k, then a global one with a base of 1M), and int8 passes the accuracy gate."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from edgelm.runtime import load
from edgelm.runtime.manifest import read_manifest
from tests.conftest import GEMMA3_GGUF, _export_with_the_cli, _quantize_with_the_cli


@pytest.fixture(scope="module")
def gemma3_bundle(tmp_path_factory):
    """Gemma 3 270M exported once through the CLI (about three minutes: transformers reads the GGUF slowly)."""
    return _export_with_the_cli(tmp_path_factory, "gemma3", GEMMA3_GGUF)


@pytest.fixture(scope="module")
def gemma3_int8(gemma3_bundle, tmp_path_factory):
    # two domains of the suite, English and German: the gate scores a 262k-token vocabulary (CI time)
    return _quantize_with_the_cli(gemma3_bundle, tmp_path_factory.mktemp("quantized-real") / "gemma3-int8",
                                  "--eval-domains", "prose,german")


def test_gemma3_gguf_export_equals_transformers_greedy_and_keeps_its_layer_pattern(gemma3_bundle):
    manifest = read_manifest(gemma3_bundle)
    v = manifest.verification
    assert v["passed"] and v["greedy_equal"] and v["tokenizer_ids_equal"] and v["weights_stored_once"]
    assert (manifest.source["model_type"], manifest.source["family"], manifest.source["format"]) == ("gemma3_text", "gemma3", "gguf")
    kv = manifest.kv_cache
    assert (kv.num_layers, kv.num_kv_heads, kv.head_size, kv.model_head_size) == (18, 1, 256, None)
    graph = onnx.load(str(gemma3_bundle / manifest.graph_file), load_external_data=False).graph
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    windows = [next(a.i for a in n.attribute if a.name == "local_window_size") for n in attention]
    assert windows == ([512] * 5 + [-1]) * 3
    tables = {n.input[7] for n in attention}  # each layer type reads its own cos table
    assert tables == {"rotary.sliding_attention.cos", "rotary.full_attention.cos"}
    assert manifest.max_context == 32768


def test_gemma3_int8_passes_the_gate_verifies_and_answers(gemma3_int8):
    manifest = read_manifest(gemma3_int8)
    accuracy = manifest.accuracy
    assert accuracy["passed"] and accuracy["perplexity_increase"] < 0.03 and accuracy["top1_agreement"] > 0.85
    assert manifest.precision["options"]["lm_head_bits"] == 8 and manifest.precision["options"]["tied_embedding_shared"]
    verified = subprocess.run([sys.executable, "-m", "edgelm.cli", "verify", str(gemma3_int8), "--provider", "cpu"],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    answer = load(gemma3_int8, provider="cpu").generate("The capital of France is Paris. The capital of Italy is", max_new_tokens=8)
    assert "Rome" in answer, answer
