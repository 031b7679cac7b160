"""The texts the gate measures a decoder on, one per domain, and the different texts calibration reads.

A quantized decoder that holds on prose can still fail on code, legal wording or another language (an int4
SmolLM2 loses far more on code and German than on prose: docs/benchmarks.md, "Decoder quality: the evaluation
suite against llama.cpp"), so the gate scores every domain
and judges the worst. Calibration (SmoothQuant's activation ranges, int4-mixed's sensitivities, the int8 KV
cache's scales) reads a mix of the same domains from *other* texts, so the gate measures text calibration
never saw.

    domain      evaluation text (domains/)                          calibration text (calibration/)
    prose       written for edgelm: encyclopedic, narrative,        SENTENCES (texts.py): one-line sentences
                instructional English
    code        written for edgelm: a Python module                 written for edgelm: JavaScript
    technical   Python's reference manual (pydoc_data, PSF           its `import` chapter
                licence): the exceptions and `with` chapters
    legal       the Apache License 2.0, sections 1-4                sections 5-9
    dialogue    written for edgelm: a help-desk chat, a family       written for edgelm: a customer-service chat
                conversation
    german      written for edgelm: news, housing, a recipe          written for edgelm: French
"""

from __future__ import annotations

from pathlib import Path

from edgelm.errors import QuantizeError
from edgelm.quantize.texts import SENTENCES

HERE = Path(__file__).parent
DOMAINS = ("prose", "code", "technical", "legal", "dialogue", "german")
CALIBRATION = ("code", "technical", "legal", "dialogue", "french")  # besides SENTENCES


def domain_text(domain: str) -> str:
    return (HERE / "domains" / f"{domain}.txt").read_text(encoding="utf-8")


def check_domains(domains: tuple[str, ...] | None) -> list[str]:
    """Problems with a requested subset of DOMAINS (empty: fine)."""
    unknown = [d for d in domains or () if d not in DOMAINS]
    return [f"unknown evaluation domain {d!r}; choose from {', '.join(DOMAINS)}" for d in unknown]


def evaluation_texts(domains: tuple[str, ...] | None = None) -> dict[str, str]:
    """The built-in suite, or the requested part of it, by domain."""
    problems = check_domains(domains)
    if problems:
        raise QuantizeError(*problems)
    return {d: domain_text(d) for d in (domains or DOMAINS)}


def calibration_texts() -> list[str]:
    """The default calibration mix: the sentences as one text, then one text per other domain."""
    return [" ".join(SENTENCES)] + [(HERE / "calibration" / f"{d}.txt").read_text(encoding="utf-8") for d in CALIBRATION]
