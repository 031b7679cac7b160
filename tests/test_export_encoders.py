"""Encoder export: every encoder family in the registry with every head it serves, verified against transformers."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer

from tests import tiny


def test_every_encoder_model_type_has_a_tiny_checkpoint():
    assert set(tiny.encoder_model_types()) <= set(tiny.ENCODERS)


@pytest.mark.parametrize("name", tiny.encoder_cases())
def test_encoder_export_passes_verification(bundles, name):
    task = name.split("/")[1]
    _, manifest = bundles(name)
    v = manifest.verification
    assert manifest.task == task and v["passed"] and v["tokenizer_ids_equal"] and v["weights_stored_once"]
    assert v["max_abs_diff"] <= v["tolerance"]
    if task == "feature-extraction":
        assert v["min_cosine"] >= 0.9999
    else:
        assert v["argmax_agreement"] == 1.0


@pytest.mark.parametrize("name", tiny.encoder_cases("text-classification"))
def test_classifier_logits_equal_transformers_and_labels_are_recorded(bundles, checkpoints, name):
    out, manifest = bundles(name)
    assert manifest.labels == ("NEGATIVE", "POSITIVE", "NEUTRAL")
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoints(name))
    model = transformers.AutoModelForSequenceClassification.from_pretrained(checkpoints(name))
    batch = tokenizer(["great product", "it broke after one day and support never answered"], padding=True, return_tensors="np")
    feed = {n: batch[n] for n in manifest.input_names()}
    logits = ort.InferenceSession(str(out / "model.onnx")).run(["logits"], feed)[0]
    with torch.no_grad():
        ref = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-5)


def test_inputs_follow_the_family_declaration(bundles):
    assert "token_type_ids" in bundles("bert/token-classification")[1].input_names()
    assert "token_type_ids" not in bundles("distilbert/token-classification")[1].input_names()
    assert bundles("roberta/fill-mask")[1].max_context == 64  # 66 positions, 2 reserved
    assert bundles("bert/fill-mask")[1].special_tokens.mask is not None


def test_feature_extraction_without_sentence_transformers_config_uses_mean_pooling(bundles):
    _, manifest = bundles("bert/feature-extraction")
    assert (manifest.pooling.mode, manifest.pooling.normalize, manifest.pooling.dimension) == ("mean", False, 32)
    assert manifest.pooling.output in manifest.output_names()


def test_sentence_transformers_pooling_config_is_read_and_traced_into_the_graph(checkpoints, tmp_path):
    """A checkpoint whose modules.json asks for CLS pooling + Normalize gets exactly that."""
    from sentence_transformers import models

    from edgelm.export import export

    src = tmp_path / "st"
    transformer = models.Transformer(str(checkpoints("bert/feature-extraction")))
    st = SentenceTransformer(modules=[transformer, models.Pooling(32, pooling_mode="cls"), models.Normalize()], device="cpu")
    st.save(str(src))
    assert (src / "modules.json").is_file() and json.loads((src / "modules.json").read_text())
    manifest = export(src, tmp_path / "bundle", "feature-extraction", progress=False)
    assert (manifest.pooling.mode, manifest.pooling.normalize) == ("cls", True)
    texts = ["a tiny model", "another sentence that is longer than the first"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(src)
    batch = tokenizer(texts, padding=True, return_tensors="np")
    vectors = ort.InferenceSession(str(tmp_path / "bundle/model.onnx")).run(
        ["sentence_embedding"], {n: batch[n] for n in manifest.input_names()})[0]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors, st.encode(texts), atol=1e-5)

