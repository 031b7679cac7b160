"""Open a bundle folder: manifest, file checks, tokenizer and an onnxruntime session.

Everything here is read from the manifest; nothing is guessed from the graph or the folder.
Decoder and encoder front ends (`LanguageModel`, `Encoder`) are built on a `Bundle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
from tokenizers import Tokenizer

from edgelm.errors import BundleError, GenerationError
from edgelm.runtime.chat_template import check_template
from edgelm.runtime.kv_layout import onnxruntime_problem
from edgelm.runtime.manifest import DECODER_TASKS, Manifest, check_files, read_manifest
from edgelm.runtime.session import DEVICES, Device, choose_threads, open_session, provider_note, resolve_provider
from edgelm.runtime.threads import CpuBudget


@dataclass
class Bundle:
    """An opened bundle: what every front end needs, read once."""

    folder: Path
    manifest: Manifest
    session: ort.InferenceSession
    tokenizer: Tokenizer
    provider: str  # "cpu" or "cuda": the provider the session really runs on
    file_notes: list[str] = field(default_factory=list)  # e.g. hashes skipped in fast mode
    provider_note: str = ""  # why that provider: "cpu (auto: this onnxruntime has no CUDA provider)"
    threads: CpuBudget | None = None  # intra-op threads and what they were read from
    chat_template: str | None = None  # the template's source, checked to compile

    @property
    def device(self) -> Device:
        return DEVICES[self.provider]

    def require_task(self, call: str, tasks: tuple[str, ...]) -> None:
        """A clear error when CALL (embed, generate...) does not fit this bundle's task."""
        if self.manifest.task not in tasks:
            raise GenerationError(
                f"{call} needs a {' or '.join(tasks)} bundle, but {self.folder} is a {self.manifest.task} bundle; "
                "use a bundle exported for that task (edgelm export --task)"
            )


# Every public call of the two front ends, and the tasks that serve it.
CALL_TASKS = {
    **dict.fromkeys(("generate", "stream", "complete", "generator", "encode", "render_chat"), DECODER_TASKS),
    "embed": ("feature-extraction",),
    "logits": ("text-classification", "token-classification", "fill-mask"),
    "classify": ("text-classification",),
    "classify_tokens": ("token-classification",),
    "fill_mask": ("fill-mask",),
    **dict.fromkeys(("rerank", "score_pairs", "encode_pairs"), ("text-classification",)),  # with one label
}


class FrontEnd:
    """Base of LanguageModel and Encoder: a call of the other kind (`embed` on a decoder) gets a
    clear GenerationError naming the bundle's task, not an AttributeError."""

    bundle: Bundle

    def __getattr__(self, name: str):
        if name in CALL_TASKS:
            self.bundle.require_task(name, CALL_TASKS[name])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def manifest(self) -> Manifest:
        return self.bundle.manifest

    @property
    def task(self) -> str:
        return self.bundle.manifest.task

    @property
    def provider(self) -> str:
        """The execution provider the session really runs on: cpu or cuda."""
        return self.bundle.provider


def open_bundle(folder: str | Path, provider: str = "auto", threads: int | None = None, fast: bool = False) -> Bundle:
    """Read FOLDER's manifest, check its files (sizes only for large ones when FAST), open the session."""
    folder = Path(folder).expanduser()
    manifest = read_manifest(folder)
    notes = check_files(folder, manifest, fast=fast)
    asked, provider = provider, resolve_provider(provider)
    budget = choose_threads(threads)
    problem = onnxruntime_problem(manifest.kv_cache, ort.__version__)
    if problem:
        raise BundleError(problem)
    session = open_session(folder / manifest.graph_file, provider, budget.count)
    try:
        tokenizer = Tokenizer.from_file(str(folder / manifest.tokenizer_file))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise BundleError(f"{manifest.tokenizer_file} in {folder} is not a tokenizers file ({e}); re-export the bundle") from e
    template = _read_template(folder / manifest.chat_template_file) if manifest.chat_template_file else None
    return Bundle(folder, manifest, session, tokenizer, provider, notes, provider_note(asked, provider), budget, template)


def _read_template(path: Path) -> str:
    """The chat template's text, checked to compile."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{path.name} in {path.parent} is not readable UTF-8 text ({e}); re-export the bundle") from None
    check_template(source, f"{path.name} in {path.parent}")
    return source
