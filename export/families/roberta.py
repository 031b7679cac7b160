"""RoBERTa: BERT whose position table reserves padding_idx + 1 slots (514 -> 512 tokens)."""

from edgelm.export.families.base import Family, Kind
from edgelm.export.families.bert import ENCODER_TASKS

FAMILY = Family(
    name="roberta",
    kind=Kind.ENCODER,
    model_types=("roberta",),
    tasks=ENCODER_TASKS,
    num_layers=("num_hidden_layers",),
    num_heads=("num_attention_heads",),
    hidden_size=("hidden_size",),
    max_positions=("max_position_embeddings",),
    reserved_positions=2,
)
