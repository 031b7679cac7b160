"""A bundle's graph file: how it is written (weights in one data file beside it) and read back
(its I/O as manifest TensorSpecs, its opset).

Export writes a bundle's graph and quantize rewrites it; both need the same file layout and the
same description of the result. It lives here, outside both stages, because data flows one way
(checkpoint -> export -> bundle -> quantize -> bundle -> runtime): quantize reads bundles and
never imports edgelm.export. onnx is imported inside the functions that need it (export and
quantize both install it); edgelm.runtime never imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelm.runtime.manifest import TensorSpec

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
               "tensor(int32)": "int32", "tensor(int8)": "int8", "tensor(bool)": "bool"}


def weights_file(graph: Path) -> Path:
    """Where `save_graph` keeps GRAPH's weights: beside it, named after it (model.onnx -> model.onnx_data)."""
    return graph.with_name(f"{graph.name}_data")


def save_graph(model: Any, path: Path) -> tuple[str, ...]:
    """Write MODEL (holding its weights) to PATH with the weights in `weights_file(PATH)`; returns that file's name.

    Used for every bundle graph and for the work files quantize writes itself (onnxruntime's
    quantizers write theirs in its own external data format), so no file is held to protobuf's 2 GB limit.

    Why always, not only past protobuf's 2 GB: onnxruntime maps external data into memory, where an
    inline graph is first parsed into a copy of every weight, so a bundle opens faster in less memory
    and decodes as fast (measured in docs/benchmarks.md, "Opening a bundle: memory").
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


def graph_io(session: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of an onnxruntime session as manifest TensorSpecs."""

    def spec(arg) -> TensorSpec:
        shape = tuple(d if isinstance(d, (int, str)) else "?" for d in arg.shape)
        return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)

    return tuple(map(spec, session.get_inputs())), tuple(map(spec, session.get_outputs()))


def graph_opset(path: Path) -> int:
    """The default-domain opset the graph at PATH declares (its weights are not read)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
