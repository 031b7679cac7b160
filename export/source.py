"""Resolve and validate an export source before any heavy loading.

A source is a Hugging Face checkpoint folder (config.json, weights, tokenizer) or a single
GGUF file, which transformers dequantizes to float32. Every cheap problem is found first
and reported together, so a user fixes a broken checkpoint in one go.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgelm.errors import ExportError
from edgelm.export.families import Family, family_for
from edgelm.export.tasks import infer_task

WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
SENTENCE_TRANSFORMERS_MODULES = "modules.json"


@dataclass(frozen=True)
class Source:
    """A validated checkpoint: where it is, what family and task it is exported as."""

    path: Path  # what the user passed
    folder: Path  # folder holding config/tokenizer (the GGUF file's folder for GGUF)
    gguf_file: str | None
    config: Any  # transformers.PretrainedConfig
    family: Family
    task: str
    weights: tuple[Path, ...]

    @property
    def load_kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    @property
    def has_sentence_transformers_config(self) -> bool:
        return (self.folder / SENTENCE_TRANSFORMERS_MODULES).is_file()


def resolve_source(src: str | Path, task: str | None = None) -> Source:
    """Validate SRC and the requested TASK; raises ExportError listing every problem found."""
    path = Path(src).expanduser()
    if not path.exists():
        raise ExportError(f"source {path} does not exist; pass a checkpoint folder or a .gguf file")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ExportError(f"source {path} is a file but not .gguf; pass a checkpoint folder or a .gguf file")
        return _resolve_gguf(path, task)
    return _resolve_folder(path, task)


def _resolve_folder(folder: Path, task: str | None) -> Source:
    problems: list[str] = []
    config_data = _read_config_json(folder, problems)
    weights = tuple(sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern)))
    if not weights:
        problems.append(f"no weights in {folder} (expected model.safetensors or pytorch_model.bin)")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"no tokenizer in {folder} (expected tokenizer.json or vocab files); save the tokenizer with the model")
    family = chosen_task = None
    if config_data is not None:
        family, chosen_task = _family_and_task(config_data, task, problems, _is_embedding_pipeline(folder))
    if problems:
        raise ExportError(*problems)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    return Source(folder, folder, None, config, family, chosen_task, weights)


def _resolve_gguf(path: Path, task: str | None) -> Source:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:  # gguf raises ValueError/KeyError/struct.error on bad files
        raise ExportError(f"cannot read GGUF file {path}: {str(e).splitlines()[0]}") from e
    problems: list[str] = []
    family, chosen_task = _family_and_task(config.to_dict(), task, problems)
    if problems:
        raise ExportError(*problems)
    return Source(path, path.parent, path.name, config, family, chosen_task, (path,))


def _read_config_json(folder: Path, problems: list[str]) -> dict | None:
    config_path = folder / "config.json"
    if not config_path.is_file():
        problems.append(f"no config.json in {folder}; pass a Hugging Face checkpoint folder (save_pretrained output)")
        return None
    try:
        data = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{config_path} is not readable JSON ({e})")
        return None
    if "model_type" not in data:
        problems.append(f"{config_path} has no model_type; it is not a transformers config")
        return None
    return data


def _is_embedding_pipeline(folder: Path) -> bool:
    """A sentence-transformers folder whose modules pool token states into sentence vectors (a cross-encoder's
    folder has modules.json too, with no Pooling)."""
    try:
        modules = json.loads((folder / SENTENCE_TRANSFORMERS_MODULES).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return any(str(m.get("type", "")).endswith("Pooling") for m in modules if isinstance(m, dict))


def _family_and_task(config: dict, task: str | None, problems: list[str],
                     embedding_pipeline: bool = False) -> tuple[Family | None, str | None]:
    try:
        family = family_for(config["model_type"], config)
    except ExportError as e:
        problems.extend(e.problems)
        return None, None
    if task is None and embedding_pipeline and "feature-extraction" in family.tasks:
        return family, "feature-extraction"  # whatever head its config names, the folder is an embedding model
    if task is None:
        return family, infer_task(config.get("architectures"), family.tasks)
    if task not in family.tasks:
        problems.append(
            f"task {task!r} does not fit model_type {config['model_type']!r} (a {family.kind.value}); "
            f"choose one of: {', '.join(family.tasks)}"
        )
        return family, None
    return family, task
