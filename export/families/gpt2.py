"""GPT-2 family (gpt2, distilgpt2): learned positions, one KV head per query head."""

from edgelm.export.families.base import Family, Kind

FAMILY = Family(
    name="gpt2",
    kind=Kind.DECODER,
    model_types=("gpt2",),
    tasks=("text-generation",),
    num_layers=("n_layer", "num_hidden_layers"),
    num_heads=("n_head", "num_attention_heads"),
    hidden_size=("n_embd", "hidden_size"),
    max_positions=("n_positions", "max_position_embeddings"),
    position_ids=True,
)
