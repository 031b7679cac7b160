"""Bad rows: found before the bundle runs, recorded with their reason, never fatal.

A row is bad when its text is missing (null), not a string, empty or only whitespace, or has
more tokens than the bundle's max_context (unless the run truncates). Its result columns are
null and `error` says why; every other row runs as usual.
"""

from __future__ import annotations

import pyarrow as pa

from edgelm.batch.formats import BAD_TYPE


def texts_and_problems(table: pa.Table, column: str) -> tuple[list[str | None], list[str | None]]:
    """Per row of TABLE: its text (None when bad) and what is wrong with it (None when fine)."""
    values = table.column(column)
    declared = [None] * table.num_rows
    if BAD_TYPE in table.column_names:  # a JSONL value that was not a string (formats._read_jsonl)
        declared = table.column(BAD_TYPE).to_pylist()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        wrong = f"not text (the column holds {values.type})"
        problems = [d or ("no text (null)" if null else wrong) for d, null in zip(declared, values.is_null().to_pylist())]
        return [None] * table.num_rows, problems
    texts, problems = [], []
    for text, problem in zip(values.to_pylist(), declared):
        problem = problem or text_problem(text)
        texts.append(None if problem else text)
        problems.append(problem)
    return texts, problems


def text_problem(text) -> str | None:
    """Why TEXT cannot run, or None."""
    if text is None:
        return "no text (null)"
    if not isinstance(text, str):
        return f"not text (a {type(text).__name__})"
    if not text:
        return "empty text"
    if not text.strip():
        return "only whitespace"
    return None


def too_long(tokens: int, limit: int) -> str:
    """The reason for an encoder's text over the bundle's limit."""
    return (f"too long: {tokens} tokens, more than the bundle's max_context of {limit} "
            "(shorten it, or pass --truncate-prompt to cut it)")


def prompt_too_long(tokens: int, limit: int) -> str:
    """The reason for a prompt that leaves a decoder no room to generate."""
    return (f"too long: the prompt has {tokens} tokens and the bundle's max_context is {limit}, leaving no room "
            "to generate (shorten it, or pass --truncate-prompt to drop its oldest tokens)")
