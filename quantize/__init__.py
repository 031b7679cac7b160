"""edgelm.quantize: a float bundle -> an INT8/INT4 bundle that passed an accuracy gate.

    from edgelm.quantize import quantize, QuantizeOptions, Method
    quantize("./smol", "./smol-int8", QuantizeOptions(Method.INT8))

Built on onnxruntime.quantization (needs the `quantize` extra: onnx, onnx-ir). The gate runs
both bundles through edgelm.runtime, so what is measured is what ships.
"""

from edgelm.quantize.methods import Algorithm, Calibration, KVCache, Method, QuantizeOptions, default_method
from edgelm.quantize.pipeline import quantize

__all__ = ["Algorithm", "Calibration", "KVCache", "Method", "QuantizeOptions", "default_method", "quantize"]
