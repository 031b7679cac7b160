"""Decoder export: every family's tiny model exports, verifies, and keeps the cache contract."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers

from edgelm.runtime.decoder import DecoderGraph
from edgelm.runtime.generator import greedy_continuation
from edgelm.runtime.manifest import read_manifest
from tests import tiny

DECODERS = tiny.decoder_cases()  # every registered decoder family, and the variants of a family's wiring


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_export_passes_verification_and_records_it(bundles, name):
    out, manifest = bundles(name)
    v = manifest.verification
    assert v["passed"] and v["greedy_equal"] and v["tokenizer_ids_equal"] and v["weights_stored_once"]
    assert v["max_abs_diff"] <= v["tolerance"]
    assert read_manifest(out).to_dict() == manifest.to_dict()  # what is on disk is what export returned


@pytest.mark.parametrize("name", DECODERS)
def test_kv_layout_matches_config_including_grouped_query_attention(bundles, checkpoints, name):
    _, manifest = bundles(name)
    config = transformers.AutoConfig.from_pretrained(checkpoints(name))
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv = manifest.kv_cache
    assert (kv.num_layers, kv.num_kv_heads, kv.model_head_size or kv.head_size) == (config.num_hidden_layers, kv_heads, head)
    assert (kv.cache, kv.attention) == ("shared-buffer", "com.microsoft.GroupQueryAttention")
    specs = {t.name: t for t in manifest.inputs}
    assert specs["past_key_values.0.key"].shape == ("batch_size", kv_heads, "capacity", kv.head_size)
    assert (specs["sequence_lengths"].dtype, specs["sequence_lengths"].shape) == ("int32", ("batch_size",))
    assert specs["logits_to_keep"].shape == (1,)
    learned_positions = tiny.family_of(name).decoder.rotary is None  # rotary positions come from the lengths
    assert ("position_ids" in specs) == learned_positions
    outputs = {t.name: t.shape for t in manifest.outputs}
    assert outputs["present.0.key"] == specs["past_key_values.0.key"].shape  # the same buffer, bound twice
    assert [n for pair in kv.present_names() for n in pair] == [t.name for t in manifest.outputs[1:]]


@pytest.mark.parametrize("name", tiny.decoder_samples())
def test_graph_is_fused_one_attention_operator_per_layer(bundles, name):
    out, manifest = bundles(name)
    ops = Counter(n.op_type for n in onnx.load(str(out / manifest.graph_file)).graph.node)
    layers = manifest.kv_cache.num_layers
    assert ops["GroupQueryAttention"] == layers
    # residual add + norm fused before each MLP and each later norm; a learned position table is added by the first norm
    declared = tiny.family_of(name).decoder
    norm = {"rms": "SkipSimplifiedLayerNormalization", "layer": "SkipLayerNormalization"}[declared.norm]
    assert ops[norm] == 2 * layers + (declared.rotary is None)
    assert ops["MatMul"] == 4 * layers + 1  # packed qkv, o, packed gate|up (or up), down; the LM head
    assert not ops["Concat"] and not ops["Softmax"]  # no cache concatenation, no unfused attention


def test_a_sliding_window_is_the_attention_operators_local_window(bundles):
    out, manifest = bundles("mistral-window")  # sliding_window=5: the verification prompts are longer
    windows = {a.i for n in onnx.load(str(out / manifest.graph_file)).graph.node if n.op_type == "GroupQueryAttention"
               for a in n.attribute if a.name == "local_window_size"}
    assert windows == {5} and manifest.verification["greedy_equal"]


@pytest.mark.parametrize("name", DECODERS)
def test_full_forward_equals_prefill_plus_stepwise_decode(bundles, name):
    """The cache contract, numerically: logits of one pass over N tokens equal those of a prefill
    of 4 tokens, a 3-token second chunk, then single-token steps, all in one buffer updated in place."""
    out, manifest = bundles(name)
    graph = DecoderGraph(ort.InferenceSession(str(out / manifest.graph_file)), manifest)
    ids = [5, 17, 42, 99, 7, 3, 64, 128, 11, 23]
    full = graph.score(ids)  # (10, vocab)
    cache = graph.new_cache(slots=1, capacity=len(ids))
    buffers = dict(cache.buffers)
    pieces = [graph.extend(cache, 0, ids[:4], keep=0), graph.extend(cache, 0, ids[4:7], keep=0)]
    pieces += [graph.step(cache, np.asarray([t]), np.ones(1, dtype=bool)) for t in ids[7:]]
    np.testing.assert_allclose(np.concatenate(pieces, axis=0), full, atol=1e-5)
    assert cache.lengths.tolist() == [10]
    assert all(cache.buffers[k] is v for k, v in buffers.items())  # written in place, never reallocated

@pytest.mark.parametrize("name", DECODERS)
def test_greedy_tokens_equal_transformers_generate_independently_of_export_check(bundles, checkpoints, name):
    out, manifest = bundles(name)
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints(name)).eval()
    prompt = [3, 10, 20, 30, 40]
    greedy = transformers.GenerationConfig(max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), generation_config=greedy)[0, len(prompt):].tolist()
    graph = DecoderGraph(ort.InferenceSession(str(out / manifest.graph_file)), manifest)
    # transformers fills an unset eos from the model's generation config and stops there: so do we
    assert greedy_continuation(graph, prompt, 20, stop_ids=manifest.special_tokens.eos) == ref


def test_tied_embedding_is_stored_once(bundles, checkpoints):
    _, manifest = bundles("llama")  # tie_word_embeddings=True
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints("llama"))
    embedding = model.get_input_embeddings().weight.numel()
    v = manifest.verification
    assert v["stored_weight_elements"] < v["parameters"] + embedding // 2  # a second copy would add `embedding`


def test_bundle_holds_only_what_an_edge_box_needs(bundles):
    out, manifest = bundles("llama")
    assert sorted(p.name for p in out.iterdir()) == ["chat_template.jinja", "conformance.json", "manifest.json", "manifest.sha256",
                                                     "model.onnx", "model.onnx_data", "tokenizer.json"]
    assert set(manifest.files) == {"chat_template.jinja", "conformance.json", "model.onnx", "model.onnx_data", "tokenizer.json"}
    assert manifest.external_data == ("model.onnx_data",)
    assert manifest.chat_template_file == "chat_template.jinja"
    assert manifest.special_tokens.eos and manifest.special_tokens.bos is not None
    assert manifest.max_context == 128 and manifest.precision["weights"] == "fp32"
    assert manifest.source["model_type"] == "llama" and len(manifest.source["weights_sha256"]) == 1
