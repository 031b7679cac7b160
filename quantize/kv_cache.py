"""An int8 KV cache: GroupQueryAttention stores keys and values as int8, one scale per channel.

onnxruntime's GroupQueryAttention quantizes each new key and value as it writes them into the
cache and dequantizes as it reads (attributes kv_cache_bit_width=8, k/v_quant_type=PER_CHANNEL,
inputs k_scale/v_scale of shape (kv_heads, head_size)). The scales come from calibration: the
float bundle runs calibration text through the runtime, and each channel's largest magnitude in
the cache (keys after rotary, as stored) becomes 127. Why by hand: onnxruntime.quantization has
no pass for the cache of GroupQueryAttention.

A decode step at long context reads a quarter of the bytes, so it runs faster at nearly the float
cache's perplexity, but prompts run slower (the operator's quantized prompt path), so it is an
option, not the default (SmolLM2 int8-kv8 in docs/benchmarks.md, "Decoder speed: SmolLM2 against
three peers").

    before: GroupQueryAttention(qkv, past_k float, past_v float, ...) -> present_k float, present_v float
    after:  GroupQueryAttention(qkv, past_k int8, past_v int8, ..., k_scale, v_scale) -> present_k int8, present_v int8
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgelm.runtime.kv_layout import KVLayout

QUANT_ATTRIBUTES = ("kv_cache_bit_width", "k_quant_type", "v_quant_type")
K_SCALE, V_SCALE = 12, 13  # GroupQueryAttention's input slots


def calibrate_scales(float_lm: Any, ids: list[int]) -> dict[str, np.ndarray]:
    """Per past input name: (kv_heads, head_size) scales mapping each channel's largest |value| to 127."""
    graph = float_lm.graph
    ids = ids[:float_lm.manifest.max_context - 1]  # one sequence: at most what the position table holds
    cache = graph.new_cache(slots=1, capacity=len(ids))
    graph.extend(cache, 0, ids)
    held = slice(0, len(ids))
    scales = {}
    for pair in graph.layout.past_names():
        for name in pair:
            stored = cache.buffers[name][0, :, held, :]  # (kv_heads, tokens, head_size)
            peak = np.abs(stored).max(axis=1)  # (kv_heads, head_size)
            scales[name] = (np.maximum(peak, 1e-6) / 127.0).astype(np.float32)
    return scales


def int8_kv_cache(model: onnx.ModelProto, layout: KVLayout, scales: dict[str, np.ndarray]) -> int:
    """Make every GroupQueryAttention keep its cache in int8; returns how many were rewritten."""
    graph = model.graph
    past = {name for pair in layout.past_names() for name in pair}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "GroupQueryAttention" or node.input[3] not in past:
            continue
        inputs = list(node.input) + [""] * (V_SCALE + 1 - len(node.input))
        for slot, name in ((K_SCALE, node.input[3]), (V_SCALE, node.input[4])):
            inputs[slot] = f"{name}.scale"
            graph.initializer.append(numpy_helper.from_array(scales[name], inputs[slot]))
        del node.input[:]
        node.input.extend(inputs)
        kept = [a for a in node.attribute if a.name not in QUANT_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("kv_cache_bit_width", 8),
                                      helper.make_attribute("k_quant_type", "PER_CHANNEL"),
                                      helper.make_attribute("v_quant_type", "PER_CHANNEL")])
        rewritten += 1
    cache_io = past | {name for pair in layout.present_names() for name in pair}
    for value in list(graph.input) + list(graph.output):
        if value.name in cache_io:
            value.type.tensor_type.elem_type = TensorProto.INT8
    return rewritten
