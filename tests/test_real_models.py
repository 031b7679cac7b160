"""The two real embedded models, exported through the CLI and checked against their libraries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer

from edgelm.runtime import load
from edgelm.runtime.decoder import DecoderGraph
from edgelm.runtime.generator import greedy_continuation
from edgelm.runtime.manifest import check_files, read_manifest
from tests.conftest import MINILM, SMOLLM2_GGUF, require_real_models

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def hf_smollm2():
    """transformers' SmolLM2 tokenizer and fp32 model, loaded once for this module."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_real_models()
    tokenizer = AutoTokenizer.from_pretrained(SMOLLM2_GGUF.parent, gguf_file=SMOLLM2_GGUF.name)
    model = AutoModelForCausalLM.from_pretrained(SMOLLM2_GGUF.parent, gguf_file=SMOLLM2_GGUF.name, dtype=torch.float32).eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def smollm2(smollm2_bundle):
    """The SmolLM2 bundle opened by the runtime on the CPU."""
    return load(smollm2_bundle, provider="cpu")


def hf_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate on IDS: the new ids, an ending eos (2) included."""
    from transformers import GenerationConfig

    greedy = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=2, pad_token_id=2)
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              generation_config=greedy)[0, len(ids):].tolist()


def test_smollm2_gguf_bundle_describes_the_model(smollm2_bundle):
    manifest = read_manifest(smollm2_bundle)
    check_files(smollm2_bundle, manifest)
    kv = manifest.kv_cache
    assert (kv.num_layers, kv.num_kv_heads, kv.head_size) == (30, 3, 64)
    assert manifest.special_tokens.eos == (2,) and manifest.special_tokens.bos == 1
    assert manifest.max_context == 8192 and manifest.source["format"] == "gguf"
    assert manifest.chat_template_file and manifest.verification["passed"]
    assert manifest.verification["weights_stored_once"]  # the tied 28M-element embedding is not duplicated


def test_smollm2_32_greedy_tokens_equal_transformers_on_a_chat_prompt(smollm2_bundle, hf_smollm2):
    hf_tokenizer, model = hf_smollm2
    messages = [{"role": "user", "content": "Write a short poem about the sea."}]
    ids = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    ref = hf_greedy(model, ids, 32)
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
    feed["token_type_ids"] = np.zeros_like(feed["input_ids"])  # BERT's graph takes them; one sentence: all zeros
    feed = {name: feed[name] for name in manifest.input_names()}
    ours = ort.InferenceSession(str(minilm_bundle / manifest.graph_file)).run([manifest.pooling.output], feed)[0]
    ref = SentenceTransformer(str(MINILM), device="cpu").encode(sentences)
    cosine = np.sum(ours * ref, axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= 0.9999


# -- the runtime on SmolLM2 ---------------------------------------------------------------------
def test_smollm2_runtime_greedy_64_tokens_equal_transformers_generate(smollm2, hf_smollm2):
    hf_tokenizer, model = hf_smollm2
    prompt = "Write a short story about a robot who learns to paint."
    messages = [{"role": "user", "content": prompt}]
    ids = smollm2.encode(prompt, chat=True)
    assert ids == hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    ref = hf_greedy(model, ids, 64)
    assert len(ref) == 64 and 2 not in ref  # the story is longer than 64 tokens: all 64 are compared
    got = smollm2.complete([prompt], chat=True, max_new_tokens=64)[0]
    assert got.token_ids == ref
    assert got.text == hf_tokenizer.decode(ref, skip_special_tokens=True)
    assert (got.finish_reason, got.prompt_tokens) == ("length", len(ids))


def test_smollm2_answers_the_capital_of_france_and_finishes_with_eos(smollm2):
    c = smollm2.complete(["What is the capital of France?"], chat=True, max_new_tokens=64)[0]
    assert c.finish_reason == "eos" and c.token_ids[-1] == 2
    assert "Paris" in c.text and "<|im_end|>" not in c.text


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def _is_emoji(ch: str) -> bool:
    return ord(ch) >= 0x1F000 or "\u2600" <= ch <= "\u27bf"


@pytest.mark.parametrize("prompt,wanted", [("请用中文写一首关于雨的短诗。", _is_cjk),
                                           ("Reply with three emoji: 🎉🚀🌧️", _is_emoji)], ids=["chinese", "emoji"])
def test_smollm2_streams_chinese_and_emoji_exactly_as_generate(smollm2, prompt, wanted):
    pieces = list(smollm2.stream(prompt, chat=True, max_new_tokens=40))
    completion = smollm2.complete([prompt], chat=True, max_new_tokens=40)[0]
    text = "".join(pieces)
    assert text == completion.text == smollm2.generate(prompt, chat=True, max_new_tokens=40)
    assert text == smollm2.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
    assert any(wanted(ch) for ch in text), text
    assert all("\ufffd" not in piece for piece in pieces[:-1])  # no character is ever split between pieces
    # a U+FFFD can only be the very end, where max_new_tokens cut a character's bytes short
    assert "\ufffd" not in text.rstrip("\ufffd")
    assert not text.endswith("\ufffd") or completion.finish_reason == "length"


def test_smollm2_batch_of_chat_prompts_equals_running_each_alone(smollm2):
    prompts = ["What is 2+2?", "Name a colour.", "Write a haiku about autumn leaves falling on a quiet pond."]
    batch = smollm2.complete(prompts, chat=True, max_new_tokens=24)
    assert len({c.prompt_tokens for c in batch}) == 3  # different lengths: left padding is involved
    for prompt, row in zip(prompts, batch):
        alone = smollm2.complete([prompt], chat=True, max_new_tokens=24)[0]
        assert (row.token_ids, row.text, row.finish_reason) == (alone.token_ids, alone.text, alone.finish_reason)


def test_smollm2_render_chat_and_encode_equal_transformers(smollm2, hf_smollm2):
    hf_tokenizer, _ = hf_smollm2
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris. 巴黎 🇫🇷"}]
    for conversation in (messages, messages + [{"role": "user", "content": "And of Italy?"}]):
        assert smollm2.render_chat(conversation) == hf_tokenizer.apply_chat_template(
            conversation, tokenize=False, add_generation_prompt=True)
        assert smollm2.encode(conversation) == hf_tokenizer.apply_chat_template(
            conversation, tokenize=True, add_generation_prompt=True, return_dict=False)


# -- conformance vectors of the real bundles, against the libraries themselves ---------------------
def test_smollm2_conformance_vectors_equal_transformers_and_pass_verify(smollm2_bundle, hf_smollm2):
    """The recorded ids are transformers' own: its tokenizer, its chat template, its greedy generate."""
    import json

    from edgelm.runtime import verify

    hf_tokenizer, model = hf_smollm2
    vectors = json.loads((smollm2_bundle / "conformance.json").read_text(encoding="utf-8"))["vectors"]
    for v in vectors:
        if v["kind"] == "tokens":
            assert v["ids"] == hf_tokenizer(v["text"]).input_ids, v["name"]
        if v["kind"] == "chat":
            assert v["rendered"] == hf_tokenizer.apply_chat_template(v["messages"], add_generation_prompt=True, tokenize=False)
            assert v["ids"] == hf_tokenizer.apply_chat_template(v["messages"], add_generation_prompt=True, return_dict=False)
        if v["kind"] == "greedy":
            for row in v["rows"]:
                ended = row["ids"] + ([2] if row["finish"] == "eos" else [])
                assert ended == hf_greedy(model, row["prompt_ids"], v["max_new_tokens"]), v["name"]
    report = verify(smollm2_bundle, provider="cpu")
    assert report.passed and len(report.outcomes) == 8, [(o.name, o.detail) for o in report.failures]


def test_minilm_conformance_vectors_equal_sentence_transformers_and_pass_verify(minilm_bundle):
    import json

    from sentence_transformers import SentenceTransformer

    from edgelm.runtime import verify

    (vector,) = [v for v in json.loads((minilm_bundle / "conformance.json").read_text(encoding="utf-8"))["vectors"]
                 if v["kind"] == "embedding"]
    reference = SentenceTransformer(str(MINILM), device="cpu")
    np.testing.assert_allclose([r["values"] for r in vector["rows"]], reference.encode(vector["texts"]), atol=2e-4)
    assert [r["ids"] for r in vector["rows"]] == [reference.tokenizer(t)["input_ids"] for t in vector["texts"]]
    assert verify(minilm_bundle, provider="cpu").passed


# what apps ask for: required fields, enums, bounded numbers, arrays, nesting, $defs, anyOf, JSON mode (the same cases
# scripts/bench_structured.py measures)
REAL_SCHEMAS = json.loads((Path(__file__).resolve().parents[1] / "scripts" / "structured_schemas.json").read_text())


@pytest.mark.parametrize("name", list(REAL_SCHEMAS))
def test_smollm2_json_schema_outputs_parse_and_validate(smollm2, name):
    """Greedy and sampled, every reply is a document of the schema that ends with eos (not cut by max_new_tokens)."""
    import jsonschema

    prompt, schema = REAL_SCHEMAS[name]["prompt"], REAL_SCHEMAS[name]["schema"]
    messages = [{"role": "user", "content": prompt + " Reply in JSON."}]
    for options in (dict(), dict(temperature=0.8, seed=3)):
        c = smollm2.complete([messages], json_schema=schema, max_new_tokens=256, **options)[0]
        assert c.finish_reason == "eos", (options, c.text)
        jsonschema.validate(json.loads(c.text), schema)
