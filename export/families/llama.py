"""Llama family (llama, mistral, qwen2): rotary positions, grouped-query attention, RMSNorm, gated SiLU MLP.

`llama_shaped` is the declaration every family with Llama's module names starts from: the
others (Qwen3, Phi-3, SmolLM3, Gemma...) state only what differs.
"""

from typing import Any

from edgelm.export.families.base import DecoderLayers, Family, Kind

LAYER = "model.layers.{i}"
WEIGHTS = {
    "embed": "model.embed_tokens", "final_norm": "model.norm", "lm_head": "lm_head",
    "attn_norm": f"{LAYER}.input_layernorm", "q": f"{LAYER}.self_attn.q_proj", "k": f"{LAYER}.self_attn.k_proj",
    "v": f"{LAYER}.self_attn.v_proj", "o": f"{LAYER}.self_attn.o_proj", "mlp_norm": f"{LAYER}.post_attention_layernorm",
    "gate": f"{LAYER}.mlp.gate_proj", "up": f"{LAYER}.mlp.up_proj", "down": f"{LAYER}.mlp.down_proj",
}
QK_NORMS = {"q_norm": f"{LAYER}.self_attn.q_norm", "k_norm": f"{LAYER}.self_attn.k_norm"}


def llama_shaped(name: str, model_types: tuple[str, ...], weights: dict[str, str | None] | None = None,
                 **decoder: Any) -> Family:
    """A decoder family laid out like Llama; WEIGHTS adds or renames roles (None drops one), DECODER sets
    DecoderLayers fields (norm_offset, block, embed, logits...)."""
    roles = {**WEIGHTS, **(weights or {})}
    return Family(
        name=name,
        kind=Kind.DECODER,
        model_types=model_types,
        tasks=("text-generation",),
        num_layers=("num_hidden_layers",),
        num_heads=("num_attention_heads",),
        hidden_size=("hidden_size",),
        max_positions=("max_position_embeddings",),
        num_kv_heads=("num_key_value_heads",),
        head_size=("head_dim",),
        decoder=DecoderLayers(weights={k: v for k, v in roles.items() if v is not None}, **decoder),
    )


FAMILY = llama_shaped("llama", ("llama", "mistral", "qwen2"))
