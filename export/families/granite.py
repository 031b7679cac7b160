"""Granite: Llama's layout with four multipliers (embedding, residual branches, attention scale, logits)."""

import numpy as np

from edgelm.export.decoder_blocks import Layer, Model, Residual, final_logits
from edgelm.export.families.llama import llama_shaped


def embed(model: Model) -> Residual:
    return Residual(model.scale(model.tokens(), model.config.embedding_multiplier, "/model/embedding_multiplier"))


def block(layer: Layer, h: Residual) -> Residual:
    """h + m * attn(norm(h)), then h + m * mlp(norm(h)); attention scaled by attention_multiplier."""
    c = layer.config
    x, h = layer.norm("attn_norm", h)
    h = h.add(layer.scaled(layer.attention(x, scale=c.attention_multiplier), c.residual_multiplier))
    x, h = layer.norm("mlp_norm", h)
    return h.add(layer.scaled(layer.mlp(x), c.residual_multiplier))


def logits(model: Model, h: Residual) -> str:
    """logits / logits_scaling"""
    divisor = model.g.const("/logits_scaling/divisor", np.array(model.config.logits_scaling, np.float32))
    return model.g.op("Div", "/logits_scaling/Div", [final_logits(model, h), divisor])


FAMILY = llama_shaped("granite", ("granite",), embed=embed, block=block, logits=logits)
