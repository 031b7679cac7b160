"""Conformance vectors: inputs a bundle carries, with what a correct runtime computes from them.

export and quantize record them (through this runtime, on the bundle they just wrote) into
conformance.json; `edgelm verify` and ports to other languages run them and compare, so a
bundle copied to another box, another onnxruntime or another language shows that it still
computes what it computed where it was built. docs/conformance.md is the format and the rules.

    vectors = record(front_end)           # a LanguageModel or an Encoder
    name = write(folder, vectors)         # -> "conformance.json"
    manifest = record_conformance(folder, manifest)   # both, for export and quantize
    outcomes = check(front_end, vectors)  # [Outcome(name, kind, passed, detail)]
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgelm.errors import BundleError

CONFORMANCE_FILE = "conformance.json"
CONFORMANCE_VERSION = 1
GREEDY_TOKENS = 16
TOP = 5

# Tokenizer texts: plain ASCII with digits and punctuation, CJK (no spaces, full-width
# punctuation), emoji (astral code points, a skin-tone modifier, a ZWJ sequence), white space.
TEXTS = {
    "plain text": "The quick brown fox jumps over the lazy dog. It was 3:45 p.m. on 2026-12-02, wasn't it?",
    "Chinese text": "今天天气很好，我们去公园散步吧。机器学习模型可以在边缘设备上运行。",
    "emoji text": "Shipping models 🚀 to edge boxes 🤖👍🏽 — done ✅ 👩‍💻",
    # Where tokenizer ports differ from Rust's `tokenizers`: what counts as white space (JavaScript's
    # \s takes U+FEFF and not U+0085), tabs and new lines, and spaces that are not U+0020.
    "white-space text": "tabs\tand\nnew lines,  two spaces, no-break\u00a0space, thin\u2009space, "
                        "ideographic\u3000space, BOM\ufeffmark, next\u0085line, end. ",
}
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
PLAIN_PROMPT = "Once upon a time, in a small village by the sea,"


@dataclass(frozen=True)
class Tolerances:
    """How far a runtime may be from the recorded numbers (docs/conformance.md, Tolerances)."""

    logit_abs: float  # a recorded logit against the runtime's
    tie_margin: float  # greedy steps whose top-1/top-2 gap is below this may choose either
    value_abs: float  # embedding elements
    cosine_min: float  # embedding direction


# By the weights' precision, from the largest deviations measured between onnxruntime 1.24, 1.25,
# 1.26, 1.28, 1.30 and 1.32 on one CPU, with a margin (docs/conformance.md has the numbers). Float
# kernels only reorder sums, so float tolerances are tight; quantized ones re-quantize activations
# differently from one kernel generation to the next, as two CPUs can, so theirs are loose.
TOLERANCES = {
    "fp32": Tolerances(logit_abs=2e-3, tie_margin=2e-3, value_abs=1e-4, cosine_min=0.99999),
    "fp16": Tolerances(logit_abs=0.1, tie_margin=0.1, value_abs=5e-3, cosine_min=0.999),
    "int8": Tolerances(logit_abs=1.5, tie_margin=0.5, value_abs=0.02, cosine_min=0.997),
    "int4": Tolerances(logit_abs=2.0, tie_margin=0.5, value_abs=0.03, cosine_min=0.995),
}
_ORDER = ["fp32", "int8", "int4", "fp16"]  # loosest last


@dataclass(frozen=True)
class Outcome:
    """One vector's result: passed, and in words how far off (or how close) it was."""

    name: str
    kind: str
    passed: bool
    detail: str


def precision_of(manifest: Any) -> str:
    """The precision that sets the tolerances: the weights', or int8 when the KV cache is int8."""
    weights = str(manifest.precision.get("weights", "fp32"))
    kinds = [weights if weights in TOLERANCES else "fp16"]
    if manifest.kv_cache is not None and manifest.kv_cache.dtype == "int8":
        kinds.append("int8")
    return max(kinds, key=_ORDER.index)


# -- recording -------------------------------------------------------------------------------
def record(model: Any) -> dict[str, Any]:
    """The conformance vectors of MODEL (a LanguageModel or an Encoder), computed now."""
    manifest = model.manifest
    decoder = manifest.is_decoder
    precision = precision_of(manifest)
    import edgelm

    vectors = [{"kind": "tokens", "name": name, "text": text, "add_special_tokens": True,
                "ids": _ids(model, text)} for name, text in TEXTS.items()]
    if decoder:
        vectors += _decoder_vectors(model)
    else:
        vectors.append(_ENCODER_RECORDERS[manifest.task](model))
    return {"conformance_version": CONFORMANCE_VERSION, "written_by": f"edgelm {edgelm.__version__}",
            "task": manifest.task, "precision": precision, "tolerances": asdict(TOLERANCES[precision]),
            "vectors": vectors}


def record_conformance(folder: str | Path, manifest: Any, model: Any = None) -> Any:
    """Record the vectors of the bundle in FOLDER (whose MANIFEST is written), add them to the
    manifest and write it again; returns the new manifest. MODEL: the bundle already open."""
    if model is None:
        from edgelm.runtime import load

        model = load(folder, provider="cpu", fast=True)  # its files were just hashed
    manifest = manifest.with_conformance(folder, write(folder, record(model)))
    manifest.write(folder)
    return manifest


def write(folder: str | Path, vectors: dict[str, Any]) -> str:
    """Write FOLDER/conformance.json; returns its name for the manifest."""
    (Path(folder) / CONFORMANCE_FILE).write_text(json.dumps(vectors, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return CONFORMANCE_FILE


def read(folder: str | Path, name: str) -> dict[str, Any]:
    """The vectors of a bundle (NAME from its manifest), checked for the fields every runner needs."""
    path = Path(folder) / name
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not readable JSON ({e}); re-export the bundle") from e
    if not isinstance(data, dict) or not isinstance(data.get("vectors"), list) or not isinstance(data.get("tolerances"), dict):
        raise BundleError(f"{path} has no vectors or tolerances; re-export the bundle")
    version = data.get("conformance_version")
    if not isinstance(version, int) or version > CONFORMANCE_VERSION:
        raise BundleError(f"{path} has conformance_version {version!r}; this edgelm reads {CONFORMANCE_VERSION} (upgrade edgelm)")
    return data


def _ids(model: Any, text: str) -> list[int]:
    """Ids as the task encodes a plain text: with special tokens (encoders also cut to max_context)."""
    if model.manifest.is_decoder:
        return model.tokenizer.encode(text, add_special_tokens=True).ids
    with warnings.catch_warnings():  # a text cut at max_context is recorded cut: that is the rule under test
        warnings.simplefilter("ignore", UserWarning)
        return model.encode([text])[0]


def _decoder_vectors(model: Any) -> list[dict[str, Any]]:
    vectors = []
    if model.manifest.chat_template_file:
        rendered = model.render_chat(CHAT)
        chat_ids = model.encode(CHAT)
        vectors.append({"kind": "chat", "name": "chat template", "messages": CHAT, "add_generation_prompt": True,
                        "rendered": rendered, "ids": chat_ids})
        first = ("chat prompt", chat_ids)
    else:
        first = ("prompt", model.encode("The capital of France is"))
    second = ("plain prompt", model.encode(PLAIN_PROMPT))
    for name, ids in (first, second):
        vectors.append(_greedy_vector(model, f"greedy, {name}", [ids]))
    vectors.append(_greedy_vector(model, f"greedy, batch of two rows ({first[0]}, {second[0]})", [first[1], second[1]]))
    return vectors


def _greedy_vector(model: Any, name: str, prompts: list[list[int]]) -> dict[str, Any]:
    return {"kind": "greedy", "name": name, "max_new_tokens": GREEDY_TOKENS,
            "rows": [{"prompt_ids": p, "ids": run["ids"], "finish": run["finish"], "margins": run["margins"],
                      "top5": _top(run["first"])} for p, run in zip(prompts, _greedy(model, prompts, GREEDY_TOKENS))]}


def _greedy(model: Any, prompts: list[list[int]], steps: int) -> list[dict[str, Any]]:
    """Greedy decoding of PROMPTS as one batch: per row the ids, why it ended, each step's margin,
    and (under "first") the first step's logits."""
    from edgelm.runtime.generator import EOS, GeneratorParams

    gen = model.generator(GeneratorParams(max_new_tokens=steps))  # argmax of raw logits: no penalty, no defaults
    gen.append_tokens([list(p) for p in prompts])
    margins: list[list[float]] = [[] for _ in prompts]
    first = None
    while not gen.is_done():
        live = [r for r in range(gen.batch) if not gen.is_row_done(r)]
        gen.generate_next_token()
        logits = gen.get_logits()  # (batch, vocab): what this step chose from
        first = logits if first is None else first
        for r in live:
            margins[r].append(_margin(logits[r]))
    rows = []
    for r in range(gen.batch):
        ids, finish = gen.get_new_tokens(r), gen.finish_reason(r)
        rows.append({"ids": ids[:-1] if finish == EOS else ids, "finish": finish, "margins": margins[r], "first": first[r]})
    return rows


def _top(logits: np.ndarray, k: int = TOP) -> list[list]:
    order = np.argsort(-logits, kind="stable")[:k]
    return [[int(i), float(logits[i])] for i in order]


def _margin(logits: np.ndarray) -> float:
    top2 = np.partition(logits, -2)[-2:]
    return float(top2[1] - top2[0])


def _embedding_vector(model: Any) -> dict[str, Any]:
    texts = [TEXTS["plain text"], TEXTS["Chinese text"], TEXTS["emoji text"], "A cat sits on the mat."]
    output = model.manifest.pooling.output
    rows = model.output(texts, output, batch_size=len(texts))  # one batch: padding must not matter
    return {"kind": "embedding", "name": "sentence embeddings, one batch", "texts": texts, "output": output,
            "rows": [{"ids": ids, "values": v.tolist()} for ids, v in zip(model.encode(texts), rows)]}


def _logits_vector(model: Any) -> dict[str, Any]:
    texts = ["I loved this film, it was wonderful.", "The service was slow and the food was cold.", TEXTS["plain text"]]
    rows = model.output(texts, "logits", batch_size=len(texts))
    labels = model.manifest.labels or ()
    return {"kind": "logits", "name": "class logits, one batch", "texts": texts, "output": "logits",
            "rows": [_logits_row(ids, v, labels) for ids, v in zip(model.encode(texts), rows)]}


def _logits_row(ids: list[int], v: np.ndarray, labels: tuple[str, ...]) -> dict[str, Any]:
    """A text's logits, and the class they choose with its margin; a one-label model (a cross-encoder's
    relevance score) chooses no class, so it has neither."""
    row: dict[str, Any] = {"ids": ids, "values": v.tolist()}
    if len(v) > 1:
        row.update(label=_label(labels, int(np.argmax(v))), margin=_margin(v))
    return row


def _token_logits_vector(model: Any) -> dict[str, Any]:
    texts = ["Ada Lovelace worked in London with Charles Babbage.", TEXTS["plain text"]]
    rows = model.output(texts, "logits", batch_size=len(texts))
    return {"kind": "token_logits", "name": "token logits, one batch", "texts": texts, "output": "logits",
            "rows": [{"ids": ids, "values": v.tolist()} for ids, v in zip(model.encode(texts), rows)]}


def _fill_mask_vector(model: Any) -> dict[str, Any]:
    mask_id = model.manifest.special_tokens.mask
    mask = model.bundle.tokenizer.id_to_token(mask_id)
    texts = [f"Paris is the {mask} of France.", f"The {mask} sat on the {mask}."]
    rows = model.output(texts, "logits", batch_size=len(texts))
    vector_rows = []
    for ids, v in zip(model.encode(texts), rows):  # v: (seq, vocab)
        masks = [{"position": p, "top5": _top(v[p])} for p, t in enumerate(ids) if t == mask_id]
        vector_rows.append({"ids": ids, "masks": masks})
    return {"kind": "fill_mask", "name": "fill-mask top 5, one batch", "texts": texts, "output": "logits", "rows": vector_rows}


def _label(labels: tuple[str, ...], index: int) -> str:
    return labels[index] if index < len(labels) else str(index)


_ENCODER_RECORDERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "feature-extraction": _embedding_vector,
    "text-classification": _logits_vector,
    "token-classification": _token_logits_vector,
    "fill-mask": _fill_mask_vector,
}


# -- checking --------------------------------------------------------------------------------
def check(model: Any, vectors: dict[str, Any]) -> list[Outcome]:
    """Run every vector on MODEL and compare with what was recorded."""
    tol = Tolerances(**{k: float(vectors["tolerances"][k]) for k in asdict(TOLERANCES["fp32"])})
    outcomes = []
    for i, vector in enumerate(vectors["vectors"]):
        name = str(vector.get("name", f"vector {i}")) if isinstance(vector, dict) else f"vector {i}"
        kind = str(vector.get("kind")) if isinstance(vector, dict) else "?"
        checker = _CHECKERS.get(kind)
        if checker is None:
            outcomes.append(Outcome(name, kind, False, f"unknown kind {kind!r}: not run (upgrade edgelm)"))
            continue
        try:
            passed, detail = checker(model, vector, tol)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            passed, detail = False, f"malformed vector ({type(e).__name__}: {e})"
        outcomes.append(Outcome(name, kind, passed, detail))
    return outcomes


def _check_tokens(model: Any, vector: dict, tol: Tolerances) -> tuple[bool, str]:
    if model.manifest.is_decoder:
        got = model.tokenizer.encode(vector["text"], add_special_tokens=bool(vector["add_special_tokens"])).ids
    else:
        got = _ids(model, vector["text"])
    return _same_ids(got, vector["ids"])


def _check_chat(model: Any, vector: dict, tol: Tolerances) -> tuple[bool, str]:
    rendered = model.render_chat(vector["messages"], add_generation_prompt=bool(vector["add_generation_prompt"]))
    if rendered != vector["rendered"]:
        at = next((i for i, (a, b) in enumerate(zip(rendered, vector["rendered"])) if a != b), min(len(rendered), len(vector["rendered"])))
        return False, f"rendered text differs at character {at}: {rendered[at:at + 20]!r} instead of {vector['rendered'][at:at + 20]!r}"
    return _same_ids(model.tokenizer.encode(rendered, add_special_tokens=False).ids, vector["ids"])


def _same_ids(got: list[int], want: list[int]) -> tuple[bool, str]:
    if list(got) == list(want):
        return True, f"{len(want)} ids equal"
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return False, f"ids differ at {at}: {list(got[at:at + 4])} instead of {list(want[at:at + 4])} ({len(got)} ids, {len(want)} recorded)"


def _check_greedy(model: Any, vector: dict, tol: Tolerances) -> tuple[bool, str]:
    rows = vector["rows"]
    got = _greedy(model, [r["prompt_ids"] for r in rows], int(vector["max_new_tokens"]))
    problems, notes, worst = [], [], 0.0
    for r, (want, have) in enumerate(zip(rows, got)):
        off = max(abs(float(have["first"][int(i)]) - float(v)) for i, v in want["top5"])
        worst = max(worst, off)
        if off > tol.logit_abs:
            problems.append(f"row {r}: first-step logits off by {off:.3g} (tolerance {tol.logit_abs:g})")
        verdict = _greedy_agreement(_with_eos(want), _with_eos(have), want["margins"], tol.tie_margin)
        if verdict.startswith("differ"):
            problems.append(f"row {r}: {verdict}")
        elif verdict:
            notes.append(f"row {r}: {verdict}")
    if problems:
        return False, "; ".join(problems)
    detail = f"{len(rows)} row{'s' if len(rows) > 1 else ''}: greedy ids agree, top-5 logits within {worst:.2g}"
    return True, detail + (f" ({'; '.join(notes)})" if notes else "")


def _with_eos(row: dict) -> list[int]:
    return list(row["ids"]) + ([-1] if row["finish"] == "eos" else [])  # -1: "chose an eos id"


def _greedy_agreement(want: list[int], have: list[int], margins: list[float], tie_margin: float) -> str:
    """'' when equal; a near-tie note; or 'differ...' when they part at a step that was not a tie."""
    for k, (a, b) in enumerate(zip(want, have)):
        if a != b:
            if k < len(margins) and margins[k] < tie_margin:
                return f"diverged at a near-tie at step {k} (margin {margins[k]:.2g})"
            return f"differ at step {k}: {_token(b)} instead of {_token(a)} (recorded margin {margins[k]:.3g})"
    if len(want) != len(have):
        return f"differ in length: {len(have)} tokens instead of {len(want)}"
    return ""


def _token(t: int) -> str:
    return "eos" if t == -1 else str(t)


def _check_embedding(model: Any, vector: dict, tol: Tolerances) -> tuple[bool, str]:
    bad = _ids_problem(model, vector)
    if bad:
        return False, bad
    got = model.output(vector["texts"], vector["output"], batch_size=len(vector["texts"]))
    worst_abs, worst_cos = 0.0, 1.0
    for have, row in zip(got, vector["rows"]):
        want = np.asarray(row["values"], dtype=np.float64)
        have = have.astype(np.float64)
        worst_abs = max(worst_abs, float(np.max(np.abs(have - want))))
        worst_cos = min(worst_cos, float(have @ want / max(np.linalg.norm(have) * np.linalg.norm(want), 1e-30)))
    passed = worst_abs <= tol.value_abs and worst_cos >= tol.cosine_min
    return passed, (f"max |diff| {worst_abs:.2g} (tolerance {tol.value_abs:g}), min cosine {worst_cos:.6f} "
                    f"(at least {tol.cosine_min:g})")


def _check_logits(model: Any, vector: dict, tol: Tolerances) -> tuple[bool, str]:
    bad = _ids_problem(model, vector)
    if bad:
        return False, bad
    got = model.output(vector["texts"], vector["output"], batch_size=len(vector["texts"]))
    worst, problems = 0.0, []
    labels = model.manifest.labels or ()
    for r, (have, row) in enumerate(zip(got, vector["rows"])):
        want = np.asarray(row["values"], dtype=np.float64)
        if have.shape != want.shape:
            return False, f"row {r}: logits of shape {have.shape} instead of {want.shape}"
        worst = max(worst, float(np.max(np.abs(have - want))))
        if "label" in row and _label(labels, int(np.argmax(have))) != row["label"] and row.get("margin", 1e9) >= tol.tie_margin:
            problems.append(f"row {r}: label {_label(labels, int(np.argmax(have)))!r} instead of {row['label']!r}")
    if worst > tol.logit_abs:
        problems.insert(0, f"logits off by {worst:.3g} (tolerance {tol.logit_abs:g})")
    return (not problems), ("; ".join(problems) if problems else f"logits within {worst:.2g}")


def _check_fill_mask(model: Any, vector: dict, tol: Tolerances) -> tuple[bool, str]:
    bad = _ids_problem(model, vector)
    if bad:
        return False, bad
    got = model.output(vector["texts"], vector["output"], batch_size=len(vector["texts"]))
    worst = 0.0
    for have, row in zip(got, vector["rows"]):  # have: (seq, vocab)
        for mask in row["masks"]:
            worst = max([worst] + [abs(float(have[mask["position"], int(i)]) - float(v)) for i, v in mask["top5"]])
    passed = worst <= tol.logit_abs
    return passed, f"top-5 logits at the masks off by {worst:.3g} (tolerance {tol.logit_abs:g})"


def _ids_problem(model: Any, vector: dict) -> str:
    """The first text whose ids differ from the recorded ones ('' if none): a tokenizer fault, named as one."""
    for r, (ids, row) in enumerate(zip(model.encode(vector["texts"]), vector["rows"])):
        same, detail = _same_ids(ids, row["ids"])
        if not same:
            return f"text {r}: {detail}"
    return ""


_CHECKERS: dict[str, Callable[[Any, dict, Tolerances], tuple[bool, str]]] = {
    "tokens": _check_tokens,
    "chat": _check_chat,
    "greedy": _check_greedy,
    "embedding": _check_embedding,
    "logits": _check_logits,
    "token_logits": _check_logits,
    "fill_mask": _check_fill_mask,
}
