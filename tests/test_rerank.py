"""Rerankers: a one-label text-classification bundle scores (query, document) pairs as sentence-transformers'
CrossEncoder does, through the Python API, `edgelm rerank` and POST /v1/rerank.

The reference is CrossEncoder on the checkpoint the bundle was exported from, on the same pairs:
scores are its predict() numbers (the sigmoid of the one logit), the order its rank() order.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

from edgelm.errors import GenerationError
from edgelm.export import export
from edgelm.runtime import load
from tests import tiny
from tests.test_runtime_cli import assert_one_error_line, json_lines, run_cli
from tests.test_serve import Server

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Rain falls softly on the roof; the kiosk hums along.",
    "edgelm ships language models to small machines without torch.",
    "Once upon a time there was a tiny model that ran on an edge box.",
    "France",
    "What is the capital of France? The capital of France is Paris.",
]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    """(bundle folder, checkpoint folder) of a tiny cross-encoder, exported once for this module."""
    root = tmp_path_factory.mktemp("reranker")
    checkpoint = tiny.save_reranker(root / "checkpoint")
    export(checkpoint, root / "bundle", progress=False)
    return root / "bundle", checkpoint


@pytest.fixture(scope="module")
def cross_encoder(reranker):
    return CrossEncoder(str(reranker[1]), device="cpu")


@pytest.fixture(scope="module")
def encoder(reranker):
    return load(reranker[0], provider="cpu")


def scores_by_index(results: list[dict]) -> np.ndarray:
    return np.array([r["score"] for r in sorted(results, key=lambda r: r["index"])])


# -- the Python API against CrossEncoder ----------------------------------------------------------
def test_the_bundle_is_a_one_label_classifier_that_takes_token_types(encoder):
    assert encoder.task == "text-classification" and len(encoder.manifest.labels) == 1
    assert "token_type_ids" in encoder.manifest.input_names()  # so the pair's second segment must be fed as type 1


def test_rerank_scores_and_order_equal_cross_encoder(encoder, cross_encoder):
    results = encoder.rerank(QUERY, DOCUMENTS, batch_size=3)  # three padded batches
    want = cross_encoder.predict([(QUERY, d) for d in DOCUMENTS])
    assert sorted(r["index"] for r in results) == list(range(len(DOCUMENTS)))
    np.testing.assert_allclose(scores_by_index(results), want, atol=1e-5)
    assert [r["index"] for r in results] == [r["corpus_id"] for r in cross_encoder.rank(QUERY, DOCUMENTS)]
    assert [r["index"] for r in results] == list(np.argsort(-want, kind="stable"))
    assert len(set(np.round(want, 4))) == len(DOCUMENTS)  # distinct scores: the order comparison means something


def test_top_n_keeps_the_n_best_in_order(encoder):
    every = encoder.rerank(QUERY, DOCUMENTS)
    assert encoder.rerank(QUERY, DOCUMENTS, top_n=3) == every[:3]
    assert encoder.rerank(QUERY, DOCUMENTS, top_n=100) == every


def test_pairs_over_max_context_are_cut_as_cross_encoder_cuts_them(encoder, cross_encoder):
    """A long query with short and long documents: transformers' longest_first takes tokens off the longer side."""
    limit = encoder.manifest.max_context
    long_query = " ".join([QUERY] * 10)
    documents = [DOCUMENTS[0], " ".join(DOCUMENTS * 3), "France", " ".join(DOCUMENTS[:3])]
    pairs = [(long_query, d) for d in documents]
    ids = encoder.encode_pairs(pairs)
    assert all(len(x) == limit for x in ids)  # every pair is over the limit and cut to it
    for row, pair in zip(ids, pairs):
        assert row == cross_encoder.preprocess([pair])["input_ids"][0].tolist()
    with pytest.warns(UserWarning, match=f"4 of 4 pairs were truncated to {limit} tokens") as record:
        results = encoder.rerank(long_query, documents)
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    np.testing.assert_allclose(scores_by_index(results), cross_encoder.predict(pairs), atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing cut: no warning
        encoder.rerank(QUERY, DOCUMENTS[:2])


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda e: e.rerank(QUERY, []), "documents is an empty list"),
    (lambda e: e.rerank(QUERY, "one document"), "documents must be a list of str, got one str"),
    (lambda e: e.rerank(QUERY, ["fine", "  "]), "document 1 is empty or only whitespace"),
    (lambda e: e.rerank("   ", DOCUMENTS), "query is empty or only whitespace"),
    (lambda e: e.rerank(None, DOCUMENTS), "query must be a str, got NoneType"),
    (lambda e: e.rerank(QUERY, DOCUMENTS, top_n=0), "top_n must be a whole number >= 1"),
    (lambda e: e.rerank(QUERY, DOCUMENTS, batch_size=0), "batch_size must be a whole number >= 1"),
    (lambda e: e.score_pairs([]), "pairs is an empty list"),
])
def test_bad_input_raises_one_clear_error(encoder, call, message):
    with pytest.raises(GenerationError, match=message) as error:
        call(encoder)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, message", [
    ("bert/text-classification", "rerank needs a cross-encoder \\(a text classifier with one label\\), but .* has 3 labels"),
    ("bert/feature-extraction", "rerank needs a text-classification bundle with one label .* is a feature-extraction bundle"),
    ("gpt2", "rerank needs a text-classification bundle, but .* is a text-generation bundle"),
])
def test_a_bundle_that_is_not_a_cross_encoder_is_refused_naming_what_it_is(bundles, name, message):
    with pytest.raises(GenerationError, match=message) as error:
        load(bundles(name)[0], provider="cpu").rerank(QUERY, DOCUMENTS)
    assert "\n" not in str(error.value)


# -- edgelm rerank --------------------------------------------------------------------------------
def test_cli_prints_one_json_line_per_document_best_first_equal_to_the_api(reranker, encoder):
    rows = json_lines(run_cli("rerank", reranker[0], QUERY, *DOCUMENTS, "--top-n", 4, "--provider", "cpu"))
    want = encoder.rerank(QUERY, DOCUMENTS, top_n=4)
    assert [r["index"] for r in rows] == [w["index"] for w in want]
    assert [r["document"] for r in rows] == [DOCUMENTS[w["index"]] for w in want]
    np.testing.assert_allclose([r["score"] for r in rows], [w["score"] for w in want], atol=1e-7)


def test_cli_reads_documents_from_stdin(reranker, encoder):
    rows = json_lines(run_cli("rerank", reranker[0], QUERY, "--file", "-", "--provider", "cpu",
                              stdin="\n".join(DOCUMENTS) + "\n"))
    assert [r["index"] for r in rows] == [w["index"] for w in encoder.rerank(QUERY, DOCUMENTS)]


def test_cli_errors_are_one_line(reranker, bundles):
    assert_one_error_line(run_cli("rerank", reranker[0], QUERY, "--provider", "cpu"), "no documents")
    assert_one_error_line(run_cli("rerank", reranker[0], " ", "a document", "--provider", "cpu"), "query is empty")
    assert_one_error_line(run_cli("rerank", bundles("bert/text-classification")[0], QUERY, "a document", "--provider", "cpu"),
                          "has 3 labels", "edgelm classify")


# -- POST /v1/rerank ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(reranker, bundles):
    srv = Server(str(reranker[0]), str(bundles("bert/feature-extraction")[0]), "--name", "rr", "--name", "emb")
    yield srv
    srv.stop()


def test_rerank_route_answers_with_cohere_and_jina_shapes_equal_to_the_api(server, encoder):
    response = server.post("/v1/rerank", {"model": "rr", "query": QUERY, "documents": DOCUMENTS, "top_n": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    want = encoder.rerank(QUERY, DOCUMENTS, top_n=3)
    assert body["model"] == "rr" and set(body) == {"model", "results", "usage"}
    assert [r["index"] for r in body["results"]] == [w["index"] for w in want]
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [w["score"] for w in want], atol=1e-7)
    assert all(set(r) == {"index", "relevance_score"} for r in body["results"])
    tokens = sum(map(len, encoder.encode_pairs([(QUERY, d) for d in DOCUMENTS])))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


def test_rerank_route_returns_documents_when_asked_and_cuts_long_ones(server, encoder):
    documents = [" ".join(DOCUMENTS * 3), DOCUMENTS[0]]  # the first is over max_context: cut, as CrossEncoder cuts it
    body = server.post("/v1/rerank", {"model": "rr", "query": QUERY, "documents": documents,
                                      "return_documents": True}).json()
    with pytest.warns(UserWarning, match="1 of 2 pairs were truncated"):
        want = encoder.rerank(QUERY, documents)
    assert [(r["index"], r["document"]["text"]) for r in body["results"]] == [(w["index"], documents[w["index"]]) for w in want]
    np.testing.assert_allclose([r["relevance_score"] for r in body["results"]], [w["score"] for w in want], atol=1e-7)


@pytest.mark.parametrize("body, status, param", [
    ({"model": "rr", "documents": ["a"]}, 400, "query"),
    ({"model": "rr", "query": " ", "documents": ["a"]}, 400, "query"),
    ({"model": "rr", "query": "q", "documents": []}, 400, "documents"),
    ({"model": "rr", "query": "q", "documents": ["a", 3]}, 400, "documents"),
    ({"model": "rr", "query": "q", "documents": ["a", ""]}, 400, "documents"),
    ({"model": "rr", "query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
    ({"model": "rr", "query": "q", "documents": ["a"], "return_documents": "yes"}, 400, "return_documents"),
    ({"model": "emb", "query": "q", "documents": ["a"]}, 400, "model"),
    ({"model": "nope", "query": "q", "documents": ["a"]}, 404, "model"),
])
def test_bad_rerank_requests_get_openai_error_bodies(server, body, status, param):
    response = server.post("/v1/rerank", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "\n" not in error["message"]


def test_embeddings_on_the_reranker_point_to_the_rerank_route(server):
    response = server.post("/v1/embeddings", {"model": "rr", "input": "x"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
    response = server.post("/v1/chat/completions", {"model": "rr", "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400 and "use /v1/rerank" in response.json()["error"]["message"]
