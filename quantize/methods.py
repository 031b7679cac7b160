"""The quantization methods, each a thin call into onnxruntime.quantization, and their defaults.

| method        | what                                                        | default for |
|---------------|-------------------------------------------------------------|-------------|
| int8-per-token | INT8 weights (per channel), activations quantized at run time with a scale per token (quantize_dynamic + quantize/per_token.py) | encoders |
| int8-dynamic  | INT8 weights (per channel), activations quantized at run time, one scale per call (quantize_dynamic) |  |
| int8-static   | QDQ INT8 weights and activations, calibrated on text (quantize_static) |  |
| int8          | weight-only INT8, block-wise (MatMulNBits), float activations | decoders |
| int4          | weight-only INT4, block-wise (MatMulNBits + 4-bit GatherBlockQuantized) |  |
| int4-mixed    | int4, with the MatMuls most sensitive at 4 bits (measured KL on calibration text) at 8 bits, as llama.cpp's Q4_K_M keeps some tensors at 6 |  |

The defaults are what kept this project's real models closest to float for their speed: for a
decoder, weight-only int8 loses far less perplexity than int8-dynamic and decodes faster; for an
encoder, int8-per-token keeps the embeddings closer to float than int8-dynamic or int8-static at a
small cost in speed (see `default_method`; the numbers are in docs/benchmarks.md, "Decoder quality:
the evaluation suite against llama.cpp" and "Encoders: sentence embeddings").

Every method first runs onnxruntime's quantization pre-processing (constant folding, so the
LM head's Transpose(embedding) becomes a weight the quantizers can see). Each step writes its
graph file with the weights beside it (`save_graph`, or onnxruntime's external data format), so
no file is held to protobuf's 2 GB limit.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgelm.bundle_graph import save_graph, weights_file
from edgelm.errors import QuantizeError, warn
from edgelm.quantize.eval_suite import check_domains

if TYPE_CHECKING:
    import onnx

    from edgelm.quantize.prompt_feeds import CalibrationPrompts


class Method(str, Enum):
    INT8_PER_TOKEN = "int8-per-token"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"
    INT8 = "int8"
    INT4 = "int4"
    INT4_MIXED = "int4-mixed"


class Algorithm(str, Enum):
    """How 4-bit weights are rounded: GPTQ (quantize/gptq.py: each row's error compensated by the rows after it,
    on calibration text's input statistics; the default), round-to-nearest (onnxruntime.quantization, each block's
    range searched first), or HQQ (onnxruntime.quantization: float zero points by half-quadratic optimisation,
    which onnxruntime 1.32 runs without its fast kernel). Every one writes an integer zero point per block except
    HQQ. int8 is always symmetric RTN. GPTQ against RTN on every suite domain: docs/benchmarks.md."""

    RTN = "rtn"
    HQQ = "hqq"
    GPTQ = "gptq"


class KVCache(str, Enum):
    """How a decoder keeps its KV cache: as the float bundle does, or int8 with calibrated per-channel
    scales (quantize/kv_cache.py: faster decode at long context, slower prompts)."""

    FP32 = "fp32"
    INT8 = "int8"


class Calibration(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


def default_method(is_decoder: bool) -> Method:
    """Decoders: weight-only int8. Encoders: int8 with a scale per token, because with one scale per call
    (int8-dynamic) the [CLS] and [SEP] tokens' far larger activations set the scale of every token. Keeping
    the most sensitive MatMuls in float is as close to float but slower and larger; weight-only int8
    (MatMulNBits) is closer still but slower than the float bundle, its kernel being made for one row, not
    batches (measured in docs/benchmarks.md, "Encoders: sentence embeddings")."""
    return Method.INT8 if is_decoder else Method.INT8_PER_TOKEN


WEIGHT_ONLY = {Method.INT8: 8, Method.INT4: 4, Method.INT4_MIXED: 4}  # bits (int4-mixed: of the MatMuls not chosen for 8)
FOUR_BIT = (Method.INT4, Method.INT4_MIXED)
# Block size along K: int8 decodes as fast at 32 as at 64 and is more accurate; int4 decodes faster at 64
# (onnxruntime's 4-bit kernel pays per block) but only blocks of 32 keep every suite domain (German above all) within
# llama.cpp Q4_0's perplexity change (measured on SmolLM2 in docs/benchmarks.md, "Decoder quality: the evaluation
# suite against llama.cpp").
BLOCK_SIZES = {Method.INT8: 32, Method.INT4: 32, Method.INT4_MIXED: 32}
# int4-mixed: the share of the 4-bit MatMuls' weights (by element) kept at 8 bits, most sensitive first, and the
# calibration tokens each sensitivity is measured on (the first SENSITIVITY_TOKENS of every calibration text).
EIGHT_BIT_SHARE = 0.25
# ...ranked by KL / size^SIZE_EXPONENT. Per element (1) spent the share almost all on the small attention matrices,
# KL alone (0) on the large MLP ones; the square root between them was closer to float on every domain
# (docs/benchmarks.md, "Decoder quality: the evaluation suite against llama.cpp").
SIZE_EXPONENT = 0.5
SENSITIVITY_TOKENS = 48
EIGHT_BIT_BLOCK = 64  # int4-mixed's 8-bit MatMuls and LM head: 0.5 bit per weight of scales, against 1 at 32
HEAD_BLOCK = 32  # the 8-bit LM head (and tied lookup): 32 decodes as fast as 64 at int8, and the head's error dominates
# int8: a gated MLP's down projection in blocks of 16. Its input (act(gate) * up) has the widest outliers, and
# accuracy level 4 quantizes a MatMul's input to int8 per block of the weight's block size: on SmolLM2 float
# activations there alone take a third of int8's KL away, and blocks of 16 there cut KL by 10-23% on every suite
# domain (German most) for 2.5% more bytes, at the same decode speed. Blocks of 16 everywhere cost 10-19% of decode.
GATED_BLOCK = 16
# SmoothQuant's alpha for int8/int4 (quantize/smoothing.py): on SmolLM2, 0.5 brought both markedly closer to float,
# and any alpha from 0.4 to 0.75 did about as well (docs/benchmarks.md).
DEFAULT_SMOOTHING = 0.5
# MatMulNBits computes with int8 activations (VNNI / AMX kernels) where the CPU has them.
ACCURACY_LEVEL = 4


@dataclass(frozen=True)
class QuantizeOptions:
    """What the user asked for, checked once at the edge."""

    method: Method
    keep_float: tuple[str, ...] = ()  # presets or node-name patterns (quantize/policy.py)
    block_size: int | None = None  # weight-only block size along K; None: BLOCK_SIZES
    per_channel: bool = True  # int8-per-token / int8-dynamic / int8-static weights
    algorithm: Algorithm | None = None  # 4-bit rounding; None: GPTQ (`rounding`)
    kv_cache: KVCache = KVCache.FP32  # decoders
    smoothing: float | None = None  # SmoothQuant alpha for int8/int4 (0 = off); None: DEFAULT_SMOOTHING
    calibration: Calibration = Calibration.MINMAX  # int8-static
    calibration_file: Path | None = None  # int8-static, SmoothQuant and int8 KV-cache texts, one per line
    eval_file: Path | None = None  # gate texts (one more domain for decoders, lines for encoders)
    eval_domains: tuple[str, ...] | None = None  # decoders: the part of the built-in suite to score; None: all
    max_ppl_increase: float | None = None  # None: the method's default threshold
    min_mean_cosine: float | None = None
    gate: bool = True

    @property
    def block(self) -> int:
        """The weight-only block size: the user's, or the method's measured default."""
        return self.block_size or BLOCK_SIZES.get(self.method, 32)

    @property
    def alpha(self) -> float:
        """The smoothing actually applied: the user's alpha, the weight-only default, or 0 (off)."""
        if self.method not in WEIGHT_ONLY:
            return 0.0
        return DEFAULT_SMOOTHING if self.smoothing is None else float(self.smoothing)

    @property
    def rounding(self) -> Algorithm:
        """How 4-bit weights are rounded: the user's algorithm, or GPTQ; 8-bit weights are always RTN."""
        if self.method not in FOUR_BIT:
            return Algorithm.RTN
        return self.algorithm or Algorithm.GPTQ

    @property
    def reads_calibration(self) -> bool:
        """Whether the weight-only path runs the calibration texts: SmoothQuant's ranges, int4-mixed's sensitivity
        or GPTQ's input statistics."""
        return self.method in WEIGHT_ONLY and bool(self.alpha or self.method is Method.INT4_MIXED
                                                   or self.rounding is Algorithm.GPTQ)

    def __post_init__(self):
        for name, kind in (("method", Method), ("algorithm", Algorithm), ("kv_cache", KVCache),
                           ("calibration", Calibration)):  # accept the names users type
            if getattr(self, name) is None:
                continue
            try:
                object.__setattr__(self, name, kind(getattr(self, name)))
            except ValueError:
                raise QuantizeError(f"{name} must be one of {', '.join(k.value for k in kind)}, got {getattr(self, name)!r}") from None
        problems = []
        if self.block_size is not None and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            problems.append(f"--block-size must be a power of two >= 16, got {self.block_size}")
        if self.max_ppl_increase is not None and not 0 < self.max_ppl_increase < 10:
            problems.append(f"--max-ppl-increase is a fraction (0.03 = 3%), got {self.max_ppl_increase}")
        if self.min_mean_cosine is not None and not 0 < self.min_mean_cosine <= 1:
            problems.append(f"--min-cosine must be in (0, 1], got {self.min_mean_cosine}")
        if self.algorithm is not None and self.method not in FOUR_BIT:
            problems.append(f"--algorithm {self.algorithm.value} is for --method int4 and int4-mixed, not {self.method.value}")
        if self.calibration_file is not None and self.method is not Method.INT8_STATIC \
                and self.kv_cache is KVCache.FP32 and not self.reads_calibration:
            setting = {Method.INT8: " with --smooth 0", Method.INT4: f" with --smooth 0 and --algorithm {self.rounding.value}"}
            problems.append(f"--calibration is read by --method int8-static, int4 and int4-mixed, int8 with SmoothQuant and "
                            f"--kv-cache int8 only, not {self.method.value}{setting.get(self.method, '')}")
        if self.smoothing is not None and self.method not in WEIGHT_ONLY:
            problems.append(f"--smooth is for --method int8 and int4 (weight-only), not {self.method.value}")
        elif self.smoothing is not None and not 0 <= self.smoothing <= 1:
            problems.append(f"--smooth is SmoothQuant's alpha in [0, 1] (0 turns it off), got {self.smoothing}")
        problems += check_domains(self.eval_domains)
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
    """onnxruntime's quantization pre-processing: ONNX shape inference and graph optimisation.

    When the optimisation fails (it writes its graph to a temporary file: a full disk does it),
    onnxruntime logs the traceback and goes on without it; that becomes one warning instead, or
    nothing when the error that follows (the same full disk) says it all.
    """
    from onnxruntime.quantization.shape_inference import logger, quant_pre_process

    failures: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            failures.append(record)
        return record.levelno < logging.ERROR

    logger.addFilter(hold)
    try:
        # symbolic shape inference fails on optimum's decoder graphs (dynamic past lengths); ONNX's own suffices.
        # save_as_external_data: onnxruntime 1.32 then also points its optimiser's output at a data file of its
        # own (without it, a graph whose weights are beside it loses them); the result is the same graph as from
        # an inline copy, sooner
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True, save_as_external_data=True,
                          all_tensors_to_one_file=True, external_data_location=weights_file(dst).name)
    finally:
        logger.removeFilter(hold)
    if failures:
        warn(f"onnxruntime's graph optimisation failed ({failures[-1].getMessage().strip().splitlines()[-1]}); "
             "quantizing the graph without it")


def int8_dynamic(src: Path, dst: Path, options: QuantizeOptions, keep: list[str]) -> Quantized:
    """quantize_dynamic: int8 weights, each MatMul's input quantized per call at run time.

    Weights are kept in 7 bits (onnxruntime's reduce_range). On a CPU without VNNI (AVX2 only),
    onnxruntime's u8s8 kernel adds pairs of 8-bit products in 16 bits, which saturates on full-range
    weights; a bundle runs on CPUs it was not built on, so it must be right on those too. On such a
    CPU 7 bits bring tiny models' outputs much closer to float, and cost the real encoders little
    cosine anywhere (measured in docs/benchmarks.md, "Encoders: sentence embeddings").
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), per_channel=options.per_channel, reduce_range=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=_dynamic_op_types(), nodes_to_exclude=keep, use_external_data_format=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return Quantized("int8", "int8 (dynamic)", {"per_channel": options.per_channel, "reduce_range": True})


def _dynamic_op_types() -> list[str]:
    """quantize_dynamic's own op types less Attention: it takes ONNX's standard Attention (opset 23, which encoder
    graphs use) for onnxruntime's contrib one and writes a QAttention that cannot load; its Q/K/V projections are
    MatMuls before it, quantized as before."""
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return [op for op in IntegerOpsRegistry if op != "Attention"]


def int8_per_token(src: Path, dst: Path, options: QuantizeOptions, keep: list[str]) -> Quantized:
    """quantize_dynamic, then every quantized MatMul's input scaled per token (quantize/per_token.py)."""
    import onnx

    from edgelm.quantize.per_token import per_token_activations

    int8_dynamic(src, dst, options, keep)
    model = onnx.load(str(dst))
    matmuls = per_token_activations(model)
    save_graph(model, dst)
    return Quantized("int8", "int8 (dynamic, per token)",
                     {"per_channel": options.per_channel, "reduce_range": True, "per_token_matmuls": matmuls})


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
                    use_external_data_format=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True})
    return Quantized("int8", "int8 (static QDQ)", {"per_channel": options.per_channel, "calibration": options.calibration.value})


def weight_only(src: Path, dst: Path, options: QuantizeOptions, keep: list[str],
                calibration: "CalibrationPrompts | None" = None, progress=None) -> Quantized:
    """Block-wise MatMulNBits in passes: the LM head at 8 bits, then every other MatMul at the method's bits
    (4-bit: rounded by options.rounding; int8: a gated MLP's down projection first, in blocks of GATED_BLOCK). A
    tied embedding's lookup reads the head's 8-bit bytes (stored once); an untied one is quantized to 4 bits by int4
    and left float by int8.

    Why the head stays 8-bit at int4: on SmolLM2 a 4-bit head and embedding move the output much further
    from float, and the shared 8-bit matrix is smaller than two 4-bit ones. With options.alpha, SmoothQuant scales are first folded into the
    float weights (quantize/smoothing.py), their activation ranges taken on CALIBRATION. int4-mixed first
    moves the MatMuls most sensitive at 4 bits to 8 (`_sensitive_matmuls`, measured on CALIBRATION). 4-bit weights
    are rounded by GPTQ on CALIBRATION's input statistics (quantize/gptq.py) unless the user picks RTN or HQQ; RTN
    blocks get their range searched first (quantize/clipping.py).
    """
    import onnx

    from edgelm.quantize.smoothing import input_maxima, smooth
    from edgelm.quantize.tied_embedding import find_tie, lm_head_node, restore_tied_head, share_tied_embedding

    bits = WEIGHT_ONLY[options.method]
    # activation ranges first, from the file: calibration's session is closed before the weights are loaded
    maxima = input_maxima(src, calibration.layout, [list(t) for t in calibration.texts]) if options.alpha else {}
    model = onnx.load(str(src))
    smoothed = smooth(model, maxima, options.alpha) if maxima else 0
    head = lm_head_node(model)
    tie = find_tie(model)
    shared = False
    head_block = None
    if head is not None and head not in keep:
        largest = EIGHT_BIT_BLOCK if options.method is Method.INT4_MIXED else min(options.block, HEAD_BLOCK)
        head_block = _head_block(model, head, largest)
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name != head]
        model = _matmul_nbits(model, 8, head_block, Algorithm.RTN, exclude=others, ops=("MatMul",), symmetric=True)
        shared = bool(tie) and tie.gather not in keep and share_tied_embedding(model, tie, head_block)
    extra = {}  # what int4-mixed and clipping did, for the record
    if options.method is Method.INT4_MIXED:
        eight, extra = _sensitive_matmuls(model, keep, options, calibration, progress, dst.parent)
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in eight]
        model = _matmul_nbits(model, 8, EIGHT_BIT_BLOCK, Algorithm.RTN, exclude=others, ops=("MatMul",), symmetric=True)
    if options.rounding is Algorithm.GPTQ:
        from edgelm.quantize.gptq import gptq_matmuls

        prompts = [list(t) for t in calibration.texts]
        written = gptq_matmuls(model, calibration.layout, prompts, bits, options.block, keep, ACCURACY_LEVEL, progress,
                            dst.parent)
        extra["gptq_matmuls"] = len(written)
    if bits == 4 and options.rounding is not Algorithm.HQQ:  # what GPTQ left (shared or partial-block weights)
        from edgelm.quantize.clipping import clip_matmuls

        extra["clipped_matmuls"] = clip_matmuls(model, bits, options.block, keep, progress)
    if bits == 8:
        from edgelm.quantize.weight_matmuls import gated_product_matmuls

        fine = [n for n in gated_product_matmuls(model) if n not in keep]
        others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in fine]
        gated_block = min(GATED_BLOCK, options.block)
        model = _matmul_nbits(model, 8, gated_block, Algorithm.RTN, exclude=others, ops=("MatMul",), symmetric=True)
        extra["gated_block_size"] = gated_block if fine else None
    lookups = ("Gather",) if bits == 4 and not shared else ()  # onnxruntime's quantizer writes only 4-bit lookups
    algorithm = Algorithm.HQQ if options.rounding is Algorithm.HQQ else Algorithm.RTN  # onnxruntime's pass
    symmetric = bits == 8  # int4: a zero point per block (RTN; HQQ fits its own)
    model = _matmul_nbits(model, bits, options.block, algorithm, exclude=keep, ops=("MatMul", *lookups), symmetric=symmetric)
    if tie and head is not None and head in keep:
        restore_tied_head(model, tie)  # a float head keeps reading the one float embedding
    save_graph(model, dst)
    return Quantized(f"int{bits}", "fp32", {"block_size": options.block,
                                            "algorithm": options.rounding.value,
                                            "symmetric": symmetric, "accuracy_level": ACCURACY_LEVEL,
                                            "lm_head_bits": 8 if head is not None and head not in keep else None,
                                            "lm_head_block_size": head_block,
                                            "tied_embedding_shared": shared,
                                            "smoothing": {"alpha": options.alpha, "matmuls": smoothed} if smoothed else None,
                                            **extra})


def _sensitive_matmuls(model, keep: list[str], options: QuantizeOptions, calibration: "CalibrationPrompts",
                       progress, work: Path) -> tuple[list[str], dict]:
    """int4-mixed's 8-bit MatMuls: each float MatMul's KL at 4 bits measured (quantize/sensitivity.py), then the
    most sensitive (KL / size^SIZE_EXPONENT) chosen up to EIGHT_BIT_SHARE of their elements; and the record of the
    choice."""
    from edgelm.quantize.sensitivity import choose_eight_bit, matmul_weights, measure

    candidates = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in keep]
    weights = matmul_weights(model, candidates)
    dims = {i.name: i.dims for i in model.graph.initializer if i.name in set(weights.values())}
    sizes = {node: int(dims[w][0] * dims[w][1]) for node, w in weights.items()}
    prompts = [list(t[:SENSITIVITY_TOKENS]) for t in calibration.texts]
    kl = measure(model, calibration.layout, prompts, list(weights), 4, options.block, progress, work)
    eight = choose_eight_bit(kl, sizes, EIGHT_BIT_SHARE, SIZE_EXPONENT)
    return eight, {"eight_bit_matmuls": eight, "eight_bit_share": EIGHT_BIT_SHARE, "size_exponent": SIZE_EXPONENT,
                   "sensitivity_kl": {n: round(v, 6) for n, v in sorted(kl.items(), key=lambda kv: -kv[1])},
                   "sensitivity_tokens": sum(map(len, prompts))}


def _head_block(model, head: str, block_size: int) -> int:
    """The LM head's block size: BLOCK_SIZE, or the largest power of two under it that divides the hidden size.

    The tied lookup (GatherBlockQuantized) reads the head's blocks as whole rows, so its blocks must tile the
    hidden axis exactly; MatMulNBits alone would pad the last block (SmolLM2: hidden 576 takes 64, not 128).
    """

    node = next(n for n in model.graph.node if n.name == head)
    weight = next((i for i in model.graph.initializer if i.name == node.input[1]), None)
    hidden = int(weight.dims[0]) if weight is not None else block_size  # (H, V)
    block = block_size
    while block > 16 and hidden % block:
        block //= 2
    return block


def _matmul_nbits(model, bits: int, block_size: int, algorithm: "Algorithm", exclude: list[str], ops: tuple[str, ...],
                  symmetric: bool):
    """One pass of onnxruntime's MatMulNBitsQuantizer over OPS nodes not in EXCLUDE; returns the new model."""
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    axes = (("MatMul", 0), ("Gather", 1))
    config = None
    if algorithm is Algorithm.HQQ:
        try:
            import torch  # noqa: F401  (onnxruntime's HQQ runs on torch)
        except ImportError:
            raise QuantizeError("--algorithm hqq needs torch on this machine (pip install 'edgelm[export]'); "
                                "or use --algorithm rtn") from None
        config = HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits, op_types_to_quantize=ops, quant_axes=axes)
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                     accuracy_level=ACCURACY_LEVEL, nodes_to_exclude=exclude, op_types_to_quantize=ops,
                                     quant_axes=axes, algo_config=config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # HQQ's torch.from_numpy warns about read-only arrays it only reads
        quantizer.process()
    model = quantizer.model.model
    for node in model.graph.node:  # HQQ's nodes carry no accuracy_level: compute in int8 where the CPU can
        if node.op_type == "MatMulNBits" and not any(a.name == "accuracy_level" for a in node.attribute):
            node.attribute.append(onnx_attribute("accuracy_level", ACCURACY_LEVEL))
    return model


def onnx_attribute(name: str, value: int):
    from onnx import helper

    return helper.make_attribute(name, value)


def check_quantized(model: "onnx.ModelProto") -> int:
    """Count of quantized nodes in MODEL; none means the method found nothing it could quantize."""
    quantized_ops = {"MatMulNBits", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul",
                     "DequantizeLinear", "GatherBlockQuantized", "QAttention", "QGemm"}
    count = sum(n.op_type in quantized_ops for n in model.graph.node)
    if not count:
        raise QuantizeError("the method quantized no node of the graph; keep fewer nodes in float or try another --method")
    return int(count)


def pad_batches(batches: list[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    """Calibration batches right-padded to one length: onnxruntime's histogram calibrators need it."""
    width = max(b["input_ids"].shape[1] for b in batches)
    for batch in batches:
        pad = width - batch["input_ids"].shape[1]
        yield {name: np.pad(v, ((0, 0), (0, pad))) for name, v in batch.items()}
