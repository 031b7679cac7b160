"""Load a validated Source into torch: the model for the task, and its fast tokenizer.

Feature extraction loads a sentence-transformers model so that pooling and normalisation
are traced into the graph by the library that defines them (modules.json and 1_Pooling when
the checkpoint has them, the family's default pooling otherwise).
"""

from __future__ import annotations

from typing import Any

from edgelm.errors import ExportError
from edgelm.export.source import Source
from edgelm.export.tasks import AUTO_CLASS


def load_model(source: Source) -> Any:
    """The torch module to export, in eval mode and float32."""
    import torch

    if source.task == "feature-extraction":
        return _load_sentence_transformer(source)
    import transformers

    auto = getattr(transformers, AUTO_CLASS[source.task])
    transformers.logging.set_verbosity_error()
    try:
        model = auto.from_pretrained(source.folder, dtype=torch.float32, **source.load_kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"transformers cannot load {source.path}: {str(e).splitlines()[0]}") from e
    return model.eval()


def _load_sentence_transformer(source: Source) -> Any:
    from sentence_transformers import SentenceTransformer, models

    if source.has_sentence_transformers_config:
        return SentenceTransformer(str(source.folder), device="cpu").eval()
    transformer = models.Transformer(str(source.folder))
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode=source.family.pooling)
    return SentenceTransformer(modules=[transformer, pooling], device="cpu").eval()


def load_tokenizer(source: Source) -> Any:
    """The checkpoint's fast tokenizer (the runtime reads its tokenizer.json)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.folder, use_fast=True, **source.load_kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"cannot load the tokenizer of {source.path}: {str(e).splitlines()[0]}") from e
    if not tokenizer.is_fast:
        raise ExportError(
            f"the tokenizer of {source.path} has no fast (tokenizers) version, which the runtime needs; "
            "save it with a tokenizer.json"
        )
    return tokenizer


def hf_model_of(model: Any) -> Any:
    """The transformers model inside MODEL (itself, or a sentence-transformers' first module)."""
    return model[0].auto_model if hasattr(model, "_first_module") else model
