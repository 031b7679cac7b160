"""Text that is not valid Unicode, found before the tokenizer sees it.

A Python str may hold an unpaired surrogate ('\ud800'): from a JSON "\\ud800" escape, or from
command-line bytes that were not UTF-8 (Python's surrogateescape). The tokenizers library then
fails with a TypeError that names neither the text nor the fix; this names both.
"""

from __future__ import annotations


def unpaired_surrogate(text: str) -> int | None:
    """Index of the first character of TEXT that UTF-8 cannot encode (an unpaired surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def surrogate_problem(text: str, what: str) -> str | None:
    """'WHAT holds an unpaired surrogate ...' for a GenerationError, or None when TEXT is valid."""
    at = unpaired_surrogate(text)
    if at is None:
        return None
    return (f"{what} holds an unpaired surrogate ({text[at]!r} at character {at}): it is not valid Unicode; "
            "decode bytes as UTF-8 first (on the command line: pass UTF-8 text)")
