"""Gemma 2: Gemma with norms before and after both branches, soft-capped attention and logits,
queries scaled by query_pre_attn_scalar, and sliding-window layers (config.layer_types)."""

import numpy as np

from edgelm.export.decoder_blocks import Layer, Model, Residual, Term, final_logits
from edgelm.export.families.gemma import scaled_embedding
from edgelm.export.families.llama import LAYER, llama_shaped

# Gemma 2 and 3 name the norm after attention post_attention_layernorm and the one before the MLP pre_feedforward_layernorm.
WEIGHTS = {"post_attn_norm": f"{LAYER}.post_attention_layernorm", "mlp_norm": f"{LAYER}.pre_feedforward_layernorm",
           "post_mlp_norm": f"{LAYER}.post_feedforward_layernorm"}


def block(layer: Layer, h: Residual) -> Residual:
    """h + norm(attn(norm(h))), then h + norm(mlp(norm(h)))"""
    c = layer.config
    x, h = layer.norm("attn_norm", h)
    attended = layer.attention(x, scale=c.query_pre_attn_scalar ** -0.5, softcap=getattr(c, "attn_logit_softcapping", None))
    a, _ = layer.norm("post_attn_norm", attended)
    x, h = layer.norm("mlp_norm", h.add(Term(a)))
    m, _ = layer.norm("post_mlp_norm", layer.mlp(x))
    return h.add(Term(m))


def logits(model: Model, h: Residual) -> str:
    """cap * tanh(logits / cap) when final_logit_softcapping is set."""
    out, cap = final_logits(model, h), getattr(model.config, "final_logit_softcapping", None)
    if not cap:
        return out
    g, c = model.g, model.g.const("/logits_softcap/cap", np.array(cap, np.float32))
    return g.op("Mul", "/logits_softcap/Mul", [g.op("Tanh", "/logits_softcap/Tanh", [g.op("Div", "/logits_softcap/Div", [out, c])]), c])


FAMILY = llama_shaped("gemma2", ("gemma2",), weights=WEIGHTS, norm_offset=1.0, activation=("hidden_activation",),
                      embed=scaled_embedding, block=block, logits=logits)
