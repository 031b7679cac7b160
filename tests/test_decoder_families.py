"""Every decoder family in the registry, on tiny checkpoints built from transformers' own configs: export,
greedy parity with transformers past every sliding window and rope switch, batching, rewind and a second
turn, int8 and int4 bundles that pass `edgelm verify`. References are transformers' generate on the same ids."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch
import transformers
from transformers import GenerationConfig

from edgelm.export.families import Kind, family_for
from edgelm.quantize import Method, QuantizeOptions, quantize
from edgelm.runtime import load, verify
from edgelm.runtime.generator import Generator, GeneratorParams
from tests import tiny
from tests.test_bad_input import assert_nothing_written, assert_one_line_error, run_cli

CASES = tiny.decoder_cases()
# The first is short (its generation crosses the windows of 6 and the LongRoPE switch at 16 while decoding);
# the second is past both before the first generated token.
PROMPTS = ["The quick brown fox", "Rain falls softly on the roof; the kiosk hums along while the fox jumps over the dog."]
NEW_TOKENS = 28


@pytest.fixture(scope="module")
def lm_of(bundles):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = load(bundles(name)[0], provider="cpu")
        return cache[name]

    return get


@pytest.fixture(scope="module")
def hf_of(checkpoints):
    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = transformers.AutoModelForCausalLM.from_pretrained(checkpoints(name)).eval()
        return cache[name]

    return get


def hf_greedy(model, ids: list[int], new_tokens: int) -> list[int]:
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                              pad_token_id=0)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=config)
    return out[0, len(ids):].tolist()


def steps(gen: Generator) -> list[int]:
    tokens = []
    while not gen.is_done():
        gen.generate_next_token()
        tokens.append(int(gen.get_next_tokens()[0]))
    return tokens


def generator(lm, new_tokens: int = NEW_TOKENS) -> Generator:
    return Generator(lm.graph, GeneratorParams(max_new_tokens=new_tokens), lm.manifest.max_context, eos=())


def test_every_decoder_model_type_in_the_registry_has_a_tiny_checkpoint():
    assert set(tiny.decoder_model_types()) <= {tiny.model_type_of(name) for name in CASES}


def test_tests_that_pick_tiny_checkpoints_name_only_registered_ones(monkeypatch):
    """Tests that sample families (tiny.registered, tiny.decoder_samples) fail by name when the registry drops one."""
    import edgelm.export.families as families

    assert set(tiny.decoder_samples()) <= set(CASES)
    monkeypatch.setattr(families, "FAMILIES", tuple(f for f in families.FAMILIES if f.name != "gpt2"))
    with pytest.raises(LookupError, match="tiny checkpoint 'gpt2' has no registered family"):
        tiny.registered("llama", "gpt2")
    monkeypatch.undo()
    with pytest.raises(LookupError, match="no tiny checkpoint is named 'gpt5'"):
        tiny.registered("gpt5")
    with pytest.raises(LookupError, match="family bert serves feature-extraction"):
        tiny.registered("bert/text-generation")


@pytest.mark.parametrize("name", CASES)
def test_export_verifies_and_the_graph_keeps_one_fused_attention_per_layer(bundles, checkpoints, name):
    out, manifest = bundles(name)
    v = manifest.verification
    assert v["passed"] and v["greedy_equal"] and v["max_abs_diff"] <= v["tolerance"]
    config = transformers.AutoConfig.from_pretrained(checkpoints(name))
    heads = config.num_attention_heads
    head = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv = manifest.kv_cache
    assert (kv.num_layers, kv.num_kv_heads) == (config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads)
    assert (kv.model_head_size or kv.head_size) == head and kv.head_size % 16 == 0
    assert (kv.model_head_size is None) == (kv.head_size == head)
    nodes = onnx.load(str(out / manifest.graph_file), load_external_data=False).graph.node
    attention = [n for n in nodes if n.op_type == "GroupQueryAttention"]
    assert len(attention) == kv.num_layers and not Counter(n.op_type for n in nodes)["Softmax"]
    windows = [next(a.i for a in n.attribute if a.name == "local_window_size") for n in attention]
    types = getattr(config, "layer_types", None) or ["sliding_attention"] * kv.num_layers
    want = [config.sliding_window if getattr(config, "sliding_window", None) and t == "sliding_attention" else -1
            for t in types]
    assert windows == want


@pytest.mark.parametrize("name", CASES)
def test_greedy_tokens_equal_transformers_past_every_window(lm_of, hf_of, name):
    lm, model = lm_of(name), hf_of(name)
    for prompt in PROMPTS:
        ids = lm.encode(prompt)
        gen = generator(lm)
        gen.append_tokens(ids)
        assert steps(gen) == hf_greedy(model, ids, NEW_TOKENS), prompt


@pytest.mark.parametrize("name", CASES)
def test_a_batch_of_rows_of_different_lengths_equals_each_row_alone(lm_of, name):
    lm = lm_of(name)
    rows = [lm.encode(p) for p in (*PROMPTS, "Paris")]
    gen = generator(lm, 12)
    gen.append_tokens(rows)
    while not gen.is_done():
        gen.generate_next_token()
    for r, ids in enumerate(rows):
        alone = generator(lm, 12)
        alone.append_tokens(ids)
        assert gen.get_new_tokens(r) == steps(alone), f"row {r}"


@pytest.mark.parametrize("name", CASES)
def test_rewinding_and_a_second_turn_continue_like_a_fresh_generator(lm_of, name):
    lm = lm_of(name)
    ids = lm.encode(PROMPTS[0])
    gen = generator(lm, 10)
    gen.append_tokens(ids)
    first = steps(gen)
    gen.rewind_to(len(ids) + 3)
    assert steps(gen) == first[3:]
    turn = lm.tokenizer.encode(" Rain falls softly on the roof", add_special_tokens=False).ids
    gen.append_tokens(turn)
    second = steps(gen)
    fresh = generator(lm, 10)
    fresh.append_tokens(ids + first + turn)
    assert second == steps(fresh)


@pytest.mark.parametrize("method", [Method.INT8, Method.INT4], ids=lambda m: m.value)
@pytest.mark.parametrize("name", CASES)
def test_int8_and_int4_bundles_load_and_pass_verify(bundles, tmp_path, name, method):
    """The quantized bundle passes what `edgelm verify` runs (checksums, then its conformance vectors), in process."""
    src, _ = bundles(name)
    out = tmp_path / f"{name}-{method.value}"
    manifest = quantize(src, out, QuantizeOptions(method, gate=False), progress=False)
    assert manifest.precision["method"] == method.value
    report = verify(out, provider="cpu")
    assert report.passed, report
    lm = load(out, provider="cpu")
    assert len(lm.complete([PROMPTS[0]], max_new_tokens=8)[0].token_ids) >= 1


def test_padded_heads_are_recorded_and_inspect_says_so(bundles):
    out, manifest = bundles("gpt2-head12")
    assert (manifest.kv_cache.head_size, manifest.kv_cache.model_head_size) == (16, 12)
    shown = run_cli("inspect", out)
    assert shown.returncode == 0 and "padded with zeros from the model's 12 to 16" in shown.stdout


def test_a_longrope_bundle_records_where_its_tables_switch(bundles):
    assert bundles("phi3")[1].kv_cache.rope_switch == 16
    assert bundles("llama")[1].kv_cache.rope_switch is None


def test_gemma3_text_is_the_decoder_unless_its_attention_is_bidirectional():
    assert family_for("gemma3_text", {"use_bidirectional_attention": False}).kind is Kind.DECODER
    assert family_for("gemma3_text", {}).name == "gemma3"
    assert family_for("gemma3_text", {"use_bidirectional_attention": True}).kind is Kind.ENCODER


def test_dynamic_ntk_scaling_is_refused_in_one_line(tmp_path):
    config = transformers.LlamaConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=32, intermediate_size=64,
                                      vocab_size=400, max_position_embeddings=64,
                                      rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    src = tmp_path / "dynamic"
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(src)
    tiny.llama_tokenizer().save_pretrained(src)
    result = run_cli("export", src, tmp_path / "out")
    assert_one_line_error(result, "rope scaling 'dynamic'")
    assert_nothing_written(tmp_path / "out")
