"""Reranking with a cross-encoder bundle: (query, document) pairs scored, then sorted.

A cross-encoder is a text-classification model with exactly one label, fed the query and one
document as a text pair; sentence-transformers' CrossEncoder.predict turns that one logit into a
score with a sigmoid (its default activation when num_labels == 1), so scores lie in (0, 1) and
compare across queries. `Encoder.rerank` encodes the pairs, runs them, and orders them here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgelm.errors import GenerationError
from edgelm.runtime.manifest import Manifest

LOGITS = "logits"


def reranker_problem(manifest: Manifest, folder: object) -> str:
    """Why the bundle cannot rerank ('' when it can): it must be a one-label text classifier."""
    if manifest.task != "text-classification":
        return (f"rerank needs a text-classification bundle with one label (a cross-encoder), but {folder} is a "
                f"{manifest.task} bundle; export a cross-encoder checkpoint (edgelm export CHECKPOINT OUT)")
    count = label_count(manifest)
    if count != 1:
        return (f"rerank needs a cross-encoder (a text classifier with one label), but {folder} has "
                f"{count if count is not None else 'an unknown number of'} labels; use `edgelm classify` for it, "
                "or export a cross-encoder checkpoint")
    return ""


def label_count(manifest: Manifest) -> int | None:
    """Labels of a classifier: the manifest's names, else the last dimension of its logits output."""
    if manifest.labels is not None:
        return len(manifest.labels)
    spec = next((t for t in manifest.outputs if t.name == LOGITS), None)
    last = spec.shape[-1] if spec is not None and spec.shape else None
    return last if isinstance(last, int) else None


def check_query(query: object) -> str:
    if not isinstance(query, str):
        raise GenerationError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise GenerationError("query is empty or only whitespace; pass the text to rank the documents against")
    return query


def check_top_n(top_n: object) -> None:
    if top_n is not None and not (isinstance(top_n, int) and not isinstance(top_n, bool) and top_n >= 1):
        raise GenerationError(f"top_n must be a whole number >= 1 (or None for every document), got {top_n!r}")


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """CrossEncoder's activation for one label, in float64: (n,) -> (n,)."""
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def ranked(scores: Sequence[float] | np.ndarray, top_n: int | None = None) -> list[dict]:
    """[{"index", "score"}] by score, best first (ties keep the documents' order); the first TOP_N."""
    scores = np.asarray(scores, dtype=np.float64)  # (n,)
    order = np.argsort(-scores, kind="stable")[: top_n or len(scores)]
    return [{"index": int(i), "score": float(scores[i])} for i in order]
