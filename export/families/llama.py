"""Llama family (llama, mistral, qwen2): rotary positions, grouped-query attention, RMSNorm, gated SiLU MLP."""

from edgelm.export.families.base import DecoderLayers, Family, Kind

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
    decoder=DecoderLayers(
        positions="rotary",
        norm="rms",
        mlp="gated",
        weights={
            "embed": "model.embed_tokens", "final_norm": "model.norm", "lm_head": "lm_head",
            "attn_norm": "model.layers.{i}.input_layernorm", "q": "model.layers.{i}.self_attn.q_proj",
            "k": "model.layers.{i}.self_attn.k_proj", "v": "model.layers.{i}.self_attn.v_proj",
            "o": "model.layers.{i}.self_attn.o_proj", "mlp_norm": "model.layers.{i}.post_attention_layernorm",
            "gate": "model.layers.{i}.mlp.gate_proj", "up": "model.layers.{i}.mlp.up_proj",
            "down": "model.layers.{i}.mlp.down_proj",
        },
        sliding_window=("sliding_window",),
    ),
)
