"""SmolLM3: Llama's layout, but some layers attend without rotary positions (config.no_rope_layers: 0 = NoPE)."""

from edgelm.export.decoder_blocks import Layer, Residual, pre_norm_block
from edgelm.export.families.llama import llama_shaped


def block(layer: Layer, h: Residual) -> Residual:
    return pre_norm_block(layer, h, rotary=bool(layer.config.no_rope_layers[layer.index]))


FAMILY = llama_shaped("smollm3", ("smollm3",), block=block)
