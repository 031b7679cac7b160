"""The shape manifest.json must have, checked before any field is used.

A damaged or hand-edited manifest (a removed key, a wrong type, a file name that points outside
the bundle) gets one line naming the field, instead of a KeyError deep in the runtime or a file
read from somewhere else. Written by hand: a JSON-schema library would be a runtime dependency
for some forty lines of checks, and its messages name schema paths, not what to do.

    problems = schema_problems(data)          # [] or one line per wrong field
    problems = name_problems(folder, data)    # file names that leave the bundle folder
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

Check = Callable[[Any], bool]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive(x: Any) -> bool:
    return _whole(x) and x > 0


def _text(x: Any) -> bool:
    return isinstance(x, str)


def _list_of(check: Check) -> Check:
    return lambda x: isinstance(x, list) and all(check(v) for v in x)


def _dict(x: Any) -> bool:
    return isinstance(x, dict)


def _or_null(check: Check) -> Check:
    return lambda x: x is None or check(x)


def _token_id(x: Any) -> bool:
    return _whole(x) and x >= 0


def _dim(x: Any) -> bool:
    return _whole(x) or isinstance(x, str)


def _tensor(x: Any) -> bool:
    return (isinstance(x, dict) and _text(x.get("name")) and _text(x.get("dtype"))
            and _list_of(_dim)(x.get("shape")))


def _file_entry(x: Any) -> bool:
    return (isinstance(x, dict) and isinstance(x.get("sha256"), str) and bool(_HEX64.fullmatch(x["sha256"]))
            and _whole(x.get("bytes")) and x["bytes"] >= 0)


# field path -> (required, check, what it must be). A path "a.b" is key b of the object at key a.
FIELDS: dict[str, tuple[bool, Check, str]] = {
    "format_version": (True, _positive, "a whole number >= 1"),
    "edgelm_version": (False, _text, "text"),
    "task": (True, _text, "text"),
    "source": (False, _dict, "an object"),
    "graph": (True, _dict, "an object"),
    "graph.file": (True, _text, "a file name"),
    "graph.external_data": (False, _list_of(_text), "a list of file names"),
    "graph.opset": (False, _whole, "a whole number"),
    "graph.inputs": (True, _list_of(_tensor), "a list of {name, dtype, shape}"),
    "graph.outputs": (True, _list_of(_tensor), "a list of {name, dtype, shape}"),
    "kv_cache": (False, _or_null(_dict), "an object or null"),
    "kv_cache.num_layers": (False, _positive, "a whole number >= 1"),
    "kv_cache.num_kv_heads": (False, _positive, "a whole number >= 1"),
    "kv_cache.head_size": (False, _positive, "a whole number >= 1"),
    "kv_cache.dtype": (False, _text, "text"),
    "kv_cache.axes": (False, _list_of(_text), "a list of axis names"),
    "tokenizer": (True, _dict, "an object"),
    "tokenizer.file": (True, _text, "a file name"),
    "tokenizer.chat_template": (False, _or_null(_text), "a file name or null"),
    "tokenizer.special_token_strings": (False, _or_null(lambda x: _dict(x) and all(map(_text, x.values()))),
                                        "an object of strings"),
    "special_tokens": (False, _dict, "an object"),
    "special_tokens.bos": (False, _or_null(_token_id), "a token id or null"),
    "special_tokens.eos": (False, _list_of(_token_id), "a list of token ids"),
    "special_tokens.pad": (False, _or_null(_token_id), "a token id or null"),
    "special_tokens.unk": (False, _or_null(_token_id), "a token id or null"),
    "special_tokens.mask": (False, _or_null(_token_id), "a token id or null"),
    "max_context": (True, _positive, "a whole number >= 1"),
    "generation": (False, _dict, "an object"),
    "labels": (False, _or_null(_list_of(_text)), "a list of strings or null"),
    "pooling": (False, _or_null(_dict), "an object or null"),
    "pooling.mode": (False, _text, "text"),
    "pooling.normalize": (False, lambda x: isinstance(x, bool), "true or false"),
    "pooling.output": (False, _text, "a graph output name"),
    "pooling.dimension": (False, _positive, "a whole number >= 1"),
    "prompts": (False, _or_null(lambda x: _dict(x) and all(map(_text, x.values()))), "an object of strings"),
    "default_prompt": (False, _or_null(_text), "a prompt name or null"),
    "precision": (False, _dict, "an object"),
    "verification": (False, _dict, "an object"),
    "accuracy": (False, _or_null(_dict), "an object or null"),
    "conformance": (False, _or_null(_text), "a file name or null"),
    "files": (True, lambda x: _dict(x) and all(map(_file_entry, x.values())),
              "an object of {sha256 (64 hex digits), bytes}"),
}

_MISSING = object()


def _get(data: Any, path: str) -> Any:
    """The value at PATH, _MISSING where a key is absent, None where a parent is null."""
    for key in path.split("."):
        if data is None:
            return None
        if not isinstance(data, dict) or key not in data:
            return _MISSING
        data = data[key]
    return data


def schema_problems(data: Any) -> list[str]:
    """One line per field of DATA (a parsed manifest.json) that is missing or of the wrong type."""
    if not isinstance(data, dict):
        return [f"manifest.json holds a JSON {type(data).__name__}, not an object"]
    problems = []
    for path, (required, check, what) in FIELDS.items():
        parent = path.rpartition(".")[0]
        if parent and not isinstance(_get(data, parent), dict):
            continue  # a missing or null parent is reported (or allowed) once, at the parent
        value = _get(data, path)
        if value is _MISSING:
            if required:
                problems.append(f"field {path} is missing")
        elif not check(value):
            problems.append(f"field {path} must be {what}, got {_short(value)}")
    return problems


def named_files(data: dict) -> dict[str, str]:
    """Every file name the manifest uses, by the field that holds it."""
    graph, tokenizer = data.get("graph") or {}, data.get("tokenizer") or {}
    names = {"graph.file": graph.get("file"), "tokenizer.file": tokenizer.get("file"),
             "tokenizer.chat_template": tokenizer.get("chat_template"), "conformance": data.get("conformance")}
    names.update({f"graph.external_data[{i}]": n for i, n in enumerate(graph.get("external_data") or [])})
    names.update({f"files[{n!r}]": n for n in data.get("files") or {}})
    return {field: name for field, name in names.items() if name is not None}


def name_problems(folder: Path, data: dict) -> list[str]:
    """File names in DATA that are not plain relative paths inside FOLDER (after symlinks), or unlisted.

    Every file the graph and tokenizer fields name must also be in `files`, so that none escapes
    the checksum check by being left out of it.
    """
    root = Path(folder).resolve()
    problems = []
    for field, name in named_files(data).items():
        pure = PurePosixPath(name)
        if not name or "\\" in name or "\0" in name or pure.is_absolute() or ".." in pure.parts:
            problems.append(f"{field} is {name!r}: a bundle's file names are relative paths inside the bundle, "
                            "without '..'")
        elif not (root / name).resolve().is_relative_to(root):
            problems.append(f"{field} {name!r} is a link to {(root / name).resolve()}, outside the bundle")
    listed = set(data.get("files") or {})
    problems += [f"{field} {name!r} is not listed in files, so nothing checks it"
                 for field, name in named_files(data).items() if not field.startswith("files[") and name not in listed]
    return problems


def _short(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
