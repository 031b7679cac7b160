"""Which optional extra each command needs, checked before the command starts.

`pip install edgelm` is the runtime only (an edge box); export, quantize, serve and batch (with
--ray: the ray extra) each need an extra. Without it, the import error would surface from deep inside a library (onnxruntime's
quantizer importing onnx_ir, torch.onnx importing onnxscript) as a traceback; this names the extra instead.
"""

from __future__ import annotations

import importlib

from edgelm.errors import EdgelmError

# extra -> the modules its commands import (the first missing one is named in the error)
EXTRA_MODULES = {
    "export": ("torch", "transformers", "onnxscript", "onnx", "sentence_transformers"),
    "quantize": ("onnx", "onnx_ir", "onnxruntime.quantization"),
    "serve": ("starlette", "uvicorn", "prometheus_client"),
    "batch": ("pyarrow",),
    "ray": ("ray", "ray.data", "pyarrow"),
}


class MissingExtraError(EdgelmError):
    """A command runs on an install without the extra it needs."""


def require_extra(extra: str, command: str) -> None:
    """Raise MissingExtraError naming `pip install 'edgelm[EXTRA]'` if any module EXTRA provides is missing."""
    for module in EXTRA_MODULES[extra]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            missing = e.name or module
            raise MissingExtraError(f"edgelm {command} needs the {extra} extra ({missing} is not installed): "
                                    f"pip install 'edgelm[{extra}]'") from None
