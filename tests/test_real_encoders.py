"""all-mpnet-base-v2 (MPNet, the most downloaded sentence-transformers model), from its real weights: the bundle
equals sentence-transformers, its int8 passes the gate, and its config/weights mismatch is refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgelm.runtime import load, verify
from edgelm.runtime.manifest import read_manifest
from tests.conftest import MPNET, REPO
from tests.test_bad_input import assert_nothing_written, assert_one_line_error, run_cli

pytestmark = pytest.mark.real
HELD_OUT = REPO / "scripts" / "heldout_sentences.txt"  # never used to choose a method


def held_out() -> list[str]:
    return [line for line in HELD_OUT.read_text(encoding="utf-8").splitlines() if line.strip()]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def mpnet_reference():
    from sentence_transformers import SentenceTransformer

    texts = held_out()
    return texts, SentenceTransformer(str(MPNET), device="cpu").encode(texts)


def test_mpnet_folder_exports_as_its_sentence_transformers_pipeline(mpnet_bundle):
    manifest = read_manifest(mpnet_bundle)
    assert (manifest.task, manifest.source["family"]) == ("feature-extraction", "mpnet")  # its config names MPNetForMaskedLM
    assert (manifest.pooling.mode, manifest.pooling.normalize, manifest.pooling.dimension) == ("mean", True, 768)
    assert manifest.max_context == 384  # sentence-transformers' max_seq_length, under the 512-token position table
    assert manifest.verification["passed"] and manifest.verification["min_cosine"] >= 0.9999


def test_mpnet_embeddings_equal_sentence_transformers_on_held_out_sentences(mpnet_bundle, mpnet_reference):
    texts, reference = mpnet_reference
    vectors = load(mpnet_bundle, provider="cpu").embed(texts, batch_size=16)  # (96, 768)
    assert cosines(vectors, reference).min() >= 0.9999
    np.testing.assert_allclose(vectors, reference, atol=1e-4)


def test_mpnet_default_int8_passes_the_gate_and_follows_float_on_held_out_sentences(mpnet_bundle, mpnet_int8_bundle,
                                                                                  mpnet_reference):
    manifest = read_manifest(mpnet_int8_bundle)
    acc = manifest.accuracy
    assert manifest.precision["method"] == "int8-per-token" and acc["gate"] == "enforced" and acc["passed"]
    assert acc["mean_cosine"] >= 0.99
    texts, reference = mpnet_reference
    cosine = cosines(load(mpnet_int8_bundle, provider="cpu").embed(texts, batch_size=16), reference)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.97, (cosine.mean(), cosine.min())
    assert verify(mpnet_int8_bundle, provider="cpu").passed


def test_mpnet_conformance_vectors_pass_verify(mpnet_bundle):
    vectors = json.loads((mpnet_bundle / "conformance.json").read_text(encoding="utf-8"))["vectors"]
    assert any(v["kind"] == "embedding" for v in vectors)
    assert verify(mpnet_bundle, provider="cpu").passed


def test_mpnet_as_fill_mask_is_refused_since_its_weights_hold_no_head(tmp_path):
    """Its config says MPNetForMaskedLM, its weights are the bare encoder: a random head would be exported."""
    out = tmp_path / "out"
    result = run_cli("export", MPNET, out, "--task", "fill-mask")
    assert_one_line_error(result, "lack lm_head", "config and weights disagree", "--task feature-extraction")
    assert_nothing_written(out)
