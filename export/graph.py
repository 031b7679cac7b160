"""Produce the ONNX graph and check its I/O contract.

Decoders get the fused graph written by export/decoder_graph.py (GroupQueryAttention with the
KV cache updated in place); encoders are traced by torch.onnx (export/encoder_graph.py). Both write model.onnx with its
weights in model.onnx_data beside it (edgelm.bundle_graph's `save_graph`: onnxruntime maps that file instead of
copying the weights) and keep a tied LM head tied (a MatMul over
Transpose(embedding)), so no weight is stored twice. A decoder graph's names are checked against
the one naming function in edgelm.runtime.kv_layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelm.bundle_graph import save_graph
from edgelm.errors import ExportError
from edgelm.export.source import Source
from edgelm.runtime.kv_layout import INPUT_IDS, LOGITS, LOGITS_TO_KEEP, SEQUENCE_LENGTHS, KVLayout

GRAPH_FILE = "model.onnx"
ROTARY_TABLES = "rotary."  # the decoder graph's cos/sin initializers (export/decoder_graph.py) are named so


def export_graph(model: Any, source: Source, bundle_dir: Path,
                 opset: int | None = None) -> tuple[tuple[str, ...], KVLayout | None]:
    """Write MODEL's graph to BUNDLE_DIR/model.onnx; returns the external data files written beside it
    and, for a decoder, the KV layout its graph reads and writes."""
    if source.family.kind.value == "decoder":
        from edgelm.export.decoder_graph import build_decoder_graph

        graph, layout = build_decoder_graph(model, source.family, source.config, opset)
        return save_graph(graph, bundle_dir / GRAPH_FILE), layout
    from edgelm.export.encoder_graph import build_encoder_graph

    return save_graph(build_encoder_graph(model, source.family, source.task, opset), bundle_dir / GRAPH_FILE), None


def check_decoder_io(inputs, outputs, layout: KVLayout) -> None:
    """The decoder graph must carry exactly the names the runtime will feed and fetch."""
    have_in, have_out = {t.name for t in inputs}, {t.name for t in outputs}
    need_in = {INPUT_IDS, SEQUENCE_LENGTHS, LOGITS_TO_KEEP} | {n for pair in layout.past_names() for n in pair}
    need_out = {LOGITS} | {n for pair in layout.present_names() for n in pair}
    missing = sorted(need_in - have_in) + sorted(need_out - have_out)
    if missing:
        raise ExportError(f"the decoder graph lacks {', '.join(missing[:6])}; it was not written by this edgelm")
    shapes = {t.name: t.shape for t in inputs}
    past_key = shapes[layout.past_names()[0][0]]
    if past_key[1] != layout.num_kv_heads or past_key[3] != layout.head_size:
        raise ExportError(
            f"graph KV shape {past_key} disagrees with its layout ({layout.num_kv_heads} KV heads, head size {layout.head_size})"
        )


def stored_weight_elements(path: Path) -> int:
    """Elements held by the graph's initializers (dims only; external data is not read), the rotary
    cos/sin tables aside: they are computed from the config, not parameters of the model."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    total = 0
    for init in model.graph.initializer:
        if init.name.startswith(ROTARY_TABLES):
            continue
        count = 1
        for d in init.dims:
            count *= d
        total += count
    return total
