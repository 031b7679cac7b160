"""BERT family: learned absolute positions, token type ids (segment A/B)."""

from edgelm.export.families.base import Family, Kind

ENCODER_TASKS = ("feature-extraction", "text-classification", "token-classification", "fill-mask")

FAMILY = Family(
    name="bert",
    kind=Kind.ENCODER,
    model_types=("bert",),
    tasks=ENCODER_TASKS,
    num_layers=("num_hidden_layers",),
    num_heads=("num_attention_heads",),
    hidden_size=("hidden_size",),
    max_positions=("max_position_embeddings",),
    token_type_ids=True,
)
