"""Named prompts of embedding bundles: recorded from config_sentence_transformers.json at export, applied by
`Encoder.embed(prompt=...)`, `edgelm embed --prompt` and /v1/embeddings' "prompt_name" exactly as
SentenceTransformer.encode(prompt_name=...) applies them, with Pooling(include_prompt=False) too (its graph
then takes `prompt_length` and pools only the text's tokens).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

from edgelm.errors import BundleError, GenerationError
from edgelm.export import export
from edgelm.runtime import load, verify
from edgelm.runtime.manifest import Manifest, read_manifest
from edgelm.runtime.prompts import prompt_length, special_ids
from tests.test_runtime_cli import assert_one_error_line, json_lines, run_cli
from tests.test_serve import Server

PROMPTS = {"query": "query: ", "document": "passage: "}
TEXTS = ["short", "The quick brown fox jumps over the lazy dog.", "Paris",
         "Once upon a time there was a tiny model that ran on an edge box, and the rain fell softly on the roof."]


def save_st(folder, checkpoint, include_prompt: bool, default: str | None) -> SentenceTransformer:
    transformer = Transformer(str(checkpoint))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean", include_prompt=include_prompt)
    st = SentenceTransformer(modules=[transformer, pooling], prompts=PROMPTS, default_prompt_name=default, device="cpu")
    st.save(str(folder))
    return SentenceTransformer(str(folder), device="cpu").eval()  # as saved: the prompts come back from its config


KINDS = {"pooled": (True, None), "skipped": (False, "query")}  # kind -> (include_prompt, default prompt name)


@pytest.fixture(scope="module")
def models(checkpoints, tmp_path_factory):
    """kind -> (bundle folder, SentenceTransformer), each exported on first use: 'pooled' pools the prompt's tokens
    with the text's (no default prompt); 'skipped' leaves them out (include_prompt=False, so its graph takes
    prompt_length) and has the default prompt 'query'."""
    root = tmp_path_factory.mktemp("prompts")

    class Models(dict):
        def __missing__(self, kind):
            include, default = KINDS[kind]
            st = save_st(root / f"st-{kind}", checkpoints("bert/feature-extraction"), include, default)
            try:
                export(root / f"st-{kind}", root / kind, progress=False)
            except Exception as e:  # reported by every test that needs it, without exporting again
                self[kind] = e
            else:
                self[kind] = (root / kind, st)
            return self[kind]

        def __getitem__(self, kind):
            value = super().__getitem__(kind)
            if isinstance(value, Exception):
                raise value
            return value

    return Models()


# -- the manifest ---------------------------------------------------------------------------------
def test_export_records_the_prompts_and_the_default(models):
    pooled, skipped = read_manifest(models["pooled"][0]), read_manifest(models["skipped"][0])
    assert (pooled.prompts, pooled.default_prompt) == (PROMPTS, None)
    assert (skipped.prompts, skipped.default_prompt) == (PROMPTS, "query")
    assert "prompt_length" in skipped.input_names() and "prompt_length" not in pooled.input_names()
    assert Manifest.from_dict(json.loads(json.dumps(skipped.to_dict()))) == skipped


def test_a_manifest_with_a_default_prompt_it_does_not_name_or_bad_prompts_is_refused(models):
    data = read_manifest(models["skipped"][0]).to_dict()
    with pytest.raises(BundleError, match="default_prompt 'title' is not one of its prompts"):
        Manifest.from_dict({**data, "default_prompt": "title"})
    with pytest.raises(BundleError, match="field prompts must be an object of strings"):
        Manifest.from_dict({**data, "prompts": {"query": 3}})
    old = {k: v for k, v in data.items() if k not in ("prompts", "default_prompt")}  # a bundle from before prompts
    assert (Manifest.from_dict(old).prompts, Manifest.from_dict(old).default_prompt) == ({}, None)


# -- embed against SentenceTransformer.encode -------------------------------------------------------
@pytest.mark.parametrize("kind", ["pooled", "skipped"])
@pytest.mark.parametrize("name", [None, "query", "document"])
def test_embed_with_a_prompt_equals_sentence_transformers(models, kind, name):
    folder, st = models[kind]
    vectors = load(folder, provider="cpu").embed(TEXTS, prompt=name, batch_size=3)  # two padded batches
    np.testing.assert_allclose(vectors, st.encode(TEXTS, prompt_name=name), atol=1e-5)


def test_the_default_prompt_applies_when_none_is_named(models):
    folder, st = models["skipped"]
    encoder = load(folder, provider="cpu")
    np.testing.assert_allclose(encoder.embed(TEXTS), encoder.embed(TEXTS, prompt="query"), atol=0)
    assert not np.allclose(encoder.embed(TEXTS), encoder.embed(TEXTS, prompt="document"), atol=1e-3)


def test_a_graph_that_leaves_the_prompt_out_pools_only_the_text(models):
    """Same weights, same prompted texts: pooling with and without the prompt's tokens must differ, and each
    equal its own sentence-transformers model (the prompt_length fed is the one that model computes)."""
    pooled = load(models["pooled"][0], provider="cpu").embed(TEXTS, prompt="document")
    skipped = load(models["skipped"][0], provider="cpu").embed(TEXTS, prompt="document")
    assert np.abs(pooled - skipped).max() > 1e-2
    np.testing.assert_allclose(skipped, models["skipped"][1].encode(TEXTS, prompt_name="document"), atol=1e-5)


@pytest.mark.parametrize("prompt", ["query: ", "passage: ", "Represent this sentence for searching relevant passages: ",
                                    "[MASK]", "title: none | text: "])
def test_prompt_length_is_counted_as_sentence_transformers_counts_it(models, prompt):
    folder, st = models["pooled"]
    encoder = load(folder, provider="cpu")
    assert prompt_length(encoder.bundle.tokenizer, special_ids(encoder.bundle.tokenizer, encoder.manifest), prompt) == st[0]._get_prompt_length(prompt)


def test_an_unknown_prompt_name_lists_the_known_ones(models, bundles):
    with pytest.raises(GenerationError, match="prompt 'passage' is not one of this bundle's prompts; use one of 'query', 'document'"):
        load(models["pooled"][0], provider="cpu").embed(TEXTS, prompt="passage")
    old = load(bundles("bert/text-classification")[0], provider="cpu")
    with pytest.raises(GenerationError, match="it has none"):
        old.count_tokens(TEXTS, prompt="query")


def test_bundles_with_a_prompt_length_input_record_and_pass_their_conformance_vectors(models):
    folder = models["skipped"][0]
    report = verify(folder, provider="cpu")
    assert report.passed and {o.kind for o in report.outcomes} == {"tokens", "embedding"}
    feeds = load(folder, provider="cpu").feeds(TEXTS, batch_size=3)  # what int8-static calibrates on
    assert [f["prompt_length"].tolist() for f in feeds] == [[0], [0]]
    result = run_cli("verify", folder, "--provider", "cpu")
    assert result.returncode == 0, result.stdout + result.stderr


# -- edgelm embed --prompt --------------------------------------------------------------------------
def test_cli_embed_with_a_prompt_equals_the_api(models):
    folder, _ = models["skipped"]
    rows = json_lines(run_cli("embed", folder, *TEXTS, "--prompt", "document", "--provider", "cpu"))
    assert [r["text"] for r in rows] == TEXTS  # the texts as given, without the prompt
    want = load(folder, provider="cpu").embed(TEXTS, prompt="document")
    np.testing.assert_allclose(np.asarray([r["embedding"] for r in rows]), want, atol=1e-6)


def test_cli_embed_with_an_unknown_prompt_is_one_error_line(models):
    assert_one_error_line(run_cli("embed", models["pooled"][0], "a text", "--prompt", "title", "--provider", "cpu"),
                          "prompt 'title'", "'query', 'document'")


# -- /v1/embeddings with prompt_name ----------------------------------------------------------------
@pytest.fixture(scope="module")
def server(models):
    srv = Server(str(models["pooled"][0]), str(models["skipped"][0]), "--name", "pooled", "--name", "skipped")
    yield srv
    srv.stop()


@pytest.mark.parametrize("kind", ["pooled", "skipped"])
def test_embeddings_take_a_prompt_name_and_count_its_tokens(server, models, kind):
    encoder = load(models[kind][0], provider="cpu")
    got = server.client().embeddings.create(model=kind, input=TEXTS, extra_body={"prompt_name": "document"})
    np.testing.assert_allclose([d.embedding for d in got.data], encoder.embed(TEXTS, prompt="document"), atol=1e-5)
    tokens = sum(len(encoder.bundle.tokenizer.encode(PROMPTS["document"] + t).ids) for t in TEXTS)
    assert got.usage.prompt_tokens == got.usage.total_tokens == tokens


def test_embeddings_without_a_prompt_name_use_the_default_prompt(server, models):
    encoder = load(models["skipped"][0], provider="cpu")
    got = server.client().embeddings.create(model="skipped", input=TEXTS)
    np.testing.assert_allclose([d.embedding for d in got.data], encoder.embed(TEXTS, prompt="query"), atol=1e-5)


def test_requests_with_different_prompts_arriving_together_each_get_their_own(server, models):
    import concurrent.futures

    encoder = load(models["pooled"][0], provider="cpu")
    names = [None, "query", "document"] * 4
    want = {n: encoder.embed(TEXTS[1], prompt=n) for n in set(names)}
    body = lambda n: {"model": "pooled", "input": TEXTS[1], **({"prompt_name": n} if n else {})}  # noqa: E731
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(lambda n: server.post("/v1/embeddings", body(n)).json(), names))
    for name, response in zip(names, responses):
        np.testing.assert_allclose(response["data"][0]["embedding"], want[name], atol=1e-5)


@pytest.mark.parametrize("prompt_name, message", [("title", "prompt 'title' is not one of"), (3, "'prompt_name' must be str")])
def test_a_bad_prompt_name_is_a_400_naming_the_field(server, prompt_name, message):
    response = server.post("/v1/embeddings", {"model": "pooled", "input": "x", "prompt_name": prompt_name})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt_name" and message in error["message"]
