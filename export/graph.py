"""Produce the ONNX graph and read back its I/O contract.

Decoders get the fused graph written by export/decoder_graph.py (GroupQueryAttention with the
KV cache updated in place); encoders are traced by torch.onnx (export/encoder_graph.py). Both write model.onnx with its
weights in model.onnx_data beside it (`save_graph`: onnxruntime maps that file instead of
copying the weights) and keep a tied LM head tied (a MatMul over
Transpose(embedding)), so no weight is stored twice. A decoder graph's names are checked against
the one naming function in edgelm.runtime.kv_layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelm.errors import ExportError
from edgelm.export.source import Source
from edgelm.runtime.kv_layout import INPUT_IDS, LOGITS, LOGITS_TO_KEEP, SEQUENCE_LENGTHS, KVLayout
from edgelm.runtime.manifest import TensorSpec

GRAPH_FILE = "model.onnx"
ROTARY_TABLES = "rotary."  # the decoder graph's cos/sin initializers (export/decoder_graph.py) are named so
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(bool)": "bool"}


def weights_file(graph: Path) -> Path:
    """Where `save_graph` keeps GRAPH's weights: beside it, named after it (model.onnx -> model.onnx_data)."""
    return graph.with_name(f"{graph.name}_data")


EXTERNAL_DATA = weights_file(Path(GRAPH_FILE)).name  # every bundle graph's weights


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


def save_graph(model: Any, path: Path) -> tuple[str, ...]:
    """Write MODEL (holding its weights) to PATH with the weights in `weights_file(PATH)`; returns that file's name.

    Used for every bundle graph and for the work files quantize writes itself (onnxruntime's
    quantizers write theirs in its own external data format), so no file is held to protobuf's 2 GB limit.

    Why always, not only past protobuf's 2 GB: onnxruntime maps external data into memory, where an
    inline graph is first parsed into a copy of every weight. Measured on SmolLM2, onnxruntime 1.32,
    resident memory after opening the session: fp32 882 -> 572 MB (load 1.6 -> 0.9 s), int8 315 ->
    270 MB, int4 228 -> 202 MB; decode speed unchanged (docs/benchmarks.md).
    """
    import onnx
    from onnx.external_data_helper import uses_external_data

    if any(uses_external_data(t) for t in model.graph.initializer):
        raise ValueError("save_graph needs a model holding its weights (onnx.load with load_external_data=True)")
    data = weights_file(path)
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=1024)
    data.chmod(path.stat().st_mode & 0o777)  # onnx creates it 0600; a bundle's files are read as the graph is
    return (data.name,)


def store_weights_beside(path: Path) -> tuple[str, ...]:
    """Rewrite the graph at PATH (weights inline or beside it) the way `save_graph` writes it."""
    import onnx

    return save_graph(onnx.load(str(path)), path)


def graph_io(session: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an onnxruntime session as manifest TensorSpecs."""

    def spec(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, (int, str)) else "?" for d in arg.shape)
        return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)

    return tuple(map(spec, session.get_inputs())), tuple(map(spec, session.get_outputs()))


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


def graph_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


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
