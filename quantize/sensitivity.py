"""How much each weight matrix of a decoder suffers at 4 bits, measured as KL divergence of the model's output.

int4-mixed (quantize/methods.py) spends its 8-bit budget on the MatMuls whose 4-bit rounding moves the
next-token distribution most, as llama.cpp's Q4_K_M spends its 6-bit tensors, but by measurement on
calibration text rather than by name. One onnxruntime session serves every measurement: each candidate
weight is declared a graph input as well as an initializer (ONNX's overridable initializer), so a run
feeds one matrix rounded to 4 bits while every other keeps its float value, without building a session
per matrix. The rounding is onnxruntime's MatMulNBits RTN with a zero point per block, in numpy.

Why not a proxy (the matrix's own output error on calibration activations): errors in different layers
reach the logits amplified differently; the KL of the logits is the quantity the gate judges.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.quantize.clipping import as_blocks, from_blocks, ranges, rounded
from edgelm.quantize.gate import log_softmax
from edgelm.quantize.probe import probe_session
from edgelm.quantize.prompt_feeds import prompt_feeds
from edgelm.quantize.weight_matmuls import weight_matmuls
from edgelm.runtime.kv_layout import LOGITS, LOGITS_TO_KEEP, KVLayout


def round_to_bits(weight: np.ndarray, bits: int, block: int) -> np.ndarray:
    """WEIGHT (K, N) as MatMulNBits stores it at BITS with a zero point per BLOCK rows of K, dequantized."""
    w = as_blocks(weight, block)
    return from_blocks(rounded(w, *ranges(w), bits), weight.shape[0]).astype(np.float32)


def kl_divergence(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean over positions of KL(softmax(REFERENCE) || softmax(OTHER)); both (positions, vocab) logits."""
    a, b = log_softmax(reference), log_softmax(other)
    return float((np.exp(a) * (a - b)).sum(-1).mean())


def matmul_weights(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """Node name -> its weight initializer, for the MatMuls NAMES whose B is a 2-D initializer."""
    weights = {n.name: w.name for n, w in weight_matmuls(model)}
    return {name: weights[name] for name in names if name in weights}


def measure(model: onnx.ModelProto, layout: KVLayout, prompts: list[list[int]], nodes: list[str], bits: int, block: int,
            progress: Callable[[str], None] | None = None, work: Path | None = None) -> dict[str, float]:
    """KL of the output logits over PROMPTS when each MatMul of NODES alone is rounded to BITS (blocks of BLOCK).

    MODEL holds its weights (as quantize loads it, after smoothing); it is not changed. The probe graph and its
    weights are written under WORK (quantize's work folder; None: the system's temporary folder) until the session
    has them."""
    weights = matmul_weights(model, nodes)
    inits = {i.name: i for i in model.graph.initializer}

    def overridable(probe: onnx.ModelProto) -> None:  # each candidate weight also an input: a run feeds it rounded
        probe.graph.input.extend(helper.make_tensor_value_info(w, onnx.TensorProto.FLOAT, list(inits[w].dims))
                                 for w in dict.fromkeys(weights.values()))

    session = probe_session(model, overridable, work)
    names = {i.name for i in session.get_inputs()}
    feeds = []
    for ids in prompts:
        feed = prompt_feeds(layout, list(ids), names)
        feed[LOGITS_TO_KEEP] = np.zeros(1, np.int64)  # every position
        feeds.append(feed)
    reference = [session.run([LOGITS], f)[0][0] for f in feeds]
    result = {}
    for done, (node, weight) in enumerate(weights.items(), 1):
        rounded = {weight: round_to_bits(numpy_helper.to_array(inits[weight]), bits, block)}
        result[node] = float(np.mean([kl_divergence(r, session.run([LOGITS], {**f, **rounded})[0][0])
                                      for r, f in zip(reference, feeds)]))
        if progress is not None:
            progress(f"{done}/{len(weights)} weights")
    return result


def choose_eight_bit(sensitivity: dict[str, float], sizes: dict[str, int], share: float, exponent: float = 1.0) -> list[str]:
    """The MatMuls to keep at 8 bits, until SHARE of all weights' elements: highest KL / size^EXPONENT first (1: the
    most sensitive per element; 0: the most sensitive outright)."""
    budget = share * sum(sizes.values())
    chosen, spent = [], 0
    for node in sorted(sensitivity, key=lambda n: sensitivity[n] / sizes[n] ** exponent, reverse=True):
        if spent + sizes[node] > budget:
            continue
        chosen.append(node)
        spent += sizes[node]
    return chosen
