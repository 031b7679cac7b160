"""The registry of supported model families: one module per family, looked up by model_type."""

from __future__ import annotations

from edgelm.errors import ExportError
from edgelm.export.families import bert, distilbert, gpt2, llama, roberta
from edgelm.export.families.base import Family, Kind

FAMILIES: tuple[Family, ...] = tuple(m.FAMILY for m in (gpt2, llama, bert, distilbert, roberta))
_BY_MODEL_TYPE = {mt: f for f in FAMILIES for mt in f.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def family_for(model_type: str) -> Family:
    """The family declaring MODEL_TYPE; an unknown one gets the list of supported ones."""
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise ExportError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}"
        ) from None


__all__ = ["FAMILIES", "Family", "Kind", "family_for", "supported_model_types"]
