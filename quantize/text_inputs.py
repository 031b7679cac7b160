"""Calibration and evaluation text: the user's file or the documented default, checked before any work.

A file of the wrong kind (missing, binary, not UTF-8, empty, too short to measure) gets one clear
error naming the file and what it needs, so a quantization never runs half-way on bad input.
"""

from __future__ import annotations

from pathlib import Path

from edgelm.errors import QuantizeError
from edgelm.quantize.eval_suite import DOMAINS, calibration_texts, evaluation_texts
from edgelm.quantize.texts import SENTENCES

MIN_PROSE_TOKENS = 128  # fewer and a perplexity is noise
MIN_SENTENCES = 8


def read_text_file(path: str | Path, what: str) -> str:
    """The file's text, or a QuantizeError saying why it is not usable as WHAT."""
    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{what} file {path} does not exist; pass a UTF-8 text file")
    data = path.read_bytes()
    if b"\x00" in data[:65536]:
        raise QuantizeError(f"{what} file {path} is binary; pass a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise QuantizeError(f"{what} file {path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it to UTF-8") from None
    if not text.strip():
        raise QuantizeError(f"{what} file {path} is empty; pass some text")
    return text


def sentences(path: str | Path | None, what: str) -> list[str]:
    """Encoder texts: one per non-empty line of PATH, or the default SENTENCES."""
    if path is None:
        return list(SENTENCES)
    lines = [line.strip() for line in read_text_file(path, what).splitlines() if line.strip()]
    if len(lines) < MIN_SENTENCES:
        raise QuantizeError(f"{what} file {path} has {len(lines)} non-empty lines; give at least {MIN_SENTENCES} (one text per line)")
    return lines


def suite_ids(path: str | Path | None, domains: tuple[str, ...] | None, encode, what: str) -> dict[str, list[int]]:
    """Decoder token ids per evaluation domain: the built-in suite (or DOMAINS of it) and, with PATH, the user's
    text as one more domain named after its file (`<name>-file` where that is a built-in domain's name); each at
    least MIN_PROSE_TOKENS long."""
    texts = evaluation_texts(domains)
    ids = {domain: encode(text) for domain, text in texts.items()}
    short = [f"built-in {what} text {d!r} is {len(i)} tokens for this tokenizer, fewer than {MIN_PROSE_TOKENS}"
             for d, i in ids.items() if len(i) < MIN_PROSE_TOKENS]
    if path is not None:
        user = Path(path).stem if Path(path).stem not in DOMAINS else f"{Path(path).stem}-file"
        ids[user] = encode(read_text_file(path, what))
        if len(ids[user]) < MIN_PROSE_TOKENS:
            short.append(f"{what} file {path} is {len(ids[user])} tokens long, too short to measure; give at least "
                         f"{MIN_PROSE_TOKENS} tokens of running text")
    if short:
        raise QuantizeError(*short)
    return ids


def calibration_text_list(path: str | Path | None, what: str = "calibration") -> list[str]:
    """Decoder calibration texts: the user's sentences joined as one text, or the built-in mix of domains."""
    if path is None:
        return calibration_texts()
    return [" ".join(sentences(path, what))]
