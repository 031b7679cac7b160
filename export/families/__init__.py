"""The registry of supported model families: one module per family, looked up by model_type."""

from __future__ import annotations

from typing import Any

from edgelm.errors import ExportError
from edgelm.export.families import (bert, deberta_v2, distilbert, electra, gemma, gemma2, gemma3, gemma3_embedding,
                                    gpt2, gpt_neox, granite, llama, modernbert, mpnet, olmo2, phi3, qwen3, roberta, smollm3)
from edgelm.export.families.base import Family, Kind

FAMILIES: tuple[Family, ...] = tuple(
    m.FAMILY for m in (gpt2, llama, qwen3, gemma, gemma2, gemma3, phi3, gpt_neox, granite, olmo2, smollm3,
                       bert, distilbert, roberta, mpnet, electra, modernbert, deberta_v2, gemma3_embedding))


def supported_model_types() -> list[str]:
    return sorted({mt for f in FAMILIES for mt in f.model_types})


def families_of_kind(kind: Kind) -> tuple[Family, ...]:
    return tuple(f for f in FAMILIES if f.kind is kind)


def family_for(model_type: str, config: dict[str, Any] | None = None) -> Family:
    """The family declaring MODEL_TYPE whose requirements CONFIG (config.json's dict) meets.

    An unknown model_type gets the list of supported ones; a known one that no family accepts
    gets what each family sharing it requires.
    """
    candidates = [f for f in FAMILIES if model_type in f.model_types]
    if not candidates:
        raise ExportError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        )
    for family in sorted(candidates, key=lambda f: -len(f.requires)):  # the most specific family first
        if family.accepts(config or {}):
            return family
    needs = "; ".join(f"{f.name} needs {', '.join(f'{k}={v!r}' for k, v in f.requires)}" for f in candidates)
    raise ExportError(f"model_type {model_type!r} is supported only in this form: {needs}")


__all__ = ["FAMILIES", "Family", "Kind", "families_of_kind", "family_for", "supported_model_types"]
