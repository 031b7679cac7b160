"""The two real embedded models, exported through the CLI and checked against their libraries."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer

from edgelm.runtime.decoder import DecoderGraph, greedy_continuation
from edgelm.runtime.manifest import check_files, read_manifest
from tests.conftest import MINILM, SMOLLM2_GGUF, require_real_models

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def smollm2_bundle(tmp_path_factory):
    require_real_models()
    out = tmp_path_factory.mktemp("real") / "smol"
    result = subprocess.run([sys.executable, "-m", "edgelm.cli", "export", str(SMOLLM2_GGUF), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory):
    require_real_models()
    out = tmp_path_factory.mktemp("real") / "minilm"
    result = subprocess.run([sys.executable, "-m", "edgelm.cli", "export", str(MINILM), str(out),
                             "--task", "feature-extraction"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_smollm2_gguf_bundle_describes_the_model(smollm2_bundle):
    manifest = read_manifest(smollm2_bundle)
    check_files(smollm2_bundle, manifest)
    kv = manifest.kv_cache
    assert (kv.num_layers, kv.num_kv_heads, kv.head_size) == (30, 3, 64)
    assert manifest.special_tokens.eos == (2,) and manifest.special_tokens.bos == 1
    assert manifest.max_context == 8192 and manifest.source["format"] == "gguf"
    assert manifest.chat_template_file and manifest.verification["passed"]
    assert manifest.verification["weights_stored_once"]  # the tied 28M-element embedding is not duplicated


def test_smollm2_32_greedy_tokens_equal_transformers_on_a_chat_prompt(smollm2_bundle):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    hf_tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_GGUF.parent, gguf_file=SMOLLM2_GGUF.name)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_GGUF.parent, gguf_file=SMOLLM2_GGUF.name, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    ids = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    greedy = GenerationConfig(max_new_tokens=32, do_sample=False, eos_token_id=2, pad_token_id=2)
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), generation_config=greedy)[0, len(ids):].tolist()
    assert len(ref) == 32 and 2 not in ref  # the answer is longer than 32 tokens: all 32 are compared
    manifest = read_manifest(smollm2_bundle)
    # the bundle's own tokenizer.json must produce the same prompt ids as transformers
    bundle_tokenizer = Tokenizer.from_file(str(smollm2_bundle / manifest.tokenizer_file))
    text = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert bundle_tokenizer.encode(text, add_special_tokens=False).ids == ids
    graph = DecoderGraph(ort.InferenceSession(str(smollm2_bundle / manifest.graph_file)), manifest)
    assert greedy_continuation(graph, ids, 32, stop_ids=(2,)) == ref
    assert "Paris" in manifest.verification["greedy_text"]  # the export check asked for France's capital
    assert manifest.verification["greedy_tokens"][1] == 32  # its long prompt compared all 32 tokens


def test_minilm_embeddings_match_sentence_transformers(minilm_bundle):
    from sentence_transformers import SentenceTransformer

    manifest = read_manifest(minilm_bundle)
    assert (manifest.pooling.mode, manifest.pooling.normalize, manifest.pooling.dimension) == ("mean", True, 384)
    assert manifest.max_context == 256
    sentences = ["A man is eating food.", "The new movie is awesome, I loved every minute of it!",
                 "Le chat dort sur le canapé.", "ok"]
    tokenizer = Tokenizer.from_file(str(minilm_bundle / manifest.tokenizer_file))
    tokenizer.enable_padding(pad_id=manifest.special_tokens.pad)  # the bundle's tokenizer pads nothing by itself
    encodings = tokenizer.encode_batch(sentences)
    assert len({len(e.ids) for e in encodings}) == 1 and len(encodings[0].ids) < 128
    feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64)}
    ours = ort.InferenceSession(str(minilm_bundle / manifest.graph_file)).run([manifest.pooling.output], feed)[0]
    ref = SentenceTransformer(str(MINILM), device="cpu").encode(sentences)
    cosine = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= 0.9999
