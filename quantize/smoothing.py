"""SmoothQuant for weight-only quantization: per-channel scales that move activation outliers into weights.

MatMulNBits with accuracy_level 4 quantizes each MatMul's input to int8 at run time, in blocks of
`block_size` along K; a few input channels carry values far above the rest (RMSNorm outputs in
Llama-family models), and they set the scale of their whole block. SmoothQuant (Xiao et al.,
2023) divides each input channel j by s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) and multiplies
row j of every weight that reads X by s_j: the product is unchanged in float, the activations are
flatter, and the weights, quantized per block of their own, absorb the difference. The division
is folded into the node that produces X, so the graph gains no node:

    norm-fed   [Skip][Simplified]LayerNormalization(gamma [, beta]) ─> X ─> MatMul(W) [, MatMul(W2) ...]
               gamma /= s, beta /= s                                       W[j, :] *= s[j]
    gated      MatMul(W_gu) [+ b] ─> Split ─┬─> act(gate) ──┐
                                            └─> up ─────────┴─> Mul ─> X ─> MatMul(W_down)
               W_gu[:, up columns] /= s, b[up] /= s                              W_down[j, :] *= s[j]

On SmolLM2 it brings int8 and int4 markedly closer to the float model (docs/benchmarks.md). The LM
head is left alone: its input passes a Slice, and a tied head's rows are the embedding's columns.

Why by hand: onnxruntime.quantization's SmoothQuant runs Intel Neural Compressor, whose ONNX
smoother folds scales only into LayerNormalization, Mul and MatMul parents (not
SkipSimplifiedLayerNormalization or a Split of a packed gate|up, so it would leave a Mul per
MatMul in the graph) and pins numpy < 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgelm.quantize.prompt_feeds import prompt_feeds
from edgelm.runtime.kv_layout import KVLayout

# norm op -> input slots of (gamma, beta); beta None for the RMS kinds
NORMS = {"SimplifiedLayerNormalization": (1, None), "SkipSimplifiedLayerNormalization": (2, None),
         "LayerNormalization": (1, 2), "SkipLayerNormalization": (2, 3)}
MAX_SCALE = 100.0  # s is clipped to [1/MAX_SCALE, MAX_SCALE]: a dead channel must not blow up its weight row


@dataclass
class Group:
    """One smoothable activation: the MatMuls that read it and where its division by s is folded."""

    activation: str  # the tensor X
    matmuls: list[onnx.NodeProto]  # every consumer: MatMul(X, W) with W an initializer
    absorb: list[tuple[str, slice]]  # initializers (and their last-axis columns) divided by s


def find_groups(model: onnx.ModelProto) -> list[Group]:
    """Every MatMul input that a norm or a gated product makes, with all its readers constant MatMuls."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output if o}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    uses = {name: len(nodes) for name, nodes in readers.items()}
    columns = _split_columns(model)
    groups = []
    for x, consumers in readers.items():
        if x not in producer or not all(c.op_type == "MatMul" and c.input[0] == x and c.input[1] in inits
                                        and uses[c.input[1]] == 1 for c in consumers):
            continue
        absorb = _absorber(producer[x], x, producer, inits, uses, columns)
        if absorb:
            groups.append(Group(x, consumers, absorb))
    return groups


def _absorber(node: onnx.NodeProto, x: str, producer: dict, inits: set, uses: dict,
              columns: dict[str, slice]) -> list[tuple[str, slice]] | None:
    """Where X / s can be folded: a norm's gamma (and beta), or the `up` columns of a gated product."""
    everything = slice(None)
    if node.op_type in NORMS and node.output[0] == x:
        slots = [s for s in NORMS[node.op_type] if s is not None and s < len(node.input) and node.input[s]]
        names = [node.input[s] for s in slots]
        return [(n, everything) for n in names] if all(n in inits and uses[n] == 1 for n in names) else None
    if node.op_type != "Mul":
        return None
    for side in node.input:  # the `up` half: a Split output of a constant MatMul [+ bias]
        split = producer.get(side)
        if split is None or split.op_type != "Split" or side not in columns:
            continue
        source, bias = producer.get(split.input[0]), None
        if source is not None and source.op_type == "Add":
            bias = next((i for i in source.input if i in inits), None)
            source = producer.get(next(i for i in source.input if i != bias))
        if source is None or source.op_type != "MatMul" or source.input[1] not in inits or uses[source.input[1]] != 1:
            continue
        other = node.input[1] if side == node.input[0] else node.input[0]
        if _reads(other, side, producer):  # act(up) * up is not linear in up
            continue
        return [(name, columns[side]) for name in filter(None, (source.input[1], bias))]
    return None


def _split_columns(model: onnx.ModelProto) -> dict[str, slice]:
    """Each output of a last-axis Split with constant sizes -> the columns of the Split's input it holds."""
    inits = {i.name: i for i in model.graph.initializer}
    columns = {}
    for node in model.graph.node:
        axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
        if node.op_type != "Split" or axis != -1 or len(node.input) < 2 or node.input[1] not in inits:
            continue
        start = 0
        for output, size in zip(node.output, numpy_helper.to_array(inits[node.input[1]]).tolist()):
            columns[output] = slice(start, start + int(size))
            start += int(size)
    return columns


def _reads(tensor: str, target: str, producer: dict, depth: int = 4) -> bool:
    """Whether TENSOR is computed from TARGET within DEPTH nodes."""
    if tensor == target:
        return True
    node = producer.get(tensor)
    return depth > 0 and node is not None and any(_reads(i, target, producer, depth - 1) for i in node.input if i)


def input_maxima(graph_file: Path, layout: KVLayout, prompts: list[list[int]]) -> dict[str, np.ndarray]:
    """Per smoothable activation of GRAPH_FILE: (K,) largest |value| per channel over PROMPTS, each run as one prompt.

    The session opens the graph where it lies, its weights mapped from their file, before quantize
    loads them into memory: no weight is serialized or copied (a graph of any size), and calibration's
    memory does not come on top of the loaded model's. The graph with the activations added as
    outputs is written beside the weights (its external data paths are relative) and removed once
    the session is open.
    """
    import onnxruntime as ort

    graph = onnx.load(str(graph_file), load_external_data=False)
    activations = [g.activation for g in find_groups(graph)]
    if not activations:
        return {}
    graph.graph.output.extend(helper.make_tensor_value_info(a, onnx.TensorProto.FLOAT, None) for a in activations)
    probe = graph_file.with_name(f"{graph_file.stem}.maxima.onnx")
    try:  # a probe cut short (a full disk) is removed too
        onnx.save_model(graph, str(probe))
        session = ort.InferenceSession(str(probe), providers=["CPUExecutionProvider"])
    finally:
        probe.unlink(missing_ok=True)
    names = {i.name for i in session.get_inputs()}
    maxima: dict[str, np.ndarray] = {}
    for ids in prompts:
        values = session.run(activations, prompt_feeds(layout, list(ids), names))
        for a, v in zip(activations, values):
            peak = np.abs(v).reshape(-1, v.shape[-1]).max(axis=0)
            maxima[a] = np.maximum(maxima[a], peak) if a in maxima else peak
    return maxima


def smooth(model: onnx.ModelProto, maxima: dict[str, np.ndarray], alpha: float) -> int:
    """Fold SmoothQuant scales into MODEL in place (float outputs unchanged); returns how many MatMuls were smoothed.

    MAXIMA: `input_maxima` of the graph file MODEL was loaded from.
    """
    groups = find_groups(model)
    if not groups:
        return 0
    missing = [g.activation for g in groups if g.activation not in maxima]
    if missing:
        raise ValueError(f"no activation range for {missing[0]} (and {len(missing) - 1} more): measure the same graph")
    touched = {m.input[1] for g in groups for m in g.matmuls} | {name for g in groups for name, _ in g.absorb}
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in touched}
    changed = set()
    for group in groups:
        weights = [arrays[m.input[1]] for m in group.matmuls]  # (K, N) each
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)  # (K,)
        s = np.power(np.maximum(maxima[group.activation], 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
        s = np.clip(s, 1 / MAX_SCALE, MAX_SCALE).astype(np.float32)  # (K,)
        for m in group.matmuls:
            arrays[m.input[1]] = arrays[m.input[1]] * s[:, None]
            changed.add(m.input[1])
        for name, columns in group.absorb:
            absorbed = arrays[name].copy()
            absorbed[..., columns] = absorbed[..., columns] / s
            arrays[name] = absorbed
            changed.add(name)
    for init in model.graph.initializer:
        if init.name in changed:
            init.CopyFrom(numpy_helper.from_array(arrays[init.name].astype(np.float32), init.name))
    return sum(len(g.matmuls) for g in groups)

