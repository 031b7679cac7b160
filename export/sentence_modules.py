"""Which sentence-transformers modules a bundle carries, and the one piece of pooling done around them.

A sentence-transformers folder lists its modules in modules.json (Transformer, Pooling, Dense,
Normalize, ...); the encoder graph traces them in that order, so the bundle's vectors are the
library's own. A module with state outside the graph (its own tokenizer, a router choosing modules per
input) cannot be carried: export names it and stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgelm.errors import ExportError
from edgelm.runtime.prompts import PROMPT_LENGTH  # graph input when pooling leaves a prompt's tokens out
# Modules whose forward is a function of the features the graph has (token embeddings and mask).
CARRIED = ("Pooling", "Dense", "Normalize", "LayerNorm", "Dropout", "WeightedLayerPooling")


@dataclass(frozen=True)
class Pipeline:
    modules: tuple[Any, ...]  # the transformer module first
    include_prompt: bool  # False: the pooling skips the prompt's tokens


def split_pipeline(model: Any) -> Pipeline:
    """MODEL's modules, checked: a transformer first, then only modules in CARRIED."""
    modules = tuple(model)
    names = [type(m).__name__ for m in modules]
    problems = [f"sentence-transformers module {i} ({name}) cannot be carried in a bundle; supported after the "
                f"Transformer: {', '.join(CARRIED)}" for i, name in enumerate(names[1:], 1) if name not in CARRIED]
    if not modules or not hasattr(modules[0], "auto_model"):
        problems.insert(0, f"sentence-transformers module 0 ({names[0] if names else 'none'}) is not a Transformer; "
                           "only transformers-backed models export")
    if "Pooling" not in names:
        problems.append("the sentence-transformers model has no Pooling module; add one (modules.json)")
    if problems:
        raise ExportError(*problems)
    pooling = next(m for m in modules if type(m).__name__ == "Pooling")
    return Pipeline(modules, bool(getattr(pooling, "include_prompt", True)))


def exclude_prompt(attention_mask: Any, prompt_length: Any) -> Any:
    """The mask with the first PROMPT_LENGTH positions off, as sentence-transformers' Pooling does for
    right-padded rows (the runtime pads on the right): (batch, seq) int64, prompt_length (1,) int64."""
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None]  # (1, seq)
    return attention_mask * (positions >= prompt_length[0]).to(attention_mask.dtype)
