"""Export an encoder graph with torch.onnx's exporter (torch.export + onnxscript).

Why traced rather than written from the weights (as decoders are): an encoder runs each input once,
with no cache to keep in place, so the graph gains nothing from a hand-written layout, while the
families differ in exactly what a tracer reproduces for free: MPNet's relative position bias,
DeBERTa's disentangled attention, ModernBERT's alternating local/global rotary attention, Gemma 3's
bidirectional sliding windows, and every sentence-transformers module after the transformer
(pooling, Dense, Normalize). torch.onnx's dynamo exporter traces transformers 5's attention masks
with symbolic batch and sequence sizes; its older TorchScript exporter bakes the example's mask
shape into the graph there (other lengths come out wrong). docs/design.md has the measurements.

    input_ids, attention_mask [, token_type_ids] [, prompt_length]
        ─> transformers model (task head) ───────────────────────────────> logits
        ─> sentence-transformers modules in order (Transformer, Pooling, ...) ─> token_embeddings, sentence_embedding
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from edgelm.errors import ExportError
from edgelm.export.loading import hf_model_of
from edgelm.export.sentence_modules import PROMPT_LENGTH, exclude_prompt, split_pipeline

# Opset 23 has ONNX's own Attention and Gelu, which torch.onnx writes for transformers' SDPA attention in one node
# each instead of ~15 and 5; the traced graph then runs as fast as optimum's (docs/benchmarks.md, "Encoders:
# sentence embeddings"). onnxruntime 1.24, the oldest the bundles name, runs it.
DEFAULT_OPSET = 23
_EXAMPLE_LENGTHS = (7, 5)  # two rows of different length, so the padding path is traced


def encoder_input_names(family: Any, prompt_input: bool) -> list[str]:
    """The graph's inputs, in order: the family declaration says whether token types are taken."""
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if family.token_type_ids else [])
    return names + ([PROMPT_LENGTH] if prompt_input else [])


def build_encoder_graph(model: Any, family: Any, task: str, opset: int | None = None) -> Any:
    """The ONNX ModelProto (weights inside) of MODEL: a task head, or a whole sentence-transformers pipeline."""
    pipeline = split_pipeline(model) if task == "feature-extraction" else None
    prompt_input = bool(pipeline and not pipeline.include_prompt)
    names = encoder_input_names(family, prompt_input)
    wrapper = (_SentenceEmbedding(pipeline, names) if pipeline else _TaskHead(model, names)).eval()
    outputs = ["token_embeddings", "sentence_embedding"] if pipeline else ["logits"]
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = tuple(None if n == PROMPT_LENGTH else {0: batch, 1: sequence} for n in names)
    with _quiet(), torch.no_grad():
        try:
            program = torch.onnx.export(wrapper, _example(names, model), None, input_names=names, output_names=outputs,
                                        dynamo=True, dynamic_shapes=(shapes,), opset_version=opset or DEFAULT_OPSET,
                                        external_data=False, verbose=False, optimize=False)
            _optimize(program)
        except Exception as e:  # torch.export raises many unrelated types; report the first line
            raise ExportError(f"torch.onnx could not export this {family.name} model: {_first_line(e)}") from e
    return _self_contained(program)


class _TaskHead(torch.nn.Module):
    """A transformers head called with the graph's inputs as keywords; returns its logits."""

    def __init__(self, model: Any, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits


class _SentenceEmbedding(torch.nn.Module):
    """A sentence-transformers pipeline: the transformer module, then every later module in order."""

    def __init__(self, pipeline: Any, names: list[str]):
        super().__init__()
        self.stages, self.names = torch.nn.ModuleList(pipeline.modules), names

    def forward(self, *inputs):
        features = dict(zip(self.names, inputs))
        prompt_length = features.pop(PROMPT_LENGTH, None)
        features = self.stages[0](features)
        if prompt_length is not None:  # pooling leaves the prompt's tokens out (include_prompt=False)
            features["attention_mask"] = exclude_prompt(features["attention_mask"], prompt_length)
        for module in self.stages[1:]:
            features = module(features)
        return features["token_embeddings"], features["sentence_embedding"]


def _example(names: list[str], model: Any) -> tuple[Any, ...]:
    """A right-padded batch of two rows of different lengths (token ids 1.., not special)."""
    width = max(_EXAMPLE_LENGTHS)
    mask = torch.tensor([[1] * n + [0] * (width - n) for n in _EXAMPLE_LENGTHS], dtype=torch.int64)
    vocab = int(getattr(hf_model_of(model).config, "vocab_size", 100))
    ids = (torch.arange(width, dtype=torch.int64)[None].repeat(len(_EXAMPLE_LENGTHS), 1) % (vocab - 1)) + 1
    example = {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
               "prompt_length": torch.tensor([2], dtype=torch.int64)}
    return tuple(example[n] for n in names)


def _optimize(program: Any) -> None:
    """onnxscript's constant folding and clean-up rewrites, as torch.onnx's optimize=True runs them, without its
    opset-23 fusions: its RotaryEmbedding fusion reads a (1, seq, dim) cos table as the batch's own, and ModernBERT's
    and Gemma's graphs then fail on any batch of another size (onnxruntime 1.32)."""
    import onnxscript.optimizer

    onnxscript.optimizer.optimize_ir(program.model)


def _self_contained(program: Any) -> Any:
    """The exported graph as a ModelProto holding its weights (save_graph then writes them beside it)."""
    import onnx

    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "encoder.onnx"
        program.save(str(path), external_data=True)
        model = onnx.load(str(path), load_external_data=True)
    _name_nodes_by_module(model)
    return model


def _name_nodes_by_module(model: Any) -> None:
    """Name each node after the torch module it came from, as optimum's and the decoder builder's graphs
    are named (`/encoder/layer.0/intermediate/dense/MatMul`), so --keep-float patterns and profiles read
    alike for every graph; then drop the exporter's per-node metadata (stack traces with the build
    machine's paths have no place in a bundle)."""
    seen: dict[str, int] = {}
    for node in model.graph.node:
        props = {p.key: p.value for p in node.metadata_props}
        # the module path of each enclosing module, then the aten op: ['', 'stages.0', ..., 'linear']
        scopes = props.get("pkg.torch.onnx.name_scopes", "[]").strip("[]").replace("'", "").split(", ")
        module = scopes[-2] if len(scopes) >= 2 and not scopes[-2].startswith("_") else ""  # "_...hook": no module
        name = "/" + "/".join([*_scope_parts(module), node.op_type]) if module else "/" + node.op_type
        seen[name] = seen.get(name, 0) + 1
        node.name = name if seen[name] == 1 else f"{name}_{seen[name] - 1}"
        del node.metadata_props[:]
        node.doc_string = ""


def _scope_parts(scope: str) -> list[str]:
    """'stages.0.model.encoder.layer.3.attention' -> ['encoder', 'layer.3', 'attention'] (wrapper prefix dropped)."""
    for prefix in ("stages.0.model.", "stages.0.auto_model.", "model."):
        if scope.startswith(prefix):
            scope = scope[len(prefix):]
            break
    parts: list[str] = []
    for part in scope.split("."):
        if part.isdigit() and parts:
            parts[-1] += f".{part}"
        else:
            parts.append(part)
    return parts


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextmanager
def _quiet():
    """Silence torch.export's and onnxscript's progress prints and warnings during export."""
    import contextlib
    import io

    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir", "transformers")
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
