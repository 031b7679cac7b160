"""OLMo 2: norms after each branch instead of before it, and RMSNorm over all of q and k (its q/k norm
weights span every head, which the attention builder reads as one norm over the projection)."""

from edgelm.export.decoder_blocks import Layer, Residual, Term
from edgelm.export.families.llama import LAYER, QK_NORMS, llama_shaped


def block(layer: Layer, h: Residual) -> Residual:
    """h + norm(attn(h)), then h + norm(mlp(h))"""
    x = layer.value(h)
    attended, _ = layer.norm("post_attn_norm", layer.attention(x))
    x = layer.value(Residual(x).add(Term(attended)))
    fed, _ = layer.norm("post_mlp_norm", layer.mlp(x))
    return Residual(x).add(Term(fed))


FAMILY = llama_shaped("olmo2", ("olmo2",), block=block, weights={
    **QK_NORMS, "attn_norm": None, "mlp_norm": None,
    "post_attn_norm": f"{LAYER}.post_attention_layernorm", "post_mlp_norm": f"{LAYER}.post_feedforward_layernorm",
})
