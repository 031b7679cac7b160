"""The quantization methods, each a thin call into onnxruntime.quantization, and their defaults.

| method        | what                                                        | default for |
|---------------|-------------------------------------------------------------|-------------|
| int8-dynamic  | INT8 weights (per channel), activations quantized at run time (quantize_dynamic) | encoders |
| int8-static   | QDQ INT8 weights and activations, calibrated on text (quantize_static) |  |
| int8          | weight-only INT8, block-wise (MatMulNBits), float activations | decoders |
| int4          | weight-only INT4, block-wise (MatMulNBits + 4-bit GatherBlockQuantized) |  |

Defaults come from measurements on this project's real models (docs/benchmarks.md): for
SmolLM2, int8-dynamic raised perplexity by 71% while weight-only int8 kept it within 0.3% and
decoded 1.8x faster; for all-MiniLM-L6-v2, int8-static (QDQ) reached only 0.94 mean cosine
while int8-dynamic kept 0.993 and ran 1.7x faster.

Every method first runs onnxruntime's quantization pre-processing (constant folding, so the
LM head's Transpose(embedding) becomes a weight the quantizers can see).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from edgelm.errors import QuantizeError


class Method(str, Enum):
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"
    INT8 = "int8"
    INT4 = "int4"


class Calibration(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


def default_method(is_decoder: bool) -> Method:
    return Method.INT8 if is_decoder else Method.INT8_DYNAMIC


WEIGHT_ONLY = {Method.INT8: 8, Method.INT4: 4}  # bits


@dataclass(frozen=True)
class QuantizeOptions:
    """What the user asked for, checked once at the edge."""

    method: Method
    keep_float: tuple[str, ...] = ()  # presets or node-name patterns (quantize/policy.py)
    block_size: int = 32  # weight-only block size along K
    per_channel: bool = True  # int8-dynamic / int8-static weights
    calibration: Calibration = Calibration.MINMAX  # int8-static
    calibration_file: Path | None = None  # int8-static texts, one per line
    eval_file: Path | None = None  # gate texts (prose for decoders, lines for encoders)
    max_ppl_increase: float | None = None  # None: the method's default threshold
    min_mean_cosine: float | None = None
    gate: bool = True

    def __post_init__(self):
        for name, kind in (("method", Method), ("calibration", Calibration)):  # accept the names users type
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise QuantizeError(f"{name} must be one of {', '.join(k.value for k in kind)}, got {getattr(self, name)!r}") from None
        problems = []
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            problems.append(f"--block-size must be a power of two >= 16, got {self.block_size}")
        if self.max_ppl_increase is not None and not 0 < self.max_ppl_increase < 10:
            problems.append(f"--max-ppl-increase is a fraction (0.03 = 3%), got {self.max_ppl_increase}")
        if self.min_mean_cosine is not None and not 0 < self.min_mean_cosine <= 1:
            problems.append(f"--min-cosine must be in (0, 1], got {self.min_mean_cosine}")
        if self.calibration_file is not None and self.method is not Method.INT8_STATIC:
            problems.append(f"--calibration is used by --method int8-static only, not {self.method.value}")
        if problems:
            raise QuantizeError(*problems)


@dataclass
class Quantized:
    """What a method did, for the manifest's precision record."""

    weights: str
    activations: str
    details: dict = field(default_factory=dict)


@contextmanager
def quiet_onnxruntime_logs() -> Iterator[None]:
    """onnxruntime.quantization logs every node at INFO (one of its modules calls basicConfig at
    import): keep the user's stderr for progress and errors."""
    import onnxruntime.quantization.matmul_nbits_quantizer  # noqa: F401  (import first: it resets the root level)

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.setLevel(level)


def preprocess(src: Path, dst: Path) -> None:
    """onnxruntime's quantization pre-processing: ONNX shape inference and graph optimisation."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # symbolic shape inference fails on optimum's decoder graphs (dynamic past lengths); ONNX's own suffices
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def int8_dynamic(src: Path, dst: Path, options: QuantizeOptions, keep: list[str]) -> Quantized:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=options.per_channel, weight_type=QuantType.QInt8,
                     nodes_to_exclude=keep, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Quantized("int8", "int8 (dynamic)", {"per_channel": options.per_channel})


def int8_static(src: Path, dst: Path, options: QuantizeOptions, keep: list[str], batches: Iterator[dict]) -> Quantized:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    method = {Calibration.MINMAX: CalibrationMethod.MinMax, Calibration.ENTROPY: CalibrationMethod.Entropy,
              Calibration.PERCENTILE: CalibrationMethod.Percentile}[options.calibration]
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=options.per_channel,
                    op_types_to_quantize=["MatMul", "Gather"], nodes_to_exclude=keep, calibrate_method=method,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    return Quantized("int8", "int8 (static QDQ)", {"per_channel": options.per_channel, "calibration": options.calibration.value})


def weight_only(src: Path, dst: Path, options: QuantizeOptions, keep: list[str]) -> Quantized:
    """Block-wise MatMulNBits (+ embedding lookups); a tied INT8 embedding is stored once."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from edgelm.quantize.gemm_to_matmul import gemm_to_matmul
    from edgelm.quantize.tied_embedding import find_tie, share_tied_embedding

    bits = WEIGHT_ONLY[options.method]
    model = onnx.load(str(src))
    unfused = gemm_to_matmul(model)
    tie = find_tie(model) if bits == 8 else None
    if tie and tie.gather in keep:  # the user keeps the embedding lookup in float
        tie = None
    ops = ("MatMul", "Gather") if bits == 4 else ("MatMul",)  # onnxruntime quantizes only 4-bit Gather
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=options.block_size, is_symmetric=True,
                                     accuracy_level=4, nodes_to_exclude=keep, op_types_to_quantize=ops,
                                     quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    model = quantizer.model.model
    shared = bool(tie) and share_tied_embedding(model, tie, options.block_size)
    onnx.save(model, str(dst))
    return Quantized(f"int{bits}", "fp32", {"block_size": options.block_size, "symmetric": True, "accuracy_level": 4,
                                            "tied_embedding_shared": shared, "gemm_rewritten_as_matmul": unfused})


def check_quantized(path: Path) -> int:
    """Count of quantized nodes in PATH; none means the method found nothing it could quantize."""
    import onnx

    quantized_ops = {"MatMulNBits", "MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul",
                     "DequantizeLinear", "GatherBlockQuantized", "QAttention", "QGemm"}
    count = sum(n.op_type in quantized_ops for n in onnx.load(str(path), load_external_data=False).graph.node)
    if not count:
        raise QuantizeError(f"the method quantized no node of {path.name}; keep fewer nodes in float or try another --method")
    return int(count)


def pad_batches(batches: list[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """Calibration batches right-padded to one length: onnxruntime's histogram calibrators need it."""
    width = max(b["input_ids"].shape[1] for b in batches)
    for batch in batches:
        pad = width - batch["input_ids"].shape[1]
        yield {name: np.pad(v, ((0, 0), (0, pad))) for name, v in batch.items()}
