"""DistilBERT: BERT without token type ids, with its own config key names."""

from edgelm.export.families.base import Family, Kind
from edgelm.export.families.bert import ENCODER_TASKS

FAMILY = Family(
    name="distilbert",
    kind=Kind.ENCODER,
    model_types=("distilbert",),
    tasks=ENCODER_TASKS,
    num_layers=("n_layers", "num_hidden_layers"),
    num_heads=("n_heads", "num_attention_heads"),
    hidden_size=("dim", "hidden_size"),
    max_positions=("max_position_embeddings",),
)
