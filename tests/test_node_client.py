"""The Node.js consumer (clients/node) against the same bundles as Python: its own suite (every
conformance vector, batching, streaming, sampling, prompts, reranking, tampering) on the tiny and
the real bundles, its greedy tokens equal Python's, its embeddings equal Python's (with and
without named prompts, on a graph that takes prompt_length), its rerank scores and order equal
Python's, and `edgelm-node verify` fails on a damaged bundle. It reads only manifest.json and
docs/bundle-format.md, so this is the proof that a bundle runs from its manifest alone in another language.

Needs Node 20+ and `npm ci` in clients/node (the Makefile's test target runs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgelm.export import export
from edgelm.quantize import Method, QuantizeOptions, quantize
from edgelm.runtime import load
from tests import tiny
from tests.conftest import REPO
from tests.test_conformance import reseal, scale_largest_weight
from tests.test_prompts import PROMPTS, save_st
from tests.test_prompts import TEXTS as PROMPTED_TEXTS
from tests.test_rerank import DOCUMENTS, QUERY

pytestmark = pytest.mark.node
CLIENT = REPO / "clients" / "node"
CLI = CLIENT / "bin" / "edgelm-node.js"
# every tiny decoder, every encoder family's embedder and classifier (the registry's), and one bundle of each other kind
TINY = (*tiny.decoder_cases(), *tiny.encoder_cases("feature-extraction"), *tiny.encoder_cases("text-classification"),
        "distilbert/token-classification", "bert/fill-mask", "modernbert/fill-mask", "deberta-v2/fill-mask")
ROPE_SWITCH = 16  # tests/tiny.py's phi3 (LongRoPE): the rows below start under, at and past it, and cross it


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, with clients/node's packages installed: a set-up error if either is missing."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail("node is not on PATH; the Node.js client's tests need Node 20 or later", pytrace=False)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"node {version} is too old; the Node.js client needs Node 20 or later", pytrace=False)
    if not (CLIENT / "node_modules" / "onnxruntime-node").is_dir():
        pytest.fail("clients/node has no node_modules; run `npm ci` in clients/node (make test does)", pytrace=False)
    return binary


@pytest.fixture(scope="module")
def tiny_int4(bundles, tmp_path_factory) -> Path:
    """The tiny Llama bundle quantized to int4 (MatMulNBits): a quantized graph for the Node suite."""
    src, _ = bundles("llama")
    out = tmp_path_factory.mktemp("node-quantized") / "llama-int4"
    quantize(src, out, QuantizeOptions(Method.INT4, gate=False), progress=False)
    return out


@pytest.fixture(scope="module")
def prompt_bundle(checkpoints, tmp_path_factory) -> Path:
    """A sentence-transformers folder with PROMPTS, default prompt 'query' and Pooling(include_prompt=False), built
    as tests/test_prompts.py builds it and exported: its graph takes prompt_length."""
    root = tmp_path_factory.mktemp("node-prompts")
    save_st(root / "st", checkpoints("bert/feature-extraction"), include_prompt=False, default="query")
    export(root / "st", root / "bundle", progress=False)
    return root / "bundle"


@pytest.fixture(scope="module")
def reranker_bundle(tmp_path_factory) -> Path:
    """The tiny cross-encoder (BERT with a one-label head, tests/tiny.py), exported."""
    root = tmp_path_factory.mktemp("node-reranker")
    export(tiny.save_reranker(root / "checkpoint"), root / "bundle", progress=False)
    return root / "bundle"


def run_node(node: str, *args, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([node, str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def node_json(node: str, *args) -> dict:
    result = run_node(node, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def node_api(node: str, source: str, **values) -> object:
    """Run SOURCE as an ES module with clients/node's API as `api` and VALUES as `values`; the JSON it prints last."""
    script = (f"import * as api from {json.dumps((CLIENT / 'src' / 'index.js').as_uri())};\n"
              f"const values = JSON.parse(process.argv[1]);\n{source}")
    result = subprocess.run([node, "--input-type=module", "-e", script, json.dumps(values)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def python_greedy(folder: Path, rows: list[list[int]], max_new_tokens: int) -> list[dict]:
    gen = load(folder, provider="cpu").generator(max_new_tokens=max_new_tokens, temperature=0)
    gen.append_tokens(rows)
    while not gen.is_done():
        gen.generate_next_token()
    return [{"ids": gen.get_new_tokens(r), "finish": gen.finish_reason(r)} for r in range(len(rows))]


# -- install ---------------------------------------------------------------------------------
def test_the_lockfile_installs_from_the_npm_registry_alone():
    """onnxruntime-node's install script fetches CUDA binaries from NuGet unless told to skip."""
    lock = json.loads((CLIENT / "package-lock.json").read_text())
    resolved = [p["resolved"] for name, p in lock["packages"].items() if name and "resolved" in p]
    assert resolved and all(url.startswith("https://registry.npmjs.org/") for url in resolved), resolved
    assert "onnxruntime-node-install=skip" in (CLIENT / ".npmrc").read_text()


# -- the Node.js suite on every kind of bundle -----------------------------------------------
def test_node_suite_passes_on_the_tiny_and_the_real_bundles(node, bundles, tiny_int4, prompt_bundle, reranker_bundle,
                                                            smollm2_bundle, smollm2_int8_bundle, minilm_bundle,
                                                            minilm_int8_bundle, mpnet_bundle):
    folders = [bundles(name)[0] for name in TINY] + [tiny_int4, prompt_bundle, reranker_bundle, smollm2_bundle,
                                                     smollm2_int8_bundle, minilm_bundle, minilm_int8_bundle,
                                                     mpnet_bundle]
    result = subprocess.run(["npm", "test", "--silent"], cwd=CLIENT, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "EDGELM_NODE_BUNDLES": os.pathsep.join(map(str, folders))})
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    assert "# fail 0" in result.stdout and "# pass 0" not in result.stdout, result.stdout[-2000:]


def test_node_suite_refuses_to_pass_without_bundles(node):
    result = subprocess.run(["npm", "test", "--silent"], cwd=CLIENT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "EDGELM_NODE_BUNDLES": ""})
    assert result.returncode != 0 and "EDGELM_NODE_BUNDLES" in result.stdout + result.stderr


# -- the same answers as Python --------------------------------------------------------------
@pytest.mark.parametrize("name", tiny.decoder_cases())
def test_node_greedy_ids_equal_python_on_tiny_decoders(node, bundles, name):
    """One greedy batch of rows of different lengths. With LongRoPE (phi3) the rows cross the switch at different
    times (the longest when its prompt is fed, the one of exactly ROPE_SWITCH tokens at its first step, the short
    ones while decoding unless they end first), so a batched step runs some rows and reruns others alone."""
    folder, manifest = bundles(name)
    lm = load(folder, provider="cpu")
    long = lm.encode("Once upon a time there was a tiny model that ran on an edge box. Rain falls softly on the roof")
    rows = [lm.encode("The quick brown fox"), lm.encode("Paris is the capital and largest city of France. It"),
            long[:ROPE_SWITCH], long]
    assert len(rows[0]) + 24 > ROPE_SWITCH and max(len(r) for r in rows[:2]) < ROPE_SWITCH < len(long)
    assert manifest.kv_cache.rope_switch in (None, ROPE_SWITCH)
    got = node_json(node, "generate", folder, "--ids-json", json.dumps(rows), "--max-new-tokens", 24)["rows"]
    assert got == python_greedy(folder, rows, 24)


def test_node_greedy_ids_equal_python_on_smollm2_float_and_int8(node, smollm2_bundle, smollm2_int8_bundle):
    lm = load(smollm2_bundle, provider="cpu")
    rows = [lm.encode([{"role": "user", "content": "Write a haiku about the sea."}]),
            lm.encode("The three primary colours are"),
            lm.encode([{"role": "user", "content": "用一句话介绍巴黎。"}])]
    for folder in (smollm2_bundle, smollm2_int8_bundle):
        got = node_json(node, "generate", folder, "--ids-json", json.dumps(rows), "--max-new-tokens", 32)["rows"]
        assert got == python_greedy(folder, rows, 32), folder.name


def test_node_chat_text_equals_python_on_smollm2_int8(node, smollm2_int8_bundle):
    prompt = "What is the capital of France? Answer in one word."
    got = node_json(node, "generate", smollm2_int8_bundle, "--prompt", prompt, "--chat", "--max-new-tokens", 16)
    lm = load(smollm2_int8_bundle, provider="cpu")
    want = lm.complete([prompt], chat=True, max_new_tokens=16, temperature=0)[0]
    assert got["ids"] == want.token_ids and got["text"] == want.text and "Paris" in got["text"]


def test_node_embeddings_equal_python_on_minilm_float_and_int8(node, minilm_bundle, minilm_int8_bundle):
    texts = ["A man is eating food.", "今天天气很好。", "Edge boxes 🚀 run models.", "ok"]
    for folder, atol in ((minilm_bundle, 1e-5), (minilm_int8_bundle, 2e-3)):
        got = np.asarray(node_json(node, "embed", folder, "--texts-json", json.dumps(texts))["vectors"])
        np.testing.assert_allclose(got, load(folder, provider="cpu").embed(texts), atol=atol, err_msg=folder.name)


def test_node_embeddings_with_and_without_a_prompt_equal_python(node, prompt_bundle):
    """The default prompt, each named one (prompt_length fed, the prompt's tokens left out of pooling), and none."""
    encoder = load(prompt_bundle, provider="cpu")
    assert "prompt_length" in encoder.manifest.input_names() and encoder.manifest.prompts == PROMPTS
    vectors = {}
    for prompt in (None, "query", "document"):
        args = ("--prompt", prompt) if prompt else ()
        vectors[prompt] = np.asarray(node_json(node, "embed", prompt_bundle, "--texts-json", json.dumps(PROMPTED_TEXTS),
                                               *args)["vectors"])
        want = encoder.embed(PROMPTED_TEXTS, prompt=prompt)
        np.testing.assert_allclose(vectors[prompt], want, atol=1e-5, err_msg=str(prompt))
    np.testing.assert_array_equal(vectors[None], vectors["query"])  # the default prompt
    assert np.abs(vectors["query"] - vectors["document"]).max() > 1e-2  # the prompts matter, so the check has teeth
    plain = node_api(node, "const enc = await api.load(values.folder);\n"
                           "const rows = await enc.output(values.texts, 'sentence_embedding');\n"
                           "console.log(JSON.stringify(rows.map((r) => Array.from(r.values))));",
                     folder=str(prompt_bundle), texts=PROMPTED_TEXTS)  # no prompt at all: prompt_length 0
    np.testing.assert_allclose(plain, np.stack(encoder.output(PROMPTED_TEXTS, "sentence_embedding")), atol=1e-5)
    assert np.abs(np.asarray(plain) - vectors["query"]).max() > 1e-2


def test_node_unknown_prompt_is_one_error_line_listing_the_prompts(node, prompt_bundle):
    result = run_node(node, "embed", prompt_bundle, "--texts-json", '["a text"]', "--prompt", "title")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "prompt 'title' is not one of this bundle's prompts" in lines[0], result.stderr
    assert "use one of 'query', 'document'" in lines[0]


def test_node_rerank_scores_and_order_equal_python(node, reranker_bundle):
    """Short pairs (with and without top_n) and pairs over max_context, cut longest_first on both sides."""
    encoder = load(reranker_bundle, provider="cpu")
    long_query = " ".join([QUERY] * 10)
    long_documents = [DOCUMENTS[0], " ".join(DOCUMENTS * 3), "France", " ".join(DOCUMENTS[:3])]
    cases = ((QUERY, DOCUMENTS, None), (QUERY, DOCUMENTS, 3), (long_query, long_documents, None))
    for query, documents, top_n in cases:
        args = ("--top-n", top_n) if top_n else ()
        got = node_json(node, "rerank", reranker_bundle, "--query", query, "--documents-json", json.dumps(documents),
                        *args)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Python says that the long pairs were cut
            want = encoder.rerank(query, documents, top_n=top_n)
        assert [r["index"] for r in got["results"]] == [w["index"] for w in want], (query[:20], top_n)
        np.testing.assert_allclose([r["score"] for r in got["results"]], [w["score"] for w in want], atol=1e-5)
    scores = [w["score"] for w in encoder.rerank(QUERY, DOCUMENTS)]
    assert len(set(np.round(scores, 4))) == len(DOCUMENTS)  # distinct scores: the order comparison means something
    pairs = [[q, d] for q in (QUERY, long_query) for d in long_documents]
    ids = node_api(node, "const enc = await api.load(values.folder);\n"
                         "console.log(JSON.stringify(enc.encodePairs(values.pairs).map((e) => e.ids)));",
                   folder=str(reranker_bundle), pairs=pairs)
    assert ids == encoder.encode_pairs([tuple(p) for p in pairs])


def test_node_rerank_refuses_a_classifier_with_three_labels_in_one_line(node, bundles):
    folder = bundles("bert/text-classification")[0]
    result = run_node(node, "rerank", folder, "--query", QUERY, "--documents-json", '["a"]')
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "rerank needs a cross-encoder" in lines[0] and "has 3 labels" in lines[0], result.stderr


# -- verify in Node --------------------------------------------------------------------------
def test_node_verify_fails_on_a_changed_weight_and_a_swapped_tokenizer(node, bundles, tmp_path):
    src, _ = bundles("llama")
    weight, tokenizer = tmp_path / "weight", tmp_path / "tokenizer"
    for folder in (weight, tokenizer):
        shutil.copytree(src, folder)
    scale_largest_weight(weight, 1.5)
    shutil.copy2(bundles("gpt2")[0] / "tokenizer.json", tokenizer / "tokenizer.json")
    for folder, kind in ((weight, "greedy"), (tokenizer, "tokens")):
        reseal(folder)
        result = run_node(node, "verify", folder)
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        assert not report["passed"] and kind in {v["kind"] for v in report["vectors"] if not v["passed"]}


def test_node_refuses_a_damaged_file_with_one_line(node, bundles, tmp_path):
    folder = tmp_path / "llama"
    shutil.copytree(bundles("llama")[0], folder)
    scale_largest_weight(folder, 1.5)  # not resealed: the checksum no longer matches
    result = run_node(node, "verify", folder)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "model.onnx" in lines[0], result.stderr
