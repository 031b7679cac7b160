"""Calibration and evaluation text: the user's file or the documented default, checked before any work.

A file of the wrong kind (missing, binary, not UTF-8, empty, too short to measure) gets one clear
error naming the file and what it needs, so a quantization never runs half-way on bad input.
"""

from __future__ import annotations

from pathlib import Path

from edgelm.errors import QuantizeError
from edgelm.quantize.texts import EVAL_TEXT, SENTENCES

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


def prose_ids(path: str | Path | None, encode, what: str) -> list[int]:
    """Decoder token ids of PATH's text (or EVAL_TEXT), at least MIN_PROSE_TOKENS long."""
    text = EVAL_TEXT if path is None else read_text_file(path, what)
    ids = encode(text)
    if len(ids) < MIN_PROSE_TOKENS:
        raise QuantizeError(f"{what} file {path} is {len(ids)} tokens long, too short to measure; "
                            f"give at least {MIN_PROSE_TOKENS} tokens of running text")
    return ids
