"""GPT-NeoX (Pythia): LayerNorm, attention and MLP in parallel off the same input (or in sequence when
use_parallel_residual is off), partial rotary, and q, k, v interleaved per head in one projection."""

import numpy as np

from edgelm.export.decoder_blocks import Layer, Residual
from edgelm.export.families.base import DecoderLayers, Family, Kind

LAYER = "gpt_neox.layers.{i}"


def qkv(layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
    """query_key_value's columns reordered from (head, q|k|v, dim) to (q|k|v, head, dim)."""
    weight, bias = layer.model.weights.linear("qkv", layer=layer.index)
    heads = layer.model.num_heads
    order = np.arange(weight.shape[1]).reshape(heads, 3, -1).transpose(1, 0, 2).reshape(-1)
    return weight[:, order], None if bias is None else bias[order]


def block(layer: Layer, h: Residual) -> Residual:
    """parallel: h + attn(ln1(h)) + mlp(ln2(h)); sequential: the pre-norm block."""
    x, h = layer.norm("attn_norm", h)
    attended = layer.attention(x, qkv=qkv(layer))
    if not layer.config.use_parallel_residual:
        x, h = layer.norm("mlp_norm", h.add(attended))
        return h.add(layer.mlp(x))
    y, _ = layer.norm("mlp_norm", h)
    return h.add(attended).add(layer.mlp(y))


FAMILY = Family(
    name="gpt_neox",
    kind=Kind.DECODER,
    model_types=("gpt_neox",),
    tasks=("text-generation",),
    num_layers=("num_hidden_layers",),
    num_heads=("num_attention_heads",),
    hidden_size=("hidden_size",),
    max_positions=("max_position_embeddings",),
    decoder=DecoderLayers(
        norm="layer",
        mlp="plain",
        weights={
            "embed": "gpt_neox.embed_in", "final_norm": "gpt_neox.final_layer_norm", "lm_head": "lm_head",
            "attn_norm": f"{LAYER}.input_layernorm", "qkv": f"{LAYER}.attention.query_key_value",
            "o": f"{LAYER}.attention.dense", "mlp_norm": f"{LAYER}.post_attention_layernorm",
            "up": f"{LAYER}.mlp.dense_h_to_4h", "down": f"{LAYER}.mlp.dense_4h_to_h",
        },
        norm_epsilon=("layer_norm_eps",),
        sliding_window=(),
        rotary="gpt_neox.rotary_emb",
        block=block,
    ),
)
