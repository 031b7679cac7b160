"""Whole sentence-transformers pipelines in a bundle: every pooling mode and every carried module, in order,
equal to SentenceTransformer.encode; a module the bundle cannot carry is refused at export with its name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import (CNN, Dense, Dropout, LayerNorm, Normalize, Pooling,
                                                                 Transformer, WeightedLayerPooling)

from edgelm.errors import ExportError
from edgelm.export import export
from edgelm.runtime.bundle import open_bundle
from edgelm.runtime.encoder import Encoder
from tests.test_bad_input import assert_nothing_written

TEXTS = ["short", "The quick brown fox jumps over the lazy dog.", "Paris",
         "Once upon a time there was a tiny model that ran on an edge box, and the rain fell softly on the roof."]
MODES = list(Pooling.POOLING_MODES) + [("cls", "mean", "max")]


def save_pipeline(folder, checkpoint, *modules_after) -> SentenceTransformer:
    torch.manual_seed(1)
    transformer = Transformer(str(checkpoint))
    st = SentenceTransformer(modules=[transformer, *(m(transformer.get_embedding_dimension()) for m in modules_after)],
                             device="cpu").eval()
    st.save(str(folder))
    return st


def embed(bundle) -> np.ndarray:
    return Encoder(open_bundle(bundle, provider="cpu")).embed(TEXTS, batch_size=3)  # two padded batches


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m if isinstance(m, str) else "+".join(m))
def test_every_pooling_mode_equals_sentence_transformers(checkpoints, tmp_path, mode):
    st = save_pipeline(tmp_path / "st", checkpoints("bert/feature-extraction"), lambda d: Pooling(d, pooling_mode=mode))
    manifest = export(tmp_path / "st", tmp_path / "bundle", progress=False)
    assert manifest.pooling.mode == (mode if isinstance(mode, str) else "+".join(mode))
    vectors = embed(tmp_path / "bundle")
    np.testing.assert_allclose(vectors, st.encode(TEXTS), atol=1e-5)
    assert manifest.pooling.dimension == vectors.shape[1] == st.get_embedding_dimension()


def test_dense_layer_norm_dropout_and_normalize_run_in_order(checkpoints, tmp_path):
    st = save_pipeline(tmp_path / "st", checkpoints("mpnet/feature-extraction"),
                       lambda d: Pooling(d, pooling_mode="mean"),
                       lambda d: Dense(d, 24, activation_function=torch.nn.Tanh()), lambda d: LayerNorm(24),
                       lambda d: Dropout(0.5), lambda d: Dense(24, 16), lambda d: Normalize())
    manifest = export(tmp_path / "st", tmp_path / "bundle", progress=False)
    assert (manifest.pooling.mode, manifest.pooling.normalize, manifest.pooling.dimension) == ("mean", True, 16)
    vectors = embed(tmp_path / "bundle")
    np.testing.assert_allclose(vectors, st.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embeddinggemma_shaped_pipeline_equals_sentence_transformers(checkpoints, tmp_path):
    """Gemma 3 with bidirectional sliding-window attention, mean pooling, two Dense layers, Normalize."""
    st = save_pipeline(tmp_path / "st", checkpoints("gemma3_text/feature-extraction"),
                       lambda d: Pooling(d, pooling_mode="mean"), lambda d: Dense(d, 64, activation_function=None),
                       lambda d: Dense(64, d, activation_function=None), lambda d: Normalize())
    manifest = export(tmp_path / "st", tmp_path / "bundle", progress=False)
    assert manifest.source["family"] == "gemma3-embedding" and manifest.verification["min_cosine"] >= 0.9999
    np.testing.assert_allclose(embed(tmp_path / "bundle"), st.encode(TEXTS), atol=1e-5)


def test_weighted_layer_pooling_reads_every_hidden_state(checkpoints, tmp_path):
    folder = tmp_path / "st"
    transformer = Transformer(str(checkpoints("bert/feature-extraction")), config_kwargs={"output_hidden_states": True})
    torch.manual_seed(2)
    layers = WeightedLayerPooling(32, num_hidden_layers=2, layer_start=1,
                                  layer_weights=torch.nn.Parameter(torch.tensor([0.3, 0.7])))
    st = SentenceTransformer(modules=[transformer, layers, Pooling(32, pooling_mode="mean")], device="cpu").eval()
    st.save(str(folder))
    export(folder, tmp_path / "bundle", progress=False)
    np.testing.assert_allclose(embed(tmp_path / "bundle"), st.encode(TEXTS), atol=1e-5)


def test_a_module_the_bundle_cannot_carry_is_refused_by_name(checkpoints, tmp_path):
    save_pipeline(tmp_path / "st", checkpoints("bert/feature-extraction"), lambda d: CNN(d, out_channels=8),
                  lambda d: Pooling(24))
    with pytest.raises(ExportError) as err:
        export(tmp_path / "st", tmp_path / "bundle", progress=False)
    assert "module 1 (CNN) cannot be carried" in str(err.value) and len(str(err.value).splitlines()) == 1
    assert_nothing_written(tmp_path / "bundle")
