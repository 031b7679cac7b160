"""Llama family (llama, mistral, qwen2): rotary positions, grouped-query attention."""

from edgelm.export.families.base import Family, Kind

FAMILY = Family(
    name="llama",
    kind=Kind.DECODER,
    model_types=("llama", "mistral", "qwen2"),
    tasks=("text-generation",),
    num_layers=("num_hidden_layers",),
    num_heads=("num_attention_heads",),
    hidden_size=("hidden_size",),
    max_positions=("max_position_embeddings",),
    num_kv_heads=("num_key_value_heads",),
    head_size=("head_dim",),
    position_ids=True,
)
