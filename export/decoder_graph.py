"""Build a decoder's fused ONNX graph from its torch weights and its family's wiring.

Why written here rather than exported: optimum's export traced transformers' unfused attention
(about 95 small nodes per layer, past and new keys concatenated every step, the full attention
matrix at prefill), where no fusion pass finds GroupQueryAttention; onnxruntime-genai's builder
(the reference for what the graph should contain) is one 5,500-line class of per-model flags. So
the graph is written from the weights with onnx.helper: this file declares the inputs, outputs and
what every layer shares, and the family's functions (export/decoder_blocks.py) wire the layers:

    input_ids ─> embed(model) ─> h
    per layer:   h = block(layer, h)        (norms, GroupQueryAttention with the cache in place, MLP)
    logits(model, h) ─> Slice(last logits_to_keep) ─> LM head ─> logits

Names and dims come from edgelm.runtime.kv_layout, the one naming function.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from edgelm.export import decoder_blocks
from edgelm.export.decoder_layers import check_activation
from edgelm.export.decoder_weights import DecoderWeights
from edgelm.export.families import Family
from edgelm.export.graph import ROTARY_TABLES
from edgelm.export.graph_builder import GraphBuilder
from edgelm.export.head_layout import HeadLayout
from edgelm.export.rotary import RotaryTables, rotary_tables
from edgelm.runtime.kv_layout import (BATCH, CAPACITY, INPUT_IDS, KEPT, LOGITS, LOGITS_TO_KEEP, SEQUENCE,
                                      SEQUENCE_LENGTHS, KVLayout)

DEFAULT_OPSET = 21


def build_decoder_graph(model: Any, family: Family, config: Any,
                        opset: int | None = None) -> tuple[onnx.ModelProto, KVLayout]:
    """The fused graph of MODEL (a transformers causal LM of FAMILY) and the KV layout it reads and writes."""
    spec = family.decoder
    weights = DecoderWeights(model, spec)
    model_layout = family.kv_layout(config)
    activation = str(family.hparam(config, spec.activation))
    check_activation(activation)
    rotary = rotary_tables(model, spec.rotary, config, int(family.hparam(config, family.max_positions))) if spec.rotary else None
    heads = HeadLayout(model_layout.head_size, rotary.dims if rotary else 0)
    layout = KVLayout(model_layout.num_layers, model_layout.num_kv_heads, heads.padded,
                      model_head_size=model_layout.head_size if heads.is_padded else None,
                      rope_switch=rotary.switch if rotary else None)
    g = GraphBuilder()

    ids = g.input(INPUT_IDS, np.int64, [BATCH, SEQUENCE])
    lengths = g.input(SEQUENCE_LENGTHS, np.int32, [BATCH])
    keep = g.input(LOGITS_TO_KEEP, np.int64, [1])
    vocab = weights.weight_tensor("embed" if weights.lm_head_is_embedding() else "lm_head").shape[0]  # no copy read for a shape
    g.output(LOGITS, np.float32, [BATCH, KEPT, vocab])
    cache = _cache_io(g, layout)
    seqlens_k = g.op("Sub", "/lengths/Sub", [lengths, g.const("/lengths/one", np.array(1, np.int32))])  # (B,) total - 1
    total = g.op("ReduceMax", "/lengths/ReduceMax", [lengths], keepdims=0)  # () longest row
    hparams = {"heads": family.hparam(config, family.num_heads), "kv_heads": layout.num_kv_heads,
               "epsilon": float(family.hparam(config, spec.norm_epsilon)), "activation": activation}
    shared = {"input_ids": ids, "keep": keep, "lengths": (seqlens_k, total), "cache": cache}
    tables = _rotary_inputs(g, rotary, heads, total, ids) if rotary else None
    built = decoder_blocks.Model(g, weights, spec, config, hparams, heads, tables, shared)

    h = (spec.embed or decoder_blocks.token_embedding)(built)
    block = spec.block or decoder_blocks.pre_norm_block
    for i in range(layout.num_layers):
        h = block(built.layer(i), h)
    logits = (spec.logits or decoder_blocks.final_logits)(built, h)
    g.op("Identity", "/logits/Identity", [logits], [LOGITS])
    return g.model("edgelm-decoder", opset or DEFAULT_OPSET), layout


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


def _rotary_inputs(g: GraphBuilder, rotary: RotaryTables, heads: HeadLayout, total: str,
                   ids: str) -> dict[str | None, tuple[str, str]]:
    """Per layer type, the cos/sin (rows, rotary / 2) every attention node of that type reads.

    Static tables are initializers; LongRoPE's two tables are sliced per call (export/rotary.py says why).
    """
    inputs = {}
    for layer_type, (cos, sin) in rotary.tables.items():
        suffix = f"{layer_type}." if layer_type else ""
        names = [g.const(f"{ROTARY_TABLES}{suffix}{kind}", heads.table(table, fill))
                 for kind, table, fill in (("cos", cos, 1.0), ("sin", sin, 0.0))]
        if rotary.switch is not None:
            names = _switched(g, f"/rotary/{suffix.rstrip('.')}", names, rotary.switch, total, ids, cos.shape[0] // 2)
        inputs[layer_type] = tuple(names)
    return inputs


def _switched(g: GraphBuilder, name: str, tables: list[str], switch: int, total: str, ids: str, rows: int) -> list[str]:
    """Rows [start, start + total) of each LongRoPE table: start = P (the all-long half) for a call of several
    tokens past the switch, else 0 (each position below the switch short, from it long).

        total, Shape(input_ids)[1] ─> Where(total > switch and sequence > 1, P, 0) = start ─> Slice(table, start, start + total)
    """
    half = g.const(f"{name}/half", np.array([rows], np.int64))  # where the all-long table starts
    length = g.op("Cast", f"{name}/Cast", [g.op("Reshape", f"{name}/Reshape", [total, g.const(f"{name}/one", np.array([1], np.int64))])], to=onnx.TensorProto.INT64)
    sequence = g.op("Shape", f"{name}/Shape", [ids], start=1, end=2)  # (1,) tokens per row in this call
    past = g.op("Greater", f"{name}/Greater", [length, g.const(f"{name}/switch", np.array([switch], np.int64))])
    several = g.op("Greater", f"{name}/Greater_1", [sequence, g.const(f"{name}/single", np.array([1], np.int64))])
    start = g.op("Where", f"{name}/Where", [g.op("And", f"{name}/And", [past, several]), half,
                                            g.const(f"{name}/zero", np.array([0], np.int64))])
    end = g.op("Add", f"{name}/Add", [start, length])
    axis = g.const(f"{name}/axis", np.array([0], np.int64))
    return [g.op("Slice", f"{name}/Slice_{i}", [table, start, end, axis]) for i, table in enumerate(tables)]
