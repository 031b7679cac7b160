"""export(): checkpoint -> verified ONNX bundle.

    validate source and OUT -> load checkpoint -> graph (fused decoder builder | torch.onnx for encoders) -> describe I/O
    -> verify against transformers -> write manifest with checksums -> rename into OUT
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import edgelm
from edgelm.bundle_graph import graph_io, graph_opset
from edgelm.errors import ExportError
from edgelm.export import describe
from edgelm.export.graph import GRAPH_FILE, check_decoder_io, export_graph, stored_weight_elements
from edgelm.export.loading import hf_model_of, load_model, load_tokenizer
from edgelm.export.source import Source, resolve_source
from edgelm.export.tokenizer_files import TOKENIZER_FILE, write_tokenizer
from edgelm.export.verify import verify
from edgelm.progress import Steps
from edgelm.runtime.conformance import record_conformance
from edgelm.runtime.kv_layout import KVLayout
from edgelm.runtime.manifest import Manifest, sha256_file
from edgelm.runtime.session import open_session
from edgelm.staging import check_out_folder, staged_folder


def export(src: str | Path, out: str | Path, task: str | None = None, *, force: bool = False,
           opset: int | None = None, progress: bool = True) -> Manifest:
    """Export checkpoint SRC (folder or .gguf) to bundle folder OUT and verify it.

    TASK defaults to what the checkpoint's head serves. Raises ExportError (ParityError when
    verification fails); OUT is then left as it was.
    """
    out = Path(out).expanduser().absolute()
    source = _validate(src, out, task, force)
    with Steps(f"export {source.path.name}", total=5, enabled=progress) as steps, staged_folder(out, force) as bundle:
        with steps.step("load checkpoint"):
            model, tokenizer = load_model(source), load_tokenizer(source)
        with steps.step("export graph"):
            external, layout = export_graph(model, source, bundle, opset)
            template = write_tokenizer(tokenizer, bundle)
        with steps.step("verify against transformers"):
            session = open_session(bundle / GRAPH_FILE)
            manifest = _describe(source, model, tokenizer, session, bundle, external, template, layout)
            results = verify(model, tokenizer, session, manifest, bundle, stored_weight_elements(bundle / GRAPH_FILE))
        with steps.step("write bundle"):
            manifest = replace(manifest, verification=results).with_files(bundle)
            manifest.write(bundle)
        with steps.step("record conformance vectors"):
            manifest = record_conformance(bundle, manifest)
    return manifest


def _validate(src: str | Path, out: Path, task: str | None, force: bool) -> Source:
    """Every cheap check at once: source, task, OUT."""
    problems = check_out_folder(out, force, ExportError)
    try:
        source = resolve_source(src, task)
    except ExportError as e:
        raise ExportError(*e.problems, *problems) from None
    if problems:
        raise ExportError(*problems)
    return source


def _describe(source: Source, model: Any, tokenizer: Any, session: Any, bundle: Path,
              external: tuple[str, ...], template: str | None, layout: KVLayout | None) -> Manifest:
    hf = hf_model_of(model)
    prompts, default_prompt = describe.prompts(model)
    inputs, outputs = graph_io(session)
    if layout is not None:
        check_decoder_io(inputs, outputs, layout)
    return Manifest(
        task=source.task,
        source=_source_record(source, hf),
        graph_file=GRAPH_FILE,
        external_data=external,
        opset=graph_opset(bundle / GRAPH_FILE),
        inputs=inputs,
        outputs=outputs,
        kv_cache=layout,
        tokenizer_file=TOKENIZER_FILE,
        chat_template_file=template,
        special_token_strings=describe.special_token_strings(tokenizer),
        special_tokens=describe.special_tokens(tokenizer, hf),
        max_context=describe.max_context(source, tokenizer, model),
        generation=describe.generation_defaults(hf) if layout else {},
        labels=describe.labels(source),
        pooling=describe.pooling(model),
        prompts=prompts,
        default_prompt=default_prompt,
        precision={"weights": "fp32", "activations": "fp32", "method": None},
        edgelm_version=edgelm.__version__,
    )


def _source_record(source: Source, hf: Any) -> dict[str, Any]:
    architectures = getattr(source.config, "architectures", None) or [type(hf).__name__]
    return {
        "path": str(source.path.absolute()),
        "format": "gguf" if source.gguf_file else source.weights[0].suffix.lstrip("."),
        "architecture": architectures[0],
        "model_type": source.config.model_type,
        "family": source.family.name,
        "weights_sha256": {p.name: sha256_file(p) for p in source.weights},
    }
