"""BERT family: learned absolute positions, token type ids (segment A/B).

`bert_shaped` is the declaration every encoder with BERT's config keys starts from: a family then
states only how it differs (its model_types, token types, reserved position slots).
"""

from typing import Any

from edgelm.export.families.base import Family, Kind

ENCODER_TASKS = ("feature-extraction", "text-classification", "token-classification", "fill-mask")


def bert_shaped(name: str, model_types: tuple[str, ...], **differences: Any) -> Family:
    """An encoder family with BERT's config keys and tasks, and DIFFERENCES from them."""
    declaration: dict[str, Any] = dict(
        name=name,
        kind=Kind.ENCODER,
        model_types=model_types,
        tasks=ENCODER_TASKS,
        num_layers=("num_hidden_layers",),
        num_heads=("num_attention_heads",),
        hidden_size=("hidden_size",),
        max_positions=("max_position_embeddings",),
    )
    return Family(**{**declaration, **differences})


FAMILY = bert_shaped("bert", ("bert",), token_type_ids=True)
