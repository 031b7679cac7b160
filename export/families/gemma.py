"""Gemma: Llama's layout with the embedding scaled by sqrt(hidden size), norms that scale by (1 + w),
and a tanh-GELU gated MLP."""

from edgelm.export.decoder_blocks import Model, Residual
from edgelm.export.families.llama import llama_shaped


def scaled_embedding(model: Model) -> Residual:
    """embed(ids) * sqrt(hidden), the factor rounded to float32 as transformers' embed_scale buffer is."""
    return Residual(model.scale(model.tokens(), model.config.hidden_size ** 0.5, "/model/embed_scale"))


FAMILY = llama_shaped("gemma", ("gemma",), norm_offset=1.0, embed=scaled_embedding)
