"""manifest.json: the only contract between export, quantize and the runtime.

A bundle is a folder holding an ONNX graph, a tokenizer and this manifest. Everything a
runtime in any language needs is here: graph I/O with dtypes and dynamic axes, the KV cache
layout, special tokens, limits, generation defaults, labels, pooling, prompts, precision, the
verification results, and the sha256 and size of every file. docs/bundle-format.md
documents each field.

Export writes format_version 2 (decoders: the fused graph whose KV cache is one buffer updated
in place, see kv_layout.py). A reader refuses a newer version, and a version-1 decoder bundle
(optimum's unfused graph, whose cache was concatenated every step) with a "re-export" line;
version-1 encoder bundles are unchanged and still run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from edgelm.errors import BundleError
from edgelm.runtime.kv_layout import KVLayout
from edgelm.runtime.manifest_schema import name_problems, schema_problems

FORMAT_VERSION = 2
FIRST_FUSED_DECODER_VERSION = 2
MANIFEST_NAME = "manifest.json"
# sha256sum's line for manifest.json (`sha256sum -c manifest.sha256` checks it on any box): an
# edited or damaged manifest is refused instead of trusted. Bundles written before it have none.
SEAL_NAME = "manifest.sha256"
# Files above this size are only size-checked in fast mode (hashing the weights is most of a large bundle's check).
FAST_HASH_LIMIT = 64 * 1024 * 1024

DECODER_TASKS = ("text-generation",)
ENCODER_TASKS = ("feature-extraction", "text-classification", "token-classification", "fill-mask")
TASKS = DECODER_TASKS + ENCODER_TASKS


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type, and shape (ints or dim names)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @classmethod
    def from_dict(cls, d: dict) -> "TensorSpec":
        return cls(name=d["name"], dtype=d["dtype"], shape=tuple(d["shape"]))


@dataclass(frozen=True)
class SpecialTokens:
    bos: int | None = None
    eos: tuple[int, ...] = ()
    pad: int | None = None
    unk: int | None = None
    mask: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "SpecialTokens":
        return cls(**{**d, "eos": tuple(d.get("eos", ()))})


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector (applied inside the graph)."""

    mode: str  # mean | cls | max | lasttoken | weightedmean
    normalize: bool
    output: str  # graph output that holds the pooled vector
    dimension: int


@dataclass(frozen=True)
class Manifest:
    task: str
    source: dict[str, Any]
    graph_file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tokenizer_file: str
    special_tokens: SpecialTokens
    max_context: int
    opset: int = 0
    external_data: tuple[str, ...] = ()
    kv_cache: KVLayout | None = None
    chat_template_file: str | None = None
    # bos_token, eos_token... as strings, for chat templates that write them (transformers passes them)
    special_token_strings: dict[str, str] = field(default_factory=dict)
    generation: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    pooling: Pooling | None = None
    # sentence-transformers' named prompts ({"query": "query: "}), prepended to a text before it is encoded
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt: str | None = None  # the name used when a call names none, as sentence-transformers does
    precision: dict[str, Any] = field(default_factory=lambda: {"weights": "fp32", "method": None})
    verification: dict[str, Any] = field(default_factory=dict)
    accuracy: dict[str, Any] = field(default_factory=dict)  # quantize's gate against the float bundle
    conformance_file: str | None = None  # conformance.json: vectors any runtime can check itself against
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    edgelm_version: str = ""

    def __post_init__(self):
        if self.task not in TASKS:
            raise BundleError(f"manifest task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.task in DECODER_TASKS and self.kv_cache is None:
            raise BundleError(f"manifest for {self.task} has no kv_cache section; re-export the bundle")
        if self.default_prompt is not None and self.default_prompt not in self.prompts:
            raise BundleError(f"manifest default_prompt {self.default_prompt!r} is not one of its prompts "
                              f"({', '.join(self.prompts) or 'none'}); re-export the bundle")

    @property
    def is_decoder(self) -> bool:
        return self.task in DECODER_TASKS

    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def with_files(self, folder: Path) -> "Manifest":
        """The same manifest with `files` listing every file now in `folder` (but itself)."""
        return replace(self, files=hash_files(folder))

    def with_conformance(self, folder: Path, name: str) -> "Manifest":
        """The same manifest naming the conformance vectors NAME, added to `files` (the rest is not hashed again)."""
        path = Path(folder) / name
        entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        return replace(self, conformance_file=name, files=dict(sorted({**self.files, name: entry}.items())))

    # -- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "edgelm_version": self.edgelm_version,
            "task": self.task,
            "source": self.source,
            "graph": {
                "file": self.graph_file,
                "external_data": list(self.external_data),
                "opset": self.opset,
                "inputs": [_spec_dict(t) for t in self.inputs],
                "outputs": [_spec_dict(t) for t in self.outputs],
            },
            "kv_cache": self.kv_cache.to_dict() if self.kv_cache else None,
            "tokenizer": {"file": self.tokenizer_file, "chat_template": self.chat_template_file,
                          "special_token_strings": self.special_token_strings},
            "special_tokens": {**asdict(self.special_tokens), "eos": list(self.special_tokens.eos)},
            "max_context": self.max_context,
            "generation": self.generation,
            "labels": list(self.labels) if self.labels is not None else None,
            "pooling": asdict(self.pooling) if self.pooling else None,
            "prompts": self.prompts,
            "default_prompt": self.default_prompt,
            "precision": self.precision,
            "verification": self.verification,
            "accuracy": self.accuracy,
            "conformance": self.conformance_file,
            "files": self.files,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        if not isinstance(d, dict):
            raise BundleError(f"manifest.json holds a JSON {type(d).__name__}, not an object; re-export the bundle")
        version = d.get("format_version")
        if not isinstance(version, int):
            raise BundleError("manifest.json has no integer format_version; this is not an edgelm bundle")
        if version > FORMAT_VERSION:
            raise BundleError(
                f"bundle format_version {version} is newer than this edgelm reads ({FORMAT_VERSION}); "
                "upgrade edgelm"
            )
        if d.get("task") in DECODER_TASKS and version < FIRST_FUSED_DECODER_VERSION:
            raise BundleError(
                f"this decoder bundle has format_version {version} (the unfused graph of edgelm 0.1), which this "
                f"edgelm no longer runs; re-export it with `edgelm export` (then quantize it again)"
            )
        problems = schema_problems(d)
        if problems:
            raise BundleError(f"manifest.json is malformed: {'; '.join(problems)}; re-export the bundle")
        try:
            graph, tok = d["graph"], d["tokenizer"]
            return cls(
                format_version=version,
                edgelm_version=d.get("edgelm_version", ""),
                task=d["task"],
                source=d.get("source", {}),
                graph_file=graph["file"],
                external_data=tuple(graph.get("external_data", ())),
                opset=graph.get("opset", 0),
                inputs=tuple(TensorSpec.from_dict(t) for t in graph["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in graph["outputs"]),
                kv_cache=KVLayout.from_dict(d["kv_cache"]) if d.get("kv_cache") else None,
                tokenizer_file=tok["file"],
                chat_template_file=tok.get("chat_template"),
                special_token_strings=dict(tok.get("special_token_strings") or {}),
                special_tokens=SpecialTokens.from_dict(d.get("special_tokens", {})),
                max_context=int(d["max_context"]),
                generation=d.get("generation", {}),
                labels=tuple(d["labels"]) if d.get("labels") is not None else None,
                pooling=Pooling(**d["pooling"]) if d.get("pooling") else None,
                prompts=dict(d.get("prompts") or {}),
                default_prompt=d.get("default_prompt"),
                precision=d.get("precision", {}),
                verification=d.get("verification", {}),
                accuracy=d.get("accuracy") or {},
                conformance_file=d.get("conformance"),
                files=d.get("files", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"manifest.json is malformed ({type(e).__name__}: {e}); re-export the bundle") from e

    def write(self, folder: Path) -> Path:
        """Write FOLDER/manifest.json and its seal (manifest.sha256)."""
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        seal(folder)
        return path


def seal(folder: str | Path) -> None:
    """Record manifest.json's sha256 beside it, in sha256sum's format."""
    digest = sha256_file(Path(folder) / MANIFEST_NAME)
    (Path(folder) / SEAL_NAME).write_text(f"{digest}  {MANIFEST_NAME}\n")


def _check_seal(folder: Path, raw: bytes) -> None:
    """Refuse a manifest.json whose bytes differ from what its seal recorded (when it has one)."""
    path = folder / SEAL_NAME
    if not path.exists():
        return
    try:
        recorded = path.read_text(encoding="ascii").split()[0]
    except (OSError, UnicodeDecodeError, IndexError):
        recorded = ""
    if len(recorded) != 64:
        raise BundleError(f"{path} is not a sha256sum line; copy or re-export the bundle")
    if hashlib.sha256(raw).hexdigest() != recorded.lower():
        raise BundleError(
            f"{folder / MANIFEST_NAME} does not match {SEAL_NAME}: it was changed after edgelm wrote it; "
            f"re-export the bundle (after a deliberate edit, run `sha256sum {MANIFEST_NAME} > {SEAL_NAME}` in it)"
        )


def _spec_dict(t: TensorSpec) -> dict:
    return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}


def read_manifest(folder: str | Path) -> Manifest:
    """Parse FOLDER/manifest.json, with an actionable error when it is not a bundle."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"bundle folder {folder} does not exist; pass the OUT folder of `edgelm export`")
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{folder} has no {MANIFEST_NAME}; it is not an edgelm bundle (run `edgelm export` first)")
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not readable JSON ({e}); re-export the bundle") from e
    _check_seal(folder, raw)
    manifest = Manifest.from_dict(data)
    problems = name_problems(folder, data)
    if problems:
        raise BundleError(f"{path} is unsafe to open: {'; '.join(problems)}; re-export the bundle")
    return manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_files(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file below FOLDER except the manifest, by relative path."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.relative_to(folder).as_posix() not in (MANIFEST_NAME, SEAL_NAME):
            rel = p.relative_to(folder).as_posix()
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def check_files(folder: str | Path, manifest: Manifest, fast: bool = False) -> list[str]:
    """Compare the folder with manifest.files; returns notes on what was skipped.

    fast=True checks every size but hashes only files below FAST_HASH_LIMIT.
    Raises BundleError listing every missing, resized or altered file at once.
    """
    folder = Path(folder)
    problems, notes = [], []
    for rel, meta in manifest.files.items():
        p = folder / rel
        if not p.is_file():
            problems.append(f"{rel} is missing")
            continue
        size = p.stat().st_size
        if size != meta["bytes"]:
            problems.append(f"{rel} has {size} bytes, manifest says {meta['bytes']}")
        elif fast and size > FAST_HASH_LIMIT:
            notes.append(f"{rel}: size checked, hash skipped (fast mode)")
        elif sha256_file(p) != meta["sha256"]:
            problems.append(f"{rel} does not match its sha256")
    if problems:
        raise BundleError(
            f"bundle {folder} is damaged: " + "; ".join(problems) + "; copy or re-export the bundle"
        )
    return notes
