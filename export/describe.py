"""Read, from the loaded model and tokenizer, what the manifest records besides the graph."""

from __future__ import annotations

from typing import Any

from edgelm.export.source import Source
from edgelm.runtime.manifest import Pooling, SpecialTokens

# generation_config.json keys a runtime can honour; others (beam search...) are not recorded.
GENERATION_KEYS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "max_new_tokens")
# A tokenizer's model_max_length above this is transformers' "no limit" sentinel.
_NO_LIMIT = 10**8


def special_tokens(tokenizer: Any, hf_model: Any) -> SpecialTokens:
    """bos/eos/pad/unk/mask ids; eos as transformers' generate takes it (generation config first)."""
    config = hf_model.config
    generation = getattr(hf_model, "generation_config", None)
    eos_source = next(
        (v for v in (getattr(generation, "eos_token_id", None), config.eos_token_id, tokenizer.eos_token_id) if v is not None),
        None,
    )
    eos = [int(t) for t in (eos_source if isinstance(eos_source, (list, tuple)) else [eos_source]) if t is not None]
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = getattr(generation, "pad_token_id", None) or config.pad_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else config.bos_token_id
    return SpecialTokens(bos=bos, eos=tuple(eos), pad=pad, unk=tokenizer.unk_token_id, mask=tokenizer.mask_token_id)


def special_token_strings(tokenizer: Any) -> dict[str, str]:
    """bos_token, eos_token, ... as strings: chat templates write them (transformers passes them in)."""
    return {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}


def generation_defaults(hf_model: Any) -> dict[str, Any]:
    """Sampling defaults from generation_config.json (only keys that differ from greedy)."""
    generation = getattr(hf_model, "generation_config", None)
    if generation is None:
        return {}
    diff = generation.to_diff_dict()
    return {k: diff[k] for k in GENERATION_KEYS if k in diff}


def max_context(source: Source, tokenizer: Any, model: Any) -> int:
    """Longest input the bundle accepts: the position table, capped by tokenizer and pooling limits."""
    limit = source.family.max_context(source.config)
    if source.family.kind.value == "encoder":
        if 0 < tokenizer.model_max_length < _NO_LIMIT:
            limit = min(limit, tokenizer.model_max_length)
        if getattr(model, "max_seq_length", None):  # sentence-transformers' own limit
            limit = min(limit, model.max_seq_length)
    return int(limit)


def labels(source: Source) -> tuple[str, ...] | None:
    """Class names by index for classifiers, from config.id2label."""
    if source.task not in ("text-classification", "token-classification"):
        return None
    id2label = source.config.id2label
    return tuple(str(id2label[i]) for i in range(len(id2label)))


def pooling(model: Any, output_name: str = "sentence_embedding") -> Pooling | None:
    """The pooling a sentence-transformers model traced into the graph."""
    if not hasattr(model, "_first_module"):
        return None
    from sentence_transformers.sentence_transformer import modules

    pool = next(m for m in model if isinstance(m, modules.Pooling))
    return Pooling(
        mode=_pooling_mode(pool.get_config_dict()),
        normalize=any(isinstance(m, modules.Normalize) for m in model),
        output=output_name,
        dimension=int((getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension)()),
    )


def _pooling_mode(config: dict[str, Any]) -> str:
    """'mean', 'cls', 'cls+mean', ... from a Pooling config (sentence-transformers >= 5.7 or its older flags)."""
    mode = config.get("pooling_mode")
    if isinstance(mode, str):
        return mode
    if isinstance(mode, (list, tuple)):  # several modes, concatenated in this order
        return "+".join(mode)
    flags = [k.removeprefix("pooling_mode_") for k, on in config.items() if k.startswith("pooling_mode_") and on]
    return "+".join(f.removesuffix("_tokens").removesuffix("_token") for f in flags) or "mean"


def prompts(model: Any) -> tuple[dict[str, str], str | None]:
    """A sentence-transformers model's named prompts and default prompt name (config_sentence_transformers.json).

    Recorded as the library holds them, its empty "query" and "document" defaults included, so every name
    SentenceTransformer.encode(prompt_name=...) accepts, the runtime accepts, with the same text.
    """
    if not hasattr(model, "_first_module"):
        return {}, None
    named = {str(k): str(v) for k, v in (getattr(model, "prompts", None) or {}).items() if v is not None}
    default = getattr(model, "default_prompt_name", None)
    return named, (default if default in named else None)
