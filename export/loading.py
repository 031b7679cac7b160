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
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # export shows its own progress; errors stay one line
    if source.task == "feature-extraction":
        return _load_sentence_transformer(source)
    auto = getattr(transformers, AUTO_CLASS[source.task])
    try:
        model, info = auto.from_pretrained(source.folder, dtype=torch.float32, output_loading_info=True,
                                           **source.load_kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise ExportError(f"transformers cannot load {source.path}: {str(e).splitlines()[0]}") from e
    _check_no_weight_missing(source, type(model).__name__, info)
    return model.eval()


def _check_no_weight_missing(source: Source, class_name: str, info: dict[str, Any]) -> None:
    """A head transformers had to initialise at random would be exported as noise: refuse it.

    This is how a checkpoint whose config and weights disagree shows (all-mpnet-base-v2's config names
    MPNetForMaskedLM over the bare encoder's weights)."""
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ExportError(f"the weights in {source.path} lack {shown}, which {class_name} ({source.task}) needs: its config "
                          "and weights disagree; if they are the bare model, export it with --task feature-extraction")


def _load_sentence_transformer(source: Source) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    if source.has_sentence_transformers_config:
        return SentenceTransformer(str(source.folder), device="cpu").eval()
    transformer = Transformer(str(source.folder))
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode=source.family.pooling)
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
