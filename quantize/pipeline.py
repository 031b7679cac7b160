"""quantize(): float bundle -> smaller bundle that passed the accuracy gate.

    read manifest + check files -> check texts and OUT -> pre-process graph -> choose float nodes
    -> quantize (onnxruntime.quantization) -> write bundle files -> gate + speed against the float
    bundle (through edgelm.runtime) -> manifest with precision and accuracy -> rename into OUT

A failed gate raises QuantizeError and leaves nothing at OUT, unless options.gate is False,
which still records the numbers.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import edgelm
from edgelm.bundle_graph import graph_io, graph_opset, save_graph
from edgelm.errors import QuantizeError
from edgelm.progress import Steps
from edgelm.quantize import gate, speed
from edgelm.quantize.methods import (WEIGHT_ONLY, KVCache, Method, QuantizeOptions, check_quantized, int8_dynamic, int8_per_token,
                                     int8_static, pad_batches, preprocess, quiet_onnxruntime_logs, weight_only)
from edgelm.quantize.policy import nodes_to_keep
from edgelm.quantize.portable import drop_filled_in_defaults
from edgelm.quantize.prompt_feeds import CalibrationPrompts
from edgelm.quantize.text_inputs import calibration_text_list, sentences, suite_ids
from edgelm.runtime.conformance import record_conformance
from edgelm.runtime.manifest import Manifest, check_files, read_manifest
from edgelm.staging import check_out_folder, staged_folder

MAX_CALIBRATION_TOKENS = 2048  # KV-cache calibration text, cut to this


def quantize(src: str | Path, out: str | Path, options: QuantizeOptions, *, force: bool = False,
             progress: bool = True) -> Manifest:
    """Quantize the float bundle SRC into OUT with OPTIONS; returns OUT's manifest."""
    import onnx

    src, out = Path(src).expanduser(), Path(out).expanduser().absolute()
    base = _validate(src, out, options, force)
    float_model = _front_end(src)
    eval_texts = _eval_inputs(float_model, options)
    with Steps(f"quantize {src.name} ({options.method.value})", total=5, enabled=progress) as steps, \
            staged_folder(out, force) as stage, tempfile.TemporaryDirectory(prefix=".work.", dir=stage, ignore_cleanup_errors=True) as work:
        with steps.step("pre-process graph"), quiet_onnxruntime_logs():
            pre = Path(work) / "pre.onnx"
            preprocess(src / base.graph_file, pre)
            keep = nodes_to_keep(_node_names(pre), options.keep_float)
        with steps.step("quantize weights"), quiet_onnxruntime_logs():
            method_out = Path(work) / "quantized.onnx"
            done = _run_method(pre, method_out, options, keep, float_model, steps.note)
            graph = onnx.load(str(method_out))  # the passes below rewrite it in memory
            drop_filled_in_defaults(src / base.graph_file, graph)  # before the KV rewrite sets its own
            quantized_nodes = check_quantized(graph)
            if options.kv_cache is KVCache.INT8:
                done.details["kv_cache"] = _int8_kv_cache(graph, float_model, options)
            external = save_graph(graph, stage / base.graph_file)
            del graph
        shutil.rmtree(work, ignore_errors=True)
        _copy_tokenizer(src, stage, base)
        precision = {"weights": done.weights, "activations": done.activations, "method": options.method.value,
                     "options": {**done.details, "kept_float": keep, "quantized_nodes": quantized_nodes},
                     "base": {"path": str(src.absolute()), "graph_sha256": base.files[base.graph_file]["sha256"],
                              # the graph file no longer holds the weights: name their file's hash too
                              "external_data_sha256": {n: base.files[n]["sha256"] for n in base.external_data}}}
        manifest = _describe(base, stage, precision, external, options.kv_cache)
        manifest.with_files(stage).write(stage)  # provisional: lets the runtime load the stage for the gate
        quant_model = _front_end(stage)
        with steps.step("accuracy gate"):
            limits = gate.thresholds_for(options)
            accuracy = (gate.evaluate_decoder(float_model, quant_model, eval_texts, limits, steps.note) if base.is_decoder
                        else gate.evaluate_encoder(float_model, quant_model, eval_texts, limits))
        with steps.step("speed"):
            texts = eval_texts if not base.is_decoder else []
            accuracy["speed"] = {"float": speed.measure(float_model, texts), "quantized": speed.measure(quant_model, texts)}
        accuracy["gate"] = "enforced" if options.gate else "recorded only (--no-gate)"
        if options.gate and not accuracy["passed"]:
            raise QuantizeError(*accuracy["failures"], "the quantized bundle failed the accuracy gate; nothing was written "
                                "(keep more nodes in float with --keep-float, try another --method, or --no-gate to keep it anyway)")
        with steps.step("write bundle"):
            manifest = replace(manifest, accuracy=accuracy).with_files(stage)
            manifest.write(stage)
            manifest = record_conformance(stage, manifest, quant_model)
    return manifest


def _validate(src: Path, out: Path, options: QuantizeOptions, force: bool) -> Manifest:
    """Every cheap check at once: the float bundle, the method for its task, OUT."""
    base = read_manifest(src)
    check_files(src, base)
    problems = check_out_folder(out, force, QuantizeError)
    if base.precision.get("method"):
        problems.append(f"{src} is already quantized ({base.precision['method']}); quantize the float bundle")
    if options.kv_cache is KVCache.INT8 and not base.is_decoder:
        problems.append(f"--kv-cache int8 is for decoders; {base.task} bundles have no KV cache")
    if options.method in (Method.INT8_STATIC, Method.INT8_PER_TOKEN) and base.is_decoder:
        problems.append(f"--method {options.method.value} is for encoders; use int8 or int4 for {base.task}")
    if options.method in WEIGHT_ONLY and not base.is_decoder:
        problems.append(f"--method {options.method.value} (weight-only) is for decoders; use int8-per-token, int8-dynamic "
                        f"or int8-static for {base.task}")
    if out.resolve() == src.resolve():
        problems.append("OUT is the bundle being quantized; choose another folder")
    if problems:
        raise QuantizeError(*problems)
    return base


def _front_end(folder: Path) -> Any:
    """The runtime's view of FOLDER on the CPU, where the quantized kernels are defined.

    fast=True: both bundles' files were just hashed (_validate, with_files); sizes are still checked.
    """
    from edgelm.runtime import load

    return load(folder, provider="cpu", fast=True)


def _eval_inputs(float_model: Any, options: QuantizeOptions) -> Any:
    """Evaluation ids (decoders) or texts (encoders), checked before any work starts."""
    if float_model.manifest.is_decoder:
        if options.reads_calibration or options.kv_cache is KVCache.INT8:
            sentences(options.calibration_file, "calibration")  # fail now, not after pre-processing
        return suite_ids(options.eval_file, options.eval_domains, lambda text: float_model.tokenizer.encode(text).ids, "evaluation")
    if options.method is Method.INT8_STATIC:
        sentences(options.calibration_file, "calibration")  # fail now, not after pre-processing
    return sentences(options.eval_file, "evaluation")


def _run_method(pre: Path, dst: Path, options: QuantizeOptions, keep: list[str], float_model: Any, progress=None):
    if options.method in WEIGHT_ONLY:
        return weight_only(pre, dst, options, keep, _calibration_prompts(float_model, options), progress)
    if options.method is Method.INT8_DYNAMIC:
        return int8_dynamic(pre, dst, options, keep)
    if options.method is Method.INT8_PER_TOKEN:
        return int8_per_token(pre, dst, options, keep)
    batches = float_model.feeds(sentences(options.calibration_file, "calibration"), batch_size=8)
    return int8_static(pre, dst, options, keep, pad_batches(batches))


def _calibration_prompts(float_model: Any, options: QuantizeOptions) -> CalibrationPrompts | None:
    """The calibration texts (the user's sentences joined, or the built-in mix of domains) as token ids, one prompt
    each, for SmoothQuant's activation ranges, int4-mixed's sensitivity and GPTQ's input statistics."""
    if not options.reads_calibration:
        return None
    limit = min(MAX_CALIBRATION_TOKENS, float_model.manifest.max_context - 1)
    prompts = tuple(tuple(float_model.tokenizer.encode(text).ids[:limit]) for text in calibration_text_list(options.calibration_file))
    return CalibrationPrompts(float_model.manifest.kv_cache, prompts)


def _node_names(path: Path) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path), load_external_data=False).graph.node]


def _copy_tokenizer(src: Path, stage: Path, base: Manifest) -> None:
    for name in filter(None, (base.tokenizer_file, base.chat_template_file)):
        shutil.copy2(src / name, stage / name)


def _int8_kv_cache(graph: Any, float_model: Any, options: QuantizeOptions) -> str:
    """Rewrite GRAPH's attention (in place) to keep its cache in int8, with scales calibrated on the float bundle."""
    from edgelm.quantize.kv_cache import calibrate_scales, int8_kv_cache

    text = "\n\n".join(calibration_text_list(options.calibration_file))
    scales = calibrate_scales(float_model, float_model.tokenizer.encode(text).ids[:MAX_CALIBRATION_TOKENS])
    int8_kv_cache(graph, float_model.manifest.kv_cache, scales)
    return "int8 (per channel, calibrated)"


def _describe(base: Manifest, stage: Path, precision: dict, external: tuple[str, ...],
              kv_cache: KVCache = KVCache.FP32) -> Manifest:
    """The float manifest with the new graph's I/O, opset and cache type, and the quantization record."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(stage / base.graph_file), providers=["CPUExecutionProvider"])
    inputs, outputs = graph_io(session)
    layout = base.kv_cache if kv_cache is KVCache.FP32 or base.kv_cache is None else replace(base.kv_cache, dtype="int8")
    return replace(base, inputs=inputs, outputs=outputs, opset=graph_opset(stage / base.graph_file), external_data=external, kv_cache=layout,
                   precision=precision, accuracy={}, files={}, conformance_file=None, edgelm_version=edgelm.__version__)
