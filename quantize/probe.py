"""An onnxruntime session over a changed copy of the graph quantize holds in memory.

Sensitivity (quantize/sensitivity.py) and GPTQ (quantize/gptq.py) both run the graph as it stands mid-quantize,
with a little more exposed: weights as overridable inputs, or inner tensors as outputs. The copy is written
with its weights beside it (saving moves a model's tensors to the file, so the caller's model is never the one
saved) and read back by onnxruntime; the files go as soon as the session holds them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx


def probe_session(model: onnx.ModelProto, change: Callable[[onnx.ModelProto], None], work: Path | None = None):
    """An onnxruntime CPU session of MODEL with CHANGE applied to a copy (MODEL is not changed); files under WORK
    (quantize's work folder; None: the system's temporary folder)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    change(probe)
    with tempfile.TemporaryDirectory(prefix="edgelm-probe-", dir=work) as folder:
        path = Path(folder) / "probe.onnx"
        onnx.save_model(probe, str(path), save_as_external_data=True, location="probe.onnx_data")
        del probe
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime warns about every overridable initializer
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
