"""Keep a quantized graph readable by every onnxruntime that reads its float graph.

onnxruntime's quantization pre-processing runs its graph optimiser and saves the result, and
the saved contrib nodes then carry every attribute of the *running* onnxruntime's schema, filled
with defaults: GroupQueryAttention gains sliding_window_cache, qk_output, k_quant_type, ... under
onnxruntime 1.32, and onnxruntime 1.24 refuses the graph ("Unrecognized attribute"). Dropping
the attributes that the float graph's node did not have gives the graph back to older
onnxruntimes unchanged in meaning: a default is what the operator assumes when it is absent.
Written by hand because onnxruntime.quantization has no option to save without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

MS_DOMAIN = "com.microsoft"


def drop_filled_in_defaults(float_graph: Path, model: "onnx.ModelProto") -> int:
    """Remove from MODEL's contrib nodes the attributes their namesakes in FLOAT_GRAPH lack; returns how many."""
    import onnx

    original = {n.name: {a.name for a in n.attribute}
                for n in onnx.load(str(float_graph), load_external_data=False).graph.node if n.domain == MS_DOMAIN}
    dropped = 0
    for node in model.graph.node:
        had = original.get(node.name)
        if had is None or node.domain != MS_DOMAIN:
            continue  # a node the quantizer made: its attributes are its own
        extra = [a for a in node.attribute if a.name not in had]
        for attribute in extra:
            node.attribute.remove(attribute)
        dropped += len(extra)
    return dropped
