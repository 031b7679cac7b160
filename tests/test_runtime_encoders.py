"""The Encoder front end against transformers and sentence-transformers on the same texts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer, models

from edgelm.errors import GenerationError
from edgelm.runtime.bundle import open_bundle
from edgelm.runtime.encoder import Encoder
from tests import tiny
from tests.conftest import MINILM

TEXTS = [  # deliberately of very different lengths, the longest not first
    "short",
    "The quick brown fox jumps over the lazy dog.",
    "Paris",
    "Once upon a time there was a tiny model that ran on an edge box, and the rain fell softly on the roof.",
]


def open_encoder(bundles, name: str) -> Encoder:
    return Encoder(open_bundle(bundles(name)[0], provider="cpu"))


def reference(checkpoints, name: str, auto: str, texts: list[str], **tokenize):
    """transformers' tokenizer and per-text logits (batch of one, so no padding is involved)."""
    folder = checkpoints(name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = getattr(transformers, auto).from_pretrained(folder).eval()
    logits = []
    for text in texts:
        batch = tokenizer(text, return_tensors="pt", **tokenize)
        with torch.no_grad():
            logits.append(model(**batch).logits[0].numpy())  # (labels,) or (seq, n)
    return tokenizer, model, logits


def mask_texts(mask: str) -> list[str]:
    return [f"The quick brown {mask} jumps over the lazy dog.", f"{mask} is the capital of France.",
            f"Rain falls softly on the {mask}; the kiosk hums along and the tiny model runs on."]


# -- text classification ------------------------------------------------------------------------
@pytest.mark.parametrize("name", tiny.encoder_cases("text-classification"))
def test_classifier_logits_and_scores_equal_transformers(bundles, checkpoints, name):
    encoder = open_encoder(bundles, name)
    _, model, ref = reference(checkpoints, name, "AutoModelForSequenceClassification", TEXTS)
    logits = encoder.logits(TEXTS, batch_size=3)  # two batches, each padded
    assert [x.shape for x in logits] == [(3,)] * len(TEXTS)
    np.testing.assert_allclose(np.stack(logits), np.stack(ref), atol=1e-4)

    assert encoder.manifest.labels == tuple(model.config.id2label[i] for i in range(3))
    results = encoder.classify(TEXTS, top_k=None)
    for result, row in zip(results, ref):
        probs = torch.softmax(torch.from_numpy(row), -1).numpy()
        order = np.argsort(-probs)
        assert [r["label"] for r in result] == [encoder.manifest.labels[i] for i in order]
        np.testing.assert_allclose([r["score"] for r in result], probs[order], atol=1e-5)
    best = encoder.classify(TEXTS[1])  # one str, top_k=1: a list of one dict
    assert len(best) == 1 and best[0]["label"] == results[1][0]["label"]
    assert best[0]["score"] == pytest.approx(results[1][0]["score"], abs=1e-6)
    assert len(encoder.classify(TEXTS, top_k=2)[0]) == 2


def test_texts_longer_than_max_context_are_truncated_like_transformers_with_one_warning(bundles, checkpoints):
    name = "bert/text-classification"
    encoder = open_encoder(bundles, name)
    long_text = " ".join(TEXTS[1:] * 10)  # well over the tiny model's 64 positions
    texts = [TEXTS[0], long_text, long_text + " again"]
    _, _, ref = reference(checkpoints, name, "AutoModelForSequenceClassification", texts,
                          truncation=True, max_length=encoder.manifest.max_context)
    with pytest.warns(UserWarning, match="2 of 3 texts were truncated to 64 tokens") as record:
        logits = encoder.logits(texts)
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    np.testing.assert_allclose(np.stack(logits), np.stack(ref), atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing truncated: no warning
        encoder.logits(TEXTS)


# -- token classification -----------------------------------------------------------------------
def surface(token: str) -> str:
    """The text a WordPiece or byte-level BPE token stands for (ASCII texts only)."""
    return token.removeprefix("##").replace("Ġ", " ")


@pytest.mark.parametrize("name", tiny.encoder_cases("token-classification"))
def test_token_classifier_logits_and_tokens_equal_transformers(bundles, checkpoints, name):
    encoder = open_encoder(bundles, name)
    tokenizer, _, ref = reference(checkpoints, name, "AutoModelForTokenClassification", TEXTS)
    logits = encoder.logits(TEXTS, batch_size=2)
    for got, want in zip(logits, ref):
        assert got.shape == want.shape  # (seq, labels), unpadded
        np.testing.assert_allclose(got, want, atol=1e-4)

    for text, entries, row in zip(TEXTS, encoder.classify_tokens(TEXTS), ref):
        hf = tokenizer(text, return_special_tokens_mask=True, return_offsets_mapping=True)
        real = [i for i, special in enumerate(hf["special_tokens_mask"]) if not special]
        assert [e["token"] for e in entries] == tokenizer.convert_ids_to_tokens([hf["input_ids"][i] for i in real])
        assert [(e["start"], e["end"]) for e in entries] == [tuple(hf["offset_mapping"][i]) for i in real]
        assert [e["label"] for e in entries] == [encoder.manifest.labels[row[i].argmax()] for i in real]
        for e in entries:
            if e["token"] != tokenizer.unk_token:  # the tiny vocabulary has no ","
                assert text[e["start"]:e["end"]] == surface(e["token"])
            assert 0 < e["score"] <= 1
    assert encoder.classify_tokens(TEXTS[1]) == encoder.classify_tokens([TEXTS[1]])[0]


# -- fill-mask ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", tiny.encoder_cases("fill-mask"))
def test_fill_mask_candidates_equal_transformers_top_k(bundles, checkpoints, name):
    encoder = open_encoder(bundles, name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoints(name))
    texts = mask_texts(tokenizer.mask_token)
    _, _, ref = reference(checkpoints, name, "AutoModelForMaskedLM", texts)
    results = encoder.fill_mask(texts, top_k=5, batch_size=2)
    assert len(results) == len(texts) and all(len(per_text) == 1 for per_text in results)
    for text, per_text, row in zip(texts, results, ref):
        ids = tokenizer(text)["input_ids"]
        pos = ids.index(tokenizer.mask_token_id)
        probs = torch.softmax(torch.from_numpy(row[pos]), -1)
        top = torch.topk(probs, 5)
        candidates = per_text[0]
        assert [c["token_id"] for c in candidates] == top.indices.tolist()
        np.testing.assert_allclose([c["score"] for c in candidates], top.values.numpy(), atol=1e-5)
        for c in candidates:
            filled = ids[:pos] + [c["token_id"]] + ids[pos + 1:]
            assert c["sequence"] == tokenizer.decode(filled, skip_special_tokens=True)
            assert c["token"] == (tokenizer.decode([c["token_id"]]).strip() or tokenizer.convert_ids_to_tokens(c["token_id"]))
    assert encoder.fill_mask(texts[0], top_k=5) == results[0][0]  # one str, one mask: the candidate list


def test_fill_mask_gives_one_candidate_list_per_mask_in_text_order(bundles):
    encoder = open_encoder(bundles, "bert/fill-mask")
    text = "The quick [MASK] fox jumps over the [MASK] dog."
    per_mask = encoder.fill_mask(text, top_k=3)
    assert len(per_mask) == 2 and all(len(c) == 3 for c in per_mask)
    assert encoder.fill_mask([text], top_k=3) == [per_mask]
    first = per_mask[0][0]
    assert first["sequence"].count("[MASK]") == 1  # the other mask stays visible
    assert "[CLS]" not in first["sequence"] and "[SEP]" not in first["sequence"]


def test_fill_mask_text_without_mask_names_the_mask_token(bundles):
    encoder = open_encoder(bundles, "roberta/fill-mask")
    with pytest.raises(GenerationError, match=r"text 1 has no <mask> token"):
        encoder.fill_mask(["Paris is the <mask> of France.", "no mask here"])


# -- embeddings ---------------------------------------------------------------------------------
def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embed_equals_sentence_transformers_and_keeps_order_across_batches(bundles, checkpoints):
    encoder = open_encoder(bundles, "bert/feature-extraction")
    folder = str(checkpoints("bert/feature-extraction"))
    transformer = models.Transformer(folder)  # as export/loading.py builds it: no modules.json, mean pooling
    st = SentenceTransformer(modules=[transformer, models.Pooling(transformer.get_word_embedding_dimension(),
                                                                  pooling_mode="mean")], device="cpu").eval()
    vectors = encoder.embed(TEXTS, batch_size=2)
    assert vectors.shape == (len(TEXTS), encoder.manifest.pooling.dimension) and vectors.dtype == np.float32
    want = st.encode(TEXTS, convert_to_numpy=True)
    assert cosines(vectors, want).min() >= 0.9999
    np.testing.assert_allclose(vectors, want, atol=1e-4)
    single = encoder.embed(TEXTS[3])
    assert single.shape == (encoder.manifest.pooling.dimension,)
    np.testing.assert_allclose(single, vectors[3], atol=1e-5)


@pytest.mark.real
def test_minilm_embeddings_equal_sentence_transformers_and_long_text_warns(minilm_bundle):
    encoder = Encoder(open_bundle(minilm_bundle, provider="cpu"))
    long_text = " ".join(["The committee reviewed the proposal in detail and asked for a revised budget."] * 30)
    texts = ["A man is eating food.", "Edge boxes run small language models.", long_text,
             "The new movie is awesome", "Paris is the capital of France.", "ok"]
    with pytest.warns(UserWarning, match="1 of 6 texts were truncated to 256 tokens"):
        vectors = encoder.embed(texts, batch_size=4)
    want = SentenceTransformer(str(MINILM), device="cpu").encode(texts, convert_to_numpy=True)
    assert vectors.shape == want.shape == (6, 384)
    assert cosines(vectors, want).min() >= 0.9999


# -- errors -------------------------------------------------------------------------------------
def test_a_decoder_bundle_is_refused_naming_the_call_and_its_task(bundles):
    with pytest.raises(GenerationError, match="embed") as error:
        Encoder(open_bundle(bundles("gpt2")[0], provider="cpu")).embed(["hello"])
    assert "text-generation" in str(error.value)


def test_a_call_the_bundle_task_does_not_serve_is_refused(bundles):
    encoder = open_encoder(bundles, "bert/fill-mask")
    with pytest.raises(GenerationError, match="classify needs a text-classification bundle.*fill-mask"):
        encoder.classify("hello")
    with pytest.raises(GenerationError, match="embed needs a feature-extraction"):
        encoder.embed("hello")


@pytest.mark.parametrize("texts, message", [
    ([], "empty list"),
    ([""], "text 0 is empty"),
    (["fine", "   "], "text 1 is empty or only whitespace"),
    ([3], "text 0 is int, not str"),
    (None, "must be a str or a list of str, got NoneType"),
])
def test_bad_texts_raise_one_clear_error(bundles, texts, message):
    with pytest.raises(GenerationError, match=message):
        open_encoder(bundles, "bert/text-classification").classify(texts)


def test_every_bad_text_is_reported_at_once(bundles):
    with pytest.raises(GenerationError) as error:
        open_encoder(bundles, "bert/text-classification").logits(["ok", 3, "", b"x", " "])
    assert "text 1 is int" in str(error.value) and "text 3 is bytes" in str(error.value)
    assert "texts 2, 4 are empty" in str(error.value)


def test_bad_top_k_and_batch_size_raise(bundles):
    classifier = open_encoder(bundles, "bert/text-classification")
    with pytest.raises(GenerationError, match="top_k must be a whole number >= 1"):
        classifier.classify("hello", top_k=0)
    with pytest.raises(GenerationError, match="batch_size must be a whole number >= 1, got 0"):
        classifier.logits("hello", batch_size=0)
    with pytest.raises(GenerationError, match="top_k must be a whole number >= 1, got 0"):
        open_encoder(bundles, "bert/fill-mask").fill_mask("the [MASK] dog", top_k=0)


def test_cpu_sessions_leave_out_the_fusions_that_are_slower_on_the_cpu(bundles, monkeypatch):
    """onnxruntime's SkipLayerNormalization kernel is ~4x slower on the CPU than the Add and
    LayerNormalization it would replace (runtime/session.py), so the runtime does not fuse them."""
    import edgelm.runtime.session as session

    options = []
    real = session.ort.InferenceSession
    monkeypatch.setattr(session.ort, "InferenceSession", lambda *args, **kwargs: options.append(kwargs) or real(*args, **kwargs))
    encoder = open_encoder(bundles, "bert/feature-extraction")
    assert options and "SkipLayerNormFusion" in options[-1]["disabled_optimizers"]
    assert encoder.embed(["The quick brown fox."]).shape == (1, encoder.manifest.pooling.dimension)
