"""Build a decoder's fused ONNX graph from its torch weights and its family declaration.

Why written here rather than exported: optimum's export traces transformers' unfused attention
(about 95 small nodes per layer, past and new keys concatenated every step, the full attention
matrix at prefill); onnxscript's and onnxruntime.transformers' fusion passes find no
GroupQueryAttention in that graph, and onnxruntime-genai's builder (the reference for what the
graph should contain) needs transformers 5 and is one 5,500-line class. So the graph is written
from the weights with onnx.helper, one small builder per layer kind (decoder_layers.py):

    input_ids ─> Gather(embedding) [+ Gather(position table)] ─> h
    per layer:  norm(h) ─> attention (GroupQueryAttention, cache in place) ─> skip-norm ─> MLP ─> (next skip-norm)
    final skip-norm ─> Slice(last logits_to_keep) ─> MatMul(LM head) ─> logits

Names and dims come from edgelm.runtime.kv_layout, the one naming function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from edgelm.errors import ExportError
from edgelm.export.decoder_layers import attention, check_activation, lm_head, mlp, norm
from edgelm.export.decoder_weights import DecoderWeights
from edgelm.export.families import Family
from edgelm.export.graph_builder import GraphBuilder
from edgelm.runtime.kv_layout import (BATCH, CAPACITY, INPUT_IDS, KEPT, LOGITS, LOGITS_TO_KEEP, POSITION_IDS, SEQUENCE,
                                      SEQUENCE_LENGTHS, KVLayout)

DEFAULT_OPSET = 21


def build_decoder_graph(model: Any, family: Family, config: Any, opset: int | None = None) -> onnx.ModelProto:
    """The fused graph of MODEL (a transformers causal LM of FAMILY) with the cache contract of kv_layout."""
    spec = family.decoder
    weights = DecoderWeights(model, spec)
    layout = family.kv_layout(config)
    if layout.head_size % 16:
        raise ExportError(f"head size {layout.head_size} is not a multiple of 16, which onnxruntime's "
                          "GroupQueryAttention needs; this checkpoint cannot use the fused decoder graph")
    heads = family.hparam(config, family.num_heads)
    epsilon = float(family.hparam(config, spec.norm_epsilon))
    activation = str(family.hparam(config, spec.activation))
    check_activation(activation)
    window = _sliding_window(family, config)
    g = GraphBuilder()

    ids = g.input(INPUT_IDS, np.int64, [BATCH, SEQUENCE])
    positions = g.input(POSITION_IDS, np.int64, [BATCH, SEQUENCE]) if spec.positions == "learned" else None
    lengths = g.input(SEQUENCE_LENGTHS, np.int32, [BATCH])
    keep = g.input(LOGITS_TO_KEEP, np.int64, [1])
    table = weights.array("embed")  # (V, H)
    head = None if weights.lm_head_is_embedding() else weights.linear("lm_head")  # ((H, V), bias) when untied
    g.output(LOGITS, np.float32, [BATCH, KEPT, table.shape[0] if head is None else head[0].shape[1]])
    cache = _cache_io(g, layout)
    seqlens_k = g.op("Sub", "/lengths/Sub", [lengths, g.const("/lengths/one", np.array(1, np.int32))])  # (B,) total - 1
    total = g.op("ReduceMax", "/lengths/ReduceMax", [lengths], keepdims=0)  # () longest row
    rotary = _rotary(g, weights, family, config, layout) if spec.positions == "rotary" else None

    embedding = g.const("model.embed_tokens.weight", table)
    h = g.op("Gather", "/model/embed_tokens/Gather", [embedding, ids])  # (B, S, H)
    skip = None
    if positions is not None:  # learned positions are added by the first skip-norm
        skip = g.op("Gather", "/model/embed_positions/Gather", [g.const("model.embed_positions.weight", weights.array("positions")), positions])
    bias = None
    for i in range(layout.num_layers):
        name = f"/model/layers.{i}"
        normed, h = norm(g, f"{name}/attn_norm", spec.norm, epsilon, *weights.norm("attn_norm", i), h, skip, bias)
        qkv = weights.linear("qkv", layer=i) if weights.has("qkv") else weights.linear("q", "k", "v", layer=i)
        skip, bias = attention(g, f"{name}/attn", normed, qkv, weights.linear("o", layer=i), cache[i], (seqlens_k, total),
                               rotary, heads, layout.num_kv_heads, window)
        normed, h = norm(g, f"{name}/mlp_norm", spec.norm, epsilon, *weights.norm("mlp_norm", i), h, skip, bias)
        up = weights.linear("gate", "up", layer=i) if spec.mlp == "gated" else weights.linear("up", layer=i)
        skip, bias = mlp(g, f"{name}/mlp", normed, spec.mlp, activation, up, weights.linear("down", layer=i))
    normed, _ = norm(g, "/model/final_norm", spec.norm, epsilon, *weights.norm("final_norm"), h, skip, bias)

    logits = lm_head(g, normed, keep, head[0] if head else None, head[1] if head else None, embedding)
    g.op("Identity", "/logits/Identity", [logits], [LOGITS])
    return g.model("edgelm-decoder", opset or DEFAULT_OPSET)


def _cache_io(g: GraphBuilder, layout: KVLayout) -> list[tuple[str, str, str, str]]:
    """Per layer: (past_key, past_value, present_key, present_value), declared as graph I/O."""
    shape = [BATCH, layout.num_kv_heads, CAPACITY, layout.head_size]
    per_layer = []
    for (pk, pv), (ok, ov) in zip(layout.past_names(), layout.present_names()):
        for name in (pk, pv):
            g.input(name, np.float32, shape)
        for name in (ok, ov):
            g.output(name, np.float32, shape)
        per_layer.append((pk, pv, ok, ov))
    return per_layer


def _rotary(g: GraphBuilder, weights: DecoderWeights, family: Family, config: Any, layout: KVLayout) -> tuple[str, str]:
    """cos/sin tables (max_positions, head / 2) as initializers, read by every attention node."""
    rope = getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type")) in ("dynamic", "longrope"):
        raise ExportError(f"rope scaling {rope.get('rope_type', rope.get('type'))!r} changes with the sequence length; "
                          "the fused graph supports static rotary tables only")
    cos, sin = weights.rotary_tables(int(family.hparam(config, family.max_positions)), layout.head_size)
    return g.const("rotary.cos", cos), g.const("rotary.sin", sin)


def _sliding_window(family: Family, config: Any) -> int | None:
    """The attention window (tokens attended, self included) when the checkpoint uses one."""
    if getattr(config, "use_sliding_window", True) is False:
        return None
    window = next((getattr(config, k) for k in family.decoder.sliding_window if getattr(config, k, None)), None)
    # GroupQueryAttention's local_window_size is transformers' sliding_window (measured on a Mistral with a
    # window of 5: logits equal to 1e-5 at window 5, off by 6 or more at 4 and 6)
    return int(window) if window else None
